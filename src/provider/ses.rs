//! Amazon SES API v2 `SendEmail` (`POST /v2/email/outbound-emails`, JSON, SigV4-signed
//! for service `ses`).
//! Reference: <https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html>.
//!
//! A message without attachments goes as `Content.Simple` (subject, text, HTML); one with
//! attachments as `Content.Raw`, the MIME built with lettre like the SMTP provider's. crier's
//! message id rides as the email tag `crier_message_id`, which SES copies into every
//! event it publishes (`mail.tags`). A 200 answers `{"MessageId": "…"}`, the
//! `mail.messageId` of the events. Errors are named by `x-amzn-ErrorType` (or the body's
//! `__type`). SES has no idempotency key: a lost answer or a 500 is unknown, never resent.
//!
//! Events arrive through SNS at `/webhooks/ses/<token>` (`server/email_webhooks.rs`):
//! only from the topics in `sns_topic_arns`, each notification's RSA signature checked
//! against the certificate at its `SigningCertURL`.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::attachments;
use super::sendgrid::CRIER_ID_ARG;
use super::sigv4;
use super::wire::{self, snippet};
use super::{Balance, BoxFuture, Limits, Provider, RoutedMessage, SendOutcome, check_url};
use crate::config::Secret;
use crate::diag::FileReport;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SesConfig {
    /// IAM access key id (`${AWS_ACCESS_KEY_ID}`), allowed `ses:SendEmail`.
    pub access_key_id: Secret,
    /// Its secret access key (`${AWS_SECRET_ACCESS_KEY}`).
    pub secret_access_key: Secret,
    /// The session token of temporary credentials (`${AWS_SESSION_TOKEN}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Secret>,
    /// AWS region of the SES account, e.g. `eu-west-1`.
    pub region: String,
    /// The `From:` address, a verified identity: `Acme ISP <billing@acme.example>`.
    pub from: String,
    /// Configuration set whose event destination publishes to SNS (bounces, complaints,
    /// deliveries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_set: Option<String>,
    /// API base (default `https://email.<region>.amazonaws.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Folder of financial documents for `attach:` (`<id>/<kind>/*.pdf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents_dir: Option<PathBuf>,
    /// The SNS topics (ARNs) whose notifications `/webhooks/ses/<token>` accepts; any
    /// other topic is refused, signed or not (anyone can make an SNS topic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sns_topic_arns: Vec<String>,
    /// Where else SNS signing certificates (and subscription confirmations) may come
    /// from: URLs starting with this prefix. By default only
    /// `https://sns.<region>.amazonaws.com/…` is trusted; set this for a test server or
    /// a vetted mirror, never to a host you do not control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns_trusted_url_prefix: Option<String>,
    #[serde(default)]
    pub limits: Limits,
}

impl SesConfig {
    /// The API base: `base_url`, else the region's endpoint.
    pub fn base(&self) -> String {
        match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("https://email.{}.amazonaws.com", self.region.trim()),
        }
    }

    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        if let Some(url) = &self.base_url {
            check_url(url, &format!("{field}.base_url"), report);
        }
        if let Some(url) = &self.sns_trusted_url_prefix {
            check_url(url, &format!("{field}.sns_trusted_url_prefix"), report);
        }
        if self.access_key_id.is_empty() {
            report.error(&format!("{field}.access_key_id"), "must not be empty");
        }
        if self.secret_access_key.is_empty() {
            report.error(&format!("{field}.secret_access_key"), "must not be empty");
        }
        let region = self.region.trim();
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            report.error(
                &format!("{field}.region"),
                format!("`{}` is not an AWS region (e.g. `eu-west-1`)", self.region),
            );
        }
        for (i, arn) in self.sns_topic_arns.iter().enumerate() {
            if !arn.starts_with("arn:") || arn.split(':').count() != 6 {
                report.error(
                    &format!("{field}.sns_topic_arns[{i}]"),
                    format!("`{arn}` is not a topic ARN (e.g. `arn:aws:sns:eu-west-1:123456789012:ses-events`)"),
                );
            }
        }
        attachments::check_from(&self.from, field, report);
        self.limits.check(field, report);
    }
}

/// The SES client.
pub struct Ses {
    config: SesConfig,
    from: Mailbox,
    http: reqwest::Client,
    timeout: Duration,
}

