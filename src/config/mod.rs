//! The project config, `crier.yaml`: raw → validated, with embedded defaults.
//!
//! [`RawConfig`] is what serde reads (unknown keys are errors); [`Config`] is the only
//! thing the rest of crier accepts. Validation is pure and reports every problem with its
//! line and column. Without a `crier.yaml` crier runs on built-in defaults: a sled store
//! in `./data`, SMS and email to the `outbox` file provider, portal messages to the
//! portal inbox, so a real job runs with no credentials.

pub mod env;
pub mod secret;
pub mod shape;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use phonenumber::country::Id;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use secret::{Secret, SecretUrl};

use crate::diag::{self, Diagnostic, Diagnostics, FileReport, SourceMap};
use crate::job::Channel;
use crate::provider::{ProviderConfig, file::FileConfig, portal::PortalConfig};
use crate::recipients::phone;
use crate::store::postgres::PgSettings;
use crate::store::{Backend, StoreConfig};

/// The file crier reads when `--config` is not given.
pub const DEFAULT_PATH: &str = "crier.yaml";

/// `crier.yaml` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where crier keeps its store and outbox (default `./data`; relative to this file).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// ISO 3166 region for phone numbers written without `+` (default `ZA`).
    #[serde(default)]
    pub default_region: Option<String>,
    /// IANA time zone for history periods and jobs without their own (default `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Store settings.
    #[serde(default)]
    pub store: RawStore,
    /// Named providers, e.g. `bulksms: { type: bulksms, token_id: …, token_secret: ${BULKSMS_SECRET} }`.
    /// `outbox` (type file) and `portal` (type portal) exist unless redefined.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Default provider per channel.
    #[serde(default)]
    pub channels: RawChannels,
    /// The HTTP server (`crier serve`; `crier run` when `listen` is set).
    #[serde(default)]
    pub server: Option<RawServer>,
    /// What `crier bounces ingest` does with bounced addresses.
    #[serde(default)]
    pub bounces: RawBounces,
    /// Email settings of every job: one-click unsubscribe and the channel's default.
    #[serde(default)]
    pub email: Option<RawEmail>,
    /// Several workers on one PostgreSQL store (`store.backend: postgres`): how often each
    /// heartbeats, and how long a silent one counts as alive.
    #[serde(default)]
    pub cluster: RawCluster,
}

/// `cluster:` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// How often each worker heartbeats and the scheduler's leader renews its lease,
    /// e.g. `2s` (the default).
    #[serde(default)]
    pub heartbeat: Option<String>,
    /// How long a worker that stopped heartbeating still counts as alive, and how long
    /// the scheduler lease lasts: after it, the leader declares the silent worker dead
    /// (its messages are handed on) and another worker may take the lease. At least 3
    /// heartbeats; default `10s`.
    #[serde(default)]
    pub lease: Option<String>,
}

/// `email:` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// Default of a job's `email.transactional` (default false: every email job offers
    /// one-click unsubscribe unless it says it is service mail).
    #[serde(default)]
    pub transactional: Option<bool>,
    /// One-click unsubscribe (RFC 2369 `List-Unsubscribe`, RFC 8058): the links each
    /// email carries and `crier serve` answers at `/u/TOKEN`.
    #[serde(default)]
    pub unsubscribe: Option<RawUnsubscribe>,
}

/// `email.unsubscribe:` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUnsubscribe {
    /// The key unsubscribe tokens are signed with (HMAC-SHA256), at least 32 characters,
    /// e.g. `${CRIER_UNSUBSCRIBE_SECRET}`. Changing it invalidates the links of every
    /// email already sent.
    pub secret: Secret,
    /// Where recipients reach `crier serve`, e.g. `https://crier.example.net`: links are
    /// `<public_url>/u/TOKEN`. Default: `server.public_url` when that is set.
    #[serde(default)]
    pub public_url: Option<String>,
    /// An address for mail clients that unsubscribe by email, e.g.
    /// `unsubscribe@acme.example` (added as the `mailto:` of `List-Unsubscribe`).
    #[serde(default)]
    pub mailto: Option<String>,
}

/// `bounces:` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBounces {
    /// Hard bounces (status 5.x.x) of one email address after which it goes on the
    /// opt-out list with reason `bounce` (default 1: the first). A complaint (an abuse
    /// report) opts the address out at once, whatever this says.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub hard_bounce_limit: Option<u32>,
}

