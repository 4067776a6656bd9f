//! Mailgun messages API (`POST /v3/<domain>/messages`, multipart/form-data, Basic
//! `api:<API key>`), in the US (`api.mailgun.net`) or EU (`api.eu.mailgun.net`) region.
//! Reference: <https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/messages>.
//!
//! Mailgun builds the MIME from the fields: `from`, `to`, `subject`, `text`, `html`, one
//! `attachment` part per file, and `v:crier_message_id`, a user variable Mailgun copies
//! into every event of the message (`event-data.user-variables`). A 200 answers
//! `{"id":"<…@domain>","message":"Queued. Thank you."}`; the id, without its angle
//! brackets, is the `message.headers.message-id` of the events. Mailgun has no idempotency
//! key and has been seen to send a message it answered with a 5xx, so a 5xx or a lost
//! answer is an unknown outcome, never resent.
//!
//! The event webhook (`/webhooks/mailgun/<token>`, HMAC-signed with the webhook signing
//! key configured here) is read in `server/email_webhooks.rs`.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::attachments;
use super::sendgrid::CRIER_ID_ARG;
use super::wire::{self, snippet};
use super::{Balance, BoxFuture, Limits, Provider, RoutedMessage, SendOutcome, check_url};
use crate::config::Secret;
use crate::diag::FileReport;

/// Where the sending domain was created; it decides the API host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `https://api.mailgun.net`.
    #[default]
    Us,
    /// `https://api.eu.mailgun.net`.
    Eu,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MailgunConfig {
    /// Private API key or a domain sending key (`${MAILGUN_API_KEY}`).
    pub api_key: Secret,
    /// The sending domain, as added in Mailgun: `mg.acme.example`.
    pub domain: String,
    /// The `From:` address, e.g. `Acme ISP <billing@mg.acme.example>`.
    pub from: String,
    /// `us` (default) or `eu`: the region the domain was created in.
    #[serde(default)]
    pub region: Region,
    /// API base, overriding `region` (sandboxes, tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The HTTP webhook signing key (Mailgun: Sending → Webhooks), which signs the events
    /// posted to `/webhooks/mailgun/<token>`. Without it those events are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_signing_key: Option<Secret>,
    /// Folder of financial documents for `attach:` (`<id>/<kind>/*.pdf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents_dir: Option<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
}

impl MailgunConfig {
    /// The API base: `base_url`, else the region's host.
    pub fn base(&self) -> &str {
        match (&self.base_url, self.region) {
            (Some(url), _) => url.trim_end_matches('/'),
            (None, Region::Us) => "https://api.mailgun.net",
            (None, Region::Eu) => "https://api.eu.mailgun.net",
        }
    }

    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        if let Some(url) = &self.base_url {
            check_url(url, &format!("{field}.base_url"), report);
        }
        if self.api_key.is_empty() {
            report.error(&format!("{field}.api_key"), "must not be empty");
        }
        let domain = self.domain.trim();
        if domain.is_empty()
            || !domain.contains('.')
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            report.error(
                &format!("{field}.domain"),
                format!(
                    "`{}` is not a domain name (e.g. `mg.acme.example`)",
                    self.domain
                ),
            );
        }
        attachments::check_from(&self.from, field, report);
        self.limits.check(field, report);
    }
}

/// The Mailgun client.
pub struct Mailgun {
    config: MailgunConfig,
    from: Mailbox,
    http: reqwest::Client,
    timeout: Duration,
}

impl Mailgun {
    pub fn new(config: &MailgunConfig, http: reqwest::Client) -> Result<Mailgun, String> {
        Ok(Mailgun {
            from: attachments::sender(&config.from)?,
            timeout: super::timeout(&config.limits),
            config: config.clone(),
            http,
        })
    }

