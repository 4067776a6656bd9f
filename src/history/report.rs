//! Reports over the history that no listing answers: a run's outcomes broken down by a
//! recipient field, its skips by reason, its sends over time, and messages per day by
//! outcome.
//!
//! Each is a function over the public message iterators ([`query::messages`],
//! [`Ledger::messages_of`](super::ledger::Ledger::messages_of)); a breakdown reads the
//! recipient snapshot each message keeps (history says where the customer was when we
//! wrote to them). The console draws them; nothing here formats.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;

use super::ledger::LedgerError;
use super::{Counters, Message, MessageState, Millis, Run};
use crate::recipients::{Recipient, RecipientKind};

/// A recipient field outcomes can be broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Location,
    Partner,
    Category,
    BillingType,
}

impl Field {
    pub const ALL: [Field; 4] = [
        Field::Location,
        Field::Partner,
        Field::Category,
        Field::BillingType,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Location => "location",
            Field::Partner => "partner",
            Field::Category => "category",
            Field::BillingType => "billing_type",
        }
    }

    /// This field as the message's snapshot of its recipient recorded it when it was
    /// planned; `None` for a message planned without one.
    fn of_snapshot(self, m: &Message) -> Option<String> {
        let s = &m.snapshot;
        // A snapshot always has the status; without it, nothing was recorded.
        s.status.as_ref()?;
        let v = match self {
            Field::Location => s.location.clone(),
            Field::Partner => s.partner.clone(),
            Field::Category => s.category.clone(),
            Field::BillingType => s.billing_type.clone(),
        };
        Some(
            v.filter(|s| !s.is_empty())
                .unwrap_or_else(|| NONE.to_string()),
        )
    }

    /// This field of `r`, as its label (`(none)` when empty).
    fn of(self, r: &Recipient) -> String {
        let v = match self {
            Field::Location => r.location.clone(),
            Field::Partner => r.partner.clone(),
            Field::Category => r.category.map(|c| c.as_str().to_string()),
            Field::BillingType => r.billing_type.map(|b| b.as_str().to_string()),
        };
        v.filter(|s| !s.is_empty())
            .unwrap_or_else(|| NONE.to_string())
    }
}

/// The label of a recipient with no value in the field (or no longer in the directory).
pub const NONE: &str = "(none)";

impl std::str::FromStr for Field {
    type Err = String;
    fn from_str(s: &str) -> Result<Field, String> {
        Field::ALL
            .into_iter()
            .find(|f| f.as_str() == s.trim().to_lowercase().replace('-', "_"))
            .ok_or_else(|| {
                format!(
                    "unknown field `{s}` (expected one of {})",
                    Field::ALL.map(Field::as_str).join(", ")
                )
            })
    }
}

/// Outcomes of `messages` per value of `field` of their recipients as they were when
/// each message was planned (its snapshot; for a message without one, the directory's
/// record now, looked up with `recipient`), most messages first.
pub fn breakdown(
    messages: impl Iterator<Item = Result<Message, LedgerError>>,
    field: Field,
    recipient: impl Fn(RecipientKind, u64) -> Option<Recipient>,
) -> Result<Vec<(String, Counters)>, LedgerError> {
    let mut by: BTreeMap<String, Counters> = BTreeMap::new();
    // Consecutive messages often share a recipient (one per channel): look up once.
    let mut last: Option<((RecipientKind, u64), String)> = None;
    for m in messages {
        let m = m?;
        if let Some(value) = field.of_snapshot(&m) {
            by.entry(value).or_default().add(m.state, 1);
            continue;
        }
        let key = (m.recipient_kind, m.recipient_id);
        let value = match &last {
            Some((k, v)) if *k == key => v.clone(),
            _ => {
                let v = recipient(key.0, key.1)
                    .map(|r| field.of(&r))
                    .unwrap_or_else(|| NONE.to_string());
                last = Some((key, v.clone()));
                v
            }
        };
        by.entry(value).or_default().add(m.state, 1);
    }
    let mut rows: Vec<_> = by.into_iter().collect();
    rows.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then_with(|| a.0.cmp(&b.0)));
    Ok(rows)
}

/// Skipped messages by reason, most first.
pub fn skipped_by_reason(
    messages: impl Iterator<Item = Result<Message, LedgerError>>,
) -> Result<Vec<(String, u64)>, LedgerError> {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for m in messages {
        let m = m?;
        if m.state == MessageState::Skipped {
            *by.entry(m.reason.unwrap_or_else(|| NONE.to_string()))
                .or_default() += 1;
        }
    }
    let mut rows: Vec<_> = by.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(rows)
}

/// The states a timeline counts, in its column order.
pub const TIMELINE: [MessageState; 3] = [
    MessageState::Sent,
    MessageState::Delivered,
    MessageState::Failed,
];

/// How many messages entered sent, delivered and failed in each of `buckets` equal
/// slices of `[from, to)` (by the time of that transition).
pub fn timeline(
    messages: impl Iterator<Item = Result<Message, LedgerError>>,
    (from, to): (Millis, Millis),
    buckets: usize,
) -> Result<Vec<[u64; 3]>, LedgerError> {
    let mut out = vec![[0u64; 3]; buckets.max(1)];
    let span = (to - from).max(1);
    for m in messages {
        for (state, t) in m?.transitions {
            let Some(col) = TIMELINE.iter().position(|s| *s == state) else {
                continue;
            };
            if t < from || t >= to {
                continue;
            }
            let i = (((t - from) as i128 * out.len() as i128) / span as i128) as usize;
            let last = out.len() - 1;
            out[i.min(last)][col] += 1;
        }
    }
    Ok(out)
}