/// `server:` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on (default `127.0.0.1:8025`: loopback only unless you say so).
    #[serde(default)]
    pub listen: Option<String>,
    /// Bearer token every `/api` request must carry, e.g. `${CRIER_API_TOKEN}`. Without
    /// it the API answers 401 to everyone.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Secret path segment of the delivery-report URLs of providers that cannot sign
    /// them: `/webhooks/bulksms/<webhook_token>`. Twilio's reports are checked by their
    /// signature instead.
    #[serde(default)]
    pub webhook_token: Option<Secret>,
    /// The URL providers reach this server at (e.g. `https://crier.example.net`), needed
    /// to check Twilio's signature behind a proxy (default: `http://<listen>`).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Largest request body accepted, in KB (default 1024).
    #[serde(default)]
    pub max_body_kb: Option<usize>,
}

/// `store:` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// Upper bound of the sled directory's page cache in MiB (default 64).
    #[serde(default)]
    pub cache_mb: Option<u64>,
    /// `embedded` (default: a sled directory and an SQLite history in `data_dir`) or
    /// `postgres` (both in the PostgreSQL database `url` names).
    #[serde(default)]
    pub backend: Option<Backend>,
    /// The PostgreSQL database, `postgres://USER:PASSWORD@HOST:PORT/DATABASE`: write
    /// `${DATABASE_URL}`. Required with `backend: postgres`.
    #[serde(default)]
    pub url: Option<SecretUrl>,
    /// Most PostgreSQL connections crier opens at once (default 8).
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// The PostgreSQL schema crier's tables live in (default `crier`).
    #[serde(default)]
    pub schema: Option<String>,
}

/// `channels:` as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawChannels {
    /// Provider for SMS (default `outbox`).
    #[serde(default)]
    pub sms: Option<String>,
    /// Provider for email (default `outbox`).
    #[serde(default)]
    pub email: Option<String>,
    /// Provider for customer-portal messages (default `portal`).
    #[serde(default)]
    pub portal: Option<String>,
}

/// The validated config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it came from; `None` for the built-in defaults.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub default_region: String,
    #[serde(skip)]
    pub region: Id,
    pub timezone: String,
    #[serde(skip)]
    pub tz: chrono_tz::Tz,
    pub store: StoreSettings,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub channels: Channels,
    pub server: ServerSettings,
    pub email: EmailSettings,
    pub bounces: BounceSettings,
    /// `cluster:`: heartbeat and lease timing of workers on PostgreSQL.
    pub cluster: crate::cluster::members::Leases,
    /// Secrets whose `${VAR}` is not set here (see [`Config::require_secrets`]).
    #[serde(skip)]
    pub unset_secrets: Vec<UnsetSecret>,
}

/// The HTTP server's validated settings.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSettings {
    /// Whether `server:` was given at all (`crier run` serves only then).
    pub configured: bool,
    pub listen: std::net::SocketAddr,
    pub token: Option<Secret>,
    pub webhook_token: Option<Secret>,
    pub public_url: String,
    /// Whether `public_url` was written (else it is `http://<listen>`).
    #[serde(skip)]
    pub public_url_given: bool,
    pub max_body_bytes: usize,
}

/// The validated `email:` settings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmailSettings {
    /// Whether a job that does not say is service mail (no unsubscribe headers).
    pub transactional: bool,
    /// `None` when `email.unsubscribe` is not configured.
    pub unsubscribe: Option<UnsubscribeSettings>,
}

/// The validated `email.unsubscribe:`.
#[derive(Debug, Clone, Serialize)]
pub struct UnsubscribeSettings {
    pub secret: Secret,
    /// No trailing slash.
    pub public_url: String,
    pub mailto: Option<String>,
}

impl UnsubscribeSettings {
    /// The signer of this config's unsubscribe tokens.
    pub fn unsubscriber(&self) -> crate::recipients::unsubscribe::Unsubscriber {
        crate::recipients::unsubscribe::Unsubscriber::new(
            self.secret.clone(),
            &self.public_url,
            self.mailto.clone(),
        )
    }
}

/// Shortest `email.unsubscribe.secret`: 32 characters, so the HMAC key cannot be guessed.
const MIN_UNSUBSCRIBE_SECRET: usize = 32;

/// What `crier bounces ingest` does, validated.
#[derive(Debug, Clone, Serialize)]
pub struct BounceSettings {
    pub hard_bounce_limit: u32,
}

/// Default of `server.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8025";

