//! `crier history` and `crier logs`: the ledger for people and spreadsheets.
//!
//! Everything here reads through `history::query`, the module the HTTP API will reuse,
//! so the terminal and the API can never disagree about a filter.

use std::io::{IsTerminal, Write};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use super::{Outcome, open_store, print_table};
use crate::cli::{Format, HistoryArgs, HistoryCommand, HistoryListArgs, LogsArgs, PeriodArgs};
use crate::config::Config;
use crate::history::export::{iso, messages_csv, runs_csv};
use crate::history::ledger::{Ledger, LedgerError};
use crate::history::query::{self, MessageFilter, Range, RunFilter};
use crate::history::{Message, MessageState, MessageType, Millis, Run, RunId, RunStatus};
use crate::job::Channel;
use crate::recipients::{RecipientKind, phone};

const TABLE_LIMIT: u64 = 50;

pub(super) fn run(config: &Config, args: &HistoryArgs) -> anyhow::Result<Outcome> {
    match &args.command {
        None => list(config, &args.list),
        Some(HistoryCommand::Show { run }) => show(config, run),
        Some(HistoryCommand::Recipients {
            run,
            state,
            format,
            limit,
        }) => recipients(config, run, state.as_deref(), *format, *limit),
        Some(HistoryCommand::Delete { run, purge, yes }) => delete(config, run, *purge, *yes),
        Some(HistoryCommand::Cancel { run }) => cancel(config, run),
    }
}

fn range(config: &Config, p: &PeriodArgs) -> anyhow::Result<Option<Range>> {
    query::resolve_range(
        p.period.as_deref(),
        p.from.as_deref(),
        p.to.as_deref(),
        config.tz,
        Utc::now(),
    )
    .map_err(anyhow::Error::msg)
}

fn parse_status(s: &str) -> anyhow::Result<Option<RunStatus>> {
    let key = s.trim().to_lowercase().replace('-', "_");
    if key == "any" {
        return Ok(None);
    }
    RunStatus::ALL
        .into_iter()
        .find(|r| r.as_str() == key)
        .map(Some)
        .with_context(|| {
            format!(
                "unknown status `{s}` (expected any, {})",
                RunStatus::ALL.map(|r| r.as_str()).join(", ")
            )
        })
}

fn parse_run(s: &str) -> anyhow::Result<RunId> {
    s.parse::<RunId>().map_err(anyhow::Error::msg)
}

fn local(config: &Config, ms: Option<Millis>) -> String {
    ms.and_then(DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&config.tz)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

fn limit_for(format: Format, limit: Option<u64>) -> u64 {
    match (format, limit) {
        (_, Some(n)) => n,
        (Format::Table, None) => TABLE_LIMIT,
        _ => u64::MAX,
    }
}

fn list(config: &Config, args: &HistoryListArgs) -> anyhow::Result<Outcome> {
    let filter = RunFilter {
        status: parse_status(&args.status)?,
        range: range(config, &args.period)?,
        job: args.job.clone(),
    };
    let store = open_store(config)?;
    let ledger = Ledger::new(store.as_ref());
    let limit = limit_for(args.format, args.limit);
    let runs = query::runs(&ledger, &filter).take(limit as usize);
    match args.format {
        Format::Csv => {
            runs_csv(runs, std::io::stdout().lock())?;
        }
        Format::Json => print_json(runs.map(|r| r.map(|r| run_json(&r))))?,
        Format::Table => {
            let rows: Vec<Vec<String>> = runs
                .map(|r| {
                    r.map(|r| {
                        let c = &r.counters;
                        vec![
                            r.id.to_string(),
                            r.job.clone(),
                            r.status().to_string(),
                            r.trigger.label().to_string(),
                            local(config, Some(r.created_at)),
                            c.total().to_string(),
                            (c.get(MessageState::Sent) + c.get(MessageState::Delivered))
                                .to_string(),
                            MessageState::ALL
                                .iter()
                                .filter(|s| s.is_error())
                                .map(|s| c.get(*s))
                                .sum::<u64>()
                                .to_string(),
                            c.get(MessageState::Skipped).to_string(),
                        ]
                    })
                })
                .collect::<Result<_, _>>()?;
            let n = rows.len();
            print_table(
                &[
                    "run", "job", "status", "trigger", "created", "messages", "sent", "errors",
                    "skipped",
                ],
                &rows,
            );
            println!("{n} run{}", if n == 1 { "" } else { "s" });
        }
    }
    Ok(Outcome::Ok)
}

fn run_json(r: &Run) -> serde_json::Value {
    let counters: serde_json::Map<String, serde_json::Value> = MessageState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), r.counters.get(*s).into()))
        .collect();
    serde_json::json!({
        "id": r.id.to_string(),
        "job": r.job,
        "status": r.status(),
        "trigger": r.trigger.label(),
        "scheduled_at": match r.trigger { crate::history::Trigger::Schedule { at } => Some(iso(at)), _ => None },
        "channels": r.channels,
        "provider": r.provider,
        "created_at": iso(r.created_at),
        "started_at": r.started_at.map(iso),
        "finished_at": r.finished_at.map(iso),
        "messages": r.counters.total(),
        "counters": counters,
    })
}

