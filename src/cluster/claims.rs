//! Claims: every worker takes a run's queued messages in batches and sends them.
//!
//! A claim marks up to a batch of a run's queued messages that nobody holds with the
//! claiming worker's id (`messages.worker`), in one statement: `FOR UPDATE SKIP LOCKED`
//! inside a materialized CTE, so two workers claiming at once take different messages
//! and neither waits for the other, then `UPDATE … RETURNING` the rows the worker needs
//! to send them. A claim walks the run in `seq` order from a cursor (`seq > last`), so it
//! stays an index scan of `messages_pending` however many messages earlier claims took.
//!
//! A held message is sent only by its holder: the ledger refuses a change that names a
//! worker other than the one holding the message (see `Change::worker`), so a worker
//! that was declared dead and woke up again sends none of what it held. What a worker
//! holds and does not send (a pause, a shutdown) it hands back with [`Cluster::release`];
//! what a dead worker held the leader takes back ([`Cluster::orphans`], then
//! `engine::send::sweep`).
//!
//! One run of a job at a time, across workers: the starting worker takes the job's row
//! in `job_runs` ([`Cluster::lock_job`]) before it creates the run, and gives it up when
//! the run ends or pauses. Runs with a row there are the ones being sent: other workers
//! join them ([`Cluster::runs_to_join`]).

use std::sync::Arc;

use tokio_postgres::types::ToSql;

use super::Cluster;
use crate::history::store::HistoryError;
use crate::history::store::postgres::{PgRow, history_error};
use crate::history::store::sql::{self, MESSAGE_COLUMNS};
use crate::history::{Message, MessageState, RunId};

/// A message claimed to send, with its BulkSMS deduplication id.
pub type Claimed = (Message, u32);

/// Workers that count as alive: registered, not declared dead or stopped.
const ALIVE: &str = "SELECT id FROM workers WHERE state = 'alive'";

