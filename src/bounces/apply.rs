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
        // 5.7.x is a refusal of the sender (policy, reputation, authentication), not a
        // dead address: the message is undelivered, the address stays mailable.
        Kind::Hard if is_policy(&bounce.status) => None,
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
        let list = OptOuts::new(store.directory());
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

/// How many email messages to `address` ended `undelivered` by a hard bounce (also
/// counted by the email APIs' event webhooks).
pub(crate) fn hard_bounces(ledger: &Ledger<'_>, address: &str) -> Result<usize, LedgerError> {
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
        .and_then(|c| c.strip_prefix("bounce:"))
        .is_some_and(|status| status.starts_with('5') && !is_policy(status))
}

/// RFC 3463's class 5.7 (security or policy status): the receiving system refused the
/// sender, whatever the address.
fn is_policy(status: &str) -> bool {
    status.starts_with("5.7.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounces::Clue;
    use crate::history::ledger::{NewMessage, NewRun};
    use crate::history::{MessageType, Trigger};
    use crate::recipients::RecipientKind;

    const ZA: phonenumber::country::Id = phonenumber::country::Id::ZA;

    /// A store whose history holds one `sent` email per address.
    fn sent(addresses: &[&str]) -> (tempfile::TempDir, Box<dyn Store>, Vec<MessageId>) {
        let (dir, store) = crate::store::scratch();
        let ids = plan_sent(&Ledger::new(store.as_ref()), addresses);
        (dir, store, ids)
    }

    fn plan_sent(ledger: &Ledger<'_>, addresses: &[&str]) -> Vec<MessageId> {
        let run = ledger
            .create_run(NewRun {
                job: "invoice".into(),
                trigger: Trigger::Manual,
                channels: vec![Channel::Email],
                provider: "mail".into(),
                body: "Hi".into(),
                subject: Some("Invoice".into()),
            })
            .unwrap();
        let planned = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| NewMessage {
                recipient_kind: RecipientKind::Customer,
                recipient_id: i as u64 + 1,
                address: a.to_string(),
                channel: Channel::Email,
                provider: "mail".into(),
                kind: MessageType::Message,
                subject: Some("Invoice".into()),
                body: "Hi".into(),
                encoding: None,
                parts: 0,
                state: MessageState::Queued,
                reason: None,
                error: None,
                snapshot: Default::default(),
                html: None,
                route: Vec::new(),
            })
            .collect();
        let ids = ledger.plan(run.id, planned).unwrap();
        for to in [MessageState::Sending, MessageState::Sent] {
            let changes: Vec<Change> = ids.iter().map(|id| Change::to(*id, to)).collect();
            ledger.transition(&changes).unwrap();
        }
        ids
    }

    fn bounce(kind: Kind, status: &str, message: Option<MessageId>) -> Bounce {
        Bounce {
            kind,
            status: status.into(),
            diagnostic: Some(format!("550 {status} no such user")),
            recipient: Some("ann@example.net".into()),
            message: message.map(|id| (id, Clue::Verp)),
            reporter: None,
        }
    }

    #[test]
    fn a_policy_rejection_is_undelivered_but_keeps_the_address() {
        let (_dir, store, ids) = sent(&["ann@example.net"]);
        let blocked = bounce(Kind::Hard, "5.7.1", Some(ids[0]));
        let applied = apply(store.as_ref(), &blocked, 1, ZA).unwrap();
        assert_eq!(applied.effect, Effect::Undelivered);
        assert_eq!(applied.opted_out, None);
        let m = Ledger::new(store.as_ref()).message(ids[0]).unwrap();
        assert_eq!(m.error_code.as_deref(), Some("bounce:5.7.1"));
        assert!(
            !OptOuts::new(store.directory())
                .contains("ann@example.net")
                .unwrap()
        );
    }

    #[test]
    fn a_hard_bounce_moves_its_message_once_and_a_soft_one_only_records() {
        let (_dir, store, ids) = sent(&["Ann@Example.net", "ben@example.net"]);
        let hard = bounce(Kind::Hard, "5.1.1", Some(ids[0]));
        let applied = apply(store.as_ref(), &hard, 1, ZA).unwrap();
        assert_eq!(applied.effect, Effect::Undelivered);
        assert_eq!(applied.address.as_deref(), Some("ann@example.net"));
        assert_eq!(applied.opted_out, Some("bounce"));
        let m = Ledger::new(store.as_ref()).message(ids[0]).unwrap();
        assert_eq!(m.state, MessageState::Undelivered);
        assert_eq!(m.error_code.as_deref(), Some("bounce:5.1.1"));
        assert_eq!(m.error_text.as_deref(), Some("550 5.1.1 no such user"));

        let again = apply(store.as_ref(), &hard, 1, ZA).unwrap();
        assert_eq!(again.effect, Effect::Unchanged(MessageState::Undelivered));
        assert_eq!(again.opted_out, None, "already on the list");
        // A late soft bounce does not overwrite the hard one.
        let late = apply(
            store.as_ref(),
            &bounce(Kind::Soft, "4.2.2", Some(ids[0])),
            1,
            ZA,
        );
        assert_eq!(
            late.unwrap().effect,
            Effect::Unchanged(MessageState::Undelivered)
        );
        let m = Ledger::new(store.as_ref()).message(ids[0]).unwrap();
        assert_eq!(m.error_code.as_deref(), Some("bounce:5.1.1"));

        let soft = apply(
            store.as_ref(),
            &bounce(Kind::Soft, "4.2.2", Some(ids[1])),
            1,
            ZA,
        );
        let soft = soft.unwrap();
        assert_eq!(soft.effect, Effect::Recorded(MessageState::Sent));
        assert_eq!(soft.opted_out, None);
        let m = Ledger::new(store.as_ref()).message(ids[1]).unwrap();
        assert_eq!(
            (m.state, m.error_code.as_deref()),
            (MessageState::Sent, Some("bounce:4.2.2"))
        );
        let run = Ledger::new(store.as_ref()).run(ids[0].run).unwrap();
        assert_eq!(run.counters.get(MessageState::Undelivered), 1);
        assert_eq!(run.counters.get(MessageState::Sent), 1);
    }

    #[test]
    fn hard_bounce_limit_counts_the_addresss_hard_bounces_known_or_not() {
        let (_dir, store, ids) = sent(&["ann@example.net", "ann@example.net"]);
        let first = apply(
            store.as_ref(),
            &bounce(Kind::Hard, "5.1.1", Some(ids[0])),
            3,
            ZA,
        );
        assert_eq!(first.unwrap().opted_out, None, "1 of 3");
        let second = apply(
            store.as_ref(),
            &bounce(Kind::Hard, "5.1.1", Some(ids[1])),
            3,
            ZA,
        );
        assert_eq!(second.unwrap().opted_out, None, "2 of 3");
        // The third names no message the history has: it counts too.
        let third = apply(store.as_ref(), &bounce(Kind::Hard, "5.1.1", None), 3, ZA).unwrap();
        assert_eq!(third.effect, Effect::NoMessage);
        assert_eq!(third.opted_out, Some("bounce"));
    }

    #[test]
    fn a_report_naming_no_message_and_no_address_is_refused_before_any_write() {
        let (_dir, store, _) = sent(&["ann@example.net"]);
        let mut anonymous = bounce(Kind::Complaint, "abuse", None);
        anonymous.recipient = None;
        let refused = apply(store.as_ref(), &anonymous, 1, ZA);
        assert!(
            matches!(refused, Err(ApplyError::Unidentified)),
            "{refused:?}"
        );
        assert_eq!(OptOuts::new(store.directory()).list().count(), 0);
    }
}
