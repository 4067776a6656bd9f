//! Job files: who, how, what and when, as admins keep them in git.
//!
//! [`RawJob`] is the YAML as written (unknown keys are errors, every field documented:
//! these comments are the user's reference and feed `crier schema`). [`validate`] turns it
//! into a [`Job`], the only form the engine accepts, checking everything that can be
//! checked without the network or the store and collecting every problem with its line
//! and column, so `crier validate` in an admin's CI reports a whole review's worth of
//! mistakes at once.

pub mod schedule;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{self, Config, check_provider_ref, parse_timezone};
use crate::diag::{Diagnostic, Diagnostics, FileReport};
use crate::recipients::RecipientKind;
use crate::recipients::filter::{Filter, Where};
use crate::render::{sms, template};
use crate::script::{ScriptPaths, Scripts};
use crate::throttle::Rate;
use schedule::{Day, Misfire, Overlap, Schedule, When, Window};

/// A channel a message travels on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
    Portal,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Sms, Channel::Email, Channel::Portal];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Portal => "portal",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splynx's *Send to*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SendTo {
    #[serde(rename = "sms")]
    Sms,
    #[serde(rename = "email")]
    Email,
    #[serde(rename = "portal")]
    Portal,
    #[serde(rename = "portal+email")]
    PortalEmail,
}

impl SendTo {
    pub fn channels(self) -> &'static [Channel] {
        match self {
            SendTo::Sms => &[Channel::Sms],
            SendTo::Email => &[Channel::Email],
            SendTo::Portal => &[Channel::Portal],
            SendTo::PortalEmail => &[Channel::Portal, Channel::Email],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SendTo::Sms => "sms",
            SendTo::Email => "email",
            SendTo::Portal => "portal",
            SendTo::PortalEmail => "portal+email",
        }
    }
}

/// Financial documents an email may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Invoices,
    ProformaInvoices,
    CreditNotes,
    Payments,
}

/// A job file as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "crier job")]
pub struct RawJob {
    /// Unique name of the job; defaults to the file's name without `.yaml`.
    #[serde(default)]
    pub name: Option<String>,
    /// What the job is for, for people reading the list of jobs.
    #[serde(default)]
    pub description: Option<String>,
    /// A disabled job is validated but never scheduled (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// When the job fires. Without it the job runs only on demand (`crier send`).
    #[serde(default)]
    pub schedule: Option<RawSchedule>,
    /// Who receives the message.
    pub recipients: RawRecipients,
    /// The channel: sms, email, portal or portal+email.
    pub send_to: SendTo,
    /// Template file (minijinja), relative to this job file, or `stored:NAME` for a
    /// template saved with `crier templates save`. Give `template` or `message`.
    #[serde(default)]
    pub template: Option<String>,
    /// The message text itself (a minijinja template). Give `template` or `message`.
    #[serde(default)]
    pub message: Option<String>,
    /// Email only: an HTML alternative of the text, a minijinja file (relative to the job
    /// file) whose values are HTML-escaped. Mail clients show it; the text stays for the
    /// rest and for the history.
    #[serde(default)]
    pub html_template: Option<String>,
    /// Email subject (and portal message title).
    #[serde(default)]
    pub subject: Option<String>,
    /// Financial documents to attach to an email: invoices, proforma_invoices,
    /// credit_notes, payments. Not possible for SMS.
    #[serde(default)]
    pub attach: Vec<DocumentKind>,
    /// Provider name from crier.yaml; default: the channel's provider in `channels:`.
    #[serde(default)]
    pub provider: Option<String>,
    /// Most messages this job sends per second, minute or hour: `10/s`, `600/min`.
    #[serde(default)]
    pub rate: Option<String>,
    /// SMS settings.
    #[serde(default)]
    pub sms: Option<SmsSettings>,
    /// Email settings.
    #[serde(default)]
    pub email: Option<EmailSettings>,
    /// How long a message may wait for its provider (rate limits, retries) before it
    /// gives up as `expired`, e.g. `6h`, `2d` (Splynx's "days until expiration";
    /// default `1d`).
    #[serde(default)]
    pub expire_after: Option<String>,
    /// Refuse to start when a provider's balance (`crier providers check`) is below this.
    #[serde(default)]
    pub min_balance: Option<f64>,
    /// Rhai scripts for what YAML cannot say: `filter`, `vars`, `route` (each a script
    /// file defining the function of that name) and `helpers` (files whose functions
    /// templates may call). Paths start with `scripts/`, relative to the project.
    #[serde(default)]
    pub scripts: Option<ScriptPaths>,
}