    /// The multipart form of `message`: the one place its fields are composed.
    fn form(&self, message: &RoutedMessage) -> Result<reqwest::multipart::Form, SendOutcome> {
        let files = attachments::load("mailgun", self.config.documents_dir.as_deref(), message)?;
        let mut form = reqwest::multipart::Form::new()
            .text("from", self.from.to_string())
            .text("to", message.to.clone())
            .text("subject", message.subject.clone().unwrap_or_default())
            .text("text", message.body.clone());
        if let Some(html) = &message.html {
            form = form.text("html", html.clone());
        }
        form = form
            .text(format!("v:{CRIER_ID_ARG}"), message.id.clone())
            .text("h:X-Crier-Message-Id", message.id.clone());
        for (name, value) in message.unsubscribe.iter().flat_map(|l| l.headers()) {
            form = form.text(format!("h:{name}"), value);
        }
        for file in files {
            let part = reqwest::multipart::Part::bytes(file.bytes)
                .file_name(file.name)
                .mime_str(&file.content_type)
                .map_err(|_| SendOutcome::Rejected {
                    code: "mailgun:attachment".into(),
                    text: format!("`{}` is not a content type", file.content_type),
                })?;
            form = form.part("attachment", part);
        }
        Ok(form)
    }
}

/// A Mailgun message id as the events write it: without the angle brackets the send
/// answer has.
pub(crate) fn bare_id(id: &str) -> &str {
    let id = id.trim();
    id.strip_prefix('<')
        .and_then(|i| i.strip_suffix('>'))
        .unwrap_or(id)
}

/// Classifies Mailgun's answer to `POST /v3/<domain>/messages`. `crier_id` is the
/// message's own id, the provider id of a 2xx without one (the events carry it as a user
/// variable).
///
/// | answer | outcome |
/// |---|---|
/// | 200 `{"id":"<…>"}` | sent, under the id without `<>` |
/// | 429 | retry (after `Retry-After` when given) |
/// | 401, 403 (key refused), 402 (account cannot send), 404 (no such domain) | halt: every message would fail alike |
/// | 5xx | unknown: Mailgun has sent messages it answered with a 5xx |
/// | 400, 413 and any other 4xx | rejected, with Mailgun's `message` |
pub(crate) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    crier_id: &str,
) -> SendOutcome {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    let reply = serde_json::from_str::<Reply>(body).ok();
    let (id, text) = match reply {
        Some(r) => (r.id, r.message.map(|m| snippet(&m))),
        None => (None, None),
    };
    let text = text.unwrap_or_else(|| snippet(body));
    match status {
        200..=299 => SendOutcome::Sent {
            provider_id: id
                .as_deref()
                .map(bare_id)
                .filter(|id| !id.is_empty())
                .unwrap_or(crier_id)
                .to_string(),
        },
        429 => wire::retry(retry_after, format!("too many requests (HTTP 429): {text}")),
        401..=404 => SendOutcome::Halt {
            code: format!("mailgun:{status}"),
            text: match status {
                404 => format!("the domain is not found (HTTP 404): {text}"),
                402 => format!("the account cannot send (HTTP 402): {text}"),
                _ => format!("credentials refused (HTTP {status}): {text}"),
            },
        },
        500..=599 => SendOutcome::Unknown {
            reason: format!("server error (HTTP {status}), the message may have been sent: {text}"),
        },
        _ => SendOutcome::Rejected {
            code: format!("mailgun:{status}"),
            text,
        },
    }
}

