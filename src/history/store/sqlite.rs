//! The embedded history: one SQLite file, `data/history.sqlite3`.
//!
//! WAL mode, so `sqlite3`, DuckDB or a second crier process can read the file while the
//! daemon writes, and `synchronous = FULL`, so a commit is on disk when it returns: the
//! ledger marks a message `sending` before the provider call and must find it so after a
//! power cut. One writer connection behind a mutex takes every write transaction
//! (`BEGIN IMMEDIATE`, one per group commit of the engine); reads take a connection of
//! their own from a small pool and never wait for the writer. Statements are prepared
//! once per connection and cached.
//!
//! The schema is `sqlite/NNN_*.sql`, applied in order at open and recorded in
//! `PRAGMA user_version`; a file from a newer crier is refused, not guessed at.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params, types::ToSqlOutput};

use super::sql::{self, MESSAGE_COLUMNS, RUN_COLUMNS};
use super::{HistoryError, HistoryStore, Param, Select, SqlRow, StoredRun, Tx, TxBody};
use crate::history::ledger::LedgerError;
use crate::history::{Message, MessageId, MessageState, Millis, RunId};
use crate::provider::portal::InboxItem;

/// The migrations, in order: version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[
    include_str!("sqlite/001_history.sql"),
    include_str!("sqlite/002_delivery.sql"),
];

/// Read connections kept open for reuse.
const READERS: usize = 4;

/// The history in one SQLite file.
pub struct SqliteHistory {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteHistory")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteHistory {
    /// Opens (creating if needed) the history at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteHistory, HistoryError> {
        let place = path.display().to_string();
        let fail = |e: &dyn std::fmt::Display| HistoryError::Database {
            place: place.clone(),
            detail: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| fail(&e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| fail(&e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| fail(&e))?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16384;",
        )
        .map_err(|e| fail(&e))?;
        migrate(&conn, &place)?;
        Ok(SqliteHistory {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn fail(&self, e: impl std::fmt::Display) -> HistoryError {
        HistoryError::Database {
            place: self.path.display().to_string(),
            detail: e.to_string(),
        }
    }

    /// [`SqliteHistory::fail`] for an error of `conn`, with the OS's own words when the
    /// OS refused (SQLite says "disk is full"; the OS says which errno).
    fn fail_on(&self, conn: &Connection, e: rusqlite::Error) -> HistoryError {
        self.fail(with_os_error(conn, e))
    }

    /// Runs `f` on a read connection from the pool (opening one if none is free).
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, HistoryError> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| self.fail(e))?;
                c.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(|e| self.fail(e))?;
                c.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -16384;")
                    .map_err(|e| self.fail(e))?;
                c
            }
        };
        let result = f(&conn).map_err(|e| self.fail_on(&conn, e));
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < READERS {
            pool.push(conn);
        }
        result
    }

    fn select_rows<T>(
        &self,
        select: &Select,
        mut decode: impl FnMut(&dyn SqlRow) -> Result<T, HistoryError>,
    ) -> Result<Vec<T>, HistoryError> {
        let mut decoded = Ok(());
        let mut out = Vec::new();
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&select.sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(select.params.iter()))?;
            while let Some(row) = rows.next()? {
                match decode(&Row(row)) {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        decoded = Err(e);
                        break;
                    }
                }
            }
            Ok(())
        })?;
        decoded.map(|()| out)
    }
}

/// The error's text, followed by the OS error behind it, if any: SQLite's "database or
/// disk is full" becomes "database or disk is full (No space left on device (os error
/// 28))", an I/O error says `Read-only file system` or `Input/output error`.
fn with_os_error(conn: &Connection, e: rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    let os = match &e {
        // SQLite reports ENOSPC as SQLITE_FULL and keeps no errno for it (we set no
        // page limit, the other cause).
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull => {
            Some(no_space().to_string())
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                ErrorCode::SystemIoFailure | ErrorCode::ReadOnly | ErrorCode::CannotOpen
            ) =>
        {
            // SAFETY: the handle is this live connection's; sqlite3_system_errno only
            // reads the errno SQLite saved for its last failed call.
            let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
            (errno != 0).then(|| std::io::Error::from_raw_os_error(errno).to_string())
        }
        _ => None,
    };
    match os {
        Some(os) => format!("{e} ({os})"),
        None => e.to_string(),
    }
}

/// The OS's error for a full disk, as it would print it.
fn no_space() -> std::io::Error {
    if cfg!(target_os = "linux") {
        std::io::Error::from_raw_os_error(28) // ENOSPC
    } else {
        std::io::Error::from(std::io::ErrorKind::StorageFull)
    }
}