/// `sms:` settings of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmsSettings {
    /// Most parts one message may cost; a longer message fails with reason `too_long`
    /// (and the job fails validation when its text alone is longer).
    #[serde(default)]
    pub max_parts: Option<u32>,
    /// Replace typographic quotes, dashes, ellipses and the like with their GSM-7
    /// equivalents, so one curly apostrophe does not turn the message into UCS-2.
    #[serde(default)]
    pub gsm_safe: bool,
}

/// `email:` settings of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// Service mail (a payment reminder, a maintenance notice): no unsubscribe headers
    /// and no `{{ unsubscribe_url }}`. Default: `email.transactional` of crier.yaml, else
    /// false (the job offers one-click unsubscribe).
    #[serde(default)]
    pub transactional: Option<bool>,
}

/// `schedule:` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// Crontab expression: 5 fields (`0 9 1 * *`), 6 with seconds first, or an alias
    /// (`@daily`, `@weekly`, `@monthly`, `@yearly`, `@hourly`).
    #[serde(default)]
    pub cron: Option<String>,
    /// One-shot local date and time instead of `cron`: `2026-12-01T09:00`.
    #[serde(default)]
    pub at: Option<String>,
    /// IANA time zone the schedule is read in (default: crier.yaml's `timezone`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// If crier was down at a fire time: `run` (one catch-up within `grace`) or `skip`.
    #[serde(default)]
    pub misfire: Option<Misfire>,
    /// How late a catch-up run may still start, e.g. `1h` (default).
    #[serde(default)]
    pub grace: Option<String>,
    /// If the previous run is still going: `skip` (default) or `queue`.
    #[serde(default)]
    pub overlap: Option<Overlap>,
    /// Hours messages may go out in; outside them a run pauses.
    #[serde(default)]
    pub window: Option<RawWindow>,
}

/// `schedule.window:` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Opening time, `08:00` (seconds allowed: `08:00:30`).
    pub from: String,
    /// Closing time, `20:00`.
    pub to: String,
    /// Days the window opens (default every day): mon, tue, wed, thu, fri, sat, sun.
    #[serde(default)]
    pub days: Vec<Day>,
    /// Read the window in each recipient's own `timezone` where known.
    #[serde(default)]
    pub per_recipient: bool,
}

/// `recipients:` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRecipients {
    /// customer (default) or lead.
    #[serde(default)]
    pub kind: Option<RecipientKind>,
    /// `store` (default: recipients imported with `crier import`) or a CSV file path,
    /// relative to this job file.
    #[serde(default)]
    pub source: Option<String>,
    /// Filters; every key optional, lists mean any-of, all keys must match.
    #[serde(default, rename = "where")]
    pub filter: Where,
}

/// Where a job's recipients come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Store,
    Csv(PathBuf),
}

/// The message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Inline(String),
    File(PathBuf),
    Stored(String),
}

