//! `crier import`: a customer or lead CSV into the store, streamed.
//!
//! The file is read once, row by row (a second validation-only pass comes first with
//! `--strict`), and written in atomic batches, so memory stays flat whatever the file's
//! size: the one thing that grows is the set of ids seen (8 bytes a row) that spots
//! duplicate ids across batches. A row that cannot be a recipient is rejected with its
//! line, column and value and copied to the rejects file; a bad phone number only warns,
//! since the customer still exists and email or portal jobs can still reach them.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use csv::StringRecord;
use phonenumber::country::Id;
use thiserror::Error;

use super::RecipientKind;
use super::row::{self, Column, Header, ParsedRow, RowError};
use crate::store::{Store, StoreError, Upsert};

/// Field separator of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiter {
    /// Guessed from the header line: the most frequent of `,` `;` and tab.
    Auto,
    Byte(u8),
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub kind: RecipientKind,
    pub delimiter: Delimiter,
    pub region: Id,
    /// Check and count, write nothing.
    pub dry_run: bool,
    /// Any rejected row aborts the import before anything is written.
    pub strict: bool,
    /// Where to copy rejected rows (with their line and reason).
    pub rejects: Option<PathBuf>,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// Rows whose id appeared earlier in the file (the last one wins).
    pub duplicates: u64,
    /// Rows stored without a usable phone number.
    pub invalid_phones: u64,
    /// The first rejections and warnings, for the terminal.
    pub messages: Vec<String>,
    pub dry_run: bool,
}

