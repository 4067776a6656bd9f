//! Entry points for fuzzing: each drives one parser the way crier does and checks the
//! contract crier promises for bad input, panicking when it is broken.
//!
//! The property tests (`tests/fuzz.rs`) and the cargo-fuzz targets (`tests/fuzz/`) call
//! the same functions, so both check one definition of "handled well": a job or config
//! file either validates or yields diagnostics that each carry `file:line:col`, a field
//! and a message on one line; a CSV row becomes a recipient or is rejected with its column
//! and value; a template renders or fails with a `template:` reason; a delivery report
//! is read or refused with a short, one-line reason. A panic from inside crier, or a
//! broken contract, is a bug. The module is public only for those two callers.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use crate::config::Config;
use crate::diag::Diagnostics;
use crate::job::Job;
use crate::provider::http::{DeliveryReports, ReportFormat};
use crate::recipients::import::{Delimiter, Lines, csv_reader};
use crate::recipients::{Recipient, RecipientKind, phone, row};
use crate::render::sms;
use crate::render::template::{self, Context, Template};
use crate::server::email_webhooks;
use crate::server::webhooks::{self, Parsed};

/// The longest reason a refused delivery report may carry.
pub const MAX_REASON: usize = 240;

/// `${VARS}` as the fuzzed files see them: `SET` is set, every other name is missing.
fn lookup(name: &str) -> Option<String> {
    (name == "SET").then(|| "value".to_string())
}

/// Checks the diagnostics of a refused file: at least one, each placed and worded.
pub fn check_diagnostics(diags: &Diagnostics) {
    assert!(!diags.is_empty(), "refused without a diagnostic");
    for d in diags.iter() {
        assert!(
            d.line >= 1 && d.col >= 1,
            "diagnostic without a position: {d}"
        );
        assert!(
            !d.message.trim().is_empty(),
            "diagnostic without a message: {d}"
        );
        let shown = d.to_string();
        let place = format!("{}:{}:{}: ", d.file.display(), d.line, d.col);
        assert!(shown.starts_with(&place), "not `file:line:col: `: {shown}");
        assert!(
            !shown.contains('\n'),
            "diagnostic over several lines: {shown:?}"
        );
    }
}

/// Parses and validates `text` as the job file `path` (relative names resolve from its
/// folder) under the default config.
pub fn job(path: &Path, text: &str) -> Option<Job> {
    match crate::job::parse(path, text, &Config::defaults(), &lookup) {
        Ok(job) => Some(job),
        Err(diags) => {
            check_diagnostics(&diags);
            None
        }
    }
}

/// Parses and validates `text` as `crier.yaml` at `path`.
pub fn config(path: &Path, text: &str) -> Option<Config> {
    match Config::parse(path, text, &lookup) {
        Ok(config) => Some(config),
        Err(diags) => {
            check_diagnostics(&diags);
            None
        }
    }
}

/// What a CSV file became.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CsvTally {
    /// The header could not be read (the file is refused as a whole).
    pub refused: bool,
    pub recipients: usize,
    pub rejected: usize,
    /// Records the CSV reader could not read (invalid UTF-8, say).
    pub unreadable: usize,
}

