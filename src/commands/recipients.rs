//! `crier recipients`: who a job (or a filter) reaches, and how many.
//!
//! The list streams: a table measures its columns on the first rows, CSV and JSON are
//! written as they come, so a million-customer base lists in constant memory.

use std::io::Write;

use anyhow::bail;

use super::{Outcome, open_store};
use crate::cli::{Format, KindArg, RecipientsArgs};
use crate::config::{self, Config};
use crate::history::export::{Cells, csv_writer};
use crate::job::{self, RecipientSpec, Source};
use crate::recipients::filter::{Filter, where_from_pairs};
use crate::recipients::{Recipient, RecipientKind, source};

const COLUMNS: [&str; 15] = [
    "kind",
    "id",
    "login",
    "status",
    "name",
    "email",
    "billing_email",
    "phone",
    "phone_raw",
    "category",
    "location",
    "billing_type",
    "partner",
    "tariffs",
    "attrs",
];
const TABLE_COLUMNS: [usize; 8] = [1, 2, 3, 4, 7, 5, 10, 12];

pub(super) fn run(config: &Config, args: &RecipientsArgs) -> anyhow::Result<Outcome> {
    let extra = if args.filters.is_empty() {
        None
    } else {
        let w = where_from_pairs(&args.filters).map_err(anyhow::Error::msg)?;
        match Filter::compile(&w, config.region) {
            Ok(f) => Some(f),
            Err(errors) => bail!(
                "--where: {}",
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    };
    let spec = match &args.job {
        Some(path) => match job::load(path, config, &config::env::from_process) {
            Ok(job) => {
                if args.kind.is_some() {
                    bail!("--kind comes from the job file; drop --kind or the job");
                }
                job.recipients
            }
            Err(diags) => {
                crate::errln!("{diags}");
                return Ok(Outcome::Failed);
            }
        },
        None => RecipientSpec {
            kind: args.kind.unwrap_or(KindArg::Customer).into(),
            source: Source::Store,
            filter: Filter::default(),
        },
    };
    let store = match spec.source {
        Source::Store => Some(open_store(config)?),
        Source::Csv(_) => None,
    };
    let rows = source::resolve(&spec, store.as_deref(), config.region)?;

    let mut out = Output::new(args.format, Cells::raw(args.raw), crate::console::stdout())?;
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut count = 0u64;
    let mut bad_rows = 0u64;
    for item in rows {
        let r = match item {
            Ok(r) => r,
            Err(e) => {
                bad_rows += 1;
                crate::errln!("skipped: {e}");
                continue;
            }
        };
        if extra.as_ref().is_some_and(|f| !f.matches(&r)) {
            continue;
        }
        count += 1;
        if count <= limit {
            out.row(&r)?;
        }
    }
    out.finish()?;
    let noun = match spec.kind {
        RecipientKind::Customer => "customer",
        RecipientKind::Lead => "lead",
    };
    let summary = format!(
        "{count} {noun}{}{}",
        if count == 1 { "" } else { "s" },
        if count > limit {
            format!(" ({limit} shown)")
        } else {
            String::new()
        }
    );
    match args.format {
        Format::Table => crate::outln!("{summary}"),
        _ => crate::errln!("{summary}"),
    }
    if bad_rows > 0 {
        crate::errln!("{bad_rows} rows of the CSV source could not be read");
    }
    Ok(Outcome::Ok)
}

fn fields(r: &Recipient) -> [String; 15] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        r.kind.to_string(),
        r.id.to_string(),
        opt(&r.login),
        r.status.to_string(),
        r.name.clone(),
        opt(&r.email),
        opt(&r.billing_email),
        opt(&r.phone),
        opt(&r.phone_raw),
        r.category.map(|c| c.to_string()).unwrap_or_default(),
        opt(&r.location),
        r.billing_type.map(|b| b.to_string()).unwrap_or_default(),
        opt(&r.partner),
        r.tariffs
            .iter()
            .map(|t| match t.service {
                Some(s) => format!("{s}: {}", t.plan),
                None => t.plan.clone(),
            })
            .collect::<Vec<_>>()
            .join(" | "),
        if r.attrs.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&r.attrs).unwrap_or_default()
        },
    ]
}