impl Cluster {
    /// Claims for `worker` up to `limit` of `run`'s queued messages that nobody holds,
    /// after `after` in plan order (from the start without it), in plan order.
    pub fn claim(
        &self,
        run: RunId,
        worker: &str,
        after: Option<u32>,
        limit: usize,
    ) -> Result<Vec<Claimed>, HistoryError> {
        let returning = MESSAGE_COLUMNS
            .split(',')
            .map(|c| format!("m.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let statement = format!(
            "WITH c AS MATERIALIZED (SELECT run_id, seq FROM messages \
             WHERE run_id = $1 AND state = 'queued' AND worker IS NULL AND seq > $2 \
             ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE messages m SET worker = $4 FROM c \
             WHERE m.run_id = c.run_id AND m.seq = c.seq \
             RETURNING {returning}, m.dedup_id"
        );
        let params: (String, i64, i64, String) = (
            run.to_string(),
            after.map_or(-1, i64::from),
            limit as i64,
            worker.to_string(),
        );
        let rows = self
            .pg
            .call("claim messages", move |client| async move {
                let stmt = client.prepare_cached(&statement).await?;
                client
                    .query(&stmt, &[&params.0, &params.1, &params.2, &params.3])
                    .await
            })
            .map_err(history_error)?;
        let mut claimed = rows
            .into_iter()
            .map(|row| {
                let dedup: i64 =
                    row.try_get(sql::MESSAGE_COLUMN_COUNT)
                        .map_err(|e| HistoryError::Decode {
                            key: "dedup_id".into(),
                            detail: e.to_string(),
                        })?;
                Ok((sql::message_from_row(&PgRow(row))?, dedup as u32))
            })
            .collect::<Result<Vec<Claimed>, HistoryError>>()?;
        claimed.sort_by_key(|(m, _)| m.id.seq);
        Ok(claimed)
    }

    /// Hands back what `worker` holds and has not started sending (of `run`, or of every
    /// run): nobody holds those messages any more, any worker may claim them. Returns how
    /// many.
    pub fn release(&self, worker: &str, run: Option<RunId>) -> Result<u64, HistoryError> {
        let worker = worker.to_string();
        let run = run.map(|r| r.to_string());
        self.pg
            .call("hand back claimed messages", move |client| async move {
                let n = match run {
                    Some(run) => {
                        client
                            .execute(
                                "UPDATE messages SET worker = NULL WHERE run_id = $1 \
                                 AND state = 'queued' AND worker = $2",
                                &[&run, &worker],
                            )
                            .await?
                    }
                    None => {
                        client
                            .execute(
                                "UPDATE messages SET worker = NULL WHERE state = 'queued' \
                                 AND worker = $1 AND run_id IN \
                                 (SELECT id FROM runs WHERE finished_at IS NULL)",
                                &[&worker],
                            )
                            .await?
                    }
                };
                Ok(n)
            })
            .map_err(history_error)
    }

    /// Holders of unfinished runs' queued or sending messages that are not alive
    /// (declared dead, stopped, or never registered), other than `me`: what they hold
    /// is nobody's.
    pub fn orphans(&self, me: &str) -> Result<Vec<String>, HistoryError> {
        let statement = format!(
            "SELECT DISTINCT m.worker FROM runs r JOIN messages m ON m.run_id = r.id \
             WHERE r.finished_at IS NULL AND m.state IN ('queued', 'sending') \
             AND m.worker IS NOT NULL AND m.worker <> $1 AND m.worker NOT IN ({ALIVE})"
        );
        self.strings("find orphaned claims", statement, vec![me.to_string()])
    }

    /// The messages of unfinished runs that `worker` holds in `state`, up to `limit`.
    pub fn held(
        &self,
        worker: &str,
        state: MessageState,
        limit: usize,
    ) -> Result<Vec<Message>, HistoryError> {
        let statement = format!(
            "SELECT {} FROM runs r JOIN messages m ON m.run_id = r.id \
             WHERE r.finished_at IS NULL AND m.state = '{}' AND m.worker = $1 \
             ORDER BY m.run_id, m.seq LIMIT $2",
            MESSAGE_COLUMNS
                .split(',')
                .map(|c| format!("m.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", "),
            state.as_str()
        );
        let worker = worker.to_string();
        let rows = self
            .pg
            .call("read held messages", move |client| async move {
                client.query(&statement, &[&worker, &(limit as i64)]).await
            })
            .map_err(history_error)?;
        rows.into_iter()
            .map(|r| sql::message_from_row(&PgRow(r)))
            .collect()
    }

    /// Takes job `job` for run `run` (one run of a job at a time, across workers): `Ok`
    /// when taken (or already this run's), otherwise the run that holds the job and the
    /// worker that started it.
    pub fn lock_job(
        &self,
        job: &str,
        run: RunId,
        worker: &str,
    ) -> Result<Result<(), (RunId, String)>, HistoryError> {
        let statement = format!(
            "INSERT INTO job_runs AS j (job, run_id, worker, started_at) \
             VALUES ($1, $2, $3, {now}) ON CONFLICT (job) DO UPDATE \
             SET run_id = excluded.run_id, worker = excluded.worker, started_at = excluded.started_at \
             WHERE j.run_id = excluded.run_id OR NOT EXISTS (SELECT 1 FROM runs r \
             WHERE r.id = j.run_id AND r.finished_at IS NULL AND NOT r.cancelled) \
             RETURNING run_id",
            now = super::DB_NOW_MS
        );
        let (job, run_text, worker) = (job.to_string(), run.to_string(), worker.to_string());
        let holder = self
            .pg
            .call("take the job", move |client| async move {
                if !client
                    .query(&statement, &[&job, &run_text, &worker])
                    .await?
                    .is_empty()
                {
                    return Ok(None);
                }
                let row = client
                    .query_opt(
                        "SELECT run_id, worker FROM job_runs WHERE job = $1",
                        &[&job],
                    )
                    .await?;
                Ok(row.map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))))
            })
            .map_err(history_error)?;
        Ok(match holder {
            None => Ok(()),
            Some((run, worker)) => Err((
                run.parse().map_err(|e: String| HistoryError::Decode {
                    key: "job_runs.run_id".into(),
                    detail: e,
                })?,
                worker,
            )),
        })
    }

    /// Gives up job `job` if run `run` holds it.
    pub fn unlock_job(&self, job: &str, run: RunId) -> Result<(), HistoryError> {
        let (job, run) = (job.to_string(), run.to_string());
        self.pg
            .call("give up the job", move |client| async move {
                client
                    .execute(
                        "DELETE FROM job_runs WHERE job = $1 AND run_id = $2",
                        &[&job, &run],
                    )
                    .await
            })
            .map(drop)
            .map_err(history_error)
    }

    /// The run holding job `job` and the worker that started it, if one does.
    pub fn job_holder(&self, job: &str) -> Result<Option<(RunId, String)>, HistoryError> {
        let job = job.to_string();
        let row = self
            .pg
            .call("read the job's run", move |client| async move {
                client
                    .query_opt(
                        "SELECT j.run_id, j.worker FROM job_runs j JOIN runs r ON r.id = j.run_id \
                         WHERE j.job = $1 AND r.finished_at IS NULL AND NOT r.cancelled",
                        &[&job],
                    )
                    .await
            })
            .map_err(history_error)?;
        row.map(|r| {
            let run: String = r.get(0);
            run.parse()
                .map(|run| (run, r.get::<_, String>(1)))
                .map_err(|e: String| HistoryError::Decode {
                    key: "job_runs.run_id".into(),
                    detail: e,
                })
        })
        .transpose()
    }