/// Who a job reaches.
#[derive(Debug, Clone)]
pub struct RecipientSpec {
    pub kind: RecipientKind,
    pub source: Source,
    pub filter: Filter,
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub file: PathBuf,
    pub schedule: Option<Schedule>,
    pub recipients: RecipientSpec,
    pub send_to: SendTo,
    pub body: Body,
    pub subject: Option<String>,
    /// The HTML alternative of an email (`html_template`).
    pub html: Option<PathBuf>,
    pub attach: Vec<DocumentKind>,
    pub provider: Option<String>,
    pub rate: Option<Rate>,
    pub sms: SmsSettings,
    /// Its emails carry one-click unsubscribe links (an email job that is not
    /// transactional).
    pub unsubscribe: bool,
    pub expire_after: std::time::Duration,
    pub min_balance: Option<f64>,
    /// The job's scripts, compiled once, shared by every thread of a run.
    pub scripts: Option<Arc<Scripts>>,
}

/// Default of a job's `expire_after`.
pub const DEFAULT_EXPIRE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Reads and validates one job file.
pub fn load(
    path: &Path,
    config: &Config,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Job, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(path, &text, config, lookup)
}

/// Validates job text as if it were the file `path` (which places the files it names).
pub fn parse(
    path: &Path,
    text: &str,
    config: &Config,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Job, Diagnostics> {
    let mut doc = config::parse_document::<RawJob>(path, text, lookup)?;
    let Some(raw) = doc.raw.take() else {
        return Err(doc.problems(Diagnostics::default()));
    };
    let mut report = FileReport::new(path, &doc.map);
    let job = validate(raw, path, config, &mut report);
    let problems = doc.problems(report.diags);
    match job {
        Some(job) if problems.is_empty() => Ok(job),
        _ => Err(problems),
    }
}

/// The job files named by `paths`: files as given, directories' `*.yaml`/`*.yml`.
pub fn job_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Diagnostics> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| read_error(path, e))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            found.sort();
            files.extend(found);
        } else if path.exists() {
            files.push(path.clone());
        } else {
            return Err(read_error(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
    }
    Ok(files)
}

fn read_error(path: &Path, e: std::io::Error) -> Diagnostics {
    Diagnostics(vec![Diagnostic {
        file: path.to_path_buf(),
        line: 0,
        col: 0,
        field: String::new(),
        message: format!("cannot read: {e}"),
    }])
}

/// Loads every job in `files`, collecting every error of every file, and checks that job
/// names are unique.
pub fn load_all(
    files: &[PathBuf],
    config: &Config,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (Vec<Job>, Diagnostics) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut diags = Diagnostics::default();
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in files {
        match load(file, config, lookup) {
            Ok(job) => {
                if let Some(first) = names.get(&job.name) {
                    let text = std::fs::read_to_string(file).unwrap_or_default();
                    let map = crate::diag::SourceMap::new(&text);
                    let mut report = FileReport::new(file, &map);
                    report.error(
                        "name",
                        format!(
                            "job name `{}` is already used by {} (names must be unique)",
                            job.name,
                            first.display()
                        ),
                    );
                    diags.extend(report.diags);
                } else {
                    names.insert(job.name.clone(), file.clone());
                    jobs.push(job);
                }
            }
            Err(d) => diags.extend(d),
        }
    }
    (jobs, diags)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("job")
        .to_string()
}

/// Checks a raw job; `None` when it is too broken to describe.
pub fn validate(raw: RawJob, path: &Path, config: &Config, report: &mut FileReport) -> Option<Job> {
    let dir = path.parent().unwrap_or(Path::new("."));

    let name = raw.name.clone().unwrap_or_else(|| stem(path));
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        report.error(
            "name",
            format!("`{name}` is not a job name (letters, digits, -, _ and .)"),
        );
    }

    let channels = raw.send_to.channels();
    let has_email = channels.contains(&Channel::Email);

    // Scripts first: their helpers are functions the templates may call.
    let scripts = raw
        .scripts
        .as_ref()
        .and_then(|paths| validate_scripts(paths, path, channels, config, report));
    let helpers: Vec<String> = scripts
        .as_ref()
        .map(|s| s.helper_names().map(String::from).collect())
        .unwrap_or_default();

    // What: exactly one of template and message.
    let body = match (&raw.template, &raw.message) {
        (Some(_), Some(_)) => {
            report.error("message", "give `message` or `template`, not both");
            None
        }
        (None, None) => {
            report.error(
                "send_to",
                "the job has no text: add `template:` (a file) or `message:` (inline)",
            );
            None
        }
        (None, Some(m)) => {
            if m.trim().is_empty() {
                report.error("message", "must not be empty");
            }
            check_inline_template("message", m, &helpers, report);
            Some(Body::Inline(m.clone()))
        }
        (Some(t), None) => template_body(t, dir, raw.send_to, &helpers, report),
    };

    if !raw.attach.is_empty() && !has_email {
        let what = match raw.send_to {
            SendTo::Sms => "SMS",
            _ => "portal messages",
        };
        report.error(
            "attach",
            format!("financial documents cannot be attached to {what} (only to email)"),
        );
    }
    if raw.subject.is_some() && raw.send_to == SendTo::Sms {
        report.error(
            "subject",
            "an SMS has no subject (`subject` is for email and portal titles)",
        );
    }
    if has_email && raw.subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
        report.error("subject", "an email job needs a `subject`");
    }
    if let Some(subject) = &raw.subject {
        check_inline_template("subject", subject, &helpers, report);
    }
    let html = raw.html_template.as_deref().and_then(|t| {
        if !has_email {
            report.error("html_template", "an HTML part is for email only");
            return None;
        }
        template_file("html_template", t, dir, &helpers, report)
    });

    // How: the provider must exist and carry the channel it is used for.
    if let Some(provider) = &raw.provider {
        let channel = if has_email {
            Channel::Email
        } else {
            channels[0]
        };
        check_provider_ref(&config.providers, provider, channel, "provider", report);
    }
    let sms = raw.sms.clone().unwrap_or_default();
    if raw.sms.is_some() && !channels.contains(&Channel::Sms) {
        report.error("sms", "`sms` settings need `send_to: sms`");
    }
    if sms.max_parts == Some(0) {
        report.error("sms.max_parts", "must be at least 1");
    }
    // (A max_parts of 0 is already wrong; measuring the text against it says nothing.)
    if let (Some(max @ 1..), Some(Body::Inline(text))) = (sms.max_parts, &body)
        && channels.contains(&Channel::Sms)
    {
        check_template_length(text, max, &sms, report);
    }
    if let (Some(max @ 1..), Some(Body::File(path))) = (sms.max_parts, &body)
        && channels.contains(&Channel::Sms)
        && let Ok(text) = std::fs::read_to_string(path)
    {
        check_template_length(&text, max, &sms, report);
    }
    let expire_after = match raw.expire_after.as_deref().map(humantime::parse_duration) {
        None => DEFAULT_EXPIRE_AFTER,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => {
            report.error(
                "expire_after",
                format!(
                    "`{}` is not a duration above zero (e.g. `6h`, `2d`)",
                    raw.expire_after.as_deref().unwrap_or_default()
                ),
            );
            DEFAULT_EXPIRE_AFTER
        }
    };
    if let Some(min) = raw.min_balance
        && !(min.is_finite() && min >= 0.0)
    {
        report.error(
            "min_balance",
            format!("`{min}` must be a number of 0 or more"),
        );
    }
    let rate = raw.rate.as_deref().and_then(|r| match r.parse::<Rate>() {
        Ok(rate) => Some(rate),
        Err(e) => {
            report.error("rate", e);
            None
        }
    });

    let transactional = raw
        .email
        .as_ref()
        .and_then(|e| e.transactional)
        .unwrap_or(config.email.transactional);
    if raw.email.is_some() && !has_email {
        report.error(
            "email",
            "`email` settings need `send_to: email` or `portal+email`",
        );
    }
    let unsubscribe = has_email && !transactional;
    let has_email_section = raw.email.is_some();
    let offers_link = unsubscribe && config.email.unsubscribe.is_some();
    if !offers_link {
        let sources = [
            ("template", body.as_ref().and_then(body_text)),
            (
                "html_template",
                html.as_ref().and_then(|p| std::fs::read_to_string(p).ok()),
            ),
        ];
        for (field, text) in sources {
            if text.is_some_and(|t| template::uses(&t, "unsubscribe_url")) {
                let why = if !has_email {
                    "only email has an unsubscribe link"
                } else if transactional {
                    "a transactional job has no unsubscribe link"
                } else {
                    "crier.yaml has no `email.unsubscribe`, so there is no link"
                };
                let field = match (field, &raw.message) {
                    ("template", Some(_)) => "message",
                    (f, _) => f,
                };
                report.error(field, format!("uses `unsubscribe_url`, but {why}"));
            }
        }
    }

    // Who.
    let kind = raw.recipients.kind.unwrap_or(RecipientKind::Customer);
    let source = match raw.recipients.source.as_deref() {
        None | Some("store") => Source::Store,
        Some(csv) => {
            let file = dir.join(csv);
            if !file.is_file() {
                report.error(
                    "recipients.source",
                    format!(
                        "CSV file `{}` not found (paths are relative to the job file; or write `store`)",
                        file.display()
                    ),
                );
            }
            Source::Csv(file)
        }
    };
    let filter = match Filter::compile(&raw.recipients.filter, config.region) {
        Ok(f) => Some(f),
        Err(errors) => {
            for e in errors {
                report.error(&format!("recipients.where.{}", e.field), e.message);
            }
            None
        }
    };

    // When.
    let schedule = raw
        .schedule
        .and_then(|s| validate_schedule(s, config, report));

    Some(Job {
        name,
        description: raw.description,
        enabled: raw.enabled.unwrap_or(true),
        file: path.to_path_buf(),
        schedule,
        recipients: RecipientSpec {
            kind,
            source,
            filter: filter?,
        },
        send_to: raw.send_to,
        body: body?,
        subject: raw.subject,
        html,
        attach: raw.attach,
        provider: raw.provider,
        rate,
        expire_after,
        min_balance: raw.min_balance,
        sms,
        unsubscribe,
        scripts,
    })
    .inspect(|job| {
        if unsubscribe && config.email.unsubscribe.is_none() {
            check_unsubscribe_configured(job, has_email_section, config, report);
        }
    })
}

