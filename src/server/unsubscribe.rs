//! One-click unsubscribe: `POST /u/{token}` (RFC 8058) and the confirmation page at
//! `GET /u/{token}`.
//!
//! The links are in every email of a job that is not transactional
//! ([`crate::recipients::unsubscribe`]). They need no sign-in and no API token: the token
//! itself is the authority, checked by its HMAC before anything else, so a forged or
//! altered one is refused without a store lookup. A `POST` whose body is
//! `List-Unsubscribe=One-Click` (what mail clients send, and what the page's button sends)
//! puts the address on the opt-out list with reason `unsubscribe` and the run and message
//! it came from, and answers `200` once that is durable — no redirect, as RFC 8058 asks.
//! A `GET` never unsubscribes: mail scanners follow links.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use super::Shared;
use super::webhooks::GroupFlush;
use crate::history::MessageId;
use crate::history::ledger::Ledger;
use crate::history::query::{self, MessageFilter};
use crate::job::Channel;
use crate::recipients::optout::{self, OptOuts};
use crate::recipients::unsubscribe::Ticket;

pub fn routes() -> Router<Shared> {
    Router::new().route("/u/{token}", get(confirm).post(unsubscribe))
}

/// The body RFC 8058 one-click clients post.
const ONE_CLICK: (&str, &str) = ("List-Unsubscribe", "One-Click");

/// `GET /u/{token}`: a page naming the address, whose button posts the one-click body.
async fn confirm(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    let ticket = match verify(&state, &token) {
        Ok(ticket) => ticket,
        Err(refused) => return refused.into_response(),
    };
    let address = escape(&ticket.address);
    // The link as mailed, so the form posts back right behind a proxy's path prefix too.
    let action = match &state.config.email.unsubscribe {
        Some(settings) => escape(&format!("{}/u/{token}", settings.public_url)),
        None => escape(&format!("/u/{token}")),
    };
    page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<p>Stop sending email to <strong>{address}</strong>?</p>\n\
             <form method=\"post\" action=\"{action}\">\n\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\n\
             <button type=\"submit\">Unsubscribe</button>\n\
             </form>"
        ),
    )
}

/// `POST /u/{token}` with `List-Unsubscribe=One-Click`: opts the address out.
async fn unsubscribe(
    State(state): State<Shared>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ticket = match verify(&state, &token) {
        Ok(ticket) => ticket,
        Err(refused) => return refused.into_response(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !says_one_click(content_type, &body) {
        return page(
            StatusCode::BAD_REQUEST,
            "Not unsubscribed",
            "<p>The request did not say <code>List-Unsubscribe=One-Click</code>; nothing was changed.</p>",
        );
    }
    let Ok(address) = optout::normalize(&ticket.address, state.config.region) else {
        // Signed by us, so it was an address we sent to; normalising can still refuse
        // one the store kept as written.
        return page(
            StatusCode::BAD_REQUEST,
            "Not unsubscribed",
            "<p>This link names no address crier can keep; nothing was changed.</p>",
        );
    };
    let store = state.store.clone();
    let written = tokio::task::spawn_blocking(move || {
        let message = message_of(&Ledger::new(&*store), &ticket);
        let added = OptOuts::new(store.directory()).add_from(
            std::slice::from_ref(&address),
            "unsubscribe",
            Some(ticket.run.to_string()),
            message.map(|m| m.to_string()),
        )?;
        Ok::<_, crate::store::StoreError>((added, ticket.run, message))
    })
    .await;
    let (added, run, message) = match written {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return super::ApiError::internal(e).into_response(),
        Err(e) => return super::ApiError::internal(e).into_response(),
    };
    if added > 0 {
        if let Err(e) = GroupFlush::of(&state.store).flush(&state.store).await {
            return super::ApiError::internal(e).into_response();
        }
        tracing::info!(
            run = %run,
            message = message.map(|m| m.to_string()).unwrap_or_default(),
            "An address unsubscribed by its one-click link."
        );
    }
    page(
        StatusCode::OK,
        "Unsubscribed",
        "<p>You are unsubscribed: no more of these emails will be sent to this address.</p>",
    )
}

/// Why a link is refused.
enum Refused {
    /// `email.unsubscribe` is not configured: there are no links here.
    NotConfigured,
    /// The token is not one this server signed (forged, altered, truncated).
    Invalid,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::NotConfigured => page(
                StatusCode::NOT_FOUND,
                "Not found",
                "<p>Unsubscribe links are not configured here.</p>",
            ),
            Refused::Invalid => page(
                StatusCode::FORBIDDEN,
                "Invalid link",
                "<p>This unsubscribe link is not valid. Use the link in the email itself.</p>",
            ),
        }
    }
}

