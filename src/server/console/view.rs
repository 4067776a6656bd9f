//! Plain data for the templates: runs and messages as people read them (times in the
//! configured zone with the offset, durations, percentages), built from the ledger's
//! records. Templates get these, never a store handle.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::history::{Message, MessageState, Millis, Run, RunStatus};
use crate::job::schedule::zoned;

/// `1234567` → `1,234,567` (the `num` filter).
pub fn thousands(n: minijinja::Value) -> String {
    let Some(n) = n.as_i64() else {
        return n.to_string();
    };
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An instant in `tz`, with its offset.
pub fn at(tz: Tz, ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| zoned(t, tz))
        .unwrap_or_else(|| ms.to_string())
}

/// `3h 02m`, `4m 05s`, `12s`.
pub fn duration(ms: Millis) -> String {
    let s = (ms.max(0) / 1000) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The seed's label of a status.
pub fn status_label(s: RunStatus) -> &'static str {
    match s {
        RunStatus::New => "New",
        RunStatus::Processing => "Processing",
        RunStatus::Sent => "Sent",
        RunStatus::SentWithError => "Sent with error",
        RunStatus::Cancelled => "Cancelled",
        RunStatus::Removed => "Removed",
    }
}

/// One run, as the history table and the run page show it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: String,
    pub job: String,
    pub trigger: &'static str,
    pub status: &'static str,
    pub status_label: &'static str,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub duration: Option<String>,
    pub provider: String,
    pub channels: Vec<String>,
    pub total: u64,
    /// Messages crier has finished with (not queued or sending).
    pub done: u64,
    pub percent: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub unknown: u64,
    pub skipped: u64,
    /// Still sending (or planning).
    pub live: bool,
    pub removed: bool,
    pub cancellable: bool,
    /// Done, with failed or expired messages to send again ("Retry failed").
    pub retryable: bool,
    /// The run this one retries.
    pub retry_of: Option<String>,
}

impl RunRow {
    pub fn new(r: &Run, tz: Tz, now: Millis) -> RunRow {
        let c = &r.counters;
        let total = c.total();
        let done = total - c.pending();
        let status = r.status();
        let live = matches!(status, RunStatus::New | RunStatus::Processing);
        RunRow {
            id: r.id.to_string(),
            job: r.job.clone(),
            trigger: r.trigger.label(),
            status: status.as_str(),
            status_label: status_label(status),
            created: at(tz, r.created_at),
            started: r.started_at.map(|t| at(tz, t)),
            finished: r.finished_at.map(|t| at(tz, t)),
            duration: r
                .started_at
                .map(|s| duration(r.finished_at.unwrap_or(now) - s)),
            provider: r.provider.clone(),
            channels: r.channels.iter().map(|c| c.to_string()).collect(),
            total,
            done,
            percent: (done * 100)
                .checked_div(total)
                .unwrap_or(if live { 0 } else { 100 }),
            // Sent counts every message the provider took, delivered or not yet.
            sent: c.get(MessageState::Sent)
                + c.get(MessageState::Delivered)
                + c.get(MessageState::Undelivered),
            delivered: c.get(MessageState::Delivered),
            failed: c.get(MessageState::Failed) + c.get(MessageState::Expired),
            unknown: c.get(MessageState::Unknown),
            skipped: c.get(MessageState::Skipped),
            live,
            removed: r.removed,
            cancellable: (live || c.get(MessageState::Queued) > 0) && !r.removed,
            retryable: !live
                && !r.removed
                && c.get(MessageState::Failed) + c.get(MessageState::Expired) > 0,
            retry_of: r.retry_of.map(|id| id.to_string()),
        }
    }
}

/// One message, as the logs and the message page show it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRow {
    pub id: String,
    pub run: String,
    pub kind: &'static str,
    pub channel: String,
    pub provider: String,
    pub recipient: String,
    pub recipient_kind: &'static str,
    pub recipient_id: u64,
    pub address: String,
    pub state: &'static str,
    pub error: bool,
    pub reason: Option<String>,
    pub attempts: u32,
    pub encoding: Option<String>,
    pub parts: u32,
    pub provider_message_id: Option<String>,
    pub error_code: Option<String>,
    pub error_text: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub created: String,
    pub updated: String,
    pub transitions: Vec<(&'static str, String)>,
    pub failovers: Vec<FailoverRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverRow {
    pub provider: String,
    pub at: String,
    pub attempts: u32,
    pub error_code: String,
    pub error_text: String,
}

impl MessageRow {
    pub fn new(m: &Message, tz: Tz) -> MessageRow {
        MessageRow {
            id: m.id.to_string(),
            run: m.id.run.to_string(),
            kind: m.kind.as_str(),
            channel: m.channel.to_string(),
            provider: m.provider.clone(),
            recipient: format!("{}:{}", m.recipient_kind.as_str(), m.recipient_id),
            recipient_kind: m.recipient_kind.as_str(),
            recipient_id: m.recipient_id,
            address: m.address.clone(),
            state: m.state.as_str(),
            error: m.state.is_error(),
            reason: m.reason.clone(),
            attempts: m.attempts,
            encoding: m.encoding.clone(),
            parts: m.parts,
            provider_message_id: m.provider_message_id.clone(),
            error_code: m.error_code.clone(),
            error_text: m.error_text.clone(),
            subject: m.subject.clone(),
            body: m.body.clone(),
            created: at(tz, m.created_at),
            updated: at(tz, m.updated_at),
            transitions: m
                .transitions
                .iter()
                .map(|(s, t)| (s.as_str(), at(tz, *t)))
                .collect(),
            failovers: m
                .failovers
                .iter()
                .map(|f| FailoverRow {
                    provider: f.provider.clone(),
                    at: at(tz, f.at),
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

    #[test]
    fn numbers_get_thousands_separators() {
        let t = |n: i64| thousands(minijinja::Value::from(n));
        assert_eq!(t(0), "0");
        assert_eq!(t(999), "999");
        assert_eq!(t(1000), "1,000");
        assert_eq!(t(10_000_000), "10,000,000");
        assert_eq!(t(-1234), "-1,234");
    }

    #[test]
    fn durations_read_in_the_largest_units() {
        assert_eq!(duration(12_000), "12s");
        assert_eq!(duration(245_000), "4m 05s");
        assert_eq!(duration(3 * 3_600_000 + 120_000), "3h 02m");
    }
}
