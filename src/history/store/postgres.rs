//! The history in PostgreSQL: the same tables as the SQLite file, for several crier
//! processes on one database and for analysts' tools (psql, Metabase, Grafana).
//!
//! PostgreSQL's strengths where they pay: a run's messages are planned with one
//! `INSERT … SELECT FROM unnest(…)` per batch (one round trip for thousands of rows),
//! transitions are one `UPDATE … FROM unnest(…)`, and the messages a transaction changes
//! are read with one `SELECT … FOR UPDATE` over `unnest`, so two writers (a delivery
//! report and the sender, or two workers) serialise on the rows they share and on
//! nothing else. A partial index covers the states a sender scans (migration beside
//! this file).
//!
//! A write transaction holds one pooled connection from `BEGIN` to `COMMIT`; each of
//! the ledger's steps in it is one round trip on that connection, through the shared
//! plumbing's private runtime ([`crate::store::postgres::Pg`]). If the connection is
//! lost, the transaction is gone with it: nothing it wrote is recorded, and the ledger's
//! caller sees the error (a run pauses, resumable).

use std::sync::Arc;

use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;

use super::sql::{self, numbered};
use super::{HistoryError, HistoryStore, Param, Select, SqlRow, StoredRun, Tx, TxBody};
use crate::history::ledger::LedgerError;
use crate::history::{Message, MessageId, MessageState, Millis, RunId, Trigger};
use crate::provider::portal::InboxItem;
use crate::store::StoreError;
use crate::store::postgres::{Migration, Pg, PgSettings};

/// The history's migrations, in order.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "create_history",
        sql: include_str!("postgres/001_history.sql"),
    },
    Migration {
        version: 2,
        name: "workers",
        sql: include_str!("postgres/002_workers.sql"),
    },
];

/// The history in one PostgreSQL database.
pub struct PgHistory {
    pg: Pg,
}

impl std::fmt::Debug for PgHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHistory").field("pg", &self.pg).finish()
    }
}

impl PgHistory {
    /// Connects and brings the history's tables up to date.
    pub fn open(settings: &PgSettings) -> Result<PgHistory, StoreError> {
        PgHistory::on(Pg::connect(settings)?)
    }

    /// The history on an already connected database (a clone shares the directory's pool).
    pub fn on(pg: Pg) -> Result<PgHistory, StoreError> {
        pg.migrate("history", MIGRATIONS)?;
        Ok(PgHistory { pg })
    }

    fn rows(&self, what: &'static str, select: &Select) -> Result<Vec<PgRow>, HistoryError> {
        let sql = numbered(&select.sql);
        let params = owned_params(&select.params);
        self.pg
            .call(what, move |client| async move {
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let stmt = client.prepare_cached(&sql).await?;
                client.query(&stmt, &refs).await
            })
            .map(|rows| rows.into_iter().map(PgRow).collect())
            .map_err(history_error)
    }
}

/// A store error as the history reports it.
pub(crate) fn history_error(e: StoreError) -> HistoryError {
    HistoryError::Database {
        place: "PostgreSQL".into(),
        detail: e.to_string(),
    }
}

type Owned = Box<dyn ToSql + Sync + Send>;

fn owned_params(params: &[Param]) -> Vec<Owned> {
    params
        .iter()
        .map(|p| -> Owned {
            match p {
                Param::Int(i) => Box::new(*i),
                Param::Text(s) => Box::new(s.clone()),
                Param::Bool(b) => Box::new(*b),
            }
        })
        .collect()
}

/// A row of a PostgreSQL answer, read by column position ([`SqlRow`]).
pub(crate) struct PgRow(pub(crate) tokio_postgres::Row);

fn decode_error(e: tokio_postgres::Error) -> HistoryError {
    HistoryError::Decode {
        key: "row".into(),
        detail: e.to_string(),
    }
}

