//! Clickatell One API (`POST /v1/message`, raw API key in `Authorization`).
//! Reference: <https://docs.clickatell.com/channels/one-api/>.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Limits, check_url};
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

/// The Clickatell client. (Skeleton: the request and its classification land next.)
pub struct Clickatell {
    #[allow(dead_code)]
    config: ClickatellConfig,
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl Clickatell {
    pub fn new(config: &ClickatellConfig, http: reqwest::Client) -> Clickatell {
        Clickatell {
            config: config.clone(),
            http,
        }
    }
}

impl super::Provider for Clickatell {
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
