//! The history conformance suite: every [`HistoryStore`] backend must pass every case.
//!
//! Public (hidden from the docs) so that `tests/storage.rs`, which can start a real
//! PostgreSQL server, runs it against every backend; the SQLite backend also runs it in
//! this crate's unit tests. [`run`] takes a constructor of fresh, empty histories and runs
//! each case, through the [`Ledger`], on a history of its own.

#![doc(hidden)]

use super::HistoryStore;
use crate::history::ledger::{
    Change, IllegalTransition, Ledger, LedgerError, NewMessage, NewRun, dedup_after,
};
use crate::history::{MessageId, MessageState, MessageType, RecipientSnapshot, RunId, Trigger};
use crate::job::Channel;
use crate::recipients::RecipientKind;

/// One case of the suite.
type Case = fn(&dyn HistoryStore);

/// Every case, by name, each on a fresh history from `make`.
pub fn run(make: &dyn Fn() -> Box<dyn HistoryStore>) {
    let cases: &[(&str, Case)] = &[
        (
            "a_run_goes_from_new_to_sent_with_error_through_its_messages",
            a_run_goes_from_new_to_sent_with_error_through_its_messages,
        ),
        (
            "illegal_transitions_are_refused_alone",
            illegal_transitions_are_refused_alone,
        ),
        (
            "a_runs_messages_by_state_without_other_runs",
            a_runs_messages_by_state_without_other_runs,
        ),
        (
            "dedup_ids_are_unique_across_runs_and_stable_per_message",
            dedup_ids_are_unique_across_runs_and_stable_per_message,
        ),
        ("cancel_remove_and_purge", cancel_remove_and_purge),
        (
            "failover_and_snapshot_survive_the_round_trip",
            failover_and_snapshot_survive_the_round_trip,
        ),
        (
            "a_failed_transaction_writes_nothing",
            a_failed_transaction_writes_nothing,
        ),
        ("a_run_id_is_taken_once", a_run_id_is_taken_once),
        (
            "pages_continue_where_the_last_ended",
            pages_continue_where_the_last_ended,
        ),
        (
            "queries_filter_and_page_newest_first",
            queries_filter_and_page_newest_first,
        ),
        (
            "a_retry_plans_the_failed_and_expired_again",
            a_retry_plans_the_failed_and_expired_again,
        ),
        (
            "the_inbox_keeps_one_copy_and_the_first_read",
            the_inbox_keeps_one_copy_and_the_first_read,
        ),
    ];
    for (name, case) in cases {
        eprintln!("history conformance: {name}");
        case(&*make());
    }
}

pub(crate) fn new_run(job: &str) -> NewRun {
    NewRun {
        job: job.into(),
        trigger: Trigger::Manual,
        channels: vec![Channel::Sms],
        provider: "bulksms".into(),
        body: "Hi {{ customer.name }}".into(),
        subject: None,
    }
}

pub(crate) fn msg(i: u64) -> NewMessage {
    NewMessage {
        recipient_kind: RecipientKind::Customer,
        recipient_id: i,
        address: format!("+2782000{i:04}"),
        channel: Channel::Sms,
        provider: "bulksms".into(),
        kind: MessageType::Message,
        subject: None,
        body: format!("Hi {i}"),
        encoding: Some("gsm7".into()),
        parts: 1,
        state: MessageState::Queued,
        reason: None,
        error: None,
        snapshot: RecipientSnapshot {
            location: Some("Cape Town".into()),
            ..Default::default()
        },
        html: None,
        route: Vec::new(),
    }
}

