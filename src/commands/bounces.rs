//! `crier bounces ingest`: one bounce or abuse report from a file or standard input (what
//! an MTA's pipe transport hands over), or every new message of a Maildir.
//!
//! Its callers are MTAs, so it answers in `sysexits.h` codes, which Postfix's and Exim's
//! pipe transports understand: 0 recorded (or nothing to record), 65 (`EX_DATAERR`) the
//! input is no report crier can use (the MTA returns it to its sender, the postmaster),
//! 66 (`EX_NOINPUT`) the file cannot be read, 75 (`EX_TEMPFAIL`) the config or the store
//! is unavailable now, so the MTA keeps the message and tries again. The input is read
//! and understood before the store is opened, so bad input changes nothing; while a
//! daemon holds the store, the report (standard input included) is handed to it.

use std::path::{Path, PathBuf};

use super::{Outcome, load_config, open_store};
use crate::bounces::{self, Applied, ApplyError, Bounce, Effect, Kind};
use crate::cli::{BouncesCommand, Cli};
use crate::config::Config;
use crate::store::Store;

/// Recorded, or nothing to record.
const EX_OK: u8 = 0;
/// The input is no report crier can use.
const EX_DATAERR: u8 = 65;
/// The input file cannot be read.
const EX_NOINPUT: u8 = 66;
/// Try again later: the config or the store is unavailable.
const EX_TEMPFAIL: u8 = 75;

/// Largest message read: far above what MTAs return (Postfix's `bounce_size_limit` is
/// 50 KB, Exim's `return_size_limit` 100 KB), and within what a daemon accepts.
const MAX_INPUT: usize = 32 << 20;

pub(super) fn run(cli: &Cli, command: &BouncesCommand) -> Outcome {
    let BouncesCommand::Ingest(args) = command;
    Outcome::Exit(match &args.maildir {
        Some(dir) => maildir(cli, dir),
        None => one(cli, args.file.as_deref()),
    })
}

/// The config, or `EX_TEMPFAIL` (an MTA retries until someone fixes it).
fn config(cli: &Cli) -> Result<Config, u8> {
    load_config(cli).map_err(|e| {
        crate::errln!("error: {e:#} (nothing was changed; try again later)");
        EX_TEMPFAIL
    })
}

/// Hands the command to the daemon holding the store, if one runs: its exit code.
fn forwarded(config: &Config, stdin: Option<&[u8]>) -> Option<u8> {
    if crate::console::is_forwarded() {
        return None;
    }
    let stream = crate::control::connect(config)?;
    Some(
        crate::control::forward_with_stdin(stream, stdin).unwrap_or_else(|e| {
            crate::errln!("error: {e:#} (try again later)");
            EX_TEMPFAIL
        }),
    )
}

fn store(config: &Config) -> Result<Box<dyn Store>, u8> {
    open_store(config).map_err(|e| {
        crate::errln!("error: {e:#} (nothing was changed; try again later)");
        EX_TEMPFAIL
    })
}

/// One report from `file`, or standard input for `None` or `-`.
fn one(cli: &Cli, file: Option<&Path>) -> u8 {
    let from_stdin = file.is_none_or(|f| f.as_os_str() == "-");
    let (raw, shown) = match file.filter(|_| !from_stdin) {
        None => (crate::console::read_stdin(), "standard input".to_string()),
        Some(path) => (std::fs::read(path), path.display().to_string()),
    };
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            crate::errln!("error: cannot read {shown}: {e}");
            return EX_NOINPUT;
        }
    };
    if raw.len() > MAX_INPUT {
        crate::errln!(
            "error: {shown}: {} bytes is too large for a bounce (at most {} MB; nothing was changed)",
            raw.len(),
            MAX_INPUT >> 20
        );
        return EX_DATAERR;
    }
    let bounce = match bounces::parse(&raw) {
        Ok(bounce) => bounce,
        Err(e) => {
            crate::errln!("error: {shown}: {e} (nothing was changed)");
            return EX_DATAERR;
        }
    };
    let config = match config(cli) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(code) = forwarded(&config, from_stdin.then_some(raw.as_slice())) {
        return code;
    }
    let store = match store(&config) {
        Ok(store) => store,
        Err(code) => return code,
    };
    match record(store.as_ref(), &config, &bounce) {
        Ok(line) => {
            crate::outln!("{line}");
            EX_OK
        }
        Err((code, why)) => {
            crate::errln!("error: {shown}: {why}");
            code
        }
    }
}

/// Applies one report; the line that says what it did, or the exit code and why not.
fn record(store: &dyn Store, config: &Config, bounce: &Bounce) -> Result<String, (u8, String)> {
    match bounces::apply(
        store,
        bounce,
        config.bounces.hard_bounce_limit,
        config.region,
    ) {
        Ok(applied) => {
            tracing::info!(
                kind = bounce.kind.as_str(),
                status = %bounce.status,
                message = applied.message.map(|m| m.to_string()),
                opted_out = applied.opted_out,
                "Bounce recorded."
            );
            Ok(describe(bounce, &applied))
        }
        Err(e @ ApplyError::Unidentified) => {
            Err((EX_DATAERR, format!("{e} (nothing was changed)")))
        }
        Err(e) => Err((EX_TEMPFAIL, format!("{e:#} (try again later)"))),
    }
}

