//! What every email provider (SMTP, SendGrid, Mailgun, SES) shares: the sender they are
//! configured with, read once, and a message's attachments read from `documents_dir`.
//!
//! [`load`] reads the files with one set of rules — [`super::smtp::documents`] finds
//! them and refuses any path leaving the folder — and hands back bytes, file name and
//! `Content-Type`; the APIs that take parts as fields (JSON `attachments[]`, multipart
//! `attachment`) encode them their way, and [`mime_parts`] makes the MIME parts SMTP and
//! SES's raw messages carry.

use std::path::Path;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment, Body, Mailbox, SinglePart};

use super::{RoutedMessage, SendOutcome};
use crate::diag::FileReport;

/// Most bytes of attachments one email may carry (every API allows more).
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
        let content_type = content_type(&path, &bytes);
        files.push(File {
            name,
            content_type,
            bytes,
        });
    }
    Ok(files)
}

/// The `Content-Type` of an attachment, from its file name (`.pdf` → `application/pdf`,
/// `.csv` → `text/csv`, unknown → `application/octet-stream`); a text type whose bytes are
/// UTF-8 says `charset=utf-8`, so a mail program shows it right.
fn content_type(path: &Path, bytes: &[u8]) -> String {
    let guess = mime_guess::from_path(path).first_or_octet_stream();
    if guess.type_() == mime_guess::mime::TEXT && std::str::from_utf8(bytes).is_ok() {
        format!("{}; charset=utf-8", guess.essence_str())
    } else {
        guess.essence_str().to_string()
    }
}

/// `files` as MIME attachment parts. Always base64, whatever the bytes: a file sent as
/// 7bit or 8bit text keeps its own line ends, and a bare LF is refused by a strict MTA
/// (Postfix's `smtpd_forbid_bare_newline`) or rewritten by one that normalises line ends,
/// so the recipient would save a different file. Base64 lines end in CRLF and carry every
/// byte unchanged.
pub(crate) fn mime_parts(provider: &str, files: Vec<File>) -> Result<Vec<SinglePart>, SendOutcome> {
    let rejected = |text: String| SendOutcome::Rejected {
        code: format!("{provider}:attachment"),
        text,
    };
    files
        .into_iter()
        .map(|f| {
            let content_type = ContentType::parse(&f.content_type)
                .map_err(|_| rejected(format!("`{}` is not a content type", f.content_type)))?;
            let body = Body::new_with_encoding(f.bytes, ContentTransferEncoding::Base64)
                .map_err(|_| rejected(format!("attachment `{}` could not be encoded", f.name)))?;
            Ok(Attachment::new(f.name).body(body, content_type))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_types_come_from_the_file_name() {
        let binary = b"%PDF-1.4 \xe2\xe3";
        for (name, bytes, expected) in [
            ("invoice.pdf", &binary[..], "application/pdf"),
            ("INVOICE.PDF", &binary[..], "application/pdf"),
            (
                "usage.csv",
                b"id,amount\n".as_slice(),
                "text/csv; charset=utf-8",
            ),
            (
                "notes.txt",
                b"caf\xc3\xa9".as_slice(),
                "text/plain; charset=utf-8",
            ),
            ("latin1.txt", b"caf\xe9".as_slice(), "text/plain"),
            ("scan.png", b"\x89PNG".as_slice(), "image/png"),
            (
                "data.unknown-kind",
                b"x".as_slice(),
                "application/octet-stream",
            ),
            ("no-extension", b"x".as_slice(), "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(name), bytes), expected, "{name}");
        }
    }
}