/// Applies every migration the file has not had; refuses a file from a newer crier.
fn migrate(conn: &Connection, place: &str) -> Result<(), HistoryError> {
    let fail = |e: rusqlite::Error| HistoryError::Database {
        place: place.to_string(),
        detail: e.to_string(),
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(fail)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(HistoryError::TooNew {
            place: place.to_string(),
            found: version,
            known,
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let batch = format!(
            "BEGIN IMMEDIATE; {migration}\nPRAGMA user_version = {}; COMMIT;",
            i + 1
        );
        if let Err(e) = conn.execute_batch(&batch) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(fail(e));
        }
    }
    Ok(())
}

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Int(i) => ToSqlOutput::from(*i),
            Param::Text(s) => ToSqlOutput::from(s.as_str()),
            Param::Bool(b) => ToSqlOutput::from(*b),
        })
    }
}

struct Row<'a, 'b>(&'a rusqlite::Row<'b>);

impl SqlRow for Row<'_, '_> {
    fn int(&self, i: usize) -> Result<Option<i64>, HistoryError> {
        self.0.get(i).map_err(decode_error)
    }
    fn text(&self, i: usize) -> Result<Option<String>, HistoryError> {
        self.0.get(i).map_err(decode_error)
    }
    fn boolean(&self, i: usize) -> Result<bool, HistoryError> {
        self.0.get(i).map_err(decode_error)
    }
}

fn decode_error(e: rusqlite::Error) -> HistoryError {
    HistoryError::Decode {
        key: "row".into(),
        detail: e.to_string(),
    }
}

const UPDATE_RUN: &str = "UPDATE runs SET started_at = ?2, finished_at = ?3, planned_all = ?4, \
     cancelled = ?5, removed = ?6, next_seq = ?7, n_queued = ?8, n_sending = ?9, n_sent = ?10, \
     n_delivered = ?11, n_undelivered = ?12, n_failed = ?13, n_expired = ?14, n_unknown = ?15, \
     n_skipped = ?16, n_cancelled = ?17 WHERE id = ?1";

const INSERT_MESSAGE: &str = "INSERT INTO messages (run_id, seq, recipient_kind, recipient_id, \
     address, channel, provider, type, subject, body, encoding, parts, state, reason, attempts, \
     provider_message_id, error_code, error_text, created_at, updated_at, dedup_id, transitions, \
     failovers, location, partner, category, billing_type, recipient_status, html, route, \
     worker) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
     ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)";

const UPDATE_MESSAGE: &str = "UPDATE messages SET provider = ?3, state = ?4, reason = ?5, \
     attempts = ?6, provider_message_id = ?7, error_code = ?8, error_text = ?9, updated_at = ?10, \
     transitions = ?11, failovers = ?12, worker = ?13 WHERE run_id = ?1 AND seq = ?2";

/// A write transaction on the writer connection.
struct SqliteTx<'c> {
    conn: &'c Connection,
}

impl SqliteTx<'_> {
    fn one_run(&self, id: RunId) -> Result<Option<StoredRun>, rusqlite::Error> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))?;
        let mut rows = stmt.query([id.to_string()])?;
        match rows.next()? {
            Some(row) => Ok(Some(
                sql::stored_run_from_row(&Row(row)).map_err(to_sqlite)?,
            )),
            None => Ok(None),
        }
    }
}

/// A decoding error carried through rusqlite's error type.
fn to_sqlite(e: HistoryError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(e.to_string())))
}

fn counters_params(run: &StoredRun) -> [i64; 10] {
    run.run.counters.0.map(|n| n as i64)
}

impl SqliteTx<'_> {
    fn wrap<T>(&self, r: Result<T, rusqlite::Error>) -> Result<T, HistoryError> {
        r.map_err(|e| HistoryError::Database {
            place: self
                .conn
                .path()
                .map(str::to_string)
                .unwrap_or_else(|| "history".into()),
            detail: with_os_error(self.conn, e),
        })
    }
}

