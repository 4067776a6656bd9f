//! The email APIs' event webhooks: SendGrid's Event Webhook, Mailgun's webhooks and SES
//! events through SNS, read into the same [`Report`]s as the SMS delivery reports and
//! applied by the same [`ingest`].
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
//! - SNS signs each message with RSA (`SignatureVersion` 1: SHA1withRSA, 2: SHA256withRSA)
//!   over its canonical string (the fields of its `Type`, each as name and value lines),
//!   with the certificate at `SigningCertURL`. That URL is fetched only when it is
//!   `https://sns.<region>.amazonaws.com/….pem` (or starts with the provider's
//!   `sns_trusted_url_prefix`, for tests and mirrors), and only for a `TopicArn` the SES
//!   provider lists in `sns_topic_arns`: the signature proves SNS sent it, the topic that
//!   it is ours. A `SubscriptionConfirmation` that passes is confirmed by fetching its
//!   `SubscribeURL` under the same host rule. SNS messages carry no freshness window
//!   (SNS redelivers the same signed message for as long as its retry policy says), so
//!   they are not refused for age; a replayed genuine event changes nothing.
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
use axum::response::{IntoResponse, Response};
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
        .route("/webhooks/ses", any(missing_token))
        .route("/webhooks/ses/{token}", post(ses))
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
        report.code = if event == "bounce" && opt_out.is_some() {
            Some(hard_bounce_code(field(e, "status")))
        } else {
            field(e, "status")
                .or_else(|| (!kind.is_empty()).then(|| kind.clone()))
                .or_else(|| Some(event.clone()))
        };
        report.text = Some(if reason.is_empty() {
            field(e, "response").unwrap_or_else(|| event.clone())
        } else {
            reason
        });
        report.at = e
            .get("timestamp")
            .and_then(Value::as_i64)
            .and_then(|t| t.checked_mul(1000));
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

/// A hard bounce's error code as `crier bounces ingest` writes it, `bounce:<status>`
/// (`bounce:5.1.1`), so both count towards `bounces.hard_bounce_limit` alike; a bounce
/// without a status is the generic permanent failure `5.0.0`.
fn hard_bounce_code(status: Option<String>) -> String {
    format!("bounce:{}", status.unwrap_or_else(|| "5.0.0".into()))
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
    let smtp_status = field(&status, "enhanced-code").or_else(|| field(&status, "code"));
    report.code = if opt_out == Some("bounce") && event == "failed" {
        Some(hard_bounce_code(smtp_status))
    } else {
        smtp_status.or_else(|| Some(event.clone()))
    };
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

// ---------------------------------------------------------------------------------------
// SES through SNS

async fn ses(State(state): State<Shared>, Path(token): Path<String>, body: Bytes) -> Response {
    if let Some(r) = check_token(&state, &token) {
        return r;
    }
    let message = match json(&body) {
        Ok(v) if v.is_object() => v,
        Ok(_) => return malformed(&state, "ses", "expected a JSON object".into()),
        Err(reason) => return malformed(&state, "ses", reason),
    };
    let text = |k: &str| message.get(k).and_then(Value::as_str);
    let kind = text("Type").unwrap_or_default().to_string();
    let (Some(signature), Some(cert_url)) = (text("Signature"), text("SigningCertURL")) else {
        return refused(&state, StatusCode::UNAUTHORIZED, "SNS: no signature");
    };
    let Some(signed) = sns_string_to_sign(&message) else {
        return malformed(
            &state,
            "ses",
            format!("not an SNS message of a known type (`Type` is `{kind}`)"),
        );
    };
    // The SES provider subscribed to this topic: only it may speak for the message.
    let topic = text("TopicArn").unwrap_or_default();
    let Some((provider, prefix)) = state.config.providers.iter().find_map(|(name, p)| match p {
        ProviderConfig::Ses(c) if c.sns_topic_arns.iter().any(|t| t == topic) => {
            Some((name.clone(), c.sns_trusted_url_prefix.clone()))
        }
        _ => None,
    }) else {
        return refused(
            &state,
            StatusCode::FORBIDDEN,
            "SNS: a topic no provider lists",
        );
    };
    if !trusted_sns_url(cert_url, prefix.as_deref(), true) {
        return refused(
            &state,
            StatusCode::FORBIDDEN,
            "SNS: untrusted SigningCertURL",
        );
    }
    let cert = match signing_cert(cert_url).await {
        Ok(cert) => cert,
        Err(e) => {
            tracing::warn!(error = %e, "Could not fetch the SNS signing certificate.");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"error": "signing certificate unavailable"})),
            )
                .into_response();
        }
    };
    let version = text("SignatureVersion").unwrap_or("1");
    if !sns_verify(&cert, version, signed.as_bytes(), signature) {
        return refused(&state, StatusCode::FORBIDDEN, "SNS: bad signature");
    }
    match kind.as_str() {
        "Notification" => {
            let inner = match serde_json::from_str::<Value>(text("Message").unwrap_or_default()) {
                Ok(v) => v,
                Err(e) => {
                    return malformed(&state, "ses", format!("`Message` is not JSON: {e}"));
                }
            };
            match parse_ses(&inner) {
                Ok(parsed) => ingest(state, "ses", vec![provider], parsed).await,
                Err(reason) => malformed(&state, "ses", reason),
            }
        }
        "SubscriptionConfirmation" => {
            let url = text("SubscribeURL").unwrap_or_default();
            if !trusted_sns_url(url, prefix.as_deref(), false) {
                return refused(&state, StatusCode::FORBIDDEN, "SNS: untrusted SubscribeURL");
            }
            match fetch(url).await {
                Ok(_) => {
                    tracing::info!(topic, provider, "Confirmed the SNS subscription.");
                    axum::Json(serde_json::json!({"confirmed": true})).into_response()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Could not confirm the SNS subscription.");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(serde_json::json!({"error": "confirmation failed"})),
                    )
                        .into_response()
                }
            }
        }
        _ => axum::Json(serde_json::json!({"ok": true})).into_response(),
    }
}

