//! Mailgun messages mock: `POST /v3/<domain>/messages` with Basic `api:<key>`, a
//! multipart/form-data (or urlencoded) body with `from`, `to`, `subject`, `text`/`html`,
//! `attachment` parts and `v:` variables; `200 {"id":"<…>","message":"Queued. Thank you."}`
//! and Mailgun's `{"message": …}` errors; `GET /v3/domains/<domain>` for the credentials check.

use serde_json::json;

use super::{Committed, Kind, Mock, Request, Response, State};

/// A Mailgun mock for sending domain `domain` and API key `key`.
pub async fn mailgun(domain: &str, key: &str) -> Mock {
    super::start(Kind::Mailgun, domain, key, "", handle).await
}

/// Mailgun's error body.
pub fn error(status: u16, message: &str) -> Response {
    Response::json(status, json!({ "message": message }))
}

fn handle(state: &State, req: &Request) -> Response {
    match req.basic_auth() {
        Some((user, key)) if user == "api" && key == state.secret => {}
        _ => {
            return Response {
                status: 401,
                body: "Forbidden".into(),
                retry_after: None,
                headers: Vec::new(),
            };
        }
    }
    // The credentials check; a balance of 0 or less stands for a disabled domain.
    if let Some(domain) = req.path.strip_prefix("/v3/domains/")
        && req.method == "GET"
    {
        if domain != state.user {
            return error(404, "Domain not found");
        }
        let state_name = if state.balance() > 0.0 {
            "active"
        } else {
            "disabled"
        };
        return Response::json(
            200,
            json!({"domain": {"name": domain, "state": state_name, "type": "custom"},
                   "receiving_dns_records": [], "sending_dns_records": []}),
        );
    }
    let Some(domain) = req
        .path
        .strip_prefix("/v3/")
        .and_then(|rest| rest.strip_suffix("/messages"))
    else {
        return error(404, "not found");
    };
    if domain != state.user {
        return error(404, &format!("Domain not found: {domain}"));
    }
    if req.method != "POST" {
        return error(405, "method not allowed");
    }
    // (name, text) of every field; attachments apart.
    let (fields, attachments): (Vec<(String, String)>, usize) =
        if req.content_type().starts_with("multipart/form-data") {
            let parts = req.multipart();
            let files = parts.iter().filter(|p| p.name == "attachment").count();
            let missing_name = parts
                .iter()
                .any(|p| p.name == "attachment" && p.filename.is_none());
            if missing_name {
                return error(400, "attachment is not a file");
            }
            (
                parts
                    .iter()
                    .filter(|p| p.name != "attachment")
                    .map(|p| (p.name.clone(), p.text()))
                    .collect(),
                files,
            )
        } else {
            (req.form(), 0)
        };
    let _ = attachments;
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let Some(from) = get("from") else {
        return error(400, "'from' parameter is missing");
    };
    let Some(to) = get("to") else {
        return error(400, "'to' parameter is missing");
    };
    let (user, host) = to.split_once('@').unwrap_or_default();
    if user.is_empty() || !host.contains('.') || to.contains(char::is_whitespace) {
        return error(
            400,
            "to parameter is not a valid address. please check documentation",
        );
    }
    if get("subject").is_none() {
        return error(400, "'subject' parameter is missing");
    }
    let Some(text) = get("text").or(get("html")) else {
        return error(
            400,
            "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified",
        );
    };
    let c = state.commit(Committed {
        seq: 0,
        to: to.into(),
        body: text.into(),
        from: Some(from.into()),
        tag: get("v:crier_message_id").map(Into::into),
        dedup: None,
        unicode: !text.is_ascii(),
    });
    Response::json(
        200,
        json!({"id": format!("<{}>", state.provider_id(c.seq)), "message": "Queued. Thank you."}),
    )
}
