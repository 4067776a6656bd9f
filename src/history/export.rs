//! CSV export of runs and messages, streamed: one row written per record read, so an
//! export of millions of messages runs in constant memory. RFC 4180 quoting and CRLF row
//! ends (the `csv` crate), a header row, ISO 8601 UTC timestamps with milliseconds: a
//! spreadsheet opens the file as is.
//!
//! A spreadsheet also runs a cell that starts with `=`, `+`, `-`, `@`, a tab or a CR as a
//! formula (OWASP "CSV Injection"), and bodies, subjects, names and error texts come from
//! people and providers. So by default such free-text cells get a leading `'` ([`Cells`]);
//! identifiers, phone numbers and timestamps are never touched. `--raw` (`raw=true`) writes
//! every cell as stored, for pandas or a database. Every CSV crier writes goes through
//! [`csv_writer`] and [`Cells`], so the rule lives here once.
//!
//! [`RunView`] and [`MessageView`] are the JSON forms of a run and a message, shared by
//! `crier history --format json` and the HTTP API, so the two print the same fields.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io::Write;

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;

use super::ledger::{Ledger, LedgerError};
use super::{Message, MessageState, Millis, Run, RunId, Trigger};

/// Columns of a message export, in order.
pub const MESSAGE_COLUMNS: [&str; 21] = [
    "message_id",
    "run_id",
    "job",
    "type",
    "channel",
    "provider",
    "recipient_kind",
    "recipient_id",
    "address",
    "state",
    "reason",
    "attempts",
    "encoding",
    "parts",
    "provider_message_id",
    "error_code",
    "error_text",
    "subject",
    "body",
    "created_at",
    "updated_at",
];

/// Columns of a run export, in order (one count column per message state follows).
pub const RUN_COLUMNS: [&str; 11] = [
    "run_id",
    "job",
    "status",
    "trigger",
    "scheduled_at",
    "channels",
    "provider",
    "created_at",
    "started_at",
    "finished_at",
    "messages",
];

/// `2026-11-27T05:14:38.123Z`.
pub fn iso(ms: Millis) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// [`iso`] into a buffer a writer reuses row after row: the date part is formatted once
/// per day (an export's rows come a day at a time), the time of day from its numbers.
#[derive(Default)]
struct IsoCell {
    /// The day `date` is of (days since the Unix epoch).
    day: Option<i64>,
    /// That day's `2026-11-27T`.
    date: String,
    buf: String,
}

impl IsoCell {
    const DAY_MS: i64 = 86_400_000;

    fn format(&mut self, ms: Millis) -> &str {
        let (day, of_day) = (ms.div_euclid(Self::DAY_MS), ms.rem_euclid(Self::DAY_MS));
        if self.day != Some(day) {
            let midnight = day.checked_mul(Self::DAY_MS).map(iso).unwrap_or_default();
            self.date = match midnight.find('T') {
                Some(t) => midnight[..=t].to_string(),
                None => String::new(),
            };
            self.day = Some(day);
        }
        self.buf.clear();
        if !self.date.is_empty() {
            // 0 ≤ of_day < 86,400,000: every part is a small non-negative number.
            let (secs, milli) = ((of_day / 1000) as u64, (of_day % 1000) as u64);
            self.buf.push_str(&self.date);
            push_digits(&mut self.buf, secs / 3600, 2);
            self.buf.push(':');
            push_digits(&mut self.buf, secs / 60 % 60, 2);
            self.buf.push(':');
            push_digits(&mut self.buf, secs % 60, 2);
            self.buf.push('.');
            push_digits(&mut self.buf, milli, 3);
            self.buf.push('Z');
        }
        &self.buf
    }
}

