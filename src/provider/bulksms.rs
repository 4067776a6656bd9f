//! BulkSMS JSON REST API v1 (`POST /v1/messages`, HTTP Basic with an API token).
//! Reference: <https://www.bulksms.com/developer/json/v1/>.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Limits, check_url};
use crate::config::Secret;
use crate::diag::FileReport;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSmsConfig {
    /// API token id, e.g. `BBDE1B476E03498AA768F66A286AABDC-01-B`.
    pub token_id: String,
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
        if self.token_id.trim().is_empty() {
            report.error(&format!("{field}.token_id"), "must not be empty");
        }
        if self.token_secret.is_empty() {
            report.error(&format!("{field}.token_secret"), "must not be empty");
        }
        self.limits.check(field, report);
    }
}

/// The BulkSMS client. (Skeleton: the request and its classification land next.)
pub struct BulkSms {
    #[allow(dead_code)]
    config: BulkSmsConfig,
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl BulkSms {
    pub fn new(config: &BulkSmsConfig, http: reqwest::Client) -> BulkSms {
        BulkSms {
            config: config.clone(),
            http,
        }
    }
}

impl super::Provider for BulkSms {
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