/// Reads `bytes` as an import file (BOM, delimiter detection, header mapping) and parses
/// every row as `crier import` does, in the South African region.
pub fn csv(bytes: &[u8]) -> CsvTally {
    let path = Path::new("fuzz.csv");
    let mut tally = CsvTally::default();
    let input = Box::new(Cursor::new(bytes.to_vec()));
    let (mut reader, header) = match csv_reader(input, path, Delimiter::Auto) {
        Ok(opened) => opened,
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with("fuzz.csv"),
                "error without the file: {shown}"
            );
            tally.refused = true;
            return tally;
        }
    };
    let region = phone::parse_region("ZA").expect("ZA is a region");
    let mut lines = Lines::default();
    lines.advance(&header.record);
    let mut last_line = 0;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                assert!(!e.is_io_error(), "an in-memory read failed: {e}");
                assert!(
                    !e.to_string().is_empty(),
                    "an unreadable row without a reason"
                );
                tally.unreadable += 1;
                continue;
            }
        }
        let line = lines.start(&record);
        lines.advance(&record);
        assert!(
            line >= 1 && line >= last_line,
            "line {line} after {last_line}"
        );
        last_line = line;
        match row::parse(&header, &record, RecipientKind::Customer, region) {
            Ok(parsed) => {
                let r = &parsed.recipient;
                assert!(
                    parsed.id.is_some() || r.login.is_some(),
                    "a recipient with neither id nor login"
                );
                assert_eq!(r.id, parsed.id.unwrap_or(0));
                if let Some(e164) = &r.phone {
                    assert!(e164.starts_with('+'), "phone `{e164}` is not E.164");
                }
                tally.recipients += 1;
            }
            Err(errors) => {
                assert!(!errors.is_empty(), "a row rejected without a reason");
                for e in &errors {
                    assert!(!e.message.is_empty(), "a rejection without a message");
                    assert!(
                        e.column.is_empty() || header.names.contains(&e.column),
                        "rejection names column `{}`, not in the header",
                        e.column
                    );
                }
                tally.rejected += 1;
            }
        }
    }
    tally
}

/// Checks `source` as `crier validate` does, then compiles and renders it (text and HTML)
/// for `recipient` with `vars`. Returns the text render.
pub fn template(
    source: &str,
    recipient: &Recipient,
    vars: &BTreeMap<String, serde_json::Value>,
) -> Result<String, String> {
    let checked = template::check(source);
    if let Err(errors) = &checked {
        assert!(!errors.is_empty(), "a template refused without a reason");
        for e in errors {
            assert!(
                !e.message.trim().is_empty(),
                "a template error without a message"
            );
            assert!(
                e.line >= 1 && e.col >= 1,
                "template error without a place: {e:?}"
            );
        }
    }
    let context = Context {
        job: BTreeMap::from([("name".into(), "fuzz".into())]),
        run: BTreeMap::from([("id".into(), "01FUZZ".into())]),
        now: "2026-11-27T09:00:00+02:00".into(),
        vars: vars.clone(),
        unsubscribe_url: None,
    };
    let mut text = None;
    for html in [false, true] {
        let compiled = if html {
            Template::compile_html(source, None)
        } else {
            Template::compile(source)
        };
        let template = match compiled {
            Ok(t) => t,
            Err(e) => {
                assert!(
                    checked.is_err(),
                    "validation passed what compiling refused: {e:?}"
                );
                assert!(
                    !e.message.trim().is_empty(),
                    "a compile error without a message"
                );
                return Err(e.message);
            }
        };
        let rendered = template.render(recipient, &context);
        if let Err(e) = &rendered {
            let reason = e
                .strip_prefix("template: ")
                .unwrap_or_else(|| panic!("a render error not starting `template: `: {e:?}"));
            assert!(!reason.trim().is_empty(), "a render error without a reason");
        }
        if !html {
            text = Some(rendered);
        }
    }
    text.expect("rendered as text")
}

/// Encoding and parts of `text`, with the counter's own invariants checked (the
/// independent reference lives in `tests/fuzz.rs`).
pub fn sms(text: &str) -> sms::Parts {
    let parts = sms::count(text);
    let (single, per_part) = match parts.encoding {
        sms::Encoding::Gsm7 => (160, 153),
        sms::Encoding::Ucs2 => (70, 67),
    };
    match parts.units {
        0 => assert_eq!(parts.parts, 0),
        u if u <= single => assert_eq!(parts.parts, 1),
        u => {
            // Greedy filling loses at most one unit per part (a split pair moves whole).
            assert!(parts.parts >= u.div_ceil(per_part), "{parts:?}");
            assert!(parts.parts <= u.div_ceil(per_part - 1), "{parts:?}");
        }
    }
    let safe = sms::gsm_safe(text);
    if parts.encoding == sms::Encoding::Gsm7 {
        assert_eq!(safe, text, "gsm_safe changed a GSM-7 text");
    }
    parts
}

