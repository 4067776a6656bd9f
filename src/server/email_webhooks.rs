//! The email APIs' event webhooks: SendGrid's Event Webhook and Mailgun's webhooks, read
//! into the same [`Report`]s as the SMS delivery reports and applied by the same
//! [`ingest`].
//!
//! Each route carries `server.webhook_token` as a path segment *and* checks the provider's
//! own signature, with the key configured on the provider (the provider whose key
//! verifies it names where its messages are looked up, as Twilio's auth token does):
//!
//! - SendGrid signs `X-Twilio-Email-Event-Webhook-Timestamp` followed by the raw body
//!   with ECDSA P-256 / SHA-256; the signature (`X-Twilio-Email-Event-Webhook-Signature`)
//!   is base64 DER, the key base64 DER SubjectPublicKeyInfo.
//! - Mailgun puts `signature: {timestamp, token, signature}` in the JSON body; the
//!   signature is hex HMAC-SHA256 of timestamp and token under the webhook signing key.
//!
//! A missing signature is 401, a wrong one 403, and so is a timestamp more than
//! [`MAX_SKEW`] away from now (a replayed request): neither changes anything.
//!
//! Events find their message by the provider's id (stored at send) or, failing that, by
//! crier's id carried in SendGrid's `custom_args` / Mailgun's `user-variables`. Delivered
//! moves a message to `delivered`; a bounce to `undelivered`; a message the provider
//! refused to send (SendGrid `dropped`, Mailgun `rejected`) to `failed`. Bounces (hard
//! ones), spam complaints and unsubscribes put the address on the opt-out list with the
//! reason `bounce`, `complaint` or `unsubscribe`.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{any, post};
use base64::Engine as _;
use serde_json::Value;

use super::webhooks::{
    Outcome, Parsed, Report, check_token, field, ingest, json, malformed, refuse,
};
use super::{Shared, constant_time_eq};
use crate::provider::ProviderConfig;
use crate::provider::sendgrid::{CRIER_ID_ARG, p256_public_key};

/// How far a signed timestamp may be from now, either way (seconds).
pub(crate) const MAX_SKEW: i64 = 15 * 60;

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/webhooks/sendgrid", any(missing_token))
        .route("/webhooks/sendgrid/{token}", post(sendgrid))
        .route("/webhooks/mailgun", any(missing_token))
        .route("/webhooks/mailgun/{token}", post(mailgun))
}

async fn missing_token(State(state): State<Shared>) -> Response {
    refused(&state, StatusCode::UNAUTHORIZED, "without a webhook token")
}

