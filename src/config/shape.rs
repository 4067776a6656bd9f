//! The structural check of a file against the JSON Schema of its format.
//!
//! serde stops at the first structural error of a document (an unknown key, a bad enum
//! value, a wrong type), so a file with five defects would be reported one defect per
//! run. The JSON Schema that `crier schema` prints is generated from the same raw types
//! serde reads, so checking the parsed YAML against it finds *every* structural defect
//! at once, each at the path of the value it is about. The problems are worded as
//! crier's other diagnostics are (`unknown field … (did you mean …?)`, `expected a
//! string, got integer 5`); [`prune`] then removes the broken fields so that the
//! semantic checks can still run on what remains.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use schemars::JsonSchema;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::diag;

/// One structural problem, at a dotted field path (`schedule.cron`, `attach[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    /// The problem is the key itself (an unknown field), not its value.
    pub at_key: bool,
    pub message: String,
}

/// A compiled schema with the document it came from (to name allowed keys).
struct Compiled {
    schema: Json,
    validator: Validator,
}

/// Every structural problem of `value` read as a `T`, in document order of their paths.
pub fn check<T: JsonSchema>(value: &Yaml) -> Vec<Problem> {
    let Some(compiled) = compiled::<T>() else {
        return Vec::new();
    };
    let instance = to_json(value);
    let mut problems = Vec::new();
    for error in compiled.validator.iter_errors(&instance) {
        describe(&compiled.schema, &instance, &error, &mut problems);
    }
    problems.dedup();
    problems
}

/// The schema of `T`, compiled once per type.
fn compiled<T: JsonSchema>() -> Option<Arc<Compiled>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Compiled>>>> = OnceLock::new();
    let name = T::schema_id().into_owned();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(found) = cache.get(&name) {
        return Some(found.clone());
    }
    let schema = serde_json::to_value(schemars::schema_for!(T)).ok()?;
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => {
            // A schema crier generates itself always compiles; if it did not, serde's
            // own (first-error) report still stands.
            tracing::error!(error = %e, schema = %name, "The JSON Schema does not compile.");
            return None;
        }
    };
    let compiled = Arc::new(Compiled { schema, validator });
    cache.insert(name, compiled.clone());
    Some(compiled)
}

