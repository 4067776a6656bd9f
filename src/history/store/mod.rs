//! Where the history lives: the operations the ledger needs from a database, one backend
//! per database (SQLite embedded, PostgreSQL at scale), one schema for both.
//!
//! The history is the record that cannot be rebuilt (runs, messages and their fates, the
//! customer-portal inbox, the BulkSMS deduplication counter), so it lives in a database
//! with a real crash story and real tables that analysts can query with their own tools;
//! the README documents the tables as a stable interface.
//!
//! The split, as River's `riverdriver` draws it: [`HistoryStore`] and [`Tx`] speak the
//! ledger's operations (insert a run, load these messages for update, write these
//! messages, take a block of deduplication ids), and each backend implements them with
//! its engine's strengths in SQL of its own, written out beside its migrations. What the
//! operations *mean* — the message state machine, the run counters and status, which
//! filters a query applies — lives once, above the backends, in
//! [`crate::history::ledger`] and [`sql`]: reads are composed there from written-out SQL
//! fragments in the dialect both engines share, so the CLI, the API and the console read
//! the same rows whichever database holds them.

pub mod conformance;
pub mod postgres;
pub mod sql;
pub mod sqlite;

use std::path::PathBuf;

use thiserror::Error;

use super::{Message, MessageId, MessageState, Millis, Run, RunId};
use crate::provider::portal::InboxItem;

/// Why the history database refused or failed.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// The OS's or the engine's error, with the database it is about.
    #[error("history database {place}: {detail}")]
    Database { place: String, detail: String },
    #[error(
        "the history database {place} is at schema version {found}, newer than this crier knows ({known}); upgrade crier"
    )]
    TooNew {
        place: String,
        found: i64,
        known: i64,
    },
    #[error("history record {key} cannot be read: {detail}")]
    Decode { key: String, detail: String },
}

/// A value bound to a `?` of a query from [`sql`].
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Int(i64),
    Text(String),
    Bool(bool),
}

/// A read: SQL in the shared dialect (`?` placeholders, in order) and its values.
#[derive(Debug, Clone, Default)]
pub struct Select {
    pub sql: String,
    pub params: Vec<Param>,
}

/// One result row, read by column position, whichever engine produced it.
pub trait SqlRow {
    fn int(&self, i: usize) -> Result<Option<i64>, HistoryError>;
    fn text(&self, i: usize) -> Result<Option<String>, HistoryError>;
    fn boolean(&self, i: usize) -> Result<bool, HistoryError>;
}

/// A run as stored: the run and the sequence number its next message gets.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    pub run: Run,
    pub next_seq: u32,
}

/// The writes of one transaction: everything done through one `Tx` lands together or not
/// at all. Rows read through it are locked until the end (`FOR UPDATE` where the engine
/// has row locks; SQLite's single writer holds the whole database).
pub trait Tx {
    /// The run with this id, locked.
    fn run(&mut self, id: RunId) -> Result<Option<StoredRun>, HistoryError>;
    /// Inserts a run; `false` when one with its id exists.
    fn insert_run(&mut self, run: &StoredRun) -> Result<bool, HistoryError>;
    /// Writes a run's counters, times, flags and next sequence number.
    fn update_run(&mut self, run: &StoredRun) -> Result<(), HistoryError>;
    /// Deletes a run that has no messages left.
    fn delete_run(&mut self, id: RunId) -> Result<(), HistoryError>;
    /// The named counter's value, locked (the deduplication counter).
    fn counter(&mut self, name: &str) -> Result<Option<i64>, HistoryError>;
    fn set_counter(&mut self, name: &str, value: i64) -> Result<(), HistoryError>;
    /// These messages, locked, in any order; ids with no message are left out.
    fn messages(&mut self, ids: &[MessageId]) -> Result<Vec<Message>, HistoryError>;
    /// Inserts newly planned messages, with their deduplication ids.
    fn insert_messages(&mut self, messages: &[(Message, u32)]) -> Result<(), HistoryError>;
    /// Writes every mutable field of these messages (state, attempts, provider, ids,
    /// errors, transitions, failovers).
    fn update_messages(&mut self, messages: &[&Message]) -> Result<(), HistoryError>;
    /// Deletes up to `limit` of a run's messages; returns the states of those deleted.
    fn delete_messages(
        &mut self,
        run: RunId,
        limit: usize,
    ) -> Result<Vec<MessageState>, HistoryError>;
}

/// The body of a write transaction; its error aborts the transaction.
pub type TxBody<'a> =
    dyn FnMut(&mut dyn Tx) -> Result<(), crate::history::ledger::LedgerError> + 'a;

/// The history's database.
/// Messages as a backend streams them ([`HistoryStore::stream_messages`]).
pub type MessageStream<'a> = Box<dyn Iterator<Item = Result<Message, HistoryError>> + 'a>;

pub trait HistoryStore: Send + Sync {
    /// Runs `body` in one transaction, committed (durably) when it returns `Ok`, rolled
    /// back when it returns an error, whose error is then returned.
    fn write(&self, body: &mut TxBody<'_>) -> Result<(), crate::history::ledger::LedgerError>;

    /// How many [`HistoryStore::write`]s gain from running at once: SQLite writes one
    /// transaction at a time; a PostgreSQL server overlaps one transaction's commit and
    /// round trips with another's work.
    fn writers(&self) -> usize {
        1
    }

    /// The runs a query from [`sql`] selects, in its order.
    fn select_runs(&self, select: &Select) -> Result<Vec<Run>, HistoryError>;

    /// The messages a query from [`sql`] selects, in its order.
    fn select_messages(&self, select: &Select) -> Result<Vec<Message>, HistoryError>;

    /// Every message of `select` (a query from [`sql`] without a page limit), in its
    /// order, when this backend streams a whole result faster than it pages through it:
    /// PostgreSQL sends the rows of one query while the caller writes the earlier ones,
    /// from one snapshot. `None`: page with [`HistoryStore::select_messages`].
    /// Only for callers that read to the end (an export): a stream dropped early still
    /// costs the server the whole query.
    fn stream_messages(&self, _select: &Select) -> Option<MessageStream<'_>> {
        None
    }

    /// The first column of every row a query from [`sql`] selects, as integers
    /// (counts, group sizes).
    fn select_ints(&self, select: &Select) -> Result<Vec<(String, i64)>, HistoryError>;

    /// The deduplication id given to a message when it was planned.
    fn dedup_id(&self, id: MessageId) -> Result<Option<u32>, HistoryError>;

    /// Puts a message into a customer's portal inbox, replacing one with the same id.
    fn inbox_put(&self, customer: u64, item: &InboxItem) -> Result<(), HistoryError>;
    /// A customer's inbox, oldest first.
    fn inbox_list(&self, customer: u64) -> Result<Vec<InboxItem>, HistoryError>;
    /// Marks an inbox message read (the first time counts); `false` when there is none.
    fn inbox_mark_read(
        &self,
        customer: u64,
        message: &str,
        at: Millis,
    ) -> Result<bool, HistoryError>;

    /// Where the history lives, for messages (a file, or a server and database; never a
    /// password).
    fn place(&self) -> String;

    /// Answers when the database can be read (`/healthz`).
    fn ping(&self) -> Result<(), HistoryError>;

    /// Checks the database's own consistency (`PRAGMA integrity_check`, or nothing).
    fn check(&self) -> Result<(), HistoryError>;
}

/// Where the embedded history lives, beside the directory in the data dir.
pub fn embedded_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("history.sqlite3")
}