pub(crate) fn a_run_goes_from_new_to_sent_with_error_through_its_messages(h: &dyn HistoryStore) {
    let ledger = Ledger::on(h);
    let run = ledger.create_run(new_run("reminder")).unwrap();
    assert_eq!(run.status(), crate::history::RunStatus::New);
    let mut skipped = msg(9);
    skipped.state = MessageState::Skipped;
    skipped.reason = Some("invalid_phone".into());
    let ids = ledger.plan(run.id, vec![msg(1), msg(2), skipped]).unwrap();
    assert_eq!(
        ledger.run(run.id).unwrap().status(),
        crate::history::RunStatus::Processing
    );
    ledger.finish_planning(run.id).unwrap();

    let sending: Vec<Change> = ids[..2]
        .iter()
        .map(|id| Change::to(*id, MessageState::Sending))
        .collect();
    ledger.transition(&sending).unwrap();
    let mut sent = Change::to(ids[0], MessageState::Sent);
    sent.provider_message_id = Some("bulk-1".into());
    let mut failed = Change::to(ids[1], MessageState::Failed);
    failed.error = Some(("403".into(), "Insufficient Credits".into()));
    let results = ledger.transition(&[sent, failed]).unwrap();
    assert!(results.iter().all(Result::is_ok));

    let r = ledger.run(run.id).unwrap();
    assert_eq!(r.status(), crate::history::RunStatus::SentWithError);
    assert!(r.started_at.is_some() && r.finished_at.is_some());
    assert_eq!(r.counters.get(MessageState::Sent), 1);
    assert_eq!(r.counters.get(MessageState::Skipped), 1);
    let m = ledger
        .find_by_provider_id("bulksms", "bulk-1")
        .unwrap()
        .unwrap();
    assert_eq!(m.id, ids[0]);
    assert_eq!(m.attempts, 1);
    assert_eq!(
        m.transitions.iter().map(|t| t.0).collect::<Vec<_>>(),
        vec![
            MessageState::Queued,
            MessageState::Sending,
            MessageState::Sent
        ]
    );
    assert_eq!(
        ledger.message(ids[1]).unwrap().error_text.as_deref(),
        Some("Insufficient Credits")
    );
    ledger.verify().unwrap();
}

pub(crate) fn illegal_transitions_are_refused_alone(h: &dyn HistoryStore) {
    let ledger = Ledger::on(h);
    let run = ledger.create_run(new_run("j")).unwrap();
    let ids = ledger.plan(run.id, vec![msg(1), msg(2)]).unwrap();
    let results = ledger
        .transition(&[
            Change::to(ids[0], MessageState::Delivered),
            Change::to(ids[1], MessageState::Sending),
        ])
        .unwrap();
    assert_eq!(
        results[0],
        Err(IllegalTransition {
            id: ids[0],
            from: MessageState::Queued,
            to: MessageState::Delivered
        })
    );
    assert!(results[1].is_ok());
    assert_eq!(ledger.message(ids[0]).unwrap().state, MessageState::Queued);
    // Delivered never goes back to sending.
    ledger
        .transition(&[Change::to(ids[1], MessageState::Sent)])
        .unwrap();
    ledger
        .transition(&[Change::to(ids[1], MessageState::Delivered)])
        .unwrap();
    let back = ledger
        .transition(&[Change::to(ids[1], MessageState::Sending)])
        .unwrap();
    assert!(back[0].is_err());
    ledger.verify().unwrap();
}

pub(crate) fn a_runs_messages_by_state_without_other_runs(h: &dyn HistoryStore) {
    let ledger = Ledger::on(h);
    let a = ledger.create_run(new_run("a")).unwrap();
    let b = ledger.create_run(new_run("b")).unwrap();
    let ids_a = ledger.plan(a.id, (0..5).map(msg).collect()).unwrap();
    ledger.plan(b.id, (0..7).map(msg).collect()).unwrap();
    ledger
        .transition(&[Change::to(ids_a[3], MessageState::Sending)])
        .unwrap();
    let queued: Vec<MessageId> = ledger
        .ids_in_state(a.id, MessageState::Queued)
        .map(Result::unwrap)
        .collect();
    assert_eq!(queued, vec![ids_a[0], ids_a[1], ids_a[2], ids_a[4]]);
    let sending: Vec<MessageId> = ledger
        .ids_in_state(a.id, MessageState::Sending)
        .map(Result::unwrap)
        .collect();
    assert_eq!(sending, vec![ids_a[3]]);
    assert_eq!(ledger.messages_of(b.id, None).count(), 7);
}

pub(crate) fn dedup_ids_are_unique_across_runs_and_stable_per_message(h: &dyn HistoryStore) {
    let ledger = Ledger::on(h);
    let a = ledger.create_run(new_run("a")).unwrap();
    let b = ledger.create_run(new_run("b")).unwrap();
    let mut all = Vec::new();
    for run in [a.id, b.id, a.id] {
        let ids = ledger.plan(run, (0..5).map(msg).collect()).unwrap();
        all.extend(ids);
    }
    let dedups: Vec<u32> = all.iter().map(|id| ledger.dedup_id(*id).unwrap()).collect();
    let unique: std::collections::HashSet<_> = dedups.iter().collect();
    assert_eq!(unique.len(), 15, "{dedups:?}");
    // Asking again gives the same id (a retry after a restart resubmits it).
    assert_eq!(ledger.dedup_id(all[12]).unwrap(), dedups[12]);
    assert!(dedups.iter().all(|d| *d >= 1 && *d <= i32::MAX as u32));
    assert_eq!(dedup_after(i32::MAX as u32, 1), 1);
    // Purging another run leaves these ids as they were.
    ledger.finish_planning(b.id).unwrap();
    ledger.purge(b.id).unwrap();
    assert_eq!(ledger.dedup_id(all[0]).unwrap(), dedups[0]);
    assert!(matches!(
        ledger.dedup_id(all[5]),
        Err(LedgerError::NoSuchMessage(_))
    ));
}

