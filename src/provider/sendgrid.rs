//! SendGrid v3 Mail Send (`POST /v3/mail/send`, JSON, `Authorization: Bearer <API key>`).
//! Reference: <https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send>.
//!
//! One personalization per message (one recipient), the text and HTML bodies as
//! `content[]`, attachments base64 in `attachments[]`, and crier's message id in
//! `custom_args.crier_message_id`, which SendGrid copies into every event of the message.
//! A `202 Accepted` carries the message's id in the `X-Message-Id` header (the events'
//! `sg_message_id` starts with it); its body is empty. SendGrid has no idempotency key,
//! so a lost answer or a 500 is an unknown outcome, never resent.
//!
//! The event webhook (`/webhooks/sendgrid/<token>`, signed with ECDSA P-256) is read in
//! `server/email_webhooks.rs`, with the verification key configured here.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use lettre::message::Mailbox;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::attachments;
use super::wire::{self, snippet};
use super::{Balance, BoxFuture, Limits, Provider, RoutedMessage, SendOutcome, check_url};
use crate::config::Secret;
use crate::diag::FileReport;

/// The custom argument (and Mailgun user variable) that carries crier's message id.
pub const CRIER_ID_ARG: &str = "crier_message_id";

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendgridConfig {
    /// API key with the `mail.send` permission (`${SENDGRID_API_KEY}`).
    pub api_key: Secret,
    /// The `From:` address, a verified sender: `Acme ISP <billing@acme.example>`.
    pub from: String,
    /// The Signed Event Webhook's verification key, as SendGrid shows it: base64 of the
    /// DER SubjectPublicKeyInfo of an ECDSA P-256 key (`MFkwEwYHKoZIzj0CAQYI…`). Without
    /// it, events posted to `/webhooks/sendgrid/<token>` are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_public_key: Option<String>,
    /// Folder of financial documents for `attach:` (`<id>/<kind>/*.pdf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents_dir: Option<PathBuf>,
    /// API base (default `https://api.sendgrid.com`; `https://api.eu.sendgrid.com` for
    /// EU-pinned subusers).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub limits: Limits,
}

fn default_base_url() -> String {
    "https://api.sendgrid.com".into()
}

impl SendgridConfig {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        check_url(&self.base_url, &format!("{field}.base_url"), report);
        if self.api_key.is_empty() {
            report.error(&format!("{field}.api_key"), "must not be empty");
        }
        attachments::check_from(&self.from, field, report);
        if let Some(key) = &self.webhook_public_key
            && let Err(e) = p256_public_key(key)
        {
            report.error(&format!("{field}.webhook_public_key"), e);
        }
        self.limits.check(field, report);
    }
}

/// The uncompressed P-256 point inside a base64 DER SubjectPublicKeyInfo, as `ring`
/// takes it: the SPKI of a P-256 key is a fixed 26-byte prefix (id-ecPublicKey,
/// prime256v1, the bit string header) and the 65-byte point.
pub(crate) fn p256_public_key(spki_base64: &str) -> Result<Vec<u8>, String> {
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let compact: String = spki_base64.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| "is not base64 (expected the verification key SendGrid shows)".to_string())?;
    match der.strip_prefix(&PREFIX[..]) {
        Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(point.to_vec()),
        _ => Err("is not the DER SubjectPublicKeyInfo of an ECDSA P-256 key".into()),
    }
}

/// The SendGrid client.
pub struct Sendgrid {
    config: SendgridConfig,
    from: Mailbox,
    http: reqwest::Client,
    timeout: Duration,
}

impl Sendgrid {
    pub fn new(config: &SendgridConfig, http: reqwest::Client) -> Result<Sendgrid, String> {
        Ok(Sendgrid {
            from: attachments::sender(&config.from)?,
            timeout: super::timeout(&config.limits),
            config: config.clone(),
            http,
        })
    }

