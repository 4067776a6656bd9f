//! Bounces: what a delivery status notification (RFC 3464) or an abuse report (ARF,
//! RFC 5965) says became of an email crier sent, and which message it was.
//!
//! [`parse`] reads one message, as an MTA's pipe transport or a Maildir hands it over,
//! with `mail-parser` (MIME structure, header folding, encodings): the
//! `message/delivery-status` part's per-recipient fields (`Final-Recipient`, `Action`,
//! `Status`, `Diagnostic-Code`), or the `message/feedback-report` part's
//! `Feedback-Type`, and the returned original message or its headers. It is pure: the
//! ledger is touched only by [`apply`], after the whole input has been understood, so
//! input that cannot be read changes nothing.
//!
//! The message is named by its VERP address, `bounces+<message id>@<bounce domain>`
//! (the envelope sender crier gave it: `bounce_domain` of the SMTP provider),
//! which comes back as the bounce's envelope recipient: the first of `Delivered-To`,
//! `X-Original-To`, `Envelope-To` and `To` that holds one. Failing that, the returned
//! original names it: its `Return-Path` (VERP too), crier's own `X-Crier-Message-Id`
//! header, or its `Message-ID` (`<crier.<message id>@…>`). An abuse report is sent to a
//! feedback-loop address, not the VERP one, so for it the report's `Original-Mail-From`
//! comes first, then the returned original, then the envelope recipient.
//!
//! The status class decides: 5.x.x is a hard bounce, 4.x.x (or `Action: delayed`) a soft
//! one; `Feedback-Type: abuse` is a complaint.

mod apply;

use std::str::FromStr;
use std::sync::LazyLock;

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use thiserror::Error;

use crate::history::MessageId;

pub(crate) use apply::hard_bounces;
pub use apply::{Applied, ApplyError, Effect, apply};

/// The local part before `+` in a VERP envelope sender.
pub const VERP_PREFIX: &str = "bounces";

/// What a report says became of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A permanent failure (status 5.x.x): the message is `undelivered`.
    Hard,
    /// A temporary one (4.x.x, or `Action: delayed`): recorded, no state change.
    Soft,
    /// The recipient reported the message as spam (`Feedback-Type: abuse`).
    Complaint,
    /// Nothing failed: a success notice (`Action: delivered`, `relayed`, `expanded`) or
    /// feedback other than abuse (`not-spam`, `auth-failure`, …).
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hard => "hard",
            Kind::Soft => "soft",
            Kind::Complaint => "complaint",
            Kind::Other => "other",
        }
    }
}

/// Where the message's id was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clue {
    /// The bounce's envelope recipient (`Delivered-To`, `X-Original-To`, `Envelope-To`,
    /// `To`): the VERP address.
    Verp,
    /// The returned original's `Return-Path`, or the abuse report's `Original-Mail-From`:
    /// the VERP address.
    ReturnPath,
    /// The returned original's `X-Crier-Message-Id`.
    CrierHeader,
    /// The returned original's `Message-ID`.
    MessageIdHeader,
}

/// One report, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    pub kind: Kind,
    /// The DSN's status code (`5.1.1`), or the abuse report's feedback type (`abuse`).
    pub status: String,
    /// What the remote server said (`Diagnostic-Code` without its type), if anything.
    pub diagnostic: Option<String>,
    /// The address that failed or complained (`Final-Recipient`, or
    /// `Original-Recipient`, or `Original-Rcpt-To`), lower case.
    pub recipient: Option<String>,
    /// The crier message the report is about, and where its id was found.
    pub message: Option<(MessageId, Clue)>,
    /// Who wrote the report (`Reporting-MTA`, or the report's `User-Agent`).
    pub reporter: Option<String>,
}

impl Bounce {
    /// The history's error code for it: `bounce:5.1.1`, `complaint:abuse`.
    pub fn code(&self) -> String {
        match self.kind {
            Kind::Complaint => format!("complaint:{}", self.status),
            _ => format!("bounce:{}", self.status),
        }
    }
}

/// Why a message is not a report crier can use: each names what is missing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("the input is not an email message (no header found)")]
    NotMail,
    #[error(
        "not a delivery status notification (RFC 3464) or abuse report (RFC 5965): no `message/delivery-status` or `message/feedback-report` part (Content-Type is `{0}`)"
    )]
    NotReport(String),
    #[error("the delivery status names no recipient (no `Final-Recipient` field)")]
    NoRecipient,
    #[error("the delivery status of `{0}` has no `Status` field")]
    NoStatus(String),
    #[error("`Status: {0}` is not a status code (e.g. 5.1.1)")]
    BadStatus(String),
    #[error("the feedback report has no `Feedback-Type` field")]
    NoFeedbackType,
}

