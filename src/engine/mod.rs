//! The engine: the one module that knows every stage a message passes.
//!
//! The planning half lives here: recipients → the job's `filter` script → reachability
//! (address per channel, duplicates) → `vars` script → render → SMS cost → `route`
//! script. [`Planner`] turns each recipient into [`Planned`] messages, one per channel of
//! the job, in a stream; `crier preview` prints them, and [`send`] writes them to the
//! ledger and hands them to providers, failing over along the route.

pub mod preview;
pub mod running;
pub mod send;

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use chrono::Utc;

use crate::config::Config;
use crate::history::RunId;
use crate::job::{Body, Channel, Job};
use crate::provider::ProviderConfig;
use crate::recipients::Recipient;
use crate::recipients::optout::OptOuts;
use crate::recipients::unsubscribe::{Links, Ticket, Unsubscriber};
use crate::render::sms;
use crate::render::stored::Templates;
use crate::render::template::{Context, Template};
use crate::script::{self, Route, Scripts};
use crate::store::StoreError;

/// Why a recipient gets no message on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The phone on file is not a valid number.
    InvalidPhone,
    /// No phone on file.
    NoPhone,
    /// No email address on file.
    NoEmail,
    /// Another recipient of this run already has this address.
    Duplicate,
    /// The address is on the opt-out list.
    OptedOut,
    /// The template could not be rendered for this recipient.
    RenderFailed,
    /// The rendered SMS costs more parts than the job's `sms.max_parts`.
    TooLong,
    /// The job's `route` script returned `()` for this message.
    RoutedOut,
    /// A script failed for this message (an error, or a sandbox limit): the message is
    /// recorded `failed` with the script's error.
    ScriptFailed,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InvalidPhone => "invalid_phone",
            SkipReason::NoPhone => "no_phone",
            SkipReason::NoEmail => "no_email",
            SkipReason::Duplicate => "duplicate",
            SkipReason::OptedOut => "opted_out",
            SkipReason::RenderFailed => "render_failed",
            SkipReason::TooLong => "too_long",
            SkipReason::RoutedOut => "routed_out",
            SkipReason::ScriptFailed => "script_failed",
        }
    }
}

/// One recipient on one channel, ready to plan.
#[derive(Debug, Clone)]
pub struct Planned {
    pub recipient: Recipient,
    pub channel: Channel,
    pub address: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    /// The HTML alternative (email with `html_template`).
    pub html: Option<String>,
    pub encoding: Option<sms::Encoding>,
    pub parts: usize,
    /// `Some` when this message will not be sent, with the detail for people.
    pub skip: Option<(SkipReason, String)>,
    /// The providers the job's `route` script chose, in failover order; empty: the
    /// job's provider for the channel.
    pub route: Vec<String>,
    /// The one-click unsubscribe links (email of a job that offers them).
    pub unsubscribe: Option<Links>,
}