    /// The Mail Send body of `message`: the one place its JSON is composed.
    pub(crate) fn body(&self, message: &RoutedMessage) -> Result<serde_json::Value, SendOutcome> {
        let files = attachments::load("sendgrid", self.config.documents_dir.as_deref(), message)?;
        let mut content = vec![json!({"type": "text/plain", "value": message.body})];
        if let Some(html) = &message.html {
            content.push(json!({"type": "text/html", "value": html}));
        }
        let mut from = json!({"email": self.from.email.to_string()});
        if let Some(name) = &self.from.name {
            from["name"] = json!(name);
        }
        let mut body = json!({
            "personalizations": [{
                "to": [{"email": message.to}],
                "custom_args": {CRIER_ID_ARG: message.id},
            }],
            "from": from,
            "subject": message.subject.clone().unwrap_or_default(),
            "content": content,
            "headers": {"X-Crier-Message-Id": message.id},
        });
        for (name, value) in message.unsubscribe.iter().flat_map(|l| l.headers()) {
            body["headers"][name] = json!(value);
        }
        if !files.is_empty() {
            let b64 = base64::engine::general_purpose::STANDARD;
            body["attachments"] = files
                .iter()
                .map(|f| {
                    json!({
                        "content": b64.encode(&f.bytes),
                        "type": f.content_type,
                        "filename": f.name,
                        "disposition": "attachment",
                    })
                })
                .collect();
        }
        Ok(body)
    }
}

/// Classifies SendGrid's answer to Mail Send. `message_id` is the `X-Message-Id` header;
/// `crier_id` is the message's own id, the provider id of a 2xx without the header (the
/// events carry it in `custom_args`, so delivery reports still find the message).
///
/// | answer | outcome |
/// |---|---|
/// | 2xx (202 Accepted) | sent, under `X-Message-Id` |
/// | 429 Too Many Requests | retry (after `Retry-After` when given) |
/// | 401 (bad key), 403 (unverified sender, key without `mail.send`, temporary block) | halt: every message would fail alike |
/// | 503 Service Unavailable | retry: the API did not take the request |
/// | other 5xx | unknown: it may have been accepted, and resending could send it twice |
/// | 400, 413 and any other 4xx | rejected, with SendGrid's `errors[].message` |
pub(crate) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    message_id: Option<&str>,
    body: &str,
    crier_id: &str,
) -> SendOutcome {
    let text = error_text(body);
    match status {
        200..=299 => SendOutcome::Sent {
            provider_id: message_id
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .unwrap_or(crier_id)
                .to_string(),
        },
        429 => wire::retry(retry_after, format!("too many requests (HTTP 429): {text}")),
        401 | 403 => SendOutcome::Halt {
            code: format!("sendgrid:{status}"),
            text: format!("the account cannot send (HTTP {status}): {text}"),
        },
        503 => wire::retry(
            retry_after,
            format!("service unavailable (HTTP 503): {text}"),
        ),
        500..=599 => SendOutcome::Unknown {
            reason: format!("server error (HTTP {status}), the message may have been sent: {text}"),
        },
        _ => SendOutcome::Rejected {
            code: format!("sendgrid:{status}"),
            text,
        },
    }
}

/// SendGrid's `{"errors":[{"message","field"}]}` as one line, or the body cut short.
fn error_text(body: &str) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        field: Option<String>,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => {
            let items: Vec<String> = e
                .errors
                .into_iter()
                .map(|i| match (i.field, i.message) {
                    (Some(f), Some(m)) => format!("{f}: {m}"),
                    (None, Some(m)) => m,
                    (Some(f), None) => f,
                    (None, None) => "error".into(),
                })
                .collect();
            snippet(&items.join("; "))
        }
        _ => snippet(body),
    }
}