#[derive(Debug, Clone, Serialize)]
pub struct StoreSettings {
    pub backend: Backend,
    pub cache_mb: u64,
    /// With `backend: postgres` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<SecretUrl>,
    pub pool_size: usize,
    pub schema: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Channels {
    pub sms: String,
    pub email: String,
    pub portal: String,
}

impl Channels {
    /// The default provider name for `channel`.
    pub fn provider_for(&self, channel: Channel) -> &str {
        match channel {
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
            Channel::Portal => &self.portal,
        }
    }
}

/// Why no config could be had.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const DEFAULT_CACHE_MB: u64 = 8;
const MAX_CACHE_MB: u64 = 16 * 1024;
/// Largest `server.max_body_kb`: 64 MB.
const MAX_BODY_KB: usize = 64 * 1024;

impl Config {
    /// The built-in defaults, as if `crier.yaml` were empty.
    pub fn defaults() -> Config {
        let map = SourceMap::default();
        let mut report = FileReport::new(Path::new(DEFAULT_PATH), &map);
        let config = validate(RawConfig::default(), None, &mut report);
        debug_assert!(report.diags.is_empty());
        config
    }

    /// Reads `path`, or the defaults when `path` is `None` and `./crier.yaml` is absent.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::defaults());
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Config::parse(&path, &text, &env::from_process).map_err(ConfigError::Invalid)
    }

    /// Parses and validates config text; `lookup` resolves `${VARS}`.
    pub fn parse(
        path: &Path,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Diagnostics> {
        let mut doc = parse_document::<RawConfig>(path, text, lookup)?;
        let Some(raw) = doc.raw.take() else {
            return Err(doc.problems(Diagnostics::default()));
        };
        let mut report = FileReport::new(path, &doc.map);
        let mut config = validate(raw, Some(path), &mut report);
        let problems = doc.problems(report.diags);
        if !problems.is_empty() {
            return Err(problems);
        }
        config.unset_secrets = doc.unset_secrets;
        Ok(config)
    }

    /// Refuses, naming each variable, when a secret that `wanted` selects (by its field,
    /// e.g. `providers.bulksms.token_secret`) is not set.
    pub fn require_secrets(&self, wanted: impl Fn(&str) -> bool) -> Result<(), Diagnostics> {
        let missing: Vec<Diagnostic> = self
            .unset_secrets
            .iter()
            .filter(|s| wanted(&s.diagnostic.field))
            .map(|s| s.diagnostic.clone())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Diagnostics(missing))
        }
    }

    /// [`Config::require_secrets`] for the providers named.
    pub fn require_provider_secrets<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<(), Diagnostics> {
        let prefixes: Vec<String> = names
            .into_iter()
            .map(|n| format!("providers.{n}."))
            .collect();
        self.require_secrets(|field| prefixes.iter().any(|p| field.starts_with(p)))
    }

    /// Where the store lives and how much cache it may use.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            path: self.data_dir.join("store"),
            cache_bytes: self.store.cache_mb * 1024 * 1024,
            backend: self.store.backend,
            postgres: self.store.url.clone().map(|url| PgSettings {
                url,
                pool_size: self.store.pool_size,
                schema: self.store.schema.clone(),
            }),
        }
    }
}

/// A secret whose `${VAR}` is not set: fine for `crier validate`, an error for every
/// command that would use it ([`Config::require_secrets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsetSecret {
    pub var: String,
    /// Where it is written, with the error a command that needs it reports.
    pub diagnostic: Diagnostic,
}

/// One YAML document, read as far as it could be.
pub struct Document<T> {
    /// The typed value; `None` when the fields that are right do not make one.
    pub raw: Option<T>,
    pub map: SourceMap,
    /// Structural and interpolation problems, every one of them.
    pub diags: Diagnostics,
    /// Fields taken out because they were wrong (semantic checks under them are moot).
    pub pruned: Vec<String>,
    /// Secrets whose variables are not set.
    pub unset_secrets: Vec<UnsetSecret>,
}

impl<T> Document<T> {
    /// Every problem of the file: the structural ones and `semantic` (what validation of
    /// [`Document::raw`] found), except those about fields that were taken out, in order
    /// of position.
    pub fn problems(&self, semantic: Diagnostics) -> Diagnostics {
        let mut all = self.diags.clone();
        // A problem under a field taken out, or with a field that held it (`schedule`
        // "needs cron" once a broken `cron` is out), is a consequence, not news.
        let within = |inner: &str, outer: &str| {
            inner == outer
                || outer.is_empty()
                || inner
                    .strip_prefix(outer)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        };
        let moot = |field: &str| {
            self.pruned
                .iter()
                .any(|p| within(field, p) || within(p, field))
        };
        all.0
            .extend(semantic.0.into_iter().filter(|d| !moot(&d.field)));
        all.sort_by_position();
        all
    }
}