/// Which delivery-report parser to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Webhook {
    BulkSms,
    Clickatell,
    Vonage,
    /// The body is the callback's form, as signed.
    Twilio,
    /// The generic gateway, with a mapping for each of its formats.
    HttpJson,
    HttpForm,
    HttpQuery,
    /// SendGrid's Event Webhook (the JSON array, as signed).
    Sendgrid,
    /// Mailgun's webhook body (`signature` and `event-data`).
    Mailgun,
    /// An SES event record: the `Message` of an SNS notification.
    Ses,
}

impl Webhook {
    pub const ALL: [Webhook; 10] = [
        Webhook::BulkSms,
        Webhook::Clickatell,
        Webhook::Vonage,
        Webhook::Twilio,
        Webhook::HttpJson,
        Webhook::HttpForm,
        Webhook::HttpQuery,
        Webhook::Sendgrid,
        Webhook::Mailgun,
        Webhook::Ses,
    ];
}

/// A JSON body, as the email webhooks read it before their parsers.
fn email_json(body: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
}

/// A gateway mapping like the README's example, in `format`.
fn mapping(format: ReportFormat) -> DeliveryReports {
    let dotted = format == ReportFormat::Json;
    let field = |json: &str, flat: &str| if dotted { json } else { flat }.to_string();
    DeliveryReports {
        format,
        message_id: field("data.id", "id"),
        status: field("data.state", "state"),
        error_code: Some(field("data.err", "err")),
        time: Some(field("data.ts", "ts")),
        delivered: vec!["DELIVRD".into()],
        undelivered: vec!["UNDELIV".into(), "EXPIRED".into()],
        failed: vec!["REJECTD".into()],
        opted_out: vec!["OPTOUT".into()],
    }
}

/// Reads one delivery-report request. `Ok` is the number of reports and replies read.
pub fn webhook(kind: Webhook, body: &[u8], query: Option<&str>) -> Result<usize, String> {
    let parsed: Result<Parsed, String> = match kind {
        Webhook::BulkSms => webhooks::parse_bulksms(body),
        Webhook::Clickatell => webhooks::parse_clickatell(body, query),
        Webhook::Vonage => webhooks::parse_vonage(body, query),
        Webhook::Twilio => webhooks::twilio_params(body).and_then(|p| webhooks::parse_twilio(&p)),
        Webhook::HttpJson => webhooks::parse_http(&mapping(ReportFormat::Json), body, query),
        Webhook::HttpForm => webhooks::parse_http(&mapping(ReportFormat::Form), body, query),
        Webhook::HttpQuery => webhooks::parse_http(&mapping(ReportFormat::Query), body, query),
        Webhook::Sendgrid => email_webhooks::parse_sendgrid(body),
        Webhook::Mailgun => email_json(body).and_then(|v| email_webhooks::parse_mailgun(&v)),
        Webhook::Ses => email_json(body).and_then(|v| email_webhooks::parse_ses(&v)),
    };
    match parsed {
        Ok(parsed) => {
            for r in &parsed.reports {
                // Email events may name their message by crier's id alone, or only opt
                // an address out.
                assert!(
                    !r.pid.is_empty() || r.crier_id.is_some() || r.opted_out,
                    "a report without a message id"
                );
                if let Some(code) = &r.code {
                    assert!(!code.is_empty(), "an empty status code");
                }
            }
            for s in &parsed.stops {
                assert!(!s.is_empty(), "a STOP without a sender");
            }
            Ok(parsed.reports.len() + parsed.stops.len())
        }
        Err(reason) => {
            assert!(
                !reason.trim().is_empty(),
                "{kind:?}: refused without a reason"
            );
            assert!(
                reason.chars().count() <= MAX_REASON,
                "{kind:?}: a reason of {} characters",
                reason.chars().count()
            );
            assert!(
                !reason.chars().any(char::is_control),
                "{kind:?}: control characters in the reason {reason:?}"
            );
            Err(reason)
        }
    }
}