    /// Runs being sent (a job holds them) with queued messages nobody holds: `(run, job,
    /// the worker that started it)`.
    pub fn runs_to_join(&self) -> Result<Vec<(RunId, String, String)>, HistoryError> {
        self.job_runs(
            "SELECT j.run_id, j.job, j.worker FROM job_runs j JOIN runs r ON r.id = j.run_id \
             WHERE r.finished_at IS NULL AND NOT r.cancelled AND EXISTS (SELECT 1 FROM messages m \
             WHERE m.run_id = j.run_id AND m.state = 'queued' AND m.worker IS NULL)"
                .into(),
            None,
        )
    }

    /// Runs being sent whose starting worker is not alive (and not `me`): `(run, job,
    /// worker)`. The leader resumes them (planning what is left, finishing them).
    pub fn abandoned_runs(&self, me: &str) -> Result<Vec<(RunId, String, String)>, HistoryError> {
        self.job_runs(
            format!(
                "SELECT j.run_id, j.job, j.worker FROM job_runs j JOIN runs r ON r.id = j.run_id \
                 WHERE r.finished_at IS NULL AND NOT r.cancelled AND j.worker <> $1 \
                 AND j.worker NOT IN ({ALIVE})"
            ),
            Some(me.to_string()),
        )
    }

    fn job_runs(
        &self,
        statement: String,
        me: Option<String>,
    ) -> Result<Vec<(RunId, String, String)>, HistoryError> {
        let rows = self
            .pg
            .call("read the runs being sent", move |client| async move {
                match &me {
                    Some(me) => client.query(&statement, &[me]).await,
                    None => client.query(&statement, &[]).await,
                }
            })
            .map_err(history_error)?;
        rows.into_iter()
            .map(|r| {
                let run: String = r.get(0);
                let run = run.parse().map_err(|e: String| HistoryError::Decode {
                    key: "job_runs.run_id".into(),
                    detail: e,
                })?;
                Ok((run, r.get(1), r.get(2)))
            })
            .collect()
    }

    fn strings(
        &self,
        what: &'static str,
        statement: String,
        params: Vec<String>,
    ) -> Result<Vec<String>, HistoryError> {
        let rows = self
            .pg
            .call(what, move |client| async move {
                let refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                client.query(&statement, &refs).await
            })
            .map_err(history_error)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }
}

/// The identity a process claims messages under, and whether it may still send.
#[derive(Debug, Clone)]
pub struct Holder {
    pub id: Arc<str>,
    /// Set when this process's worker row was taken over (declared dead): it sends no
    /// more, whatever it holds.
    pub fenced: Arc<std::sync::atomic::AtomicBool>,
}

impl Holder {
    pub fn new(id: &str) -> Holder {
        Holder {
            id: Arc::from(id),
            fenced: Arc::default(),
        }
    }

    pub fn fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Cluster {
    /// How many of `run`'s queued or sending messages someone other than `worker` holds
    /// (or nobody does).
    pub fn pending_elsewhere(&self, run: RunId, worker: &str) -> Result<u64, HistoryError> {
        let (run, worker) = (run.to_string(), worker.to_string());
        self.pg
            .call(
                "count the run's pending messages",
                move |client| async move {
                    let row = client
                        .query_one(
                            "SELECT count(*) FROM messages WHERE run_id = $1 \
                         AND state IN ('queued', 'sending') AND worker IS DISTINCT FROM $2",
                            &[&run, &worker],
                        )
                        .await?;
                    Ok(row.get::<_, i64>(0) as u64)
                },
            )
            .map_err(history_error)
    }
}

impl Cluster {
    /// Whether a worker other than `me` could help with a run: a daemon (`crier run`)
    /// registered alive. Without one, the run's starter plans its messages as its own.
    pub fn helpers(&self, me: &str) -> Result<bool, HistoryError> {
        self.exists(
            "look for workers",
            "SELECT EXISTS (SELECT 1 FROM workers WHERE state = 'alive' AND role = 'run' \
             AND id <> $1)",
            me,
        )
    }

    /// The answer of a `SELECT EXISTS (…)` on one text parameter.
    fn exists(
        &self,
        what: &'static str,
        statement: &'static str,
        param: &str,
    ) -> Result<bool, HistoryError> {
        let param = param.to_string();
        self.pg
            .call(what, move |client| async move {
                let row = client.query_one(statement, &[&param]).await?;
                Ok(row.get::<_, bool>(0))
            })
            .map_err(history_error)
    }
}

/// This process's default worker id: `host-pid`.
pub fn default_worker_id() -> String {
    format!("{}-{}", super::members::hostname(), std::process::id())
}

impl Cluster {
    /// Is `worker` registered and alive?
    pub fn is_alive(&self, worker: &str) -> Result<bool, HistoryError> {
        self.exists(
            "read a worker",
            "SELECT EXISTS (SELECT 1 FROM workers WHERE id = $1 AND state = 'alive')",
            worker,
        )
    }
}
