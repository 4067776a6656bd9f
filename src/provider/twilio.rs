//! Twilio Programmable Messaging (form-encoded `POST .../Accounts/{Sid}/Messages.json`).
//! Reference: <https://www.twilio.com/docs/messaging/api/message-resource>.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Limits, check_url};
use crate::config::Secret;
use crate::diag::FileReport;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// Account SID: `AC` and 32 hex digits.
    pub account_sid: String,
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
        if !is_sid(&self.account_sid, "AC") {
            report.error(
                &format!("{field}.account_sid"),
                format!(
                    "`{}` is not an account SID (expected `AC` and 32 hex digits)",
                    self.account_sid
                ),
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

/// The Twilio client. (Skeleton: the request and its classification land next.)
pub struct Twilio {
    #[allow(dead_code)]
    config: TwilioConfig,
    #[allow(dead_code)]
    http: reqwest::Client,
}

impl Twilio {
    pub fn new(config: &TwilioConfig, http: reqwest::Client) -> Twilio {
        Twilio {
            config: config.clone(),
            http,
        }
    }
}

impl super::Provider for Twilio {
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
