//! Clickatell One API (`POST /v1/message`, raw API key in `Authorization`).
//! Reference: <https://docs.clickatell.com/channels/one-api/>.
//!
//! One message per request, `to` in digits without the `+`. The answer is 202 when the
//! message was accepted; failures carry a numbered error (at the message or the top
//! level) whose HTTP status does not always say what it means: rate limiting is code 43
//! with HTTP 400. There is no deduplication, so a lost answer is an unknown outcome.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::wire::{self, snippet};
use super::{Balance, BoxFuture, Limits, Provider, RoutedMessage, SendOutcome, check_url};
use crate::config::Secret;
use crate::diag::FileReport;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClickatellConfig {
    /// The integration's API key.
    pub api_key: Secret,
    /// Sender number, where the integration allows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// API base (default `https://platform.clickatell.com`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub limits: Limits,
}

fn default_base_url() -> String {
    "https://platform.clickatell.com".into()
}

impl ClickatellConfig {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        check_url(&self.base_url, &format!("{field}.base_url"), report);
        if self.api_key.is_empty() {
            report.error(&format!("{field}.api_key"), "must not be empty");
        }
        self.limits.check(field, report);
    }
}

/// The Clickatell client.
pub struct Clickatell {
    config: ClickatellConfig,
    http: reqwest::Client,
    timeout: Duration,
}

impl Clickatell {
    pub fn new(config: &ClickatellConfig, http: reqwest::Client) -> Clickatell {
        Clickatell {
            timeout: super::timeout(&config.limits),
            config: config.clone(),
            http,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.config.base_url.trim_end_matches('/'));
        self.http
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, self.config.api_key.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout)
    }
}

/// The One API's numbered error, at message or top level.
#[derive(serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    code: serde_json::Value,
    #[serde(default)]
    description: String,
}

#[derive(serde::Deserialize)]
struct MessageResult {
    #[serde(default, rename = "apiMessageId")]
    api_message_id: Option<String>,
    #[serde(default)]
    accepted: bool,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(serde::Deserialize)]
struct Reply {
    #[serde(default)]
    messages: Vec<MessageResult>,
    #[serde(default)]
    error: Option<ApiError>,
}

/// Classifies the One API's answer to `POST /v1/message` with one message (spec §2.4,
/// §7.1): the error code decides where there is one, the HTTP status otherwise.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> SendOutcome {
    let reply = serde_json::from_str::<Reply>(body).ok();
    let (first, global) = match reply {
        Some(r) => (r.messages.into_iter().next(), r.error),
        None => (None, None),
    };
    if (200..300).contains(&status)
        && let Some(MessageResult {
            api_message_id: Some(id),
            accepted: true,
            ..
        }) = &first
        && !id.is_empty()
    {
        return SendOutcome::Sent {
            provider_id: id.clone(),
        };
    }
    let error = first.and_then(|m| m.error).or(global);
    if let Some(error) = error
        && let Some(code) = wire::number(&error.code)
    {
        return by_code(code as u32, status, retry_after, &error.description);
    }
    match status {
        // Accepted, but no message id to show for it: it may well be on its way.
        200..=299 => SendOutcome::Unknown {
            reason: format!("HTTP {status} without a message id: {}", snippet(body)),
        },
        401 | 402 => SendOutcome::Halt {
            code: format!("clickatell:http-{status}"),
            text: snippet(body),
        },
        429 | 500..=599 => wire::retry(retry_after, format!("HTTP {status}: {}", snippet(body))),
        _ => SendOutcome::Rejected {
            code: format!("clickatell:http-{status}"),
            text: snippet(body),
        },
    }
}

/// The One API errors table: 43 (rate limit, sent as HTTP 400) and 18/19 (internal) are
/// transient; 1/7 (key, source IP), 2/3 (account, integration not active) and 20
/// (balance) stop the run; every other code refuses this message.
fn by_code(
    code: u32,
    status: u16,
    retry_after: Option<Duration>,
    description: &str,
) -> SendOutcome {
    let text = format!("{description} (code {code}, HTTP {status})");
    match code {
        43 => wire::retry(retry_after, format!("rate limited: {text}")),
        18 | 19 => wire::retry(retry_after, text),
        1 | 2 | 3 | 7 | 20 => SendOutcome::Halt {
            code: format!("clickatell:{code}"),
            text,
        },
        _ => SendOutcome::Rejected {
            code: format!("clickatell:{code}"),
            text,
        },
    }
}

