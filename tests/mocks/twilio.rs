//! Twilio Messages mock (spec §3.7): form-encoded `POST
//! /2010-04-01/Accounts/{Sid}/Messages.json` with Basic `Sid:Token`, Twilio error
//! bodies, `GET .../Balance.json`.

use serde_json::json;

use super::{Committed, Kind, Mock, Request, Response, State, is_number};

/// A Twilio mock for account `sid` with auth token `token`.
pub async fn twilio(sid: &str, token: &str) -> Mock {
    super::start(Kind::Twilio, sid, token, "", handle).await
}

/// Twilio's error JSON.
pub fn error(status: u16, code: u32, message: &str) -> Response {
    Response::json(
        status,
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }),
    )
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn handle(state: &State, req: &Request) -> Response {
    let Some(rest) = req.path.strip_prefix("/2010-04-01/Accounts/") else {
        return error(404, 20404, "The requested resource was not found");
    };
    let (sid, resource) = rest.split_once('/').unwrap_or((rest, ""));
    if !is_sid(sid, "AC") {
        return error(404, 20404, "The requested resource was not found");
    }
    // The Basic user must be the path's account, and both must be ours.
    match req.basic_auth() {
        Some((user, pass)) if user == sid && sid == state.user && pass == state.secret => {}
        _ => return error(401, 20003, "Authenticate"),
    }
    match (req.method.as_str(), resource) {
        ("POST", "Messages.json") => create(state, req, sid),
        ("GET", "Balance.json") => Response::json(
            200,
            json!({"currency": "USD", "balance": format!("{:.5}", state.balance()), "account_sid": sid}),
        ),
        _ => error(404, 20404, "The requested resource was not found"),
    }
}

fn create(state: &State, req: &Request, sid: &str) -> Response {
    if !req
        .content_type()
        .starts_with("application/x-www-form-urlencoded")
    {
        return error(400, 20001, "Invalid content type");
    }
    let form = req.form();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(to) = field("To") else {
        return error(400, 21604, "A 'To' phone number is required.");
    };
    if !is_number(to, true, 7, 15) || !to.starts_with('+') {
        return error(400, 21211, &format!("Invalid 'To' Phone Number: {to}"));
    }
    let from = field("From");
    let service = field("MessagingServiceSid");
    if from.is_none() && service.is_none() {
        return error(400, 21603, "A 'From' phone number is required.");
    }
    if let Some(mg) = service
        && !is_sid(mg, "MG")
    {
        return error(400, 21703, "The Messaging Service Sid is invalid.");
    }
    let body = match field("Body") {
        Some(b) if !b.is_empty() => b,
        _ => return error(400, 21602, "Message body is required."),
    };
    if body.chars().count() > 1600 {
        return error(
            400,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }
    let unicode = !body.is_ascii();
    let c = state.commit(Committed {
        seq: 0,
        to: to.into(),
        body: body.into(),
        from: from.map(Into::into),
        tag: None,
        dedup: None,
        unicode,
    });
    let msid = state.provider_id(c.seq);
    let segments = if unicode {
        let units = body.encode_utf16().count();
        if units <= 70 { 1 } else { units.div_ceil(67) }
    } else {
        let n = body.len();
        if n <= 160 { 1 } else { n.div_ceil(153) }
    };
    let date = "Fri, 27 Nov 2026 08:00:00 +0000";
    Response::json(
        201,
        json!({
            "account_sid": sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": date,
            "date_sent": null,
            "date_updated": date,
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "from": from,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": segments.to_string(),
            "price": null,
            "price_unit": "USD",
            "sid": msid,
            "status": if service.is_some() { "accepted" } else { "queued" },
            "subresource_uris": {"media": format!("/2010-04-01/Accounts/{sid}/Messages/{msid}/Media.json")},
            "to": to,
            "uri": format!("/2010-04-01/Accounts/{sid}/Messages/{msid}.json"),
        }),
    )
}