/// The parser: MIME and addresses as `mail-parser` knows them; every other field as
/// unfolded text (RFC 2047 decoded), which is what the report fields are.
fn parser() -> MessageParser {
    MessageParser::default().default_header_text()
}

/// Reads one DSN or abuse report.
pub fn parse(raw: &[u8]) -> Result<Bounce, ParseError> {
    let parser = parser();
    let message = parser.parse(raw).ok_or(ParseError::NotMail)?;
    if message.headers().is_empty() {
        return Err(ParseError::NotMail);
    }
    let mut status = None;
    let mut feedback = None;
    let mut original = None;
    for part in &message.parts {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let subtype = ct.subtype().unwrap_or_default().to_ascii_lowercase();
        match (ct.ctype().to_ascii_lowercase().as_str(), subtype.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") if status.is_none() => {
                status = Some(fields(&parser, part.contents()));
            }
            ("message", "feedback-report") if feedback.is_none() => {
                feedback = Some(fields(&parser, part.contents()));
            }
            ("message", "rfc822" | "global") if original.is_none() => {
                original = match &part.body {
                    PartType::Message(m) => Some(m.clone()),
                    _ => parser.parse_headers(part.contents()),
                };
            }
            ("text" | "message", "rfc822-headers" | "global-headers") if original.is_none() => {
                original = parser.parse_headers(part.contents());
            }
            _ => {}
        }
    }
    let returned = original
        .as_ref()
        .map(|m| returned_id(m))
        .unwrap_or_default();
    if let Some(groups) = status {
        let mut bounce = delivery_status(&groups)?;
        bounce.message = envelope_id(&message).or(returned);
        return Ok(bounce);
    }
    if let Some(groups) = feedback {
        let mut bounce = feedback_report(&groups)?;
        let mail_from = groups
            .first()
            .and_then(|g| g.get("Original-Mail-From"))
            .and_then(verp_id)
            .map(|id| (id, Clue::ReturnPath));
        bounce.message = mail_from.or(returned).or_else(|| envelope_id(&message));
        return Ok(bounce);
    }
    let content_type = message
        .content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{sub}", ct.ctype()),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| "text/plain".into());
    Err(ParseError::NotReport(content_type))
}

/// One block of `Name: value` fields of a report part.
#[derive(Debug, Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of field `name` (any case), trimmed; `None` when absent or empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// The field blocks of a report part (RFC 3464 §2.1: the per-message fields, then one
/// block per recipient, separated by blank lines), each read by `mail-parser` as a header
/// block: what follows one block's last field is the next.
fn fields(parser: &MessageParser, mut body: &[u8]) -> Vec<Fields> {
    let mut groups = Vec::new();
    // A block per loop; each takes at least one byte, so this ends.
    while !body.iter().all(u8::is_ascii_whitespace) {
        let start = body
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(body.len());
        body = &body[start..];
        let Some(block) = parser.parse_headers(body) else {
            break;
        };
        let fields = block
            .headers()
            .iter()
            .map(|h| {
                // Unfolded, runs of white space as one space.
                let text = h.value().as_text().unwrap_or_default();
                let value = text.split_whitespace().collect::<Vec<_>>().join(" ");
                (h.name().to_string(), value)
            })
            .collect();
        groups.push(Fields(fields));
        // The block ends with its last field; a blank line separates it from the next.
        let next = block.headers().last().map_or(0, |h| h.offset_end as usize);
        if next == 0 {
            break;
        }
        body = &body[next.min(body.len())..];
    }
    groups
}

