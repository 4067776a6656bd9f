//! `crier preview`: Splynx's *Preview* — the count, the skipped and why, the first
//! messages as they will read, and what the run will cost in SMS parts.

use super::{Outcome, load_job, open_store};
use crate::cli::PreviewArgs;
use crate::config::Config;
use crate::engine::preview::{Preview, preview};
use crate::job::{Channel, Job};
use crate::store::Store;

pub(super) fn run(config: &Config, args: &PreviewArgs) -> anyhow::Result<Outcome> {
    let Some(job) = load_job(&args.job, config) else {
        return Ok(Outcome::Failed);
    };
    // The store holds the opt-out list, so it is opened for CSV-sourced jobs too.
    let store = open_store(config)?;
    Ok(show(config, &job, store.as_ref(), args.limit, args.recipient)?.0)
}

/// Prints the preview of `job`; returns the outcome and how many messages would go.
pub(super) fn show(
    config: &Config,
    job: &Job,
    store: &dyn Store,
    limit: usize,
    recipient: Option<u64>,
) -> anyhow::Result<(Outcome, Preview)> {
    let p = preview(config, job, store, limit, recipient)?;
    let channels: Vec<String> = p
        .channels
        .iter()
        .map(|(c, provider)| format!("{c} via {provider}"))
        .collect();
    let routed = match job.scripts.as_ref().and_then(|s| s.route_script()) {
        Some(script) => format!(" (routed by {script})"),
        None => String::new(),
    };
    crate::outln!("job {}: {}{routed}", job.name, channels.join(", "));
    for e in &p.unreadable {
        crate::errln!("skipped: {e}");
    }
    let Preview {
        recipients,
        to_send,
        skipped,
        parts,
        by_encoding,
        shown,
        skipped_shown,
        ..
    } = &p;
    let (recipients, to_send) = (*recipients, *to_send);
    let unreadable = p.unreadable.len();
    let noun = job.recipients.kind.as_str();
    let filtered = p.filtered;
    crate::outln!(
        "recipients: {recipients} {noun}{}{}",
        if recipients == 1 { "" } else { "s" },
        if job
            .scripts
            .as_ref()
            .is_some_and(|s| s.has(crate::script::Hook::Filter))
        {
            format!(
                " ({filtered} left out by the filter script, {} kept)",
                recipients - filtered
            )
        } else {
            String::new()
        }
    );
    let skipped_total: u64 = skipped.values().sum();
    let reasons: Vec<String> = skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
    crate::outln!(
        "messages: {to_send} to send, {skipped_total} skipped{}",
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        }
    );
    if job.send_to.channels().contains(&Channel::Sms) {
        let enc: Vec<String> = by_encoding
            .iter()
            .map(|(e, n)| format!("{e} {n}"))
            .collect();
        crate::outln!("sms parts: {parts} ({})", enc.join(", "));
    }
    if unreadable > 0 {
        crate::outln!("unreadable source rows: {unreadable}");
    }
    for (i, m) in shown.iter().enumerate() {
        let cost = match m.encoding {
            Some(e) => format!(
                "  {}, {} part{}",
                e.as_str(),
                m.parts,
                if m.parts == 1 { "" } else { "s" }
            ),
            None => String::new(),
        };
        let via = if m.route.is_empty() {
            String::new()
        } else {
            format!("  via {}", m.route.join(" → "))
        };
        crate::outln!(
            "\n--- {}. {} {} {}  {} ({}){cost}{via}",
            i + 1,
            m.recipient.kind,
            m.recipient.id,
            m.recipient.name,
            m.address.as_deref().unwrap_or_default(),
            m.channel,
        );
        if let Some(subject) = &m.subject {
            crate::outln!("Subject: {subject}");
        }
        crate::outln!("{}", m.body);
    }
    for m in skipped_shown {
        let (reason, detail) = m
            .skip
            .as_ref()
            .map(|(r, d)| (r.as_str(), d.as_str()))
            .unwrap_or_default();
        crate::outln!(
            "\n--- {} {} ({}): skipped: {reason}: {detail}",
            m.recipient.kind,
            m.recipient.id,
            m.channel
        );
    }
    if recipient.is_some() && recipients == 0 {
        crate::errln!(
            "no recipient of this job has id {}",
            recipient.unwrap_or_default()
        );
        return Ok((Outcome::Failed, p));
    }
    Ok((Outcome::Ok, p))
}
