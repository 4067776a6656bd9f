//! What a [`Bounce`] does to the history and the opt-out list.
//!
//! A hard bounce moves its message from `sent` (or `unknown`) to `undelivered`, with
//! the status as its error code (`bounce:5.1.1`) and the remote server's words as its
//! text; a soft bounce or a complaint records the same on the message without moving it.
//! A message already final is left as it is (the state machine refuses to move it), so
//! the same bounce ingested twice changes nothing the second time. The address goes on
//! the opt-out list on a complaint (reason `complaint`) and once it has hard-bounced
//! `hard_bounce_limit` times (reason `bounce`), also when the message is unknown.
//! Nothing is written before everything is known; the writes are the ledger's, then the
//! opt-out list's, then one flush.

use thiserror::Error;

use super::{Bounce, Kind};
use crate::history::ledger::{Change, Ledger, LedgerError};
use crate::history::query::{self, MessageFilter};
use crate::history::{Message, MessageId, MessageState, now_ms};
use crate::job::Channel;
use crate::recipients::optout::{self, OptOuts};
use crate::store::{Store, StoreError};

/// What became of the message a report names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// It moved to `undelivered`.
    Undelivered,
    /// The bounce or complaint was recorded on it; its state did not change.
    Recorded(MessageState),
    /// It was already in this state, which the report does not change.
    Unchanged(MessageState),
    /// The report names this id, which the history does not know.
    UnknownMessage(MessageId),
    /// The report names no crier message.
    NoMessage,
}

/// What applying one report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The message the report names, if the history has it.
    pub message: Option<MessageId>,
    pub effect: Effect,
    /// The address the report is about (the message's, else the report's), normalised.
    pub address: Option<String>,
    /// The reason it was put on the opt-out list now (`bounce`, `complaint`).
    pub opted_out: Option<&'static str>,
}

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error(
        "the report names no crier message (no `bounces+<id>@` recipient or Return-Path, no `X-Crier-Message-Id`, no `<crier.…>` Message-ID) and no recipient address"
    )]
    Unidentified,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `bounce` to the history and the opt-out list of `store`, durably.
pub fn apply(
    store: &dyn Store,
    bounce: &Bounce,
    hard_bounce_limit: u32,
    region: phonenumber::country::Id,
) -> Result<Applied, ApplyError> {
    let ledger = Ledger::new(store);
    let message = match bounce.message {
        Some((id, _)) => match ledger.message(id) {
            Ok(m) => Some(m),
            Err(LedgerError::NoSuchMessage(_)) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let address = message
        .as_ref()
        .map(|m| m.address.as_str())
        .or(bounce.recipient.as_deref())
        .and_then(|a| optout::normalize(a, region).ok());
    if message.is_none() && address.is_none() {
        return Err(ApplyError::Unidentified);
    }
    let error = (bounce.code(), bounce.diagnostic.clone().unwrap_or_default());
    let effect = match &message {
        None => match bounce.message {
            Some((id, _)) => Effect::UnknownMessage(id),
            None => Effect::NoMessage,
        },
        Some(m) if !matches!(m.state, MessageState::Sent | MessageState::Unknown) => {
            Effect::Unchanged(m.state)
        }
        Some(m) => match bounce.kind {
            Kind::Hard => {
                let mut change = Change::to(m.id, MessageState::Undelivered);
                change.error = Some(error);
                match ledger.transition(&[change])?.pop() {
                    Some(Ok(())) => Effect::Undelivered,
                    _ => Effect::Unchanged(m.state),
                }
            }
            Kind::Soft | Kind::Complaint => {
                ledger.annotate(m.id, error, now_ms())?;
                Effect::Recorded(m.state)
            }
            Kind::Other => Effect::Unchanged(m.state),
        },
    };
    let reason = match bounce.kind {
        Kind::Complaint => Some("complaint"),
        Kind::Hard => {
            let counted = usize::from(matches!(
                effect,
                Effect::UnknownMessage(_) | Effect::NoMessage
            ));
            let limit = hard_bounce_limit.max(1) as usize;
            // The history keeps the address as the message was sent to it.
            let sent_to = message.as_ref().map(|m| &m.address).or(address.as_ref());
            let reached = limit == 1
                || sent_to
                    .map(|a| hard_bounces(&ledger, a).map(|n| n + counted >= limit))
                    .transpose()?
                    .unwrap_or(false);
            reached.then_some("bounce")
        }
        Kind::Soft | Kind::Other => None,
    };
    let mut opted_out = None;
    if let (Some(reason), Some(address)) = (reason, &address) {
        let list = OptOuts::new(store.optouts());
        if list.add(std::slice::from_ref(address), reason)? > 0 {
            opted_out = Some(reason);
        }
    }
    store.flush()?;
    Ok(Applied {
        message: message.as_ref().map(|m| m.id),
        effect,
        address,
        opted_out,
    })
}

/// How many email messages to `address` ended `undelivered` by a hard bounce.
fn hard_bounces(ledger: &Ledger<'_>, address: &str) -> Result<usize, LedgerError> {
    let filter = MessageFilter {
        channel: Some(Channel::Email),
        state: Some(MessageState::Undelivered),
        address: Some(address.to_string()),
        include_removed: true,
        ..MessageFilter::default()
    };
    let mut n = 0;
    for message in query::messages(ledger, &filter) {
        if is_hard_bounce(&message?) {
            n += 1;
        }
    }
    Ok(n)
}

fn is_hard_bounce(message: &Message) -> bool {
    message
        .error_code
        .as_deref()
        .is_some_and(|c| c.starts_with("bounce:5"))
}