/// Why an import stopped.
#[derive(Debug, Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("cannot write rejects file {path}: {message}")]
    Rejects { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rows per atomic write.
const BATCH: usize = 4096;
/// Rejections and warnings kept for display.
const MAX_MESSAGES: usize = 20;

/// Opens a CSV file: strips a UTF-8 BOM, picks the delimiter, reads the header.
pub fn open_csv(
    path: &Path,
    delimiter: Delimiter,
) -> Result<(csv::Reader<Box<dyn Read + Send>>, Header), ImportError> {
    let open_err = |source| ImportError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let mut reader = BufReader::with_capacity(1 << 18, file);
    let head = reader.fill_buf().map_err(open_err)?;
    let bom = head.starts_with(b"\xEF\xBB\xBF");
    let byte = match delimiter {
        Delimiter::Byte(b) => b,
        Delimiter::Auto => detect_delimiter(if bom { &head[3..] } else { head }),
    };
    if bom {
        reader.consume(3);
    }
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(byte)
        .flexible(true)
        .has_headers(true)
        .from_reader(Box::new(reader) as Box<dyn Read + Send>);
    let header = csv.headers().map_err(|e| csv_error(path, &e))?.clone();
    if header.iter().all(|h| h.trim().is_empty()) {
        return Err(ImportError::Csv {
            path: path.to_path_buf(),
            line: 1,
            message: "the file has no header row".into(),
        });
    }
    Ok((csv, Header::new(&header)))
}

/// Counts `,` `;` and tab outside quotes in the first line.
pub fn detect_delimiter(head: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in head {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let best = (0..3).max_by_key(|&i| (counts[i], 3 - i)).unwrap_or(0);
    candidates[best]
}

/// File line numbers of records. The csv crate counts record terminators, not the
/// newlines inside quoted fields, so its line drifts after a multi-line field; adding back
/// the newlines seen in earlier fields gives the line an editor shows.
#[derive(Debug, Default)]
pub struct Lines {
    pub(crate) hidden: u64,
}

impl Lines {
    /// The file line `record` starts on; call [`Lines::advance`] after it.
    pub fn start(&self, record: &StringRecord) -> u64 {
        record.position().map(|p| p.line()).unwrap_or(0) + self.hidden
    }

    pub fn advance(&mut self, record: &StringRecord) {
        let text = record.as_slice();
        if text.contains('\n') {
            self.hidden += text.bytes().filter(|&b| b == b'\n').count() as u64;
        }
    }
}

fn csv_error(path: &Path, e: &csv::Error) -> ImportError {
    ImportError::Csv {
        path: path.to_path_buf(),
        line: e.position().map(|p| p.line()).unwrap_or(0),
        message: e.to_string(),
    }
}

/// Writes rejected rows: the original columns, then `line` and `error`.
struct Rejects {
    path: PathBuf,
    writer: csv::Writer<File>,
}

impl Rejects {
    fn create(path: &Path, header: &Header) -> Result<Rejects, ImportError> {
        let fail = |message: String| ImportError::Rejects {
            path: path.to_path_buf(),
            message,
        };
        let mut writer = csv::Writer::from_path(path).map_err(|e| fail(e.to_string()))?;
        let mut head: Vec<&str> = header.names.iter().map(String::as_str).collect();
        head.extend(["line", "error"]);
        writer
            .write_record(&head)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Rejects {
            path: path.to_path_buf(),
            writer,
        })
    }

    fn write(
        &mut self,
        record: &StringRecord,
        width: usize,
        line: u64,
        error: &str,
    ) -> Result<(), ImportError> {
        let mut fields: Vec<&str> = record.iter().collect();
        fields.resize(width, "");
        let line = line.to_string();
        fields.push(&line);
        fields.push(error);
        self.writer
            .write_record(&fields)
            .map_err(|e| ImportError::Rejects {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    fn finish(mut self) -> Result<(), ImportError> {
        self.writer.flush().map_err(|e| ImportError::Rejects {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

fn describe(errors: &[RowError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Imports `path` into `store`.
pub fn import(
    store: &dyn Store,
    path: &Path,
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    if options.strict {
        let check = scan(None, path, options)?;
        if check.rejected > 0 {
            return Ok(ImportReport {
                inserted: 0,
                updated: 0,
                unchanged: 0,
                ..check
            });
        }
    }
    scan(Some(store), path, options)
}

/// One pass over the file. Without a store it only parses (the strict pre-check).
///
/// Two threads, so both cores work: this one writes batches to the store while a reader
/// thread parses the next rows (phone-number validation is the costly part of parsing).
/// The channel between them holds two batches, so memory stays flat.
fn scan(
    store: Option<&dyn Store>,
    path: &Path,
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let (csv, header) = open_csv(path, options.delimiter)?;
    if !header.has(&Column::Id) && !header.has(&Column::Login) {
        return Err(ImportError::Csv {
            path: path.to_path_buf(),
            line: 1,
            message: format!(
                "no `id` or `login` column (columns: {})",
                header.names.join(", ")
            ),
        });
    }
    let rejects = match &options.rejects {
        Some(p) if store.is_some() || options.strict => Some(Rejects::create(p, &header)?),
        _ => None,
    };
    let mut report = ImportReport {
        dry_run: options.dry_run || store.is_none(),
        ..ImportReport::default()
    };
    let mut notes = Notes::default();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(u64, ParsedRow)>>(2);
    let parsed = std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_rows(csv, header, rejects, path, options, tx));
        let mut batch = Batch::default();
        let mut applied = Ok(());
        for rows in rx {
            batch.rows = rows;
            applied = batch.apply(store, options, &mut report, &mut notes);
            if applied.is_err() {
                break; // Dropping `rx` stops the reader.
            }
        }
        let read = reader.join().unwrap_or_else(|_| {
            Err(ImportError::Csv {
                path: path.to_path_buf(),
                line: 0,
                message: "the CSV reader thread panicked".into(),
            })
        });
        applied.and(read)
    })?;
    report.rows = parsed.rows;
    report.rejected = parsed.rejected;
    report.invalid_phones = parsed.invalid_phones;
    notes.merge(parsed.notes);
    report.messages = notes.finish();
    if let Some(store) = store
        && !options.dry_run
    {
        store.flush()?;
    }
    Ok(report)
}

/// What the reader thread counted.
#[derive(Default)]
struct ReadReport {
    rows: u64,
    rejected: u64,
    invalid_phones: u64,
    notes: Notes,
}

/// Reads and parses every row, sending accepted ones on in batches.
fn read_rows(
    mut csv: csv::Reader<Box<dyn Read + Send>>,
    header: Header,
    mut rejects: Option<Rejects>,
    path: &Path,
    options: &ImportOptions,
    tx: std::sync::mpsc::SyncSender<Vec<(u64, ParsedRow)>>,
) -> Result<ReadReport, ImportError> {
    let mut out = ReadReport::default();
    let mut pending = Vec::with_capacity(BATCH);
    let mut record = StringRecord::new();
    let mut lines = Lines::default();
    lines.advance(&header.record);
    loop {
        match csv.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if e.is_io_error() => return Err(csv_error(path, &e)),
            Err(e) => {
                // A malformed row (e.g. invalid UTF-8) is rejected; the file goes on.
                out.rows += 1;
                out.rejected += 1;
                let line = e.position().map(|p| p.line()).unwrap_or(0) + lines.hidden;
                out.notes.add(line, format!("rejected: {e}"));
                continue;
            }
        }
        out.rows += 1;
        let line = lines.start(&record);
        lines.advance(&record);
        match row::parse(&header, &record, options.kind, options.region) {
            Err(errors) => {
                out.rejected += 1;
                let reason = describe(&errors);
                out.notes.add(line, format!("rejected: {reason}"));
                if let Some(r) = &mut rejects {
                    r.write(&record, header.names.len(), line, &reason)?;
                }
            }
            Ok(parsed) => {
                if parsed.invalid_phone {
                    out.invalid_phones += 1;
                    let raw = parsed.recipient.phone_raw.as_deref().unwrap_or_default();
                    out.notes.add(
                        line,
                        format!(
                            "warning: phone `{raw}` is not a valid number; stored without one (SMS jobs skip it)"
                        ),
                    );
                }
                pending.push((line, parsed));
                if pending.len() >= BATCH
                    && tx
                        .send(std::mem::replace(&mut pending, Vec::with_capacity(BATCH)))
                        .is_err()
                {
                    return Ok(out); // The writer stopped; its error is reported.
                }
            }
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(pending);
    }
    if let Some(r) = rejects {
        r.finish()?;
    }
    Ok(out)
}

/// The first few rejections and warnings, by line.
#[derive(Default)]
struct Notes(Vec<(u64, String)>);

impl Notes {
    fn add(&mut self, line: u64, message: String) {
        if self.0.len() < MAX_MESSAGES {
            self.0.push((line, message));
        }
    }

    fn merge(&mut self, other: Notes) {
        self.0.extend(other.0);
    }

    fn finish(mut self) -> Vec<String> {
        self.0.sort_by_key(|(line, _)| *line);
        self.0.truncate(MAX_MESSAGES);
        self.0
            .into_iter()
            .map(|(line, m)| format!("line {line}: {m}"))
            .collect()
    }
}

/// Rows waiting for their atomic write, and what earlier batches saw.
#[derive(Default)]
struct Batch {
    rows: Vec<(u64, ParsedRow)>,
    seen: HashSet<u64>,
    /// Logins given fresh ids during this import (dry runs invent them).
    new_logins: HashMap<String, u64>,
    invented: u64,
}

impl Batch {
    fn apply(
        &mut self,
        store: Option<&dyn Store>,
        options: &ImportOptions,
        report: &mut ImportReport,
        notes: &mut Notes,
    ) -> Result<(), ImportError> {
        let Some(store) = store else {
            self.rows.clear();
            return Ok(());
        };
        let mut recipients = Vec::with_capacity(self.rows.len());
        for (line, parsed) in self.rows.drain(..) {
            let mut r = parsed.recipient;
            r.id = match parsed.id {
                Some(id) => id,
                None => {
                    let login = r.login.clone().unwrap_or_default();
                    match self.new_logins.get(&login) {
                        Some(id) => *id,
                        None => {
                            let id = match store.recipient_id_by_login(options.kind, &login)? {
                                Some(id) => id,
                                None if options.dry_run => {
                                    self.invented += 1;
                                    u64::MAX - self.invented
                                }
                                None => store.allocate_recipient_id(options.kind)?,
                            };
                            self.new_logins.insert(login, id);
                            id
                        }
                    }
                }
            };
            if !self.seen.insert(r.id) {
                report.duplicates += 1;
                notes.add(
                    line,
                    format!("warning: id {} appears again; this later row wins", r.id),
                );
            }
            recipients.push(r);
        }
        let outcomes = store.upsert_recipients(&recipients, !options.dry_run)?;
        for outcome in outcomes {
            match outcome {
                Upsert::Inserted => report.inserted += 1,
                Upsert::Updated => report.updated += 1,
                Upsert::Unchanged => report.unchanged += 1,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_delimiter_outside_quotes() {
        assert_eq!(detect_delimiter(b"id;name;\"a,b,c,d\"\n1;2;3"), b';');
        assert_eq!(detect_delimiter(b"id,name,phone\n"), b',');
        assert_eq!(detect_delimiter(b"id\tname\tphone\n"), b'\t');
        assert_eq!(detect_delimiter(b"id\n"), b',');
    }
}