/// The canonical string SNS signs: for a `Notification` `Message`, `MessageId`, `Subject`
/// (when present), `Timestamp`, `TopicArn`, `Type`; for a (un)subscription confirmation
/// `Message`, `MessageId`, `SubscribeURL`, `Timestamp`, `Token`, `TopicArn`, `Type`; each
/// as its name and its value on lines of their own. `None` for another type or a missing
/// field.
pub(crate) fn sns_string_to_sign(message: &Value) -> Option<String> {
    let keys: &[&str] = match message.get("Type").and_then(Value::as_str)? {
        "Notification" => &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ],
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ],
        _ => return None,
    };
    let mut out = String::new();
    for key in keys {
        match message.get(*key).and_then(Value::as_str) {
            Some(value) => {
                out.push_str(key);
                out.push('\n');
                out.push_str(value);
                out.push('\n');
            }
            None if *key == "Subject" => {}
            None => return None,
        }
    }
    Some(out)
}

/// May crier fetch `url` for SNS? `https://sns.<region>.amazonaws.com[.cn]/…` (with a
/// `.pem` path for a certificate), or anything under the configured `prefix`.
pub(crate) fn trusted_sns_url(url: &str, prefix: Option<&str>, certificate: bool) -> bool {
    if let Some(prefix) = prefix.filter(|p| !p.is_empty())
        && url.starts_with(prefix)
    {
        return true;
    }
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let host_ok = u.host_str().is_some_and(|h| {
        let region = h.strip_prefix("sns.").and_then(|r| {
            r.strip_suffix(".amazonaws.com")
                .or_else(|| r.strip_suffix(".amazonaws.com.cn"))
        });
        region.is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
    });
    u.scheme() == "https"
        && host_ok
        && u.port().is_none()
        && u.username().is_empty()
        && u.password().is_none()
        && (!certificate || u.path().ends_with(".pem"))
}

/// Checks an SNS signature (base64) over `signed` with the certificate `cert_der`:
/// SHA1withRSA for `SignatureVersion` 1, SHA256withRSA for 2.
pub(crate) fn sns_verify(cert_der: &[u8], version: &str, signed: &[u8], signature: &str) -> bool {
    let alg: &dyn rustls_pki_types::SignatureVerificationAlgorithm = match version.trim() {
        "1" => &RsaPkcs1(&ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY),
        "2" => &RsaPkcs1(&ring::signature::RSA_PKCS1_2048_8192_SHA256),
        _ => return false,
    };
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let der = rustls_pki_types::CertificateDer::from(cert_der);
    let Ok(cert) = webpki::EndEntityCert::try_from(&der) else {
        return false;
    };
    cert.verify_signature(alg, signed, &signature).is_ok()
}