/// An email tag value: ASCII letters, digits, `_` and `-` only (SES refuses others).
fn tag_value(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Ses {
    pub fn new(config: &SesConfig, http: reqwest::Client) -> Result<Ses, String> {
        Ok(Ses {
            from: attachments::sender(&config.from)?,
            timeout: super::timeout(&config.limits),
            config: config.clone(),
            http,
        })
    }

    /// The `SendEmail` body of `message`: the one place its JSON is composed.
    pub(crate) fn body(&self, message: &RoutedMessage) -> Result<serde_json::Value, SendOutcome> {
        let files = attachments::load("ses", self.config.documents_dir.as_deref(), message)?;
        let subject = message.subject.clone().unwrap_or_default();
        let content = if files.is_empty() {
            let mut body = json!({"Text": {"Data": message.body, "Charset": "UTF-8"}});
            if let Some(html) = &message.html {
                body["Html"] = json!({"Data": html, "Charset": "UTF-8"});
            }
            let mut simple =
                json!({"Subject": {"Data": subject, "Charset": "UTF-8"}, "Body": body});
            let headers: Vec<serde_json::Value> = message
                .unsubscribe
                .iter()
                .flat_map(|l| l.headers())
                .map(|(name, value)| json!({"Name": name, "Value": value}))
                .collect();
            if !headers.is_empty() {
                simple["Headers"] = json!(headers);
            }
            json!({ "Simple": simple })
        } else {
            let mime = self.mime(message, files)?;
            json!({"Raw": {"Data": base64::engine::general_purpose::STANDARD.encode(mime)}})
        };
        let mut body = json!({
            "FromEmailAddress": self.from.to_string(),
            "Destination": {"ToAddresses": [message.to]},
            "Content": content,
            "EmailTags": [{"Name": CRIER_ID_ARG, "Value": tag_value(&message.id)}],
        });
        if let Some(set) = &self.config.configuration_set {
            body["ConfigurationSetName"] = json!(set);
        }
        Ok(body)
    }

    /// The whole MIME message, for `Content.Raw`: text (and HTML) and the attachments.
    fn mime(
        &self,
        message: &RoutedMessage,
        files: Vec<attachments::File>,
    ) -> Result<Vec<u8>, SendOutcome> {
        let rejected = |text: String| SendOutcome::Rejected {
            code: "ses:message".into(),
            text,
        };
        let to: Mailbox = message
            .to
            .parse()
            .map_err(|e| rejected(format!("`{}` is not an email address: {e}", message.to)))?;
        let crlf = super::smtp::crlf_line_ends;
        let text = crlf(&message.body);
        let mut mixed = match &message.html {
            Some(html) => {
                MultiPart::mixed().multipart(MultiPart::alternative_plain_html(text, crlf(html)))
            }
            None => MultiPart::mixed().singlepart(SinglePart::plain(text)),
        };
        for part in attachments::mime_parts("ses", files)? {
            mixed = mixed.singlepart(part);
        }
        let builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone().unwrap_or_default());
        let email = message
            .unsubscribe
            .iter()
            .flat_map(|links| links.headers())
            .fold(builder, |b, (name, value)| {
                b.raw_header(lettre::message::header::HeaderValue::new(
                    lettre::message::header::HeaderName::new_from_ascii_str(name),
                    value,
                ))
            })
            .multipart(mixed)
            .map_err(|e| rejected(format!("the email could not be built: {e}")))?;
        Ok(email.formatted())
    }
}

/// The error name of an SES answer: `x-amzn-ErrorType` up to its `:`, else the body's
/// `__type` after its `#`, else its `code`.
pub(crate) fn error_type(header: Option<&str>, body: &str) -> Option<String> {
    if let Some(h) = header.map(|h| h.split(':').next().unwrap_or_default().trim())
        && !h.is_empty()
    {
        return Some(h.to_string());
    }
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("__type")
        .or(v.get("code"))
        .and_then(|t| t.as_str())
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
}

