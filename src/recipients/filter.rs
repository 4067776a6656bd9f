//! The `where:` filter of a job: Splynx's mass-sending filters, one key per field.
//!
//! Every key is optional and a list means any-of; all given keys must match. Text fields
//! compare case-insensitively with `*` and `?` wildcards; phone values are normalised to
//! E.164 first, so `082 123 4567` finds `+27821234567`. [`Where`] is the raw YAML form;
//! [`Filter`] is the compiled one the engine runs on every recipient.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use phonenumber::country::Id;
use schemars::JsonSchema;
use serde::de::{self, DeserializeOwned, IntoDeserializer, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use wildmatch::WildMatch;

use super::{BillingType, Category, Recipient, Service, Status, phone};

/// A single value or a list of values (any-of).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<T> OneOrMany<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Accepts any YAML scalar as text, so `login: 40` and `login: "40"` mean the same.
fn scalar<T: DeserializeOwned, E: de::Error>(text: String) -> Result<T, E> {
    T::deserialize(text.into_deserializer()).map_err(|e: de::value::Error| E::custom(e))
}

struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor).map(ScalarText)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = String;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a text value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: DeserializeOwned> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(ScalarText(text)) = seq.next_element()? {
                    out.push(scalar(text)?);
                }
                Ok(OneOrMany(out))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(OneOrMany(vec![scalar(v.to_string())?]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let item = generator.subschema_for::<T>();
        schemars::json_schema!({
            "anyOf": [item, { "type": "array", "items": item }]
        })
    }
}

/// Which recipients a job reaches. Every key is optional; a list means any-of; all
/// keys given must match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Where {
    /// Portal login, e.g. `"000040"` (quote it to keep leading zeros). Wildcards allowed.
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub login: OneOrMany<String>,
    /// Account status: new, active, inactive, blocked.
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub status: OneOrMany<Status>,
    /// Full name; case-insensitive, `*` matches any text (`"John*"`).
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub name: OneOrMany<String>,
    /// Email address; case-insensitive with wildcards (`"*@example.com"`).
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub email: OneOrMany<String>,
    /// Billing email address; case-insensitive with wildcards.
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub billing_email: OneOrMany<String>,
    /// Phone number, compared after E.164 normalisation (`082 123 4567` finds
    /// `+27821234567`); with `*`, a wildcard over the E.164 form (`"+2721*"`).
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub phone: OneOrMany<String>,
    /// individual or business.
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub category: OneOrMany<Category>,
    /// Location name, e.g. `Cape Town`.
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub location: OneOrMany<String>,
    /// recurring, prepaid_custom or prepaid_daily.
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub billing_type: OneOrMany<BillingType>,
    /// Partner (reseller) name.
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub partner: OneOrMany<String>,
    /// Tariff plan name, in any service.
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub tariff: OneOrMany<String>,
    /// Service of any of the recipient's tariffs: internet, voice, recurring, bundles.
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub service: OneOrMany<Service>,
    /// Extra imported columns by their snake_case name: `{ region: west }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, OneOrMany<String>>,
}

/// A text pattern: case-insensitive, `*` and `?` wildcards.
#[derive(Debug, Clone)]
struct Pattern(WildMatch);

impl Pattern {
    fn new(p: &str) -> Pattern {
        Pattern(WildMatch::new_case_insensitive(p.trim()))
    }

    fn any(patterns: &[Pattern], value: Option<&str>) -> bool {
        patterns.is_empty() || value.is_some_and(|v| patterns.iter().any(|p| p.0.matches(v)))
    }
}

fn patterns(values: &OneOrMany<String>) -> Vec<Pattern> {
    values.0.iter().map(|v| Pattern::new(v)).collect()
}

fn any_of<T: PartialEq>(wanted: &[T], value: Option<&T>) -> bool {
    wanted.is_empty() || value.is_some_and(|v| wanted.contains(v))
}

