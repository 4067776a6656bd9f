//! `crier import`: a customer or lead CSV into the store, streamed.
//!
//! The file is read once, row by row (a second validation-only pass comes first with
//! `--strict`), and written in atomic batches, so memory stays flat whatever the file's
//! size: the one thing that grows is the set of ids seen (8 bytes a row) that spots
//! duplicate ids across batches. A row that cannot be a recipient is rejected with its
//! line, column and value and copied to the rejects file; a bad phone number only warns,
//! since the customer still exists and email or portal jobs can still reach them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use csv::StringRecord;
use phonenumber::country::Id;
use thiserror::Error;

use super::RecipientKind;
use super::row::{self, Column, Header, ParsedRow, RowError};
use crate::recipients::directory::Directory;
use crate::store::{StoreError, Upsert};

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

/// Rows per atomic write of a dry run without a store; a store says its own
/// ([`Directory::import_batch`]).
const BATCH: usize = 512;
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
    csv_reader(Box::new(file), path, delimiter)
}

/// [`open_csv`] over any byte stream; `path` names it in errors.
pub fn csv_reader(
    input: Box<dyn Read + Send>,
    path: &Path,
    delimiter: Delimiter,
) -> Result<(csv::Reader<Box<dyn Read + Send>>, Header), ImportError> {
    let open_err = |source| ImportError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 18, input);
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

/// Imports `path` into the directory `store`.
pub fn import(
    store: &dyn Directory,
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
/// Three stages, so both cores work: a reader thread cuts the file into chunks of rows
/// (with their real line numbers), [`PARSERS`] parser threads turn chunks into recipients
/// (phone-number validation is the costly part), and this thread puts the chunks back in
/// file order and writes them to the store in batches. Every channel is bounded, so
/// memory stays flat whatever the file's size.
fn scan(
    store: Option<&dyn Directory>,
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
    let mut rejects = match &options.rejects {
        Some(p) if store.is_some() || options.strict => Some(Rejects::create(p, &header)?),
        _ => None,
    };
    let mut report = ImportReport {
        dry_run: options.dry_run || store.is_none(),
        ..ImportReport::default()
    };
    let mut notes = Notes::default();
    let header = &header;
    std::thread::scope(|scope| -> Result<(), ImportError> {
        let (out_tx, out_rx) = sync_channel::<ParsedChunk>(2 * PARSERS);
        let mut work = Vec::with_capacity(PARSERS);
        for _ in 0..PARSERS {
            let (tx, rx) = sync_channel::<RawChunk>(2);
            work.push(tx);
            let out_tx = out_tx.clone();
            scope.spawn(move || parse_chunks(rx, out_tx, header, options));
        }
        drop(out_tx);
        let reader = scope.spawn(move || read_chunks(csv, header, work, path));

        let mut batch = Batch::default();
        let mut waiting: BTreeMap<u64, ParsedChunk> = BTreeMap::new();
        let mut next = 0;
        let mut written = Ok(());
        'chunks: for chunk in out_rx {
            waiting.insert(chunk.seq, chunk);
            while let Some(chunk) = waiting.remove(&next) {
                next += 1;
                written = take_chunk(
                    chunk,
                    &mut batch,
                    store,
                    options,
                    &mut report,
                    &mut notes,
                    rejects.as_mut(),
                    header,
                );
                if written.is_err() {
                    break 'chunks; // Dropping the receiver stops the parsers and the reader.
                }
            }
        }
        written?;
        reader.join().unwrap_or_else(|_| {
            Err(ImportError::Csv {
                path: path.to_path_buf(),
                line: 0,
                message: "the CSV reader thread panicked".into(),
            })
        })?;
        batch.apply(store, options, &mut report, &mut notes)
    })?;
    if let Some(r) = rejects {
        r.finish()?;
    }
    report.messages = notes.finish(path);
    if let Some(store) = store
        && !options.dry_run
    {
        store.sync()?;
    }
    Ok(report)
}

/// Parser threads. One measured as fast as two on this 2-core machine (the store writer
/// and the reader need the other core) and uses less memory; raise it on bigger machines.
const PARSERS: usize = 1;
/// Rows per chunk handed to a parser.
const CHUNK: usize = 4096;

/// Rows as read, with their file lines; `bad` are rows the CSV reader could not read.
struct RawChunk {
    seq: u64,
    rows: Vec<(u64, StringRecord)>,
    bad: Vec<(u64, String)>,
}

/// A chunk after parsing.
struct ParsedChunk {
    seq: u64,
    ok: Vec<(u64, ParsedRow)>,
    rejected: Vec<(u64, StringRecord, String)>,
    bad: Vec<(u64, String)>,
}