/// Turns one validation error into problems; an `anyOf`/`oneOf` failure is explained by
/// the alternative the value was evidently meant as.
fn describe(schema: &Json, instance: &Json, error: &ValidationError, out: &mut Vec<Problem>) {
    let field = dotted(instance, error.instance_path().as_str());
    let value = error.instance();
    let message = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = allowed_keys(schema, error.schema_path().as_str());
            for name in unexpected {
                out.push(Problem {
                    field: join(&field, name),
                    at_key: true,
                    message: unknown_field(name, &allowed),
                });
            }
            return;
        }
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // An enum whose values are documented one by one is a `oneOf` of constants.
            let constants: Option<Vec<String>> = context
                .iter()
                .map(|errors| match errors.as_slice() {
                    [e] if e.instance_path() == error.instance_path() => match e.kind() {
                        ValidationErrorKind::Constant { expected_value } => {
                            Some(vec![plain(expected_value)])
                        }
                        ValidationErrorKind::Enum { options } => {
                            options.as_array().map(|o| o.iter().map(plain).collect())
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(|v| v.concat());
            if let Some(candidates) = constants {
                out.push(Problem {
                    field,
                    at_key: false,
                    message: unknown_value(&plain(value), &candidates),
                });
                return;
            }
            match meant(context, &field, instance) {
                Meant::Branch(errors) => {
                    for e in errors {
                        describe(schema, instance, e, out);
                    }
                    return;
                }
                Meant::UnknownTag { tag, value } => {
                    let candidates: Vec<String> = context
                        .iter()
                        .flatten()
                        .filter_map(|e| match e.kind() {
                            ValidationErrorKind::Constant { expected_value } => {
                                expected_value.as_str().map(str::to_string)
                            }
                            _ => None,
                        })
                        .collect();
                    out.push(Problem {
                        field: join(&field, &tag),
                        at_key: false,
                        message: unknown_value(&value, &candidates),
                    });
                    return;
                }
                Meant::Unclear => format!(
                    "{} does not have the shape of any of the forms this field takes",
                    got(value)
                ),
            }
        }
        ValidationErrorKind::Enum { options } => {
            let candidates: Vec<String> = options
                .as_array()
                .map(|o| o.iter().map(plain).collect())
                .unwrap_or_default();
            unknown_value(&plain(value), &candidates)
        }
        ValidationErrorKind::Constant { expected_value } => {
            format!("expected `{}`, got {}", plain(expected_value), got(value))
        }
        ValidationErrorKind::Type { kind } => {
            format!("expected {}, got {}", expected(kind), got(value))
        }
        ValidationErrorKind::Required { property } => {
            let name = plain(property);
            out.push(Problem {
                field: join(&field, &name),
                at_key: false,
                message: format!("missing required field `{name}`"),
            });
            return;
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!(
                "{} is not in the form this field takes (`{pattern}`)",
                got(value)
            )
        }
        ValidationErrorKind::Minimum { limit } => {
            format!("{} is below the minimum {limit}", got(value))
        }
        ValidationErrorKind::Maximum { limit } => {
            format!("{} is above the maximum {limit}", got(value))
        }
        _ => error.to_string(),
    };
    out.push(Problem {
        field,
        at_key: false,
        message,
    });
}

enum Meant<'e> {
    /// The errors of the alternative the value was written as.
    Branch(&'e [ValidationError<'static>]),
    /// A tagged value (`type: bulksms`) whose tag names no alternative.
    UnknownTag {
        tag: String,
        value: String,
    },
    Unclear,
}

/// Which alternative of an `anyOf`/`oneOf` the value was meant as: not `null` (an
/// optional field that is present), not one whose tag (`type`) differs, and of those the
/// one with the fewest problems.
fn meant<'e>(
    context: &'e [Vec<ValidationError<'static>>],
    field: &str,
    instance: &Json,
) -> Meant<'e> {
    let is_tag_mismatch = |e: &ValidationError| {
        matches!(
            e.kind(),
            ValidationErrorKind::Constant { .. } | ValidationErrorKind::Enum { .. }
        ) && dotted(instance, e.instance_path().as_str()) == join(field, "type")
    };
    let is_null_branch = |errors: &[ValidationError]| {
        errors.iter().any(|e| {
            matches!(e.kind(), ValidationErrorKind::Type { kind: TypeKind::Single(t) } if t.as_str() == "null")
        })
    };
    let candidates: Vec<&Vec<ValidationError>> = context
        .iter()
        .filter(|errors| !errors.is_empty())
        .filter(|errors| !is_null_branch(errors))
        .filter(|errors| !errors.iter().any(is_tag_mismatch))
        .collect();
    if let Some(best) = candidates.iter().min_by_key(|errors| errors.len()) {
        return Meant::Branch(best);
    }
    // Every tagged alternative refused the tag: the tag is what is wrong.
    let tag = context
        .iter()
        .flatten()
        .find(|e| is_tag_mismatch(e))
        .map(|e| plain(e.instance()));
    match tag {
        Some(value) => Meant::UnknownTag {
            tag: "type".into(),
            value,
        },
        None => Meant::Unclear,
    }
}