/// The text of an inline or file body (a stored template is checked when it is saved).
fn body_text(body: &Body) -> Option<String> {
    match body {
        Body::Inline(text) => Some(text.clone()),
        Body::File(path) => std::fs::read_to_string(path).ok(),
        Body::Stored(_) => None,
    }
}

/// A job whose emails may leave through SMTP or an email API and offer unsubscribe needs
/// `email.unsubscribe` in crier.yaml: mail without its links would go out otherwise. (The
/// file outbox is no mailbox: without the section, its email lines carry no links.)
fn check_unsubscribe_configured(
    job: &Job,
    has_email_section: bool,
    config: &Config,
    report: &mut FileReport,
) {
    let mailers: Vec<String> = crate::engine::send::providers_of(job, config)
        .into_iter()
        .filter(|name| {
            use crate::provider::ProviderConfig as P;
            matches!(
                config.providers.get(name),
                Some(P::Smtp(_) | P::Sendgrid(_) | P::Mailgun(_) | P::Ses(_))
            )
        })
        .collect();
    if let Some(first) = mailers.first() {
        report.error(
            if has_email_section { "email" } else { "send_to" },
            format!(
                "email through provider `{first}` offers one-click unsubscribe, but crier.yaml has no `email.unsubscribe` (give it `secret` and `public_url`), or mark service mail `email: {{ transactional: true }}`"
            ),
        );
    }
}