impl Provider for Mailgun {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let secrets = [self.config.api_key.expose()];
            let form = match self.form(message) {
                Ok(form) => form,
                Err(outcome) => return wire::scrub(outcome, &secrets),
            };
            let url = format!(
                "{}/v3/{}/messages",
                self.config.base(),
                self.config.domain.trim()
            );
            let request = self
                .http
                .post(url)
                .basic_auth("api", Some(self.config.api_key.expose()))
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(self.timeout)
                .multipart(form);
            wire::exchange(request, false, &secrets, |a| {
                classify(a.status, a.retry_after, &a.body, &message.id)
            })
            .await
        })
    }

    /// `crier providers check`: `GET /v3/domains/<domain>` must answer with the domain in
    /// state `active`. Mailgun has no balance to show.
    fn balance(&self) -> BoxFuture<'_, Result<Option<Balance>, String>> {
        Box::pin(async move {
            let domain = self.config.domain.trim();
            let url = format!("{}/v3/domains/{domain}", self.config.base());
            let request = self
                .http
                .get(url)
                .basic_auth("api", Some(self.config.api_key.expose()))
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(self.timeout);
            let result = async {
                let response = request.send().await.map_err(wire::request_failed)?;
                let answer = wire::read(response).await.map_err(wire::request_failed)?;
                if answer.status == 404 {
                    return Err(format!("Mailgun knows no domain `{domain}` (HTTP 404)"));
                }
                if !(200..300).contains(&answer.status) {
                    return Err(wire::balance_refused(&answer));
                }
                let reply: serde_json::Value = serde_json::from_str(&answer.body)
                    .map_err(|_| format!("unreadable domain: {}", snippet(&answer.body)))?;
                match reply["domain"]["state"].as_str() {
                    Some("active") => Ok(None),
                    Some(state) => Err(format!("the domain `{domain}` is {state}, not active")),
                    None => Err(format!("no domain state in: {}", snippet(&answer.body))),
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

    fn message(text: &str) -> String {
        serde_json::json!({ "message": text }).to_string()
    }

    /// Mailgun's documented answers (API reference, "API Response Codes").
    #[test]
    fn classifies_every_documented_answer() {
        let queued =
            r#"{"id":"<20260101100000.1.ABCDEF@mg.acme.example>","message":"Queued. Thank you."}"#;
        let after = Some(Duration::from_secs(4));
        let table: Vec<(u16, Option<Duration>, String, &str)> = vec![
            (
                200,
                None,
                queued.into(),
                "sent 20260101100000.1.ABCDEF@mg.acme.example",
            ),
            (200, None, "{}".into(), "sent RUN-000001"),
            (
                400,
                None,
                message("to parameter is not a valid address. please check documentation"),
                "rejected mailgun:400",
            ),
            (
                400,
                None,
                message("'from' parameter is missing"),
                "rejected mailgun:400",
            ),
            (401, None, "Forbidden".into(), "halt mailgun:401"),
            (402, None, message("Request failed"), "halt mailgun:402"),
            (
                403,
                None,
                message(
                    "Domain mg.acme.example is not allowed to send: Free accounts are for test purposes only.",
                ),
                "halt mailgun:403",
            ),
            (
                404,
                None,
                message("Domain not found: mg.acme.example"),
                "halt mailgun:404",
            ),
            (
                413,
                None,
                message("Request Entity Too Large"),
                "rejected mailgun:413",
            ),
            (429, None, message("Too many requests"), "retry"),
            (429, after, "".into(), "retry after 4"),
            (500, None, message("Internal Server Error"), "unknown"),
            (503, after, "".into(), "unknown"),
        ];
        for (status, after, body, want) in &table {
            assert_eq!(
                kind(&classify(*status, *after, body, "RUN-000001")),
                *want,
                "HTTP {status} {body}"
            );
        }
    }

    #[test]
    fn rejections_carry_mailguns_message() {
        assert_eq!(
            classify(400, None, &message("'to' parameter is missing"), "x"),
            SendOutcome::Rejected {
                code: "mailgun:400".into(),
                text: "'to' parameter is missing".into()
            }
        );
    }

    #[test]
    fn the_region_picks_the_host_unless_base_url_says() {
        let mut c: MailgunConfig = serde_yaml::from_str(
            "api_key: k\ndomain: mg.acme.example\nfrom: billing@mg.acme.example\n",
        )
        .unwrap();
        assert_eq!(c.base(), "https://api.mailgun.net");
        c.region = Region::Eu;
        assert_eq!(c.base(), "https://api.eu.mailgun.net");
        c.base_url = Some("http://127.0.0.1:9/".into());
        assert_eq!(c.base(), "http://127.0.0.1:9");
        assert_eq!(bare_id("<a@b>"), "a@b");
        assert_eq!(bare_id("a@b"), "a@b");
    }
}
