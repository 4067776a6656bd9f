//! `crier import`: CSV rows into the store, with a report of what happened to each.

use anyhow::bail;

use super::{Outcome, open_store};
use crate::cli::{DelimiterArg, ImportArgs};
use crate::config::Config;
use crate::recipients::import::{self, Delimiter, ImportOptions};
use crate::recipients::phone;

pub(super) fn run(config: &Config, args: &ImportArgs) -> anyhow::Result<Outcome> {
    let region = match &args.default_region {
        Some(code) => match phone::parse_region(code) {
            Some(id) => id,
            None => bail!("--default-region `{code}` is not an ISO 3166 region code (e.g. ZA)"),
        },
        None => config.region,
    };
    let options = ImportOptions {
        kind: args.kind.into(),
        delimiter: match args.delimiter {
            DelimiterArg::Auto => Delimiter::Auto,
            DelimiterArg::Comma => Delimiter::Byte(b','),
            DelimiterArg::Semicolon => Delimiter::Byte(b';'),
            DelimiterArg::Tab => Delimiter::Byte(b'\t'),
        },
        region,
        dry_run: args.dry_run,
        strict: args.strict,
        rejects: args.rejects.clone(),
    };
    let store = open_store(config)?;
    let started = std::time::Instant::now();
    let report = import::import(store.as_ref(), &args.file, &options)?;
    let elapsed = started.elapsed();
    tracing::info!(
        file = %args.file.display(),
        kind = %options.kind,
        rows = report.rows,
        inserted = report.inserted,
        updated = report.updated,
        unchanged = report.unchanged,
        rejected = report.rejected,
        seconds = elapsed.as_secs_f64(),
        dry_run = report.dry_run,
        "Import finished."
    );

    for message in &report.messages {
        crate::errln!("{message}");
    }
    let shown = report.messages.len() as u64;
    let noted = report.rejected + report.invalid_phones + report.duplicates;
    if noted > shown {
        crate::errln!(
            "… and {} more (see --rejects for every rejected row)",
            noted - shown
        );
    }
    if args.strict && report.rejected > 0 {
        crate::errln!(
            "strict: {} of {} rows rejected; nothing was imported",
            report.rejected,
            report.rows
        );
        return Ok(Outcome::Failed);
    }
    let verb = if report.dry_run {
        "would import"
    } else {
        "imported"
    };
    crate::outln!(
        "{verb} {} ({}s): {} rows: {} inserted, {} updated, {} unchanged, {} rejected ({:.1}s)",
        args.file.display(),
        options.kind,
        report.rows,
        report.inserted,
        report.updated,
        report.unchanged,
        report.rejected,
        elapsed.as_secs_f64(),
    );
    if report.invalid_phones > 0 || report.duplicates > 0 {
        crate::outln!(
            "warnings: {} invalid phone numbers (stored without one), {} repeated ids (last row wins)",
            report.invalid_phones,
            report.duplicates
        );
    }
    if report.dry_run {
        crate::outln!("dry run: nothing was written");
    }
    if let Some(path) = &args.rejects
        && report.rejected > 0
    {
        crate::outln!("rejected rows written to {}", path.display());
    }
    Ok(if report.rejected > 0 {
        Outcome::Failed
    } else {
        Outcome::Ok
    })
}
