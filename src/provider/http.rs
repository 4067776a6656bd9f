//! The generic HTTP gateway: what Splynx users configure for "any other SMS provider".
//!
//! A URL, a method, a payload with `{to}`, `{message}` and `{from}` placeholders, custom
//! headers (often the credential), a success rule, and where the gateway's message id is.
//!
//! Placeholders are filled per message: percent-encoded where they stand in the URL,
//! as plain values in payload fields (which the form, JSON or query encoder escapes).
//! Nothing is known about the gateway's idempotency, so a lost answer is unknown.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::wire::{self, snippet};
use super::{BoxFuture, Limits, Provider, RoutedMessage, SendOutcome, check_url};
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
    /// A regular expression the body must match, e.g. `"status"\s*:\s*"(ok|queued)"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_regex: Option<String>,
}

/// `Debug` is written out by hand: it prints the URL redacted, as `Serialize` does.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
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
    /// How this gateway's delivery reports read, when it posts them to
    /// `/webhooks/http/<provider name>/<server.webhook_token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_reports: Option<Box<DeliveryReports>>,
}

/// Where a report carries its fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// A JSON object, or an array of them (several reports in one request).
    #[default]
    Json,
    /// An `application/x-www-form-urlencoded` body.
    Form,
    /// The query string (GET or POST).
    Query,
}

/// The field mapping of the generic gateway's delivery reports.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryReports {
    /// `json` (default), `form` or `query`.
    #[serde(default)]
    pub format: ReportFormat,
    /// Field of the gateway's message id (the one its send answer gave); a dotted path in
    /// JSON, e.g. `data.id`.
    pub message_id: String,
    /// Field of the delivery status.
    pub status: String,
    /// Field of the gateway's error code, if it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Field of the event time (RFC 3339, `YYYY-MM-DD HH:MM:SS` in UTC, or Unix seconds
    /// or milliseconds); the time of arrival when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Status values meaning delivered to the handset, e.g. `[DELIVRD, delivered]`.
    pub delivered: Vec<String>,
    /// Status values meaning the network could not deliver it, e.g. `[UNDELIV, EXPIRED]`.
    #[serde(default)]
    pub undelivered: Vec<String>,
    /// Status values meaning the gateway refused it, e.g. `[REJECTD]`.
    #[serde(default)]
    pub failed: Vec<String>,
    /// Status values meaning the recipient opted out (the message fails and the number
    /// goes on the opt-out list). Any other status is progress and changes nothing.
    #[serde(default)]
    pub opted_out: Vec<String>,
}

impl DeliveryReports {
    fn check(&self, field: &str, report: &mut FileReport) {
        let field = format!("{field}.delivery_reports");
        for (name, value) in [("message_id", &self.message_id), ("status", &self.status)] {
            if value.trim().is_empty() {
                report.error(&format!("{field}.{name}"), "must name a field");
            }
        }
        if self.delivered.is_empty() {
            report.error(
                &format!("{field}.delivered"),
                "must list at least one status value (e.g. `[DELIVRD]`)",
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (list, values) in [
            ("delivered", &self.delivered),
            ("undelivered", &self.undelivered),
            ("failed", &self.failed),
            ("opted_out", &self.opted_out),
        ] {
            for v in values {
                if !seen.insert(v.as_str()) {
                    report.error(
                        &format!("{field}.{list}"),
                        format!("`{v}` is listed under two outcomes"),
                    );
                }
            }
        }
    }
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

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &redact_url(&self.url))
            .field("method", &self.method)
            .field("content_type", &self.content_type)
            .field("payload", &self.payload)
            .field("headers", &self.headers)
            .field("from", &self.from)
            .field("success", &self.success)
            .field("message_id", &self.message_id)
            .field("limits", &self.limits)
            .field("delivery_reports", &self.delivery_reports)
            .finish()
    }
}

fn redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