/// Appends `n` in decimal, zero-padded to `width` digits (at most 20), without the
/// formatting machinery: an export writes a dozen numbers a row.
fn push_digits(buf: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = start.min(digits.len().saturating_sub(width));
    buf.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

/// A count cell, formatted into a buffer a writer reuses.
fn cell(buf: &mut String, n: impl Into<u64>) -> &str {
    buf.clear();
    push_digits(buf, n.into(), 1);
    buf
}

/// A message id cell (`{run}-{seq:06}`, as [`MessageId`](super::MessageId) displays),
/// formatted into a buffer a writer reuses.
fn id_cell<'a>(buf: &'a mut String, run: &str, seq: u32) -> &'a str {
    buf.clear();
    buf.push_str(run);
    buf.push('-');
    push_digits(buf, seq.into(), 6);
    buf
}

fn opt_iso(ms: Option<Millis>) -> String {
    ms.map(iso).unwrap_or_default()
}

/// A CSV writer as RFC 4180 asks: rows end in CRLF (the `csv` crate's default is LF).
pub fn csv_writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out)
}

/// How free-text cells are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Cells {
    /// A cell a spreadsheet would read as a formula gets a leading `'` (the default).
    #[default]
    Safe,
    /// Every cell as stored (`--raw`), for tools that do not evaluate formulas.
    Raw,
}

impl Cells {
    /// `Raw` when `raw`, else `Safe`.
    pub fn raw(raw: bool) -> Cells {
        if raw { Cells::Raw } else { Cells::Safe }
    }

    /// A free-text cell (body, subject, name, error text): prefixed with `'` when it
    /// starts with `=`, `+`, `-`, `@`, a tab or a CR, unless raw.
    pub fn text<'a>(self, s: &'a str) -> Cow<'a, str> {
        let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
        if self == Cells::Safe && formula {
            Cow::Owned(format!("'{s}"))
        } else {
            Cow::Borrowed(s)
        }
    }

    /// An address or phone cell: a phone number (`+27821234567`, `082 123 4567`, digits
    /// with spaces, dots, dashes or brackets) stays as is; anything else (an email address
    /// or login, which people type) is free text.
    pub fn address<'a>(self, s: &'a str) -> Cow<'a, str> {
        let digits = s.strip_prefix('+').unwrap_or(s);
        let phone = digits.bytes().any(|b| b.is_ascii_digit())
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b" ().-".contains(&b));
        if phone {
            Cow::Borrowed(s)
        } else {
            self.text(s)
        }
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("writing the export: {0}")]
    Write(#[from] csv::Error),
}

/// Writes messages as CSV; returns how many rows.
pub fn messages_csv<W: Write>(
    ledger: &Ledger,
    messages: impl Iterator<Item = Result<Message, LedgerError>>,
    cells: Cells,
    out: W,
) -> Result<u64, ExportError> {
    let mut w = csv_writer(out);
    w.write_record(MESSAGE_COLUMNS)?;
    // Run ids and job names by run: a handful of runs cover millions of messages.
    let mut runs: HashMap<RunId, (String, String)> = HashMap::new();
    // The cells that are numbers and times, formatted into buffers reused row after row.
    let (mut id, mut recipient, mut attempts, mut parts) =
        (String::new(), String::new(), String::new(), String::new());
    let (mut created, mut updated) = (IsoCell::default(), IsoCell::default());
    let mut n = 0;
    for m in messages {
        let m = m?;
        if !runs.contains_key(&m.id.run) {
            if runs.len() > 10_000 {
                runs.clear();
            }
            let job = ledger.run(m.id.run).map(|r| r.job).unwrap_or_default();
            runs.insert(m.id.run, (m.id.run.to_string(), job));
        }
        let (run, job) = runs
            .get(&m.id.run)
            .map(|(run, job)| (run.as_str(), job.as_str()))
            .unwrap_or_default();
        let message_id = id_cell(&mut id, run, m.id.seq);
        w.write_record([
            message_id,
            run,
            job,
            m.kind.as_str(),
            m.channel.as_str(),
            &m.provider,
            m.recipient_kind.as_str(),
            cell(&mut recipient, m.recipient_id),
            &cells.address(&m.address),
            m.state.as_str(),
            &cells.text(m.reason.as_deref().unwrap_or_default()),
            cell(&mut attempts, m.attempts),
            m.encoding.as_deref().unwrap_or_default(),
            cell(&mut parts, m.parts),
            m.provider_message_id.as_deref().unwrap_or_default(),
            m.error_code.as_deref().unwrap_or_default(),
            &cells.text(m.error_text.as_deref().unwrap_or_default()),
            &cells.text(m.subject.as_deref().unwrap_or_default()),
            &cells.text(&m.body),
            created.format(m.created_at),
            updated.format(m.updated_at),
        ])?;
        n += 1;
    }
    w.flush().map_err(csv::Error::from)?;
    Ok(n)
}

