//! The ledger's writes and point reads: the message state machine, the run counters and
//! the run status, once, over whichever database holds the history
//! ([`crate::history::store`]).
//!
//! Every operation is one transaction of the history's database: a message and its
//! run's counters change together, so the run status derived from the counters always
//! agrees with the messages, whatever moment a crash picks. Messages read to be changed
//! are read inside the transaction that changes them (locked where the engine has row
//! locks), so two writers — the send engine and a delivery report, or two workers —
//! never lose each other's change.

use std::collections::HashMap;

use thiserror::Error;

use super::store::{HistoryError, HistoryStore, StoredRun, Tx, sql};
use super::{
    Counters, Failover, Message, MessageId, MessageState, MessageType, Millis, RecipientSnapshot,
    Run, RunId, Trigger, now_ms,
};
use crate::job::Channel;
use crate::recipients::RecipientKind;
use crate::store::{Store, StoreError};

/// Why a ledger operation failed.
#[derive(Debug, Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("no run with id {0}")]
    NoSuchRun(RunId),
    #[error("no message with id {0}")]
    NoSuchMessage(MessageId),
    #[error("run {0} already exists")]
    RunExists(RunId),
    #[error("run {0} is cancelled: it takes no new messages")]
    Cancelled(RunId),
}

/// A refused state change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("message {id} cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub id: MessageId,
    pub from: MessageState,
    pub to: MessageState,
}

/// A run about to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub job: String,
    pub trigger: Trigger,
    pub channels: Vec<Channel>,
    pub provider: String,
    pub body: String,
    pub subject: Option<String>,
}

/// A message about to be planned: `Queued`, or `Skipped` with a reason.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub recipient_kind: RecipientKind,
    pub recipient_id: u64,
    pub address: String,
    pub channel: Channel,
    pub provider: String,
    pub kind: MessageType,
    pub subject: Option<String>,
    pub body: String,
    pub encoding: Option<String>,
    pub parts: u32,
    pub state: MessageState,
    pub reason: Option<String>,
    /// Error code and text of a message planned as `failed` (a script failed for it).
    pub error: Option<(String, String)>,
    /// The recipient's fields analysts group by, as they are now.
    pub snapshot: RecipientSnapshot,
    /// The HTML alternative of an email.
    pub html: Option<String>,
    /// Providers to fail over to after `provider`, in order.
    pub route: Vec<String>,
}

/// One state change for one message.
#[derive(Debug, Clone)]
pub struct Change {
    pub id: MessageId,
    pub to: MessageState,
    pub at: Millis,
    /// Set when the provider answers with its id.
    pub provider_message_id: Option<String>,
    /// Provider error code and text.
    pub error: Option<(String, String)>,
    pub reason: Option<String>,
    /// This change starts a new send attempt.
    pub attempt: bool,
    /// The message moves on to this provider (failover): the current provider, the
    /// attempts made on it and `error` go to the message's `failovers`.
    pub failover: Option<String>,
    /// The worker making the change (a sender on PostgreSQL): refused unless that worker
    /// holds the message, so a worker whose claims were handed on sends none of them.
    pub worker: Option<std::sync::Arc<str>>,
}

impl Change {
    pub fn to(id: MessageId, to: MessageState) -> Change {
        Change {
            id,
            to,
            at: now_ms(),
            provider_message_id: None,
            error: None,
            reason: None,
            attempt: to == MessageState::Sending,
            failover: None,
            worker: None,
        }
    }
}

/// Deduplication ids are positive `i32`s (BulkSMS's type; 0 means "none").
const DEDUP_SPACE: u64 = (1 << 31) - 1;

/// The counter holding the last deduplication id handed out.
const DEDUP_COUNTER: &str = "dedup";

/// The deduplication id `n` places after `first`, wrapping within 1..=2^31-1.
pub fn dedup_after(first: u32, n: u64) -> u32 {
    ((first.saturating_sub(1) as u64 + n) % DEDUP_SPACE) as u32 + 1
}

/// How many rows a paged read fetches at a time, at most.
const PAGE: usize = 1024;

/// The first page's size: a table of 50 rows reads no more than it shows.
const FIRST_PAGE: usize = 64;

