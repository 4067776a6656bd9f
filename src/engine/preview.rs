//! Splynx's *Preview*, computed: who a job reaches, who is skipped and why, and what the
//! run will cost in SMS parts, without writing anything. `crier preview` prints it and
//! `POST /api/jobs/{name}/run?dry_run=true` returns it, so both count the same way.

use std::collections::BTreeMap;

use super::send::SendError;
use super::{Planned, Planner};
use crate::config::Config;
use crate::job::{Channel, Job, Source};
use crate::recipients::optout::OptOuts;
use crate::recipients::source;
use crate::render::stored::Templates;
use crate::store::Store;

/// What sending `job` now would do.
#[derive(Debug, Clone, Default)]
pub struct Preview {
    /// Each channel of the job with the provider that would carry it.
    pub channels: Vec<(Channel, String)>,
    /// Recipients considered.
    pub recipients: u64,
    /// Source rows that could not be read, with why.
    pub unreadable: Vec<String>,
    /// Messages that would be sent.
    pub to_send: u64,
    /// Messages that would be skipped, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// SMS parts of the messages to send.
    pub parts: u64,
    /// SMS messages to send by encoding.
    pub by_encoding: BTreeMap<&'static str, u64>,
    /// The first messages to send (up to the `limit` asked for).
    pub shown: Vec<Planned>,
    /// With one recipient asked for: its skipped messages.
    pub skipped_shown: Vec<Planned>,
    /// Recipients the job's `filter` script left out (counted in `recipients`).
    pub filtered: u64,
}

/// Plans `job` without sending: counts everything, keeps the first `limit` messages, and
/// with `recipient` only that recipient.
pub fn preview(
    config: &Config,
    job: &Job,
    store: &dyn Store,
    limit: usize,
    recipient: Option<u64>,
) -> Result<Preview, SendError> {
    let from_store = match job.recipients.source {
        Source::Store => Some(store),
        Source::Csv(_) => None,
    };
    let templates = Templates::new(store.directory());
    let mut planner = Planner::new(
        job,
        config,
        "preview",
        Some(OptOuts::new(store.directory())),
        Some(&templates),
    )?;
    let mut p = Preview {
        channels: job
            .send_to
            .channels()
            .iter()
            .map(|&c| {
                let provider = match (c, &job.provider) {
                    (Channel::Portal, _) | (_, None) => config.channels.provider_for(c).to_string(),
                    (_, Some(p)) => p.clone(),
                };
                (c, provider)
            })
            .collect(),
        ..Preview::default()
    };
    let recipients = source::resolve(&job.recipients, from_store, config.region)?;
    for batch in source::batches(recipients, source::PLAN_BATCH) {
        let ok: Vec<_> = batch.iter().filter_map(|i| i.as_ref().ok()).collect();
        planner.prime(&ok)?;
        for item in batch {
            let r = match item {
                Ok(r) => r,
                Err(e) => {
                    p.unreadable.push(e.to_string());
                    continue;
                }
            };
            if recipient.is_some_and(|id| id != r.id) {
                continue;
            }
            p.recipients += 1;
            for planned in planner.plan(&r)? {
                match &planned.skip {
                    Some((reason, _)) => {
                        *p.skipped.entry(reason.as_str()).or_default() += 1;
                        if recipient.is_some() {
                            p.skipped_shown.push(planned);
                        }
                    }
                    None => {
                        p.to_send += 1;
                        p.parts += planned.parts as u64;
                        if let Some(e) = planned.encoding {
                            *p.by_encoding.entry(e.as_str()).or_default() += 1;
                        }
                        if p.shown.len() < limit {
                            p.shown.push(planned);
                        }
                    }
                }
            }
        }
    }
    p.filtered = planner.filtered();
    Ok(p)
}
