//! The ledger's writes and point reads, over the store's ordered key space.
//!
//! Key layout (one key space, so every write below is a single atomic batch):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `R` | run | [`Run`] |
//! | `M` | run, seq | [`Message`] |
//! | `T` | created, run | — runs by time |
//! | `J` | job, 0, created, run | — runs by job |
//! | `S` | run, state, seq | — a run's messages by state |
//! | `t` | created, run, seq | — messages by time |
//! | `c` | recipient kind, id, run, seq | — messages by recipient |
//! | `a` | address, 0, run, seq | — messages by address |
//! | `p` | provider, 0, provider message id | run, seq |
//!
//! Ids and times are big-endian (times with the sign bit flipped) so byte order is
//! numeric order. A message and every index entry that names it change in the same batch,
//! as do the run's counters, so indexes, records and run status always agree, whatever
//! moment a crash picks. Writers are serialized by a mutex: one `Ledger` per store.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use super::{
    Counters, Failover, Message, MessageId, MessageState, MessageType, Millis, Run, RunId, Trigger,
    now_ms,
};
use crate::job::Channel;
use crate::recipients::RecipientKind;
use crate::store::{Kv, KvBatch, Store, StoreError};

/// Why a ledger operation failed.
#[derive(Debug, Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no run with id {0}")]
    NoSuchRun(RunId),
    #[error("no message with id {0}")]
    NoSuchMessage(MessageId),
    #[error("run {0} already exists")]
    RunExists(RunId),
    #[error("record {key} cannot be read: {detail}")]
    Decode { key: String, detail: String },
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
        }
    }
}

const VERSION: u8 = 1;
/// Messages are written as version 2 (with `failovers`); version 1 records, written
/// before failover existed, still read (as having no failovers).
const MESSAGE_VERSION: u8 = 2;

/// A message record as version 1 wrote it (postcard is positional: the fields, in order).
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct MessageV1 {
    id: MessageId,
    recipient_kind: RecipientKind,
    recipient_id: u64,
    address: String,
    channel: Channel,
    provider: String,
    kind: MessageType,
    subject: Option<String>,
    body: String,
    encoding: Option<String>,
    parts: u32,
    state: MessageState,
    reason: Option<String>,
    attempts: u32,
    provider_message_id: Option<String>,
    error_code: Option<String>,
    error_text: Option<String>,
    created_at: Millis,
    updated_at: Millis,
    transitions: Vec<(MessageState, Millis)>,
}

impl From<MessageV1> for Message {
    fn from(m: MessageV1) -> Message {
        Message {
            id: m.id,
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
            attempts: m.attempts,
            provider_message_id: m.provider_message_id,
            error_code: m.error_code,
            error_text: m.error_text,
            created_at: m.created_at,
            updated_at: m.updated_at,
            transitions: m.transitions,
            failovers: Vec::new(),
        }
    }
}

fn encode_message(m: &Message) -> Vec<u8> {
    let mut out = vec![MESSAGE_VERSION];
    postcard::to_io(m, &mut out).expect("postcard into Vec");
    out
}