/// A compiled [`Where`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    login: Vec<Pattern>,
    status: Vec<Status>,
    name: Vec<Pattern>,
    email: Vec<Pattern>,
    billing_email: Vec<Pattern>,
    phone: Vec<Pattern>,
    category: Vec<Category>,
    location: Vec<Pattern>,
    billing_type: Vec<BillingType>,
    partner: Vec<Pattern>,
    tariff: Vec<Pattern>,
    service: Vec<Service>,
    attrs: Vec<(String, Vec<Pattern>)>,
}

/// A filter value that cannot match anything as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// Path below `where`, e.g. `phone[0]`.
    pub field: String,
    pub message: String,
}

impl Filter {
    /// Compiles `w`; phone numbers without `+` are read in `region`.
    pub fn compile(w: &Where, region: Id) -> Result<Filter, Vec<FilterError>> {
        let mut errors = Vec::new();
        let mut phones = Vec::new();
        for (i, p) in w.phone.0.iter().enumerate() {
            if p.contains(['*', '?']) {
                phones.push(Pattern::new(&p.replace([' ', '-', '(', ')'], "")));
            } else {
                match phone::to_e164(p, region) {
                    Some(e164) => phones.push(Pattern::new(&e164)),
                    None => errors.push(FilterError {
                        field: format!("phone[{i}]"),
                        message: format!(
                            "`{p}` is not a valid phone number in region {region:?} (write it in E.164, e.g. `+27821234567`)"
                        ),
                    }),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Filter {
            login: patterns(&w.login),
            status: w.status.0.clone(),
            name: patterns(&w.name),
            email: patterns(&w.email),
            billing_email: patterns(&w.billing_email),
            phone: phones,
            category: w.category.0.clone(),
            location: patterns(&w.location),
            billing_type: w.billing_type.0.clone(),
            partner: patterns(&w.partner),
            tariff: patterns(&w.tariff),
            service: w.service.0.clone(),
            attrs: w
                .attrs
                .iter()
                .map(|(k, v)| (k.to_lowercase(), patterns(v)))
                .collect(),
        })
    }

    /// Does `r` pass every condition?
    pub fn matches(&self, r: &Recipient) -> bool {
        any_of(&self.status, Some(&r.status))
            && any_of(&self.category, r.category.as_ref())
            && any_of(&self.billing_type, r.billing_type.as_ref())
            && Pattern::any(&self.login, r.login.as_deref())
            && Pattern::any(&self.name, Some(&r.name))
            && Pattern::any(&self.email, r.email.as_deref())
            && Pattern::any(&self.billing_email, r.billing_email.as_deref())
            && Pattern::any(&self.phone, r.phone.as_deref())
            && Pattern::any(&self.location, r.location.as_deref())
            && Pattern::any(&self.partner, r.partner.as_deref())
            && (self.tariff.is_empty()
                || r.tariffs
                    .iter()
                    .any(|t| Pattern::any(&self.tariff, Some(&t.plan))))
            && (self.service.is_empty()
                || r.tariffs
                    .iter()
                    .any(|t| t.service.is_some_and(|s| self.service.contains(&s))))
            && self
                .attrs
                .iter()
                .all(|(k, pats)| Pattern::any(pats, r.attrs.get(k).map(String::as_str)))
    }
}

/// Builds a [`Where`] from command-line `KEY=VALUE` pairs (`status=active,blocked`,
/// `attrs.region=west`), through the same deserializer as job files.
pub fn where_from_pairs(pairs: &[String]) -> Result<Where, String> {
    let mut map = serde_yaml::Mapping::new();
    let mut attrs = serde_yaml::Mapping::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--where `{pair}`: expected KEY=VALUE, e.g. status=active"))?;
        let values: Vec<serde_yaml::Value> = value
            .split(',')
            .map(|v| serde_yaml::Value::String(v.trim().to_string()))
            .collect();
        let values = serde_yaml::Value::Sequence(values);
        match key.trim().strip_prefix("attrs.") {
            Some(attr) => attrs.insert(attr.into(), values),
            None => map.insert(key.trim().into(), values),
        };
    }
    if !attrs.is_empty() {
        map.insert("attrs".into(), serde_yaml::Value::Mapping(attrs));
    }
    serde_yaml::from_value(serde_yaml::Value::Mapping(map)).map_err(|e| format!("--where: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipients::{RecipientKind, Tariff};

    fn za() -> Id {
        phone::parse_region("ZA").unwrap()
    }

    fn customer() -> Recipient {
        Recipient {
            kind: RecipientKind::Customer,
            id: 40,
            login: Some("000040".into()),
            status: Status::Active,
            name: "John Mokoena".into(),
            email: Some("john@example.com".into()),
            billing_email: Some("accounts@mokoena.co.za".into()),
            phone: Some("+27821234567".into()),
            phone_raw: Some("082 123 4567".into()),
            category: Some(Category::Business),
            location: Some("Cape Town".into()),
            billing_type: Some(BillingType::Recurring),
            partner: Some("Main".into()),
            tariffs: vec![Tariff {
                service: Some(Service::Internet),
                plan: "Fiber 100".into(),
            }],
            timezone: None,
            attrs: [("region".to_string(), "West".to_string())].into(),
        }
    }

    fn yaml_filter(yaml: &str) -> Filter {
        let w: Where = serde_yaml::from_str(yaml).unwrap();
        Filter::compile(&w, za()).unwrap()
    }

    /// Each field: one `where` that matches the customer and one that does not.
    #[test]
    fn every_field_matches_and_excludes() {
        let cases = [
            ("login: \"000040\"", "login: \"000041\""),
            ("status: [blocked, active]", "status: inactive"),
            ("name: \"john*\"", "name: \"Jane*\""),
            ("email: \"*@EXAMPLE.com\"", "email: \"*@example.org\""),
            ("billing_email: \"accounts@*\"", "billing_email: \"john@*\""),
            ("phone: \"082 123 4567\"", "phone: \"+27821234568\""),
            ("phone: \"+2782*\"", "phone: \"+2721*\""),
            ("category: business", "category: individual"),
            ("location: [Durban, cape town]", "location: Durban"),
            ("billing_type: recurring", "billing_type: [prepaid_daily]"),
            ("partner: Main", "partner: Other"),
            ("tariff: \"fiber*\"", "tariff: \"Fiber 200\""),
            ("service: internet", "service: voice"),
            ("attrs: { region: west }", "attrs: { region: east }"),
        ];
        let c = customer();
        for (yes, no) in cases {
            assert!(yaml_filter(yes).matches(&c), "{yes} should match");
            assert!(!yaml_filter(no).matches(&c), "{no} should not match");
        }
    }

    #[test]
    fn all_keys_must_match_and_missing_values_never_match() {
        let c = customer();
        assert!(yaml_filter("{status: active, location: Cape Town}").matches(&c));
        assert!(!yaml_filter("{status: active, location: Durban}").matches(&c));
        assert!(!yaml_filter("attrs: { missing: \"*\" }").matches(&c));
        let mut no_email = customer();
        no_email.email = None;
        assert!(!yaml_filter("email: \"*\"").matches(&no_email));
        assert!(yaml_filter("{}").matches(&no_email));
    }

    #[test]
    fn invalid_phone_value_is_a_compile_error() {
        let w: Where = serde_yaml::from_str("phone: [\"+27821234567\", \"123\"]").unwrap();
        let errors = Filter::compile(&w, za()).unwrap_err();
        assert_eq!(errors[0].field, "phone[1]");
    }

    #[test]
    fn cli_pairs_build_the_same_filter() {
        let w = where_from_pairs(&["status=active,blocked".into(), "attrs.region=west".into()])
            .unwrap();
        assert_eq!(w.status.0, vec![Status::Active, Status::Blocked]);
        assert!(Filter::compile(&w, za()).unwrap().matches(&customer()));
        assert!(where_from_pairs(&["stauts=active".into()]).is_err());
        assert!(where_from_pairs(&["status".into()]).is_err());
    }
}