/// The ticket of `token`: 404 when unsubscribe is not configured, 403 for a token that
/// is not ours.
fn verify(state: &Shared, token: &str) -> Result<Ticket, Refused> {
    let settings = state
        .config
        .email
        .unsubscribe
        .as_ref()
        .ok_or(Refused::NotConfigured)?;
    settings.unsubscriber().verify(token).map_err(|refusal| {
        tracing::info!(%refusal, "Refused an unsubscribe link.");
        Refused::Invalid
    })
}

/// The email message `ticket` names: the recipient's email in that run.
fn message_of(ledger: &Ledger, ticket: &Ticket) -> Option<MessageId> {
    let filter = MessageFilter {
        channel: Some(Channel::Email),
        recipient: Some((Some(ticket.kind), ticket.recipient)),
        include_removed: true,
        ..MessageFilter::default()
    };
    query::messages(ledger, &filter)
        .filter_map(Result::ok)
        .find(|m| m.id.run == ticket.run && m.address.eq_ignore_ascii_case(&ticket.address))
        .map(|m| m.id)
}

/// Whether a POST body is the one-click request: `List-Unsubscribe=One-Click` as
/// `multipart/form-data` (what RFC 8058 §3.1 says clients SHOULD send) or
/// `application/x-www-form-urlencoded` (what they MAY send, and what browsers send).
fn says_one_click(content_type: &str, body: &[u8]) -> bool {
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim_matches('"'));
    let multipart = content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data");
    match (multipart, boundary) {
        (true, Some(boundary)) => {
            let delimiter = format!("--{boundary}");
            let text = String::from_utf8_lossy(body);
            text.split(delimiter.as_str()).any(|part| {
                let Some((head, content)) = part.split_once("\r\n\r\n") else {
                    return false;
                };
                let named = head.lines().any(|line| {
                    let line = line.to_ascii_lowercase();
                    line.starts_with("content-disposition:")
                        && line.contains("form-data")
                        && line.contains("name=\"list-unsubscribe\"")
                });
                named && content.trim_end_matches("\r\n").trim() == ONE_CLICK.1
            })
        }
        (true, None) => false,
        (false, _) => form_urlencoded::parse(body).any(|(k, v)| (&*k, &*v) == ONE_CLICK),
    }
}

/// A small page, the same for a browser and a one-click client.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <meta name=\"robots\" content=\"noindex\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1>\n{body}\n</body></html>\n"
    );
    (status, Html(html)).into_response()
}

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_click_bodies_in_both_encodings() {
        let form = "application/x-www-form-urlencoded";
        assert!(says_one_click(form, b"List-Unsubscribe=One-Click"));
        assert!(says_one_click("", b"List-Unsubscribe=One-Click"));
        assert!(says_one_click(form, b"a=b&List-Unsubscribe=One-Click"));
        assert!(!says_one_click(form, b"List-Unsubscribe=Maybe"));
        assert!(!says_one_click(form, b""));

        let multipart = "multipart/form-data; boundary=\"XyZ\"";
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--XyZ--\r\n";
        assert!(says_one_click(multipart, body.as_bytes()));
        let other = body.replace("One-Click", "Two-Clicks");
        assert!(!says_one_click(multipart, other.as_bytes()));
        assert!(!says_one_click("multipart/form-data", body.as_bytes()));
        // The urlencoded text inside a multipart body is not the field.
        assert!(!says_one_click(multipart, b"List-Unsubscribe=One-Click"));
    }
}
