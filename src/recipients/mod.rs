//! Who a job reaches: the recipient model, its filters, and where recipients come from.
//!
//! A [`Recipient`] is an internet provider's customer or lead with the fields Splynx's
//! *Mass sending* filters on (portal login, status, category, location, billing type,
//! partner, tariff plans) plus every extra imported column in `attrs`. Recipients come
//! from the store (filled by `crier import`) or straight from a CSV file; both paths
//! share one row parser ([`row`]) and one filter ([`filter::Filter`]), so a job selects
//! the same people whichever source it names.

pub mod directory;
pub mod filter;
pub mod import;
pub mod optout;
pub mod phone;
pub mod row;
pub mod source;
pub mod unsubscribe;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Customer or lead, as Splynx's *Recipient* selector.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    Customer,
    Lead,
}

impl RecipientKind {
    pub const ALL: [RecipientKind; 2] = [RecipientKind::Customer, RecipientKind::Lead];

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::Customer => "customer",
            RecipientKind::Lead => "lead",
        }
    }
}

impl std::str::FromStr for RecipientKind {
    type Err = String;
    fn from_str(s: &str) -> Result<RecipientKind, String> {
        match s.trim().to_lowercase().as_str() {
            "customer" => Ok(RecipientKind::Customer),
            "lead" => Ok(RecipientKind::Lead),
            _ => Err(format!("`{s}` is not a recipient kind (customer or lead)")),
        }
    }
}

impl fmt::Display for RecipientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Account status, as Splynx names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Active,
    Inactive,
    Blocked,
}

/// Individual person or business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Individual,
    Business,
}

/// How the customer is billed: Splynx's *Recurring*, *Prepaid (Custom)*, *Prepaid (Daily)*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BillingType {
    Recurring,
    PrepaidCustom,
    PrepaidDaily,
}

/// The service category a tariff plan belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Internet,
    Voice,
    Recurring,
    Bundles,
}

/// Generates `as_str` and a forgiving `parse_label` for the enums above: imported files
/// write `Active`, `Prepaid (Daily)` or `prepaid_daily` for the same value.
macro_rules! labels {
    ($ty:ty { $($variant:ident => $name:literal [$($alias:literal),*]),* $(,)? }) => {
        impl $ty {
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $name),* }
            }

            /// Parses a label case- and punctuation-insensitively.
            pub fn parse_label(label: &str) -> Option<Self> {
                let key = squash(label);
                $(
                    if key == squash($name) $(|| key == squash($alias))* {
                        return Some(<$ty>::$variant);
                    }
                )*
                None
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

labels!(Status {
    New => "new" [],
    Active => "active" [],
    Inactive => "inactive" ["disabled"],
    Blocked => "blocked" [],
});
labels!(Category {
    Individual => "individual" ["person", "private"],
    Business => "business" ["company"],
});
labels!(BillingType {
    Recurring => "recurring" [],
    PrepaidCustom => "prepaid_custom" ["prepaid (custom)", "prepaid_monthly"],
    PrepaidDaily => "prepaid_daily" ["prepaid (daily)", "prepaid"],
});
labels!(Service {
    Internet => "internet" [],
    Voice => "voice" [],
    Recurring => "recurring" [],
    Bundles => "bundles" ["bundle"],
});

/// Lower-case letters and digits only: the key labels and headers are compared by.
pub fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// One tariff plan a recipient has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    /// The service category, when the source named it (`Internet: Fiber 100`).
    #[serde(default)]
    pub service: Option<Service>,
    pub plan: String,
}

/// A customer or lead that a job can reach.
///
/// Every field is always serialized (no `skip_serializing_if`): the store encodes records
/// with postcard, a positional format, and JSON output shows absent values as `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub kind: RecipientKind,
    pub id: u64,
    #[serde(default)]
    pub login: Option<String>,
    pub status: Status,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub billing_email: Option<String>,
    /// The phone number in E.164 (`+27821234567`); `None` when the raw value is missing
    /// or could not be parsed.
    #[serde(default)]
    pub phone: Option<String>,
    /// The phone number exactly as imported.
    #[serde(default)]
    pub phone_raw: Option<String>,
    #[serde(default)]
    pub category: Option<Category>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub billing_type: Option<BillingType>,
    #[serde(default)]
    pub partner: Option<String>,
    #[serde(default)]
    pub tariffs: Vec<Tariff>,
    /// IANA zone of the recipient, for per-recipient send windows.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Every imported column crier has no field for, keyed by its snake_case header.
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_splynx_spellings() {
        assert_eq!(Status::parse_label("Active"), Some(Status::Active));
        assert_eq!(
            BillingType::parse_label("Prepaid (Daily)"),
            Some(BillingType::PrepaidDaily)
        );
        assert_eq!(
            BillingType::parse_label("prepaid_custom"),
            Some(BillingType::PrepaidCustom)
        );
        assert_eq!(Category::parse_label("Company"), Some(Category::Business));
        assert_eq!(Status::parse_label("actve"), None);
    }
}
