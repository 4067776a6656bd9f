//! Providers: where a message leaves crier. One file per provider, one closed list of kinds.
//!
//! [`ProviderConfig`] is the `type:`-tagged list of every provider crier speaks, so the
//! set is visible in one place and `crier.yaml` reads `type: bulksms`. Each variant's
//! struct lives in its provider's file, next to (once dispatch lands) its `impl
//! Provider`. Credentials are [`Secret`](crate::config::Secret)s: they print as
//! `<redacted>` everywhere but in the request itself.

mod attachments;
pub mod bulksms;
pub mod clickatell;
pub mod dkim;
pub mod file;
pub mod http;
pub mod mailgun;
pub mod portal;
pub mod sendgrid;
pub mod ses;
mod sigv4;
pub mod smtp;
pub mod twilio;
pub mod vonage;
mod wire;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diag::FileReport;
use crate::job::{Channel, DocumentKind};
use crate::render::sms::Encoding;
use crate::throttle::Rate;

/// One configured provider, tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderConfig {
    /// Appends each message as a JSON line to an outbox file per channel. No credentials.
    File(file::FileConfig),
    /// A generic HTTP SMS gateway ("any other SMS provider").
    Http(http::HttpConfig),
    /// BulkSMS JSON REST API v1.
    Bulksms(bulksms::BulkSmsConfig),
    /// Clickatell One API.
    Clickatell(clickatell::ClickatellConfig),
    /// Twilio Programmable Messaging.
    Twilio(twilio::TwilioConfig),
    /// Vonage (Nexmo) SMS API.
    Vonage(vonage::VonageConfig),
    /// Email over SMTP.
    Smtp(smtp::SmtpConfig),
    /// Email through SendGrid's v3 Mail Send API.
    Sendgrid(sendgrid::SendgridConfig),
    /// Email through Mailgun's messages API (US or EU).
    Mailgun(mailgun::MailgunConfig),
    /// Email through Amazon SES (API v2 `SendEmail`, SigV4).
    Ses(ses::SesConfig),
    /// The customer-portal inbox, kept in crier's store.
    Portal(portal::PortalConfig),
}

impl ProviderConfig {
    /// Its credentials.
    pub fn secrets(&self) -> Vec<&crate::config::Secret> {
        match self {
            ProviderConfig::File(_) | ProviderConfig::Portal(_) => Vec::new(),
            ProviderConfig::Http(c) => c.payload.values().chain(c.headers.values()).collect(),
            ProviderConfig::Bulksms(c) => vec![&c.token_id, &c.token_secret],
            ProviderConfig::Clickatell(c) => vec![&c.api_key],
            ProviderConfig::Twilio(c) => vec![&c.account_sid, &c.auth_token],
            ProviderConfig::Vonage(c) => vec![&c.api_secret],
            ProviderConfig::Smtp(c) => c.password.iter().collect(),
            ProviderConfig::Sendgrid(c) => vec![&c.api_key],
            // (Not the webhook signing key: sending does not need it.)
            ProviderConfig::Mailgun(c) => vec![&c.api_key],
            ProviderConfig::Ses(c) => [&c.access_key_id, &c.secret_access_key]
                .into_iter()
                .chain(&c.session_token)
                .collect(),
        }
    }

    /// The first variable a credential needs that is not set.
    pub fn unset_secret(&self) -> Option<&str> {
        self.secrets().into_iter().find_map(|s| s.unset_var())
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            ProviderConfig::File(_) => "file",
            ProviderConfig::Http(_) => "http",
            ProviderConfig::Bulksms(_) => "bulksms",
            ProviderConfig::Clickatell(_) => "clickatell",
            ProviderConfig::Twilio(_) => "twilio",
            ProviderConfig::Vonage(_) => "vonage",
            ProviderConfig::Smtp(_) => "smtp",
            ProviderConfig::Sendgrid(_) => "sendgrid",
            ProviderConfig::Mailgun(_) => "mailgun",
            ProviderConfig::Ses(_) => "ses",
            ProviderConfig::Portal(_) => "portal",
        }
    }

    /// Can this provider carry messages of `channel`?
    pub fn carries(&self, channel: Channel) -> bool {
        match self {
            ProviderConfig::File(_) => true,
            ProviderConfig::Http(_)
            | ProviderConfig::Bulksms(_)
            | ProviderConfig::Clickatell(_)
            | ProviderConfig::Twilio(_)
            | ProviderConfig::Vonage(_) => channel == Channel::Sms,
            ProviderConfig::Smtp(_)
            | ProviderConfig::Sendgrid(_)
            | ProviderConfig::Mailgun(_)
            | ProviderConfig::Ses(_) => channel == Channel::Email,
            ProviderConfig::Portal(_) => channel == Channel::Portal,
        }
    }

    /// Checks what serde cannot: URL shapes, id patterns, ranges. `field` is this
    /// provider's path, e.g. `providers.bulksms`.
    pub fn check(&self, field: &str, report: &mut FileReport) {
        match self {
            ProviderConfig::File(_) | ProviderConfig::Portal(_) => {}
            ProviderConfig::Http(c) => c.check(field, report),
            ProviderConfig::Bulksms(c) => c.check(field, report),
            ProviderConfig::Clickatell(c) => c.check(field, report),
            ProviderConfig::Twilio(c) => c.check(field, report),
            ProviderConfig::Vonage(c) => c.check(field, report),
            ProviderConfig::Smtp(c) => c.check(field, report),
            ProviderConfig::Sendgrid(c) => c.check(field, report),
            ProviderConfig::Mailgun(c) => c.check(field, report),
            ProviderConfig::Ses(c) => c.check(field, report),
        }
    }
}

