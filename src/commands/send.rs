//! `crier send`: Splynx's *Send* and *Send as test*.
//!
//! Shows the preview (count, skipped and why, sample messages, parts), asks
//! `Send N messages? [y/N]` (a terminal is required unless `--yes`), sends, and prints
//! the run's summary. Exit 1 if any message failed.

use std::io::{IsTerminal, Write};

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
    let store = open_store(config)?;
    let mut options = SendOptions::default();
    if let Some(to) = &args.test_to {
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
        let (outcome, to_send) = preview::show(config, &job, store.as_ref(), 3, None)?;
        if outcome == Outcome::Failed {
            return Ok(outcome);
        }
        if args.dry_run {
            println!("\ndry run: nothing was sent");
            return Ok(Outcome::Ok);
        }
        if to_send == 0 {
            println!("\nnothing to send");
            return Ok(Outcome::Ok);
        }
        if !args.yes {
            if !std::io::stdin().is_terminal() {
                bail!(
                    "refusing to send {to_send} messages without confirmation: run it on a terminal, or add --yes"
                );
            }
            print!("\nSend {to_send} messages? [y/N] ");
            std::io::stdout().flush()?;
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                println!("nothing was sent");
                return Ok(Outcome::Failed);
            }
        }
    }
    let summary = send(&job, config, store.as_ref(), &options)?;
    let run = summary
        .run
        .as_ref()
        .map(|r| (r.id.to_string(), r.status().to_string()));
    let (id, status) = run.unwrap_or_default();
    let skipped: u64 = summary.skipped.values().sum();
    let reasons: Vec<String> = summary
        .skipped
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    println!(
        "\nrun {id} ({status}): {} sent, {} failed, {skipped} skipped{}; {} SMS parts",
        summary.sent,
        summary.failed,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        summary.parts,
    );
    println!("details: crier history show {id}");
    Ok(if summary.failed > 0 {
        Outcome::Failed
    } else {
        Outcome::Ok
    })
}