/// The keys the object schema at `schema_path` (which ends in `additionalProperties`)
/// allows.
fn allowed_keys(schema: &Json, schema_path: &str) -> Vec<String> {
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    let mut node = schema;
    for segment in parent.split('/').skip(1) {
        let segment = unescape(segment);
        node = match node
            .get(&*segment)
            .or_else(|| segment.parse::<usize>().ok().and_then(|i| node.get(i)))
        {
            Some(n) => n,
            None => return Vec::new(),
        };
        node = resolve(schema, node);
    }
    let mut keys: Vec<String> = node
        .get("properties")
        .and_then(Json::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Follows a local `$ref` (`#/$defs/Name`).
fn resolve<'s>(schema: &'s Json, node: &'s Json) -> &'s Json {
    match node.get("$ref").and_then(Json::as_str) {
        Some(r) if r.starts_with("#/") && node.get("properties").is_none() => schema
            .pointer(&r[1..])
            .map(|n| resolve(schema, n))
            .unwrap_or(node),
        _ => node,
    }
}

fn unescape(segment: &str) -> std::borrow::Cow<'_, str> {
    if segment.contains('~') {
        segment.replace("~1", "/").replace("~0", "~").into()
    } else {
        segment.into()
    }
}

/// A JSON pointer into `instance` as crier's dotted path: `/a/b/1` → `a.b[1]`.
fn dotted(instance: &Json, pointer: &str) -> String {
    let mut out = String::new();
    let mut node = Some(instance);
    for segment in pointer.split('/').skip(1) {
        let segment = unescape(segment);
        match node {
            Some(Json::Array(items)) => {
                out.push_str(&format!("[{segment}]"));
                node = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&segment);
                node = other.and_then(|n| n.get(&*segment));
            }
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn unknown_field(name: &str, allowed: &[String]) -> String {
    match diag::suggest(name, allowed.iter().map(String::as_str)) {
        Some(s) => format!("unknown field `{name}` (did you mean `{s}`?)"),
        None if allowed.is_empty() => format!("unknown field `{name}`"),
        None => format!("unknown field `{name}` (expected one of {})", list(allowed)),
    }
}

fn unknown_value(value: &str, candidates: &[String]) -> String {
    match diag::suggest(value, candidates.iter().map(String::as_str)) {
        Some(s) => format!(
            "unknown value `{value}` (did you mean `{s}`? expected one of {})",
            list(candidates)
        ),
        None => format!(
            "unknown value `{value}` (expected one of {})",
            list(candidates)
        ),
    }
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `a string`, `a list or a string`: what a `type` keyword wants, `null` left out (an
/// optional field may be left out instead).
fn expected(kind: &TypeKind) -> String {
    let names: Vec<&'static str> = match kind {
        TypeKind::Single(t) => vec![t.as_str()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.as_str()).collect(),
    };
    let names: Vec<&str> = names
        .into_iter()
        .filter(|n| *n != "null")
        .map(|n| match n {
            "string" => "a string",
            "integer" => "a whole number",
            "number" => "a number",
            "boolean" => "true or false",
            "array" => "a list",
            "object" => "a map of fields",
            other => other,
        })
        .collect();
    match names.as_slice() {
        [] => "nothing (leave the field out)".into(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// What a value is, for "got …": `integer 5`, `the string "x"`, `a list`.
fn got(value: &Json) -> String {
    match value {
        Json::Null => "nothing (null)".into(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Number(n) if n.is_i64() || n.is_u64() => format!("integer {n}"),
        Json::Number(n) => format!("number {n}"),
        Json::String(s) => format!("the string `{s}`"),
        Json::Array(_) => "a list".into(),
        Json::Object(_) => "a map".into(),
    }
}

/// A scalar as written (strings without quotes).
fn plain(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The YAML value as JSON: keys as their text, tags dropped.
pub fn to_json(value: &Yaml) -> Json {
    match value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::from(i)
            } else if let Some(u) = n.as_u64() {
                Json::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Json::Number)
                    .unwrap_or(Json::Null)
            }
        }
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Sequence(items) => Json::Array(items.iter().map(to_json).collect()),
        Yaml::Mapping(map) => {
            Json::Object(map.iter().map(|(k, v)| (key_text(k), to_json(v))).collect())
        }
        Yaml::Tagged(t) => to_json(&t.value),
    }
}

fn key_text(key: &Yaml) -> String {
    match key {
        Yaml::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Removes the fields `problems` are about from `value`, so what remains can still be
/// read and checked. A problem inside a list removes the whole list (the indices of the
/// rest stay true); a missing field removes nothing. Returns the paths removed.
pub fn prune(value: &mut Yaml, problems: &[Problem]) -> Vec<String> {
    let mut removed = Vec::new();
    for p in problems {
        if p.message.starts_with("missing required field") {
            continue;
        }
        // Up to the last map key that is not inside a list.
        let path = match p.field.find('[') {
            Some(i) => &p.field[..i],
            None => p.field.as_str(),
        };
        if path.is_empty() {
            continue;
        }
        let parts: Vec<&str> = path.split('.').collect();
        if remove_at(value, &parts) {
            removed.push(path.to_string());
        }
    }
    removed
}

/// Removes the entry at the key path `parts`; whether it was there.
fn remove_at(node: &mut Yaml, parts: &[&str]) -> bool {
    match parts {
        [] => false,
        [last] => node
            .as_mapping_mut()
            .is_some_and(|map| map.remove(*last).is_some()),
        [first, rest @ ..] => node.get_mut(*first).is_some_and(|n| remove_at(n, rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::RawJob;

    fn problems(text: &str) -> Vec<String> {
        let value: Yaml = serde_yaml::from_str(text).unwrap();
        check::<RawJob>(&value)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    }

    #[test]
    fn reports_every_structural_problem_at_its_field() {
        let found = problems(
            "send_to: sms\nmessage: hi\nrecipients:\n  where:\n    status: [active, blockd]\nschedule:\n  cron: 5\n  overlap: sometimes\nshedule: x\n",
        );
        assert_eq!(
            found,
            [
                "recipients.where.status[1]: unknown value `blockd` (did you mean `blocked`? expected one of `new`, `active`, `inactive`, `blocked`)",
                "schedule.cron: expected a string, got integer 5",
                "schedule.overlap: unknown value `sometimes` (expected one of `skip`, `queue`)",
                "shedule: unknown field `shedule` (did you mean `schedule`?)",
            ],
        );
    }

    #[test]
    fn a_valid_job_has_no_problems() {
        assert!(
            problems(
                "send_to: email\nsubject: x\nmessage: hi\nrecipients: {}\nattach: [invoices]\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn a_bad_provider_type_is_named_with_the_types() {
        let value: Yaml = serde_yaml::from_str("providers:\n  x:\n    type: bulkmsm\n").unwrap();
        let found = check::<crate::config::RawConfig>(&value);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "providers.x.type");
        assert!(
            found[0].message.contains("did you mean `bulksms`?"),
            "{found:?}"
        );
    }

    #[test]
    fn a_problem_inside_a_provider_is_found_in_its_type() {
        let value: Yaml = serde_yaml::from_str(
            "providers:\n  x:\n    type: bulksms\n    token_id: a\n    token_secret: b\n    fromm: Me\n    limits: { rate: 5 }\n",
        )
        .unwrap();
        let found: Vec<String> = check::<crate::config::RawConfig>(&value)
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        assert!(
            found.contains(
                &"providers.x.fromm: unknown field `fromm` (did you mean `from`?)".to_string()
            ),
            "{found:#?}"
        );
        assert!(found.iter().any(|l| l.starts_with("providers.x.limits.rate: expected a string, got integer 5")), "{found:#?}");
    }

    #[test]
    fn prune_removes_the_broken_fields_only() {
        let mut value: Yaml = serde_yaml::from_str(
            "send_to: sms\nschedule:\n  cron: 5\n  timezone: UTC\nattach: [x]\nshedule: 1\n",
        )
        .unwrap();
        let problems = check::<RawJob>(&value);
        let removed = prune(&mut value, &problems);
        assert!(
            removed.contains(&"schedule.cron".to_string()),
            "{removed:?}"
        );
        assert!(removed.contains(&"attach".to_string()), "{removed:?}");
        assert!(removed.contains(&"shedule".to_string()), "{removed:?}");
        assert_eq!(
            serde_yaml::to_string(&value).unwrap(),
            "send_to: sms\nschedule:\n  timezone: UTC\n"
        );
    }
}