impl SqlRow for PgRow {
    fn int(&self, i: usize) -> Result<Option<i64>, HistoryError> {
        self.0.try_get(i).map_err(decode_error)
    }
    fn text(&self, i: usize) -> Result<Option<String>, HistoryError> {
        self.0.try_get(i).map_err(decode_error)
    }
    fn boolean(&self, i: usize) -> Result<bool, HistoryError> {
        self.0.try_get(i).map_err(decode_error)
    }
}

/// A write transaction: one pooled connection from `BEGIN` to `COMMIT`.
struct PgTx<'a> {
    pg: &'a Pg,
    client: Arc<Object>,
}

impl PgTx<'_> {
    /// Runs `sql` with `params` on the transaction's connection.
    fn query(
        &self,
        what: &'static str,
        sql: &'static str,
        params: Vec<Owned>,
    ) -> Result<Vec<tokio_postgres::Row>, HistoryError> {
        let client = self.client.clone();
        self.pg
            .run(what, async move {
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let stmt = client.prepare_cached(sql).await?;
                client.query(&stmt, &refs).await
            })
            .map_err(history_error)
    }

    fn execute(
        &self,
        what: &'static str,
        sql: &'static str,
        params: Vec<Owned>,
    ) -> Result<u64, HistoryError> {
        let client = self.client.clone();
        self.pg
            .run(what, async move {
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let stmt = client.prepare_cached(sql).await?;
                client.execute(&stmt, &refs).await
            })
            .map_err(history_error)
    }

    fn batch(&self, what: &'static str, sql: &'static str) -> Result<(), HistoryError> {
        let client = self.client.clone();
        self.pg
            .run(what, async move { client.batch_execute(sql).await })
            .map_err(history_error)
    }
}

const SELECT_RUN_FOR_UPDATE: &str = "SELECT id, job, triggered_by, scheduled_at, channels, provider, body, \
     subject, created_at, started_at, finished_at, planned_all, cancelled, removed, next_seq, \
     n_queued, n_sending, n_sent, n_delivered, n_undelivered, n_failed, n_expired, n_unknown, \
     n_skipped, n_cancelled, retry_of FROM runs WHERE id = $1 FOR UPDATE";

const INSERT_RUN: &str = "INSERT INTO runs (id, job, triggered_by, scheduled_at, channels, provider, \
     body, subject, created_at, retry_of) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (id) DO NOTHING";

const UPDATE_RUN: &str = "UPDATE runs SET started_at = $2, finished_at = $3, planned_all = $4, \
     cancelled = $5, removed = $6, next_seq = $7, n_queued = $8, n_sending = $9, n_sent = $10, \
     n_delivered = $11, n_undelivered = $12, n_failed = $13, n_expired = $14, n_unknown = $15, \
     n_skipped = $16, n_cancelled = $17 WHERE id = $1";

const SELECT_MESSAGES_FOR_UPDATE: &str = "SELECT run_id, seq, recipient_kind, recipient_id, address, \
     channel, provider, type, subject, body, encoding, parts, state, reason, attempts, \
     provider_message_id, error_code, error_text, created_at, updated_at, transitions, failovers, \
     location, partner, category, billing_type, recipient_status, html, route, worker FROM messages \
     WHERE (run_id, seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[])) \
     ORDER BY run_id, seq FOR UPDATE";

const INSERT_MESSAGES: &str = "INSERT INTO messages (run_id, seq, recipient_kind, recipient_id, \
     address, channel, provider, type, subject, body, encoding, parts, state, reason, attempts, \
     provider_message_id, error_code, error_text, created_at, updated_at, dedup_id, transitions, \
     failovers, location, partner, category, billing_type, recipient_status, html, route, \
     worker) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], \
     $13::text[], $14::text[], $15::bigint[], $16::text[], $17::text[], $18::text[], \
     $19::bigint[], $20::bigint[], $21::bigint[], $22::text[], $23::text[], $24::text[], \
     $25::text[], $26::text[], $27::text[], $28::text[], $29::text[], $30::text[], $31::text[])";