/// Writes runs as CSV; returns how many rows. Every column is an identifier, a count or
/// a timestamp, so there is no free text to neutralise.
pub fn runs_csv<W: Write>(
    runs: impl Iterator<Item = Result<Run, LedgerError>>,
    out: W,
) -> Result<u64, ExportError> {
    let mut w = csv_writer(out);
    let mut header: Vec<&str> = RUN_COLUMNS.to_vec();
    header.extend(MessageState::ALL.iter().map(|s| s.as_str()));
    w.write_record(&header)?;
    let mut n = 0;
    for run in runs {
        let r = run?;
        let scheduled = match r.trigger {
            Trigger::Schedule { at } => iso(at),
            _ => String::new(),
        };
        let mut row = vec![
            r.id.to_string(),
            r.job.clone(),
            r.status().to_string(),
            r.trigger.label().to_string(),
            scheduled,
            r.channels
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            r.provider.clone(),
            iso(r.created_at),
            opt_iso(r.started_at),
            opt_iso(r.finished_at),
            r.counters.total().to_string(),
        ];
        row.extend(
            MessageState::ALL
                .iter()
                .map(|s| r.counters.get(*s).to_string()),
        );
        w.write_record(&row)?;
        n += 1;
    }
    w.flush().map_err(csv::Error::from)?;
    Ok(n)
}

/// A run as JSON.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunView {
    /// The run id (a ULID).
    pub id: String,
    pub job: String,
    /// new, processing, sent, sent_with_error, cancelled or removed.
    pub status: String,
    /// schedule, manual, test or api.
    pub trigger: String,
    /// The fire instant of a scheduled run.
    pub scheduled_at: Option<String>,
    pub channels: Vec<String>,
    pub provider: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// How many messages the run has planned.
    pub messages: u64,
    /// Messages per state.
    pub counters: BTreeMap<String, u64>,
    /// The run whose failed and expired messages this one sends again.
    pub retry_of: Option<String>,
}

impl From<&Run> for RunView {
    fn from(r: &Run) -> RunView {
        RunView {
            id: r.id.to_string(),
            job: r.job.clone(),
            status: r.status().to_string(),
            trigger: r.trigger.label().to_string(),
            scheduled_at: match r.trigger {
                Trigger::Schedule { at } => Some(iso(at)),
                _ => None,
            },
            channels: r.channels.iter().map(|c| c.to_string()).collect(),
            provider: r.provider.clone(),
            created_at: iso(r.created_at),
            started_at: r.started_at.map(iso),
            finished_at: r.finished_at.map(iso),
            messages: r.counters.total(),
            counters: MessageState::ALL
                .iter()
                .map(|s| (s.as_str().to_string(), r.counters.get(*s)))
                .collect(),
            retry_of: r.retry_of.map(|id| id.to_string()),
        }
    }
}

