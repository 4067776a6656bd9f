//! The delivery ledger: every run (one mass sending) and every message it plans, with the
//! fate of each.
//!
//! A message is recorded *before* it is sent and moved through a validated state machine
//! as its fate becomes known, so a crash leaves a record of exactly what was in flight
//! and analysts can always answer "who actually received this campaign?". A run's status
//! is derived from its messages' counters, which are kept in the same atomic writes as
//! the messages themselves, so the two can never disagree. [`ledger::Ledger`] is the API
//! the engine writes through; [`query`] is what the CLI (and later the HTTP API) reads
//! with; [`export`] streams CSV.

pub mod export;
pub mod ledger;
pub mod query;
pub mod report;
pub mod store;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::job::Channel;
use crate::recipients::RecipientKind;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Now, in [`Millis`].
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// A run's id: a ULID, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunId(pub u128);

impl RunId {
    pub fn new() -> RunId {
        RunId(ulid::Ulid::generate().0)
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(b: &[u8]) -> Option<RunId> {
        <[u8; 16]>::try_from(b)
            .ok()
            .map(|b| RunId(u128::from_be_bytes(b)))
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", ulid::Ulid(self.0))
    }
}

impl RunId {
    /// What a run id looks like: a ULID, 26 characters of Crockford base 32 (either case),
    /// the first at most `7` (a ULID is 128 bits). The parser checks exactly this, and the
    /// API's document publishes it.
    pub const PATTERN: &str = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$";
    /// Characters in a run id.
    pub const LEN: usize = 26;
}

impl FromStr for RunId {
    type Err = String;
    fn from_str(s: &str) -> Result<RunId, String> {
        static PATTERN: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new(RunId::PATTERN).expect("run id pattern"));
        PATTERN
            .is_match(s)
            .then(|| ulid::Ulid::from_string(s).ok())
            .flatten()
            .map(|u| RunId(u.0))
            .ok_or_else(|| {
                format!("`{s}` is not a run id (26 characters, e.g. 01JDZ8X6Q4T5N0V9K3M2R7W1YB)")
            })
    }
}

/// A message's id: its run and its place in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId {
    pub run: RunId,
    pub seq: u32,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:06}", self.run, self.seq)
    }
}

impl FromStr for MessageId {
    type Err = String;
    fn from_str(s: &str) -> Result<MessageId, String> {
        let (run, seq) = s
            .trim()
            .rsplit_once('-')
            .ok_or_else(|| format!("`{s}` is not a message id (RUN-SEQ)"))?;
        Ok(MessageId {
            run: run.parse()?,
            seq: seq
                .parse()
                .map_err(|_| format!("`{s}` is not a message id (RUN-SEQ)"))?,
        })
    }
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// The scheduler, for this fire instant.
    Schedule {
        at: Millis,
    },
    Manual,
    Test,
    Api,
}

impl Trigger {
    pub fn label(&self) -> &'static str {
        match self {
            Trigger::Schedule { .. } => "schedule",
            Trigger::Manual => "manual",
            Trigger::Test => "test",
            Trigger::Api => "api",
        }
    }
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Queued,
    Sending,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    Expired,
    Unknown,
    Skipped,
    Cancelled,
}

impl MessageState {
    pub const ALL: [MessageState; 10] = [
        MessageState::Queued,
        MessageState::Sending,
        MessageState::Sent,
        MessageState::Delivered,
        MessageState::Undelivered,
        MessageState::Failed,
        MessageState::Expired,
        MessageState::Unknown,
        MessageState::Skipped,
        MessageState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Sending => "sending",
            MessageState::Sent => "sent",
            MessageState::Delivered => "delivered",
            MessageState::Undelivered => "undelivered",
            MessageState::Failed => "failed",
            MessageState::Expired => "expired",
            MessageState::Unknown => "unknown",
            MessageState::Skipped => "skipped",
            MessageState::Cancelled => "cancelled",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Still waiting for crier to act on it.
    pub fn is_pending(self) -> bool {
        matches!(self, MessageState::Queued | MessageState::Sending)
    }

    /// An outcome that needs someone's attention.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            MessageState::Failed
                | MessageState::Expired
                | MessageState::Unknown
                | MessageState::Undelivered
        )
    }

    /// May a message move from `self` to `to`? A message never goes back once a
    /// provider has given a definite answer.
    pub fn can_become(self, to: MessageState) -> bool {
        use MessageState::*;
        match self {
            Queued => matches!(to, Sending | Skipped | Cancelled | Expired),
            Sending => matches!(to, Sent | Failed | Unknown | Queued | Expired),
            Sent => matches!(to, Delivered | Undelivered | Failed),
            Unknown => matches!(to, Sent | Delivered | Undelivered | Failed | Queued),
            Delivered | Undelivered | Failed | Expired | Skipped | Cancelled => false,
        }
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageState {
    type Err = String;
    fn from_str(s: &str) -> Result<MessageState, String> {
        MessageState::ALL
            .into_iter()
            .find(|m| m.as_str() == s.trim().to_lowercase())
            .ok_or_else(|| {
                format!(
                    "unknown message state `{s}` (expected one of {})",
                    MessageState::ALL.map(|m| m.as_str()).join(", ")
                )
            })
    }
}

/// A run's status, as Splynx's history shows it; always derived, never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    New,
    Processing,
    Sent,
    SentWithError,
    Cancelled,
    Removed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::New,
        RunStatus::Processing,
        RunStatus::Sent,
        RunStatus::SentWithError,
        RunStatus::Cancelled,
        RunStatus::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::New => "new",
            RunStatus::Processing => "processing",
            RunStatus::Sent => "sent",
            RunStatus::SentWithError => "sent_with_error",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Removed => "removed",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a message is a real one or a send-as-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    Message,
    Test,
}