impl Tx for SqliteTx<'_> {
    fn run(&mut self, id: RunId) -> Result<Option<StoredRun>, HistoryError> {
        let r = self.one_run(id);
        self.wrap(r)
    }

    fn insert_run(&mut self, stored: &StoredRun) -> Result<bool, HistoryError> {
        let run = &stored.run;
        let scheduled_at = match run.trigger {
            crate::history::Trigger::Schedule { at } => Some(at),
            _ => None,
        };
        let r = self
            .conn
            .prepare_cached(
                "INSERT INTO runs (id, job, triggered_by, scheduled_at, channels, provider, body, \
                 subject, created_at, retry_of) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    run.id.to_string(),
                    run.job,
                    sql::trigger_label(&run.trigger),
                    scheduled_at,
                    sql::channels_text(&run.channels),
                    run.provider,
                    run.body,
                    run.subject,
                    run.created_at,
                    run.retry_of.map(|r| r.to_string()),
                ])
            });
        let inserted = self.wrap(r)? == 1;
        if inserted {
            self.update_run(stored)?;
        }
        Ok(inserted)
    }

    fn update_run(&mut self, stored: &StoredRun) -> Result<(), HistoryError> {
        let run = &stored.run;
        let c = counters_params(stored);
        let r = self.conn.prepare_cached(UPDATE_RUN).and_then(|mut stmt| {
            stmt.execute(params![
                run.id.to_string(),
                run.started_at,
                run.finished_at,
                run.planned_all,
                run.cancelled,
                run.removed,
                stored.next_seq as i64,
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                c[6],
                c[7],
                c[8],
                c[9],
            ])
        });
        self.wrap(r).map(drop)
    }

    fn delete_run(&mut self, id: RunId) -> Result<(), HistoryError> {
        let r = self
            .conn
            .prepare_cached("DELETE FROM runs WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute([id.to_string()]));
        self.wrap(r).map(drop)
    }

    fn counter(&mut self, name: &str) -> Result<Option<i64>, HistoryError> {
        let r = self
            .conn
            .prepare_cached("SELECT value FROM counters WHERE name = ?1")
            .and_then(|mut stmt| stmt.query_row([name], |r| r.get(0)).optional());
        self.wrap(r)
    }

    fn set_counter(&mut self, name: &str, value: i64) -> Result<(), HistoryError> {
        let r = self
            .conn
            .prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut stmt| stmt.execute(params![name, value]));
        self.wrap(r).map(drop)
    }

    fn messages(&mut self, ids: &[MessageId]) -> Result<Vec<Message>, HistoryError> {
        let r = (|| {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE run_id = ?1 AND seq = ?2"
            ))?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let mut rows = stmt.query(params![id.run.to_string(), id.seq as i64])?;
                if let Some(row) = rows.next()? {
                    out.push(sql::message_from_row(&Row(row)).map_err(to_sqlite)?);
                }
            }
            Ok(out)
        })();
        self.wrap(r)
    }

    fn insert_messages(&mut self, messages: &[(Message, u32)]) -> Result<(), HistoryError> {
        let r = (|| {
            let mut stmt = self.conn.prepare_cached(INSERT_MESSAGE)?;
            for (m, dedup) in messages {
                let s = &m.snapshot;
                stmt.execute(params![
                    m.id.run.to_string(),
                    m.id.seq as i64,
                    m.recipient_kind.as_str(),
                    m.recipient_id as i64,
                    m.address,
                    m.channel.as_str(),
                    m.provider,
                    m.kind.as_str(),
                    m.subject,
                    m.body,
                    m.encoding,
                    m.parts as i64,
                    m.state.as_str(),
                    m.reason,
                    m.attempts as i64,
                    m.provider_message_id,
                    m.error_code,
                    m.error_text,
                    m.created_at,
                    m.updated_at,
                    *dedup as i64,
                    sql::transitions_json(m),
                    sql::failovers_json(m),
                    s.location,
                    s.partner,
                    s.category,
                    s.billing_type,
                    s.status,
                    m.html,
                    sql::route_text(m),
                    m.worker,
                ])?;
            }
            Ok(())
        })();
        self.wrap(r)
    }

    fn update_messages(&mut self, messages: &[&Message]) -> Result<(), HistoryError> {
        let r = (|| {
            let mut stmt = self.conn.prepare_cached(UPDATE_MESSAGE)?;
            for m in messages {
                stmt.execute(params![
                    m.id.run.to_string(),
                    m.id.seq as i64,
                    m.provider,
                    m.state.as_str(),
                    m.reason,
                    m.attempts as i64,
                    m.provider_message_id,
                    m.error_code,
                    m.error_text,
                    m.updated_at,
                    sql::transitions_json(m),
                    sql::failovers_json(m),
                    m.worker,
                ])?;
            }
            Ok(())
        })();
        self.wrap(r)
    }

    fn delete_messages(
        &mut self,
        run: RunId,
        limit: usize,
    ) -> Result<Vec<MessageState>, HistoryError> {
        let r = (|| {
            let mut stmt = self.conn.prepare_cached(
                "DELETE FROM messages WHERE rowid IN \
                 (SELECT rowid FROM messages WHERE run_id = ?1 LIMIT ?2) RETURNING state",
            )?;
            let states = stmt
                .query_map(params![run.to_string(), limit as i64], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(states)
        })();
        self.wrap(r)?
            .iter()
            .map(|s| {
                s.parse().map_err(|e: String| HistoryError::Decode {
                    key: run.to_string(),
                    detail: e,
                })
            })
            .collect()
    }
}