/// The fate of the first recipient that failed (or was delayed) in a DSN's blocks; the
/// first recipient's when none did.
fn delivery_status(groups: &[Fields]) -> Result<Bounce, ParseError> {
    let reporter = groups
        .first()
        .and_then(|g| g.get("Reporting-MTA"))
        .map(|v| after_type(v).to_string());
    let recipients: Vec<&Fields> = groups
        .iter()
        .filter(|g| g.get("Final-Recipient").is_some() || g.get("Original-Recipient").is_some())
        .collect();
    let action = |g: &Fields| g.get("Action").unwrap_or_default().to_ascii_lowercase();
    let group = recipients
        .iter()
        .find(|g| action(g) == "failed")
        .or_else(|| recipients.iter().find(|g| action(g) == "delayed"))
        .or_else(|| recipients.first())
        .ok_or(ParseError::NoRecipient)?;
    let recipient = group
        .get("Original-Recipient")
        .or_else(|| group.get("Final-Recipient"))
        .map(|v| address_of(after_type(v)));
    let shown = recipient.clone().unwrap_or_default();
    let status = group
        .get("Status")
        .ok_or_else(|| ParseError::NoStatus(shown.clone()))?;
    // `5.1.1`, perhaps followed by a comment: `5.1.1 (bad destination mailbox)`.
    let code = status.split_whitespace().next().unwrap_or_default();
    if !STATUS.is_match(code) {
        return Err(ParseError::BadStatus(status.to_string()));
    }
    let kind = match (action(group).as_str(), code.as_bytes()[0]) {
        ("delivered" | "relayed" | "expanded", _) => Kind::Other,
        ("delayed", _) | (_, b'4') => Kind::Soft,
        (_, b'5') => Kind::Hard,
        _ => Kind::Other,
    };
    Ok(Bounce {
        kind,
        status: code.to_string(),
        diagnostic: group
            .get("Diagnostic-Code")
            .map(|v| after_type(v).to_string()),
        recipient,
        message: None,
        reporter,
    })
}

/// An abuse report's feedback type and complaining address.
fn feedback_report(groups: &[Fields]) -> Result<Bounce, ParseError> {
    let report = groups.first().ok_or(ParseError::NoFeedbackType)?;
    let feedback = report
        .get("Feedback-Type")
        .ok_or(ParseError::NoFeedbackType)?
        .to_ascii_lowercase();
    Ok(Bounce {
        kind: if feedback == "abuse" {
            Kind::Complaint
        } else {
            Kind::Other
        },
        status: feedback,
        diagnostic: None,
        recipient: report
            .get("Original-Rcpt-To")
            .map(address_of)
            .filter(|a| a.contains('@')),
        message: None,
        reporter: report.get("User-Agent").map(str::to_string),
    })
}

/// A status code: class 2, 4 or 5, then subject and detail (RFC 3463 §2).
static STATUS: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^[245]\.\d{1,3}\.\d{1,3}$").expect("status pattern"));

/// A VERP address anywhere in a text: `bounces+<run>-<seq>@`.
static VERP: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(&format!(
        r"(?i)(?:^|[<\s:,]){VERP_PREFIX}\+([0-9a-z]{{26}}-[0-9]+)@"
    ))
    .expect("VERP pattern")
});

/// The crier message named by a VERP address in `text`.
fn verp_id(text: &str) -> Option<MessageId> {
    VERP.captures_iter(text)
        .find_map(|c| MessageId::from_str(&c[1]).ok())
}

/// The message named by the bounce's own envelope recipient, as the delivering MTA
/// recorded it (`Delivered-To`, `X-Original-To`, `Envelope-To`) or the report's `To`.
fn envelope_id(message: &Message<'_>) -> Option<(MessageId, Clue)> {
    ["Delivered-To", "X-Original-To", "Envelope-To", "To"]
        .iter()
        .flat_map(|name| message.header_values(*name))
        .find_map(|value| match value {
            mail_parser::HeaderValue::Address(address) => {
                address.iter().find_map(|a| a.address().and_then(verp_id))
            }
            other => other.as_text().and_then(verp_id),
        })
        .map(|id| (id, Clue::Verp))
}

/// The message the returned original names: its `Return-Path` (VERP), crier's
/// `X-Crier-Message-Id`, or its `Message-ID` (`<crier.<id>@…>`).
fn returned_id(original: &Message<'_>) -> Option<(MessageId, Clue)> {
    let return_path = original
        .return_address()
        .and_then(|a| verp_id(&format!("<{a}>")))
        .map(|id| (id, Clue::ReturnPath));
    let crier = || {
        original
            .header("X-Crier-Message-Id")
            .and_then(|v| v.as_text())
            .and_then(|v| MessageId::from_str(v.trim()).ok())
            .map(|id| (id, Clue::CrierHeader))
    };
    let message_id = || {
        original
            .message_id()
            .and_then(|v| v.strip_prefix("crier."))
            .and_then(|v| v.split_once('@'))
            .and_then(|(id, _)| MessageId::from_str(id).ok())
            .map(|id| (id, Clue::MessageIdHeader))
    };
    return_path.or_else(crier).or_else(message_id)
}

/// A field value after its type: `rfc822; ann@example.com` → `ann@example.com`,
/// `smtp; 550 5.1.1 …` → `550 5.1.1 …`.
fn after_type(value: &str) -> &str {
    value.split_once(';').map_or(value, |(_, v)| v).trim()
}