/// A message on its way out: everything a provider needs, nothing it may not see.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoutedMessage {
    /// crier's message id (run and sequence), the client reference providers echo back.
    pub id: String,
    pub channel: Channel,
    /// E.164 phone, email address, or portal login.
    pub to: String,
    pub subject: Option<String>,
    pub body: String,
    /// The HTML alternative of an email body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// GSM-7 or UCS-2, for SMS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// SMS parts the body costs.
    pub parts: u32,
    /// Whose message this is (portal inbox, documents to attach).
    pub recipient_id: u64,
    /// Financial documents to attach (email).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attach: Vec<DocumentKind>,
    /// One-click unsubscribe links: `List-Unsubscribe` and `List-Unsubscribe-Post`
    /// (email of a job that is not transactional).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<crate::recipients::unsubscribe::Links>,
    /// A number unique to this message among everything this store sent in the last
    /// 12 hours: BulkSMS's `deduplication-id`, so a retried submission cannot send twice.
    #[serde(skip)]
    pub dedup_id: u32,
}

/// What became of one send, classified by the provider in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted, with the provider's message id.
    Sent { provider_id: String },
    /// A transient failure that did not send the message: try again later.
    Retry { reason: String },
    /// Try again after this long (the provider said so).
    RetryAfter {
        after: std::time::Duration,
        reason: String,
    },
    /// Refused for good.
    Rejected { code: String, text: String },
    /// The request may have reached the provider but its answer was lost (a timeout or a
    /// dropped connection after sending). Not retried: resending could send it twice.
    Unknown { reason: String },
    /// The answer may follow a commit (a timeout or a reset after sending, a 5xx), but the
    /// provider deduplicates resubmissions (BulkSMS's `deduplication-id`): send it again,
    /// after `after` when the provider said how long. Until an attempt gets a definite
    /// answer the message may already be with the provider, so it can end `sent` or
    /// `unknown`, never `failed` or `expired`.
    Resubmit {
        after: Option<std::time::Duration>,
        reason: String,
    },
    /// The account cannot send at all (no credit, bad credentials): this message was
    /// not sent, and the run pauses instead of failing every other recipient the same way.
    Halt { code: String, text: String },
}

/// What a provider reports of its account.
#[derive(Debug, Clone, PartialEq)]
pub struct Balance {
    pub amount: f64,
    /// Currency code, or `credits`.
    pub unit: String,
}

/// A boxed future, so providers can sit behind `dyn Provider`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One configured provider, ready to send. One `impl` per file of this module.
pub trait Provider: Send + Sync {
    /// Sends one message and classifies the answer. Never panics, never returns a bare
    /// error: every failure is one of [`SendOutcome`]'s kinds.
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome>;

    /// Makes what `send` wrote durable (the file outbox); called before outcomes are
    /// recorded as sent.
    fn sync(&self) -> Result<(), String> {
        Ok(())
    }

    /// Checks the credentials and reads the balance where the API has one (`Ok(None)`
    /// when it has none).
    fn balance(&self) -> BoxFuture<'_, Result<Option<Balance>, String>> {
        Box::pin(async { Ok(None) })
    }
}

/// What providers share when they are built for a run.
pub struct BuildContext<'a> {
    /// One HTTP client for every network provider (connection reuse).
    pub http: reqwest::Client,
    /// `data_dir`, for the file outbox.
    pub data_dir: &'a Path,
    /// The customer-portal inbox.
    pub inbox: &'a dyn crate::history::store::HistoryStore,
}

