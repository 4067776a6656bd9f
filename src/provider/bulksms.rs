//! BulkSMS JSON REST API v1 (`POST /v1/messages`, HTTP Basic with an API token).
//! Reference: <https://www.bulksms.com/developer/json/v1/>.
//!
//! BulkSMS is the one provider here with real idempotency: every submission carries
//! `?deduplication-id=`, and a resubmission with the same id inside about 12 hours is
//! answered as before without sending again. So a lost answer (timeout, dropped
//! connection, 5xx) is retried with the same id instead of being left unknown. Each
//! message also carries a `userSuppliedId` (the tail of crier's message id) to reconcile by.

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
pub struct BulkSmsConfig {
    /// API token id, e.g. `BBDE1B476E03498AA768F66A286AABDC-01-B`: half of the
    /// credential, so a secret too (`${BULKSMS_TOKEN_ID}`).
    pub token_id: Secret,
    /// API token secret.
    pub token_secret: Secret,
    /// Sender id: up to 11 letters, or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// API base (default `https://api.bulksms.com/v1`); tests point it at loopback.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub limits: Limits,
}

fn default_base_url() -> String {
    "https://api.bulksms.com/v1".into()
}

impl BulkSmsConfig {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        check_url(&self.base_url, &format!("{field}.base_url"), report);
        if self.token_id.expose().trim().is_empty() && self.token_id.unset_var().is_none() {
            report.error(&format!("{field}.token_id"), "must not be empty");
        }
        if self.token_secret.is_empty() {
            report.error(&format!("{field}.token_secret"), "must not be empty");
        }
        self.limits.check(field, report);
    }
}

/// The BulkSMS client.
pub struct BulkSms {
    config: BulkSmsConfig,
    http: reqwest::Client,
    timeout: Duration,
}

impl BulkSms {
    pub fn new(config: &BulkSmsConfig, http: reqwest::Client) -> BulkSms {
        BulkSms {
            timeout: super::timeout(&config.limits),
            config: config.clone(),
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url.trim_end_matches('/'))
    }
}

/// Longest `userSuppliedId` BulkSMS keeps.
const USER_SUPPLIED_ID_MAX: usize = 20;

/// The `userSuppliedId` of crier message `id`: the id itself when it fits in 20
/// characters, else its last 20 (crier ids end in the run's random ULID tail and the
/// message's sequence number, so the tail stays unique and can be derived again to
/// reconcile with `GET /messages?filter=userSuppliedId%3D…`).
pub(crate) fn user_supplied_id(id: &str) -> &str {
    match id.char_indices().rev().nth(USER_SUPPLIED_ID_MAX - 1) {
        Some((start, _)) => &id[start..],
        None => id,
    }
}

/// The `deduplication-id` of a message: its `dedup_id` folded to a non-negative int32,
/// or none for 0 (unset: one shared id would make BulkSMS drop every later message as a
/// repeat of the first).
pub(crate) fn deduplication_id(dedup_id: u32) -> Option<i32> {
    (dedup_id != 0).then_some((dedup_id & 0x7fff_ffff) as i32)
}

/// The JSON body of one submission.
fn submission(message: &RoutedMessage, from: Option<&str>) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "to": message.to,
        "body": message.body,
        "encoding": if message.encoding == Some(Encoding::Ucs2) { "UNICODE" } else { "TEXT" },
        "longMessageMaxParts": message.parts.max(3),
        "userSuppliedId": user_supplied_id(&message.id),
    });
    if let Some(from) = from {
        entry["from"] = from.into();
    }
    entry
}