impl Provider for Clickatell {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let mut entry = serde_json::json!({
                "channel": "sms",
                "to": message.to.trim_start_matches('+'),
                "content": message.body,
            });
            if let Some(from) = &self.config.from {
                entry["from"] = from.trim_start_matches('+').into();
            }
            let body = serde_json::json!({ "messages": [entry] });
            let request = self
                .request(reqwest::Method::POST, "/v1/message")
                .json(&body);
            wire::exchange(request, false, &[self.config.api_key.expose()], |a| {
                classify(a.status, a.retry_after, &a.body)
            })
            .await
        })
    }

    /// `GET /v1/balance`: `{"currency":"ZAR","balance":123.45}` (balance read as a number
    /// or a string).
    fn balance(&self) -> BoxFuture<'_, Result<Option<Balance>, String>> {
        Box::pin(wire::json_balance(
            self.request(reqwest::Method::GET, "/v1/balance"),
            &["balance"],
            Some("currency"),
            "credits",
            self.config.api_key.expose(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::provider::outcome_kind as kind;

    fn msg_error(code: u32, text: &str) -> String {
        format!(
            r#"{{"messages":[{{"accepted":false,"to":"2799900001","error":{{"code":{code},"description":"{text}"}}}}],"error":null}}"#
        )
    }

    fn global(code: u32, text: &str) -> String {
        format!(r#"{{"error":{{"code":{code},"description":"{text}"}}}}"#)
    }

    #[test]
    fn classifies_every_row_of_the_retry_table() {
        let ok = r#"{"messages":[{"apiMessageId":"77fb29a5e5a34c1e8bc8b0cd3dbf1e8b","accepted":true,"to":"2799900001","error":null}],"error":null}"#;
        let some = Some(Duration::from_secs(5));
        let table: Vec<(u16, Option<Duration>, String, &str)> = vec![
            (
                202,
                None,
                ok.into(),
                "sent 77fb29a5e5a34c1e8bc8b0cd3dbf1e8b",
            ),
            (
                207,
                None,
                ok.into(),
                "sent 77fb29a5e5a34c1e8bc8b0cd3dbf1e8b",
            ),
            (
                207,
                None,
                msg_error(25, "Invalid recipient"),
                "rejected clickatell:25",
            ),
            (202, None, "{}".into(), "unknown"),
            (
                401,
                None,
                global(1, "Invalid or missing integration API Key"),
                "halt clickatell:1",
            ),
            (
                401,
                None,
                global(7, "Source IP not approved"),
                "halt clickatell:7",
            ),
            (
                400,
                None,
                global(2, "Account not active"),
                "halt clickatell:2",
            ),
            (
                400,
                None,
                global(3, "Integration not active"),
                "halt clickatell:3",
            ),
            (
                402,
                None,
                msg_error(20, "Insufficient balance"),
                "halt clickatell:20",
            ),
            (500, None, global(18, "Internal error"), "retry"),
            (
                503,
                None,
                global(19, "Internal error, please retry"),
                "retry",
            ),
            (
                503,
                some,
                msg_error(19, "Internal error, please retry"),
                "retry after 5",
            ),
            (400, None, global(43, "Rate limit"), "retry"),
            (400, None, msg_error(43, "Rate limit"), "retry"),
            (400, some, global(43, "Rate limit"), "retry after 5"),
            (
                400,
                None,
                global(21, "Payload malformed"),
                "rejected clickatell:21",
            ),
            (
                400,
                None,
                global(22, "Too many messages"),
                "rejected clickatell:22",
            ),
            (
                400,
                None,
                msg_error(23, "Invalid or missing parameter: to ."),
                "rejected clickatell:23",
            ),
            (
                400,
                None,
                msg_error(24, "Content too large"),
                "rejected clickatell:24",
            ),
            (
                400,
                None,
                msg_error(26, "Opted out"),
                "rejected clickatell:26",
            ),
            (
                400,
                None,
                msg_error(28, "Sandbox"),
                "rejected clickatell:28",
            ),
            (
                400,
                None,
                msg_error(30, "Content type"),
                "rejected clickatell:30",
            ),
            (
                400,
                None,
                msg_error(46, "Demo expired"),
                "rejected clickatell:46",
            ),
            (
                400,
                None,
                msg_error(100, "Too many parts"),
                "rejected clickatell:100",
            ),
            (
                400,
                None,
                msg_error(111, "STOP rules"),
                "rejected clickatell:111",
            ),
            (429, None, "".into(), "retry"),
            (429, some, "".into(), "retry after 5"),
            (502, None, "<html>".into(), "retry"),
            (401, None, "".into(), "halt clickatell:http-401"),
            (404, None, "".into(), "rejected clickatell:http-404"),
        ];
        for (status, after, body, want) in &table {
            assert_eq!(
                kind(&classify(*status, *after, body)),
                *want,
                "HTTP {status} {body}"
            );
        }
    }

    #[test]
    fn rejections_carry_code_and_description() {
        assert_eq!(
            classify(400, None, &msg_error(25, "Invalid recipient address")),
            SendOutcome::Rejected {
                code: "clickatell:25".into(),
                text: "Invalid recipient address (code 25, HTTP 400)".into()
            }
        );
    }
}