/// What a report did, in one line: `01JD…-000003: undelivered (bounce:5.1.1: 550 …);
/// ann@example.net put on the opt-out list (bounce)`.
fn describe(bounce: &Bounce, applied: &Applied) -> String {
    let what = match bounce.kind {
        Kind::Hard => "hard bounce",
        Kind::Soft => "soft bounce",
        Kind::Complaint => "complaint",
        Kind::Other => "report of no failure",
    };
    let detail = match &bounce.diagnostic {
        Some(d) if !d.is_empty() => format!("{}: {d}", bounce.code()),
        _ => bounce.code(),
    };
    let mut line = match (&applied.effect, applied.message) {
        (Effect::Undelivered, Some(id)) => format!("{id}: undelivered ({detail})"),
        (Effect::Recorded(state), Some(id)) => {
            format!("{id}: {what} recorded ({detail}); still {state}")
        }
        (Effect::Unchanged(state), Some(id)) => {
            format!("{id}: {what} ({detail}); the message is {state}, unchanged")
        }
        (Effect::UnknownMessage(id), _) => {
            format!("{id}: {what} ({detail}) for a message the history does not have")
        }
        _ => format!("{what} ({detail}) naming no crier message"),
    };
    if let (Some(reason), Some(address)) = (applied.opted_out, &applied.address) {
        line.push_str(&format!("; {address} put on the opt-out list ({reason})"));
    }
    line
}

/// Every message in `dir/new`, oldest name first; each moves to `dir/cur` once handled.
fn maildir(cli: &Cli, dir: &Path) -> u8 {
    let config = match config(cli) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(code) = forwarded(&config, None) {
        return code;
    }
    let new = dir.join("new");
    let cur = dir.join("cur");
    let mut names: Vec<String> = match std::fs::read_dir(&new) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(e) => {
            crate::errln!("error: {} is not a Maildir: {e}", new.display());
            return EX_NOINPUT;
        }
    };
    names.sort();
    let store = match store(&config) {
        Ok(store) => store,
        Err(code) => return code,
    };
    let mut tally = Tally::default();
    let mut code = EX_OK;
    for name in &names {
        let path = new.join(name);
        let Ok(raw) = std::fs::read(&path) else {
            continue; // Taken by another reader meanwhile.
        };
        let (flag, result) = match bounces::parse(&raw) {
            Err(e) => ('F', Err((EX_DATAERR, format!("{e}")))),
            Ok(bounce) => match record(store.as_ref(), &config, &bounce) {
                Ok(line) => {
                    tally.count(bounce.kind);
                    ('S', Ok(line))
                }
                Err((EX_TEMPFAIL, why)) => {
                    crate::errln!("error: {name}: {why}; it and the rest stay in new/");
                    code = EX_TEMPFAIL;
                    break;
                }
                Err(e) => ('F', Err(e)),
            },
        };
        match &result {
            Ok(line) => crate::outln!("{name}: {line}"),
            Err((_, why)) => {
                tally.unusable += 1;
                crate::errln!("{name}: {why}; moved to cur/ flagged F");
            }
        }
        if let Err(e) = std::fs::rename(&path, in_cur(&cur, name, flag)) {
            crate::errln!("error: {name}: cannot move it to {}: {e}", cur.display());
            code = EX_TEMPFAIL;
            break;
        }
    }
    crate::outln!("{}", tally.summary());
    match code {
        EX_OK if tally.unusable > 0 => EX_DATAERR,
        code => code,
    }
}

/// A message's path in `cur/` with one Maildir flag: `NAME:2,S`.
fn in_cur(cur: &Path, name: &str, flag: char) -> PathBuf {
    let base = name.split_once(":2,").map_or(name, |(base, _)| base);
    cur.join(format!("{base}:2,{flag}"))
}

/// Reports of one Maildir run, by kind.
#[derive(Debug, Default)]
struct Tally {
    hard: usize,
    soft: usize,
    complaints: usize,
    other: usize,
    unusable: usize,
}

impl Tally {
    fn count(&mut self, kind: Kind) {
        match kind {
            Kind::Hard => self.hard += 1,
            Kind::Soft => self.soft += 1,
            Kind::Complaint => self.complaints += 1,
            Kind::Other => self.other += 1,
        }
    }

    fn summary(&self) -> String {
        let read = self.hard + self.soft + self.complaints + self.other + self.unusable;
        format!(
            "{read} read: {} hard, {} soft, {} complaints, {} other; {} unusable (flagged F in cur/)",
            self.hard, self.soft, self.complaints, self.other, self.unusable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_moves_to_cur_with_one_flag() {
        let cur = Path::new("/m/cur");
        assert_eq!(in_cur(cur, "1700.1.host", 'S'), cur.join("1700.1.host:2,S"));
        assert_eq!(
            in_cur(cur, "1700.1.host:2,", 'F'),
            cur.join("1700.1.host:2,F")
        );
    }
}