fn template_body(
    t: &str,
    dir: &Path,
    send_to: SendTo,
    helpers: &[String],
    report: &mut FileReport,
) -> Option<Body> {
    if let Some(name) = t.strip_prefix("stored:") {
        if name.trim().is_empty() {
            report.error(
                "template",
                "`stored:` needs a template name, e.g. `stored:reminder`",
            );
        }
        return Some(Body::Stored(name.trim().to_string()));
    }
    let file = template_file("template", t, dir, helpers, report)?;
    // A template named `x.sms.j2` is for SMS; using it for email is a mistake.
    let file_name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    for channel in Channel::ALL {
        let marker = format!(".{channel}.");
        if file_name.contains(&marker) && !send_to.channels().contains(&channel) {
            report.error(
                "template",
                format!(
                    "`{t}` is {} {channel} template but the job sends to {}",
                    if channel == Channel::Email { "an" } else { "a" },
                    send_to.as_str()
                ),
            );
        }
    }
    Some(Body::File(file))
}

/// Finds and checks the template file `t` (relative to `dir`) of `field`.
fn template_file(
    field: &str,
    t: &str,
    dir: &Path,
    helpers: &[String],
    report: &mut FileReport,
) -> Option<PathBuf> {
    let file = dir.join(t);
    if !file.is_file() {
        report.error(
            field,
            format!(
                "template file `{}` not found (paths are relative to the job file)",
                file.display()
            ),
        );
        return None;
    }
    match std::fs::read_to_string(&file) {
        Ok(source) => {
            if let Err(errors) = template::check_with(&source, helpers) {
                for e in errors {
                    report.diags.0.push(Diagnostic {
                        file: file.clone(),
                        line: e.line,
                        col: e.col,
                        field: field.into(),
                        message: e.message,
                    });
                }
            }
        }
        Err(e) => report.error(field, format!("cannot read `{}`: {e}", file.display())),
    }
    Some(file)
}

