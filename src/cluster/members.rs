//! Who the workers are: each `crier` process on the database registers a row in
//! `workers` and heartbeats it; one of them holds the `scheduler` lease in `leases`.
//!
//! The lease is River's `river_leader` pattern: one `INSERT … ON CONFLICT DO UPDATE`
//! that takes the row when it has expired or renews it when we already hold it, so
//! taking and renewing are the same statement and two workers can never both win it at
//! one moment of the database's clock. Every time is the database's
//! ([`super::DB_NOW_MS`]), so the hosts' clocks need not agree; a worker's own belief
//! that it leads is bounded by its monotonic clock from the moment it asked, so a
//! worker cut off from the database stops believing it leads within the lease, even
//! while its query hangs.
//!
//! A worker is told apart from a later process with the same id by its incarnation:
//! host, pid and the `started_at` its registration got. A heartbeat that finds the row
//! no longer its own (declared dead, or registered again by another process) fences the
//! worker: [`Worker::fenced`] stays set until the owner has stopped what it was sending
//! and calls [`Worker::unfence`].
//!
//! The leader declares dead every worker silent for longer than the lease, and at once
//! any worker of its own host whose process is gone (a restart on the same host needs
//! no lease wait), and hands their ids to the owner's `on_dead` (the message sweep).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

use super::{Cluster, DB_NOW_MS};
use crate::store::{PgError, StoreError};

/// The name of the lease whose holder fires the schedule.
pub const SCHEDULER_LEASE: &str = "scheduler";

/// How long rows of stopped and dead workers are kept for `crier workers`.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often the leader forgets old rows.
const FORGET_EVERY: Duration = Duration::from_secs(300);

/// What went wrong coordinating with the other workers. No variant carries a secret.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error(
        "worker id `{id}` is in use by a live worker on host {host}, pid {pid}, heartbeat {age} ago: give this one another --worker-id"
    )]
    InUse {
        id: String,
        host: String,
        pid: i64,
        age: String,
    },
    #[error("cannot start the heartbeat thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PgError> for ClusterError {
    fn from(e: PgError) -> ClusterError {
        ClusterError::Store(e.into())
    }
}

/// What a worker process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `crier run`: fires the schedule (when it leads) and sends.
    Run,
    /// `crier send`: sends one run.
    Send,
    /// `crier serve`: the HTTP server.
    Serve,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Run => "run",
            Role::Send => "send",
            Role::Serve => "serve",
        }
    }
}

/// Who this process is, as its `workers` row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// `--worker-id`, default `HOSTNAME-PID`.
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub role: Role,
    /// crier's version.
    pub version: String,
}

impl WorkerInfo {
    /// This process: `id` or `HOSTNAME-PID`.
    pub fn here(id: Option<String>, role: Role) -> WorkerInfo {
        let host = hostname();
        let pid = std::process::id();
        WorkerInfo {
            id: id.unwrap_or_else(|| format!("{host}-{pid}")),
            host,
            pid,
            role,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The host's name (the kernel's, as `hostname` prints it).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// Is process `pid` running on this host?
fn process_exists(pid: i64) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// One registration of a worker: its id and the incarnation that owns the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// The database's clock when it registered (ms): tells it apart from a later process
    /// on the same host with the same id and pid.
    pub started_at: i64,
}

/// Heartbeat and lease timing, from `cluster:` in `crier.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leases {
    /// How often a worker heartbeats (and the leader renews its lease).
    pub heartbeat: Duration,
    /// How long a silent worker stays alive, and how long the scheduler lease lasts.
    pub lease: Duration,
    /// Whether this worker competes for the scheduler lease (`crier run` only).
    pub lead: bool,
}

impl Default for Leases {
    fn default() -> Leases {
        Leases {
            heartbeat: DEFAULT_HEARTBEAT,
            lease: DEFAULT_LEASE,
            lead: false,
        }
    }
}

/// Default of `cluster.heartbeat`.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);
/// Default of `cluster.lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

impl Serialize for Leases {
    /// As `crier.yaml` writes it (`config show`).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Leases", 2)?;
        st.serialize_field(
            "heartbeat",
            &humantime::format_duration(self.heartbeat).to_string(),
        )?;
        st.serialize_field("lease", &humantime::format_duration(self.lease).to_string())?;
        st.end()
    }
}

