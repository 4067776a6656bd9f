//! `crier config show`: the effective config, secrets redacted.

use super::Outcome;
use crate::config::Config;

pub(super) fn run(config: &Config) -> anyhow::Result<Outcome> {
    match &config.source {
        Some(path) => crate::outln!("# effective config from {}", path.display()),
        None => crate::outln!("# built-in defaults (no crier.yaml)"),
    }
    crate::console::write_out(format_args!("{}", serde_yaml::to_string(config)?));
    Ok(Outcome::Ok)
}
