//! Providers: where a message leaves crier. One file per provider, one closed list of kinds.
//!
//! [`ProviderConfig`] is the `type:`-tagged list of every provider crier speaks, so the
//! set is visible in one place and `crier.yaml` reads `type: bulksms`. Each variant's
//! struct lives in its provider's file, next to (once dispatch lands) its `impl
//! Provider`. Credentials are [`Secret`](crate::config::Secret)s: they print as
//! `<redacted>` everywhere but in the request itself.

pub mod bulksms;
pub mod clickatell;
pub mod file;
pub mod http;
pub mod portal;
pub mod smtp;
pub mod twilio;
pub mod vonage;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diag::FileReport;
use crate::job::Channel;
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
    /// The customer-portal inbox, kept in crier's store.
    Portal(portal::PortalConfig),
}

impl ProviderConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            ProviderConfig::File(_) => "file",
            ProviderConfig::Http(_) => "http",
            ProviderConfig::Bulksms(_) => "bulksms",
            ProviderConfig::Clickatell(_) => "clickatell",
            ProviderConfig::Twilio(_) => "twilio",
            ProviderConfig::Vonage(_) => "vonage",
            ProviderConfig::Smtp(_) => "smtp",
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
            ProviderConfig::Smtp(_) => channel == Channel::Email,
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
}

/// What became of one send, classified by the provider in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted, with the provider's message id.
    Sent { provider_id: String },
    /// A transient failure: try again later.
    Retry { reason: String },
    /// Try again after this long (the provider said so).
    RetryAfter {
        after: std::time::Duration,
        reason: String,
    },
    /// Refused for good.
    Rejected { code: String, text: String },
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
}

impl Limits {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        if let Some(t) = &self.timeout
            && humantime::parse_duration(t).is_err()
        {
            report.error(
                &format!("{field}.limits.timeout"),
                format!("`{t}` is not a duration (e.g. `10s`, `1m`)"),
            );
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