/// Items of a paged read: `fetch(last item of the previous page, limit)` returns the
/// next page. Pages start small (a listing shows its first 50) and grow to `PAGE`.
pub(crate) fn paged<'a, T: Clone + 'a, E: 'a>(
    mut fetch: impl FnMut(Option<&T>, usize) -> Result<Vec<T>, E> + 'a,
) -> impl Iterator<Item = Result<T, E>> + 'a {
    let mut buffer = std::collections::VecDeque::new();
    let mut last: Option<T> = None;
    let mut done = false;
    let mut limit = FIRST_PAGE;
    std::iter::from_fn(move || {
        if buffer.is_empty() && !done {
            match fetch(last.as_ref(), limit) {
                Ok(page) => {
                    done = page.len() < limit;
                    limit = (limit * 4).min(PAGE);
                    last = page.last().cloned();
                    buffer.extend(page);
                }
                Err(e) => {
                    done = true;
                    return Some(Err(e));
                }
            }
        }
        buffer.pop_front().map(Ok)
    })
}

/// The ledger over one history.
#[derive(Clone, Copy)]
pub struct Ledger<'a> {
    h: &'a dyn HistoryStore,
}

impl<'a> Ledger<'a> {
    /// The ledger of `store`'s history.
    pub fn new(store: &'a dyn Store) -> Ledger<'a> {
        Ledger { h: store.history() }
    }

    /// The ledger over a history opened on its own.
    pub fn on(h: &'a dyn HistoryStore) -> Ledger<'a> {
        Ledger { h }
    }

    /// The database underneath, for the queries of [`crate::history::query`].
    pub(crate) fn history(&self) -> &'a dyn HistoryStore {
        self.h
    }

    /// Every write is durable when its operation returns (each is a committed
    /// transaction); kept so callers can say where durability matters.
    pub fn flush(&self) -> Result<(), LedgerError> {
        Ok(())
    }

    /// How many writers (a run's recorders) may write at once to gain from it.
    pub fn writers(&self) -> usize {
        self.h.writers().max(1)
    }

    /// The run with this id.
    pub fn run(&self, id: RunId) -> Result<Run, LedgerError> {
        self.h
            .select_runs(&sql::run(id))?
            .pop()
            .ok_or(LedgerError::NoSuchRun(id))
    }

    /// The message with this id.
    pub fn message(&self, id: MessageId) -> Result<Message, LedgerError> {
        self.h
            .select_messages(&sql::message(id))?
            .pop()
            .ok_or(LedgerError::NoSuchMessage(id))
    }

    /// The message a provider knows by `pid` (delivery reports carry only that).
    pub fn find_by_provider_id(
        &self,
        provider: &str,
        pid: &str,
    ) -> Result<Option<Message>, LedgerError> {
        Ok(self
            .h
            .select_messages(&sql::message_by_provider_id(provider, pid))?
            .pop())
    }

    /// Records a new run, status `new`.
    pub fn create_run(&self, new: NewRun) -> Result<Run, LedgerError> {
        self.create_run_with_id(RunId::new(), new, now_ms())
    }

    /// "Retry failed": a new run of the same job, whose messages are the `failed` and
    /// `expired` messages of `of` planned again (same recipient, address, channel, body,
    /// on the provider each was first planned for), recorded as a retry of `of`. Every
    /// recipient is planned: the new run is ready to send (`resume`). `None` when `of`
    /// has nothing to retry.
    pub fn create_retry(&self, of: RunId) -> Result<Option<Run>, LedgerError> {
        let old = self.run(of)?;
        let mut again = Vec::new();
        for state in [MessageState::Failed, MessageState::Expired] {
            for m in self.messages_of(of, Some(state)) {
                let m = m?;
                again.push(NewMessage {
                    recipient_kind: m.recipient_kind,
                    recipient_id: m.recipient_id,
                    address: m.address,
                    channel: m.channel,
                    provider: m
                        .failovers
                        .first()
                        .map(|f| f.provider.clone())
                        .unwrap_or(m.provider),
                    kind: m.kind,
                    subject: m.subject,
                    body: m.body,
                    encoding: m.encoding,
                    parts: m.parts,
                    state: MessageState::Queued,
                    reason: None,
                    error: None,
                    snapshot: m.snapshot,
                    html: m.html,
                    route: Vec::new(),
                });
            }
        }
        if again.is_empty() {
            return Ok(None);
        }
        let run = Run {
            id: RunId::new(),
            trigger: Trigger::Manual,
            created_at: now_ms(),
            started_at: None,
            finished_at: None,
            counters: Counters::default(),
            planned_all: false,
            cancelled: false,
            removed: false,
            retry_of: Some(of),
            ..old
        };
        let stored = StoredRun {
            run: run.clone(),
            next_seq: 0,
        };
        self.h.write(&mut |tx| {
            if tx.insert_run(&stored)? {
                Ok(())
            } else {
                Err(LedgerError::RunExists(stored.run.id))
            }
        })?;
        for chunk in again.chunks(1024) {
            self.plan(run.id, chunk.to_vec())?;
        }
        self.finish_planning(run.id).map(Some)
    }

    /// Records a new run with a chosen id and creation time.
    pub fn create_run_with_id(
        &self,
        id: RunId,
        new: NewRun,
        created_at: Millis,
    ) -> Result<Run, LedgerError> {
        let run = Run {
            id,
            job: new.job,
            trigger: new.trigger,
            channels: new.channels,
            provider: new.provider,
            body: new.body,
            subject: new.subject,
            created_at,
            started_at: None,
            finished_at: None,
            counters: Counters::default(),
            planned_all: false,
            cancelled: false,
            removed: false,
            retry_of: None,
        };
        let stored = StoredRun {
            run: run.clone(),
            next_seq: 0,
        };
        self.h.write(&mut |tx| {
            if tx.insert_run(&stored)? {
                Ok(())
            } else {
                Err(LedgerError::RunExists(id))
            }
        })?;
        Ok(run)
    }

    /// Plans messages for a run in one transaction: the messages, their deduplication
    /// ids and the run's counters.
    pub fn plan(
        &self,
        run: RunId,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<MessageId>, LedgerError> {
        self.plan_at(run, messages, now_ms())
    }

    /// [`Ledger::plan`], the messages held by `worker` from the start (PostgreSQL: no
    /// other worker claims them).
    pub fn plan_held(
        &self,
        run: RunId,
        messages: Vec<NewMessage>,
        worker: &str,
    ) -> Result<Vec<MessageId>, LedgerError> {
        self.plan_as(run, messages, now_ms(), Some(worker))
    }

    /// [`Ledger::plan`] with the planning time given (imports, tests, benchmarks).
    pub fn plan_at(
        &self,
        run: RunId,
        messages: Vec<NewMessage>,
        now: Millis,
    ) -> Result<Vec<MessageId>, LedgerError> {
        self.plan_as(run, messages, now, None)
    }

    fn plan_as(
        &self,
        run: RunId,
        messages: Vec<NewMessage>,
        now: Millis,
        worker: Option<&str>,
    ) -> Result<Vec<MessageId>, LedgerError> {
        let mut messages = Some(messages);
        let mut ids = Vec::new();
        self.h.write(&mut |tx| {
            let messages = messages.take().unwrap_or_default();
            let mut stored = locked_run(tx, run)?;
            if stored.run.cancelled && !messages.is_empty() {
                return Err(LedgerError::Cancelled(run));
            }
            ids = Vec::with_capacity(messages.len());
            let base = if messages.is_empty() {
                0
            } else {
                take_dedup_ids(tx, messages.len() as u64)?
            };
            let mut rows = Vec::with_capacity(messages.len());
            for (i, m) in messages.into_iter().enumerate() {
                let id = MessageId {
                    run,
                    seq: stored.next_seq,
                };
                stored.next_seq += 1;
                let msg = Message {
                    id,
                    recipient_kind: m.recipient_kind,
                    recipient_id: m.recipient_id,
                    address: m.address,
                    channel: m.channel,
                    provider: m.provider,
                    kind: m.kind,
                    subject: m.subject,
                    body: m.body,
                    encoding: m.encoding,
                    parts: m.parts,
                    state: m.state,
                    reason: m.reason,
                    attempts: 0,
                    provider_message_id: None,
                    error_code: m.error.as_ref().map(|e| e.0.clone()),
                    error_text: m.error.map(|e| e.1),
                    created_at: now,
                    updated_at: now,
                    transitions: vec![(m.state, now)],
                    failovers: Vec::new(),
                    snapshot: m.snapshot,
                    html: m.html,
                    route: m.route,
                    worker: worker.map(str::to_string),
                };
                stored.run.counters.add(msg.state, 1);
                ids.push(id);
                rows.push((msg, dedup_after(base, i as u64 + 1)));
            }
            tx.insert_messages(&rows)?;
            settle(&mut stored.run, now);
            tx.update_run(&stored)?;
            Ok(())
        })?;
        Ok(ids)
    }

    /// The message's deduplication id: unique among the last 2^31 messages this history
    /// planned, so BulkSMS (which remembers ids for about 12 hours) never mistakes one
    /// message for another, and the same for every retry of one message, even after a
    /// restart.
    pub fn dedup_id(&self, id: MessageId) -> Result<u32, LedgerError> {
        self.h.dedup_id(id)?.ok_or(LedgerError::NoSuchMessage(id))
    }

    /// Marks that every recipient of the run has been planned.
    pub fn finish_planning(&self, run: RunId) -> Result<Run, LedgerError> {
        self.update_run(run, |r| r.planned_all = true)
    }

    /// Applies state changes in one transaction. Each illegal change is refused on its
    /// own (its `Err` in the result); the legal ones are written.
    pub fn transition(
        &self,
        changes: &[Change],
    ) -> Result<Vec<Result<(), IllegalTransition>>, LedgerError> {
        let mut results = Vec::new();
        self.h.write(&mut |tx| {
            results = apply_changes(tx, changes)?;
            Ok(())
        })?;
        Ok(results)
    }

    /// Records an error code and text on a message without changing its state (a soft
    /// bounce, a complaint): the message's `error_code`/`error_text` and `updated_at`.
    pub fn annotate(
        &self,
        id: MessageId,
        (code, text): (String, String),
        at: Millis,
    ) -> Result<Message, LedgerError> {
        let mut annotated = None;
        self.h.write(&mut |tx| {
            let mut msg = tx
                .messages(&[id])?
                .pop()
                .ok_or(LedgerError::NoSuchMessage(id))?;
            msg.error_code = Some(code.clone());
            msg.error_text = Some(text.clone());
            msg.updated_at = msg.updated_at.max(at);
            tx.update_messages(&[&msg])?;
            annotated = Some(msg);
            Ok(())
        })?;
        annotated.ok_or(LedgerError::NoSuchMessage(id))
    }

    /// [`Ledger::transition`]: the changes are durable when this returns. Callers batch
    /// changes (one transaction per batch, not per message).
    pub fn record(
        &self,
        changes: &[Change],
    ) -> Result<Vec<Result<(), IllegalTransition>>, LedgerError> {
        self.transition(changes)
    }

    /// Updates a run's flags (cancel, remove) in one transaction.
    fn update_run(&self, run: RunId, f: impl Fn(&mut Run)) -> Result<Run, LedgerError> {
        let mut updated = None;
        self.h.write(&mut |tx| {
            let mut stored = locked_run(tx, run)?;
            f(&mut stored.run);
            settle(&mut stored.run, now_ms());
            tx.update_run(&stored)?;
            updated = Some(stored.run);
            Ok(())
        })?;
        updated.ok_or(LedgerError::NoSuchRun(run))
    }

    /// Cancels a run: every message still `queued` becomes `cancelled`. Returns how many.
    pub fn cancel(&self, run: RunId) -> Result<u64, LedgerError> {
        self.update_run(run, |r| r.cancelled = true)?;
        let mut n = 0;
        loop {
            let ids: Vec<MessageId> = self
                .ids_in_state(run, MessageState::Queued)
                .take(4096)
                .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                break;
            }
            let changes: Vec<Change> = ids
                .iter()
                .map(|id| Change::to(*id, MessageState::Cancelled))
                .collect();
            n += self
                .transition(&changes)?
                .iter()
                .filter(|r| r.is_ok())
                .count() as u64;
        }
        Ok(n)
    }

    /// Marks a run `removed`: kept for audit, hidden from default listings.
    pub fn remove(&self, run: RunId) -> Result<Run, LedgerError> {
        self.update_run(run, |r| r.removed = true)
    }

    /// Deletes a run and every message of it. Messages go in batches (each taken off the
    /// run's counters in the same transaction) and the run last, so a purge cut short
    /// leaves a consistent history and can simply be run again.
    pub fn purge(&self, run: RunId) -> Result<u64, LedgerError> {
        let mut deleted = 0;
        loop {
            let mut finished = false;
            self.h.write(&mut |tx| {
                let mut stored = locked_run(tx, run)?;
                let states = tx.delete_messages(run, 2048)?;
                if states.is_empty() {
                    tx.delete_run(run)?;
                    finished = true;
                    return Ok(());
                }
                for s in &states {
                    stored.run.counters.add(*s, -1);
                }
                deleted += states.len() as u64;
                stored.run.removed = true;
                tx.update_run(&stored)?;
                Ok(())
            })?;
            if finished {
                return Ok(deleted);
            }
        }
    }

    /// The ids of a run's messages in `state`, in plan order, without reading other runs.
    pub fn ids_in_state(
        &self,
        run: RunId,
        state: MessageState,
    ) -> impl Iterator<Item = Result<MessageId, LedgerError>> + 'a {
        self.messages_of(run, Some(state)).map(|m| m.map(|m| m.id))
    }

