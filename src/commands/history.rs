//! `crier history` and `crier logs`: the ledger for people and spreadsheets.
//!
//! Everything here reads through `history::query`, the module the HTTP API will reuse,
//! so the terminal and the API can never disagree about a filter.

use std::io::Write;

use anyhow::bail;
use chrono::{DateTime, Utc};

use super::{Outcome, open_history, open_store, print_table};
use crate::cli::{Format, HistoryArgs, HistoryCommand, HistoryListArgs, LogsArgs};
use crate::config::Config;
use crate::history::export::{Cells, MessageView, RunView, messages_csv, runs_csv};
use crate::history::ledger::{Change, Ledger, LedgerError};
use crate::history::query::{self, Face, MessageQuery, RunQuery};
use crate::history::{Message, MessageState, Millis, RunId};

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
            raw,
        }) => recipients(
            config,
            run,
            state.as_deref(),
            *format,
            *limit,
            Cells::raw(*raw),
        ),
        Some(HistoryCommand::Delete { run, purge, yes }) => delete(config, run, *purge, *yes),
        Some(HistoryCommand::Cancel { run }) => cancel(config, run),
        Some(HistoryCommand::Retry { run, yes }) => retry(config, run, *yes),
    }
}

/// Whether this `crier history` command only reads (so it reads the history directly,
/// beside a running daemon).
pub(super) fn reads_only(args: &HistoryArgs) -> bool {
    matches!(
        args.command,
        None | Some(HistoryCommand::Show { .. }) | Some(HistoryCommand::Recipients { .. })
    )
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
    let filter = RunQuery {
        status: Some(&args.status),
        period: args.period.period.as_deref(),
        from: args.period.from.as_deref(),
        to: args.period.to.as_deref(),
        job: args.job.as_deref(),
    }
    .filter(Face::Cli, config.tz, Utc::now())
    .map_err(anyhow::Error::msg)?;
    let history = open_history(config)?;
    let ledger = Ledger::on(history.get());
    let limit = limit_for(args.format, args.limit);
    let runs = query::runs(&ledger, &filter).take(limit as usize);
    match args.format {
        Format::Csv => {
            runs_csv(runs, crate::console::stdout())?;
        }
        Format::Json => print_json(runs.map(|r| r.map(|r| RunView::from(&r))))?,
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
            crate::outln!("{n} run{}", if n == 1 { "" } else { "s" });
        }
    }
    Ok(Outcome::Ok)
}

