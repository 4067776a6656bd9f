//! A generic SMS HTTP gateway, the kind users configure as "any other provider":
//! `GET /send?key=…&to=…&text=…` or `POST /send` (JSON or form), the key in the
//! `X-Api-Key` header or a `key` field; answers `{"status":"ok","data":{"id":"gw-N"}}`.

use serde_json::json;

use super::{Committed, Kind, Mock, Request, Response, State};

/// A gateway mock accepting `api_key`; `url` is its root (append `/send`).
pub async fn http_gateway(api_key: &str) -> Mock {
    super::start(Kind::Gateway, api_key, "", "", handle).await
}

fn error(status: u16, text: &str) -> Response {
    Response::json(status, json!({"status": "error", "error": text}))
}

fn handle(state: &State, req: &Request) -> Response {
    if req.path != "/send" {
        return error(404, "not found");
    }
    let fields = match req.method.as_str() {
        "GET" => req.query_pairs(),
        "POST" if req.content_type().starts_with("application/json") => match req.json() {
            Some(serde_json::Value::Object(map)) => map
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect(),
            _ => return error(400, "body is not a JSON object"),
        },
        "POST"
            if req
                .content_type()
                .starts_with("application/x-www-form-urlencoded") =>
        {
            req.form()
        }
        "POST" => return error(415, "unsupported content type"),
        _ => return error(405, "method not allowed"),
    };
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let key = req.header("x-api-key").or(field("key"));
    if key != Some(state.user.as_str()) {
        return error(401, "invalid api key");
    }
    let (Some(to), Some(text)) = (field("to"), field("text").or(field("message"))) else {
        return error(400, "to and text are required");
    };
    let c = state.commit(Committed {
        seq: 0,
        to: to.into(),
        body: text.into(),
        from: field("from").map(Into::into),
        tag: None,
        dedup: None,
        unicode: false,
    });
    Response::json(
        200,
        json!({"status": "ok", "data": {"id": state.provider_id(c.seq)}}),
    )
}