/// Classifies BulkSMS's answer to `POST /messages` (spec §7.1). Lost and failed answers
/// are retried: the caller resubmits with the same `deduplication-id`.
pub(crate) fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> SendOutcome {
    #[derive(serde::Deserialize)]
    struct Problem {
        #[serde(default, rename = "type")]
        kind: String,
        #[serde(default)]
        title: String,
        #[serde(default)]
        detail: Option<String>,
    }
    let problem = || -> (String, String) {
        match serde_json::from_str::<Problem>(body) {
            Ok(p) if !p.title.is_empty() => {
                let text = match p.detail {
                    Some(d) if !d.is_empty() => format!("{}: {d}", p.title),
                    _ => p.title.clone(),
                };
                (p.kind, text)
            }
            _ => (String::new(), snippet(body)),
        }
    };
    match status {
        200..=299 => accepted(body),
        401 => SendOutcome::Halt {
            code: "bulksms:401".into(),
            text: format!("credentials refused: {}", problem().1),
        },
        403 => {
            let (kind, text) = problem();
            if kind.ends_with("#insufficient-credits") || text.starts_with("Insufficient Credits") {
                SendOutcome::Halt {
                    code: "bulksms:403".into(),
                    text,
                }
            } else {
                SendOutcome::Rejected {
                    code: "bulksms:403".into(),
                    text,
                }
            }
        }
        429 => wire::retry(
            retry_after,
            format!("rate limited (HTTP 429): {}", problem().1),
        ),
        500..=599 => wire::retry(
            retry_after,
            format!("server error (HTTP {status}): {}", problem().1),
        ),
        _ => SendOutcome::Rejected {
            code: format!("bulksms:{status}"),
            text: problem().1,
        },
    }
}