/// Reads one YAML document into `T`, finding every structural problem at once: the
/// parsed YAML is checked against the JSON Schema of `T` (see [`shape`]), the fields at
/// fault are taken out, `${VAR}`s are interpolated, and what remains is read as `T` so
/// that the semantic checks can run on it too. Only a YAML syntax error stops it here.
pub fn parse_document<T: DeserializeOwned + JsonSchema>(
    path: &Path,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Document<T>, Diagnostics> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let map = SourceMap::new(text);
    let mut value: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| Diagnostics(vec![diag::from_serde(path, &map, &e)]))?;
    let mut report = FileReport::new(path, &map);
    let mut pruned = Vec::new();
    // serde is what crier runs on: the schema only explains a document serde refuses.
    // Read from the text first, so that its error has a position; then as the value it
    // is finally read from, which takes no plain scalar for a string (`cron: 5`).
    let refused = serde_yaml::from_str::<T>(text)
        .err()
        .or_else(|| serde_yaml::from_value::<T>(value.clone()).err());
    if let Some(first) = refused {
        let first = diag::from_serde(path, &map, &first);
        let problems = shape::check::<T>(&value);
        if problems.is_empty() {
            report.diags.0.push(first);
            let diags = report.diags;
            return Ok(Document {
                raw: None,
                map,
                diags,
                pruned,
                unset_secrets: Vec::new(),
            });
        }
        report_shape(&mut report, &problems, &first);
        pruned = shape::prune(&mut value, &problems);
    }
    let mut unset = Vec::new();
    env::interpolate(&mut value, "", lookup, &mut report, &mut unset);
    let (typed, taken) = secret::collect_unset(|| serde_yaml::from_value::<T>(value));
    let mut unset_secrets = Vec::new();
    for (i, u) in unset.iter().enumerate() {
        if taken.contains(&i) {
            let pos = map.locate(&u.path);
            unset_secrets.push(UnsetSecret {
                var: u.var.clone(),
                diagnostic: Diagnostic {
                    file: path.to_path_buf(),
                    line: pos.line,
                    col: pos.col,
                    field: u.path.clone(),
                    message: format!(
                        "environment variable `{}` is not set (this command uses the credential: export it)",
                        u.var
                    ),
                },
            });
        } else {
            // Not a secret: its value is needed to check the file at all.
            report.error(&u.path, u.message());
        }
    }
    let raw = match typed {
        Ok(raw) if unset.len() == unset_secrets.len() => Some(raw),
        Ok(_) => None,
        Err(e) => {
            // Taking fields out left a required one missing, or the schema is looser
            // than serde: say serde's word only when nothing else explains it.
            if report.diags.is_empty() {
                report.diags.0.push(diag::from_serde(path, &map, &e));
            }
            None
        }
    };
    let diags = report.diags;
    Ok(Document {
        raw,
        map,
        diags,
        pruned,
        unset_secrets,
    })
}

/// Puts the schema's `problems` in `report`; where serde refused the same field's value
/// with its own parser's word (`rate: 30/fortnight`), that says more than a pattern does.
fn report_shape(report: &mut FileReport, problems: &[shape::Problem], serde: &Diagnostic) {
    for p in problems {
        if p.field == serde.field && p.message.contains("not in the form") {
            report.diags.0.push(serde.clone());
        } else if p.at_key {
            report.key_error(&p.field, &p.message);
        } else {
            report.error(&p.field, &p.message);
        }
    }
}