/// Reports a template whose fixed text alone (without what `{{ … }}` and `{% … %}` add)
/// is already over `max` SMS parts.
fn check_template_length(text: &str, max: u32, sms: &SmsSettings, report: &mut FileReport) {
    let mut fixed = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(['{']) {
        fixed.push_str(&rest[..start]);
        let tail = &rest[start..];
        let close = if tail.starts_with("{{") {
            "}}"
        } else if tail.starts_with("{%") {
            "%}"
        } else if tail.starts_with("{#") {
            "#}"
        } else {
            fixed.push('{');
            rest = &tail[1..];
            continue;
        };
        match tail.find(close) {
            Some(end) => rest = &tail[end + 2..],
            None => break,
        }
    }
    fixed.push_str(rest);
    let fixed = if sms.gsm_safe {
        sms::gsm_safe(fixed.trim())
    } else {
        fixed.trim().to_string()
    };
    let cost = sms::count(&fixed);
    if cost.parts > max as usize {
        report.error(
            "sms.max_parts",
            format!(
                "the text alone is {} {} parts ({} {}), over max_parts {max}",
                cost.parts,
                cost.encoding.as_str(),
                cost.units,
                if cost.encoding == sms::Encoding::Gsm7 {
                    "septets"
                } else {
                    "UCS-2 units"
                },
            ),
        );
    }
}

/// Checks a template written in the job file itself; positions point into the job file
/// (with the line inside the template when the value spans several lines).
fn check_inline_template(field: &str, source: &str, helpers: &[String], report: &mut FileReport) {
    if let Err(errors) = template::check_with(source, helpers) {
        for e in errors {
            let place = if source.contains('\n') && e.line > 0 {
                format!(" (template line {}, column {})", e.line, e.col)
            } else {
                String::new()
            };
            report.error(field, format!("{}{place}", e.message));
        }
    }
}