impl MessageType {
    pub const ALL: [MessageType; 2] = [MessageType::Message, MessageType::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Message => "message",
            MessageType::Test => "test",
        }
    }
}

/// Messages per state, indexed by [`MessageState::index`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters(pub [u64; 10]);

impl Counters {
    pub fn get(&self, s: MessageState) -> u64 {
        self.0[s.index()]
    }

    pub fn add(&mut self, s: MessageState, n: i64) {
        let c = &mut self.0[s.index()];
        *c = c.saturating_add_signed(n);
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn pending(&self) -> u64 {
        self.get(MessageState::Queued) + self.get(MessageState::Sending)
    }
}

/// One mass sending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub job: String,
    pub trigger: Trigger,
    pub channels: Vec<Channel>,
    pub provider: String,
    /// The template or message text as used.
    pub body: String,
    pub subject: Option<String>,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub counters: Counters,
    /// Every recipient has been planned; the run can finish once nothing is pending.
    pub planned_all: bool,
    pub cancelled: bool,
    pub removed: bool,
    /// The run whose failed and expired messages this one sends again ("Retry failed").
    #[serde(default)]
    pub retry_of: Option<RunId>,
}

impl Run {
    /// The status the history shows, from the counters and flags.
    pub fn status(&self) -> RunStatus {
        let c = &self.counters;
        if self.removed {
            RunStatus::Removed
        } else if c.total() == 0 && !self.planned_all && !self.cancelled {
            RunStatus::New
        } else if c.pending() > 0 || !self.planned_all && !self.cancelled {
            RunStatus::Processing
        } else if self.cancelled {
            RunStatus::Cancelled
        } else if MessageState::ALL
            .iter()
            .any(|s| s.is_error() && c.get(*s) > 0)
        {
            RunStatus::SentWithError
        } else {
            RunStatus::Sent
        }
    }
}

/// One recipient on one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub recipient_kind: RecipientKind,
    pub recipient_id: u64,
    /// E.164 phone, email address, or the portal login.
    pub address: String,
    pub channel: Channel,
    pub provider: String,
    pub kind: MessageType,
    pub subject: Option<String>,
    pub body: String,
    /// `gsm7` or `ucs2` for SMS.
    pub encoding: Option<String>,
    pub parts: u32,
    pub state: MessageState,
    /// Why it was skipped (`invalid_phone`, `no_email`, `opted_out`, `duplicate`, …).
    pub reason: Option<String>,
    pub attempts: u32,
    pub provider_message_id: Option<String>,
    pub error_code: Option<String>,
    pub error_text: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Every state the message entered, with when.
    pub transitions: Vec<(MessageState, Millis)>,
    /// Providers tried before `provider`, in order, each with the error that moved the
    /// message on (a route's failover). Empty for most messages.
    #[serde(default)]
    pub failovers: Vec<Failover>,
    /// The recipient's fields analysts group by, as they were when it was planned.
    #[serde(default)]
    pub snapshot: RecipientSnapshot,
    /// The HTML alternative of an email, as rendered when it was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Providers the message may still fail over to, in order (a route script's choice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<String>,
    /// The worker holding the message (claimed to send it), or the one that last held
    /// it: PostgreSQL with several workers; `None` on the embedded store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

/// A recipient's fields as they were when a message to them was planned: history says
/// where the customer was when we wrote to them, whatever the directory says today.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientSnapshot {
    pub location: Option<String>,
    pub partner: Option<String>,
    pub category: Option<String>,
    pub billing_type: Option<String>,
    /// The recipient's status (`active`, `blocked`, …).
    pub status: Option<String>,
}