impl HttpConfig {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        check_url(&self.url, &format!("{field}.url"), report);
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                report.error(
                    &format!("{field}.headers"),
                    format!("`{name}` is not an HTTP header name"),
                );
            }
        }
        if let Some(success) = &self.success {
            if let Some(re) = &success.body_regex
                && let Err(e) = regex::Regex::new(re)
            {
                report.error(&format!("{field}.success.body_regex"), format!("{e}"));
            }
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
        if let Some(reports) = &self.delivery_reports {
            reports.check(field, report);
        }
    }
}

/// The generic HTTP gateway client.
pub struct HttpGateway {
    config: HttpConfig,
    http: reqwest::Client,
    timeout: Duration,
    headers: reqwest::header::HeaderMap,
    rule: Rule,
    /// What may be a credential, scrubbed from outcome texts in case the gateway echoes
    /// the request: header values (and their token after `Bearer `), fixed payload
    /// values, URL query values and user info.
    secrets: Vec<String>,
}

impl HttpGateway {
    /// Fails on a header that cannot be sent or a `success.body_regex` that does not
    /// compile (the message names the header, never its value).
    pub fn new(config: &HttpConfig, http: reqwest::Client) -> Result<HttpGateway, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: `{name}` is not an HTTP header name"))?;
            let mut value = reqwest::header::HeaderValue::from_str(value.expose())
                .map_err(|_| format!("headers.{name}: the value is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let success = config.success.as_ref();
        let body_regex = match success.and_then(|s| s.body_regex.as_deref()) {
            Some(re) => {
                Some(regex::Regex::new(re).map_err(|e| format!("success.body_regex: {e}"))?)
            }
            None => None,
        };
        Ok(HttpGateway {
            secrets: secrets_of(config),
            rule: Rule {
                status: success.map(|s| s.status.clone()).unwrap_or_default(),
                body_contains: success.and_then(|s| s.body_contains.clone()),
                body_regex,
                message_id: config.message_id.clone(),
            },
            timeout: super::timeout(&config.limits),
            headers,
            config: config.clone(),
            http,
        })
    }
}

fn secrets_of(config: &HttpConfig) -> Vec<String> {
    let mut secrets = Vec::new();
    for value in config.headers.values().map(|v| v.expose()) {
        secrets.push(value.to_string());
        if let Some((_, token)) = value.split_once(' ') {
            secrets.push(token.to_string());
        }
    }
    let fixed = config.payload.values().map(|v| v.expose());
    secrets.extend(fixed.filter(|v| !v.contains('{')).map(str::to_string));
    let (base, query) = config.url.split_once('?').unwrap_or((&config.url, ""));
    for value in query
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(_, v)| v))
    {
        if !value.contains('{') {
            secrets.push(value.to_string());
        }
    }
    if let Some((_, rest)) = base.split_once("://")
        && let Some((userinfo, _)) = rest.split('/').next().unwrap_or("").rsplit_once('@')
    {
        secrets.push(userinfo.to_string());
        if let Some((_, password)) = userinfo.split_once(':') {
            secrets.push(password.to_string());
        }
    }
    secrets
}

/// The values placeholders stand for.
struct Fill<'a> {
    to: &'a str,
    message: &'a str,
    from: &'a str,
}