/// An address as a report writes it, perhaps in angle brackets, lower case.
fn address_of(value: &str) -> String {
    value
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01JDZ8X6Q4T5N0V9K3M2R7W1YB-000003";

    fn postfix(status: &str, action: &str) -> String {
        format!(
            "From: MAILER-DAEMON@mx.acme.example (Mail Delivery System)\r\n\
             To: bounces+{ID}@bounces.acme.example\r\n\
             Subject: Undelivered Mail Returned to Sender\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"B\"\r\n\
             \r\n\
             --B\r\n\
             Content-Type: text/plain\r\n\
             \r\n\
             I'm sorry to have to inform you that your message could not be delivered.\r\n\
             --B\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             Reporting-MTA: dns; mx.acme.example\r\n\
             Arrival-Date: Mon,  1 Dec 2026 11:00:00 +0000 (UTC)\r\n\
             \r\n\
             Final-Recipient: rfc822; Ann@Example.net\r\n\
             Action: {action}\r\n\
             Status: {status}\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 <ann@example.net>: Recipient address\r\n\
             \x20   rejected: User unknown\r\n\
             \r\n\
             --B--\r\n"
        )
    }

    #[test]
    fn reads_a_postfix_hard_bounce() {
        let b = parse(postfix("5.1.1", "failed").as_bytes()).unwrap();
        assert_eq!(b.kind, Kind::Hard);
        assert_eq!(b.status, "5.1.1");
        assert_eq!(b.recipient.as_deref(), Some("ann@example.net"));
        assert_eq!(
            b.diagnostic.as_deref(),
            Some("550 5.1.1 <ann@example.net>: Recipient address rejected: User unknown")
        );
        assert_eq!(b.reporter.as_deref(), Some("mx.acme.example"));
        assert_eq!(b.message, Some((ID.parse().unwrap(), Clue::Verp)));
        assert_eq!(b.code(), "bounce:5.1.1");
    }

    #[test]
    fn a_4xx_status_or_a_delay_is_soft_and_a_success_is_no_bounce() {
        assert_eq!(
            parse(postfix("4.2.2", "failed").as_bytes()).unwrap().kind,
            Kind::Soft
        );
        assert_eq!(
            parse(postfix("4.4.1", "delayed").as_bytes()).unwrap().kind,
            Kind::Soft
        );
        assert_eq!(
            parse(postfix("2.0.0", "delivered").as_bytes())
                .unwrap()
                .kind,
            Kind::Other
        );
    }

    #[test]
    fn names_what_is_missing() {
        assert_eq!(parse(b"").unwrap_err(), ParseError::NotMail);
        assert_eq!(
            parse(b"From: a@b.example\r\nSubject: hi\r\n\r\nhello\r\n").unwrap_err(),
            ParseError::NotReport("text/plain".into())
        );
        let no_status = postfix("5.1.1", "failed").replace("Status: 5.1.1\r\n", "");
        assert_eq!(
            parse(no_status.as_bytes()).unwrap_err(),
            ParseError::NoStatus("ann@example.net".into())
        );
        let bad = postfix("5.1", "failed");
        assert_eq!(
            parse(bad.as_bytes()).unwrap_err(),
            ParseError::BadStatus("5.1".into())
        );
        let no_rcpt =
            postfix("5.1.1", "failed").replace("Final-Recipient: rfc822; Ann@Example.net\r\n", "");
        assert_eq!(
            parse(no_rcpt.as_bytes()).unwrap_err(),
            ParseError::NoRecipient
        );
    }

    #[test]
    fn finds_the_message_id_in_every_place_crier_puts_it() {
        let id: MessageId = ID.parse().unwrap();
        assert_eq!(verp_id(&format!("<bounces+{ID}@b.example>")), Some(id));
        assert_eq!(
            verp_id(&format!("BOUNCES+{}@b.example", ID.to_lowercase())),
            Some(id)
        );
        assert_eq!(verp_id(&format!("xbounces+{ID}@b.example")), None);
        let original = format!("Message-ID: <crier.{ID}@acme.example>\r\nSubject: x\r\n\r\n");
        let m = parser().parse_headers(original.as_bytes()).unwrap();
        assert_eq!(returned_id(&m), Some((id, Clue::MessageIdHeader)));
        let original = format!("X-Crier-Message-Id: {ID}\r\n{original}");
        let m = parser().parse_headers(original.as_bytes()).unwrap();
        assert_eq!(returned_id(&m), Some((id, Clue::CrierHeader)));
        let original = format!("Return-Path: <bounces+{ID}@b.example>\r\n{original}");
        let m = parser().parse_headers(original.as_bytes()).unwrap();
        assert_eq!(returned_id(&m), Some((id, Clue::ReturnPath)));
    }
}
