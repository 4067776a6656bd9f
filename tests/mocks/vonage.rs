//! Vonage SMS API mock (spec §4.6): form-encoded `POST /sms/json`, always HTTP 200
//! with the outcome in `messages[].status`; `GET /account/get-balance`.

use serde_json::json;

use super::{Committed, Kind, Mock, Request, Response, State, is_number};

/// A Vonage mock accepting `api_key` / `api_secret`.
pub async fn vonage(api_key: &str, api_secret: &str) -> Mock {
    super::start(Kind::Vonage, api_key, api_secret, "", handle).await
}

fn status(code: &str, text: &str) -> Response {
    Response::json(
        200,
        json!({"message-count": "1", "messages": [{"status": code, "error-text": text}]}),
    )
}

fn handle(state: &State, req: &Request) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/sms/json") => send(state, req),
        ("GET", "/account/get-balance") => {
            let ok = req.query_param("api_key").as_deref() == Some(state.user.as_str())
                && req.query_param("api_secret").as_deref() == Some(state.secret.as_str());
            if ok {
                Response::json(200, json!({"value": state.balance(), "autoReload": false}))
            } else {
                Response::json(
                    401,
                    json!({"error-code": "401", "error-code-label": "authentication failed"}),
                )
            }
        }
        _ => Response::json(
            404,
            json!({"error-code": "404", "error-code-label": "not found"}),
        ),
    }
}

fn send(state: &State, req: &Request) -> Response {
    let form = req.form();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // Body credentials, or a Basic header.
    let creds = match (field("api_key"), field("api_secret")) {
        (Some(k), Some(s)) => Some((k.to_string(), s.to_string())),
        _ => req.basic_auth(),
    };
    if creds != Some((state.user.clone(), state.secret.clone())) {
        return status("4", "Bad Credentials");
    }
    let Some(from) = field("from").filter(|f| !f.is_empty()) else {
        return status("2", "Missing from param");
    };
    let Some(to) = field("to").filter(|t| !t.is_empty()) else {
        return status("2", "Missing to param");
    };
    if !is_number(to, false, 7, 15) {
        return status("3", "Invalid to param");
    }
    let unicode = match field("type").unwrap_or("text") {
        "text" => false,
        "unicode" => true,
        _ => return status("3", "Invalid type param"),
    };
    let Some(text) = field("text").filter(|t| !t.is_empty()) else {
        return status("2", "Missing text param");
    };
    let client_ref = field("client-ref");
    if client_ref.is_some_and(|r| r.chars().count() > 40) {
        return status("3", "Invalid client-ref param");
    }
    if state.balance() <= 0.0 {
        return status("9", "Quota Exceeded - rejected");
    }
    let parts = if unicode {
        let units = text.encode_utf16().count();
        if units <= 70 { 1 } else { units.div_ceil(67) }
    } else {
        let n = text.chars().count();
        if n <= 160 { 1 } else { n.div_ceil(153) }
    };
    let c = state.commit(Committed {
        seq: 0,
        to: to.into(),
        body: text.into(),
        from: Some(from.into()),
        tag: client_ref.map(Into::into),
        dedup: None,
        unicode,
    });
    let first = state.provider_id(c.seq);
    let messages: Vec<_> = (0..parts)
        .map(|i| {
            let mut m = json!({
                "to": to,
                "message-id": if i == 0 { first.clone() } else { format!("{first}-{i}") },
                "status": "0",
                "remaining-balance": format!("{:.8}", state.balance()),
                "message-price": "0.03330000",
                "network": "23410",
            });
            if let Some(r) = client_ref {
                m["client-ref"] = r.into();
            }
            m
        })
        .collect();
    Response::json(
        200,
        json!({"message-count": parts.to_string(), "messages": messages}),
    )
}
