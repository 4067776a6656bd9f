//! Email over SMTP (lettre): STARTTLS, implicit TLS or plain, with optional auth.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Limits;
use crate::config::Secret;
use crate::diag::FileReport;

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: loopback relays only.
    Plain,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Server port (default: 587 for starttls, 465 for tls, 25 for plain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: Security,
    /// Login user, if the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Login password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The `From:` address, e.g. `Acme ISP <billing@acme.example>`.
    pub from: String,
    /// Folder of financial documents for `attach:` (`<id>/<kind>/*.pdf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents_dir: Option<std::path::PathBuf>,
    #[serde(default)]
    pub limits: Limits,
}

impl SmtpConfig {
    pub(crate) fn check(&self, field: &str, report: &mut FileReport) {
        if self.host.trim().is_empty() {
            report.error(&format!("{field}.host"), "must not be empty");
        }
        if self.port == Some(0) {
            report.error(&format!("{field}.port"), "must be 1 to 65535");
        }
        if !self.from.contains('@') {
            report.error(
                &format!("{field}.from"),
                format!("`{}` is not an email address", self.from),
            );
        }
        if self.username.is_some() != self.password.is_some() {
            report.error(field, "`username` and `password` go together");
        }
        self.limits.check(field, report);
    }
}

/// The SMTP client. (Skeleton: lettre transport lands next.)
pub struct Smtp {
    #[allow(dead_code)]
    config: SmtpConfig,
}

impl Smtp {
    pub fn new(config: &SmtpConfig) -> Result<Smtp, String> {
        Ok(Smtp {
            config: config.clone(),
        })
    }
}

impl super::Provider for Smtp {
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
