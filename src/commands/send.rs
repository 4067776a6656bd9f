//! `crier send`: Splynx's *Send* and *Send as test*.
//!
//! Shows the preview (count, skipped and why, sample messages, parts), asks
//! `Send N messages? [y/N]` (a terminal is required unless `--yes`), sends, and prints
//! the run's summary. Exit 1 if any message failed.

use std::io::IsTerminal;

use anyhow::bail;

use super::{Outcome, load_job, open_store, preview};
use crate::cli::SendArgs;
use crate::config::Config;
use crate::engine::send::{SendOptions, send};
use crate::job::Channel;
use crate::recipients::optout::normalize;

pub(super) fn run(config: &Config, args: &SendArgs) -> anyhow::Result<Outcome> {
    let Some(job) = load_job(&args.job, config) else {
        return Ok(Outcome::Failed);
    };
    // Before the preview: a send that cannot start should not ask first.
    if let Err(missing) = crate::engine::send::secrets_of(&job, config) {
        crate::errln!("{missing}");
        return Ok(Outcome::Failed);
    }
    let store = open_store(config)?;
    if args.enqueue && store.cluster().is_none() {
        bail!(
            "--enqueue leaves the run to the workers that share a PostgreSQL store (store.backend: postgres); the embedded store has one process, which sends: leave --enqueue out"
        );
    }
    // On PostgreSQL this process claims as a worker (the daemon's, when it carries this
    // out); retired when this returns.
    let worker = crate::cluster::members::Worker::join(
        store.as_ref(),
        config.cluster,
        crate::cluster::members::Role::Send,
    )?;
    let mut options = SendOptions {
        // Carried out by the daemon: stop when the caller goes away or the daemon stops.
        cancel: crate::console::cancel_flag(),
        ignore_window: args.ignore_window,
        enqueue: args.enqueue,
        holder: worker.as_ref().map(|w| w.holder()),
        ..SendOptions::default()
    };
    let mut expected = 1;
    if let Some(run) = &args.resume {
        let id: crate::history::RunId = run
            .parse()
            .map_err(|e| anyhow::anyhow!("--resume {run}: {e}"))?;
        let ledger = crate::history::ledger::Ledger::new(store.as_ref());
        let existing = ledger.run(id)?;
        if existing.job != job.name {
            bail!(
                "run {id} belongs to job `{}`, not `{}`",
                existing.job,
                job.name
            );
        }
        if existing.status() != crate::history::RunStatus::Processing {
            bail!(
                "run {id} is {}: only a processing run can be resumed",
                existing.status()
            );
        }
        options.resume = Some(id);
    } else if let Some(run) = &args.retry_failed {
        let id: crate::history::RunId = run
            .parse()
            .map_err(|e| anyhow::anyhow!("--retry-failed {run}: {e}"))?;
        options.retry_failed = Some(id);
    } else if let Some(to) = &args.test_to {
        let address = normalize(to, config.region).map_err(anyhow::Error::msg)?;
        let is_email = address.contains('@');
        let wants_email = job.send_to.channels().contains(&Channel::Email);
        if is_email != wants_email {
            bail!(
                "--test-to `{to}` is {} but the job sends {}",
                if is_email {
                    "an email address"
                } else {
                    "a phone number"
                },
                job.send_to.as_str()
            );
        }
        options.test_to = Some(address);
        options.recipient = args.recipient;
    } else {
        let (outcome, preview) = preview::show(config, &job, store.as_ref(), 3, None)?;
        let to_send = preview.to_send;
        if outcome == Outcome::Failed {
            return Ok(outcome);
        }
        if args.dry_run {
            crate::outln!("\ndry run: nothing was sent");
            return Ok(Outcome::Ok);
        }
        expected = to_send;
        // A script that failed for recipients is a failed send, recorded as one, never
        // a silent "nothing to send".
        let script_failed = preview
            .skipped
            .get(crate::engine::SkipReason::ScriptFailed.as_str())
            .copied()
            .unwrap_or(0);
        if to_send == 0 && script_failed == 0 {
            crate::outln!("\nnothing to send");
            return Ok(Outcome::Ok);
        }
        if !args.yes && to_send > 0 {
            match crate::console::confirm(&format!("\nSend {to_send} messages?"))? {
                None => bail!(
                    "refusing to send {to_send} messages without confirmation: run it on a terminal, or add --yes"
                ),
                Some(false) => {
                    crate::outln!("nothing was sent");
                    return Ok(Outcome::Failed);
                }
                Some(true) => {}
            }
        }
    }
    let bar = progress_bar(expected);
    if let Some(bar) = &bar {
        let bar = bar.clone();
        options.progress = Some(std::sync::Arc::new(move |n| bar.set_position(n)));
    }
    let summary = send(&job, config, store.as_ref(), &options);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
        crate::logging::set_progress(None);
    }
    let summary = summary?;
    let run = summary
        .run
        .as_ref()
        .map(|r| (r.id.to_string(), r.status().to_string()));
    let (id, status) = run.unwrap_or_default();
    let skipped: u64 = summary.skipped.values().sum();
    if args.enqueue {
        let planned = summary
            .run
            .as_ref()
            .map_or(0, |r| r.counters.total())
            .saturating_sub(skipped);
        crate::outln!(
            "\nrun {id} ({status}): {planned} messages planned for the workers ({} still queued), {skipped} skipped\nprogress: crier history show {id}",
            summary.queued
        );
        return Ok(Outcome::Ok);
    }
    let reasons: Vec<String> = summary
        .skipped
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let mut extra = String::new();
    for (n, what) in [
        (summary.expired, "expired"),
        (summary.unknown, "unknown (answer lost, not resent)"),
        (summary.filtered, "left out by the filter script"),
    ] {
        if n > 0 {
            extra.push_str(&format!(", {n} {what}"));
        }
    }
    // Parts are what SMS costs; an email or portal run has none to count.
    let parts = if job.send_to.channels().contains(&Channel::Sms) {
        format!("{} SMS parts, ", summary.parts)
    } else {
        String::new()
    };
    crate::outln!(
        "\nrun {id} ({status}): {} sent, {} failed{extra}, {skipped} skipped{}; {parts}{} retries",
        summary.sent,
        summary.failed,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        summary.retries,
    );
    if let Some(error) = &summary.script_error {
        crate::errln!(
            "a script failed for {} recipient{} (recorded as failed, reason script_failed); the first error: {error}",
            summary.script_failed,
            if summary.script_failed == 1 { "" } else { "s" }
        );
    }
    if let Some(reason) = &summary.paused {
        crate::outln!(
            "paused: {reason}; {} messages still queued (nothing was sent twice)",
            summary.queued
        );
    }
    crate::outln!("details: crier history show {id}");
    Ok(if summary.all_sent() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

/// A progress bar on stderr when it is a terminal; log lines print above it.
fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if crate::console::is_forwarded() || !std::io::stderr().is_terminal() || total < 2 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    crate::logging::set_progress(Some(bar.clone()));
    Some(bar)
}