const UPDATE_MESSAGES: &str = "UPDATE messages AS m SET provider = u.provider, state = u.state, \
     reason = u.reason, attempts = u.attempts, provider_message_id = u.provider_message_id, \
     error_code = u.error_code, error_text = u.error_text, updated_at = u.updated_at, \
     transitions = u.transitions, failovers = u.failovers, worker = u.worker \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
     $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], $13::text[]) \
     AS u(run_id, seq, provider, state, reason, attempts, provider_message_id, error_code, \
     error_text, updated_at, transitions, failovers, worker) \
     WHERE m.run_id = u.run_id AND m.seq = u.seq";

const DELETE_MESSAGES: &str = "DELETE FROM messages WHERE (run_id, seq) IN \
     (SELECT run_id, seq FROM messages WHERE run_id = $1 LIMIT $2) RETURNING state";

/// Recorders a run uses at once ([`HistoryStore::writers`]). 300,000 messages through
/// the `file` provider, two runs each, side by side: one recorder 31.5 / 31.0 s, two
/// 24.8 / 24.8 s, three 26.1 / 26.3 s (against 26.5 / 25.5 s for two in that pairing).
const WRITERS: usize = 2;

/// Rows per cursor fetch of [`PgHistory::stream_messages`].
const FETCH_EXPORT: &str = "FETCH 2048 FROM export";

fn boxed<T: ToSql + Sync + Send + 'static>(v: T) -> Owned {
    Box::new(v)
}