/// RSA PKCS#1 v1.5 verification for webpki, by `ring` (webpki offers no SHA-1 one, and
/// SNS's `SignatureVersion` 1 is SHA1withRSA).
#[derive(Debug)]
struct RsaPkcs1(&'static ring::signature::RsaParameters);

impl rustls_pki_types::SignatureVerificationAlgorithm for RsaPkcs1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), rustls_pki_types::InvalidSignature> {
        ring::signature::UnparsedPublicKey::new(self.0, public_key)
            .verify(message, signature)
            .map_err(|_| rustls_pki_types::InvalidSignature)
    }

    fn public_key_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        rustls_pki_types::alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        rustls_pki_types::alg_id::RSA_PKCS1_SHA256
    }
}

/// The DER of the first certificate in a PEM text.
pub(crate) fn pem_certificate(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = pem[start..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// The client SNS URLs are fetched with (certificates, subscription confirmations): it
/// follows no redirect, so the host rule holds for the URL actually read.
fn sns_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        // Installs the process's rustls crypto provider, as every HTTP client here needs.
        let _ = crate::provider::http_client();
        reqwest::Client::builder()
            .user_agent(concat!("crier/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

async fn fetch(url: &str) -> Result<String, String> {
    let response = sns_client()
        .get(url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status().as_u16()));
    }
    response
        .text()
        .await
        .map_err(|e| e.without_url().to_string())
}

/// The signing certificate at `url` (DER), fetched once and kept (SNS rotates them
/// rarely, under new URLs).
async fn signing_cert(url: &str) -> Result<Vec<u8>, String> {
    static CACHE: std::sync::Mutex<Vec<(String, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());
    let cached = |cache: &Vec<(String, Vec<u8>)>| {
        cache.iter().find(|(u, _)| u == url).map(|(_, c)| c.clone())
    };
    if let Some(cert) = cached(&CACHE.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(cert);
    }
    let pem = fetch(url).await?;
    let der = pem_certificate(&pem).ok_or("no PEM certificate at the URL")?;
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= 32 {
        cache.remove(0);
    }
    cache.push((url.to_string(), der.clone()));
    Ok(der)
}

/// An SES event (event publishing: `eventType`) or notification (`notificationType`):
/// `mail.messageId`, `mail.tags.crier_message_id`, and the `bounce`, `complaint`,
/// `delivery` or `reject` object.
pub(crate) fn parse_ses(message: &Value) -> Result<Parsed, String> {
    let kind = field(message, "eventType")
        .or_else(|| field(message, "notificationType"))
        .ok_or("neither `eventType` nor `notificationType`")?;
    let mail = message.get("mail").ok_or("no `mail`")?;
    let pid = field(mail, "messageId").unwrap_or_default();
    let crier_id = mail
        .pointer(&format!("/tags/{CRIER_ID_ARG}/0"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let time = |v: Option<&Value>| {
        v.and_then(|v| field(v, "timestamp"))
            .and_then(|t| super::webhooks::parse_time(&t))
    };
    let first = |v: Option<&Value>, list: &str| {
        v.and_then(|v| v.get(list))
            .and_then(|l| l.get(0))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut report = Report::new(pid, Outcome::Progress);
    report.crier_id = crier_id;
    report.to = mail
        .get("destination")
        .and_then(|d| d.get(0))
        .and_then(Value::as_str)
        .map(str::to_string);
    match kind.as_str() {
        "Bounce" => {
            let bounce = message.get("bounce");
            let kind = bounce
                .and_then(|b| field(b, "bounceType"))
                .unwrap_or_default();
            let sub = bounce
                .and_then(|b| field(b, "bounceSubType"))
                .unwrap_or_default();
            let recipient = first(bounce, "bouncedRecipients");
            report.outcome = Outcome::Undelivered;
            if kind == "Permanent" {
                report.opted_out = true;
                report.opt_out_reason = Some("bounce");
            }
            report.code = if kind == "Permanent" {
                Some(hard_bounce_code(field(&recipient, "status")))
            } else {
                field(&recipient, "status").or(Some(format!("{kind}/{sub}")))
            };
            report.text =
                field(&recipient, "diagnosticCode").or(Some(format!("{kind} bounce: {sub}")));
            report.to = field(&recipient, "emailAddress").or(report.to);
            report.at = time(bounce);
        }
        "Complaint" => {
            let complaint = message.get("complaint");
            report.outcome = Outcome::Delivered;
            report.opted_out = true;
            report.opt_out_reason = Some("complaint");
            report.to =
                field(&first(complaint, "complainedRecipients"), "emailAddress").or(report.to);
            report.at = time(complaint);
        }
        "Delivery" => {
            let delivery = message.get("delivery");
            report.outcome = Outcome::Delivered;
            report.text = delivery.and_then(|d| field(d, "smtpResponse"));
            report.at = time(delivery);
        }
        "Reject" | "Rendering Failure" => {
            report.outcome = Outcome::Failed;
            report.code = Some(kind.clone());
            report.text = message
                .get("reject")
                .and_then(|r| field(r, "reason"))
                .or_else(|| {
                    message
                        .get("failure")
                        .and_then(|f| field(f, "errorMessage"))
                });
        }
        // Send, DeliveryDelay, Open, Click, Subscription, …
        _ => {}
    }
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
        assert_eq!(p.reports[2].code.as_deref(), Some("bounce:5.1.1"));
        assert_eq!(
            p.reports[3].code.as_deref(),
            Some("4.0.0"),
            "blocked: not a hard bounce"
        );
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
        assert_eq!(r.code.as_deref(), Some("bounce:550"));
        assert_eq!(r.text.as_deref(), Some("5.1.1 no such user"));
        assert_eq!(r.at, Some(1_700_000_000_250));
        assert!(parse_mailgun(&serde_json::json!({"signature": {}})).is_err());
    }

    #[test]
    fn sns_urls_are_trusted_only_on_aws_hosts_over_https_or_under_the_prefix() {
        let ok = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123.pem";
        assert!(trusted_sns_url(ok, None, true));
        assert!(trusted_sns_url(
            "https://sns.cn-north-1.amazonaws.com.cn/a.pem",
            None,
            true
        ));
        for bad in [
            "http://sns.eu-west-1.amazonaws.com/a.pem",
            "https://sns.eu-west-1.amazonaws.com.evil.example/a.pem",
            "https://evil.example/sns.eu-west-1.amazonaws.com/a.pem",
            "https://sns.eu-west-1.amazonaws.com:8443/a.pem",
            "https://user@sns.eu-west-1.amazonaws.com/a.pem",
            "https://sns..amazonaws.com/a.pem",
            "https://sns.eu-west-1.amazonaws.com/a.txt",
            "not a url",
        ] {
            assert!(!trusted_sns_url(bad, None, true), "{bad}");
        }
        // A SubscribeURL has no .pem path.
        assert!(trusted_sns_url(
            "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
            None,
            false
        ));
        let prefix = Some("http://127.0.0.1:9000/");
        assert!(trusted_sns_url("http://127.0.0.1:9000/c.pem", prefix, true));
        assert!(!trusted_sns_url(
            "http://127.0.0.1:90001/c.pem",
            prefix,
            true
        ));
        assert!(!trusted_sns_url(
            "http://127.0.0.1:9000/c.pem",
            Some(""),
            true
        ));
    }

    #[test]
    fn sns_canonical_strings_follow_the_type() {
        let n = serde_json::json!({"Type": "Notification", "Message": "m", "MessageId": "i",
            "Timestamp": "t", "TopicArn": "a", "Signature": "s", "UnsubscribeURL": "u"});
        assert_eq!(
            sns_string_to_sign(&n).unwrap(),
            "Message\nm\nMessageId\ni\nTimestamp\nt\nTopicArn\na\nType\nNotification\n"
        );
        let mut with_subject = n.clone();
        with_subject["Subject"] = serde_json::json!("s");
        assert!(
            sns_string_to_sign(&with_subject)
                .unwrap()
                .contains("MessageId\ni\nSubject\ns\nTimestamp")
        );
        let c = serde_json::json!({"Type": "SubscriptionConfirmation", "Message": "m", "MessageId": "i",
            "SubscribeURL": "u", "Timestamp": "t", "Token": "k", "TopicArn": "a"});
        assert_eq!(
            sns_string_to_sign(&c).unwrap(),
            "Message\nm\nMessageId\ni\nSubscribeURL\nu\nTimestamp\nt\nToken\nk\nTopicArn\na\nType\nSubscriptionConfirmation\n"
        );
        let mut missing = c.clone();
        missing.as_object_mut().unwrap().remove("Token");
        assert_eq!(sns_string_to_sign(&missing), None);
        assert_eq!(
            sns_string_to_sign(&serde_json::json!({"Type": "Other"})),
            None
        );
    }

    #[test]
    fn sns_signature_version_1_verifies_against_its_certificate() {
        let cert = pem_certificate(include_str!("../../tests/fixtures/sns/cert.pem")).unwrap();
        let n: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/sns/notification-v1.json"
        ))
        .unwrap();
        let signed = sns_string_to_sign(&n).unwrap();
        let signature = n["Signature"].as_str().unwrap();
        assert!(sns_verify(&cert, "1", signed.as_bytes(), signature));
        assert!(!sns_verify(&cert, "2", signed.as_bytes(), signature));
        assert!(!sns_verify(&cert, "1", b"other text", signature));
        assert!(!sns_verify(&cert, "3", signed.as_bytes(), signature));
        assert!(!sns_verify(
            b"not a certificate",
            "1",
            signed.as_bytes(),
            signature
        ));
        assert_eq!(pem_certificate("no pem here"), None);
    }

    #[test]
    fn ses_events_map_to_outcomes_and_opt_outs() {
        let event = |kind: &str, extra: Value| {
            let mut e = serde_json::json!({"mail": {"messageId": "m-1", "destination": ["a@x.example"],
                "tags": {"crier_message_id": ["R-000003"]}}});
            e[if kind.starts_with('n') {
                "notificationType"
            } else {
                "eventType"
            }] = serde_json::json!(kind.trim_start_matches('n'));
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            parse_ses(&e).unwrap().reports.remove(0)
        };
        let r = event(
            "Bounce",
            serde_json::json!({"bounce": {"bounceType": "Permanent",
            "bounceSubType": "General", "timestamp": "2026-01-01T00:00:00.000Z",
            "bouncedRecipients": [{"emailAddress": "b@x.example", "status": "5.1.1"}]}}),
        );
        assert_eq!(
            (r.outcome, r.opt_out_reason),
            (Outcome::Undelivered, Some("bounce"))
        );
        assert_eq!(
            (r.pid.as_str(), r.crier_id.as_deref()),
            ("m-1", Some("R-000003"))
        );
        assert_eq!(r.to.as_deref(), Some("b@x.example"));
        assert_eq!(r.code.as_deref(), Some("bounce:5.1.1"));
        assert!(r.at.is_some());
        let r = event(
            "Bounce",
            serde_json::json!({"bounce": {"bounceType": "Transient"}}),
        );
        assert_eq!((r.outcome, r.opt_out_reason), (Outcome::Undelivered, None));
        let r = event("nComplaint", serde_json::json!({"complaint": {}}));
        assert_eq!(
            (r.outcome, r.opt_out_reason),
            (Outcome::Delivered, Some("complaint"))
        );
        let r = event("Delivery", serde_json::json!({"delivery": {}}));
        assert_eq!(r.outcome, Outcome::Delivered);
        let r = event(
            "Reject",
            serde_json::json!({"reject": {"reason": "Bad content"}}),
        );
        assert_eq!(
            (r.outcome, r.text.as_deref()),
            (Outcome::Failed, Some("Bad content"))
        );
        let r = event("DeliveryDelay", serde_json::json!({}));
        assert_eq!(r.outcome, Outcome::Progress);
        assert!(parse_ses(&serde_json::json!({"mail": {}})).is_err());
    }
}