    /// A run's messages in `state` (or all), in plan order.
    pub fn messages_of(
        &self,
        run: RunId,
        state: Option<MessageState>,
    ) -> Box<dyn Iterator<Item = Result<Message, LedgerError>> + 'a> {
        let h = self.h;
        Box::new(paged(move |last: Option<&Message>, limit| {
            h.select_messages(&sql::messages_of(run, state, last.map(|m| m.id.seq), limit))
                .map_err(LedgerError::from)
        }))
    }
}

/// The run, locked for this transaction.
fn locked_run(tx: &mut dyn Tx, id: RunId) -> Result<StoredRun, LedgerError> {
    tx.run(id)?.ok_or(LedgerError::NoSuchRun(id))
}

/// Reserves `n` consecutive deduplication ids; returns the one before the first. The
/// counter starts at a random place: two histories sending through one BulkSMS account
/// (staging and production, a restored copy) do not begin with the same ids.
fn take_dedup_ids(tx: &mut dyn Tx, n: u64) -> Result<u32, LedgerError> {
    let base = match tx.counter(DEDUP_COUNTER)? {
        Some(v) => v as u32,
        None => fastrand::u32(0..DEDUP_SPACE as u32),
    };
    tx.set_counter(DEDUP_COUNTER, dedup_after(base, n) as i64)?;
    Ok(base)
}