impl Tx for PgTx<'_> {
    fn run(&mut self, id: RunId) -> Result<Option<StoredRun>, HistoryError> {
        let rows = self.query(
            "read a run",
            SELECT_RUN_FOR_UPDATE,
            vec![boxed(id.to_string())],
        )?;
        rows.into_iter()
            .next()
            .map(|r| sql::stored_run_from_row(&PgRow(r)))
            .transpose()
    }

    fn insert_run(&mut self, stored: &StoredRun) -> Result<bool, HistoryError> {
        let run = &stored.run;
        let scheduled_at = match run.trigger {
            Trigger::Schedule { at } => Some(at),
            _ => None,
        };
        let inserted = self.execute(
            "record a run",
            INSERT_RUN,
            vec![
                boxed(run.id.to_string()),
                boxed(run.job.clone()),
                boxed(sql::trigger_label(&run.trigger).to_string()),
                boxed(scheduled_at),
                boxed(sql::channels_text(&run.channels)),
                boxed(run.provider.clone()),
                boxed(run.body.clone()),
                boxed(run.subject.clone()),
                boxed(run.created_at),
                boxed(run.retry_of.map(|r| r.to_string())),
            ],
        )? == 1;
        if inserted {
            self.update_run(stored)?;
        }
        Ok(inserted)
    }

    fn update_run(&mut self, stored: &StoredRun) -> Result<(), HistoryError> {
        let run = &stored.run;
        let mut params = vec![
            boxed(run.id.to_string()),
            boxed(run.started_at),
            boxed(run.finished_at),
            boxed(run.planned_all),
            boxed(run.cancelled),
            boxed(run.removed),
            boxed(stored.next_seq as i64),
        ];
        params.extend(run.counters.0.iter().map(|n| boxed(*n as i64)));
        self.execute("update a run", UPDATE_RUN, params).map(drop)
    }

    fn delete_run(&mut self, id: RunId) -> Result<(), HistoryError> {
        self.execute(
            "delete a run",
            "DELETE FROM runs WHERE id = $1",
            vec![boxed(id.to_string())],
        )
        .map(drop)
    }

    fn counter(&mut self, name: &str) -> Result<Option<i64>, HistoryError> {
        let rows = self.query(
            "read a counter",
            "SELECT value FROM counters WHERE name = $1 FOR UPDATE",
            vec![boxed(name.to_string())],
        )?;
        rows.first()
            .map(|r| r.try_get(0).map_err(decode_error))
            .transpose()
    }

    fn set_counter(&mut self, name: &str, value: i64) -> Result<(), HistoryError> {
        self.execute(
            "write a counter",
            "INSERT INTO counters (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            vec![boxed(name.to_string()), boxed(value)],
        )
        .map(drop)
    }

    fn messages(&mut self, ids: &[MessageId]) -> Result<Vec<Message>, HistoryError> {
        let runs: Vec<String> = ids.iter().map(|id| id.run.to_string()).collect();
        let seqs: Vec<i64> = ids.iter().map(|id| id.seq as i64).collect();
        self.query(
            "read messages",
            SELECT_MESSAGES_FOR_UPDATE,
            vec![boxed(runs), boxed(seqs)],
        )?
        .into_iter()
        .map(|r| sql::message_from_row(&PgRow(r)))
        .collect()
    }

    fn insert_messages(&mut self, messages: &[(Message, u32)]) -> Result<(), HistoryError> {
        if messages.is_empty() {
            return Ok(());
        }
        let col = |f: &dyn Fn(&Message, u32) -> Option<String>| -> Owned {
            boxed(messages.iter().map(|(m, d)| f(m, *d)).collect::<Vec<_>>())
        };
        let int = |f: &dyn Fn(&Message, u32) -> i64| -> Owned {
            boxed(messages.iter().map(|(m, d)| f(m, *d)).collect::<Vec<_>>())
        };
        let params = vec![
            col(&|m, _| Some(m.id.run.to_string())),
            int(&|m, _| m.id.seq as i64),
            col(&|m, _| Some(m.recipient_kind.as_str().into())),
            int(&|m, _| m.recipient_id as i64),
            col(&|m, _| Some(m.address.clone())),
            col(&|m, _| Some(m.channel.as_str().into())),
            col(&|m, _| Some(m.provider.clone())),
            col(&|m, _| Some(m.kind.as_str().into())),
            col(&|m, _| m.subject.clone()),
            col(&|m, _| Some(m.body.clone())),
            col(&|m, _| m.encoding.clone()),
            int(&|m, _| m.parts as i64),
            col(&|m, _| Some(m.state.as_str().into())),
            col(&|m, _| m.reason.clone()),
            int(&|m, _| m.attempts as i64),
            col(&|m, _| m.provider_message_id.clone()),
            col(&|m, _| m.error_code.clone()),
            col(&|m, _| m.error_text.clone()),
            int(&|m, _| m.created_at),
            int(&|m, _| m.updated_at),
            int(&|_, d| d as i64),
            col(&|m, _| Some(sql::transitions_json(m))),
            col(&|m, _| sql::failovers_json(m)),
            col(&|m, _| m.snapshot.location.clone()),
            col(&|m, _| m.snapshot.partner.clone()),
            col(&|m, _| m.snapshot.category.clone()),
            col(&|m, _| m.snapshot.billing_type.clone()),
            col(&|m, _| m.snapshot.status.clone()),
            col(&|m, _| m.html.clone()),
            col(&|m, _| sql::route_text(m)),
            col(&|m, _| m.worker.clone()),
        ];
        self.execute("plan messages", INSERT_MESSAGES, params)
            .map(drop)
    }

    fn update_messages(&mut self, messages: &[&Message]) -> Result<(), HistoryError> {
        if messages.is_empty() {
            return Ok(());
        }
        let col = |f: &dyn Fn(&Message) -> Option<String>| -> Owned {
            boxed(messages.iter().map(|m| f(m)).collect::<Vec<_>>())
        };
        let int = |f: &dyn Fn(&Message) -> i64| -> Owned {
            boxed(messages.iter().map(|m| f(m)).collect::<Vec<_>>())
        };
        let params = vec![
            col(&|m| Some(m.id.run.to_string())),
            int(&|m| m.id.seq as i64),
            col(&|m| Some(m.provider.clone())),
            col(&|m| Some(m.state.as_str().into())),
            col(&|m| m.reason.clone()),
            int(&|m| m.attempts as i64),
            col(&|m| m.provider_message_id.clone()),
            col(&|m| m.error_code.clone()),
            col(&|m| m.error_text.clone()),
            int(&|m| m.updated_at),
            col(&|m| Some(sql::transitions_json(m))),
            col(&|m| sql::failovers_json(m)),
            col(&|m| m.worker.clone()),
        ];
        self.execute("record message changes", UPDATE_MESSAGES, params)
            .map(drop)
    }

    fn delete_messages(
        &mut self,
        run: RunId,
        limit: usize,
    ) -> Result<Vec<MessageState>, HistoryError> {
        self.query(
            "delete messages",
            DELETE_MESSAGES,
            vec![boxed(run.to_string()), boxed(limit as i64)],
        )?
        .iter()
        .map(|r| {
            let s: String = r.try_get(0).map_err(decode_error)?;
            s.parse().map_err(|e: String| HistoryError::Decode {
                key: run.to_string(),
                detail: e,
            })
        })
        .collect()
    }
}