fn validate(raw: RawConfig, path: Option<&Path>, report: &mut FileReport) -> Config {
    let base = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let data_dir = match raw.data_dir {
        Some(d) if d.is_absolute() => d,
        Some(d) => base.join(d),
        None => PathBuf::from("data"),
    };

    let default_region = raw.default_region.unwrap_or_else(|| "ZA".into());
    let region = match phone::parse_region(&default_region) {
        Some(id) => id,
        None => {
            report.error(
                "default_region",
                format!(
                    "`{default_region}` is not an ISO 3166 region code (e.g. `ZA`, `GB`, `US`)"
                ),
            );
            Id::ZA
        }
    };

    let timezone = raw.timezone.unwrap_or_else(|| "UTC".into());
    let tz = parse_timezone(&timezone, "timezone", report).unwrap_or(chrono_tz::UTC);

    let cache_mb = raw.store.cache_mb.unwrap_or(DEFAULT_CACHE_MB);
    if !(1..=MAX_CACHE_MB).contains(&cache_mb) {
        report.error(
            "store.cache_mb",
            format!("`{cache_mb}` is out of range (1 to {MAX_CACHE_MB})"),
        );
    }

    let store = validate_store(raw.store, cache_mb, report);

    let mut providers = raw.providers;
    for (name, provider) in &providers {
        let field = format!("providers.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            report.key_error(
                &field,
                format!("`{name}` is not a provider name (letters, digits, - and _)"),
            );
        }
        provider.check(&field, report);
    }
    // Folders in provider configs are relative to this file, as `data_dir` is.
    for provider in providers.values_mut() {
        if let ProviderConfig::Smtp(c) = provider
            && let Some(dkim) = c.dkim.as_mut()
            && dkim.private_key_file.is_relative()
        {
            dkim.private_key_file = base.join(&dkim.private_key_file);
        }
        let dir = match provider {
            ProviderConfig::Smtp(c) => c.documents_dir.as_mut(),
            ProviderConfig::Sendgrid(c) => c.documents_dir.as_mut(),
            ProviderConfig::Mailgun(c) => c.documents_dir.as_mut(),
            ProviderConfig::Ses(c) => c.documents_dir.as_mut(),
            ProviderConfig::File(c) => c.dir.as_mut(),
            _ => None,
        };
        if let Some(dir) = dir
            && dir.is_relative()
        {
            *dir = base.join(&*dir);
        }
    }
    providers
        .entry("outbox".into())
        .or_insert_with(|| ProviderConfig::File(FileConfig::default()));
    providers
        .entry("portal".into())
        .or_insert_with(|| ProviderConfig::Portal(PortalConfig::default()));

    let channels = Channels {
        sms: raw.channels.sms.unwrap_or_else(|| "outbox".into()),
        email: raw.channels.email.unwrap_or_else(|| "outbox".into()),
        portal: raw.channels.portal.unwrap_or_else(|| "portal".into()),
    };
    for channel in Channel::ALL {
        let name = channels.provider_for(channel);
        let field = format!("channels.{channel}");
        check_provider_ref(&providers, name, channel, &field, report);
    }

    let server = {
        let raw = raw.server;
        let configured = raw.is_some();
        let raw = raw.unwrap_or_default();
        let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = match listen_text.parse::<std::net::SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                report.error(
                    "server.listen",
                    format!("`{listen_text}` is not an address and port (e.g. `127.0.0.1:8025`)"),
                );
                std::net::SocketAddr::from(([127, 0, 0, 1], 8025))
            }
        };
        if let Some(url) = &raw.public_url {
            crate::provider::check_url(url, "server.public_url", report);
        }
        for (field, secret) in [("token", &raw.token), ("webhook_token", &raw.webhook_token)] {
            if secret
                .as_ref()
                .is_some_and(|s| s.unset_var().is_none() && s.expose().len() < 16)
            {
                report.error(
                    &format!("server.{field}"),
                    "must be at least 16 characters (use a random string)",
                );
            }
        }
        if let Some(kb) = raw.max_body_kb
            && !(1..=MAX_BODY_KB).contains(&kb)
        {
            report.error(
                "server.max_body_kb",
                format!("`{kb}` is out of range (1 to {MAX_BODY_KB})"),
            );
        }
        ServerSettings {
            configured,
            listen,
            token: raw.token,
            webhook_token: raw.webhook_token,
            public_url_given: raw.public_url.is_some(),
            public_url: raw
                .public_url
                .map(|u| u.trim_end_matches('/').to_string())
                .unwrap_or_else(|| format!("http://{listen}")),
            max_body_bytes: raw.max_body_kb.unwrap_or(1024).clamp(1, MAX_BODY_KB) * 1024,
        }
    };

    let email = validate_email(raw.email.unwrap_or_default(), &server, report);

    if raw.bounces.hard_bounce_limit == Some(0) {
        report.error(
            "bounces.hard_bounce_limit",
            "`0` is out of range (at least 1: the first hard bounce)",
        );
    }
    let bounces = BounceSettings {
        hard_bounce_limit: raw.bounces.hard_bounce_limit.unwrap_or(1).max(1),
    };

    let cluster = validate_cluster(&raw.cluster, report);

    Config {
        server,
        email,
        bounces,
        cluster,
        source: path.map(Path::to_path_buf),
        data_dir,
        default_region: default_region.to_ascii_uppercase(),
        region,
        timezone,
        tz,
        store,
        providers,
        channels,
        unset_secrets: Vec::new(),
    }
}