/// The state machine: applies `changes` to the messages they name, refusing illegal
/// ones, and moves each run's counters with them.
fn apply_changes(
    tx: &mut dyn Tx,
    changes: &[Change],
) -> Result<Vec<Result<(), IllegalTransition>>, LedgerError> {
    let mut wanted: Vec<MessageId> = changes.iter().map(|c| c.id).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut touched: HashMap<MessageId, Message> = tx
        .messages(&wanted)?
        .into_iter()
        .map(|m| (m.id, m))
        .collect();
    let mut changed: Vec<MessageId> = Vec::new();
    // Per run: counter deltas, whether sending started, the latest change time.
    let mut runs: HashMap<RunId, ([i64; 10], bool, Millis)> = HashMap::new();
    let mut results = Vec::with_capacity(changes.len());
    for change in changes {
        let msg = touched
            .get_mut(&change.id)
            .ok_or(LedgerError::NoSuchMessage(change.id))?;
        let not_held = change
            .worker
            .as_ref()
            .is_some_and(|w| msg.worker.as_deref() != Some(&**w));
        if not_held || !msg.state.can_become(change.to) {
            results.push(Err(IllegalTransition {
                id: change.id,
                from: msg.state,
                to: change.to,
            }));
            continue;
        }
        let entry = runs
            .entry(change.id.run)
            .or_insert(([0; 10], false, change.at));
        entry.0[msg.state.index()] -= 1;
        entry.0[change.to.index()] += 1;
        entry.1 |= change.to == MessageState::Sending;
        entry.2 = entry.2.max(change.at);
        if let Some(next) = &change.failover {
            let (code, text) = change.error.clone().unwrap_or_default();
            let earlier: u32 = msg.failovers.iter().map(|f| f.attempts).sum();
            msg.failovers.push(Failover {
                provider: std::mem::replace(&mut msg.provider, next.clone()),
                at: change.at,
                attempts: msg.attempts.saturating_sub(earlier),
                error_code: code,
                error_text: text,
            });
        }
        if change.to == MessageState::Queued && change.worker.is_none() {
            // Put back in the queue by someone other than its holder (a sweep, a retry):
            // any worker may claim it.
            msg.worker = None;
        }
        msg.state = change.to;
        msg.updated_at = change.at;
        msg.transitions.push((change.to, change.at));
        if change.attempt {
            msg.attempts += 1;
        }
        if let Some(pid) = &change.provider_message_id {
            msg.provider_message_id = Some(pid.clone());
        }
        if let Some((code, text)) = &change.error
            && change.failover.is_none()
        {
            msg.error_code = Some(code.clone());
            msg.error_text = Some(text.clone());
        }
        if change.reason.is_some() {
            msg.reason = change.reason.clone();
        }
        changed.push(change.id);
        results.push(Ok(()));
    }
    changed.sort_unstable();
    changed.dedup();
    let rows: Vec<&Message> = changed.iter().filter_map(|id| touched.get(id)).collect();
    tx.update_messages(&rows)?;
    let mut run_ids: Vec<_> = runs.keys().copied().collect();
    run_ids.sort_unstable();
    for run_id in run_ids {
        let (delta, started, at) = runs[&run_id];
        let mut stored = locked_run(tx, run_id)?;
        for s in MessageState::ALL {
            stored.run.counters.add(s, delta[s.index()]);
        }
        if started && stored.run.started_at.is_none() {
            stored.run.started_at = Some(at);
        }
        settle(&mut stored.run, at);
        tx.update_run(&stored)?;
    }
    Ok(results)
}