impl HistoryStore for PgHistory {
    fn writers(&self) -> usize {
        WRITERS
    }

    fn write(&self, body: &mut TxBody<'_>) -> Result<(), LedgerError> {
        let client = self.pg.checkout("begin a transaction")?;
        let mut tx = PgTx {
            pg: &self.pg,
            client,
        };
        tx.batch("begin a transaction", "BEGIN")?;
        match body(&mut tx) {
            Ok(()) => {
                tx.batch("commit", "COMMIT")?;
                Ok(())
            }
            Err(e) => {
                // A lost connection rolls back by itself; otherwise say so explicitly
                // before the connection goes back to the pool.
                let _ = tx.batch("roll back", "ROLLBACK");
                Err(e)
            }
        }
    }

    fn select_runs(&self, select: &Select) -> Result<Vec<crate::history::Run>, HistoryError> {
        self.rows("read runs", select)?
            .iter()
            .map(|r| sql::stored_run_from_row(r).map(|s| s.run))
            .collect()
    }

    fn select_messages(&self, select: &Select) -> Result<Vec<Message>, HistoryError> {
        self.rows("read messages", select)?
            .iter()
            .map(|r| sql::message_from_row(r))
            .collect()
    }

    /// One query on a connection of its own, read through a cursor (which PostgreSQL
    /// plans for the first rows: the index scan the pages use, not a sort of the whole
    /// table), its rows handed over in batches through a bounded channel and decoded by
    /// the caller's thread as it reads them: the server producing rows, the runtime
    /// fetching them and the caller decoding and writing overlap, and memory stays at a
    /// few batches. One read-only transaction: one snapshot.
    fn stream_messages(&self, select: &Select) -> Option<super::MessageStream<'_>> {
        const WHAT: &str = "read messages";
        let declare = format!(
            "DECLARE export NO SCROLL CURSOR FOR {}",
            numbered(&select.sql)
        );
        let params = owned_params(&select.params);
        let client = match self.pg.checkout(WHAT) {
            Ok(c) => c,
            Err(e) => return Some(Box::new(std::iter::once(Err(history_error(e))))),
        };
        // The rows are decoded by the reader's thread, not here: so the runtime asks for
        // the next batch while the reader decodes and writes this one, and the server
        // produces rows meanwhile.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Vec<tokio_postgres::Row>, HistoryError>>(4);
        let pg = self.pg.clone();
        self.pg.spawn(async move {
            let failed = |e| history_error(pg.query_error(WHAT, e));
            let produced: Result<(), HistoryError> = async {
                let refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                client
                    .batch_execute("BEGIN READ ONLY")
                    .await
                    .map_err(failed)?;
                client.execute(&declare, &refs).await.map_err(failed)?;
                let fetch = client.prepare(FETCH_EXPORT).await.map_err(failed)?;
                loop {
                    let rows = client.query(&fetch, &[]).await.map_err(failed)?;
                    if rows.is_empty() {
                        return Ok(());
                    }
                    if tx.send(Ok(rows)).await.is_err() {
                        return Ok(()); // The reader stopped.
                    }
                }
            }
            .await;
            // Whatever happened, the connection goes back to the pool outside a transaction.
            let _ = client.batch_execute("ROLLBACK").await;
            if let Err(e) = produced {
                let _ = tx.send(Err(e)).await;
            }
        });
        let mut rx = rx;
        let mut current = Vec::new().into_iter();
        Some(Box::new(std::iter::from_fn(move || {
            loop {
                if let Some(row) = current.next() {
                    return Some(sql::message_from_row(&PgRow(row)));
                }
                match rx.blocking_recv()? {
                    Ok(batch) => current = batch.into_iter(),
                    Err(e) => return Some(Err(e)),
                }
            }
        })))
    }

    fn select_ints(&self, select: &Select) -> Result<Vec<(String, i64)>, HistoryError> {
        self.rows("count", select)?
            .iter()
            .map(|r| Ok((r.text(0)?.unwrap_or_default(), r.int(1)?.unwrap_or(0))))
            .collect()
    }

    fn dedup_id(&self, id: MessageId) -> Result<Option<u32>, HistoryError> {
        let rows = self.rows(
            "read a deduplication id",
            &Select {
                sql: "SELECT 'dedup', dedup_id FROM messages WHERE run_id = ? AND seq = ?".into(),
                params: vec![Param::Text(id.run.to_string()), Param::Int(id.seq as i64)],
            },
        )?;
        rows.first()
            .map(|r| r.int(1).map(|d| d.map(|d| d as u32)))
            .transpose()
            .map(Option::flatten)
    }

    fn inbox_put(&self, customer: u64, item: &InboxItem) -> Result<(), HistoryError> {
        let item = item.clone();
        self.pg
            .call("deliver to the portal inbox", move |client| async move {
                client
                    .execute(
                        "INSERT INTO inbox (customer_id, message_id, title, body, created_at, read_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer_id, message_id) \
                         DO UPDATE SET title = excluded.title, body = excluded.body, \
                         created_at = excluded.created_at, read_at = excluded.read_at",
                        &[
                            &(customer as i64),
                            &item.id,
                            &item.title,
                            &item.body,
                            &item.created_at,
                            &item.read_at,
                        ],
                    )
                    .await
            })
            .map(drop)
            .map_err(history_error)
    }

    fn inbox_list(&self, customer: u64) -> Result<Vec<InboxItem>, HistoryError> {
        let rows = self
            .pg
            .call("read the portal inbox", move |client| async move {
                client
                    .query(
                        "SELECT message_id, title, body, created_at, read_at FROM inbox \
                         WHERE customer_id = $1 ORDER BY message_id",
                        &[&(customer as i64)],
                    )
                    .await
            })
            .map_err(history_error)?;
        rows.iter()
            .map(|r| {
                Ok(InboxItem {
                    id: r.try_get(0).map_err(decode_error)?,
                    title: r.try_get(1).map_err(decode_error)?,
                    body: r.try_get(2).map_err(decode_error)?,
                    created_at: r.try_get(3).map_err(decode_error)?,
                    read_at: r.try_get(4).map_err(decode_error)?,
                })
            })
            .collect()
    }

    fn inbox_mark_read(
        &self,
        customer: u64,
        message: &str,
        at: Millis,
    ) -> Result<bool, HistoryError> {
        let message = message.to_string();
        self.pg
            .call("mark an inbox message read", move |client| async move {
                client
                    .execute(
                        "UPDATE inbox SET read_at = COALESCE(read_at, $3) \
                         WHERE customer_id = $1 AND message_id = $2",
                        &[&(customer as i64), &message, &at],
                    )
                    .await
            })
            .map(|n| n > 0)
            .map_err(history_error)
    }

    fn place(&self) -> String {
        format!(
            "PostgreSQL at {} (schema {})",
            self.pg.server(),
            self.pg.schema()
        )
    }

    fn ping(&self) -> Result<(), HistoryError> {
        self.pg
            .call("ping", |client| async move {
                client.batch_execute("SELECT 1").await
            })
            .map_err(history_error)
    }

    fn check(&self) -> Result<(), HistoryError> {
        Ok(())
    }
}
