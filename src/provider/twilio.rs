//! Twilio Programmable Messaging (form-encoded `POST .../Accounts/{Sid}/Messages.json`).
//! Reference: <https://www.twilio.com/docs/messaging/api/message-resource>.
//!
//! A 201 with the message `sid` means accepted (delivery comes later, by callback). A
//! 429 (error 20429) is guaranteed not processed and is retried; a 5xx or a lost answer
//! may have sent the message, and Twilio has no idempotency key, so it is unknown.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::wire::{self, snippet};
use super::{Balance, BoxFuture, Limits, Provider, RoutedMessage, SendOutcome, check_url};
use crate::config::Secret;
use crate::diag::FileReport;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// Account SID: `AC` and 32 hex digits; the user name of the credential, so kept
    /// like a secret (`${TWILIO_ACCOUNT_SID}`).
    pub account_sid: Secret,
    /// Auth token (also signs delivery-report callbacks).
    pub auth_token: Secret,
    /// Sending number in E.164, or an alphanumeric sender id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Messaging Service SID (`MG…`), instead of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<String>,
    /// API base (default `https://api.twilio.com`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub limits: Limits,
}

fn default_base_url() -> String {
    "https://api.twilio.com".into()
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl TwilioConfig {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        check_url(&self.base_url, &format!("{field}.base_url"), report);
        if self.account_sid.unset_var().is_none() && !is_sid(self.account_sid.expose(), "AC") {
            report.error(
                &format!("{field}.account_sid"),
                "is not an account SID (expected `AC` and 32 hex digits)",
            );
        }
        if let Some(mg) = &self.messaging_service_sid
            && !is_sid(mg, "MG")
        {
            report.error(
                &format!("{field}.messaging_service_sid"),
                format!("`{mg}` is not a Messaging Service SID (expected `MG` and 32 hex digits)"),
            );
        }
        if self.from.is_none() && self.messaging_service_sid.is_none() {
            report.error(field, "needs `from` or `messaging_service_sid`");
        }
        self.limits.check(field, report);
    }
}

/// The Twilio client.
pub struct Twilio {
    config: TwilioConfig,
    http: reqwest::Client,
    timeout: Duration,
}

impl Twilio {
    pub fn new(config: &TwilioConfig, http: reqwest::Client) -> Twilio {
        Twilio {
            timeout: super::timeout(&config.limits),
            config: config.clone(),
            http,
        }
    }

    /// `{base}/2010-04-01/Accounts/{sid}/{resource}`, Basic-authenticated.
    fn request(&self, method: reqwest::Method, resource: &str) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}",
            self.config.base_url.trim_end_matches('/'),
            self.config.account_sid.expose()
        );
        self.http
            .request(method, url)
            .basic_auth(
                self.config.account_sid.expose(),
                Some(self.config.auth_token.expose()),
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout)
    }
}

/// Classifies Twilio's answer to creating a Message (spec §3.4, §7.1).
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> SendOutcome {
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(default)]
        sid: Option<String>,
        #[serde(default)]
        code: Option<u32>,
        #[serde(default)]
        message: Option<String>,
    }
    let reply = serde_json::from_str::<Reply>(body).ok();
    let (sid, code, text) = match reply {
        Some(r) => (r.sid, r.code, r.message.unwrap_or_else(|| snippet(body))),
        None => (None, None, snippet(body)),
    };
    let code_or_status = code.unwrap_or(status as u32);
    match status {
        200..=299 => match sid {
            Some(sid) if !sid.is_empty() => SendOutcome::Sent { provider_id: sid },
            _ => SendOutcome::Unknown {
                reason: format!("HTTP {status} without a message sid: {text}"),
            },
        },
        // Over the concurrency limit: guaranteed not processed.
        429 => wire::retry(retry_after, format!("too many requests (HTTP 429): {text}")),
        _ if code == Some(20429) => wire::retry(
            retry_after,
            format!("too many requests (HTTP {status}): {text}"),
        ),
        401 => SendOutcome::Halt {
            code: format!("twilio:{code_or_status}"),
            text: format!("credentials refused: {text}"),
        },
        _ if code == Some(20003) => SendOutcome::Halt {
            code: "twilio:20003".into(),
            text: format!("credentials refused: {text}"),
        },
        500..=599 => SendOutcome::Unknown {
            reason: format!("server error (HTTP {status}), the message may have been sent: {text}"),
        },
        _ => SendOutcome::Rejected {
            code: format!("twilio:{code_or_status}"),
            text,
        },
    }
}

impl Provider for Twilio {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let mut form: Vec<(&str, &str)> = vec![("To", &message.to)];
            if let Some(mg) = &self.config.messaging_service_sid {
                form.push(("MessagingServiceSid", mg));
            }
            if let Some(from) = &self.config.from {
                form.push(("From", from));
            }
            form.push(("Body", &message.body));
            let request = self
                .request(reqwest::Method::POST, "Messages.json")
                .form(&form);
            wire::exchange(request, false, &[self.config.auth_token.expose()], |a| {
                classify(a.status, a.retry_after, &a.body)
            })
            .await
        })
    }

    /// `GET /2010-04-01/Accounts/{sid}/Balance.json`: `{"balance":"0.05","currency":"USD"}`.
    fn balance(&self) -> BoxFuture<'_, Result<Option<Balance>, String>> {
        Box::pin(wire::json_balance(
            self.request(reqwest::Method::GET, "Balance.json"),
            &["balance"],
            Some("currency"),
            "USD",
            self.config.auth_token.expose(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::provider::outcome_kind as kind;

    fn error(code: u32, status: u16) -> String {
        format!(
            r#"{{"code":{code},"message":"Error {code}","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#
        )
    }

    #[test]
    fn classifies_every_row_of_the_retry_table() {
        let created = r#"{"sid":"SM1f0e8ae6ade43cb3c0ce4525424e404f","status":"queued","num_segments":"1","error_code":null}"#;
        let after = Some(Duration::from_secs(3));
        let table: Vec<(u16, Option<Duration>, String, &str)> = vec![
            (
                201,
                None,
                created.into(),
                "sent SM1f0e8ae6ade43cb3c0ce4525424e404f",
            ),
            (201, None, "{}".into(), "unknown"),
            (429, None, error(20429, 429), "retry"),
            (429, after, error(20429, 429), "retry after 3"),
            (429, None, "".into(), "retry"),
            (400, None, error(21211, 400), "rejected twilio:21211"),
            (400, None, error(21212, 400), "rejected twilio:21212"),
            (400, None, error(21603, 400), "rejected twilio:21603"),
            (400, None, error(21609, 400), "rejected twilio:21609"),
            (400, None, error(21610, 400), "rejected twilio:21610"),
            (401, None, error(20003, 401), "halt twilio:20003"),
            (401, None, "".into(), "halt twilio:401"),
            (403, None, error(20003, 403), "halt twilio:20003"),
            (403, None, error(20008, 403), "rejected twilio:20008"),
            (404, None, error(20404, 404), "rejected twilio:20404"),
            (500, None, "".into(), "unknown"),
            (503, after, error(20500, 503), "unknown"),
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
    fn rejections_carry_twilios_message() {
        assert_eq!(
            classify(
                400,
                None,
                r#"{"code":21211,"message":"Invalid 'To' Phone Number","status":400}"#
            ),
            SendOutcome::Rejected {
                code: "twilio:21211".into(),
                text: "Invalid 'To' Phone Number".into()
            }
        );
    }
}