/// A worker as `crier workers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub role: String,
    pub version: String,
    /// Unix ms of the database's clock.
    pub started_at: i64,
    /// Since its last heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
    /// alive | stopped | dead
    pub state: String,
    /// Holds the scheduler lease, unexpired.
    pub leader: bool,
    /// Messages of unfinished runs it has claimed (`queued`, held by it).
    pub claimed: i64,
    /// Messages of unfinished runs it is sending (`sending`, held by it).
    pub sending: i64,
}

/// The scheduler lease as the database has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub holder: String,
    /// Negative once expired (nobody has taken it since).
    pub expires_in_ms: i64,
}

const REGISTER: &str = "
INSERT INTO workers (id, host, pid, role, version, started_at, heartbeat_at, state)
SELECT $1::text, $2::text, $3::bigint, $4::text, $5::text, now.ms, now.ms, 'alive'
FROM (SELECT {NOW} AS ms) now
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, role = excluded.role,
    version = excluded.version, started_at = excluded.started_at,
    heartbeat_at = excluded.heartbeat_at, state = 'alive'
WHERE workers.state <> 'alive' OR workers.heartbeat_at < excluded.heartbeat_at - $6::bigint
RETURNING started_at";

const HOLDER: &str =
    "SELECT host, pid, {NOW} - heartbeat_at, state = 'alive' FROM workers WHERE id = $1";

const HEARTBEAT: &str = "
UPDATE workers SET heartbeat_at = {NOW}
WHERE id = $1 AND host = $2 AND pid = $3 AND started_at = $4 AND state = 'alive'";

const RETIRE: &str = "
WITH retired AS (
    UPDATE workers SET state = 'stopped', heartbeat_at = {NOW}
    WHERE id = $1 AND host = $2 AND pid = $3 AND started_at = $4
    RETURNING id
)
DELETE FROM leases WHERE holder IN (SELECT id FROM retired)";

const LEAD: &str = "
INSERT INTO leases (name, holder, expires_at)
SELECT $1::text, $2::text, now.ms + $3::bigint FROM (SELECT {NOW} AS ms) now
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leases.expires_at < excluded.expires_at - $3::bigint OR leases.holder = excluded.holder
RETURNING holder";

const LEADER: &str = "SELECT holder, expires_at - {NOW} FROM leases WHERE name = $1";

const DECLARE_DEAD: &str = "
UPDATE workers SET state = 'dead'
WHERE state = 'alive' AND heartbeat_at < {NOW} - $1
RETURNING id";

const ALIVE_ON_HOST: &str = "SELECT id, pid FROM workers WHERE state = 'alive' AND host = $1";

const DEAD_BY_PID: &str = "
UPDATE workers SET state = 'dead'
FROM unnest($1::text[], $2::bigint[]) AS gone (id, pid)
WHERE workers.id = gone.id AND workers.pid = gone.pid AND workers.host = $3
  AND workers.state = 'alive'
RETURNING workers.id";

const FORGET: &str = "DELETE FROM workers WHERE state <> 'alive' AND heartbeat_at < {NOW} - $1";

const WORKERS: &str = "
SELECT w.id, w.host, w.pid, w.role, w.version, w.started_at, {NOW} - w.heartbeat_at, w.state,
       coalesce(l.holder = w.id AND l.expires_at > {NOW}, false)
FROM workers w LEFT JOIN leases l ON l.name = $1
ORDER BY w.state = 'alive' DESC, w.id";

const HELD: &str = "
SELECT worker, state, count(*) FROM messages
WHERE state IN ('queued', 'sending') AND worker IS NOT NULL
  AND run_id IN (SELECT id FROM runs WHERE finished_at IS NULL)
GROUP BY 1, 2";