/// Reads the file into chunks, dealt round-robin to the parsers.
fn read_chunks(
    mut csv: csv::Reader<Box<dyn Read + Send>>,
    header: &Header,
    work: Vec<SyncSender<RawChunk>>,
    path: &Path,
) -> Result<(), ImportError> {
    let mut lines = Lines::default();
    lines.advance(&header.record);
    let mut seq = 0u64;
    let mut chunk = RawChunk {
        seq,
        rows: Vec::with_capacity(CHUNK),
        bad: Vec::new(),
    };
    loop {
        let mut record = StringRecord::new();
        match csv.read_record(&mut record) {
            Ok(true) => {
                let line = lines.start(&record);
                lines.advance(&record);
                chunk.rows.push((line, record));
            }
            Ok(false) => break,
            Err(e) if e.is_io_error() => return Err(csv_error(path, &e)),
            Err(e) => {
                // A malformed row (e.g. invalid UTF-8) is rejected; the file goes on.
                let line = e.position().map(|p| p.line()).unwrap_or(0) + lines.hidden;
                chunk.bad.push((line, unreadable(&e, header)));
            }
        }
        if chunk.rows.len() + chunk.bad.len() >= CHUNK {
            let full = std::mem::replace(
                &mut chunk,
                RawChunk {
                    seq: seq + 1,
                    rows: Vec::with_capacity(CHUNK),
                    bad: Vec::new(),
                },
            );
            if work[(seq % PARSERS as u64) as usize].send(full).is_err() {
                return Ok(()); // The writer stopped; its error is reported.
            }
            seq += 1;
        }
    }
    if !chunk.rows.is_empty() || !chunk.bad.is_empty() {
        let _ = work[(seq % PARSERS as u64) as usize].send(chunk);
    }
    Ok(())
}

/// Why the CSV reader could not read a row, naming the column.
fn unreadable(e: &csv::Error, header: &Header) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { err, .. } => {
            let column = header.names.get(err.field()).map_or("", String::as_str);
            format!(
                "{column}: the value is not UTF-8 (save the file as UTF-8; at byte {} of the value)",
                err.valid_up_to() + 1
            )
        }
        _ => e.to_string(),
    }
}

/// Parses chunks until the reader is done.
fn parse_chunks(
    rx: Receiver<RawChunk>,
    out: SyncSender<ParsedChunk>,
    header: &Header,
    options: &ImportOptions,
) {
    for raw in rx {
        let mut parsed = ParsedChunk {
            seq: raw.seq,
            ok: Vec::with_capacity(raw.rows.len()),
            rejected: Vec::new(),
            bad: raw.bad,
        };
        for (line, record) in raw.rows {
            match row::parse(header, &record, options.kind, options.region) {
                Ok(row) => parsed.ok.push((line, row)),
                Err(errors) => parsed.rejected.push((line, record, describe(&errors))),
            }
        }
        if out.send(parsed).is_err() {
            return;
        }
    }
}

/// Counts, notes and queues one parsed chunk, in file order.
#[allow(clippy::too_many_arguments)]
fn take_chunk(
    chunk: ParsedChunk,
    batch: &mut Batch,
    store: Option<&dyn Directory>,
    options: &ImportOptions,
    report: &mut ImportReport,
    notes: &mut Notes,
    mut rejects: Option<&mut Rejects>,
    header: &Header,
) -> Result<(), ImportError> {
    for (line, message) in chunk.bad {
        report.rows += 1;
        report.rejected += 1;
        notes.add(line, format!("rejected: {message}"));
    }
    for (line, record, reason) in chunk.rejected {
        report.rows += 1;
        report.rejected += 1;
        notes.add(line, format!("rejected: {reason}"));
        if let Some(r) = rejects.as_deref_mut() {
            r.write(&record, header.names.len(), line, &reason)?;
        }
    }
    let batch_size = store.map_or(BATCH, Directory::import_batch);
    for (line, parsed) in chunk.ok {
        report.rows += 1;
        if parsed.invalid_phone {
            report.invalid_phones += 1;
            let raw = parsed.recipient.phone_raw.as_deref().unwrap_or_default();
            notes.add(
                line,
                format!("warning: phone `{raw}` is not a valid number; stored without one (SMS jobs skip it)"),
            );
        }
        batch.rows.push((line, parsed));
        if batch.rows.len() >= batch_size {
            batch.apply(store, options, report, notes)?;
        }
    }
    Ok(())
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

    /// The notes in file order, each naming the file and line: `people.csv: line 3: …`.
    fn finish(mut self, path: &Path) -> Vec<String> {
        self.0.sort_by_key(|(line, _)| *line);
        self.0.truncate(MAX_MESSAGES);
        self.0
            .into_iter()
            .map(|(line, m)| format!("{}: line {line}: {m}", path.display()))
            .collect()
    }
}

/// Hashes recipient ids by one multiplication: ids are already well spread, and SipHash
/// showed in import profiles.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Rows waiting for their atomic write, and what earlier batches saw.
#[derive(Default)]
struct Batch {
    rows: Vec<(u64, ParsedRow)>,
    seen: HashSet<u64, BuildHasherDefault<IdHasher>>,
    /// Logins given fresh ids during this import (dry runs invent them).
    new_logins: HashMap<String, u64>,
    invented: u64,
}

impl Batch {
    fn apply(
        &mut self,
        store: Option<&dyn Directory>,
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
