//! What the email API providers (SendGrid, Mailgun, SES) share: the sender they are
//! configured with, read once, and a message's attachments read from `documents_dir`.
//!
//! SMTP composes MIME itself (`smtp.rs`); the APIs take the parts as fields (JSON
//! `attachments[]`, multipart `attachment`), so this reads the same files with the same
//! rules — [`super::smtp::documents`] finds them and refuses any path leaving the folder
//! — and hands back bytes, file name and `Content-Type` for each API to encode its way.

use std::path::Path;

use lettre::message::Mailbox;

use super::{RoutedMessage, SendOutcome};
use crate::diag::FileReport;

/// Most bytes of attachments one email may carry (as SMTP; every API allows more).
const MAX_BYTES: u64 = 20 * 1024 * 1024;

/// One file to attach.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct File {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// The attachments of `message`, or why it cannot be sent (`<provider>:attachment`).
pub(crate) fn load(
    provider: &str,
    documents_dir: Option<&Path>,
    message: &RoutedMessage,
) -> Result<Vec<File>, SendOutcome> {
    if message.attach.is_empty() {
        return Ok(Vec::new());
    }
    let rejected = |text: String| SendOutcome::Rejected {
        code: format!("{provider}:attachment"),
        text,
    };
    let Some(dir) = documents_dir else {
        return Err(rejected(format!(
            "the job attaches documents but this {provider} provider has no `documents_dir`"
        )));
    };
    let paths =
        super::smtp::documents(dir, message.recipient_id, &message.attach).map_err(rejected)?;
    let mut total = 0u64;
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let shown = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        let bytes = std::fs::read(&path)
            .map_err(|e| rejected(format!("attachment `{shown}` could not be read: {e}")))?;
        total += bytes.len() as u64;
        if total > MAX_BYTES {
            return Err(rejected(format!(
                "attachments exceed {} MB (at `{shown}`)",
                MAX_BYTES / (1024 * 1024)
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let guess = mime_guess::from_path(&path).first_or_octet_stream();
        let content_type =
            if guess.type_() == mime_guess::mime::TEXT && std::str::from_utf8(&bytes).is_ok() {
                format!("{}; charset=utf-8", guess.essence_str())
            } else {
                guess.essence_str().to_string()
            };
        files.push(File {
            name,
            content_type,
            bytes,
        });
    }
    Ok(files)
}

/// The configured `from`, or an error at `crier validate`.
pub(crate) fn check_from(from: &str, field: &str, report: &mut FileReport) {
    if from.parse::<Mailbox>().is_err() {
        report.error(
            &format!("{field}.from"),
            format!("`{from}` is not an email address (e.g. `Acme ISP <billing@acme.example>`)"),
        );
    }
}

/// The configured `from` as a mailbox; an error when it is not one (validation already said so).
pub(crate) fn sender(from: &str) -> Result<Mailbox, String> {
    from.parse::<Mailbox>()
        .map_err(|e| format!("`from` `{from}` is not an email address: {e}"))
}