fn decode_message(key: &[u8], bytes: &[u8]) -> Result<Message, LedgerError> {
    match bytes.split_first() {
        Some((&MESSAGE_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| LedgerError::Decode {
                key: String::from_utf8_lossy(key).into_owned(),
                detail: e.to_string(),
            })
        }
        _ => decode::<MessageV1>(key, bytes).map(Message::from),
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Serializing plain data into a Vec cannot fail.
    postcard::to_io(v, &mut out).expect("postcard into Vec");
    out
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, LedgerError> {
    let fail = |detail: String| LedgerError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        detail,
    };
    match bytes.split_first() {
        Some((&VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| fail(e.to_string())),
        Some((v, _)) => Err(fail(format!("unknown record version {v}"))),
        None => Err(fail("empty record".into())),
    }
}

/// Order-preserving bytes of a time.
pub(crate) fn time_bytes(t: Millis) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn state_byte(s: MessageState) -> u8 {
    s.index() as u8
}

fn kind_byte(k: RecipientKind) -> u8 {
    match k {
        RecipientKind::Customer => b'c',
        RecipientKind::Lead => b'l',
    }
}

/// Deduplication ids are positive `i32`s (BulkSMS's type; 0 means "none").
const DEDUP_SPACE: u64 = (1 << 31) - 1;

/// The deduplication id `n` places after `first`, wrapping within 1..=2^31-1.
pub fn dedup_after(first: u32, n: u64) -> u32 {
    ((first.saturating_sub(1) as u64 + n) % DEDUP_SPACE) as u32 + 1
}

pub(crate) mod keys {
    use super::*;

    fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut k = vec![prefix];
        for p in parts {
            k.extend_from_slice(p);
        }
        k
    }

    pub fn run(id: RunId) -> Vec<u8> {
        key(b'R', &[&id.to_bytes()])
    }
    pub fn message(id: MessageId) -> Vec<u8> {
        key(b'M', &[&id.run.to_bytes(), &id.seq.to_be_bytes()])
    }
    /// The store-wide counter of deduplication ids.
    pub const DEDUP_COUNTER: &[u8] = b"d";
    /// The first deduplication id of the block a plan batch starting at `seq` reserved.
    pub fn dedup(run: RunId, seq: u32) -> Vec<u8> {
        key(b'D', &[&run.to_bytes(), &seq.to_be_bytes()])
    }
    pub fn dedups_of(run: RunId) -> Vec<u8> {
        key(b'D', &[&run.to_bytes()])
    }
    pub fn messages_of(run: RunId) -> Vec<u8> {
        key(b'M', &[&run.to_bytes()])
    }
    pub fn run_time(created: Millis, id: RunId) -> Vec<u8> {
        key(b'T', &[&time_bytes(created), &id.to_bytes()])
    }
    pub fn run_job(job: &str, created: Millis, id: RunId) -> Vec<u8> {
        key(
            b'J',
            &[job.as_bytes(), &[0], &time_bytes(created), &id.to_bytes()],
        )
    }
    pub fn job_prefix(job: &str) -> Vec<u8> {
        key(b'J', &[job.as_bytes(), &[0]])
    }
    pub fn by_state(run: RunId, state: MessageState, seq: u32) -> Vec<u8> {
        key(
            b'S',
            &[&run.to_bytes(), &[state_byte(state)], &seq.to_be_bytes()],
        )
    }
    pub fn state_prefix(run: RunId, state: MessageState) -> Vec<u8> {
        key(b'S', &[&run.to_bytes(), &[state_byte(state)]])
    }
    pub fn message_time(created: Millis, id: MessageId) -> Vec<u8> {
        key(
            b't',
            &[
                &time_bytes(created),
                &id.run.to_bytes(),
                &id.seq.to_be_bytes(),
            ],
        )
    }
    pub fn recipient(kind: RecipientKind, rid: u64, id: MessageId) -> Vec<u8> {
        key(
            b'c',
            &[
                &[kind_byte(kind)],
                &rid.to_be_bytes(),
                &id.run.to_bytes(),
                &id.seq.to_be_bytes(),
            ],
        )
    }
    pub fn recipient_prefix(kind: RecipientKind, rid: u64) -> Vec<u8> {
        key(b'c', &[&[kind_byte(kind)], &rid.to_be_bytes()])
    }
    pub fn address(address: &str, id: MessageId) -> Vec<u8> {
        key(
            b'a',
            &[
                address.as_bytes(),
                &[0],
                &id.run.to_bytes(),
                &id.seq.to_be_bytes(),
            ],
        )
    }
    pub fn address_prefix(address: &str) -> Vec<u8> {
        key(b'a', &[address.as_bytes(), &[0]])
    }
    pub fn provider_id(provider: &str, pid: &str) -> Vec<u8> {
        key(b'p', &[provider.as_bytes(), &[0], pid.as_bytes()])
    }
    pub fn message_ref(id: MessageId) -> Vec<u8> {
        let mut v = id.run.to_bytes().to_vec();
        v.extend_from_slice(&id.seq.to_be_bytes());
        v
    }
    /// The message id at the end of an index key.
    pub fn tail_id(key: &[u8]) -> Option<MessageId> {
        let n = key.len();
        if n < 20 {
            return None;
        }
        let run = RunId::from_bytes(&key[n - 20..n - 4])?;
        let seq = u32::from_be_bytes(key[n - 4..].try_into().ok()?);
        Some(MessageId { run, seq })
    }
    /// The message id of a state index key (`S`, run, state, seq).
    pub fn state_id(key: &[u8]) -> Option<(MessageId, u8)> {
        if key.len() != 22 {
            return None;
        }
        let run = RunId::from_bytes(&key[1..17])?;
        let seq = u32::from_be_bytes(key[18..22].try_into().ok()?);
        Some((MessageId { run, seq }, key[17]))
    }
    /// The run id at the end of a run index key.
    pub fn tail_run(key: &[u8]) -> Option<RunId> {
        let n = key.len();
        (n >= 16)
            .then(|| RunId::from_bytes(&key[n - 16..]))
            .flatten()
    }
    /// The key just after every key that starts with `prefix`.
    pub fn end_of(prefix: &[u8]) -> Vec<u8> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return end;
            }
        }
        vec![0xff; prefix.len() + 1]
    }
}

