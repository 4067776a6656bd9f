//! `${ENV_VAR}` interpolation in every string of a YAML document.
//!
//! Runs on the parsed value (never on the text, so a variable cannot inject YAML), with
//! the path of each string so a missing variable is reported at its line and column.
//! `${NAME:-fallback}` gives a default; `$${` writes a literal `${`.
//!
//! A variable that is not set is not an error here: the string becomes a marker that a
//! [`Secret`](super::Secret) field accepts as "unset" (see `secret.rs`), and the caller
//! reports every [`Unset`] that did not land in a secret.

use serde_yaml::Value;

use crate::diag::FileReport;

/// A string whose variable is not set in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unset {
    /// Dotted path of the field.
    pub path: String,
    pub var: String,
}

impl Unset {
    /// What is wrong, for a field that needs the value now.
    pub fn message(&self) -> String {
        let var = &self.var;
        format!("environment variable `{var}` is not set (set it, or write `${{{var}:-default}}`)")
    }
}

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `${NAME}` without a default, and `NAME` is not set.
    Unset(String),
    /// The `${…}` itself is malformed.
    Syntax(String),
}

/// Replaces every `${NAME}` in the strings of `value`. A malformed reference is an error
/// in `report`; a string naming a variable `lookup` cannot find becomes a marker, noted
/// in `unset` (its index there is the marker's).
pub fn interpolate(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    report: &mut FileReport,
    unset: &mut Vec<Unset>,
) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(ExpandError::Syntax(message)) => report.error(path, message),
            Err(ExpandError::Unset(var)) => {
                *s = super::secret::unset_marker(unset.len(), &var);
                unset.push(Unset {
                    path: path.to_string(),
                    var,
                });
            }
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), lookup, report, unset);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                interpolate(v, &child, lookup, report, unset);
            }
        }
        Value::Tagged(t) => interpolate(&mut t.value, path, lookup, report, unset),
        _ => {}
    }
}

/// Expands one string.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                ExpandError::Syntax(format!(
                    "unclosed `${{` in `{s}` (write `$${{` for a literal)"
                ))
            })?;
            let inner = &after[..end];
            let (name, fallback) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ExpandError::Syntax(format!(
                    "`${{{inner}}}` is not a variable reference (expected `${{NAME}}` with letters, digits and _)"
                )));
            }
            match (lookup(name), fallback) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(ExpandError::Unset(name.to_string())),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Looks variables up in the process environment.
pub fn from_process(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn expands_defaults_and_escapes() {
        assert_eq!(expand("Bearer ${TOKEN}", &vars).unwrap(), "Bearer s3cret");
        assert_eq!(expand("${MISSING:-x}", &vars).unwrap(), "x");
        assert_eq!(
            expand("cost $5 $${TOKEN}", &vars).unwrap(),
            "cost $5 ${TOKEN}"
        );
        assert_eq!(
            expand("${MISSING}", &vars),
            Err(ExpandError::Unset("MISSING".into()))
        );
        assert!(
            matches!(expand("${TOKEN", &vars), Err(ExpandError::Syntax(m)) if m.contains("unclosed"))
        );
        assert!(expand("${a b}", &vars).is_err());
    }
}