/// A refusal, counted and logged without detail for the sender.
fn refused(state: &Shared, status: StatusCode, why: &str) -> Response {
    state
        .metrics
        .reports_rejected
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(why, "Refused an email event webhook request.");
    refuse(status)
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Is the signed timestamp `ts` (Unix seconds) within [`MAX_SKEW`] of `now`?
pub(crate) fn fresh(ts: &str, now: i64) -> bool {
    ts.trim()
        .parse::<i64>()
        .is_ok_and(|t| (now - t).abs() <= MAX_SKEW)
}

// ---------------------------------------------------------------------------------------
// SendGrid

async fn sendgrid(
    State(state): State<Shared>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = check_token(&state, &token) {
        return r;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(signature), Some(timestamp)) = (
        header("x-twilio-email-event-webhook-signature"),
        header("x-twilio-email-event-webhook-timestamp"),
    ) else {
        return refused(&state, StatusCode::UNAUTHORIZED, "SendGrid: no signature");
    };
    if !fresh(timestamp, now_s()) {
        return refused(&state, StatusCode::FORBIDDEN, "SendGrid: stale timestamp");
    }
    let signer = state.config.providers.iter().find_map(|(name, p)| match p {
        ProviderConfig::Sendgrid(c) => c
            .webhook_public_key
            .as_deref()
            .and_then(|k| p256_public_key(k).ok())
            .filter(|key| sendgrid_verify(key, timestamp, &body, signature))
            .map(|_| name.clone()),
        _ => None,
    });
    let Some(provider) = signer else {
        return refused(&state, StatusCode::FORBIDDEN, "SendGrid: bad signature");
    };
    match parse_sendgrid(&body) {
        Ok(parsed) => ingest(state, "sendgrid", vec![provider], parsed).await,
        Err(reason) => malformed(&state, "sendgrid", reason),
    }
}

/// Checks SendGrid's event signature: ECDSA P-256 with SHA-256 over `timestamp` followed
/// by the raw body; `signature` is base64 of the DER signature, `point` the key's
/// uncompressed point.
pub(crate) fn sendgrid_verify(point: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(&signed, &der)
        .is_ok()
}

/// SendGrid's Event Webhook body: a JSON array of events, each with `event`, `email`,
/// `timestamp`, `sg_message_id` (the send's `X-Message-Id`, then `.filter…`) and the
/// message's custom arguments as top-level fields.
pub(crate) fn parse_sendgrid(body: &[u8]) -> Result<Parsed, String> {
    let Value::Array(events) = json(body)? else {
        return Err("expected a JSON array of events".into());
    };
    let mut parsed = Parsed::default();
    for (i, e) in events.iter().enumerate() {
        let event = field(e, "event")
            .ok_or_else(|| format!("event {i}: no `event`"))?
            .to_ascii_lowercase();
        let reason = field(e, "reason").unwrap_or_default();
        let kind = field(e, "type").unwrap_or_default().to_ascii_lowercase();
        // (outcome, opt-out reason)
        let (outcome, opt_out) = match event.as_str() {
            "delivered" => (Outcome::Delivered, None),
            // A hard bounce; `blocked` is the receiving server refusing for now.
            "bounce" if kind == "blocked" => (Outcome::Undelivered, None),
            "bounce" => (Outcome::Undelivered, Some("bounce")),
            // SendGrid would not send it: to a suppressed address, or an invalid one.
            "dropped" => (
                Outcome::Failed,
                match reason.as_str() {
                    "Bounced Address" => Some("bounce"),
                    "Spam Reporting Address" => Some("complaint"),
                    "Unsubscribed Address" => Some("unsubscribe"),
                    _ => None,
                },
            ),
            // A complaint comes from the inbox: it was delivered.
            "spamreport" => (Outcome::Delivered, Some("complaint")),
            "unsubscribe" | "group_unsubscribe" => (Outcome::Progress, Some("unsubscribe")),
            // processed, deferred, open, click, group_resubscribe, …
            _ => (Outcome::Progress, None),
        };
        let pid = field(e, "sg_message_id")
            .map(|id| id.split('.').next().unwrap_or_default().to_string())
            .unwrap_or_default();
        let mut report = Report::new(pid, outcome);
        report.crier_id = field(e, CRIER_ID_ARG);
        report.code = field(e, "status")
            .or_else(|| (!kind.is_empty()).then(|| kind.clone()))
            .or_else(|| Some(event.clone()));
        report.text = Some(if reason.is_empty() {
            field(e, "response").unwrap_or_else(|| event.clone())
        } else {
            reason
        });
        report.at = e.get("timestamp").and_then(Value::as_i64).map(|t| t * 1000);
        report.to = field(e, "email");
        report.opted_out = opt_out.is_some();
        report.opt_out_reason = opt_out;
        if report.pid.is_empty() && report.crier_id.is_none() && !report.opted_out {
            continue;
        }
        parsed.reports.push(report);
    }
    Ok(parsed)
}

// ---------------------------------------------------------------------------------------
// Mailgun

async fn mailgun(State(state): State<Shared>, Path(token): Path<String>, body: Bytes) -> Response {
    if let Some(r) = check_token(&state, &token) {
        return r;
    }
    let root = match json(&body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return malformed(&state, "mailgun", "expected a JSON object".into()),
        Err(reason) => return malformed(&state, "mailgun", reason),
    };
    let signature = &root["signature"];
    let (Some(timestamp), Some(nonce), Some(presented)) = (
        field(signature, "timestamp"),
        field(signature, "token"),
        field(signature, "signature"),
    ) else {
        return refused(&state, StatusCode::UNAUTHORIZED, "Mailgun: no signature");
    };
    if !fresh(&timestamp, now_s()) {
        return refused(&state, StatusCode::FORBIDDEN, "Mailgun: stale timestamp");
    }
    let signer = state.config.providers.iter().find_map(|(name, p)| match p {
        ProviderConfig::Mailgun(c) => c
            .webhook_signing_key
            .as_ref()
            // An unset or empty key signs nothing: anyone could compute that HMAC.
            .filter(|k| !k.is_empty() && k.unset_var().is_none())
            .filter(|k| {
                let expected = mailgun_signature(k.expose(), &timestamp, &nonce);
                constant_time_eq(
                    expected.as_bytes(),
                    presented.trim().to_ascii_lowercase().as_bytes(),
                )
            })
            .map(|_| name.clone()),
        _ => None,
    });
    let Some(provider) = signer else {
        return refused(&state, StatusCode::FORBIDDEN, "Mailgun: bad signature");
    };
    match parse_mailgun(&root) {
        Ok(parsed) => ingest(state, "mailgun", vec![provider], parsed).await,
        Err(reason) => malformed(&state, "mailgun", reason),
    }
}

/// Mailgun's webhook signature: hex HMAC-SHA256 of `timestamp` and `token` under the
/// webhook signing key.
pub fn mailgun_signature(signing_key: &str, timestamp: &str, token: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, signing_key.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(token.as_bytes());
    hex(ctx.sign().as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Mailgun's webhook body: `event-data` with `event`, `recipient`, `timestamp`,
/// `message.headers.message-id`, `user-variables`, and for failures `severity`, `reason`
/// and `delivery-status {code, message, description}`.
pub(crate) fn parse_mailgun(root: &Value) -> Result<Parsed, String> {
    let data = root
        .get("event-data")
        .filter(|d| d.is_object())
        .ok_or("no `event-data` object")?;
    let event = field(data, "event")
        .ok_or("`event-data` has no `event`")?
        .to_ascii_lowercase();
    let severity = field(data, "severity").unwrap_or_default();
    let reason = field(data, "reason").unwrap_or_default();
    let (outcome, opt_out) = match event.as_str() {
        "delivered" => (Outcome::Delivered, None),
        "failed" if severity.eq_ignore_ascii_case("permanent") => (
            Outcome::Undelivered,
            match reason.as_str() {
                "bounce" | "suppress-bounce" => Some("bounce"),
                "suppress-complaint" => Some("complaint"),
                "suppress-unsubscribe" => Some("unsubscribe"),
                _ => None,
            },
        ),
        "rejected" => (Outcome::Failed, None),
        "complained" => (Outcome::Delivered, Some("complaint")),
        "unsubscribed" => (Outcome::Progress, Some("unsubscribe")),
        // accepted, a temporary failure (Mailgun retries), opened, clicked, stored, …
        _ => (Outcome::Progress, None),
    };
    let pid = data
        .pointer("/message/headers/message-id")
        .and_then(Value::as_str)
        .map(|id| crate::provider::mailgun::bare_id(id).to_string())
        .unwrap_or_default();
    let mut report = Report::new(pid, outcome);
    report.crier_id = data
        .get("user-variables")
        .and_then(|v| field(v, CRIER_ID_ARG));
    let status = data.get("delivery-status").cloned().unwrap_or(Value::Null);
    report.code = field(&status, "code").or_else(|| Some(event.clone()));
    report.text = field(&status, "message")
        .or_else(|| field(&status, "description"))
        .or_else(|| (!reason.is_empty()).then(|| reason.clone()))
        .or_else(|| Some(event.clone()));
    report.at = data
        .get("timestamp")
        .and_then(Value::as_f64)
        .map(|t| (t * 1000.0) as i64);
    report.to = field(data, "recipient");
    report.opted_out = opt_out.is_some();
    report.opt_out_reason = opt_out;
    let mut parsed = Parsed::default();
    if !report.pid.is_empty() || report.crier_id.is_some() || report.opted_out {
        parsed.reports.push(report);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SendGrid's published test vector (the sendgrid-java, -csharp and -nodejs
    /// EventWebhook tests).
    #[test]
    fn sendgrid_signature_matches_the_published_test_vector() {
        let key = p256_public_key("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==").unwrap();
        let payload =
            br#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;
        let signature = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
        assert!(sendgrid_verify(&key, "1588788367", payload, signature));
        // Their failing cases: another timestamp, payload, signature or key.
        assert!(!sendgrid_verify(&key, "1388788367", payload, signature));
        assert!(!sendgrid_verify(&key, "1588788367", b"payload", signature));
        let bad = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=";
        assert!(!sendgrid_verify(&key, "1588788367", payload, bad));
        let other = p256_public_key("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==").unwrap();
        assert!(!sendgrid_verify(&other, "1588788367", payload, signature));
        assert!(!sendgrid_verify(&key, "1588788367", payload, "not base64"));
    }

    #[test]
    fn mailgun_signature_is_hex_hmac_sha256_of_timestamp_and_token() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), the
        // well-known value, split into timestamp and token.
        assert_eq!(
            mailgun_signature("key", "The quick brown fox ", "jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_not_fresh() {
        let now = 1_800_000_000;
        assert!(fresh("1800000000", now));
        assert!(fresh(&(now - MAX_SKEW).to_string(), now));
        assert!(!fresh(&(now - MAX_SKEW - 1).to_string(), now));
        assert!(!fresh(&(now + MAX_SKEW + 1).to_string(), now));
        assert!(!fresh("soon", now));
    }

    #[test]
    fn sendgrid_events_map_to_outcomes_and_opt_outs() {
        let body = br#"[
          {"email":"a@x.example","timestamp":1700000000,"event":"processed","sg_message_id":"M1.filter0001.1.2.0","crier_message_id":"R-000001"},
          {"email":"a@x.example","timestamp":1700000001,"event":"delivered","sg_message_id":"M1.filter0001.1.2.0","response":"250 OK"},
          {"email":"b@x.example","timestamp":1700000002,"event":"bounce","type":"bounce","status":"5.1.1","reason":"550 5.1.1 no such user","sg_message_id":"M2.f"},
          {"email":"c@x.example","timestamp":1700000003,"event":"bounce","type":"blocked","status":"4.0.0","reason":"blocked","sg_message_id":"M3.f"},
          {"email":"d@x.example","timestamp":1700000004,"event":"dropped","reason":"Bounced Address","sg_message_id":"M4.f"},
          {"email":"e@x.example","timestamp":1700000005,"event":"spamreport","sg_message_id":"M5.f"},
          {"email":"f@x.example","timestamp":1700000006,"event":"unsubscribe","sg_message_id":"M6.f"},
          {"email":"g@x.example","timestamp":1700000007,"event":"deferred","response":"400 try again later","sg_message_id":"M7.f"}
        ]"#;
        let p = parse_sendgrid(body).unwrap();
        let got: Vec<_> = p
            .reports
            .iter()
            .map(|r| (r.pid.as_str(), r.outcome, r.opt_out_reason))
            .collect();
        assert_eq!(
            got,
            [
                ("M1", Outcome::Progress, None),
                ("M1", Outcome::Delivered, None),
                ("M2", Outcome::Undelivered, Some("bounce")),
                ("M3", Outcome::Undelivered, None),
                ("M4", Outcome::Failed, Some("bounce")),
                ("M5", Outcome::Delivered, Some("complaint")),
                ("M6", Outcome::Progress, Some("unsubscribe")),
                ("M7", Outcome::Progress, None),
            ]
        );
        assert_eq!(p.reports[0].crier_id.as_deref(), Some("R-000001"));
        assert_eq!(p.reports[2].code.as_deref(), Some("5.1.1"));
        assert_eq!(p.reports[2].text.as_deref(), Some("550 5.1.1 no such user"));
        assert_eq!(p.reports[2].at, Some(1_700_000_002_000));
        assert!(parse_sendgrid(b"{}").unwrap_err().contains("array"));
        assert!(
            parse_sendgrid(br#"[{"email":"a@b.c"}]"#)
                .unwrap_err()
                .contains("event 0")
        );
    }

    #[test]
    fn mailgun_events_map_to_outcomes_and_opt_outs() {
        let event = |e: &str, severity: &str, reason: &str| {
            serde_json::json!({"signature": {}, "event-data": {
                "event": e, "severity": severity, "reason": reason, "recipient": "a@x.example",
                "timestamp": 1700000000.25,
                "message": {"headers": {"message-id": "20260101.1@mg.acme.example"}},
                "user-variables": {"crier_message_id": "R-000002"},
                "delivery-status": {"code": 550, "message": "5.1.1 no such user"}
            }})
        };
        let one = |v: Value| {
            let p = parse_mailgun(&v).unwrap();
            let r = &p.reports[0];
            (r.outcome, r.opt_out_reason)
        };
        assert_eq!(one(event("delivered", "", "")), (Outcome::Delivered, None));
        assert_eq!(
            one(event("failed", "permanent", "bounce")),
            (Outcome::Undelivered, Some("bounce"))
        );
        assert_eq!(
            one(event("failed", "permanent", "suppress-complaint")),
            (Outcome::Undelivered, Some("complaint"))
        );
        assert_eq!(
            one(event("failed", "permanent", "old")),
            (Outcome::Undelivered, None)
        );
        assert_eq!(
            one(event("failed", "temporary", "generic")),
            (Outcome::Progress, None)
        );
        assert_eq!(
            one(event("complained", "", "")),
            (Outcome::Delivered, Some("complaint"))
        );
        assert_eq!(
            one(event("unsubscribed", "", "")),
            (Outcome::Progress, Some("unsubscribe"))
        );
        let p = parse_mailgun(&event("failed", "permanent", "bounce")).unwrap();
        let r = &p.reports[0];
        assert_eq!(r.pid, "20260101.1@mg.acme.example");
        assert_eq!(r.crier_id.as_deref(), Some("R-000002"));
        assert_eq!(r.code.as_deref(), Some("550"));
        assert_eq!(r.text.as_deref(), Some("5.1.1 no such user"));
        assert_eq!(r.at, Some(1_700_000_000_250));
        assert!(parse_mailgun(&serde_json::json!({"signature": {}})).is_err());
    }
}