/// The run record and next sequence number, as stored.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct StoredRun {
    run: Run,
    next_seq: u32,
}

/// Serialises the ledger's read-modify-write steps (run counters) across every `Ledger`
/// of the process: the send engine, the HTTP server's webhooks and API handlers each
/// make their own, cheaply, and must not interleave. (One process holds a store.)
static WRITE: Mutex<()> = Mutex::new(());

/// The ledger over one store.
pub struct Ledger<'a> {
    kv: &'a dyn Kv,
    store: &'a dyn Store,
}

impl<'a> Ledger<'a> {
    pub fn new(store: &'a dyn Store) -> Ledger<'a> {
        Ledger {
            kv: store.history(),
            store,
        }
    }

    pub(crate) fn kv(&self) -> &dyn Kv {
        self.kv
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock left no partial write (batches are atomic).
        WRITE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), LedgerError> {
        Ok(self.store.flush()?)
    }

    fn stored_run(&self, id: RunId) -> Result<StoredRun, LedgerError> {
        let key = keys::run(id);
        match self.kv.get(&key)? {
            Some(bytes) => decode(&key, &bytes),
            None => Err(LedgerError::NoSuchRun(id)),
        }
    }

    /// The run with this id.
    pub fn run(&self, id: RunId) -> Result<Run, LedgerError> {
        Ok(self.stored_run(id)?.run)
    }

    /// The message with this id.
    pub fn message(&self, id: MessageId) -> Result<Message, LedgerError> {
        let key = keys::message(id);
        match self.kv.get(&key)? {
            Some(bytes) => decode_message(&key, &bytes),
            None => Err(LedgerError::NoSuchMessage(id)),
        }
    }

    /// The message a provider knows by `pid` (delivery reports carry only that).
    pub fn find_by_provider_id(
        &self,
        provider: &str,
        pid: &str,
    ) -> Result<Option<Message>, LedgerError> {
        match self.kv.get(&keys::provider_id(provider, pid))? {
            Some(v) => match keys::tail_id(&v) {
                Some(id) => self.message(id).map(Some),
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Records a new run, status `new`.
    pub fn create_run(&self, new: NewRun) -> Result<Run, LedgerError> {
        self.create_run_with_id(RunId::new(), new, now_ms())
    }

    /// Records a new run with a chosen id and creation time.
    pub fn create_run_with_id(
        &self,
        id: RunId,
        new: NewRun,
        created_at: Millis,
    ) -> Result<Run, LedgerError> {
        let _guard = self.lock();
        if self.kv.get(&keys::run(id))?.is_some() {
            return Err(LedgerError::RunExists(id));
        }
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
        };
        let mut batch = KvBatch::default();
        batch.put(
            keys::run(id),
            encode(&StoredRun {
                run: run.clone(),
                next_seq: 0,
            }),
        );
        batch.put(keys::run_time(created_at, id), Vec::new());
        batch.put(keys::run_job(&run.job, created_at, id), Vec::new());
        self.kv.apply(batch)?;
        Ok(run)
    }

    /// Plans messages for a run in one atomic write: records, indexes and counters.
    pub fn plan(
        &self,
        run: RunId,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<MessageId>, LedgerError> {
        self.plan_at(run, messages, now_ms())
    }

    /// [`Ledger::plan`] with the planning time given (imports, tests, benchmarks).
    pub fn plan_at(
        &self,
        run: RunId,
        messages: Vec<NewMessage>,
        now: Millis,
    ) -> Result<Vec<MessageId>, LedgerError> {
        let _guard = self.lock();
        let mut stored = self.stored_run(run)?;
        let mut batch = KvBatch::default();
        let mut ids = Vec::with_capacity(messages.len());
        if !messages.is_empty() {
            // Reserve this batch's block of deduplication ids, in the same atomic write.
            let base = match self.kv.get(keys::DEDUP_COUNTER)? {
                Some(b) => u32::from_be_bytes(b.as_slice().try_into().unwrap_or([0; 4])),
                // A random start: two stores sending through one BulkSMS account (staging
                // and production, a restored copy) do not begin with the same ids.
                None => fastrand::u32(0..DEDUP_SPACE as u32),
            };
            let next = (base as u64 + messages.len() as u64) % DEDUP_SPACE;
            batch.put(
                keys::DEDUP_COUNTER.to_vec(),
                (next as u32).to_be_bytes().to_vec(),
            );
            batch.put(
                keys::dedup(run, stored.next_seq),
                base.to_be_bytes().to_vec(),
            );
        }
        for m in messages {
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
            };
            stored.run.counters.add(msg.state, 1);
            batch.put(keys::by_state(run, msg.state, id.seq), Vec::new());
            batch.put(keys::message_time(now, id), Vec::new());
            batch.put(
                keys::recipient(msg.recipient_kind, msg.recipient_id, id),
                Vec::new(),
            );
            batch.put(keys::address(&msg.address, id), Vec::new());
            batch.put(keys::message(id), encode_message(&msg));
            ids.push(id);
        }
        settle(&mut stored.run, now);
        batch.put(keys::run(run), encode(&stored));
        self.kv.apply(batch)?;
        Ok(ids)
    }

    /// The message's deduplication id: unique among the last 2^31 messages this store
    /// planned, so BulkSMS (which remembers ids for about 12 hours) never mistakes one
    /// message for another, and the same for every retry of one message, even after a
    /// restart.
    pub fn dedup_id(&self, id: MessageId) -> Result<u32, LedgerError> {
        let start = keys::dedup(id.run, 0);
        let end = keys::dedup(id.run, id.seq.saturating_add(1));
        let block = match id.seq.checked_add(1) {
            Some(_) => self.kv.range(&start, &end, true).next(),
            None => self
                .kv
                .range(&start, &keys::end_of(&keys::dedups_of(id.run)), true)
                .next(),
        };
        let Some(entry) = block else {
            return Err(LedgerError::NoSuchMessage(id));
        };
        let (key, value) = entry?;
        let first = u32::from_be_bytes(key[key.len() - 4..].try_into().unwrap_or([0; 4]));
        let base = u32::from_be_bytes(value.as_slice().try_into().unwrap_or([0; 4]));
        Ok(dedup_after(base + 1, (id.seq - first) as u64))
    }

    /// Marks that every recipient of the run has been planned.
    pub fn finish_planning(&self, run: RunId) -> Result<Run, LedgerError> {
        let _guard = self.lock();
        let mut stored = self.stored_run(run)?;
        stored.run.planned_all = true;
        settle(&mut stored.run, now_ms());
        let mut batch = KvBatch::default();
        batch.put(keys::run(run), encode(&stored));
        self.kv.apply(batch)?;
        Ok(stored.run)
    }

    /// Applies state changes in one atomic write. Each illegal change is refused on its
    /// own (its `Err` in the result); the legal ones are written.
    pub fn transition(
        &self,
        changes: &[Change],
    ) -> Result<Vec<Result<(), IllegalTransition>>, LedgerError> {
        let _guard = self.lock();
        let mut batch = KvBatch::default();
        let mut touched: HashMap<MessageId, Message> = HashMap::new();
        // Per run: counter deltas, whether sending started, the latest change time.
        let mut runs: HashMap<RunId, ([i64; 10], bool, Millis)> = HashMap::new();
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            let mut msg = match touched.remove(&change.id) {
                Some(m) => m,
                None => self.message(change.id)?,
            };
            if !msg.state.can_become(change.to) {
                results.push(Err(IllegalTransition {
                    id: change.id,
                    from: msg.state,
                    to: change.to,
                }));
                touched.insert(change.id, msg);
                continue;
            }
            let entry = runs
                .entry(change.id.run)
                .or_insert(([0; 10], false, change.at));
            entry.0[msg.state.index()] -= 1;
            entry.0[change.to.index()] += 1;
            entry.1 |= change.to == MessageState::Sending;
            entry.2 = entry.2.max(change.at);
            batch.delete(keys::by_state(change.id.run, msg.state, change.id.seq));
            batch.put(
                keys::by_state(change.id.run, change.to, change.id.seq),
                Vec::new(),
            );
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
            msg.state = change.to;
            msg.updated_at = change.at;
            msg.transitions.push((change.to, change.at));
            if change.attempt {
                msg.attempts += 1;
            }
            if let Some(pid) = &change.provider_message_id
                && msg.provider_message_id.as_deref() != Some(pid)
            {
                batch.put(
                    keys::provider_id(&msg.provider, pid),
                    keys::message_ref(msg.id),
                );
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
            touched.insert(change.id, msg);
            results.push(Ok(()));
        }
        for (id, msg) in &touched {
            batch.put(keys::message(*id), encode_message(msg));
        }
        for (run_id, (delta, started, at)) in runs {
            let mut stored = self.stored_run(run_id)?;
            for s in MessageState::ALL {
                stored.run.counters.add(s, delta[s.index()]);
            }
            if started && stored.run.started_at.is_none() {
                stored.run.started_at = Some(at);
            }
            settle(&mut stored.run, at);
            batch.put(keys::run(run_id), encode(&stored));
        }
        self.kv.apply(batch)?;
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
        let _guard = self.lock();
        let mut msg = self.message(id)?;
        msg.error_code = Some(code);
        msg.error_text = Some(text);
        msg.updated_at = msg.updated_at.max(at);
        let mut batch = KvBatch::default();
        batch.put(keys::message(id), encode_message(&msg));
        self.kv.apply(batch)?;
        Ok(msg)
    }

    /// [`Ledger::transition`], then [`Ledger::flush`]: the changes are durable when this
    /// returns. Callers batch changes (one flush per batch, not per message).
    pub fn record(
        &self,
        changes: &[Change],
    ) -> Result<Vec<Result<(), IllegalTransition>>, LedgerError> {
        let results = self.transition(changes)?;
        self.flush()?;
        Ok(results)
    }

    /// Updates a run's flags (cancel, remove) atomically.
    fn update_run(&self, run: RunId, f: impl FnOnce(&mut Run)) -> Result<Run, LedgerError> {
        let _guard = self.lock();
        let mut stored = self.stored_run(run)?;
        f(&mut stored.run);
        settle(&mut stored.run, now_ms());
        let mut batch = KvBatch::default();
        batch.put(keys::run(run), encode(&stored));
        self.kv.apply(batch)?;
        Ok(stored.run)
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

    /// Deletes a run and every message and index entry of it. Messages go in batches and
    /// the run record last, so a purge cut short can simply be run again.
    pub fn purge(&self, run: RunId) -> Result<u64, LedgerError> {
        let mut deleted = 0;
        let prefix = keys::messages_of(run);
        loop {
            let _guard = self.lock();
            // Each batch also takes its messages off the run's counters, so the ledger is
            // consistent at every step of a purge that a crash cuts short.
            let mut stored = self.stored_run(run)?;
            let mut batch = KvBatch::default();
            let mut n = 0;
            for item in self
                .kv
                .range(&prefix, &keys::end_of(&prefix), false)
                .take(2048)
            {
                let (key, bytes) = item?;
                let m: Message = decode_message(&key, &bytes)?;
                batch.delete(keys::by_state(run, m.state, m.id.seq));
                batch.delete(keys::message_time(m.created_at, m.id));
                batch.delete(keys::recipient(m.recipient_kind, m.recipient_id, m.id));
                batch.delete(keys::address(&m.address, m.id));
                if let Some(pid) = &m.provider_message_id {
                    batch.delete(keys::provider_id(&m.provider, pid));
                }
                batch.delete(key);
                stored.run.counters.add(m.state, -1);
                n += 1;
            }
            if n == 0 {
                let dedups = keys::dedups_of(run);
                for item in self.kv.range(&dedups, &keys::end_of(&dedups), false) {
                    batch.delete(item?.0);
                }
                batch.delete(keys::run_time(stored.run.created_at, run));
                batch.delete(keys::run_job(&stored.run.job, stored.run.created_at, run));
                batch.delete(keys::run(run));
                self.kv.apply(batch)?;
                return Ok(deleted);
            }
            deleted += n;
            stored.run.removed = true;
            batch.put(keys::run(run), encode(&stored));
            self.kv.apply(batch)?;
        }
    }

    /// The ids of a run's messages in `state`, in plan order, without reading other runs.
    pub fn ids_in_state(
        &self,
        run: RunId,
        state: MessageState,
    ) -> impl Iterator<Item = Result<MessageId, LedgerError>> + '_ {
        let prefix = keys::state_prefix(run, state);
        let end = keys::end_of(&prefix);
        self.kv.range(&prefix, &end, false).map(move |item| {
            let (key, _) = item?;
            keys::state_id(&key)
                .map(|(id, _)| id)
                .ok_or_else(|| LedgerError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    detail: "short state index key".into(),
                })
        })
    }

    /// A run's messages in `state` (or all, in plan order).
    pub fn messages_of(
        &self,
        run: RunId,
        state: Option<MessageState>,
    ) -> Box<dyn Iterator<Item = Result<Message, LedgerError>> + '_> {
        match state {
            Some(s) => Box::new(self.ids_in_state(run, s).map(move |id| self.message(id?))),
            None => {
                let prefix = keys::messages_of(run);
                let end = keys::end_of(&prefix);
                Box::new(self.kv.range(&prefix, &end, false).map(|item| {
                    let (key, bytes) = item?;
                    decode_message(&key, &bytes)
                }))
            }
        }
    }

    pub(crate) fn decode_message(key: &[u8], bytes: &[u8]) -> Result<Message, LedgerError> {
        decode_message(key, bytes)
    }
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
    pub index_entries: u64,
}

impl Ledger<'_> {
    /// Checks that records, indexes and counters agree: every run's counters equal its
    /// messages' states, every message has its index entries, and every index entry points
    /// at a message that matches it. Returns the first disagreement found.
    pub fn verify(&self) -> Result<Verified, String> {
        let err = |e: LedgerError| e.to_string();
        let mut v = Verified::default();
        let all = |prefix: &[u8]| {
            let end = keys::end_of(prefix);
            self.kv.range(prefix, &end, false)
        };
        let exists = |key: Vec<u8>| -> Result<bool, String> {
            self.kv
                .get(&key)
                .map(|v| v.is_some())
                .map_err(|e| e.to_string())
        };
        for item in all(b"R") {
            let (key, bytes) = item.map_err(|e| e.to_string())?;
            let stored: StoredRun = decode(&key, &bytes).map_err(err)?;
            let run = stored.run;
            v.runs += 1;
            if !exists(keys::run_time(run.created_at, run.id))?
                || !exists(keys::run_job(&run.job, run.created_at, run.id))?
            {
                return Err(format!("run {} lacks a time or job index entry", run.id));
            }
            let mut counted = Counters::default();
            for m in self.messages_of(run.id, None) {
                let m = m.map_err(err)?;
                v.messages += 1;
                counted.add(m.state, 1);
                if m.id.seq >= stored.next_seq {
                    return Err(format!(
                        "message {} is beyond run {}'s next sequence",
                        m.id, run.id
                    ));
                }
                let mut wanted = vec![
                    keys::by_state(run.id, m.state, m.id.seq),
                    keys::message_time(m.created_at, m.id),
                    keys::recipient(m.recipient_kind, m.recipient_id, m.id),
                    keys::address(&m.address, m.id),
                ];
                if let Some(pid) = &m.provider_message_id {
                    wanted.push(keys::provider_id(&m.provider, pid));
                }
                for key in wanted {
                    if !exists(key.clone())? {
                        return Err(format!(
                            "message {} lacks index entry {}",
                            m.id,
                            String::from_utf8_lossy(&key)
                        ));
                    }
                }
            }
            if counted != run.counters {
                return Err(format!(
                    "run {} counters {:?} disagree with its messages {:?}",
                    run.id, run.counters.0, counted.0
                ));
            }
        }
        // Every state index entry must point at a message in that state.
        for item in all(b"S") {
            let (key, _) = item.map_err(|e| e.to_string())?;
            v.index_entries += 1;
            let (id, state) = keys::state_id(&key).ok_or("short state index key")?;
            let state = MessageState::ALL
                .get(state as usize)
                .copied()
                .ok_or("bad state byte")?;
            let m = self.message(id).map_err(err)?;
            if m.state != state {
                return Err(format!(
                    "state index says {id} is {state}, the record says {}",
                    m.state
                ));
            }
        }
        for prefix in [b"t", b"c", b"a"] {
            for item in all(prefix) {
                let (key, _) = item.map_err(|e| e.to_string())?;
                v.index_entries += 1;
                let id = keys::tail_id(&key).ok_or("short index key")?;
                self.message(id)
                    .map_err(|e| format!("dangling index entry: {e}"))?;
            }
        }
        for item in all(b"p") {
            let (_, value) = item.map_err(|e| e.to_string())?;
            v.index_entries += 1;
            let id = keys::tail_id(&value).ok_or("short provider index value")?;
            self.message(id)
                .map_err(|e| format!("dangling provider index entry: {e}"))?;
        }
        for prefix in [b"T", b"J"] {
            for item in all(prefix) {
                let (key, _) = item.map_err(|e| e.to_string())?;
                v.index_entries += 1;
                let id = keys::tail_run(&key).ok_or("short run index key")?;
                self.run(id)
                    .map_err(|e| format!("dangling run index entry: {e}"))?;
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Box<dyn Store>) {
        crate::store::scratch()
    }

    fn new_run(job: &str) -> NewRun {
        NewRun {
            job: job.into(),
            trigger: Trigger::Manual,
            channels: vec![Channel::Sms],
            provider: "bulksms".into(),
            body: "Hi {{ customer.name }}".into(),
            subject: None,
        }
    }

    fn msg(i: u64) -> NewMessage {
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
        }
    }

    #[test]
    fn a_run_goes_from_new_to_sent_with_error_through_its_messages() {
        let (_d, store) = store();
        let ledger = Ledger::new(store.as_ref());
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

    #[test]
    fn illegal_transitions_are_refused_alone() {
        let (_d, store) = store();
        let ledger = Ledger::new(store.as_ref());
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

    #[test]
    fn a_runs_messages_by_state_without_other_runs() {
        let (_d, store) = store();
        let ledger = Ledger::new(store.as_ref());
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

    #[test]
    fn dedup_ids_are_unique_across_runs_and_stable_per_message() {
        let (_d, store) = store();
        let ledger = Ledger::new(store.as_ref());
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
        // A purged run leaves no dedup blocks behind.
        ledger.finish_planning(b.id).unwrap();
        ledger.purge(b.id).unwrap();
        let prefix = keys::dedups_of(b.id);
        assert_eq!(
            store
                .history()
                .range(&prefix, &keys::end_of(&prefix), false)
                .count(),
            0
        );
        assert_eq!(ledger.dedup_id(all[0]).unwrap(), dedups[0]);
    }

    #[test]
    fn cancel_remove_and_purge() {
        let (_d, store) = store();
        let ledger = Ledger::new(store.as_ref());
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
        // Nothing of the purged run is left in any index.
        let leftovers = ledger
            .kv
            .range(b"", &[0xff], false)
            .filter(|kv| {
                let (k, v) = kv.as_ref().unwrap();
                k.windows(16).any(|w| w == run.id.to_bytes())
                    || v.windows(16).any(|w| w == run.id.to_bytes())
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn version_1_message_records_still_read() {
        let (_dir, store) = store();
        let ledger = Ledger::new(store.as_ref());
        let run = ledger.create_run(new_run("j")).unwrap();
        let id = ledger.plan(run.id, vec![msg(1)]).unwrap()[0];
        let current = ledger.message(id).unwrap();
        assert!(current.failovers.is_empty());
        // Rewrite the record as crier wrote it before failovers existed.
        let m = current.clone();
        let v1 = MessageV1 {
            id: m.id,
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
            attempts: m.attempts,
            provider_message_id: m.provider_message_id,
            error_code: m.error_code,
            error_text: m.error_text,
            created_at: m.created_at,
            updated_at: m.updated_at,
            transitions: m.transitions,
        };
        let mut batch = KvBatch::default();
        batch.put(keys::message(id), encode(&v1));
        ledger.kv.apply(batch).unwrap();
        assert_eq!(ledger.message(id).unwrap(), current);
        // And it moves on as any other, failover included.
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
    }
}
