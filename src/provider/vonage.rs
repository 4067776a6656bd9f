//! Vonage (Nexmo) SMS API (form-encoded `POST /sms/json`; always HTTP 200, status inside).
//! Reference: <https://developer.vonage.com/en/api/sms>.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Limits, check_url};
use crate::config::Secret;
use crate::diag::FileReport;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    /// API key.
    pub api_key: String,
    /// API secret.
    pub api_secret: Secret,
    /// Sender: a number or up to 11 letters.
    pub from: String,
    /// API base (default `https://rest.nexmo.com`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub limits: Limits,
}

fn default_base_url() -> String {
    "https://rest.nexmo.com".into()
}

impl VonageConfig {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        check_url(&self.base_url, &format!("{field}.base_url"), report);
        self.limits.check(field, report);
    }
}

/// The Vonage client. (Skeleton: the request and its classification land next.)
pub struct Vonage {
    #[allow(dead_code)]
    config: VonageConfig,
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl Vonage {
    pub fn new(config: &VonageConfig, http: reqwest::Client) -> Vonage {
        Vonage {
            config: config.clone(),
            http,
        }
    }
}

impl super::Provider for Vonage {
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
