//! Vonage (Nexmo) SMS API (form-encoded `POST /sms/json`; always HTTP 200, status inside).
//! Reference: <https://developer.vonage.com/en/api/sms>.
//!
//! Credentials go in the form body (`api_key`, `api_secret`), `to` in digits without the
//! `+`, `client-ref` carries crier's message id. HTTP 200 does not mean sent: the outcome
//! is `messages[0].status`, a string code ("0" sent, "1"/"5"/"10" transient, "4"/"9"
//! account problems that stop the run). There is no deduplication.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::wire::{self, snippet};
use super::{Balance, BoxFuture, Limits, Provider, RoutedMessage, SendOutcome, check_url};
use crate::config::Secret;
use crate::diag::FileReport;
use crate::render::sms::Encoding;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    /// API key.
    pub api_key: String,
    /// API secret.
    pub api_secret: Secret,
    /// Sender: a number or up to 11 letters.
    pub from: String,
    /// API base (default `https://rest.nexmo.com`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub limits: Limits,
}

fn default_base_url() -> String {
    "https://rest.nexmo.com".into()
}

impl VonageConfig {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        check_url(&self.base_url, &format!("{field}.base_url"), report);
        self.limits.check(field, report);
    }
}

/// The Vonage client.
pub struct Vonage {
    config: VonageConfig,
    http: reqwest::Client,
    timeout: Duration,
}

impl Vonage {
    pub fn new(config: &VonageConfig, http: reqwest::Client) -> Vonage {
        Vonage {
            timeout: super::timeout(&config.limits),
            config: config.clone(),
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }
}

/// Longest `client-ref` Vonage keeps.
const CLIENT_REF_MAX: usize = 40;

/// `client-ref`: crier's message id, or its last 40 characters.
fn client_ref(id: &str) -> &str {
    match id.char_indices().rev().nth(CLIENT_REF_MAX - 1) {
        Some((start, _)) => &id[start..],
        None => id,
    }
}

/// Classifies Vonage's answer to `POST /sms/json` (spec §4.3, §7.1). The first entry of
/// `messages` decides: a long text comes back as one entry per part, and the message's
/// id is the first part's.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> SendOutcome {
    #[derive(serde::Deserialize)]
    struct Part {
        #[serde(default)]
        status: Option<String>,
        #[serde(default, rename = "message-id")]
        message_id: Option<String>,
        #[serde(default, rename = "error-text")]
        error_text: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(default)]
        messages: Vec<Part>,
    }
    match status {
        200..=299 => {}
        429 | 500..=599 => {
            return wire::retry(retry_after, format!("HTTP {status}: {}", snippet(body)));
        }
        401 => {
            return SendOutcome::Halt {
                code: "vonage:http-401".into(),
                text: format!("credentials refused: {}", snippet(body)),
            };
        }
        _ => {
            return SendOutcome::Rejected {
                code: format!("vonage:http-{status}"),
                text: snippet(body),
            };
        }
    }
    let first = serde_json::from_str::<Reply>(body)
        .ok()
        .and_then(|r| r.messages.into_iter().next());
    let Some(part) = first else {
        return SendOutcome::Unknown {
            reason: format!("HTTP {status} without a message status: {}", snippet(body)),
        };
    };
    let code = part.status.unwrap_or_default();
    let text = part.error_text.unwrap_or_default();
    match code.as_str() {
        "0" => match part.message_id {
            Some(id) if !id.is_empty() => SendOutcome::Sent { provider_id: id },
            _ => SendOutcome::Unknown {
                reason: "status 0 without a message-id".into(),
            },
        },
        // Throttled, internal error, too many binds.
        "1" | "5" | "10" => wire::retry(retry_after, format!("{text} (status {code})")),
        // Bad credentials, partner account barred, no credit, account not enabled for HTTP.
        "4" | "8" | "9" | "11" => SendOutcome::Halt {
            code: format!("vonage:{code}"),
            text,
        },
        _ => SendOutcome::Rejected {
            code: format!("vonage:{code}"),
            text,
        },
    }
}

