//! Clickatell One API mock (spec §2.7): `POST /v1/message` with the raw key in
//! `Authorization`, per-message validation (202 / 207 / 400), `GET /v1/balance`.

use serde_json::{Value, json};

use super::{Committed, Kind, Mock, Request, Response, State, is_number, str_field};

/// A Clickatell One API mock accepting integration key `api_key`.
pub async fn clickatell(api_key: &str) -> Mock {
    super::start(Kind::Clickatell, api_key, "", "", handle).await
}

fn global(status: u16, code: u32, description: &str) -> Response {
    Response::json(
        status,
        json!({"error": {"code": code, "description": description}}),
    )
}

fn handle(state: &State, req: &Request) -> Response {
    if req.header("authorization") != Some(state.user.as_str()) {
        return global(401, 1, "Invalid or missing integration API Key");
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/message") => send(state, req),
        ("GET", "/v1/balance") => {
            Response::json(200, json!({"balance": state.balance(), "currency": "USD"}))
        }
        (_, "/v1/message") | (_, "/v1/balance") => global(400, 42, "HTTP method not supported"),
        _ => global(400, 41, "Resource does not exist"),
    }
}

/// A valid message: `to`, `content`, `from`.
type Valid = (String, String, Option<String>);

/// A message-level error: HTTP status, code, description.
type Invalid = (u16, u32, &'static str);

fn check(item: &Value) -> Result<Valid, Invalid> {
    let channel = str_field(item, "channel").unwrap_or("sms");
    if channel != "sms" && channel != "whatsapp" {
        return Err((400, 23, "Invalid or missing parameter: channel ."));
    }
    let to = str_field(item, "to").ok_or((400, 23, "Invalid or missing parameter: to ."))?;
    // Digits only, as in the One API samples: a `+` is refused like any bad address.
    if !is_number(to, false, 7, 15) {
        return Err((400, 25, "Invalid recipient address."));
    }
    let content = match str_field(item, "content") {
        Some(c) if !c.is_empty() => c,
        _ => return Err((400, 23, "Invalid or missing parameter: content .")),
    };
    Ok((
        to.to_string(),
        content.to_string(),
        str_field(item, "from").map(str::to_string),
    ))
}

fn send(state: &State, req: &Request) -> Response {
    if !req.content_type().starts_with("application/json") {
        return global(400, 21, "Payload malformed.");
    }
    let Some(items) = req
        .json()
        .and_then(|j| j.get("messages").and_then(|m| m.as_array()).cloned())
    else {
        return global(400, 21, "Payload malformed.");
    };
    if items.is_empty() {
        return global(400, 21, "Payload malformed.");
    }
    if items.len() > 200 {
        return global(400, 22, "Too many messages in the request.");
    }
    let broke = state.balance() <= 0.0;
    let mut results = Vec::with_capacity(items.len());
    let mut failed_status = None;
    for item in &items {
        let checked = match check(item) {
            Ok(_) if broke => Err((402, 20, "Insufficient balance.")),
            other => other,
        };
        match checked {
            Ok((to, content, from)) => {
                let c = state.commit(Committed {
                    seq: 0,
                    to: to.as_str().into(),
                    body: content.into(),
                    from: from.map(Into::into),
                    tag: None,
                    dedup: None,
                    unicode: false,
                });
                results.push(json!({"apiMessageId": state.provider_id(c.seq), "accepted": true, "to": to, "error": null}));
            }
            Err((status, code, description)) => {
                failed_status.get_or_insert(status);
                results.push(json!({
                    "accepted": false,
                    "to": str_field(item, "to"),
                    "error": {"code": code, "description": description},
                }));
            }
        }
    }
    let status = match failed_status {
        None => 202,
        Some(_) if items.len() > 1 => 207,
        Some(s) => s,
    };
    Response::json(status, json!({"messages": results, "error": null}))
}