/// A JSON array, streamed.
fn print_json<T: serde::Serialize>(
    items: impl Iterator<Item = Result<T, LedgerError>>,
) -> anyhow::Result<()> {
    let mut out = crate::console::stdout();
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
    let history = open_history(config)?;
    let ledger = Ledger::on(history.get());
    let r = ledger.run(id)?;
    let c = &r.counters;
    crate::outln!("run:       {}", r.id);
    crate::outln!("job:       {}", r.job);
    crate::outln!("status:    {}", r.status());
    match &r.trigger {
        crate::history::Trigger::Schedule { at } => {
            crate::outln!("trigger:   schedule (for {})", local(config, Some(*at)))
        }
        t => crate::outln!("trigger:   {}", t.label()),
    }
    crate::outln!(
        "channels:  {}",
        r.channels
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    );
    crate::outln!("provider:  {}", r.provider);
    if let Some(of) = r.retry_of {
        crate::outln!("retry of:  {of} (its failed and expired messages)");
    }
    crate::outln!("created:   {}", local(config, Some(r.created_at)));
    crate::outln!("started:   {}", local(config, r.started_at));
    crate::outln!("finished:  {}", local(config, r.finished_at));
    if let (Some(a), Some(b)) = (r.started_at, r.finished_at) {
        crate::outln!("took:      {:.1}s", (b - a) as f64 / 1000.0);
    }
    crate::outln!("messages:  {}", c.total());
    for s in MessageState::ALL {
        if c.get(s) > 0 {
            crate::outln!("  {:<12} {}", s.as_str(), c.get(s));
        }
    }
    if let Some(subject) = &r.subject {
        crate::outln!("subject:   {subject}");
    }
    crate::outln!("message:\n{}", indent(&r.body));
    let unknown = c.get(MessageState::Unknown);
    if unknown > 0 {
        crate::outln!(
            "\n{unknown} message(s) have an unknown outcome (in flight when crier stopped); decide with `crier history recipients {} --state unknown`:",
            r.id
        );
        for m in ledger.messages_of(id, Some(MessageState::Unknown)).take(20) {
            let m = m?;
            crate::outln!("  {}  {}  {}", m.id, m.address, m.provider);
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
    cells: Cells,
) -> anyhow::Result<Outcome> {
    let id = parse_run(run)?;
    let state = state
        .map(str::parse::<MessageState>)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let history = open_history(config)?;
    let ledger = Ledger::on(history.get());
    ledger.run(id)?;
    let limit = limit.unwrap_or(u64::MAX) as usize;
    let messages = ledger.messages_of(id, state).take(limit);
    write_messages(config, &ledger, messages, format, cells)
}

fn write_messages<'a>(
    config: &Config,
    ledger: &Ledger,
    messages: impl Iterator<Item = Result<Message, LedgerError>> + 'a,
    format: Format,
    cells: Cells,
) -> anyhow::Result<Outcome> {
    match format {
        Format::Csv => {
            messages_csv(ledger, messages, cells, crate::console::stdout())?;
        }
        Format::Json => print_json(messages.map(|m| m.map(|m| MessageView::from(&m))))?,
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
            crate::outln!("{n} message{}", if n == 1 { "" } else { "s" });
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
        crate::outln!(
            "run {id} ({}) removed: hidden from listings, kept for audit (`--status removed` lists it)",
            r.job
        );
        return Ok(Outcome::Ok);
    }
    if !yes {
        let total = r.counters.total();
        match crate::console::confirm(&format!(
            "Delete run {id} ({}) and its {total} messages for good?",
            r.job
        ))? {
            None => bail!(
                "--purge deletes run {id} and its {total} messages for good; add --yes to confirm without a terminal"
            ),
            Some(false) => {
                crate::outln!("nothing deleted");
                return Ok(Outcome::Failed);
            }
            Some(true) => {}
        }
    }
    let n = ledger.purge(id)?;
    ledger.flush()?;
    crate::outln!("run {id} purged with {n} messages");
    Ok(Outcome::Ok)
}

fn cancel(config: &Config, run: &str) -> anyhow::Result<Outcome> {
    let id = parse_run(run)?;
    let store = open_store(config)?;
    let ledger = Ledger::new(store.as_ref());
    let n = ledger.cancel(id)?;
    ledger.flush()?;
    let r = ledger.run(id)?;
    crate::outln!(
        "run {id} cancelled: {n} queued messages cancelled; status {}",
        r.status()
    );
    Ok(Outcome::Ok)
}

fn retry(config: &Config, run: &str, yes: bool) -> anyhow::Result<Outcome> {
    let id = parse_run(run)?;
    let store = open_store(config)?;
    let ledger = Ledger::new(store.as_ref());
    let r = ledger.run(id)?;
    let unknown: Vec<_> = ledger
        .ids_in_state(id, MessageState::Unknown)
        .collect::<Result<_, _>>()?;
    if unknown.is_empty() {
        crate::outln!("run {id} has no unknown messages");
        return Ok(Outcome::Ok);
    }
    if !yes {
        anyhow::bail!(
            "{} unknown messages of run {id} may have reached their recipients already; check with the provider, then add --yes to queue them again",
            unknown.len()
        );
    }
    let changes: Vec<Change> = unknown
        .iter()
        .map(|m| {
            let mut c = Change::to(*m, MessageState::Queued);
            c.reason = Some("queued again by `crier history retry`".into());
            c
        })
        .collect();
    ledger.record(&changes)?;
    crate::outln!(
        "run {id}: {} unknown messages queued again; `crier send <job file of {}> --resume {id}` (or the daemon, at its next start) sends them",
        changes.len(),
        r.job
    );
    Ok(Outcome::Ok)
}

pub(super) fn logs(config: &Config, args: &LogsArgs) -> anyhow::Result<Outcome> {
    let filter = MessageQuery {
        channel: args.channel.as_deref(),
        state: args.state.as_deref(),
        kind: args.kind.as_deref(),
        period: args.period.period.as_deref(),
        from: args.period.from.as_deref(),
        to: args.period.to.as_deref(),
        phone: args.phone.as_deref(),
        recipient: args.recipient.as_deref(),
        run: args.run.as_deref(),
        include_removed: args.include_removed,
    }
    .filter(
        Face::Cli,
        config.tz,
        config.region,
        &config.default_region,
        Utc::now(),
    )
    .map_err(anyhow::Error::msg)?;
    let history = open_history(config)?;
    let ledger = Ledger::on(history.get());
    let limit = limit_for(args.format, args.limit) as usize;
    let messages = if limit == u64::MAX as usize {
        query::export(&ledger, &filter)
    } else {
        Box::new(query::messages(&ledger, &filter).take(limit))
    };
    write_messages(config, &ledger, messages, args.format, Cells::raw(args.raw))
}