/// Compiles the job's scripts, reporting every problem with its file, line and column,
/// and checks the provider names `route` returns literally.
fn validate_scripts(
    paths: &ScriptPaths,
    job_file: &Path,
    channels: &[Channel],
    config: &Config,
    report: &mut FileReport,
) -> Option<Arc<Scripts>> {
    let (scripts, errors) = match Scripts::load(paths, job_file, crate::script::Limits::default()) {
        Ok(None) => return None,
        Ok(Some(scripts)) => (scripts, Vec::new()),
        Err(e) => (*e.partial, e.errors),
    };
    for e in errors {
        if e.line == 0 {
            report.error(&e.field, e.message);
        } else {
            report.diags.0.push(Diagnostic {
                file: e.file,
                line: e.line,
                col: e.col,
                field: e.field,
                message: e.message,
            });
        }
    }
    for (name, line, col) in scripts.route_literals() {
        let problem = match config.providers.get(name) {
            None => Some(format!(
                "route returns provider `{name}`, which is not defined in crier.yaml{}",
                match crate::diag::suggest(name, config.providers.keys().map(String::as_str)) {
                    Some(s) => format!(" (did you mean `{s}`?)"),
                    None => format!(
                        " (defined: {})",
                        config
                            .providers
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            )),
            Some(p) if !channels.iter().any(|c| p.carries(*c)) => Some(format!(
                "route returns provider `{name}` (type {}), which cannot carry {}",
                p.type_name(),
                channels
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
            Some(_) => None,
        };
        if let Some(message) = problem {
            let file = crate::script::project_dir(job_file)
                .map(|p| crate::script::shown(&p.join(scripts.route_script().unwrap_or_default())))
                .unwrap_or_default();
            report.diags.0.push(Diagnostic {
                file,
                line: *line,
                col: *col,
                field: "scripts.route".into(),
                message,
            });
        }
    }
    // With errors the job is invalid anyway; what did compile still serves the template
    // checks (helper names).
    Some(Arc::new(scripts))
}

fn validate_schedule(
    raw: RawSchedule,
    config: &Config,
    report: &mut FileReport,
) -> Option<Schedule> {
    let tz = match &raw.timezone {
        Some(name) => parse_timezone(name, "schedule.timezone", report),
        None => Some(config.tz),
    };
    let when = match (&raw.cron, &raw.at) {
        (Some(_), Some(_)) => {
            report.error("schedule.at", "give `cron` or `at`, not both");
            None
        }
        (None, None) => {
            report.error(
                "schedule",
                "needs `cron` (recurring) or `at` (once); remove `schedule` to run only on demand",
            );
            None
        }
        (Some(expr), None) => match schedule::parse_cron(expr) {
            Ok(cron) => Some(When::Cron {
                expr: expr.trim().to_string(),
                cron: Box::new(cron),
            }),
            Err(e) => {
                report.error("schedule.cron", e);
                None
            }
        },
        (None, Some(at)) => match schedule::parse_at(at) {
            Ok(t) => Some(When::At(t)),
            Err(e) => {
                report.error("schedule.at", e);
                None
            }
        },
    };
    let grace = match &raw.grace {
        None => Some(std::time::Duration::from_secs(3600)),
        Some(g) => match humantime::parse_duration(g) {
            Ok(d) => Some(d),
            Err(_) => {
                report.error(
                    "schedule.grace",
                    format!("`{g}` is not a duration (e.g. `30m`, `1h`)"),
                );
                None
            }
        },
    };
    let window = match raw.window {
        None => Some(None),
        Some(w) => {
            let from = schedule::parse_time_of_day(&w.from)
                .map_err(|e| report.error("schedule.window.from", e))
                .ok();
            let to = schedule::parse_time_of_day(&w.to)
                .map_err(|e| report.error("schedule.window.to", e))
                .ok();
            match (from, to) {
                (Some(from), Some(to)) if from == to => {
                    report.error(
                        "schedule.window.to",
                        "the window opens and closes at the same time",
                    );
                    None
                }
                (Some(from), Some(to)) => Some(Some(Window {
                    from,
                    to,
                    days: w.days,
                    per_recipient: w.per_recipient,
                })),
                _ => None,
            }
        }
    };
    Some(Schedule {
        when: when?,
        tz: tz?,
        misfire: raw.misfire.unwrap_or_default(),
        grace: grace?,
        overlap: raw.overlap.unwrap_or_default(),
        window: window?,
    })
}