pub(crate) fn cancel_remove_and_purge(h: &dyn HistoryStore) {
    let ledger = Ledger::on(h);
    let run = ledger.create_run(new_run("maint")).unwrap();
    let ids = ledger.plan(run.id, (0..10).map(msg).collect()).unwrap();
    ledger
        .transition(&[Change::to(ids[0], MessageState::Sending)])
        .unwrap();
    ledger
        .transition(&[Change::to(ids[0], MessageState::Sent)])
        .unwrap();
    assert_eq!(ledger.cancel(run.id).unwrap(), 9);
    let r = ledger.run(run.id).unwrap();
    assert_eq!(r.status(), crate::history::RunStatus::Cancelled);
    assert_eq!(r.counters.get(MessageState::Cancelled), 9);
    // A cancelled run takes no new messages: a planner still going finds out at its
    // next batch, and nothing it planned after the cancel can be sent.
    assert!(matches!(
        ledger.plan(run.id, (10..20).map(msg).collect()),
        Err(LedgerError::Cancelled(id)) if id == run.id
    ));
    let r = ledger.run(run.id).unwrap();
    assert_eq!(r.counters.total(), 10);
    ledger.verify().unwrap();
    assert_eq!(
        ledger.remove(run.id).unwrap().status(),
        crate::history::RunStatus::Removed
    );
    let other = ledger.create_run(new_run("keep")).unwrap();
    ledger.plan(other.id, vec![msg(1)]).unwrap();
    assert_eq!(ledger.purge(run.id).unwrap(), 10);
    assert!(matches!(ledger.run(run.id), Err(LedgerError::NoSuchRun(_))));
    let v = ledger.verify().unwrap();
    assert_eq!((v.runs, v.messages), (1, 1));
    // Nothing of the purged run is left.
    let left = ledger
        .history()
        .select_ints(&crate::history::store::Select {
            sql: "SELECT 'left', COUNT(*) FROM messages WHERE run_id = ?".into(),
            params: vec![crate::history::store::Param::Text(run.id.to_string())],
        })
        .unwrap();
    assert_eq!(left, vec![("left".to_string(), 0)]);
}

pub(crate) fn failover_and_snapshot_survive_the_round_trip(h: &dyn HistoryStore) {
    let ledger = Ledger::on(h);
    let run = ledger.create_run(new_run("j")).unwrap();
    let id = ledger.plan(run.id, vec![msg(1)]).unwrap()[0];
    let planned = ledger.message(id).unwrap();
    assert!(planned.failovers.is_empty());
    assert_eq!(planned.snapshot.location.as_deref(), Some("Cape Town"));
    ledger
        .record(&[Change::to(id, MessageState::Sending)])
        .unwrap();
    let mut change = Change::to(id, MessageState::Queued);
    change.error = Some(("bulksms:400".into(), "no route".into()));
    change.failover = Some("clickatell".into());
    ledger.record(&[change]).unwrap();
    let m = ledger.message(id).unwrap();
    assert_eq!(m.provider, "clickatell");
    assert_eq!(m.failovers.len(), 1);
    assert_eq!(m.failovers[0].provider, "bulksms");
    assert_eq!(m.failovers[0].attempts, 1);
    assert_eq!(m.failovers[0].error_text, "no route");
    assert_eq!(m.error_code, None);
    assert_eq!(m.snapshot, planned.snapshot);
    assert_eq!(m.transitions.len(), 3);
}

pub(crate) fn a_failed_transaction_writes_nothing(h: &dyn HistoryStore) {
    let ledger = Ledger::on(h);
    let run = ledger.create_run(new_run("j")).unwrap();
    let ids = ledger.plan(run.id, vec![msg(1)]).unwrap();
    // One known and one unknown message: the whole batch is refused.
    let ghost = MessageId {
        run: run.id,
        seq: 99,
    };
    let err = ledger
        .transition(&[
            Change::to(ids[0], MessageState::Sending),
            Change::to(ghost, MessageState::Sending),
        ])
        .unwrap_err();
    assert!(matches!(err, LedgerError::NoSuchMessage(_)), "{err}");
    assert_eq!(ledger.message(ids[0]).unwrap().state, MessageState::Queued);
    assert_eq!(
        ledger
            .run(run.id)
            .unwrap()
            .counters
            .get(MessageState::Queued),
        1
    );
    ledger.verify().unwrap();
}

