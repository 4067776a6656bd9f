//! Sending a run, first version: synchronous, through the `file` outbox provider.
//!
//! The order is the one every provider will keep: recipients are planned into the ledger
//! in batches (queued, or skipped with their reason), each batch goes to `sending`
//! durably before the provider is called, the outbox is synced, and the outcomes are
//! recorded durably. A crash therefore leaves at most one batch in `sending`, never a
//! message sent twice without a trace. The job's `rate:` is honoured with governor.
//! Network providers, retries, expiry and the async pipeline come with the rest of the
//! dispatch issue; until then a job whose provider is not `file` is refused.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use governor::{Quota, RateLimiter};
use thiserror::Error;

use super::{PlanError, Planned, Planner};
use crate::config::Config;
use crate::history::ledger::{Change, Ledger, LedgerError, NewMessage, NewRun};
use crate::history::{MessageState, MessageType, Run, Trigger};
use crate::job::{Channel, Job, Source};
use crate::provider::file::FileOutbox;
use crate::provider::{ProviderConfig, RoutedMessage, SendOutcome};
use crate::recipients::optout::OptOuts;
use crate::recipients::source::{self, SourceError};
use crate::render::stored::Templates;
use crate::store::{Store, StoreError};

/// Messages planned and sent per durable step.
const BATCH: usize = 500;

#[derive(Debug, Error)]
pub enum SendError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "provider `{name}` is of type {kind}; this version sends through `file` providers only (the others arrive with the dispatch issue)"
    )]
    Unsupported { name: String, kind: &'static str },
    #[error("provider `{0}` is not configured")]
    NoProvider(String),
    #[error("the outbox cannot be written: {0}")]
    Outbox(std::io::Error),
    #[error("no recipient of this job has id {0}")]
    NoRecipient(u64),
}

/// How to send.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Send as test: one message to this address, with one recipient's data.
    pub test_to: Option<String>,
    /// With `test_to`: whose data (default: the first recipient).
    pub recipient: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub run: Option<Run>,
    pub sent: u64,
    pub failed: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub parts: u64,
}

/// The provider name and outbox directory for `channel` of `job`.
fn outbox_for(
    job: &Job,
    config: &Config,
    channel: Channel,
) -> Result<(String, FileOutbox), SendError> {
    let name = match (&job.provider, channel) {
        (Some(p), c) if c != Channel::Portal => p.clone(),
        _ => config.channels.provider_for(channel).to_string(),
    };
    match config.providers.get(&name) {
        Some(ProviderConfig::File(f)) => {
            let dir = f
                .dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("outbox"));
            Ok((name, FileOutbox::new(&dir)))
        }
        Some(other) => Err(SendError::Unsupported {
            name,
            kind: other.type_name(),
        }),
        None => Err(SendError::NoProvider(name)),
    }
}

/// Sends `job` (or one test message), writing every message's fate to the ledger.
pub fn send(
    job: &Job,
    config: &Config,
    store: &dyn Store,
    options: &SendOptions,
) -> Result<Summary, SendError> {
    let mut outboxes = BTreeMap::new();
    for &channel in job.send_to.channels() {
        outboxes.insert(channel, outbox_for(job, config, channel)?);
    }
    let templates = Templates::new(store.templates());
    let testing = options.test_to.is_some();
    let optouts = (!testing).then(|| OptOuts::new(store.optouts()));
    let ledger = Ledger::new(store);
    let body = super::body_source(job, Some(&templates))?.1;
    let run = ledger.create_run(NewRun {
        job: job.name.clone(),
        trigger: if testing {
            Trigger::Test
        } else {
            Trigger::Manual
        },
        channels: job.send_to.channels().to_vec(),
        provider: outboxes
            .values()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
            .join("+"),
        body,
        subject: job.subject.clone(),
    })?;
    let mut planner = Planner::new(job, config, &run.id.to_string(), optouts, Some(&templates))?;
    let limiter = job.rate.map(|rate| {
        let per_message = rate.per / rate.count.get();
        let quota = Quota::with_period(per_message)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::MIN);
        RateLimiter::direct(quota)
    });

    let from_store = match job.recipients.source {
        Source::Store => Some(store),
        Source::Csv(_) => None,
    };
    let mut summary = Summary::default();
    let mut pending: Vec<Planned> = Vec::with_capacity(BATCH);
    let mut found = false;
    for item in source::resolve(&job.recipients, from_store, config.region)? {
        let r = item?;
        if let Some(id) = options.recipient
            && id != r.id
        {
            continue;
        }
        found = true;
        for mut planned in planner.plan(&r)? {
            if let Some(to) = &options.test_to {
                planned.address = Some(to.clone());
                planned.skip = None;
            }
            pending.push(planned);
        }
        if testing {
            break;
        }
        if pending.len() >= BATCH {
            send_batch(
                &ledger,
                &run,
                std::mem::take(&mut pending),
                &outboxes,
                limiter.as_ref(),
                testing,
                &mut summary,
            )?;
        }
    }
    if let Some(id) = options.recipient
        && !found
    {
        return Err(SendError::NoRecipient(id));
    }
    send_batch(
        &ledger,
        &run,
        pending,
        &outboxes,
        limiter.as_ref(),
        testing,
        &mut summary,
    )?;
    summary.run = Some(ledger.finish_planning(run.id)?);
    ledger.flush()?;
    Ok(summary)
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

