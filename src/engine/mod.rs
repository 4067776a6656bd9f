//! The engine: the one module that knows every stage a message passes.
//!
//! So far the planning half: recipients → reachability (address per channel, duplicates)
//! → render → SMS cost. [`Planner`] turns each recipient into [`Planned`] messages, one per
//! channel of the job, in a stream; `crier preview` prints them, and sending (with the
//! dispatch issue) will write them to the ledger and hand them to providers.

pub mod preview;
pub mod send;

use std::collections::HashSet;
use std::hash::BuildHasher;

use chrono::Utc;

use crate::config::Config;
use crate::job::{Body, Channel, Job};
use crate::recipients::Recipient;
use crate::recipients::optout::OptOuts;
use crate::render::sms;
use crate::render::stored::Templates;
use crate::render::template::{Context, Template};
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
        let body = Template::compile(&source).map_err(|e| {
            PlanError::Compile(name.clone(), format!("{}:{}: {}", e.line, e.col, e.message))
        })?;
        let subject = match &job.subject {
            Some(s) => Some(
                Template::compile(s)
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
                Some(Template::compile_html(&source).map_err(|e| {
                    PlanError::Compile(name, format!("{}:{}: {}", e.line, e.col, e.message))
                })?)
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
        };
        Ok(Planner {
            optouts,
            job: job.clone(),
            body,
            subject,
            html,
            context,
            seen: HashSet::new(),
            hasher: std::collections::hash_map::RandomState::new(),
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

    /// The messages for one recipient: one per channel of the job.
    pub fn plan(&mut self, recipient: &Recipient) -> Result<Vec<Planned>, StoreError> {
        let channels = self.job.send_to.channels();
        channels
            .iter()
            .map(|&channel| self.plan_channel(recipient, channel))
            .collect()
    }

    fn plan_channel(&mut self, r: &Recipient, channel: Channel) -> Result<Planned, StoreError> {
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
            }
        }
        Ok(planned)
    }
}