/// Why planning cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read template {path}: {source}")]
    Template {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template {0}: {1}")]
    Compile(String, String),
    #[error("no stored template `{0}` (see `crier templates list`)")]
    NoStored(String),
    #[error("stored template `{0}` is for {1}, but the job sends {2}")]
    StoredChannel(String, Channel, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Turns recipients into planned messages for one job.
pub struct Planner<'a> {
    optouts: Option<OptOuts<'a>>,
    job: Job,
    body: Template,
    subject: Option<Template>,
    html: Option<Template>,
    context: Context,
    /// Addresses already planned, as 64-bit keyed hashes: 8 bytes a recipient instead of
    /// the address (a collision among a million addresses has odds of about 1 in 10^7).
    seen: HashSet<u64>,
    hasher: std::collections::hash_map::RandomState,
    scripts: Option<Arc<Scripts>>,
    providers: BTreeMap<String, ProviderConfig>,
    /// The job's own provider per channel (what `route` sees as `message.provider`).
    defaults: BTreeMap<Channel, String>,
    filtered: u64,
    /// Signs unsubscribe links, for a job that offers them.
    unsubscriber: Option<Unsubscriber>,
    /// The run the links name; `None` in a preview.
    run: Option<RunId>,
}

/// The template text a job uses; `templates` resolves `stored:NAME`.
pub fn body_source(
    job: &Job,
    templates: Option<&Templates>,
) -> Result<(String, String), PlanError> {
    match &job.body {
        Body::Inline(text) => Ok(("message".into(), text.clone())),
        Body::File(path) => std::fs::read_to_string(path)
            .map(|t| (path.display().to_string(), t))
            .map_err(|source| PlanError::Template {
                path: path.display().to_string(),
                source,
            }),
        Body::Stored(name) => {
            let stored = match templates {
                Some(t) => t.get(name)?,
                None => None,
            }
            .ok_or_else(|| PlanError::NoStored(name.clone()))?;
            if !job.send_to.channels().contains(&stored.channel) {
                return Err(PlanError::StoredChannel(
                    name.clone(),
                    stored.channel,
                    job.send_to.as_str().to_string(),
                ));
            }
            Ok((format!("stored:{name}"), stored.body))
        }
    }
}

impl<'a> Planner<'a> {
    /// A planner for `job`; `optouts` is the opt-out list to honour.
    pub fn new(
        job: &Job,
        config: &Config,
        run_id: &str,
        optouts: Option<OptOuts<'a>>,
        templates: Option<&Templates>,
    ) -> Result<Planner<'a>, PlanError> {
        let (name, source) = body_source(job, templates)?;
        let scripts = job.scripts.clone();
        let body = Template::compile_with(&source, scripts.as_ref()).map_err(|e| {
            PlanError::Compile(name.clone(), format!("{}:{}: {}", e.line, e.col, e.message))
        })?;
        let subject = match &job.subject {
            Some(s) => Some(
                Template::compile_with(s, scripts.as_ref())
                    .map_err(|e| PlanError::Compile("subject".into(), e.message))?,
            ),
            None => None,
        };
        let html = match &job.html {
            Some(path) => {
                let name = path.display().to_string();
                let source =
                    std::fs::read_to_string(path).map_err(|source| PlanError::Template {
                        path: name.clone(),
                        source,
                    })?;
                Some(
                    Template::compile_html(&source, scripts.as_ref()).map_err(|e| {
                        PlanError::Compile(name, format!("{}:{}: {}", e.line, e.col, e.message))
                    })?,
                )
            }
            None => None,
        };
        let tz = job.schedule.as_ref().map_or(config.tz, |s| s.tz);
        let context = Context {
            job: [
                ("name".to_string(), job.name.clone()),
                (
                    "description".to_string(),
                    job.description.clone().unwrap_or_default(),
                ),
            ]
            .into(),
            run: [
                ("id".to_string(), run_id.to_string()),
                ("trigger".to_string(), "manual".to_string()),
            ]
            .into(),
            now: Utc::now().with_timezone(&tz).to_rfc3339(),
            vars: Default::default(),
            unsubscribe_url: None,
        };
        let unsubscriber = config
            .email
            .unsubscribe
            .as_ref()
            .filter(|_| job.unsubscribe)
            .map(|u| u.unsubscriber());
        Ok(Planner {
            unsubscriber,
            run: run_id.parse().ok(),
            optouts,
            job: job.clone(),
            body,
            subject,
            html,
            context,
            seen: HashSet::new(),
            hasher: std::collections::hash_map::RandomState::new(),
            scripts,
            providers: config.providers.clone(),
            defaults: job
                .send_to
                .channels()
                .iter()
                .map(|&c| (c, send::provider_name(job, config, c)))
                .collect(),
            filtered: 0,
        })
    }

    /// Marks addresses an interrupted run already holds, so a resumed run still finds
    /// duplicates against them.
    pub fn already_planned<'x>(&mut self, addresses: impl Iterator<Item = (Channel, &'x str)>) {
        for (channel, address) in addresses {
            if channel != Channel::Portal {
                self.seen
                    .insert(self.hasher.hash_one((channel, address.to_lowercase())));
            }
        }
    }

    /// Recipients the job's `filter` script left out so far (not recorded anywhere).
    pub fn filtered(&self) -> u64 {
        self.filtered
    }

    /// Looks up, in one question to the directory, whether the addresses of these
    /// recipients (their phone and email addresses, whichever channel will use them) are
    /// opted out; [`Planner::plan`] on them then needs no lookup of its own.
    pub fn prime(&self, recipients: &[&Recipient]) -> Result<(), StoreError> {
        let Some(list) = &self.optouts else {
            return Ok(());
        };
        let mut addresses = Vec::with_capacity(recipients.len() * 2);
        for r in recipients {
            addresses.extend(r.phone.iter().map(|p| p.to_lowercase()));
            addresses.extend(r.email.iter().map(|e| e.to_lowercase()));
            addresses.extend(r.billing_email.iter().map(|e| e.to_lowercase()));
        }
        list.prime(addresses)
    }

    /// The messages for one recipient: one per channel of the job, none when the job's
    /// `filter` script leaves the recipient out.
    pub fn plan(&mut self, recipient: &Recipient) -> Result<Vec<Planned>, StoreError> {
        let channels = self.job.send_to.channels();
        let Some(scripts) = self.scripts.clone() else {
            return channels
                .iter()
                .map(|&channel| self.plan_channel(recipient, channel, None))
                .collect();
        };
        let customer = script::customer(recipient);
        let prepared = scripts.filter(&customer).and_then(|keep| {
            if keep {
                scripts.vars(&customer).map(Some)
            } else {
                Ok(None)
            }
        });
        match prepared {
            Ok(None) => {
                self.filtered += 1;
                Ok(Vec::new())
            }
            Ok(Some(vars)) => {
                self.context.vars = vars;
                channels
                    .iter()
                    .map(|&channel| {
                        self.plan_channel(recipient, channel, Some((scripts.as_ref(), &customer)))
                    })
                    .collect()
            }
            Err(e) => Ok(channels
                .iter()
                .map(|&channel| Planned {
                    recipient: recipient.clone(),
                    channel,
                    address: None,
                    subject: None,
                    body: String::new(),
                    html: None,
                    encoding: None,
                    parts: 0,
                    skip: Some((SkipReason::ScriptFailed, e.to_string())),
                    route: Vec::new(),
                    unsubscribe: None,
                })
                .collect()),
        }
    }

    /// Asks the job's `route` script where `planned` goes.
    fn route(&self, scripts: &Scripts, customer: &rhai::Dynamic, planned: &mut Planned) {
        if !scripts.has(script::Hook::Route) {
            return;
        }
        let view = script::MessageView {
            channel: planned.channel.as_str(),
            provider: self
                .defaults
                .get(&planned.channel)
                .map_or("", String::as_str),
            address: planned.address.as_deref().unwrap_or_default(),
            subject: planned.subject.as_deref(),
            body: &planned.body,
            encoding: planned.encoding.map(|e| e.as_str()),
            parts: planned.parts,
        };
        let name = scripts.route_script().unwrap_or("route");
        match scripts.route(script::message(&view), customer) {
            Ok(Route::Out) => {
                planned.skip = Some((SkipReason::RoutedOut, format!("{name} returned ()")));
            }
            Ok(Route::To(providers)) => {
                for p in &providers {
                    let problem = match self.providers.get(p) {
                        None => Some(format!("`{p}` is not a provider defined in crier.yaml")),
                        Some(c) if !c.carries(planned.channel) => Some(format!(
                            "provider `{p}` (type {}) cannot carry {}",
                            c.type_name(),
                            planned.channel
                        )),
                        Some(_) => None,
                    };
                    if let Some(problem) = problem {
                        planned.skip = Some((
                            SkipReason::ScriptFailed,
                            format!("{name}: route: {problem}"),
                        ));
                        return;
                    }
                }
                planned.route = providers;
            }
            Err(e) => planned.skip = Some((SkipReason::ScriptFailed, e.to_string())),
        }
    }

    fn plan_channel(
        &mut self,
        r: &Recipient,
        channel: Channel,
        scripts: Option<(&Scripts, &rhai::Dynamic)>,
    ) -> Result<Planned, StoreError> {
        let mut planned = Planned {
            recipient: r.clone(),
            channel,
            address: None,
            subject: None,
            body: String::new(),
            html: None,
            encoding: None,
            parts: 0,
            skip: None,
            route: Vec::new(),
            unsubscribe: None,
        };
        let address = match channel {
            Channel::Sms => match (&r.phone, &r.phone_raw) {
                (Some(p), _) => Ok(p.clone()),
                (None, Some(raw)) => Err((
                    SkipReason::InvalidPhone,
                    format!("`{raw}` is not a valid phone number"),
                )),
                (None, None) => Err((SkipReason::NoPhone, "no phone number on file".to_string())),
            },
            Channel::Email => r
                .email
                .clone()
                .or_else(|| r.billing_email.clone())
                .ok_or((SkipReason::NoEmail, "no email address on file".to_string())),
            Channel::Portal => Ok(r.login.clone().unwrap_or_else(|| r.id.to_string())),
        };
        let address = match address {
            Ok(a) => a,
            Err(skip) => {
                planned.skip = Some(skip);
                return Ok(planned);
            }
        };
        planned.address = Some(address.clone());
        if channel != Channel::Portal
            && !self
                .seen
                .insert(self.hasher.hash_one((channel, address.to_lowercase())))
        {
            planned.skip = Some((
                SkipReason::Duplicate,
                format!("{address} already gets this message"),
            ));
            return Ok(planned);
        }
        if channel != Channel::Portal
            && let Some(list) = &self.optouts
            && list.contains(&address.to_lowercase())?
        {
            planned.skip = Some((SkipReason::OptedOut, format!("{address} opted out")));
            return Ok(planned);
        }
        if channel == Channel::Email
            && let Some(unsubscriber) = &self.unsubscriber
        {
            let links = match self.run {
                Some(run) => unsubscriber.links(&Ticket {
                    run,
                    kind: r.kind,
                    recipient: r.id,
                    address: address.clone(),
                }),
                None => unsubscriber.placeholder(),
            };
            self.context.unsubscribe_url = Some(links.url.clone());
            planned.unsubscribe = Some(links);
        } else {
            // The portal copy of a `portal+email` message has no link of its own.
            self.context.unsubscribe_url = self.unsubscriber.as_ref().map(|_| String::new());
        }
        match self.body.render(r, &self.context) {
            Ok(body) => planned.body = body,
            Err(e) => {
                planned.skip = Some((SkipReason::RenderFailed, e));
                return Ok(planned);
            }
        }
        if channel != Channel::Sms
            && let Some(subject) = &self.subject
        {
            match subject.render(r, &self.context) {
                Ok(s) => planned.subject = Some(s),
                Err(e) => {
                    planned.skip = Some((SkipReason::RenderFailed, format!("subject: {e}")));
                    return Ok(planned);
                }
            }
        }
        if channel == Channel::Email
            && let Some(html) = &self.html
        {
            match html.render(r, &self.context) {
                Ok(h) => planned.html = Some(h),
                Err(e) => {
                    planned.skip = Some((SkipReason::RenderFailed, format!("html: {e}")));
                    return Ok(planned);
                }
            }
        }
        if channel == Channel::Sms {
            if self.job.sms.gsm_safe {
                planned.body = sms::gsm_safe(&planned.body);
            }
            let cost = sms::count(&planned.body);
            planned.encoding = Some(cost.encoding);
            planned.parts = cost.parts;
            if let Some(max) = self.job.sms.max_parts
                && cost.parts > max as usize
            {
                planned.skip = Some((
                    SkipReason::TooLong,
                    format!(
                        "{} parts ({}), over max_parts {max}",
                        cost.parts,
                        cost.encoding.as_str()
                    ),
                ));
                return Ok(planned);
            }
        }
        if let Some((scripts, customer)) = scripts {
            self.route(scripts, customer, &mut planned);
        }
        Ok(planned)
    }
}
