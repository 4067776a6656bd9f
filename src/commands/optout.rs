//! `crier optout`: keep the opt-out list.

use std::io::BufRead;

use anyhow::{Context, bail};

use super::{Outcome, open_store, print_table};
use crate::cli::{Format, OptoutCommand};
use crate::config::Config;
use crate::history::export::{Cells, csv_writer, iso};
use crate::recipients::optout::{OptOuts, normalize};

fn normalize_all(addresses: &[String], config: &Config) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(addresses.len());
    let mut bad = Vec::new();
    for a in addresses {
        match normalize(a, config.region) {
            Ok(n) => out.push(n),
            Err(e) => bad.push(e),
        }
    }
    if !bad.is_empty() {
        bail!("{} (nothing was changed)", bad.join("; "));
    }
    Ok(out)
}

pub(super) fn run(config: &Config, command: &OptoutCommand) -> anyhow::Result<Outcome> {
    let store = open_store(config)?;
    let list = OptOuts::new(store.directory());
    match command {
        OptoutCommand::Add { addresses, reason } => {
            let addresses = normalize_all(addresses, config)?;
            let n = list.add(&addresses, reason)?;
            store.flush()?;
            crate::outln!("{n} added, {} already on the list", addresses.len() - n);
        }
        OptoutCommand::Remove { addresses } => {
            let addresses = normalize_all(addresses, config)?;
            let n = list.remove(&addresses)?;
            store.flush()?;
            crate::outln!("{n} removed, {} were not on the list", addresses.len() - n);
        }
        OptoutCommand::List { format, raw } => {
            let entries = list.list().collect::<Result<Vec<_>, _>>()?;
            match format {
                Format::Table => {
                    let rows: Vec<Vec<String>> = entries
                        .iter()
                        .map(|e| vec![e.address.clone(), iso(e.added_at), e.reason.clone()])
                        .collect();
                    print_table(&["address", "added", "reason"], &rows);
                    crate::outln!(
                        "{} address{}",
                        rows.len(),
                        if rows.len() == 1 { "" } else { "es" }
                    );
                }
                Format::Csv => {
                    let cells = Cells::raw(*raw);
                    let mut w = csv_writer(crate::console::stdout());
                    w.write_record(["address", "added_at", "reason"])?;
                    for e in &entries {
                        w.write_record([
                            &*cells.address(&e.address),
                            &iso(e.added_at),
                            &cells.text(&e.reason),
                        ])?;
                    }
                    w.flush()?;
                }
                Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&entries)?),
            }
        }
        OptoutCommand::Import { file } => {
            let reader = std::io::BufReader::new(
                std::fs::File::open(file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
            );
            let mut addresses = Vec::new();
            let mut bad = Vec::new();
            for (i, line) in reader.lines().enumerate() {
                let line = line.with_context(|| format!("{}: line {}", file.display(), i + 1))?;
                let first = line
                    .split([',', ';', '\t'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_matches('"');
                if first.is_empty() {
                    continue;
                }
                match normalize(first, config.region) {
                    Ok(a) => addresses.push(a),
                    // A header row is not an address; anything else is reported.
                    Err(_) if i == 0 => {}
                    Err(e) => bad.push(format!("line {}: {e}", i + 1)),
                }
            }
            if !bad.is_empty() {
                for b in &bad {
                    crate::errln!("{}: {b}", file.display());
                }
                bail!(
                    "{} bad lines in {}; nothing was imported",
                    bad.len(),
                    file.display()
                );
            }
            let n = list.add(&addresses, "import")?;
            store.flush()?;
            crate::outln!("{n} added, {} already on the list", addresses.len() - n);
        }
    }
    Ok(Outcome::Ok)
}
