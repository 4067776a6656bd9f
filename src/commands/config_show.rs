//! `crier config show`: the effective config, secrets redacted.

use super::Outcome;
use crate::config::Config;

pub(super) fn run(config: &Config) -> anyhow::Result<Outcome> {
    match &config.source {
        Some(path) => println!("# effective config from {}", path.display()),
        None => println!("# built-in defaults (no crier.yaml)"),
    }
    print!("{}", serde_yaml::to_string(config)?);
    Ok(Outcome::Ok)
}