fn send_batch(
    ledger: &Ledger,
    run: &Run,
    batch: Vec<Planned>,
    outboxes: &BTreeMap<Channel, (String, FileOutbox)>,
    limiter: Option<&Limiter>,
    testing: bool,
    summary: &mut Summary,
) -> Result<(), SendError> {
    if batch.is_empty() {
        return Ok(());
    }
    let messages: Vec<NewMessage> = batch
        .iter()
        .map(|p| NewMessage {
            recipient_kind: p.recipient.kind,
            recipient_id: p.recipient.id,
            address: p.address.clone().unwrap_or_default(),
            channel: p.channel,
            provider: outboxes
                .get(&p.channel)
                .map(|(n, _)| n.clone())
                .unwrap_or_default(),
            kind: if testing {
                MessageType::Test
            } else {
                MessageType::Message
            },
            subject: p.subject.clone(),
            body: p.body.clone(),
            encoding: p.encoding.map(|e| e.as_str().to_string()),
            parts: p.parts as u32,
            state: if p.skip.is_some() {
                MessageState::Skipped
            } else {
                MessageState::Queued
            },
            reason: p.skip.as_ref().map(|(r, _)| r.as_str().to_string()),
        })
        .collect();
    let ids = ledger.plan(run.id, messages)?;
    let to_send: Vec<(usize, _)> = batch
        .iter()
        .zip(&ids)
        .enumerate()
        .filter(|(_, (p, _))| p.skip.is_none())
        .map(|(i, (_, id))| (i, *id))
        .collect();
    for p in &batch {
        if let Some((reason, _)) = &p.skip {
            *summary.skipped.entry(reason.as_str()).or_default() += 1;
        }
    }
    // Durably `sending` before any provider call.
    let sending: Vec<Change> = to_send
        .iter()
        .map(|(_, id)| Change::to(*id, MessageState::Sending))
        .collect();
    ledger.record(&sending)?;
    let mut outcomes = Vec::with_capacity(to_send.len());
    for (i, id) in &to_send {
        if let Some(l) = limiter {
            while let Err(not_until) = l.check() {
                std::thread::sleep(not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                )));
            }
        }
        let p = &batch[*i];
        let (_, outbox) = &outboxes[&p.channel];
        let outcome = outbox.write(&RoutedMessage {
            id: id.to_string(),
            channel: p.channel,
            to: p.address.clone().unwrap_or_default(),
            subject: p.subject.clone(),
            body: p.body.clone(),
            html: None,
            encoding: p.encoding,
            parts: p.parts as u32,
            recipient_id: p.recipient.id,
            attach: vec![],
            dedup_id: 0,
        });
        outcomes.push((*id, p.parts, outcome));
    }
    for (_, outbox) in outboxes.values() {
        outbox.flush().map_err(SendError::Outbox)?;
    }
    let changes: Vec<Change> = outcomes
        .iter()
        .map(|(id, parts, outcome)| {
            let mut c = Change::to(*id, MessageState::Sent);
            match outcome {
                SendOutcome::Sent { provider_id } => {
                    summary.sent += 1;
                    summary.parts += *parts as u64;
                    c.provider_message_id = Some(provider_id.clone());
                }
                SendOutcome::Retry { reason }
                | SendOutcome::RetryAfter { reason, .. }
                | SendOutcome::Unknown { reason } => {
                    // No retries yet: a transient failure fails the message, with its reason.
                    summary.failed += 1;
                    c.to = MessageState::Failed;
                    c.error = Some(("retry".into(), reason.clone()));
                }
                SendOutcome::Rejected { code, text } | SendOutcome::Halt { code, text } => {
                    summary.failed += 1;
                    c.to = MessageState::Failed;
                    c.error = Some((code.clone(), text.clone()));
                }
            }
            c
        })
        .collect();
    ledger.record(&changes)?;
    Ok(())
}