/// [`fields`] for a CSV: names, logins, emails and other typed text neutralised as
/// `cells` says; kind, id, status, category and billing type are crier's own values.
fn csv_fields(r: &Recipient, cells: Cells) -> [String; 15] {
    let mut f = fields(r);
    for (i, cell) in f.iter_mut().enumerate() {
        let safe = match COLUMNS[i] {
            "kind" | "id" | "status" | "category" | "billing_type" => continue,
            "phone" | "phone_raw" => cells.address(cell),
            _ => cells.text(cell),
        };
        if let std::borrow::Cow::Owned(safe) = safe {
            *cell = safe;
        }
    }
    f
}

/// Rows buffered before a table's column widths are fixed.
const TABLE_SAMPLE: usize = 500;

enum Output<W: Write> {
    Table {
        out: W,
        pending: Vec<[String; 15]>,
        widths: Option<Vec<usize>>,
    },
    Csv(Box<csv::Writer<W>>, Cells),
    Json {
        out: W,
        first: bool,
    },
}

impl<W: Write> Output<W> {
    fn new(format: Format, cells: Cells, mut out: W) -> anyhow::Result<Output<W>> {
        Ok(match format {
            Format::Table => Output::Table {
                out,
                pending: Vec::new(),
                widths: None,
            },
            Format::Csv => {
                let mut w = csv_writer(out);
                w.write_record(COLUMNS)?;
                Output::Csv(Box::new(w), cells)
            }
            Format::Json => {
                out.write_all(b"[")?;
                Output::Json { out, first: true }
            }
        })
    }

    fn row(&mut self, r: &Recipient) -> anyhow::Result<()> {
        match self {
            Output::Table {
                out,
                pending,
                widths,
            } => {
                let f = fields(r);
                match widths {
                    Some(w) => write_table_row(out, w, &f)?,
                    None => {
                        pending.push(f);
                        if pending.len() >= TABLE_SAMPLE {
                            *widths = Some(flush_table(out, pending)?);
                        }
                    }
                }
            }
            Output::Csv(w, cells) => w.write_record(csv_fields(r, *cells))?,
            Output::Json { out, first } => {
                if !*first {
                    out.write_all(b",")?;
                }
                *first = false;
                out.write_all(b"\n")?;
                serde_json::to_writer(&mut *out, r)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Output::Table {
                mut out,
                mut pending,
                widths,
            } => {
                if widths.is_none() {
                    flush_table(&mut out, &mut pending)?;
                }
                out.flush()?;
            }
            Output::Csv(mut w, _) => w.flush()?,
            Output::Json { mut out, .. } => {
                out.write_all(b"\n]\n")?;
                out.flush()?;
            }
        }
        Ok(())
    }
}

fn flush_table<W: Write>(
    out: &mut W,
    pending: &mut Vec<[String; 15]>,
) -> anyhow::Result<Vec<usize>> {
    let mut widths: Vec<usize> = TABLE_COLUMNS.iter().map(|&i| COLUMNS[i].len()).collect();
    for row in pending.iter() {
        for (w, &i) in widths.iter_mut().zip(TABLE_COLUMNS.iter()) {
            *w = (*w).max(row[i].chars().count()).min(40);
        }
    }
    let header: [String; 15] = std::array::from_fn(|i| COLUMNS[i].to_uppercase());
    write_table_row(out, &widths, &header)?;
    for row in pending.drain(..) {
        write_table_row(out, &widths, &row)?;
    }
    Ok(widths)
}

fn write_table_row<W: Write>(
    out: &mut W,
    widths: &[usize],
    row: &[String; 15],
) -> anyhow::Result<()> {
    let mut line = String::new();
    for (n, (&i, &w)) in TABLE_COLUMNS.iter().zip(widths).enumerate() {
        let cell: String = row[i].chars().take(w).collect();
        if n + 1 == TABLE_COLUMNS.len() {
            line.push_str(&cell);
        } else {
            line.push_str(&format!("{cell:<w$}  "));
        }
    }
    writeln!(out, "{}", line.trim_end())?;
    Ok(())
}