/// `template` with `{to}`, `{message}` and `{from}` replaced (percent-encoded when
/// `encode`, for a URL); any other braces are left as they are.
fn fill(template: &str, values: &Fill<'_>, encode: bool) -> String {
    let mut out = String::with_capacity(template.len() + values.message.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        let value = [
            ("{to}", values.to),
            ("{message}", values.message),
            ("{from}", values.from),
        ]
        .into_iter()
        .find(|(name, _)| tail.starts_with(name));
        match value {
            Some((name, value)) => {
                if encode {
                    percent_encode(value, &mut out);
                } else {
                    out.push_str(value);
                }
                rest = &tail[name.len()..];
            }
            None => {
                out.push('{');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so `+`, `&`, `=`,
/// `#` and spaces in a value cannot change the URL's shape).
fn percent_encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// The configured success rule and where the message id is.
pub(crate) struct Rule {
    /// Accepted statuses; empty means any 2xx.
    pub status: Vec<u16>,
    pub body_contains: Option<String>,
    pub body_regex: Option<regex::Regex>,
    /// Dotted JSON path of the gateway's message id.
    pub message_id: Option<String>,
}

impl Rule {
    /// Classifies a gateway's answer: the success rule decides what is sent; of the
    /// rest, 429 and 503 are retried, 401/402/403 stop the run, other 5xx are unknown
    /// (the gateway may have sent it), and everything else is refused. `crier_id` is
    /// the provider id when the answer names none.
    pub(crate) fn classify(
        &self,
        status: u16,
        retry_after: Option<Duration>,
        body: &str,
        crier_id: &str,
    ) -> SendOutcome {
        let status_ok = if self.status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.status.contains(&status)
        };
        if status_ok {
            if let Some(want) = &self.body_contains
                && !body.contains(want.as_str())
            {
                return SendOutcome::Rejected {
                    code: format!("http:{status}"),
                    text: format!("the answer does not contain `{want}`: {}", snippet(body)),
                };
            }
            if let Some(re) = &self.body_regex
                && !re.is_match(body)
            {
                return SendOutcome::Rejected {
                    code: format!("http:{status}"),
                    text: format!("the answer does not match `{re}`: {}", snippet(body)),
                };
            }
            let provider_id = self
                .message_id
                .as_deref()
                .and_then(|path| json_path(body, path))
                .unwrap_or_else(|| crier_id.to_string());
            return SendOutcome::Sent { provider_id };
        }
        let text = format!("HTTP {status}: {}", snippet(body));
        match status {
            429 | 503 => wire::retry(retry_after, text),
            401..=403 => SendOutcome::Halt {
                code: format!("http:{status}"),
                text,
            },
            500..=599 => SendOutcome::Unknown { reason: text },
            _ => SendOutcome::Rejected {
                code: format!("http:{status}"),
                text,
            },
        }
    }
}

/// The string or number at dotted `path` (`data.id`, `messages.0.id`) in JSON `body`.
fn json_path(body: &str, path: &str) -> Option<String> {
    let root: serde_json::Value = serde_json::from_str(body).ok()?;
    json_value(&root, path)
}

/// The string or number at dotted `path` in `root`.
pub(crate) fn json_value(root: &serde_json::Value, path: &str) -> Option<String> {
    let mut node = root;
    for key in path.split('.') {
        node = match node {
            serde_json::Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            serde_json::Value::Object(map) => map.get(key)?,
            _ => return None,
        };
    }
    match node {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Provider for HttpGateway {
    fn send<'a>(&'a self, message: &'a RoutedMessage) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let values = Fill {
                to: &message.to,
                message: &message.body,
                from: self.config.from.as_deref().unwrap_or(""),
            };
            let fields: Vec<(&str, String)> = self
                .config
                .payload
                .iter()
                .map(|(k, v)| (k.as_str(), fill(v.expose(), &values, false)))
                .collect();
            let url = fill(&self.config.url, &values, true);
            let mut request = match self.config.method {
                Method::Get => self.http.get(url).query(&fields),
                Method::Post => {
                    let post = self.http.post(url);
                    match self.config.content_type {
                        ContentType::Json => {
                            let map: serde_json::Map<String, serde_json::Value> = fields
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.as_str().into()))
                                .collect();
                            post.json(&map)
                        }
                        ContentType::Form => post.form(&fields),
                    }
                }
            };
            request = request.headers(self.headers.clone()).timeout(self.timeout);
            let answer = match request.send().await {
                Ok(response) => wire::read(response).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(a) => wire::scrub(
                    self.rule
                        .classify(a.status, a.retry_after, &a.body, &message.id),
                    &self.secrets,
                ),
                Err(e) => super::transport_outcome(&e, false),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::provider::outcome_kind as kind;

    #[test]
    fn classifies_by_the_success_rule_then_the_status() {
        let any_2xx = Rule {
            status: vec![],
            body_contains: None,
            body_regex: None,
            message_id: Some("data.id".into()),
        };
        let strict = Rule {
            status: vec![200],
            body_contains: Some("\"ok\"".into()),
            body_regex: Some(regex::Regex::new(r#""id"\s*:\s*"gw-\d+""#).unwrap()),
            message_id: Some("messages.0.id".into()),
        };
        let after = Some(Duration::from_secs(4));
        let table: &[(&Rule, u16, Option<Duration>, &str, &str)] = &[
            (
                &any_2xx,
                200,
                None,
                r#"{"data":{"id":"gw-1"}}"#,
                "sent gw-1",
            ),
            (&any_2xx, 202, None, r#"{"data":{"id":17}}"#, "sent 17"),
            (&any_2xx, 201, None, "OK", "sent crier-7"),
            (&any_2xx, 200, None, r#"{"data":{}}"#, "sent crier-7"),
            (&any_2xx, 400, None, "bad number", "rejected http:400"),
            (&any_2xx, 401, None, "", "halt http:401"),
            (&any_2xx, 402, None, "", "halt http:402"),
            (&any_2xx, 403, None, "", "halt http:403"),
            (&any_2xx, 429, None, "", "retry"),
            (&any_2xx, 429, after, "", "retry after 4"),
            (&any_2xx, 503, None, "", "retry"),
            (&any_2xx, 500, None, "", "unknown"),
            (&any_2xx, 502, None, "", "unknown"),
            (
                &strict,
                200,
                None,
                r#"{"status":"ok","messages":[{"id":"gw-9"}]}"#,
                "sent gw-9",
            ),
            (
                &strict,
                200,
                None,
                r#"{"status":"error","messages":[{"id":"gw-9"}]}"#,
                "rejected http:200",
            ),
            (
                &strict,
                200,
                None,
                r#"{"status":"ok","messages":[{"id":"x"}]}"#,
                "rejected http:200",
            ),
            (
                &strict,
                201,
                None,
                r#"{"status":"ok","messages":[{"id":"gw-9"}]}"#,
                "rejected http:201",
            ),
        ];
        for (rule, status, after, body, want) in table {
            assert_eq!(
                kind(&rule.classify(*status, *after, body, "crier-7")),
                *want,
                "HTTP {status} {body}"
            );
        }
    }

    #[test]
    fn placeholders_are_percent_encoded_in_urls_only() {
        let values = Fill {
            to: "+4477 00",
            message: "a&b=c #1 ü",
            from: "ISP",
        };
        assert_eq!(
            fill(
                "https://gw/send?to={to}&text={message}&from={from}&x={y}",
                &values,
                true
            ),
            "https://gw/send?to=%2B4477%2000&text=a%26b%3Dc%20%231%20%C3%BC&from=ISP&x={y}"
        );
        assert_eq!(
            fill("{message} to {to}", &values, false),
            "a&b=c #1 ü to +4477 00"
        );
    }

    #[test]
    fn bad_headers_and_regexes_fail_without_printing_values() {
        let mut config: HttpConfig = serde_yaml::from_str(
            "url: https://gw.example/send\nheaders:\n  X-Key: \"s3cret\\n\"\n",
        )
        .unwrap();
        let err = HttpGateway::new(&config, crate::provider::http_client())
            .err()
            .unwrap();
        assert!(err.contains("x-key") && !err.contains("s3cret"), "{err}");
        config.headers.clear();
        config.success = Some(Success {
            status: vec![],
            body_contains: None,
            body_regex: Some("(".into()),
        });
        assert!(HttpGateway::new(&config, crate::provider::http_client()).is_err());
    }

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