impl Provider for Vonage {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let mut form: Vec<(&str, &str)> = vec![
                ("api_key", &self.config.api_key),
                ("api_secret", self.config.api_secret.expose()),
                ("from", self.config.from.trim_start_matches('+')),
                ("to", message.to.trim_start_matches('+')),
                ("text", &message.body),
                ("client-ref", client_ref(&message.id)),
            ];
            if message.encoding == Some(Encoding::Ucs2) {
                form.push(("type", "unicode"));
            }
            let request = self
                .http
                .post(self.url("/sms/json"))
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(self.timeout)
                .form(&form);
            wire::exchange(request, false, &[self.config.api_secret.expose()], |a| {
                classify(a.status, a.retry_after, &a.body)
            })
            .await
        })
    }

    /// `GET /account/get-balance`: `{"value":10.28,"autoReload":false}`, in euros.
    fn balance(&self) -> BoxFuture<'_, Result<Option<Balance>, String>> {
        let request = self
            .http
            .get(self.url("/account/get-balance"))
            .query(&[
                ("api_key", self.config.api_key.as_str()),
                ("api_secret", self.config.api_secret.expose()),
            ])
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout);
        Box::pin(wire::json_balance(
            request,
            &["value"],
            None,
            "EUR",
            self.config.api_secret.expose(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::provider::outcome_kind as kind;

    fn status(code: &str) -> String {
        format!(
            r#"{{"message-count":"1","messages":[{{"status":"{code}","error-text":"Error {code}"}}]}}"#
        )
    }

    #[test]
    fn classifies_every_row_of_the_retry_table() {
        let sent = r#"{"message-count":"2","messages":[
            {"to":"447700900000","message-id":"0A0000000123ABCD1","status":"0","remaining-balance":"3.14","message-price":"0.03","network":"12345","client-ref":"x"},
            {"to":"447700900000","message-id":"0A0000000123ABCD2","status":"0"}]}"#;
        let after = Some(Duration::from_secs(2));
        let mut table: Vec<(u16, Option<Duration>, String, String)> = vec![
            (200, None, sent.into(), "sent 0A0000000123ABCD1".into()),
            (200, None, "{}".into(), "unknown".into()),
            (200, None, "<html>".into(), "unknown".into()),
            (200, after, status("1"), "retry after 2".into()),
            (500, None, "".into(), "retry".into()),
            (503, after, "".into(), "retry after 2".into()),
            (429, None, "".into(), "retry".into()),
            (401, None, "".into(), "halt vonage:http-401".into()),
            (404, None, "".into(), "rejected vonage:http-404".into()),
        ];
        for code in ["1", "5", "10"] {
            table.push((200, None, status(code), "retry".into()));
        }
        for code in ["4", "8", "9", "11"] {
            table.push((200, None, status(code), format!("halt vonage:{code}")));
        }
        for code in [
            "2", "3", "6", "7", "12", "14", "15", "22", "23", "29", "32", "33",
        ] {
            table.push((200, None, status(code), format!("rejected vonage:{code}")));
        }
        for (http, after, body, want) in &table {
            assert_eq!(
                kind(&classify(*http, *after, body)),
                *want,
                "HTTP {http} {body}"
            );
        }
    }

    #[test]
    fn rejections_carry_the_error_text() {
        assert_eq!(
            classify(200, None, &status("3")),
            SendOutcome::Rejected {
                code: "vonage:3".into(),
                text: "Error 3".into()
            }
        );
    }

    #[test]
    fn client_ref_keeps_the_last_40_characters() {
        let id = "x".repeat(10) + "y".repeat(40).as_str();
        assert_eq!(client_ref(&id), "y".repeat(40));
        assert_eq!(client_ref("short"), "short");
    }
}
