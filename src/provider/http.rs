//! The generic HTTP gateway: what Splynx users configure for "any other SMS provider".
//!
//! A URL, a method, a payload with `{to}`, `{message}` and `{from}` placeholders, custom
//! headers (often the credential), a success rule, and where the gateway's message id is.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Limits, check_url};
use crate::config::Secret;
use crate::config::secret::REDACTED;
use crate::diag::FileReport;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    #[default]
    Post,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    #[default]
    Json,
    Form,
}

/// When a response counts as accepted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Success {
    /// Accepted HTTP statuses (default: any 2xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<u16>,
    /// Text the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Gateway URL. Query parameters may hold placeholders with GET. Printed with its
    /// user info and query values redacted, since gateways often take keys there.
    #[serde(serialize_with = "redacted_url")]
    pub url: String,
    #[serde(default)]
    pub method: Method,
    #[serde(default)]
    pub content_type: ContentType,
    /// Body (POST) or query (GET) fields; values may use `{to}`, `{message}`, `{from}`.
    /// Printed redacted: gateways often take the password here.
    #[serde(default)]
    pub payload: BTreeMap<String, Secret>,
    /// Extra request headers, e.g. `Authorization: Bearer ${GATEWAY_TOKEN}`.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Sender id filled into `{from}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<Success>,
    /// Dotted path of the message id in a JSON response, e.g. `data.id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default)]
    pub limits: Limits,
}

/// `https://u:p@host/send?key=abc&to={to}` → `https://<redacted>@host/send?key=<redacted>&to=<redacted>`.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = base.to_string();
    if let Some((scheme, rest)) = base.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            out = format!("{scheme}://{REDACTED}@{}", &rest[at + 1..]);
        }
    }
    if let Some(q) = query {
        let fields: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}={REDACTED}"),
                None => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&fields.join("&"));
    }
    out
}

fn redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

impl HttpConfig {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        check_url(&self.url, &format!("{field}.url"), report);
        if let Some(success) = &self.success {
            for (i, s) in success.status.iter().enumerate() {
                if !(100..=599).contains(s) {
                    report.error(
                        &format!("{field}.success.status[{i}]"),
                        format!("`{s}` is not an HTTP status"),
                    );
                }
            }
        }
        self.limits.check(field, report);
    }
}

/// The generic HTTP gateway client. (Skeleton: the request and its classification land next.)
pub struct HttpGateway {
    #[allow(dead_code)]
    config: HttpConfig,
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl HttpGateway {
    pub fn new(config: &HttpConfig, http: reqwest::Client) -> Result<HttpGateway, String> {
        Ok(HttpGateway {
            config: config.clone(),
            http,
        })
    }
}

impl super::Provider for HttpGateway {
    fn send<'a>(
        &'a self,
        _message: &'a super::RoutedMessage,
    ) -> super::BoxFuture<'a, super::SendOutcome> {
        Box::pin(async {
            super::SendOutcome::Rejected {
                code: "unimplemented".into(),
                text: "not implemented yet".into(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_credentials() {
        assert_eq!(
            redact_url("https://me:pw@sms.example/send?key=abc&to={to}"),
            "https://<redacted>@sms.example/send?key=<redacted>&to=<redacted>"
        );
        assert_eq!(
            redact_url("https://sms.example/a@b"),
            "https://sms.example/a@b"
        );
    }
}