/// `sql` with the database's clock in place of `{NOW}`.
fn sql(text: &str) -> String {
    text.replace("{NOW}", DB_NOW_MS)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `1.2 s` (a heartbeat age).
pub fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

impl Cluster {
    /// Registers `info` as alive; a row of that id that is alive and heartbeating within
    /// `lease` belongs to another process and is refused, unless that process is a
    /// previous one of this host that is gone.
    pub fn register(
        &self,
        info: &WorkerInfo,
        lease: Duration,
    ) -> Result<Registration, ClusterError> {
        for attempt in 0..2 {
            if let Some(started_at) = self.try_register(info, lease)? {
                return Ok(Registration {
                    id: info.id.clone(),
                    host: info.host.clone(),
                    pid: i64::from(info.pid),
                    started_at,
                });
            }
            let id = info.id.clone();
            let holder = sql(HOLDER);
            let found = self
                .pg
                .call("read the worker holding an id", move |c| async move {
                    let row = c.query_opt(&holder, &[&id]).await?;
                    Ok(row.map(|r| {
                        (
                            r.get::<_, String>(0),
                            r.get::<_, i64>(1),
                            r.get::<_, i64>(2),
                            r.get::<_, bool>(3),
                        )
                    }))
                })?;
            let Some((host, pid, age, alive)) = found else {
                continue; // Deleted meanwhile: try again.
            };
            // A previous process of this host that is gone (or whose pid this process
            // now has: a restarted container) holds it: take it over at once.
            let gone = host == info.host && (pid == i64::from(info.pid) || !process_exists(pid));
            if attempt == 0 && alive && gone {
                tracing::warn!(worker = %info.id, pid, "The previous process of this worker id on this host is gone: taking its row over.");
                self.mark_dead(&info.id, pid, &host)?;
                continue;
            }
            return Err(ClusterError::InUse {
                id: info.id.clone(),
                host,
                pid,
                age: seconds(age),
            });
        }
        Err(ClusterError::InUse {
            id: info.id.clone(),
            host: "(unknown)".into(),
            pid: 0,
            age: "(unknown)".into(),
        })
    }

    fn try_register(
        &self,
        info: &WorkerInfo,
        lease: Duration,
    ) -> Result<Option<i64>, ClusterError> {
        let (id, host, pid, role, version) = (
            info.id.clone(),
            info.host.clone(),
            i64::from(info.pid),
            info.role.as_str().to_string(),
            info.version.clone(),
        );
        let lease = ms(lease);
        let text = sql(REGISTER);
        Ok(self.pg.call("register the worker", move |c| async move {
            let row = c
                .query_opt(&text, &[&id, &host, &pid, &role, &version, &lease])
                .await?;
            Ok(row.map(|r| r.get::<_, i64>(0)))
        })?)
    }

    fn mark_dead(&self, id: &str, pid: i64, host: &str) -> Result<Vec<String>, ClusterError> {
        let (ids, pids, host) = (vec![id.to_string()], vec![pid], host.to_string());
        let text = DEAD_BY_PID.to_string();
        Ok(self.pg.call("declare a worker dead", move |c| async move {
            let rows = c.query(&text, &[&ids, &pids, &host]).await?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })?)
    }

    /// Heartbeats `reg`; false when its row was taken over (declared dead, or registered
    /// again by another process).
    pub fn heartbeat(&self, reg: &Registration) -> Result<bool, ClusterError> {
        let r = reg.clone();
        let text = sql(HEARTBEAT);
        Ok(self.pg.call("heartbeat", move |c| async move {
            let n = c
                .execute(&text, &[&r.id, &r.host, &r.pid, &r.started_at])
                .await?;
            Ok(n == 1)
        })?)
    }

    /// Marks `reg` stopped and gives up any lease it holds (a clean shutdown).
    pub fn retire(&self, reg: &Registration) -> Result<(), ClusterError> {
        let r = reg.clone();
        let text = sql(RETIRE);
        self.pg.call("retire the worker", move |c| async move {
            c.execute(&text, &[&r.id, &r.host, &r.pid, &r.started_at])
                .await
        })?;
        Ok(())
    }

    /// Takes or renews the scheduler lease for `lease`; true when `id` holds it.
    pub fn lead(&self, id: &str, lease: Duration) -> Result<bool, ClusterError> {
        let id = id.to_string();
        let lease = ms(lease);
        let text = sql(LEAD);
        Ok(self
            .pg
            .call("take the scheduler lease", move |c| async move {
                let row = c.query_opt(&text, &[&SCHEDULER_LEASE, &id, &lease]).await?;
                Ok(row.is_some_and(|r| r.get::<_, String>(0) == id))
            })?)
    }

    /// The scheduler lease's holder and how long it has left (negative: expired).
    pub fn leader(&self) -> Result<Option<Lease>, ClusterError> {
        let text = sql(LEADER);
        Ok(self
            .pg
            .call("read the scheduler lease", move |c| async move {
                let row = c.query_opt(&text, &[&SCHEDULER_LEASE]).await?;
                Ok(row.map(|r| Lease {
                    holder: r.get(0),
                    expires_in_ms: r.get(1),
                }))
            })?)
    }

    /// Workers alive but silent for longer than `lease` become dead; their ids.
    pub fn declare_dead(&self, lease: Duration) -> Result<Vec<String>, ClusterError> {
        let lease = ms(lease);
        let text = sql(DECLARE_DEAD);
        Ok(self
            .pg
            .call("declare silent workers dead", move |c| async move {
                let rows = c.query(&text, &[&lease]).await?;
                Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
            })?)
    }

    /// Workers of `host` (this one) alive in the table whose process is gone become dead
    /// at once; their ids.
    pub fn dead_on_this_host(&self, host: &str) -> Result<Vec<String>, ClusterError> {
        let text = ALIVE_ON_HOST.to_string();
        let h = host.to_string();
        let alive: Vec<(String, i64)> =
            self.pg
                .call("read this host's workers", move |c| async move {
                    let rows = c.query(&text, &[&h]).await?;
                    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
                })?;
        let (ids, pids): (Vec<String>, Vec<i64>) = alive
            .into_iter()
            .filter(|(_, pid)| !process_exists(*pid))
            .unzip();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let text = DEAD_BY_PID.to_string();
        let h = host.to_string();
        Ok(self
            .pg
            .call("declare gone workers dead", move |c| async move {
                let rows = c.query(&text, &[&ids, &pids, &h]).await?;
                Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
            })?)
    }

    /// Forgets workers stopped or dead for longer than `after`; how many.
    pub fn forget(&self, after: Duration) -> Result<u64, ClusterError> {
        let after = ms(after);
        let text = sql(FORGET);
        Ok(self.pg.call("forget old workers", move |c| async move {
            c.execute(&text, &[&after]).await
        })?)
    }

    /// Every worker the table holds, alive first, with the messages each holds.
    pub fn workers(&self) -> Result<Vec<WorkerRow>, ClusterError> {
        let text = sql(WORKERS);
        let (rows, held) = self.pg.call("list the workers", move |c| async move {
            let rows = c.query(&text, &[&SCHEDULER_LEASE]).await?;
            let held = c.query(HELD, &[]).await?;
            Ok((rows, held))
        })?;
        let mut out: Vec<WorkerRow> = rows
            .iter()
            .map(|r| WorkerRow {
                id: r.get(0),
                host: r.get(1),
                pid: r.get(2),
                role: r.get(3),
                version: r.get(4),
                started_at: r.get(5),
                heartbeat_age_ms: r.get(6),
                state: r.get(7),
                leader: r.get(8),
                claimed: 0,
                sending: 0,
            })
            .collect();
        for h in &held {
            let (worker, state, n): (String, String, i64) = (h.get(0), h.get(1), h.get(2));
            if let Some(row) = out.iter_mut().find(|w| w.id == worker) {
                match state.as_str() {
                    "queued" => row.claimed += n,
                    _ => row.sending += n,
                }
            }
        }
        Ok(out)
    }
}

/// The worker this process runs as, while one is started (the daemon's, or a `crier
/// send`'s own): a command carried out inside the daemon claims as the daemon's worker.
static CURRENT: Mutex<Weak<Worker>> = Mutex::new(Weak::new());

/// The worker this process runs as, if one is started and not yet dropped.
pub fn current() -> Option<Arc<Worker>> {
    lock(&CURRENT).upgrade()
}

/// What the owner is told of workers the leader declared dead (their ids).
pub type OnDead = Box<dyn Fn(&[String]) + Send + Sync>;

/// This process as a worker: registered, heartbeating on a thread of its own, and (with
/// [`Leases::lead`]) competing for the scheduler lease. Stopped (retired) by
/// [`Worker::stop`] or when dropped.
pub struct Worker {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    cluster: Cluster,
    info: WorkerInfo,
    settings: Leases,
    on_dead: OnDead,
    registration: Mutex<Option<Registration>>,
    /// Shared with the claims' holder (`claims::Holder::fenced`), so sending stops the
    /// moment the heartbeat finds the row taken over.
    fenced: Arc<AtomicBool>,
    /// Until when (monotonic) this worker surely holds the lease: the start of the last
    /// successful `lead` plus the lease.
    leads_until: Mutex<Option<Instant>>,
    /// The start of the last successful heartbeat.
    last_beat: Mutex<Instant>,
    /// Set to stop the thread; the condvar wakes it.
    stopping: Mutex<bool>,
    wake: Condvar,
    retired: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    /// Registers `info` (refusing an id a live worker has) and starts heartbeating; with
    /// `settings.lead`, tries for the scheduler lease at once and at every heartbeat.
    pub fn start(
        cluster: Cluster,
        info: WorkerInfo,
        settings: Leases,
        on_dead: OnDead,
    ) -> Result<Arc<Worker>, ClusterError> {
        let began = Instant::now();
        let registration = cluster.register(&info, settings.lease)?;
        tracing::info!(worker = %info.id, role = info.role.as_str(), "Registered as a worker.");
        let shared = Arc::new(Shared {
            cluster,
            info,
            settings,
            on_dead,
            registration: Mutex::new(Some(registration)),
            fenced: Arc::default(),
            leads_until: Mutex::new(None),
            last_beat: Mutex::new(began),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
            retired: AtomicBool::new(false),
        });
        if shared.settings.lead {
            shared.try_lead();
        }
        let looping = shared.clone();
        let thread = std::thread::Builder::new()
            .name("crier-heartbeat".into())
            .spawn(move || looping.run())
            .map_err(ClusterError::Thread)?;
        let worker = Arc::new(Worker {
            shared,
            thread: Mutex::new(Some(thread)),
        });
        *lock(&CURRENT) = Arc::downgrade(&worker);
        Ok(worker)
    }

    /// Registers this process as a worker that does not lead (`crier send`, `crier
    /// serve`) when `store` is shared, unless it already runs as one (a command carried
    /// out inside the daemon); `None` on the embedded store.
    pub fn join(
        store: &dyn crate::store::Store,
        settings: Leases,
        role: Role,
    ) -> Result<Option<Arc<Worker>>, ClusterError> {
        let Some(cluster) = store.cluster() else {
            return Ok(None);
        };
        if let Some(worker) = current() {
            return Ok(Some(worker));
        }
        let settings = Leases {
            lead: false,
            ..settings
        };
        let on_dead: OnDead = Box::new(|_: &[String]| {});
        Worker::start(
            cluster.clone(),
            WorkerInfo::here(None, role),
            settings,
            on_dead,
        )
        .map(Some)
    }

    /// The claims' holder for this worker: its id, and its fenced flag.
    pub fn holder(&self) -> crate::cluster::claims::Holder {
        crate::cluster::claims::Holder {
            id: Arc::from(self.id()),
            fenced: self.fence_flag(),
        }
    }

    pub fn id(&self) -> &str {
        &self.shared.info.id
    }

    pub fn info(&self) -> &WorkerInfo {
        &self.shared.info
    }

    pub fn settings(&self) -> Leases {
        self.shared.settings
    }

    /// Holds the scheduler lease now (false at once when a renewal failed, and within
    /// the lease of the last renewal when the database stopped answering).
    pub fn is_leader(&self) -> bool {
        lock(&self.shared.leads_until).is_some_and(|until| Instant::now() < until)
    }

    /// Its row was taken over: whatever it holds may be another's now. Stays set until
    /// [`Worker::unfence`].
    pub fn fenced(&self) -> bool {
        self.shared.fenced.load(Ordering::SeqCst)
    }

    /// The flag behind [`Worker::fenced`], for the claims' holder to share.
    pub fn fence_flag(&self) -> Arc<AtomicBool> {
        self.shared.fenced.clone()
    }

    /// The owner stopped what it was sending after [`Worker::fenced`]: carry on.
    pub fn unfence(&self) {
        self.shared.fenced.store(false, Ordering::SeqCst);
    }

    /// False once no heartbeat has succeeded for longer than the lease (the database is
    /// lost); the reason.
    pub fn health(&self) -> Result<(), String> {
        let since = lock(&self.shared.last_beat).elapsed();
        if since > self.shared.settings.lease {
            return Err(format!(
                "worker `{}` has had no heartbeat for {} (lease {}): the database is unreachable or too slow",
                self.shared.info.id,
                seconds(ms(since)),
                humantime::format_duration(self.shared.settings.lease)
            ));
        }
        Ok(())
    }

    pub fn healthy(&self) -> bool {
        self.health().is_ok()
    }

    /// Stops heartbeating and retires the row (state `stopped`, lease given up).
    /// Idempotent.
    pub fn stop(&self) {
        self.halt();
        if self.shared.retired.swap(true, Ordering::SeqCst) {
            return;
        }
        *lock(&self.shared.leads_until) = None;
        let registration = lock(&self.shared.registration).clone();
        if let Some(reg) = registration {
            match self.shared.cluster.retire(&reg) {
                Ok(()) => tracing::info!(worker = %reg.id, "Worker stopped."),
                Err(e) => {
                    tracing::warn!(worker = %reg.id, error = %e, "Cannot mark this worker stopped: the others will declare it dead after the lease.")
                }
            }
        }
    }

    /// Stops the heartbeat thread without retiring, as a killed process would (tests).
    #[doc(hidden)]
    pub fn abandon(&self) {
        self.shared.retired.store(true, Ordering::SeqCst);
        self.halt();
        *lock(&self.shared.leads_until) = None;
    }

    fn halt(&self) {
        *lock(&self.shared.stopping) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.info.id)
            .field("leader", &self.is_leader())
            .field("fenced", &self.fenced())
            .finish()
    }
}

