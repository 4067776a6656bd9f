//! BulkSMS JSON REST API v1 mock (spec §1.6): `POST /v1/messages` with Basic auth,
//! `deduplication-id` replay, `GET /v1/profile`, and the two reconciliation reads
//! (`GET /v1/messages/{id}`, `GET /v1/messages?filter=userSuppliedId%3D…`).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Committed, Kind, Mock, Request, Response, State, is_number, str_field};

/// A BulkSMS mock accepting token `token_id:token_secret`; `url` ends in `/v1`.
pub async fn bulksms(token_id: &str, token_secret: &str) -> Mock {
    super::start(Kind::BulkSms, token_id, token_secret, "/v1", handle).await
}

fn handle(state: &State, req: &Request) -> Response {
    if req.basic_auth() != Some((state.user.clone(), state.secret.clone())) {
        return problem(
            401,
            "authentication-failed",
            "Authentication Failed",
            Some("Bad credentials"),
        );
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/messages") => submit(state, req),
        ("GET", p) if p == "/v1/messages" || p.starts_with("/v1/messages/") => lookup(state, req),
        ("GET", "/v1/profile") => Response::json(
            200,
            json!({
                "id": "6F1A3C5E-01",
                "username": state.user,
                "company": null,
                "credits": {"balance": state.balance(), "isTransferAllowed": false},
                "quota": {"size": 1000000, "remaining": 1000000},
            }),
        ),
        (_, "/v1/messages") | (_, "/v1/profile") => {
            problem(405, "method-not-allowed", "Method Not Allowed", None)
        }
        _ => problem(404, "not-found", "Not Found", None),
    }
}

fn problem(status: u16, kind: &str, title: &str, detail: Option<&str>) -> Response {
    let mut body = json!({
        "type": format!("https://developer.bulksms.com/json/v1/errors#{kind}"),
        "title": title,
        "status": status,
    });
    if let Some(d) = detail {
        body["detail"] = d.into();
    }
    Response::json(status, body)
}

fn bad(detail: &str) -> Response {
    problem(400, "validation", "Bad Request", Some(detail))
}

/// One recipient of a validated entry.
struct Entry {
    to: Vec<String>,
    body: String,
    from: Option<String>,
    tag: Option<String>,
    unicode: bool,
}

fn submit(state: &State, req: &Request) -> Response {
    if !req.content_type().starts_with("application/json") {
        return bad("Content-Type must be application/json");
    }
    let dedup = match req.query_param("deduplication-id") {
        Some(v) => match v.parse::<i32>() {
            Ok(id) => Some(id),
            Err(_) => return bad("deduplication-id must be an int32"),
        },
        None => None,
    };
    let Some(json) = req.json() else {
        return bad("The request body is not JSON");
    };
    let items: Vec<Value> = match json {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => return bad("Expected a SubmissionEntry or an array of them"),
    };
    if items.is_empty() || items.len() > 30_000 {
        return bad("Between 1 and 30000 entries per request");
    }
    let mut entries = Vec::with_capacity(items.len());
    for item in &items {
        match entry(item) {
            Ok(e) => entries.push(e),
            Err(detail) => return bad(&detail),
        }
    }
    if state.balance() <= 0.0 {
        return problem(403, "insufficient-credits", "Insufficient Credits", None);
    }
    // Held across check and commit, so two racing resubmissions commit once; the
    // answer is built after it is released.
    let committed: Box<[Arc<Committed>]> = {
        let mut seen = state.dedup.lock().unwrap();
        match dedup.and_then(|id| seen.get(&id)) {
            Some(previous) => previous.clone(),
            None => {
                let mut committed = Vec::new();
                for e in entries {
                    for to in e.to {
                        committed.push(state.commit(Committed {
                            seq: 0,
                            to: to.into(),
                            body: e.body.as_str().into(),
                            from: e.from.as_deref().map(Into::into),
                            tag: e.tag.as_deref().map(Into::into),
                            dedup,
                            unicode: e.unicode,
                        }));
                    }
                }
                let committed = committed.into_boxed_slice();
                if let Some(id) = dedup {
                    seen.insert(id, committed.clone());
                }
                committed
            }
        }
    };
    Response::json(
        201,
        Value::Array(committed.iter().map(|c| message(state, c)).collect()),
    )
}

/// `GET /v1/messages/{id}` and `GET /v1/messages?filter=userSuppliedId%3D…`, for
/// reconciling after a crash (needs `keep_accepted(true)`, the default).
fn lookup(state: &State, req: &Request) -> Response {
    let committed = state.committed_list();
    if let Some(id) = req.path.strip_prefix("/v1/messages/") {
        return match committed.iter().find(|c| state.provider_id(c.seq) == id) {
            Some(c) => Response::json(200, message(state, c)),
            None => problem(404, "not-found", "Not Found", Some("No such message")),
        };
    }
    let filter = req.query_param("filter").unwrap_or_default();
    let wanted = filter.strip_prefix("userSuppliedId=");
    let found: Vec<Value> = committed
        .iter()
        .filter(|c| wanted.is_none_or(|w| c.tag.as_deref() == Some(w)))
        .map(|c| message(state, c))
        .collect();
    Response::json(200, Value::Array(found))
}

fn entry(item: &Value) -> Result<Entry, String> {
    let to = match item.get("to") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(_) => str_field(v, "address").map(str::to_string),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or("Invalid to")?,
        Some(v @ Value::Object(_)) => {
            vec![str_field(v, "address").ok_or("Invalid to")?.to_string()]
        }
        _ => return Err("to is required".into()),
    };
    if to.is_empty() || !to.iter().all(|t| is_number(t, true, 7, 15)) {
        return Err("Invalid to".into());
    }
    let body = str_field(item, "body")
        .ok_or("body is required")?
        .to_string();
    let unicode = match str_field(item, "encoding").unwrap_or("TEXT") {
        "TEXT" | "BINARY" => false,
        "UNICODE" => true,
        other => return Err(format!("Unknown encoding {other}")),
    };
    let tag = match item.get("userSuppliedId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 20 => Some(s.clone()),
        Some(_) => return Err("userSuppliedId must be a string of at most 20 characters".into()),
    };
    if let Some(parts) = item.get("longMessageMaxParts")
        && parts.as_u64().is_none_or(|p| p < 1)
    {
        return Err("longMessageMaxParts must be a positive integer".into());
    }
    let from = match item.get("from") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v @ Value::Object(_)) => str_field(v, "address").map(str::to_string),
        Some(_) => return Err("Invalid from".into()),
    };
    Ok(Entry {
        to,
        body,
        from,
        tag,
        unicode,
    })
}

/// One `Message` as BulkSMS shows it (the same on a replay).
fn message(state: &State, c: &Committed) -> Value {
    json!({
        "id": state.provider_id(c.seq),
        "type": "SENT",
        "from": c.from.as_deref(),
        "to": &*c.to,
        "body": &*c.body,
        "encoding": if c.unicode { "UNICODE" } else { "TEXT" },
        "protocolId": "IMPLICIT",
        "messageClass": "SIM_SPECIFIC",
        "submission": {"id": format!("2-{:017}", c.seq), "date": "2026-11-27T08:00:00+00:00"},
        "status": {"id": "ACCEPTED.null", "type": "ACCEPTED", "subtype": null},
        "userSuppliedId": c.tag.as_deref(),
    })
}
