//! `crier validate`: every error in crier.yaml and the job files, then one line per job.

use std::path::PathBuf;

use chrono::Utc;

use super::Outcome;
use crate::cli::{Cli, ValidateArgs};
use crate::config::{self, Config, ConfigError};
use crate::diag::Diagnostics;
use crate::job;

pub(super) fn run(cli: &Cli, args: &ValidateArgs) -> anyhow::Result<Outcome> {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(ConfigError::Invalid(diags)) => {
            report(&diags);
            crate::errln!("job files were not checked: fix crier.yaml first");
            return Ok(Outcome::Failed);
        }
        Err(e) => return Err(e.into()),
    };
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("jobs")]
    } else {
        args.paths.clone()
    };
    let files = match job::job_files(&paths) {
        Ok(f) => f,
        Err(diags) => {
            report(&diags);
            return Ok(Outcome::Failed);
        }
    };
    let (jobs, diags) = job::load_all(&files, &config, &config::env::from_process);
    if !diags.is_empty() {
        report(&diags);
        return Ok(Outcome::Failed);
    }
    let now = Utc::now();
    if let Some(path) = &config.source {
        crate::outln!("ok  {}", path.display());
    }
    note_unset_secrets(&config);
    for job in &jobs {
        let when = match (&job.schedule, job.enabled) {
            (_, false) => "disabled".to_string(),
            (None, true) => "on demand".to_string(),
            (Some(s), true) => match s.next_after(now) {
                Some(t) => format!(
                    "next {} ({})",
                    crate::job::schedule::zoned(t, s.tz),
                    s.describe()
                ),
                None => format!("no future fire time ({})", s.describe()),
            },
        };
        crate::outln!("ok  {}  {}  {}", job.name, job.file.display(), when);
    }
    Ok(Outcome::Ok)
}

/// Validation checks the shape of the config, not the credentials of this machine: one
/// note names the secrets whose variables are not set.
fn note_unset_secrets(config: &Config) {
    if config.unset_secrets.is_empty() {
        return;
    }
    let mut vars: Vec<&str> = config
        .unset_secrets
        .iter()
        .map(|s| s.var.as_str())
        .collect();
    vars.sort_unstable();
    vars.dedup();
    crate::outln!(
        "note: {} not set here (fine for validate; send, run, serve and providers check need {}): {}",
        if vars.len() == 1 {
            "1 secret is"
        } else {
            "these secrets are"
        },
        if vars.len() == 1 { "it" } else { "them" },
        vars.join(", ")
    );
}

fn report(diags: &Diagnostics) {
    crate::errln!("{diags}");
    let files: std::collections::BTreeSet<_> = diags.iter().map(|d| &d.file).collect();
    crate::errln!(
        "{} error{} in {} file{}",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" },
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    );
}