impl RecipientSnapshot {
    /// The fields of `r` now.
    pub fn of(r: &crate::recipients::Recipient) -> RecipientSnapshot {
        RecipientSnapshot {
            location: r.location.clone(),
            partner: r.partner.clone(),
            category: r.category.map(|c| c.as_str().to_string()),
            billing_type: r.billing_type.map(|b| b.as_str().to_string()),
            status: Some(r.status.as_str().to_string()),
        }
    }
}

/// One provider a message was tried on before it failed over to the next in its route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    pub provider: String,
    /// When the message left this provider.
    pub at: Millis,
    /// Send attempts made on this provider.
    pub attempts: u32,
    pub error_code: String,
    pub error_text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_legal_and_illegal_transition() {
        use MessageState::*;
        let legal: &[(MessageState, &[MessageState])] = &[
            (Queued, &[Sending, Skipped, Cancelled, Expired]),
            (Sending, &[Sent, Failed, Unknown, Queued, Expired]),
            (Sent, &[Delivered, Undelivered, Failed]),
            (Unknown, &[Sent, Delivered, Undelivered, Failed, Queued]),
            (Delivered, &[]),
            (Undelivered, &[]),
            (Failed, &[]),
            (Expired, &[]),
            (Skipped, &[]),
            (Cancelled, &[]),
        ];
        for (from, tos) in legal {
            for to in MessageState::ALL {
                assert_eq!(from.can_become(to), tos.contains(&to), "{from} -> {to}");
            }
        }
    }

    fn run_with(counts: &[(MessageState, u64)], planned_all: bool) -> Run {
        let mut counters = Counters::default();
        for (s, n) in counts {
            counters.add(*s, *n as i64);
        }
        Run {
            id: RunId(1),
            job: "j".into(),
            trigger: Trigger::Manual,
            channels: vec![Channel::Sms],
            provider: "outbox".into(),
            body: String::new(),
            subject: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            counters,
            planned_all,
            cancelled: false,
            removed: false,
            retry_of: None,
        }
    }

    #[test]
    fn run_status_is_derived_from_its_messages() {
        use MessageState::*;
        assert_eq!(run_with(&[], false).status(), RunStatus::New);
        assert_eq!(
            run_with(&[(Queued, 3)], true).status(),
            RunStatus::Processing
        );
        assert_eq!(
            run_with(&[(Sent, 3)], false).status(),
            RunStatus::Processing
        );
        assert_eq!(
            run_with(&[(Sent, 2), (Delivered, 1), (Skipped, 4)], true).status(),
            RunStatus::Sent
        );
        assert_eq!(
            run_with(&[(Sent, 2), (Failed, 1)], true).status(),
            RunStatus::SentWithError
        );
        assert_eq!(
            run_with(&[(Sent, 2), (Unknown, 1)], true).status(),
            RunStatus::SentWithError
        );
        assert_eq!(run_with(&[], true).status(), RunStatus::Sent);
        let mut cancelled = run_with(&[(Sent, 2), (Cancelled, 5)], false);
        cancelled.cancelled = true;
        assert_eq!(cancelled.status(), RunStatus::Cancelled);
        cancelled.removed = true;
        assert_eq!(cancelled.status(), RunStatus::Removed);
    }

    #[test]
    fn ids_print_and_parse() {
        let id = MessageId {
            run: RunId::new(),
            seq: 42,
        };
        assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        assert!("nope".parse::<RunId>().is_err());
        let run = RunId::new().to_string();
        assert_eq!(run.len(), RunId::LEN);
        assert_eq!(
            run.to_lowercase().parse::<RunId>().unwrap().to_string(),
            run
        );
        assert_eq!("Sent".parse::<MessageState>().unwrap(), MessageState::Sent);
        assert!(
            "gone"
                .parse::<MessageState>()
                .unwrap_err()
                .contains("expected one of")
        );
    }

    #[test]
    fn run_ids_are_exactly_their_pattern() {
        let run = RunId::new().to_string();
        // A first character above 7 would overflow 128 bits (the decoder drops the bits).
        let overflow = format!("Z{}", &run[1..]);
        let padded = format!(" {run}");
        let short = &run[..25];
        let with_u = format!("{}U", &run[..25]);
        for bad in [
            overflow.as_str(),
            padded.as_str(),
            short,
            with_u.as_str(),
            "",
        ] {
            assert!(bad.parse::<RunId>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(run.parse::<RunId>().unwrap().to_string(), run);
    }
}