impl HistoryStore for SqliteHistory {
    fn write(&self, body: &mut TxBody<'_>) -> Result<(), LedgerError> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.fail_on(&conn, e))?;
        let mut tx = SqliteTx { conn: &conn };
        match body(&mut tx) {
            Ok(()) => match conn.execute_batch("COMMIT") {
                Ok(()) => Ok(()),
                Err(e) => {
                    let error = self.fail_on(&conn, e);
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(error.into())
                }
            },
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn select_runs(&self, select: &Select) -> Result<Vec<crate::history::Run>, HistoryError> {
        self.select_rows(select, |row| sql::stored_run_from_row(row).map(|s| s.run))
    }

    fn select_messages(&self, select: &Select) -> Result<Vec<Message>, HistoryError> {
        self.select_rows(select, sql::message_from_row)
    }

    fn select_ints(&self, select: &Select) -> Result<Vec<(String, i64)>, HistoryError> {
        self.select_rows(select, |row| {
            Ok((row.text(0)?.unwrap_or_default(), row.int(1)?.unwrap_or(0)))
        })
    }

    fn dedup_id(&self, id: MessageId) -> Result<Option<u32>, HistoryError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT dedup_id FROM messages WHERE run_id = ?1 AND seq = ?2")?
                .query_row(params![id.run.to_string(), id.seq as i64], |r| {
                    r.get::<_, i64>(0)
                })
                .optional()
        })
        .map(|v| v.map(|d| d as u32))
    }

    fn inbox_put(&self, customer: u64, item: &InboxItem) -> Result<(), HistoryError> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        conn.prepare_cached(
            "INSERT INTO inbox (customer_id, message_id, title, body, created_at, read_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (customer_id, message_id) DO UPDATE \
             SET title = excluded.title, body = excluded.body, created_at = excluded.created_at, \
             read_at = excluded.read_at",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                customer as i64,
                item.id,
                item.title,
                item.body,
                item.created_at,
                item.read_at
            ])
        })
        .map(drop)
        .map_err(|e| self.fail_on(&conn, e))
    }

    fn inbox_list(&self, customer: u64) -> Result<Vec<InboxItem>, HistoryError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT message_id, title, body, created_at, read_at FROM inbox \
                 WHERE customer_id = ?1 ORDER BY message_id",
            )?
            .query_map([customer as i64], |r| {
                Ok(InboxItem {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    body: r.get(2)?,
                    created_at: r.get(3)?,
                    read_at: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    fn inbox_mark_read(
        &self,
        customer: u64,
        message: &str,
        at: Millis,
    ) -> Result<bool, HistoryError> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let found = conn
            .prepare_cached(
                "UPDATE inbox SET read_at = COALESCE(read_at, ?3) \
                 WHERE customer_id = ?1 AND message_id = ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![customer as i64, message, at]))
            .map_err(|e| self.fail_on(&conn, e))?;
        Ok(found > 0)
    }

    fn place(&self) -> String {
        self.path.display().to_string()
    }

    fn ping(&self) -> Result<(), HistoryError> {
        self.read(|conn| {
            conn.query_row("SELECT 1 FROM runs LIMIT 1", [], |_| Ok(()))
                .optional()
        })
        .map(drop)
    }

    fn check(&self) -> Result<(), HistoryError> {
        let result: String =
            self.read(|conn| conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(self.fail(format!("integrity check: {result}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_from_a_newer_crier_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite3");
        drop(SqliteHistory::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteHistory::open(&path).unwrap_err();
        assert!(
            matches!(
                err,
                HistoryError::TooNew {
                    found: 99,
                    known: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade crier"), "{err}");
        let version: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 99);
    }

    #[test]
    fn the_file_is_in_wal_mode_with_every_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite3");
        drop(SqliteHistory::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tables, ["counters", "inbox", "messages", "runs"]);
    }
}