/// `cluster:`: each a duration; the lease at least 3 heartbeats, so one late heartbeat
/// never makes a worker dead.
fn validate_cluster(raw: &RawCluster, report: &mut FileReport) -> crate::cluster::members::Leases {
    use crate::cluster::members::{DEFAULT_HEARTBEAT, DEFAULT_LEASE, Leases};
    let mut duration = |field: &str, text: &Option<String>, default: std::time::Duration| {
        let Some(text) = text else {
            return Some(default);
        };
        match humantime::parse_duration(text) {
            Ok(d) if d >= std::time::Duration::from_millis(10) => Some(d),
            Ok(_) => {
                report.error(field, format!("`{text}` is too short (at least 10ms)"));
                None
            }
            Err(_) => {
                report.error(
                    field,
                    format!("`{text}` is not a duration (e.g. `2s`, `500ms`)"),
                );
                None
            }
        }
    };
    let heartbeat = duration("cluster.heartbeat", &raw.heartbeat, DEFAULT_HEARTBEAT);
    let lease = duration("cluster.lease", &raw.lease, DEFAULT_LEASE);
    let (Some(heartbeat), Some(lease)) = (heartbeat, lease) else {
        return Leases::default();
    };
    if lease < heartbeat * 3 {
        let field = if raw.lease.is_some() {
            "cluster.lease"
        } else {
            "cluster.heartbeat"
        };
        report.error(
            field,
            format!(
                "the lease ({}) must be at least 3 heartbeats ({} each), or one late heartbeat makes a worker dead (e.g. `heartbeat: 2s`, `lease: 10s`)",
                humantime::format_duration(lease),
                humantime::format_duration(heartbeat)
            ),
        );
        return Leases::default();
    }
    Leases {
        heartbeat,
        lease,
        lead: false,
    }
}

fn validate_store(raw: RawStore, cache_mb: u64, report: &mut FileReport) -> StoreSettings {
    let backend = raw.backend.unwrap_or_default();
    if backend == Backend::Postgres && raw.url.is_none() {
        report.error(
            "store.url",
            "is required with `backend: postgres` (e.g. `url: ${DATABASE_URL}`)".to_string(),
        );
    }
    let pool_size = raw
        .pool_size
        .unwrap_or(crate::store::postgres::DEFAULT_POOL_SIZE);
    if !(1..=1000).contains(&pool_size) {
        report.error(
            "store.pool_size",
            format!("`{pool_size}` is out of range (1 to 1000)"),
        );
    }
    let schema = raw
        .schema
        .unwrap_or_else(|| crate::store::postgres::DEFAULT_SCHEMA.into());
    if !crate::store::postgres::valid_schema(&schema) {
        report.error(
            "store.schema",
            format!("`{schema}` is not a lower-case SQL identifier (e.g. `crier`)"),
        );
    }
    StoreSettings {
        backend,
        cache_mb,
        url: raw.url,
        pool_size,
        schema,
    }
}

fn validate_email(
    raw: RawEmail,
    server: &ServerSettings,
    report: &mut FileReport,
) -> EmailSettings {
    let unsubscribe = raw.unsubscribe.and_then(|u| {
        if u.secret.unset_var().is_none() && u.secret.expose().chars().count() < MIN_UNSUBSCRIBE_SECRET {
            report.error(
                "email.unsubscribe.secret",
                format!(
                    "must be at least {MIN_UNSUBSCRIBE_SECRET} characters (e.g. the output of `openssl rand -base64 32`)"
                ),
            );
        }
        if let Some(mailto) = &u.mailto
            && mailto.parse::<lettre::Address>().is_err()
        {
            report.error(
                "email.unsubscribe.mailto",
                format!("`{mailto}` is not an email address (e.g. `unsubscribe@acme.example`)"),
            );
        }
        let public_url = match (&u.public_url, server.public_url_given) {
            (Some(url), _) => {
                crate::provider::check_url(url, "email.unsubscribe.public_url", report);
                url.trim_end_matches('/').to_string()
            }
            (None, true) => server.public_url.clone(),
            (None, false) => {
                report.key_error(
                    "email.unsubscribe",
                    "needs `public_url` (where recipients reach `crier serve`, e.g. `https://crier.example.net`), or `server.public_url`",
                );
                return None;
            }
        };
        Some(UnsubscribeSettings {
            secret: u.secret,
            public_url,
            mailto: u.mailto,
        })
    });
    EmailSettings {
        transactional: raw.transactional.unwrap_or(false),
        unsubscribe,
    }
}

/// Reports a provider name that is not configured or cannot carry `channel`.
pub fn check_provider_ref(
    providers: &BTreeMap<String, ProviderConfig>,
    name: &str,
    channel: Channel,
    field: &str,
    report: &mut FileReport,
) {
    match providers.get(name) {
        None => {
            let known: Vec<&str> = providers.keys().map(String::as_str).collect();
            let hint = match diag::suggest(name, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("defined: {}", known.join(", ")),
            };
            report.error(
                field,
                format!("provider `{name}` is not defined in crier.yaml ({hint})"),
            );
        }
        Some(p) if !p.carries(channel) => report.error(
            field,
            format!(
                "provider `{name}` (type {}) cannot send {channel} messages",
                p.type_name()
            ),
        ),
        Some(_) => {}
    }
}