/// Classifies SES's answer to `SendEmail`. `kind` is the error type ([`error_type`]).
///
/// | answer | outcome |
/// |---|---|
/// | 200 `{"MessageId"}` | sent |
/// | `TooManyRequestsException`, `ThrottlingException`, `Throttling`, 429 | retry (after `Retry-After`); but "daily message quota exceeded" halts |
/// | `AccountSuspendedException`, `SendingPausedException`, `NotFoundException` (configuration set), credential errors (`UnrecognizedClientException`, `InvalidSignatureException`, `SignatureDoesNotMatch`, `AccessDeniedException`, `ExpiredTokenException`, `InvalidClientTokenId`, any 401/403) | halt |
/// | `MessageRejected`, `MailFromDomainNotVerifiedException`, `BadRequestException`, `LimitExceededException`, other 4xx | rejected |
/// | 503, `ServiceUnavailable` | retry |
/// | other 5xx (`InternalFailure`) | unknown |
pub(crate) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    kind: Option<&str>,
    body: &str,
    crier_id: &str,
) -> SendOutcome {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default, rename = "MessageId")]
        message_id: Option<String>,
        #[serde(default, alias = "Message")]
        message: Option<String>,
    }
    let reply = serde_json::from_str::<Reply>(body).ok();
    let (id, message) = match reply {
        Some(r) => (r.message_id, r.message),
        None => (None, None),
    };
    let kind = kind.unwrap_or("");
    let detail = message
        .map(|m| snippet(&m))
        .unwrap_or_else(|| snippet(body));
    let text = if kind.is_empty() {
        format!("HTTP {status}: {detail}")
    } else {
        format!("{kind} (HTTP {status}): {detail}")
    };
    let code = || {
        if kind.is_empty() {
            format!("ses:{status}")
        } else {
            format!("ses:{kind}")
        }
    };
    if (200..300).contains(&status) {
        return SendOutcome::Sent {
            provider_id: id
                .filter(|i| !i.trim().is_empty())
                .unwrap_or_else(|| crier_id.to_string()),
        };
    }
    match kind {
        "TooManyRequestsException" | "ThrottlingException" | "Throttling"
            if detail.to_ascii_lowercase().contains("daily message quota") =>
        {
            SendOutcome::Halt { code: code(), text }
        }
        "TooManyRequestsException" | "ThrottlingException" | "Throttling" => {
            wire::retry(retry_after, text)
        }
        "AccountSuspendedException"
        | "SendingPausedException"
        | "NotFoundException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "AccessDeniedException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "MissingAuthenticationToken" => SendOutcome::Halt { code: code(), text },
        "ServiceUnavailable" | "ServiceUnavailableException" => wire::retry(retry_after, text),
        _ => match status {
            429 | 503 => wire::retry(retry_after, text),
            401 | 403 => SendOutcome::Halt { code: code(), text },
            500..=599 => SendOutcome::Unknown {
                reason: format!("{text}; the message may have been sent"),
            },
            _ => SendOutcome::Rejected { code: code(), text },
        },
    }
}

impl Ses {
    /// The credentials' secrets, to scrub from every text that leaves.
    fn secrets(&self) -> Vec<&str> {
        [
            Some(self.config.access_key_id.expose()),
            Some(self.config.secret_access_key.expose()),
            self.config.session_token.as_ref().map(|t| t.expose()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// `method {base}{path}` with `body`, SigV4-signed for `ses` at this moment.
    fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::RequestBuilder, String> {
        let url = format!("{}{path}", self.config.base());
        let parsed = reqwest::Url::parse(&url).map_err(|_| format!("`{url}` is not a URL"))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(format!("`{url}` has no host")),
        };
        let json = !body.is_empty();
        let content_type: &[(&str, &str)] = if json {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        let signed = sigv4::sign(
            &sigv4::Credentials {
                access_key_id: self.config.access_key_id.expose(),
                secret_access_key: self.config.secret_access_key.expose(),
                session_token: self.config.session_token.as_ref().map(|t| t.expose()),
            },
            self.config.region.trim(),
            "ses",
            &sigv4::amz_date(chrono::Utc::now()),
            &sigv4::Request {
                method: method.as_str(),
                host: &host,
                path: parsed.path(),
                query: &[],
                headers: content_type,
                body: &body,
            },
        )?;
        let mut request = self
            .http
            .request(method, parsed)
            .header(reqwest::header::AUTHORIZATION, &signed.authorization)
            .header("x-amz-date", &signed.amz_date)
            .timeout(self.timeout);
        if json {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        if let Some(token) = &signed.session_token {
            request = request.header("x-amz-security-token", token);
        }
        Ok(request)
    }
}

impl Provider for Ses {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let secrets = self.secrets();
            let body = match self.body(message) {
                Ok(body) => serde_json::to_vec(&body).unwrap_or_default(),
                Err(outcome) => return wire::scrub(outcome, &secrets),
            };
            let request =
                match self.signed(reqwest::Method::POST, "/v2/email/outbound-emails", body) {
                    Ok(request) => request,
                    Err(text) => {
                        return SendOutcome::Halt {
                            code: "ses:config".into(),
                            text,
                        };
                    }
                };
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => return super::transport_outcome(&e, false),
            };
            let header = response
                .headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match wire::read(response).await {
                Ok(a) => {
                    let kind = error_type(header.as_deref(), &a.body);
                    wire::scrub(
                        classify(
                            a.status,
                            a.retry_after,
                            kind.as_deref(),
                            &a.body,
                            &message.id,
                        ),
                        &secrets,
                    )
                }
                Err(e) => super::transport_outcome(&e, false),
            }
        })
    }

