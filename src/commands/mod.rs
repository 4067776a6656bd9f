//! What each command does, on top of the library: load config, open the store, print.
//!
//! Commands print their results on stdout and problems on stderr, and return an
//! [`Outcome`]; only here and in `main.rs` are errors `anyhow`.

mod bounces;
mod config_show;
mod history;
mod import;
mod jobs;
mod optout;
mod portal;
mod preview;
mod providers;
mod recipients;
mod schema;
mod send;
mod serve;
mod templates;
mod validate;
mod workers;

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::Config;
use crate::store::{self, Store};

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything worked: exit 0.
    Ok,
    /// The work failed or the input was invalid (details already printed): exit 1.
    Failed,
    /// A command whose callers read its exit status (`crier bounces ingest`, run by an
    /// MTA): this `sysexits.h` code.
    Exit(u8),
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        match o {
            Outcome::Ok => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::Exit(code) => ExitCode::from(code),
        }
    }
}

/// Runs the command `cli` names — inside the running daemon when one holds the store.
pub fn run(cli: &Cli) -> anyhow::Result<Outcome> {
    if let Some(outcome) = forward_if_daemon(cli)? {
        return Ok(outcome);
    }
    match &cli.command {
        Command::Validate(args) => validate::run(cli, args),
        Command::Schema(args) => schema::run(args),
        Command::Config(ConfigCommand::Show) => config_show::run(&load_config(cli)?),
        Command::Import(args) => import::run(&load_config(cli)?, args),
        Command::Preview(args) => preview::run(&load_config(cli)?, args),
        Command::Send(args) => send::run(&load_config(cli)?, args),
        Command::Templates(command) => templates::run(&load_config(cli)?, command),
        Command::Optout(command) => optout::run(&load_config(cli)?, command),
        Command::Bounces(command) => Ok(bounces::run(cli, command)),
        Command::History(args) => history::run(&load_config(cli)?, args),
        Command::Logs(args) => history::logs(&load_config(cli)?, args),
        Command::Recipients(args) => recipients::run(&load_config(cli)?, args),
        Command::Run(args) => {
            let config = load_config(cli)?;
            // Any job may fire, and any provider's delivery reports may arrive.
            if let Err(missing) = config.require_secrets(|_| true) {
                crate::errln!("{missing}");
                return Ok(Outcome::Failed);
            }
            crate::daemon::run(config, &args.jobs, args.strict, args.worker_id.clone())?;
            Ok(Outcome::Ok)
        }
        Command::Jobs(args) => jobs::run(&load_config(cli)?, args),
        Command::Serve(args) => serve::run(&load_config(cli)?, args),
        Command::Workers(args) => workers::run(&load_config(cli)?, args),
        Command::Providers(command) => providers::run(&load_config(cli)?, command),
        Command::Portal(command) => portal::run(&load_config(cli)?, command),
    }
}

/// Commands that open the store are carried out by the process holding it, if one
/// answers on its control socket (see [`crate::control`]); `run` and `serve` refuse to
/// start a second holder. `None`: run here.
fn forward_if_daemon(cli: &Cli) -> anyhow::Result<Option<Outcome>> {
    if crate::console::is_forwarded() {
        if matches!(cli.command, Command::Run(_) | Command::Serve(_)) {
            anyhow::bail!("this crier is already running: it cannot start another daemon");
        }
        return Ok(None);
    }
    let uses_store = match &cli.command {
        Command::Validate(_) | Command::Schema(_) | Command::Config(_) => false,
        // It reads its input before it looks for a daemon, and answers in exit codes an
        // MTA understands, so it forwards itself.
        Command::Bounces(_) => false,
        // Reading the history takes no lock the daemon holds: read it here, directly.
        Command::Logs(_) => false,
        // The workers' rows are in PostgreSQL, which every process opens; the embedded
        // store has no workers to list.
        Command::Workers(_) => false,
        Command::History(args) => !history::reads_only(args),
        Command::Run(_) | Command::Serve(_) => {
            let config = load_config(cli)?;
            if crate::control::connect(&config).is_some() {
                anyhow::bail!(
                    "crier is already running on {} (it answers on {}): stop it first, or let it do the work",
                    config.data_dir.display(),
                    crate::control::socket_path(&config).display()
                );
            }
            return Ok(None);
        }
        _ => true,
    };
    if !uses_store {
        return Ok(None);
    }
    let config = load_config(cli)?;
    let Some(stream) = crate::control::connect(&config) else {
        return Ok(None);
    };
    tracing::info!(socket = %crate::control::socket_path(&config).display(), "The store is held by a running crier: it carries out this command.");
    Ok(Some(match crate::control::forward(stream)? {
        0 => Outcome::Ok,
        _ => Outcome::Failed,
    }))
}

pub(crate) fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    if let Some(config) = crate::console::forwarded_config() {
        return Ok(config);
    }
    Ok(Config::load(cli.config.as_deref())?)
}

/// Loads and validates one job file; on problems prints them and returns `None`.
pub(crate) fn load_job(path: &std::path::Path, config: &Config) -> Option<crate::job::Job> {
    match crate::job::load(path, config, &crate::config::env::from_process) {
        Ok(job) => Some(job),
        Err(diags) => {
            crate::errln!("{diags}");
            None
        }
    }
}

pub(crate) fn open_store(config: &Config) -> anyhow::Result<Box<dyn Store>> {
    if let Some(store) = crate::console::forwarded_store() {
        return Ok(Box::new(store::Shared(store)));
    }
    let settings = config.store_config();
    tracing::debug!(path = %settings.path.display(), cache_mb = config.store.cache_mb, "Opening the store.");
    let place = match settings.backend {
        store::Backend::Embedded => format!(" in {}", settings.path.display()),
        // The error names the server (never the URL: it may hold the password).
        store::Backend::Postgres => String::new(),
    };
    store::open(&settings).with_context(|| format!("cannot open the store{place}"))
}

/// The history, for a command that only reads it: the daemon's own when this command
/// runs inside it, else opened here on its own (see [`store::open_history`]).
pub(crate) enum HistoryHandle {
    Shared(std::sync::Arc<dyn Store>),
    Own(Box<dyn crate::history::store::HistoryStore>),
}

impl HistoryHandle {
    pub(crate) fn get(&self) -> &dyn crate::history::store::HistoryStore {
        match self {
            HistoryHandle::Shared(store) => store.history(),
            HistoryHandle::Own(history) => history.as_ref(),
        }
    }
}

pub(crate) fn open_history(config: &Config) -> anyhow::Result<HistoryHandle> {
    if let Some(store) = crate::console::forwarded_store() {
        return Ok(HistoryHandle::Shared(store));
    }
    let settings = config.store_config();
    let place = match settings.backend {
        store::Backend::Embedded => format!(" in {}", settings.history_path().display()),
        store::Backend::Postgres => String::new(),
    };
    Ok(HistoryHandle::Own(
        store::open_history(&settings)
            .with_context(|| format!("cannot open the history{place}"))?,
    ))
}

/// Prints rows as an aligned table (cells cut at 40 characters).
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count()).min(40);
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let cell: String = cell.chars().take(*w).collect();
            if i + 1 == cells.len() {
                out.push_str(&cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        crate::outln!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}