/// Messages per local day (in `tz`) by their current state, for the `days` days up to
/// and including today, counted by the day their run was created (a run's messages are
/// planned as it starts), from the runs' counters: one read per run, not per message, so
/// a month of a large history answers at once. `runs` should be those created in that
/// range.
pub fn per_day(
    runs: impl Iterator<Item = Result<Run, LedgerError>>,
    tz: Tz,
    now: DateTime<Utc>,
    days: u32,
) -> Result<Vec<(NaiveDate, Counters)>, LedgerError> {
    let today = now.with_timezone(&tz).date_naive();
    let first = today - chrono::Days::new(u64::from(days.saturating_sub(1)));
    let mut out: Vec<(NaiveDate, Counters)> = (0..days)
        .map(|i| (first + chrono::Days::new(u64::from(i)), Counters::default()))
        .collect();
    for run in runs {
        let run = run?;
        let Some(day) = DateTime::<Utc>::from_timestamp_millis(run.created_at)
            .map(|t| t.with_timezone(&tz).date_naive())
        else {
            continue;
        };
        let i = day.num_days_from_ce() - first.num_days_from_ce();
        if let Some((_, c)) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
            for state in MessageState::ALL {
                c.add(state, run.counters.get(state) as i64);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Trigger;
    use crate::history::ledger::{Change, Ledger, NewMessage, NewRun};
    use crate::job::Channel;
    use crate::recipients::{Recipient, Status};

    fn recipient(id: u64, location: &str) -> Recipient {
        Recipient {
            kind: RecipientKind::Customer,
            id,
            login: None,
            status: Status::Active,
            name: format!("c{id}"),
            email: None,
            billing_email: None,
            phone: Some(format!("+2782000000{id}")),
            phone_raw: None,
            category: None,
            location: (!location.is_empty()).then(|| location.to_string()),
            billing_type: None,
            partner: None,
            tariffs: vec![],
            timezone: None,
            attrs: Default::default(),
        }
    }

    /// A queued SMS to `r`, with `snapshot` as the recipient's recorded fields.
    fn queued_sms(r: &Recipient, snapshot: crate::history::RecipientSnapshot) -> NewMessage {
        NewMessage {
            recipient_kind: r.kind,
            recipient_id: r.id,
            address: r.phone.clone().unwrap(),
            channel: Channel::Sms,
            provider: "p".into(),
            kind: crate::history::MessageType::Message,
            subject: None,
            body: "b".into(),
            encoding: None,
            parts: 1,
            state: MessageState::Queued,
            reason: None,
            error: None,
            snapshot,
            html: None,
            route: Vec::new(),
        }
    }

    #[test]
    fn outcomes_break_down_by_a_recipient_field() {
        let (_dir, store) = crate::store::scratch();
        let ledger = Ledger::new(store.as_ref());
        let run = ledger
            .create_run(NewRun {
                job: "j".into(),
                trigger: Trigger::Manual,
                channels: vec![Channel::Sms],
                provider: "p".into(),
                body: "b".into(),
                subject: None,
            })
            .unwrap();
        let people = [
            recipient(1, "North"),
            recipient(2, "North"),
            recipient(3, ""),
        ];
        let planned: Vec<NewMessage> = people
            .iter()
            .map(|r| queued_sms(r, Default::default()))
            .collect();
        let ids = ledger.plan(run.id, planned).unwrap();
        ledger
            .transition(&[Change::to(ids[0], MessageState::Sending)])
            .unwrap();
        ledger
            .transition(&[Change::to(ids[0], MessageState::Failed)])
            .unwrap();
        let rows = breakdown(
            ledger.messages_of(run.id, None),
            Field::Location,
            |_, id| people.iter().find(|r| r.id == id).cloned(),
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, "North");
        assert_eq!(rows[0].1.get(MessageState::Failed), 1);
        assert_eq!(rows[0].1.get(MessageState::Queued), 1);
        assert_eq!(rows[1].0, NONE);
        assert_eq!(rows[1].1.get(MessageState::Queued), 1);

        let days = per_day(
            std::iter::once(ledger.run(run.id)),
            chrono_tz::UTC,
            Utc::now(),
            30,
        )
        .unwrap();
        assert_eq!(days.len(), 30);
        assert_eq!(days[29].1.total(), 3);
        assert_eq!(days[29].1.get(MessageState::Failed), 1);

        let now = crate::history::now_ms();
        let t = timeline(ledger.messages_of(run.id, None), (now - 60_000, now + 1), 6).unwrap();
        assert_eq!(t.iter().map(|b| b[2]).sum::<u64>(), 1);
    }

    #[test]
    fn a_breakdown_says_where_the_recipient_was_when_the_message_was_planned() {
        let (_dir, store) = crate::store::scratch();
        let ledger = Ledger::new(store.as_ref());
        let run = ledger
            .create_run(NewRun {
                job: "j".into(),
                trigger: crate::history::Trigger::Manual,
                channels: vec![Channel::Sms],
                provider: "p".into(),
                body: "b".into(),
                subject: None,
            })
            .unwrap();
        let then = recipient(1, "Cape Town");
        let planned = queued_sms(&then, crate::history::RecipientSnapshot::of(&then));
        ledger.plan(run.id, vec![planned]).unwrap();
        // The customer has moved since; the history still says Cape Town.
        let now = recipient(1, "Durban");
        let rows = breakdown(ledger.messages_of(run.id, None), Field::Location, |_, _| {
            Some(now.clone())
        })
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "Cape Town");
    }

    #[test]
    fn fields_parse_as_the_console_names_them() {
        assert_eq!("billing-type".parse::<Field>().unwrap(), Field::BillingType);
        assert!("colour".parse::<Field>().is_err());
    }
}