impl Shared {
    fn run(&self) {
        let mut last_forget: Option<Instant> = None;
        loop {
            {
                let stopping = lock(&self.stopping);
                let (stopping, _) = self
                    .wake
                    .wait_timeout_while(stopping, self.settings.heartbeat, |s| !*s)
                    .unwrap_or_else(|e| e.into_inner());
                if *stopping {
                    return;
                }
            }
            if !self.beat() {
                continue;
            }
            if self.settings.lead && self.try_lead() {
                self.sweep();
                if last_forget.is_none_or(|t| t.elapsed() > FORGET_EVERY) {
                    last_forget = Some(Instant::now());
                    if let Err(e) = self.cluster.forget(FORGET_AFTER) {
                        tracing::warn!(error = %e, "Cannot forget old workers.");
                    }
                }
            }
        }
    }

    /// One heartbeat (re-registering after a takeover); true when this worker is
    /// registered afterwards.
    fn beat(&self) -> bool {
        let began = Instant::now();
        let registration = lock(&self.registration).clone();
        let beat = match &registration {
            Some(reg) => self.cluster.heartbeat(reg),
            None => Ok(false),
        };
        match beat {
            Ok(true) => {
                *lock(&self.last_beat) = began;
                true
            }
            Ok(false) => {
                *lock(&self.leads_until) = None;
                if registration.is_some() {
                    self.fenced.store(true, Ordering::SeqCst);
                    *lock(&self.registration) = None;
                    tracing::error!(worker = %self.info.id, "This worker's heartbeat row was taken over (declared dead, or its id registered by another process): it stops sending and registers again.");
                }
                match self.cluster.register(&self.info, self.settings.lease) {
                    Ok(reg) => {
                        *lock(&self.registration) = Some(reg);
                        *lock(&self.last_beat) = began;
                        tracing::warn!(worker = %self.info.id, "Registered again as a worker.");
                        true
                    }
                    Err(e) => {
                        tracing::error!(worker = %self.info.id, error = %e, "Cannot register again.");
                        false
                    }
                }
            }
            Err(e) => {
                *lock(&self.leads_until) = None;
                tracing::warn!(worker = %self.info.id, error = %e, "Heartbeat failed.");
                false
            }
        }
    }