/// Sets `finished_at` once everything is planned and nothing is pending.
fn settle(run: &mut Run, at: Millis) {
    let done = (run.planned_all || run.cancelled) && run.counters.pending() == 0;
    if done && run.finished_at.is_none() {
        run.finished_at = Some(at);
    }
}

/// What [`Ledger::verify`] checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verified {
    pub runs: u64,
    pub messages: u64,
}

impl Ledger<'_> {
    /// Checks that the history agrees with itself: the database's own integrity check,
    /// every run's counters equal to its messages' states, and no message beyond its
    /// run's next sequence number. Returns the first disagreement found.
    pub fn verify(&self) -> Result<Verified, String> {
        let err = |e: HistoryError| e.to_string();
        self.h.check().map_err(err)?;
        let mut v = Verified::default();
        let mut runs = Vec::new();
        for r in paged(|last: Option<&StoredRunKey>, limit| {
            self.h
                .select_runs(&sql::all_runs_after(last.map(|k| k.0), limit))
                .map(|runs| runs.into_iter().map(StoredRunKey::of).collect())
        }) {
            runs.push(r.map_err(err)?);
        }
        for StoredRunKey(id, counters) in runs {
            v.runs += 1;
            let mut counted = Counters::default();
            for (state, n) in self.h.select_ints(&sql::state_counts(id)).map_err(err)? {
                let s: MessageState = state.parse()?;
                counted.add(s, n);
                v.messages += n as u64;
            }
            if counted != counters {
                return Err(format!(
                    "run {id} counters {:?} disagree with its messages {:?}",
                    counters.0, counted.0
                ));
            }
            let beyond = self.h.select_ints(&sql::beyond_next_seq(id)).map_err(err)?;
            if beyond.iter().any(|(_, n)| *n > 0) {
                return Err(format!("run {id} has messages beyond its next sequence"));
            }
        }
        Ok(v)
    }
}

/// A run's id and counters, as [`Ledger::verify`] pages through them.
#[derive(Clone)]
struct StoredRunKey(RunId, Counters);

impl StoredRunKey {
    fn of(run: Run) -> StoredRunKey {
        StoredRunKey(run.id, run.counters)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sqlite_history_passes_the_conformance_suite() {
        let dirs = std::cell::RefCell::new(Vec::new());
        crate::history::store::conformance::run(&|| {
            let dir = tempfile::tempdir().unwrap();
            let h = crate::history::store::sqlite::SqliteHistory::open(
                &dir.path().join("history.sqlite3"),
            )
            .unwrap();
            dirs.borrow_mut().push(dir);
            Box::new(h)
        });
    }
}