/// A 2xx: the array of created messages. One recipient per submission, so the first
/// entry is this message; its `status.type` can still say FAILED (e.g. a blocked number).
fn accepted(body: &str) -> SendOutcome {
    #[derive(serde::Deserialize)]
    struct Status {
        #[serde(default)]
        id: Option<String>,
        #[serde(default, rename = "type")]
        kind: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Created {
        id: String,
        #[serde(default)]
        status: Option<Status>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Created1 {
        Many(Vec<Created>),
        One(Created),
    }
    let first = match serde_json::from_str::<Created1>(body) {
        Ok(Created1::Many(list)) => list.into_iter().next(),
        Ok(Created1::One(one)) => Some(one),
        Err(_) => None,
    };
    let Some(created) = first else {
        // Committed or not, a resubmission with the same deduplication-id is safe.
        return SendOutcome::Retry {
            reason: format!("accepted without a message id: {}", snippet(body)),
        };
    };
    match created.status {
        Some(Status {
            kind: Some(kind),
            id,
        }) if kind == "FAILED" => SendOutcome::Rejected {
            code: format!("bulksms:{}", id.unwrap_or(kind)),
            text: format!("message {} failed on submission", created.id),
        },
        _ => SendOutcome::Sent {
            provider_id: created.id,
        },
    }
}

impl Provider for BulkSms {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let dedup = deduplication_id(message.dedup_id);
            let mut request = self
                .http
                .post(self.url("/messages"))
                .basic_auth(
                    self.config.token_id.expose(),
                    Some(self.config.token_secret.expose()),
                )
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(self.timeout)
                .json(&submission(message, self.config.from.as_deref()));
            if let Some(id) = dedup {
                request = request.query(&[("deduplication-id", id)]);
            }
            let idempotent = dedup.is_some();
            let answer = match request.send().await {
                Ok(response) => wire::read(response).await,
                Err(e) => Err(e),
            };
            match answer {
                Err(e) => super::transport_outcome(&e, idempotent),
                Ok(a) => {
                    let outcome = wire::scrub(
                        classify(a.status, a.retry_after, &a.body),
                        &[self.config.token_secret.expose()],
                    );
                    // Every retryable answer but a 429 may follow a commit (a 5xx, an
                    // acceptance without a message id): resubmitted with the same
                    // deduplication-id, and `unknown` without one.
                    match outcome {
                        SendOutcome::Retry { reason } | SendOutcome::RetryAfter { reason, .. }
                            if !idempotent && a.status != 429 =>
                        {
                            SendOutcome::Unknown { reason }
                        }
                        SendOutcome::Retry { reason } if a.status != 429 => SendOutcome::Resubmit {
                            after: None,
                            reason,
                        },
                        SendOutcome::RetryAfter { after, reason } if a.status != 429 => {
                            SendOutcome::Resubmit {
                                after: Some(after),
                                reason,
                            }
                        }
                        other => other,
                    }
                }
            }
        })
    }

    /// `GET /profile`: the credentials check, and `credits.balance`.
    fn balance(&self) -> BoxFuture<'_, Result<Option<Balance>, String>> {
        let request = self
            .http
            .get(self.url("/profile"))
            .basic_auth(
                self.config.token_id.expose(),
                Some(self.config.token_secret.expose()),
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout);
        Box::pin(wire::json_balance(
            request,
            &["credits", "balance"],
            None,
            "credits",
            self.config.token_secret.expose(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    const CREATED: &str = r#"[{"id":"4403661398","type":"SENT","from":"crier","to":"+447700900123",
        "body":"Hi","encoding":"TEXT","protocolId":"IMPLICIT","messageClass":"SIM_SPECIFIC",
        "submission":{"id":"1-00000000001234567","date":"2026-11-27T08:00:00Z"},
        "status":{"id":"ACCEPTED.null","type":"ACCEPTED","subtype":null},"userSuppliedId":"AB-1"}]"#;
    const BLOCKED: &str = r#"[{"id":"77","type":"SENT","to":"+447700900123","body":"Hi",
        "status":{"id":"FAILED.BLOCKED","type":"FAILED","subtype":"BLOCKED"}}]"#;
    const CREDITS: &str = r#"{"type":"https://developer.bulksms.com/json/v1/errors#insufficient-credits",
        "title":"Insufficient Credits","status":403}"#;
    const FORBIDDEN: &str = r#"{"type":"https://developer.bulksms.com/json/v1/errors#forbidden",
        "title":"Forbidden","status":403,"detail":"Not allowed"}"#;
    const BAD: &str = r#"{"type":"https://developer.bulksms.com/json/v1/errors#validation",
        "title":"Bad Request","status":400,"detail":"to is required"}"#;
    const AUTH: &str = r#"{"type":"https://developer.bulksms.com/json/v1/errors#authentication-failed",
        "title":"Authentication Failed","status":401}"#;

    use crate::provider::outcome_kind as kind;

    #[test]
    fn classifies_every_row_of_the_retry_table() {
        let table: &[(u16, Option<Duration>, &str, &str)] = &[
            (201, None, CREATED, "sent 4403661398"),
            (
                201,
                None,
                r#"{"id":"9","status":{"type":"ACCEPTED"}}"#,
                "sent 9",
            ),
            (201, None, BLOCKED, "rejected bulksms:FAILED.BLOCKED"),
            (201, None, "[]", "retry"),
            (201, None, "<html>", "retry"),
            (400, None, BAD, "rejected bulksms:400"),
            (401, None, AUTH, "halt bulksms:401"),
            (401, None, "", "halt bulksms:401"),
            (403, None, CREDITS, "halt bulksms:403"),
            (403, None, FORBIDDEN, "rejected bulksms:403"),
            (404, None, "", "rejected bulksms:404"),
            (429, None, "", "retry"),
            (429, secs(7), "", "retry after 7"),
            (500, None, "", "retry"),
            (502, None, "<html>bad gateway</html>", "retry"),
            (503, secs(30), "", "retry after 30"),
        ];
        for (status, after, body, want) in table {
            let got = classify(*status, *after, body);
            assert_eq!(kind(&got), *want, "HTTP {status} {body}");
        }
    }

    #[test]
    fn error_texts_quote_title_and_detail() {
        assert_eq!(
            classify(400, None, BAD),
            SendOutcome::Rejected {
                code: "bulksms:400".into(),
                text: "Bad Request: to is required".into()
            }
        );
    }

    #[test]
    fn user_supplied_id_is_the_tail_within_20_characters() {
        assert_eq!(user_supplied_id("short-1"), "short-1");
        let id = "01JDQ7ZK5X3V9M2C8B4N6P1R0T-42";
        assert_eq!(user_supplied_id(id), "X3V9M2C8B4N6P1R0T-42");
        assert_eq!(user_supplied_id(id).chars().count(), 20);
        assert!(id.ends_with(user_supplied_id(id)));
    }

    #[test]
    fn deduplication_ids_are_non_negative_and_zero_means_none() {
        assert_eq!(deduplication_id(0), None);
        assert_eq!(deduplication_id(42), Some(42));
        assert_eq!(deduplication_id(u32::MAX), Some(i32::MAX));
    }
}