/// Builds the client of provider `name`.
pub fn build<'a>(
    name: &str,
    config: &ProviderConfig,
    ctx: &BuildContext<'a>,
) -> Result<Box<dyn Provider + 'a>, String> {
    let _ = name;
    if let Some(var) = config.unset_secret() {
        // Never send with an empty credential; commands refuse earlier, naming the field.
        return Err(format!(
            "its credential `{var}` is not set in the environment"
        ));
    }
    Ok(match config {
        ProviderConfig::File(c) => Box::new(file::FileOutbox::new(
            &c.dir.clone().unwrap_or_else(|| ctx.data_dir.join("outbox")),
        )),
        ProviderConfig::Http(c) => Box::new(http::HttpGateway::new(c, ctx.http.clone())?),
        ProviderConfig::Bulksms(c) => Box::new(bulksms::BulkSms::new(c, ctx.http.clone())),
        ProviderConfig::Clickatell(c) => Box::new(clickatell::Clickatell::new(c, ctx.http.clone())),
        ProviderConfig::Twilio(c) => Box::new(twilio::Twilio::new(c, ctx.http.clone())),
        ProviderConfig::Vonage(c) => Box::new(vonage::Vonage::new(c, ctx.http.clone())),
        ProviderConfig::Smtp(c) => Box::new(smtp::Smtp::new(c)?),
        ProviderConfig::Sendgrid(c) => Box::new(sendgrid::Sendgrid::new(c, ctx.http.clone())?),
        ProviderConfig::Mailgun(c) => Box::new(mailgun::Mailgun::new(c, ctx.http.clone())?),
        ProviderConfig::Ses(c) => Box::new(ses::Ses::new(c, ctx.http.clone())?),
        ProviderConfig::Portal(_) => Box::new(portal::Inbox::new(ctx.inbox)),
    })
}

/// The HTTP client every network provider shares: rustls (ring), no proxy from the
/// environment surprises, bounded idle pool.
pub fn http_client() -> reqwest::Client {
    // Installing twice is harmless: the second call reports the first one is in place.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("crier/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(64)
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Classifies a request that got no HTTP answer. A connection that never opened sent
/// nothing, so it is retried; any later failure may have sent the message, so it is
/// resubmitted only when the provider deduplicates resubmissions (`idempotent`), and is
/// `unknown` otherwise.
pub(crate) fn transport_outcome(error: &reqwest::Error, idempotent: bool) -> SendOutcome {
    // Never print the URL (some gateways take credentials in it): the kind of failure
    // and its causes only.
    let mut reason = String::from(if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the response was cut off"
    } else {
        "the request failed"
    });
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_connect() {
        SendOutcome::Retry { reason }
    } else if idempotent {
        SendOutcome::Resubmit {
            after: None,
            reason,
        }
    } else {
        SendOutcome::Unknown { reason }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare among these APIs and read as absent).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The request timeout of `limits` (default 30 s).
pub(crate) fn timeout(limits: &Limits) -> Duration {
    limits
        .timeout
        .as_deref()
        .and_then(|t| humantime::parse_duration(t).ok())
        .unwrap_or(Duration::from_secs(30))
}

/// Throughput limits shared by every network provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most messages per unit of time, e.g. `30/s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Messages that may go at once above the steady rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Most requests in flight at once (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Time allowed for one request, connect to last byte, e.g. `10s` (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retries of a transient failure before the message fails (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// First wait before a retry, doubled each time with jitter, e.g. `1s` (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

impl Limits {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        for (name, value) in [("timeout", &self.timeout), ("backoff", &self.backoff)] {
            if let Some(t) = value
                && humantime::parse_duration(t).is_err()
            {
                report.error(
                    &format!("{field}.limits.{name}"),
                    format!("`{t}` is not a duration (e.g. `10s`, `1m`)"),
                );
            }
        }
        if self.concurrency == Some(0) {
            report.error(&format!("{field}.limits.concurrency"), "must be at least 1");
        }
    }
}

/// Reports a URL that is not `http://` or `https://`.
pub(crate) fn check_url(url: &str, field: &str, report: &mut FileReport) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        report.error(field, format!("`{url}` is not an http:// or https:// URL"));
    }
}

/// An outcome in one line, for the providers' classification tables.
#[cfg(test)]
pub(crate) fn outcome_kind(o: &SendOutcome) -> String {
    match o {
        SendOutcome::Sent { provider_id } => format!("sent {provider_id}"),
        SendOutcome::Retry { .. } => "retry".into(),
        SendOutcome::RetryAfter { after, .. } => format!("retry after {}", after.as_secs()),
        SendOutcome::Rejected { code, .. } => format!("rejected {code}"),
        SendOutcome::Unknown { .. } => "unknown".into(),
        SendOutcome::Resubmit { .. } => "resubmit".into(),
        SendOutcome::Halt { code, .. } => format!("halt {code}"),
    }
}