pub(crate) fn a_run_id_is_taken_once(h: &dyn HistoryStore) {
    let ledger = Ledger::on(h);
    let id = RunId::new();
    ledger.create_run_with_id(id, new_run("j"), 5).unwrap();
    let again = ledger.create_run_with_id(id, new_run("j"), 6);
    assert!(matches!(again, Err(LedgerError::RunExists(_))));
    assert_eq!(ledger.run(id).unwrap().created_at, 5);
}

pub(crate) fn pages_continue_where_the_last_ended(h: &dyn HistoryStore) {
    let ledger = Ledger::on(h);
    let run = ledger.create_run(new_run("big")).unwrap();
    // More than two of the largest pages a read fetches.
    let n = 2 * 1024 + 7;
    ledger
        .plan(run.id, (0..n as u64).map(msg).collect())
        .unwrap();
    let seqs: Vec<u32> = ledger
        .messages_of(run.id, None)
        .map(|m| m.unwrap().id.seq)
        .collect();
    assert_eq!(seqs, (0..n as u32).collect::<Vec<_>>());
}

pub(crate) fn queries_filter_and_page_newest_first(h: &dyn HistoryStore) {
    use crate::history::query::{self, MessageFilter, RunFilter};
    let ledger = Ledger::on(h);
    let day = 86_400_000;
    let mut runs = Vec::new();
    for (i, job) in ["a", "b", "a"].iter().enumerate() {
        let run = ledger
            .create_run_with_id(RunId::new(), new_run(job), 1_000 * day + i as i64 * day)
            .unwrap();
        let mut msgs: Vec<NewMessage> = (0..30).map(msg).collect();
        msgs[3].address = "+27829999999".into();
        ledger
            .plan_at(run.id, msgs, 1_000 * day + i as i64 * day)
            .unwrap();
        runs.push(run.id);
    }
    // Runs newest first; by job; by time range.
    let all: Vec<RunId> = query::runs(&ledger, &RunFilter::default())
        .map(|r| r.unwrap().id)
        .collect();
    assert_eq!(all, vec![runs[2], runs[1], runs[0]]);
    let a = RunFilter {
        job: Some("a".into()),
        ..Default::default()
    };
    let a: Vec<RunId> = query::runs(&ledger, &a).map(|r| r.unwrap().id).collect();
    assert_eq!(a, vec![runs[2], runs[0]]);
    let middle = RunFilter {
        range: Some((1_001 * day, 1_002 * day)),
        ..Default::default()
    };
    assert_eq!(query::runs(&ledger, &middle).count(), 1);
    // Messages newest first across runs, continuing across pages (90 > the first page).
    let every: Vec<MessageId> = query::messages(&ledger, &MessageFilter::default())
        .map(|m| m.unwrap().id)
        .collect();
    assert_eq!(every.len(), 90);
    assert_eq!(
        every[0],
        MessageId {
            run: runs[2],
            seq: 29
        }
    );
    assert_eq!(
        every[89],
        MessageId {
            run: runs[0],
            seq: 0
        }
    );
    // An export (one stream where the backend streams) is the same messages, in the same
    // order, filtered the same way.
    let exported: Vec<MessageId> = query::export(&ledger, &MessageFilter::default())
        .map(|m| m.unwrap().id)
        .collect();
    assert_eq!(exported, every);
    let of_a_day = MessageFilter {
        range: Some((1_001 * day, 1_002 * day)),
        ..Default::default()
    };
    let exported: Vec<MessageId> = query::export(&ledger, &of_a_day)
        .map(|m| m.unwrap().id)
        .collect();
    assert_eq!(exported, every[30..60]);
    // An export stopped early leaves the history as usable as before, whatever connection
    // serves the next operations.
    for _ in 0..12 {
        assert_eq!(
            query::export(&ledger, &MessageFilter::default())
                .take(3)
                .count(),
            3
        );
    }
    for _ in 0..12 {
        ledger.create_run(new_run("after-export")).unwrap();
    }
    // By address, by recipient, by state within a run.
    let by_address = MessageFilter {
        address: Some("+27829999999".into()),
        ..Default::default()
    };
    assert_eq!(query::messages(&ledger, &by_address).count(), 3);
    let by_recipient = MessageFilter {
        recipient: Some((Some(RecipientKind::Customer), 7)),
        ..Default::default()
    };
    assert_eq!(query::messages(&ledger, &by_recipient).count(), 3);
    ledger
        .transition(&[Change::to(
            MessageId {
                run: runs[1],
                seq: 5,
            },
            MessageState::Sending,
        )])
        .unwrap();
    let sending = MessageFilter {
        run: Some(runs[1]),
        state: Some(MessageState::Sending),
        ..Default::default()
    };
    let sending: Vec<MessageId> = query::messages(&ledger, &sending)
        .map(|m| m.unwrap().id)
        .collect();
    assert_eq!(
        sending,
        vec![MessageId {
            run: runs[1],
            seq: 5
        }]
    );
    // A removed run's messages are hidden unless asked for or named.
    ledger.remove(runs[0]).unwrap();
    assert_eq!(
        query::messages(&ledger, &MessageFilter::default()).count(),
        60
    );
    assert_eq!(
        query::export(&ledger, &MessageFilter::default()).count(),
        60
    );
    let named = MessageFilter {
        run: Some(runs[0]),
        ..Default::default()
    };
    assert_eq!(query::messages(&ledger, &named).count(), 30);
    let with_removed = MessageFilter {
        include_removed: true,
        ..Default::default()
    };
    assert_eq!(query::messages(&ledger, &with_removed).count(), 90);
    // The two left of the three, and the twelve made after the stopped exports.
    assert_eq!(query::runs(&ledger, &RunFilter::default()).count(), 2 + 12);
    ledger.verify().unwrap();
}

