//! `crier schema`: the JSON Schema of job files or crier.yaml, for editors and CI.

use super::Outcome;
use crate::cli::{SchemaArgs, SchemaKind};
use crate::config::RawConfig;
use crate::job::RawJob;

pub(super) fn run(args: &SchemaArgs) -> anyhow::Result<Outcome> {
    let schema = match args.kind {
        SchemaKind::Job => schemars::schema_for!(RawJob),
        SchemaKind::Config => schemars::schema_for!(RawConfig),
    };
    crate::outln!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(Outcome::Ok)
}