/// Parses an IANA zone name, reporting an unknown one with a suggestion.
pub fn parse_timezone(name: &str, field: &str, report: &mut FileReport) -> Option<chrono_tz::Tz> {
    match name.parse::<chrono_tz::Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
            let hint = match diag::suggest(name, names) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "expected an IANA zone such as `Africa/Johannesburg`".into(),
            };
            report.error(field, format!("unknown time zone `{name}` ({hint})"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Diagnostics> {
        let vars = |name: &str| (name == "BULKSMS_SECRET").then(|| "tok-secret-123".to_string());
        Config::parse(Path::new("crier.yaml"), text, &vars)
    }

    #[test]
    fn empty_config_is_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.default_region, "ZA");
        assert_eq!(c.store.cache_mb, 8);
        assert_eq!(c.channels.sms, "outbox");
        assert!(matches!(c.providers["outbox"], ProviderConfig::File(_)));
    }

    #[test]
    fn cluster_timing_defaults_and_reads_durations() {
        let c = parse("").unwrap();
        assert_eq!(c.cluster.heartbeat, std::time::Duration::from_secs(2));
        assert_eq!(c.cluster.lease, std::time::Duration::from_secs(10));
        let c = parse("cluster:\n  heartbeat: 200ms\n  lease: 1s\n").unwrap();
        assert_eq!(c.cluster.heartbeat, std::time::Duration::from_millis(200));
        assert_eq!(c.cluster.lease, std::time::Duration::from_secs(1));
    }

    #[test]
    fn rejects_a_lease_shorter_than_three_heartbeats_and_bad_durations() {
        let errors = parse("cluster:\n  heartbeat: 2s\n  lease: 5s\n")
            .unwrap_err()
            .to_string();
        assert!(
            errors.starts_with("crier.yaml:3:10: cluster.lease: the lease (5s) must be at least 3 heartbeats (2s each)"),
            "{errors}"
        );
        // Only the heartbeat written: the default lease is too short for it.
        let errors = parse("cluster:\n  heartbeat: 4s\n")
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("cluster.heartbeat: the lease (10s)"),
            "{errors}"
        );
        let errors = parse("cluster:\n  heartbeat: often\n  lease: 0ms\n")
            .unwrap_err()
            .to_string();
        let lines: Vec<&str> = errors.lines().collect();
        assert_eq!(lines.len(), 2, "{errors}");
        assert!(
            lines[0].contains("cluster.heartbeat: `often` is not a duration (e.g. `2s`, `500ms`)"),
            "{errors}"
        );
        assert!(
            lines[1].contains("cluster.lease: `0ms` is too short"),
            "{errors}"
        );
        let errors = parse("cluster:\n  leas: 10s\n").unwrap_err().to_string();
        assert!(errors.contains("cluster.leas"), "{errors}");
    }

    #[test]
    fn reports_every_problem_with_its_position() {
        let text = "default_region: XX\ntimezone: Africa/Johanesburg\nstore:\n  cache_mb: 0\nchannels:\n  sms: bulksm\n";
        let errors = parse(text).unwrap_err().to_string();
        let lines: Vec<&str> = errors.lines().collect();
        assert_eq!(lines.len(), 4, "{errors}");
        assert!(lines[0].starts_with("crier.yaml:1:17: default_region: `XX` is not an ISO 3166"));
        assert!(lines[1].contains("crier.yaml:2:11: timezone: unknown time zone `Africa/Johanesburg` (did you mean `Africa/Johannesburg`?)"), "{}", lines[1]);
        assert!(lines[2].starts_with("crier.yaml:4:13: store.cache_mb: `0` is out of range"));
        assert!(lines[3].starts_with("crier.yaml:6:8: channels.sms: provider `bulksm` is not defined in crier.yaml (did you mean `outbox`?)") || lines[3].contains("channels.sms: provider `bulksm` is not defined"), "{}", lines[3]);
    }

    #[test]
    fn unknown_key_gets_a_suggestion() {
        let errors = parse("data_dri: x\n").unwrap_err().to_string();
        assert_eq!(
            errors,
            "crier.yaml:1:1: data_dri: unknown field `data_dri` (did you mean `data_dir`?)"
        );
    }

    #[test]
    fn an_unset_secret_is_valid_shape_and_an_error_where_it_is_used() {
        let text = "providers:\n  sms:\n    type: bulksms\n    token_id: abc\n    token_secret: ${NOPE}\n  other:\n    type: clickatell\n    api_key: k\n";
        let config = parse(text).unwrap();
        assert_eq!(config.unset_secrets.len(), 1);
        assert_eq!(config.unset_secrets[0].var, "NOPE");
        assert_eq!(
            config
                .require_provider_secrets(["sms"])
                .unwrap_err()
                .to_string(),
            "crier.yaml:5:19: providers.sms.token_secret: environment variable `NOPE` is not set (this command uses the credential: export it)"
        );
        // Another provider's credentials are all there.
        assert!(config.require_provider_secrets(["other", "outbox"]).is_ok());
    }

    #[test]
    fn an_unset_variable_outside_a_secret_is_an_error() {
        let text = "providers:\n  sms:\n    type: bulksms\n    token_id: abc\n    token_secret: s\n    base_url: ${BULKSMS_URL}\n    limits: { rate: \"${RATE}\" }\n";
        let errors = parse(text).unwrap_err().to_string();
        assert_eq!(
            errors,
            "crier.yaml:6:15: providers.sms.base_url: environment variable `BULKSMS_URL` is not set (set it, or write `${BULKSMS_URL:-default}`)\n\
             crier.yaml:7:21: providers.sms.limits.rate: expected N/s, N/min or N/h (e.g. `10/s`), got `${RATE}`"
        );
    }

    #[test]
    fn interpolated_secrets_are_redacted_when_shown() {
        let text = "providers:\n  sms:\n    type: bulksms\n    token_id: abc\n    token_secret: ${BULKSMS_SECRET}\nchannels:\n  sms: sms\n";
        let c = parse(text).unwrap();
        match &c.providers["sms"] {
            ProviderConfig::Bulksms(b) => assert_eq!(b.token_secret.expose(), "tok-secret-123"),
            other => panic!("{other:?}"),
        }
        let shown = serde_yaml::to_string(&c).unwrap();
        assert!(!shown.contains("tok-secret-123"), "{shown}");
        assert!(shown.contains("token_secret: <redacted>"), "{shown}");
    }

    #[test]
    fn store_url_from_the_environment_is_shown_without_its_password() {
        let vars = |name: &str| {
            (name == "DATABASE_URL").then(|| "postgres://crier:pw-123@db:5432/mail".to_string())
        };
        let text = "store:\n  backend: postgres\n  url: ${DATABASE_URL}\n";
        let c = Config::parse(Path::new("crier.yaml"), text, &vars).unwrap();
        let settings = c.store_config().postgres.expect("postgres settings");
        assert_eq!(
            settings.url.expose(),
            "postgres://crier:pw-123@db:5432/mail"
        );
        assert_eq!((settings.pool_size, settings.schema.as_str()), (8, "crier"));
        let shown = serde_yaml::to_string(&c).unwrap();
        assert!(
            shown.contains("url: postgres://crier:<redacted>@db:5432/mail"),
            "{shown}"
        );
        assert!(!shown.contains("pw-123"), "{shown}");
        // Unset, it is a credential still to come: valid shape, shown as such.
        let c = parse(text).unwrap();
        assert_eq!(c.unset_secrets[0].var, "DATABASE_URL");
        let shown = serde_yaml::to_string(&c).unwrap();
        assert!(shown.contains("url: '<unset: DATABASE_URL>'"), "{shown}");
    }

    #[test]
    fn unsubscribe_takes_the_server_url_and_never_shows_its_secret() {
        let text = "server:\n  public_url: https://crier.example.net/\nemail:\n  unsubscribe:\n    secret: an-unsubscribe-key-of-32-characters\n";
        let c = parse(text).unwrap();
        let unsubscribe = c.email.unsubscribe.as_ref().unwrap();
        assert_eq!(unsubscribe.public_url, "https://crier.example.net");
        assert!(!c.email.transactional);
        let shown = serde_yaml::to_string(&c).unwrap();
        assert!(!shown.contains("an-unsubscribe-key"), "{shown}");
        assert!(shown.contains("secret: <redacted>"), "{shown}");
    }

    #[test]
    fn channel_provider_must_carry_the_channel() {
        let text = "providers:\n  mail:\n    type: smtp\n    host: localhost\n    from: a@b.example\nchannels:\n  sms: mail\n";
        let errors = parse(text).unwrap_err().to_string();
        assert!(
            errors.contains("channels.sms: provider `mail` (type smtp) cannot send sms messages"),
            "{errors}"
        );
    }

    #[test]
    fn unknown_provider_type_lists_the_types() {
        let errors = parse("providers:\n  x:\n    type: bulkmsm\n")
            .unwrap_err()
            .to_string();
        assert!(errors.contains("did you mean `bulksms`?"), "{errors}");
    }
}