pub(crate) fn the_inbox_keeps_one_copy_and_the_first_read(h: &dyn HistoryStore) {
    use crate::provider::portal::{Inbox, InboxItem};
    let inbox = Inbox::new(h);
    let item = |id: &str| InboxItem {
        id: id.into(),
        title: Some("Maintenance".into()),
        body: "Tonight 01:00-03:00".into(),
        created_at: 10,
        read_at: None,
    };
    inbox.deliver(7, &item("01B-000001")).unwrap();
    inbox.deliver(7, &item("01A-000000")).unwrap();
    inbox.deliver(7, &item("01A-000000")).unwrap();
    inbox.deliver(8, &item("01C-000000")).unwrap();
    let list = inbox.list(7).unwrap();
    assert_eq!(
        list.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec!["01A-000000", "01B-000001"]
    );
    assert!(inbox.mark_read(7, "01A-000000", 50).unwrap());
    assert!(inbox.mark_read(7, "01A-000000", 60).unwrap());
    assert!(!inbox.mark_read(7, "01C-000000", 60).unwrap());
    assert_eq!(inbox.list(7).unwrap()[0].read_at, Some(50));
    assert_eq!(inbox.list(8).unwrap().len(), 1);
}

pub(crate) fn a_retry_plans_the_failed_and_expired_again(h: &dyn HistoryStore) {
    let ledger = Ledger::on(h);
    let run = ledger.create_run(new_run("reminder")).unwrap();
    let ids = ledger.plan(run.id, (0..5).map(msg).collect()).unwrap();
    ledger.finish_planning(run.id).unwrap();
    let to = |id, s| Change::to(id, s);
    ledger
        .transition(&[
            to(ids[0], MessageState::Sending),
            to(ids[1], MessageState::Sending),
            to(ids[2], MessageState::Expired),
            to(ids[3], MessageState::Cancelled),
        ])
        .unwrap();
    ledger
        .transition(&[
            to(ids[0], MessageState::Sent),
            to(ids[1], MessageState::Failed),
        ])
        .unwrap();
    let retry = ledger
        .create_retry(run.id)
        .unwrap()
        .expect("something to retry");
    assert_eq!(retry.retry_of, Some(run.id));
    assert_eq!(retry.job, "reminder");
    assert!(retry.planned_all);
    assert_eq!(retry.counters.get(MessageState::Queued), 2);
    assert_eq!(retry.counters.total(), 2);
    let again: Vec<u64> = ledger
        .messages_of(retry.id, None)
        .map(|m| m.unwrap().recipient_id)
        .collect();
    assert_eq!(again, vec![1, 2]);
    // Read back as stored, the retry still says what it retries.
    assert_eq!(ledger.run(retry.id).unwrap().retry_of, Some(run.id));
    // The retried run is untouched; a run with nothing failed has nothing to retry.
    assert_eq!(
        ledger
            .run(run.id)
            .unwrap()
            .counters
            .get(MessageState::Failed),
        1
    );
    assert!(ledger.create_retry(retry.id).unwrap().is_none());
    ledger.verify().unwrap();
}