fn message_json(m: &Message) -> serde_json::Value {
    serde_json::json!({
        "id": m.id.to_string(),
        "run_id": m.id.run.to_string(),
        "type": m.kind.as_str(),
        "channel": m.channel,
        "provider": m.provider,
        "recipient_kind": m.recipient_kind,
        "recipient_id": m.recipient_id,
        "address": m.address,
        "state": m.state,
        "reason": m.reason,
        "attempts": m.attempts,
        "encoding": m.encoding,
        "parts": m.parts,
        "provider_message_id": m.provider_message_id,
        "error_code": m.error_code,
        "error_text": m.error_text,
        "subject": m.subject,
        "body": m.body,
        "created_at": iso(m.created_at),
        "updated_at": iso(m.updated_at),
        "transitions": m.transitions.iter().map(|(s, t)| serde_json::json!([s, iso(*t)])).collect::<Vec<_>>(),
        "failovers": m.failovers.iter().map(|f| serde_json::json!({
            "provider": f.provider,
            "at": iso(f.at),
            "attempts": f.attempts,
            "error_code": f.error_code,
            "error_text": f.error_text,
        })).collect::<Vec<_>>(),
    })
}

/// A JSON array, streamed.
fn print_json(
    items: impl Iterator<Item = Result<serde_json::Value, LedgerError>>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(b"[")?;
    for (i, item) in items.enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut out, &item?)?;
    }
    out.write_all(b"\n]\n")?;
    Ok(())
}

fn show(config: &Config, run: &str) -> anyhow::Result<Outcome> {
    let id = parse_run(run)?;
    let store = open_store(config)?;
    let ledger = Ledger::new(store.as_ref());
    let r = ledger.run(id)?;
    let c = &r.counters;
    println!("run:       {}", r.id);
    println!("job:       {}", r.job);
    println!("status:    {}", r.status());
    match &r.trigger {
        crate::history::Trigger::Schedule { at } => {
            println!("trigger:   schedule (for {})", local(config, Some(*at)))
        }
        t => println!("trigger:   {}", t.label()),
    }
    println!(
        "channels:  {}",
        r.channels
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    );
    println!("provider:  {}", r.provider);
    println!("created:   {}", local(config, Some(r.created_at)));
    println!("started:   {}", local(config, r.started_at));
    println!("finished:  {}", local(config, r.finished_at));
    if let (Some(a), Some(b)) = (r.started_at, r.finished_at) {
        println!("took:      {:.1}s", (b - a) as f64 / 1000.0);
    }
    println!("messages:  {}", c.total());
    for s in MessageState::ALL {
        if c.get(s) > 0 {
            println!("  {:<12} {}", s.as_str(), c.get(s));
        }
    }
    if let Some(subject) = &r.subject {
        println!("subject:   {subject}");
    }
    println!("message:\n{}", indent(&r.body));
    let unknown = c.get(MessageState::Unknown);
    if unknown > 0 {
        println!(
            "\n{unknown} message(s) have an unknown outcome (in flight when crier stopped); decide with `crier history recipients {} --state unknown`:",
            r.id
        );
        for m in ledger.messages_of(id, Some(MessageState::Unknown)).take(20) {
            let m = m?;
            println!("  {}  {}  {}", m.id, m.address, m.provider);
        }
    }
    Ok(Outcome::Ok)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn recipients(
    config: &Config,
    run: &str,
    state: Option<&str>,
    format: Format,
    limit: Option<u64>,
) -> anyhow::Result<Outcome> {
    let id = parse_run(run)?;
    let state = state
        .map(str::parse::<MessageState>)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let store = open_store(config)?;
    let ledger = Ledger::new(store.as_ref());
    ledger.run(id)?;
    let limit = limit.unwrap_or(u64::MAX) as usize;
    let messages = ledger.messages_of(id, state).take(limit);
    write_messages(config, &ledger, messages, format)
}

fn write_messages<'a>(
    config: &Config,
    ledger: &Ledger,
    messages: impl Iterator<Item = Result<Message, LedgerError>> + 'a,
    format: Format,
) -> anyhow::Result<Outcome> {
    match format {
        Format::Csv => {
            messages_csv(ledger, messages, std::io::stdout().lock())?;
        }
        Format::Json => print_json(messages.map(|m| m.map(|m| message_json(&m))))?,
        Format::Table => {
            let rows: Vec<Vec<String>> = messages
                .map(|m| {
                    m.map(|m| {
                        vec![
                            m.id.to_string(),
                            format!("{}:{}", m.recipient_kind, m.recipient_id),
                            m.address.clone(),
                            m.channel.to_string(),
                            m.state.to_string(),
                            // A failover shows every provider tried, in order.
                            m.failovers
                                .iter()
                                .map(|f| f.provider.as_str())
                                .chain([m.provider.as_str()])
                                .collect::<Vec<_>>()
                                .join("→"),
                            local(config, Some(m.updated_at)),
                            m.reason
                                .clone()
                                .or_else(|| m.error_text.clone())
                                .unwrap_or_default(),
                        ]
                    })
                })
                .collect::<Result<_, _>>()?;
            let n = rows.len();
            print_table(
                &[
                    "message",
                    "recipient",
                    "address",
                    "channel",
                    "state",
                    "provider",
                    "updated",
                    "reason",
                ],
                &rows,
            );
            println!("{n} message{}", if n == 1 { "" } else { "s" });
        }
    }
    Ok(Outcome::Ok)
}