impl Provider for Sendgrid {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let secrets = [self.config.api_key.expose()];
            let body = match self.body(message) {
                Ok(body) => body,
                Err(outcome) => return wire::scrub(outcome, &secrets),
            };
            let url = format!(
                "{}/v3/mail/send",
                self.config.base_url.trim_end_matches('/')
            );
            let request = self
                .http
                .post(url)
                .bearer_auth(self.config.api_key.expose())
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(self.timeout)
                .json(&body);
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => return super::transport_outcome(&e, false),
            };
            let message_id = response
                .headers()
                .get("x-message-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match wire::read(response).await {
                Ok(a) => wire::scrub(
                    classify(
                        a.status,
                        a.retry_after,
                        message_id.as_deref(),
                        &a.body,
                        &message.id,
                    ),
                    &secrets,
                ),
                Err(e) => super::transport_outcome(&e, false),
            }
        })
    }

    /// `crier providers check`: `GET /v3/scopes` lists the key's permissions, which must
    /// include `mail.send`. SendGrid has no balance to show.
    fn balance(&self) -> BoxFuture<'_, Result<Option<Balance>, String>> {
        Box::pin(async move {
            let url = format!("{}/v3/scopes", self.config.base_url.trim_end_matches('/'));
            let request = self
                .http
                .get(url)
                .bearer_auth(self.config.api_key.expose())
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(self.timeout);
            let result = async {
                let response = request.send().await.map_err(wire::request_failed)?;
                let answer = wire::read(response).await.map_err(wire::request_failed)?;
                if !(200..300).contains(&answer.status) {
                    return Err(wire::balance_refused(&answer));
                }
                let reply: serde_json::Value = serde_json::from_str(&answer.body)
                    .map_err(|_| format!("unreadable scopes: {}", snippet(&answer.body)))?;
                let scopes = reply["scopes"].as_array().cloned().unwrap_or_default();
                if scopes.iter().any(|s| s == "mail.send") {
                    Ok(None)
                } else {
                    Err("the API key lacks the `mail.send` permission".into())
                }
            }
            .await;
            result.map_err(|e| wire::scrub_text(e, &[self.config.api_key.expose()]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::provider::outcome_kind as kind;

    fn errors(message: &str, field: Option<&str>) -> String {
        json!({"errors": [{"message": message, "field": field, "help": null}]}).to_string()
    }

    /// Status, `Retry-After`, `X-Message-Id`, body, and the outcome wanted.
    type Row<'a> = (u16, Option<Duration>, Option<&'a str>, String, &'a str);

    /// SendGrid's documented answers to Mail Send (Mail Send reference and the v3 API
    /// "Responses" and "Errors" pages).
    #[test]
    fn classifies_every_documented_answer() {
        let after = Some(Duration::from_secs(7));
        let table: Vec<Row> = vec![
            (
                202,
                None,
                Some("W4fLwL2rQvGbYSvQx8Pqyg"),
                "".into(),
                "sent W4fLwL2rQvGbYSvQx8Pqyg",
            ),
            (202, None, None, "".into(), "sent RUN-000001"),
            (200, None, Some("abc"), "".into(), "sent abc"),
            (
                400,
                None,
                None,
                errors(
                    "The from address does not match a verified Sender Identity.",
                    Some("from"),
                ),
                "rejected sendgrid:400",
            ),
            (
                400,
                None,
                None,
                errors(
                    "Does not contain a valid address.",
                    Some("personalizations.0.to.0.email"),
                ),
                "rejected sendgrid:400",
            ),
            (
                401,
                None,
                None,
                errors(
                    "The provided authorization grant is invalid, expired, or revoked",
                    None,
                ),
                "halt sendgrid:401",
            ),
            (
                403,
                None,
                None,
                errors(
                    "The from address does not match a verified Sender Identity.",
                    None,
                ),
                "halt sendgrid:403",
            ),
            (
                403,
                None,
                None,
                errors("access forbidden", None),
                "halt sendgrid:403",
            ),
            (404, None, None, "".into(), "rejected sendgrid:404"),
            (406, None, None, "".into(), "rejected sendgrid:406"),
            (
                413,
                None,
                None,
                errors(
                    "The JSON payload you have included in your request is too large.",
                    None,
                ),
                "rejected sendgrid:413",
            ),
            (429, None, None, errors("too many requests", None), "retry"),
            (429, after, None, "".into(), "retry after 7"),
            (500, None, None, errors("internal error", None), "unknown"),
            (502, None, None, "".into(), "unknown"),
            (503, None, None, "".into(), "retry"),
            (503, after, None, "".into(), "retry after 7"),
        ];
        for (status, after, id, body, want) in &table {
            assert_eq!(
                kind(&classify(*status, *after, *id, body, "RUN-000001")),
                *want,
                "HTTP {status} {body}"
            );
        }
    }

    #[test]
    fn rejections_carry_sendgrids_field_and_message() {
        let out = classify(
            400,
            None,
            None,
            &errors(
                "Does not contain a valid address.",
                Some("personalizations.0.to.0.email"),
            ),
            "x",
        );
        assert_eq!(
            out,
            SendOutcome::Rejected {
                code: "sendgrid:400".into(),
                text: "personalizations.0.to.0.email: Does not contain a valid address.".into()
            }
        );
    }

    #[test]
    fn reads_a_p256_verification_key_and_refuses_others() {
        // SendGrid's own example key (sendgrid-nodejs eventwebhook tests).
        let key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
        let point = p256_public_key(key).unwrap();
        assert_eq!((point.len(), point[0]), (65, 4));
        assert!(p256_public_key("not base64!").is_err());
        assert!(p256_public_key("MFkwEwYHKoZIzj0CAQ==").is_err());
    }
}
