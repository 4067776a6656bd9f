//! A string that must never be printed: tokens, passwords, API keys.
//!
//! `Debug`, `Display` and `Serialize` all print `<redacted>`, so a secret cannot reach a
//! log line, an error, `crier config show` or a snapshot by accident; the one way to the
//! value is [`Secret::expose`], which only request-building code calls.
//!
//! A secret written as `${VAR}` whose variable is not set is still a [`Secret`], one that
//! knows it is unset ([`Secret::unset_var`]): `crier validate` checks a config's shape
//! without production credentials, and every command that would use the secret refuses
//! to start, naming the variable (`Config::require_secrets`). Interpolation hands such a
//! value over as a marker string that only this type's `Deserialize` understands; what
//! it takes is noted in a per-thread list, so a marker that lands in a field that is
//! *not* a secret (a URL, a rate) stays an error.

use std::cell::RefCell;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// The environment variable it was to come from, when that is not set.
    unset: Option<String>,
}

pub const REDACTED: &str = "<redacted>";

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret {
            value: value.into(),
            unset: None,
        }
    }

    /// The value itself, for building the request that needs it. Empty for an unset
    /// secret, which no command that sends gets past `Config::require_secrets` with.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether the value is known to be empty (an unset secret is not: its value is
    /// merely not known here).
    pub fn is_empty(&self) -> bool {
        self.value.is_empty() && self.unset.is_none()
    }

    /// The variable this secret names when it is not set in the environment.
    pub fn unset_var(&self) -> Option<&str> {
        self.unset.as_deref()
    }
}

/// Starts every marker string; NUL cannot come from a variable's value in a file.
const MARKER: &str = "\u{0}crier-unset\u{0}";

thread_local! {
    /// Markers taken by `Secret::deserialize` since [`collect_unset`] began.
    static TAKEN: RefCell<Option<Vec<usize>>> = const { RefCell::new(None) };
}

/// The stand-in for the string at interpolation site `index` whose variable `var` is
/// not set.
pub(crate) fn unset_marker(index: usize, var: &str) -> String {
    format!("{MARKER}{index}\u{0}{var}")
}

/// Runs `f` (a deserialization) and returns, with its result, the interpolation sites
/// whose markers were taken by secrets.
pub(crate) fn collect_unset<R>(f: impl FnOnce() -> R) -> (R, Vec<usize>) {
    let outer = TAKEN.with(|t| t.borrow_mut().replace(Vec::new()));
    let result = f();
    let taken = TAKEN.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer));
    (result, taken.unwrap_or_default())
}

fn parse_marker(text: &str) -> Option<(usize, &str)> {
    let rest = text.strip_prefix(MARKER)?;
    let (index, var) = rest.split_once('\u{0}')?;
    Some((index.parse().ok()?, var))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `<redacted>`, or `<unset: VAR>` for a secret whose variable is not set here (the
/// variable's name is no secret, and `crier config show` should not suggest a value).
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.unset {
            Some(var) => s.serialize_str(&format!("<unset: {var}>")),
            None => s.serialize_str(REDACTED),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let text = String::deserialize(d)?;
        if let Some((index, var)) = parse_marker(&text) {
            TAKEN.with(|t| {
                if let Some(taken) = t.borrow_mut().as_mut() {
                    taken.push(index);
                }
            });
            return Ok(Secret {
                value: String::new(),
                unset: Some(var.to_string()),
            });
        }
        Ok(Secret::new(text))
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A credential. Write `${ENV_VAR}` rather than the value itself."
        })
    }
}

/// A connection URL whose password must never be printed (`store.url`).
///
/// It reads like a [`Secret`] (`${DATABASE_URL}` may be unset at `crier validate`), but
/// prints the URL with only the password replaced, so `crier config show` still says
/// which server and database it names: `postgres://crier:<redacted>@db:5432/crier`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(Secret::new(url))
    }

    /// The URL itself, password included, for connecting.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The variable this URL names when it is not set in the environment.
    pub fn unset_var(&self) -> Option<&str> {
        self.0.unset_var()
    }

    /// The URL with its password (user-info or `password=` parameter) redacted.
    pub fn redacted(&self) -> String {
        if let Some(var) = self.0.unset_var() {
            return format!("<unset: {var}>");
        }
        let url = self.0.expose();
        let mut out = match url.split_once("://") {
            Some((scheme, rest)) => {
                let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
                let (authority, tail) = rest.split_at(authority_end);
                match authority.rsplit_once('@') {
                    Some((userinfo, host)) => match userinfo.split_once(':') {
                        Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}{tail}"),
                        None => url.to_string(),
                    },
                    None => url.to_string(),
                }
            }
            None => url.to_string(),
        };
        // `?password=…` in a URL, `password=…` in libpq's key=value form.
        let mut from = 0;
        while let Some(at) = out[from..].find("password=") {
            let start = from + at + "password=".len();
            let end = out[start..]
                .find(['&', ' '])
                .map_or(out.len(), |n| start + n);
            out.replace_range(start..end, REDACTED);
            from = start + REDACTED.len();
        }
        out
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl schemars::JsonSchema for SecretUrl {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretUrl".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A connection URL holding a password: write `${DATABASE_URL}`."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_prints_without_its_password() {
        let u = SecretUrl::new("postgres://crier:hunter2@db.example:5433/mail?sslmode=disable");
        assert_eq!(
            u.to_string(),
            "postgres://crier:<redacted>@db.example:5433/mail?sslmode=disable"
        );
        assert_eq!(format!("{u:?}"), u.to_string());
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            "\"postgres://crier:<redacted>@db.example:5433/mail?sslmode=disable\""
        );
        let kv = SecretUrl::new("host=db user=crier password=hunter2 dbname=mail");
        assert_eq!(
            kv.to_string(),
            "host=db user=crier password=<redacted> dbname=mail"
        );
        let q = SecretUrl::new("postgres://db/mail?user=crier&password=hunter2");
        assert_eq!(
            q.to_string(),
            "postgres://db/mail?user=crier&password=<redacted>"
        );
        // No password, nothing to hide; the value is still there to connect with.
        let plain = SecretUrl::new("postgres://crier@db/mail");
        assert_eq!(plain.to_string(), "postgres://crier@db/mail");
        assert_eq!(
            u.expose(),
            "postgres://crier:hunter2@db.example:5433/mail?sslmode=disable"
        );
    }

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_marker_becomes_an_unset_secret_and_is_noted() {
        let text = format!(
            "\"{}\"",
            unset_marker(7, "API_KEY").replace('\u{0}', "\\u0000")
        );
        let (secret, taken) = collect_unset(|| serde_json::from_str::<Secret>(&text).unwrap());
        assert_eq!(secret.unset_var(), Some("API_KEY"));
        assert_eq!(secret.expose(), "");
        assert_eq!(taken, vec![7]);
        // A plain string is a plain secret, and nothing is noted.
        let (secret, taken) = collect_unset(|| serde_json::from_str::<Secret>("\"x\"").unwrap());
        assert_eq!((secret.unset_var(), taken.len()), (None, 0));
    }
}