    /// Takes or renews the scheduler lease; true when held.
    fn try_lead(&self) -> bool {
        let began = Instant::now();
        let was = lock(&self.leads_until).is_some_and(|u| Instant::now() < u);
        let held = match self.cluster.lead(&self.info.id, self.settings.lease) {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(worker = %self.info.id, error = %e, "Cannot renew the scheduler lease.");
                false
            }
        };
        *lock(&self.leads_until) = held.then(|| began + self.settings.lease);
        match (was, held) {
            (false, true) => {
                tracing::info!(worker = %self.info.id, "This worker leads the scheduler.")
            }
            (true, false) => {
                tracing::warn!(worker = %self.info.id, "This worker no longer leads the scheduler.")
            }
            _ => {}
        }
        held
    }

    /// The leader's round: silent workers and gone processes of this host are dead.
    fn sweep(&self) {
        let mut dead = match self.cluster.declare_dead(self.settings.lease) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot declare silent workers dead.");
                Vec::new()
            }
        };
        match self.cluster.dead_on_this_host(&self.info.host) {
            Ok(ids) => dead.extend(ids),
            Err(e) => tracing::warn!(error = %e, "Cannot check this host's workers."),
        }
        if !dead.is_empty() {
            tracing::warn!(workers = %dead.join(", "), "Workers declared dead.");
            (self.on_dead)(&dead);
        }
    }
}