/// A message as JSON.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// `RUN-SEQ`.
    pub id: String,
    pub run_id: String,
    /// message or test.
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: String,
    pub provider: String,
    pub recipient_kind: String,
    pub recipient_id: u64,
    /// E.164 phone, email address, or portal login.
    pub address: String,
    pub state: String,
    /// Why it was skipped.
    pub reason: Option<String>,
    pub attempts: u32,
    pub encoding: Option<String>,
    pub parts: u32,
    pub provider_message_id: Option<String>,
    pub error_code: Option<String>,
    pub error_text: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub created_at: String,
    pub updated_at: String,
    /// Every state entered, as `[state, time]`.
    #[schema(value_type = Vec<Vec<String>>)]
    pub transitions: Vec<(String, String)>,
    /// Providers this message left for the next one of its route, in order.
    pub failovers: Vec<FailoverView>,
}

/// One provider a message failed over from.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailoverView {
    pub provider: String,
    /// When the message left this provider.
    pub at: String,
    /// Send attempts made on it.
    pub attempts: u32,
    pub error_code: String,
    pub error_text: String,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> MessageView {
        MessageView {
            id: m.id.to_string(),
            run_id: m.id.run.to_string(),
            kind: m.kind.as_str().to_string(),
            channel: m.channel.to_string(),
            provider: m.provider.clone(),
            recipient_kind: m.recipient_kind.to_string(),
            recipient_id: m.recipient_id,
            address: m.address.clone(),
            state: m.state.to_string(),
            reason: m.reason.clone(),
            attempts: m.attempts,
            encoding: m.encoding.clone(),
            parts: m.parts,
            provider_message_id: m.provider_message_id.clone(),
            error_code: m.error_code.clone(),
            error_text: m.error_text.clone(),
            subject: m.subject.clone(),
            body: m.body.clone(),
            created_at: iso(m.created_at),
            updated_at: iso(m.updated_at),
            transitions: m
                .transitions
                .iter()
                .map(|(s, t)| (s.to_string(), iso(*t)))
                .collect(),
            failovers: m
                .failovers
                .iter()
                .map(|f| FailoverView {
                    provider: f.provider.clone(),
                    at: iso(f.at),
                    attempts: f.attempts,
                    error_code: f.error_code.clone(),
                    error_text: f.error_text.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::MessageType;
    use crate::history::ledger::{NewMessage, NewRun};
    use crate::job::Channel;
    use crate::recipients::RecipientKind;

    #[test]
    fn formula_text_is_prefixed_and_phones_ids_and_plain_text_are_not() {
        let safe = Cells::Safe;
        for formula in ["=HYPERLINK(\"x\")", "+1", "-5", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(safe.text(formula), format!("'{formula}"));
            assert_eq!(Cells::Raw.text(formula), formula);
        }
        for plain in ["Hi Ann", "", "'quoted", "5-3", "a=b"] {
            assert_eq!(safe.text(plain), plain);
        }
        assert_eq!(safe.address("+27821234567"), "+27821234567");
        assert_eq!(safe.address("+27 (82) 123-4567"), "+27 (82) 123-4567");
        assert_eq!(safe.address("ann@example.com"), "ann@example.com");
        assert_eq!(safe.address("=cmd@example.com"), "'=cmd@example.com");
        assert_eq!(safe.address("+"), "'+");
        assert_eq!(safe.address("+27 82=1"), "'+27 82=1");
    }

    /// One message with formula text in every free-text field, exported.
    fn export(cells: Cells) -> (String, Message) {
        let (_dir, store) = crate::store::scratch();
        let ledger = Ledger::new(store.as_ref());
        let run = ledger
            .create_run(NewRun {
                job: "reminder".into(),
                trigger: Trigger::Manual,
                channels: vec![Channel::Sms],
                provider: "bulksms".into(),
                body: "x".into(),
                subject: None,
            })
            .unwrap();
        ledger
            .plan(
                run.id,
                vec![NewMessage {
                    recipient_kind: RecipientKind::Customer,
                    recipient_id: 1042,
                    address: "+27821234567".into(),
                    channel: Channel::Sms,
                    provider: "bulksms".into(),
                    kind: MessageType::Message,
                    subject: Some("-5".into()),
                    body: "=HYPERLINK(\"x\")".into(),
                    encoding: Some("gsm7".into()),
                    parts: 1,
                    state: MessageState::Skipped,
                    reason: Some("@SUM(1)".into()),
                    error: None,
                    snapshot: Default::default(),
                    html: None,
                    route: Vec::new(),
                }],
            )
            .unwrap();
        let m = ledger.messages_of(run.id, None).next().unwrap().unwrap();
        let mut out = Vec::new();
        messages_csv(&ledger, std::iter::once(Ok(m.clone())), cells, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), m)
    }

    fn row(csv: &str) -> HashMap<String, String> {
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        let header = r.headers().unwrap().clone();
        let record = r.records().next().unwrap().unwrap();
        header
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_message_export_neutralises_formulas_and_keeps_ids_phones_and_times() {
        let (csv, m) = export(Cells::Safe);
        let r = row(&csv);
        assert_eq!(r["body"], "'=HYPERLINK(\"x\")");
        assert_eq!(r["subject"], "'-5");
        assert_eq!(r["reason"], "'@SUM(1)");
        assert_eq!(r["address"], "+27821234567");
        assert_eq!(r["message_id"], m.id.to_string());
        assert_eq!(r["recipient_id"], "1042");
        assert_eq!(r["created_at"], iso(m.created_at));
    }

    #[test]
    fn a_raw_message_export_writes_every_cell_as_stored() {
        let (csv, _) = export(Cells::Raw);
        let r = row(&csv);
        assert_eq!(r["body"], "=HYPERLINK(\"x\")");
        assert_eq!(r["subject"], "-5");
        assert_eq!(r["reason"], "@SUM(1)");
    }

    #[test]
    fn the_reused_time_cell_writes_what_iso_writes() {
        let mut cell = IsoCell::default();
        let day = IsoCell::DAY_MS;
        // Across midnights, before the epoch, a leap day, the ends of chrono's range, and
        // back to a day already seen.
        let mut times = vec![0, -1, 1, day - 1, day, -day, -day - 1, 1_764_220_478_123];
        times.extend([951_782_400_000 - 1, 951_782_400_000, 253_402_300_799_999]);
        times.extend([
            i64::MIN,
            i64::MAX,
            8_210_266_876_799_999,
            -8_334_601_228_800_000,
        ]);
        times.extend((0..2_000).map(|i| 1_764_000_000_000 + i * 3_599_999));
        times.push(5);
        for ms in times {
            assert_eq!(cell.format(ms), iso(ms), "{ms}");
        }
    }

    #[test]
    fn digits_are_what_display_writes() {
        let mut buf = String::new();
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            999_999,
            1_000_000,
            4_294_967_295,
            u64::MAX,
        ] {
            for width in [1, 2, 3, 6, 20, 25] {
                buf.clear();
                push_digits(&mut buf, n, width);
                assert_eq!(buf, format!("{n:0w$}", w = width.min(20)), "{n} {width}");
            }
        }
    }

    #[test]
    fn an_exported_id_is_the_message_id() {
        let (csv, m) = export(Cells::Raw);
        let r = row(&csv);
        assert_eq!(r["message_id"], m.id.to_string());
        assert_eq!(r["run_id"], m.id.run.to_string());
        assert_eq!(r["attempts"], m.attempts.to_string());
        assert_eq!(r["parts"], m.parts.to_string());
        assert_eq!(r["updated_at"], iso(m.updated_at));
    }

    #[test]
    fn rows_end_in_crlf() {
        let (csv, _) = export(Cells::Safe);
        assert!(csv.ends_with("\r\n"), "{csv:?}");
        assert_eq!(csv.matches("\r\n").count(), 2, "{csv:?}");
        assert_eq!(csv.matches('\n').count(), 2, "{csv:?}");
    }
}