    /// `crier providers check`: `GetAccount` (`GET /v2/email/account`) must show sending
    /// enabled; the balance is what is left of the 24-hour quota.
    fn balance(&self) -> BoxFuture<'_, Result<Option<Balance>, String>> {
        Box::pin(async move {
            let result = async {
                let request = self.signed(reqwest::Method::GET, "/v2/email/account", Vec::new())?;
                let response = request.send().await.map_err(wire::request_failed)?;
                let answer = wire::read(response).await.map_err(wire::request_failed)?;
                if !(200..300).contains(&answer.status) {
                    return Err(wire::balance_refused(&answer));
                }
                let reply: serde_json::Value = serde_json::from_str(&answer.body)
                    .map_err(|_| format!("unreadable account: {}", snippet(&answer.body)))?;
                if reply["SendingEnabled"] == serde_json::Value::Bool(false) {
                    return Err("sending is paused for this SES account".into());
                }
                let quota = &reply["SendQuota"];
                let max = wire::number(&quota["Max24HourSend"])
                    .ok_or_else(|| format!("no SendQuota in: {}", snippet(&answer.body)))?;
                let sent = wire::number(&quota["SentLast24Hours"]).unwrap_or(0.0);
                Ok(Some(Balance {
                    amount: (max - sent).max(0.0),
                    unit: "emails/24h".into(),
                }))
            }
            .await;
            result.map_err(|e| wire::scrub_text(e, &self.secrets()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::provider::outcome_kind as kind;

    fn error(message: &str) -> String {
        json!({ "message": message }).to_string()
    }

    /// `SendEmail`'s documented errors (SESv2 API reference) and the AWS common errors.
    #[test]
    fn classifies_every_documented_answer() {
        let after = Some(Duration::from_secs(2));
        let table: Vec<(u16, Option<&str>, String, &str)> = vec![
            (
                200,
                None,
                r#"{"MessageId":"0100018f-aaaa-bbbb-cccc-000000000000-000000"}"#.into(),
                "sent 0100018f-aaaa-bbbb-cccc-000000000000-000000",
            ),
            (200, None, "{}".into(), "sent RUN-000001"),
            (
                429,
                Some("TooManyRequestsException"),
                error("Too many requests"),
                "retry after 2",
            ),
            (
                400,
                Some("ThrottlingException"),
                error("Maximum sending rate exceeded."),
                "retry after 2",
            ),
            (
                400,
                Some("Throttling"),
                error("Daily message quota exceeded."),
                "halt ses:Throttling",
            ),
            (
                400,
                Some("MessageRejected"),
                error("Email address is not verified."),
                "rejected ses:MessageRejected",
            ),
            (
                400,
                Some("MailFromDomainNotVerifiedException"),
                error("not verified"),
                "rejected ses:MailFromDomainNotVerifiedException",
            ),
            (
                400,
                Some("BadRequestException"),
                error("Missing final '@domain'"),
                "rejected ses:BadRequestException",
            ),
            (
                400,
                Some("LimitExceededException"),
                error("limit"),
                "rejected ses:LimitExceededException",
            ),
            (
                400,
                Some("AccountSuspendedException"),
                error("suspended"),
                "halt ses:AccountSuspendedException",
            ),
            (
                400,
                Some("SendingPausedException"),
                error("paused"),
                "halt ses:SendingPausedException",
            ),
            (
                404,
                Some("NotFoundException"),
                error("Configuration set <x> does not exist."),
                "halt ses:NotFoundException",
            ),
            (
                403,
                Some("UnrecognizedClientException"),
                error("The security token included in the request is invalid."),
                "halt ses:UnrecognizedClientException",
            ),
            (
                403,
                Some("InvalidSignatureException"),
                error("The request signature we calculated does not match"),
                "halt ses:InvalidSignatureException",
            ),
            (403, None, "".into(), "halt ses:403"),
            (500, Some("InternalFailure"), "".into(), "unknown"),
            (503, Some("ServiceUnavailable"), "".into(), "retry after 2"),
            (502, None, "".into(), "unknown"),
        ];
        for (status, k, body, want) in &table {
            assert_eq!(
                kind(&classify(*status, after, *k, body, "RUN-000001")),
                *want,
                "HTTP {status} {k:?} {body}"
            );
        }
    }

    #[test]
    fn reads_the_error_type_from_the_header_or_the_body() {
        assert_eq!(
            error_type(
                Some("MessageRejected:http://internal.amazon.com/coral/com.amazonaws.sesv2/"),
                ""
            )
            .as_deref(),
            Some("MessageRejected")
        );
        assert_eq!(
            error_type(
                None,
                r#"{"__type":"com.amazonaws.sesv2#SendingPausedException","message":"x"}"#
            )
            .as_deref(),
            Some("SendingPausedException")
        );
        assert_eq!(error_type(None, "oops"), None);
        assert_eq!(tag_value("01J-000001"), "01J-000001");
        assert_eq!(tag_value("a.b c"), "a_b_c");
    }
}