fn delete(config: &Config, run: &str, purge: bool, yes: bool) -> anyhow::Result<Outcome> {
    let id = parse_run(run)?;
    let store = open_store(config)?;
    let ledger = Ledger::new(store.as_ref());
    let r = ledger.run(id)?;
    if !purge {
        ledger.remove(id)?;
        ledger.flush()?;
        println!(
            "run {id} ({}) removed: hidden from listings, kept for audit (`--status removed` lists it)",
            r.job
        );
        return Ok(Outcome::Ok);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "--purge deletes run {id} and its {} messages for good; add --yes to confirm without a terminal",
                r.counters.total()
            );
        }
        eprint!(
            "Delete run {id} ({}) and its {} messages for good? [y/N] ",
            r.job,
            r.counters.total()
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing deleted");
            return Ok(Outcome::Failed);
        }
    }
    let n = ledger.purge(id)?;
    ledger.flush()?;
    println!("run {id} purged with {n} messages");
    Ok(Outcome::Ok)
}

fn cancel(config: &Config, run: &str) -> anyhow::Result<Outcome> {
    let id = parse_run(run)?;
    let store = open_store(config)?;
    let ledger = Ledger::new(store.as_ref());
    let n = ledger.cancel(id)?;
    ledger.flush()?;
    let r = ledger.run(id)?;
    println!(
        "run {id} cancelled: {n} queued messages cancelled; status {}",
        r.status()
    );
    Ok(Outcome::Ok)
}

pub(super) fn logs(config: &Config, args: &LogsArgs) -> anyhow::Result<Outcome> {
    let channel = match args.channel.as_deref() {
        None => None,
        Some(c) => Some(
            Channel::ALL
                .into_iter()
                .find(|ch| ch.as_str() == c.trim().to_lowercase())
                .with_context(|| {
                    format!("unknown channel `{c}` (expected sms, email or portal)")
                })?,
        ),
    };
    let state = args
        .state
        .as_deref()
        .map(str::parse::<MessageState>)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let kind = match args.kind.as_deref().map(|k| k.trim().to_lowercase()) {
        None => None,
        Some(k) if k == "message" => Some(MessageType::Message),
        Some(k) if k == "test" => Some(MessageType::Test),
        Some(k) => bail!("unknown type `{k}` (expected message or test)"),
    };
    let address = match args.phone.as_deref() {
        None => None,
        Some(a) if a.contains('@') => Some(a.trim().to_string()),
        Some(p) => Some(phone::to_e164(p, config.region).with_context(|| {
            format!(
                "--phone `{p}` is not a valid phone number in region {}",
                config.default_region
            )
        })?),
    };
    let recipient = match args.recipient.as_deref() {
        None => None,
        Some(r) => {
            let (kind, id) = match r.split_once(':') {
                Some((k, id)) => (
                    Some(k.parse::<RecipientKind>().map_err(anyhow::Error::msg)?),
                    id,
                ),
                None => (None, r),
            };
            let id: u64 = id.trim().parse().with_context(|| {
                format!("--recipient `{r}` is not a recipient id (e.g. 1042 or lead:7)")
            })?;
            Some((kind, id))
        }
    };
    let filter = MessageFilter {
        channel,
        state,
        kind,
        range: range(config, &args.period)?,
        address,
        recipient,
        run: args.run.as_deref().map(parse_run).transpose()?,
    };
    let store = open_store(config)?;
    let ledger = Ledger::new(store.as_ref());
    let limit = limit_for(args.format, args.limit) as usize;
    let messages = query::messages(&ledger, &filter).take(limit);
    write_messages(config, &ledger, messages, args.format)
}
