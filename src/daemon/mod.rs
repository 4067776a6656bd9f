//! The daemon behind `crier run`: fires scheduled jobs, serves the HTTP API, reloads jobs.
//!
//! tokio-cron-scheduler is the timer: each job has exactly one pending one-shot timer.
//! The instant itself is computed here ([`Schedule::next_after`], croner in the job's
//! IANA zone, per occurrence), never by the library's timezone cron jobs, which keep the
//! UTC offset of the day they were created (its issue #107) and want a seconds field.
//! When a timer fires, the next one is set from the schedule again, so every occurrence
//! gets the offset of its own day. The library rounds a one-shot instant down to whole
//! seconds and looks at its timers every 500 ms, so its timer is set [`LEAD`] early and
//! the last stretch is a precise tokio sleep to the instant.
//!
//! What the library does not do is done here:
//! - **Overlap**: a job whose previous run is still going is skipped (logged) or, with
//!   `overlap: queue`, run once after it (one pending run at most).
//! - **Misfire**: at start, a fire time missed while crier was down is run once when it
//!   is within `grace` (`misfire: run`, the default), never more than once.
//! - **Idempotent firing**: a scheduled run's id is derived from (job, instant), so the
//!   same firing can never start two runs — not after a restart, not from a catch-up.
//! - **Reload**: a file watcher on the jobs folder (inotify), SIGHUP, and a slow poll as a
//!   safety net (for file systems that do not report changes); a changed file is
//!   validated again and rescheduled; an invalid edit keeps the previous version and logs
//!   why.
//! - **Shutdown** on SIGTERM/SIGINT: no new firings, running sends are told to stop
//!   (what is queued stays queued), the store is flushed, exit 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job as Timer, JobScheduler};

use crate::cluster::claims::Holder;
use crate::cluster::members::{Leases, Role, Worker, WorkerInfo};
use crate::config::Config;
use crate::engine::running;
use crate::engine::send::{OUTSIDE_WINDOW, SendError, SendOptions, send};
use crate::history::ledger::Ledger;
use crate::history::{RunId, Trigger};
use crate::job::schedule::{Misfire, Overlap, Schedule, zoned};
use crate::job::{self, Job};
use crate::store::Store;

/// How long before a fire time the library's coarse timer wakes us.
const LEAD: Duration = Duration::from_secs(2);
/// How often the jobs folder is checked for edits.
/// The safety-net poll of the jobs folder (the watcher reports changes at once).
const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// How often the daemon looks whether it leads the scheduler (on a PostgreSQL store).
const LEAD_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long shutdown waits for running sends to park.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);
/// How often a worker looks for runs to help with and runs left by stopped workers
/// (PostgreSQL).
const CLUSTER_EVERY: Duration = Duration::from_secs(1);

/// The run id of `job`'s firing at `at`: the instant in the ULID's time part, a stable
/// hash of the job name in its random part.
pub fn scheduled_run_id(job: &str, at: DateTime<Utc>) -> RunId {
    // FNV-1a: stable across Rust versions, unlike std's hasher.
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in job.as_bytes() {
        h ^= *b as u128;
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    let ms = at.timestamp_millis().max(0) as u64;
    RunId(ulid::Ulid::from_parts(ms, h & ((1u128 << 80) - 1)).0)
}

/// The latest fire time of a schedule in `(now - grace, now]`, for a catch-up run.
pub fn missed_fire(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if schedule.misfire == Misfire::Skip {
        return None;
    }
    let grace = chrono::Duration::from_std(schedule.grace).ok()?;
    let mut next = schedule.next_after(now - grace);
    let mut last = None;
    while let Some(t) = next.filter(|t| *t <= now) {
        last = Some(t);
        next = schedule.next_after(t);
    }
    last
}

/// One firing.
#[derive(Debug, Clone)]
struct Fire {
    job: String,
    at: DateTime<Utc>,
    /// Which version of the job scheduled it (stale timers of a reloaded job are ignored).
    version: u64,
}

enum Event {
    Fire(Fire),
    /// A run ended; `reopen` is set when it paused at the end of its send window: the run
    /// and when the window opens again.
    Done {
        job: String,
        reopen: Option<(RunId, DateTime<Utc>)>,
    },
    /// Time to go on with a run paused by its window.
    Reopen {
        job: String,
        run: RunId,
    },
    /// This worker stopped helping with another worker's run (PostgreSQL).
    Left {
        run: RunId,
    },
}

/// A job as the daemon keeps it.
struct Entry {
    job: Job,
    modified: Option<SystemTime>,
    version: u64,
    running: bool,
    /// The run this daemon is sending for the job, when it knows the id before the run
    /// exists (a scheduled firing's id is its job and instant; a resumed run's is given):
    /// a firing skipped while that run is still being created, or just after it ended,
    /// names it all the same.
    run: Option<RunId>,
    /// `overlap: queue`: the one firing waiting for the current run.
    pending: Option<DateTime<Utc>>,
    timer: Option<uuid::Uuid>,
}

struct Daemon {
    config: Config,
    store: Arc<dyn Store>,
    jobs_dir: PathBuf,
    scheduler: JobScheduler,
    events: mpsc::UnboundedSender<Event>,
    jobs: BTreeMap<String, Entry>,
    /// Job files that failed validation, with their modification time (not retried until
    /// they change).
    broken: BTreeMap<PathBuf, Option<SystemTime>>,
    next_version: u64,
    cancel: Arc<AtomicBool>,
    /// The worker this process claims messages as (PostgreSQL): then runs are sent by
    /// every worker, and this one helps with the others' runs.
    holder: Option<Holder>,
    /// Other workers' runs this one is helping with.
    joined: std::collections::BTreeSet<RunId>,
    /// This process among the workers on a PostgreSQL store; `None` on the embedded one
    /// (where this process is the only one and always fires).
    worker: Option<Arc<Worker>>,
    /// Whether it led at the last look (to catch up when it starts leading).
    leading: bool,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs the daemon until SIGTERM/SIGINT. `strict`: refuse to start on any invalid job.
/// `worker_id`: its name among the workers on a PostgreSQL store (default host-pid).
pub fn run(
    config: Config,
    jobs_dir: &Path,
    strict: bool,
    worker_id: Option<String>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let files = job::job_files(&[jobs_dir.to_path_buf()]).map_err(|d| anyhow::anyhow!("{d}"))?;
    let (jobs, diags) = job::load_all(&files, &config, &crate::config::env::from_process);
    if !diags.is_empty() {
        eprintln!("{diags}");
        if strict {
            anyhow::bail!("invalid jobs (--strict): not starting");
        }
        tracing::error!("Invalid jobs are left out; the others run.");
    }
    let store: Arc<dyn Store> = Arc::from(crate::commands::open_store(&config)?);
    let worker = start_worker(&config, store.as_ref(), worker_id)?;
    // Other commands on this store are carried out here from now on.
    let cancel = Arc::new(AtomicBool::new(false));
    let host = crate::control::Host::new(config.clone(), store.clone(), cancel.clone());
    let _control = crate::control::listen(host.clone())?;
    runtime.block_on(async move {
        let (events, mut inbox) = mpsc::unbounded_channel();
        let mut daemon = Daemon {
            config: config.clone(),
            store: store.clone(),
            jobs_dir: jobs_dir.to_path_buf(),
            scheduler: JobScheduler::new().await?,
            events,
            jobs: BTreeMap::new(),
            broken: BTreeMap::new(),
            next_version: 1,
            cancel,
            // Claims are made as this worker, and stop when it is fenced.
            holder: worker.as_ref().map(|w| w.holder()),
            joined: Default::default(),
            leading: worker.as_ref().is_some_and(|w| w.is_leader()),
            worker: worker.clone(),
        };
        daemon.scheduler.start().await?;
        for job in jobs {
            daemon.install(job).await;
        }
        for file in &files {
            if !daemon.jobs.values().any(|e| &e.job.file == file) {
                daemon.broken.insert(file.clone(), modified(file));
            }
        }
        daemon.resume_interrupted();
        daemon.catch_up();

        let shutdown = Arc::new(tokio::sync::Notify::new());
        let alive = Arc::new(AtomicBool::new(true));
        let server = if config.server.configured {
            let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
            println!("listening on http://{}", listener.local_addr()?);
            let state = Arc::new(crate::server::AppState {
                config: config.clone(),
                store: store.clone(),
                metrics: Default::default(),
                jobs_dir: jobs_dir.to_path_buf(),
                scheduler: Some(alive.clone()),
                worker: worker.clone(),
            });
            let stop = shutdown.clone();
            Some(tokio::spawn(crate::server::serve(
                listener,
                state,
                async move { stop.notified().await },
            )))
        } else {
            None
        };
        println!("crier is running: {} scheduled jobs", daemon.jobs.len());

        let (changed, mut changes) = mpsc::unbounded_channel();
        let _watcher = watch(&daemon.jobs_dir, changed);
        let mut hup = hangup()?;
        let mut released = running::released();
        let mut reload = tokio::time::interval(RELOAD_EVERY);
        let mut cluster_tick = tokio::time::interval(CLUSTER_EVERY);
        // A run started or cancelled anywhere wakes this worker at once; the tick is the
        // fallback if the listening connection is lost.
        let mut wakeups = match store.cluster() {
            Some(cluster) => match cluster.pg().listen("crier_runs") {
                Ok(rx) => Some(rx),
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot listen for run events: polling every second instead.");
                    None
                }
            },
            None => None,
        };
        let mut lead_check = tokio::time::interval(LEAD_CHECK_EVERY);
        let term = shutdown_signal();
        tokio::pin!(term);
        loop {
            tokio::select! {
                Some(event) = inbox.recv() => match event {
                    Event::Fire(fire) => daemon.fire(fire).await,
                    Event::Done { job, reopen } => daemon.done(&job, reopen),
                    Event::Reopen { job, run } => daemon.reopen(&job, run),
                    Event::Left { run } => {
                        daemon.joined.remove(&run);
                    }
                },
                _ = cluster_tick.tick(), if daemon.holder.is_some() => daemon.cluster_tick(),
                woken = async {
                    match &mut wakeups {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match woken {
                    Some(event) => {
                        tracing::debug!(event = %event, "Run event.");
                        daemon.cluster_tick();
                    }
                    None => {
                        tracing::warn!("Lost the connection listening for run events: polling every second instead.");
                        wakeups = None;
                    }
                },
                Some(()) = changes.recv() => {
                    // An editor's save is several events: let them settle, reload once.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while changes.try_recv().is_ok() {}
                    daemon.reload().await;
                }
                Ok(job) = released.recv() => daemon.released(&job),
                _ = reload.tick() => daemon.reload().await,
                _ = lead_check.tick() => daemon.check_lead(),
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading jobs.");
                    daemon.reload().await;
                }
                _ = &mut term => break,
            }
        }
        alive.store(false, std::sync::atomic::Ordering::SeqCst);
        daemon.scheduler.shutdown().await?;
        daemon
            .cancel
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        while (daemon.jobs.values().any(|e| e.running) || !daemon.joined.is_empty())
            && tokio::time::Instant::now() < deadline
        {
            match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(Some(Event::Done { job, .. })) => daemon.done(&job, None),
                Ok(Some(Event::Left { run })) => {
                    daemon.joined.remove(&run);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        let idle = host.clone();
        let _ = tokio::time::timeout_at(
            deadline,
            tokio::task::spawn_blocking(move || idle.wait_idle(SHUTDOWN_DEADLINE)),
        )
        .await;
        shutdown.notify_waiters();
        if let Some(server) = server {
            let _ = server.await;
        }
        if let Some(worker) = &worker {
            worker.stop();
        }
        store.flush()?;
        tracing::info!("Stopped.");
        anyhow::Ok(())
    })
}

/// Registers this process as a `crier run` worker (one that competes for the scheduler
/// lease) when the store is shared (PostgreSQL).
fn start_worker(
    config: &Config,
    store: &dyn Store,
    worker_id: Option<String>,
) -> anyhow::Result<Option<Arc<Worker>>> {
    let Some(cluster) = store.cluster() else {
        if worker_id.is_some() {
            tracing::warn!(
                "--worker-id names a worker among several on a PostgreSQL store; the embedded store has this one process."
            );
        }
        return Ok(None);
    };
    let settings = Leases {
        lead: true,
        ..config.cluster
    };
    let info = WorkerInfo::here(worker_id, Role::Run);
    let on_dead: crate::cluster::members::OnDead = Box::new(|ids: &[String]| {
        tracing::warn!(workers = %ids.join(", "), "Declared dead: their messages are handed on.");
    });
    Ok(Some(Worker::start(
        cluster.clone(),
        info,
        settings,
        on_dead,
    )?))
}

/// What a firing does.
#[derive(Debug, PartialEq, Eq)]
enum OnFire {
    Start,
    /// `overlap: skip` while the job is sending: recorded as a skipped run.
    Skip,
    /// `overlap: queue` while the job is sending: wait for it (replacing a waiting firing).
    Wait {
        replaces: bool,
    },
}

/// The overlap policy: a firing of a job that is `busy` sending.
fn on_fire(busy: bool, overlap: Overlap, waiting: bool) -> OnFire {
    match (busy, overlap) {
        (false, _) => OnFire::Start,
        (true, Overlap::Skip) => OnFire::Skip,
        (true, Overlap::Queue) => OnFire::Wait { replaces: waiting },
    }
}

/// Reports each change in `dir` on `changed`; `None` (with a warning) where the file
/// system cannot be watched: the poll still reloads.
fn watch(dir: &Path, changed: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            let _ = changed.send(());
        }
    };
    let watched = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(dir, notify::RecursiveMode::Recursive)?;
        Ok(w)
    });
    match watched {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, poll_s = RELOAD_EVERY.as_secs(), "Cannot watch the jobs folder: changes are picked up by polling and SIGHUP.");
            None
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("Shutting down.");
}

/// Sleeps precisely until the fire instant, then reports the firing.
async fn fire_at(fire: Fire, events: mpsc::UnboundedSender<Event>) {
    let wait = (fire.at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let _ = events.send(Event::Fire(fire));
}

fn hangup() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

impl Daemon {
    /// `at` in the zone of `name`'s schedule (UTC if it has none), for the log.
    fn zoned(&self, name: &str, at: DateTime<Utc>) -> String {
        let tz = self
            .jobs
            .get(name)
            .and_then(|e| e.job.schedule.as_ref())
            .map_or(chrono_tz::UTC, |s| s.tz);
        zoned(at, tz)
    }

    /// Adds (or replaces) a job and sets its next timer.
    async fn install(&mut self, job: Job) {
        let name = job.name.clone();
        if let Some(old) = self.jobs.remove(&name)
            && let Some(timer) = old.timer
        {
            let _ = self.scheduler.remove(&timer).await;
        }
        let version = self.next_version;
        self.next_version += 1;
        let mut entry = Entry {
            modified: modified(&job.file),
            job,
            version,
            running: false,
            run: None,
            pending: None,
            timer: None,
        };
        entry.timer = self.arm(&entry, Utc::now()).await;
        self.jobs.insert(name, entry);
    }

    /// Sets the one timer for the job's next fire time after `after` (now, or the
    /// instant that just fired, whichever is later).
    async fn arm(&self, entry: &Entry, after: DateTime<Utc>) -> Option<uuid::Uuid> {
        if !entry.job.enabled {
            return None;
        }
        let schedule = entry.job.schedule.as_ref()?;
        let now = Utc::now();
        let at = schedule.next_after(after.max(now))?;
        let wait = (at - now).to_std().unwrap_or_default();
        let fire = Fire {
            job: entry.job.name.clone(),
            at,
            version: entry.version,
        };
        let events = self.events.clone();
        if wait <= LEAD {
            tokio::spawn(fire_at(fire, events));
            return None;
        }
        let runtime = tokio::runtime::Handle::current();
        let timer = Timer::new_one_shot_at_instant(
            std::time::Instant::now() + (wait - LEAD),
            move |_, _| {
                runtime.spawn(fire_at(fire.clone(), events.clone()));
            },
        );
        match timer {
            Ok(timer) => match self.scheduler.add(timer).await {
                Ok(id) => {
                    tracing::info!(
                        job = %entry.job.name,
                        next = %zoned(at, schedule.tz),
                        "Scheduled."
                    );
                    Some(id)
                }
                Err(e) => {
                    tracing::error!(job = %entry.job.name, error = %e, "Cannot set the timer.");
                    None
                }
            },
            Err(e) => {
                tracing::error!(job = %entry.job.name, error = %e, "Cannot set the timer.");
                None
            }
        }
    }

    /// Goes on with every run left `processing` (by a crash, a pause or a shutdown).
    fn resume_interrupted(&mut self) {
        let ledger = Ledger::new(self.store.as_ref());
        // `new`: created, then stopped before its first message was planned (a firing
        // at the moment of a shutdown). Send-as-test runs are one person's, not resumed.
        let mut runs = Vec::new();
        for status in [
            crate::history::RunStatus::Processing,
            crate::history::RunStatus::New,
        ] {
            let filter = crate::history::query::RunFilter {
                status: Some(status),
                ..Default::default()
            };
            runs.extend(
                crate::history::query::runs(&ledger, &filter)
                    .filter_map(Result::ok)
                    .filter(|r| r.trigger != Trigger::Test),
            );
        }
        for run in runs {
            let Some(entry) = self.jobs.get(&run.job) else {
                tracing::error!(job = %run.job, run = %run.id, "Cannot resume: the job is not loaded.");
                continue;
            };
            if entry.running {
                continue;
            }
            if let Some(cluster) = self.store.cluster()
                && let Ok(Some((holding, worker))) = cluster.job_holder(&run.job)
                && holding == run.id
                && self.holder.as_ref().is_some_and(|me| *me.id != *worker)
                && cluster.is_alive(&worker).unwrap_or(false)
            {
                // Being sent by a live worker: this one helps instead (`cluster_tick`).
                continue;
            }
            tracing::warn!(job = %run.job, run = %run.id, "Resuming an interrupted run.");
            self.launch(
                &run.job,
                SendOptions {
                    resume: Some(run.id),
                    cancel: Some(self.cancel.clone()),
                    ..SendOptions::default()
                },
            );
        }
    }

    /// Whether this process fires the schedule: always on the embedded store; on a
    /// shared one, while it holds the scheduler lease.
    fn fires(&self) -> bool {
        self.worker.as_ref().is_none_or(|w| w.is_leader())
    }

    /// The 1 s look at the scheduler lease: a worker that starts leading catches up the
    /// instants missed while nobody led (misfire rules as at start).
    fn check_lead(&mut self) {
        let Some(worker) = &self.worker else {
            return;
        };
        let leading = worker.is_leader();
        if leading && !self.leading {
            tracing::info!(worker = %worker.id(), "Leading the scheduler: catching up missed fire times.");
            self.leading = true;
            self.catch_up();
        } else if !leading && self.leading {
            tracing::info!(worker = %worker.id(), "No longer leading the scheduler: another worker fires.");
            self.leading = false;
        }
    }

    /// One catch-up run per job for a fire time missed while crier was down.
    fn catch_up(&mut self) {
        if !self.fires() {
            tracing::debug!("Not the scheduler's leader: no catch-up here.");
            return;
        }
        let now = Utc::now();
        let missed: Vec<(String, DateTime<Utc>)> = self
            .jobs
            .values()
            .filter(|e| e.job.enabled)
            .filter_map(|e| {
                let at = missed_fire(e.job.schedule.as_ref()?, now)?;
                Some((e.job.name.clone(), at))
            })
            .collect();
        for (name, at) in missed {
            let ledger = Ledger::new(self.store.as_ref());
            if ledger.run(scheduled_run_id(&name, at)).is_ok() {
                continue;
            }
            tracing::warn!(job = %name, missed = %self.zoned(&name, at), "Catching up a fire time missed while down.");
            self.start(&name, at);
        }
    }

    async fn fire(&mut self, fire: Fire) {
        let Some(entry) = self.jobs.get(&fire.job) else {
            return;
        };
        if entry.version != fire.version {
            return; // A timer of a version since replaced.
        }
        // The next occurrence first, with its own day's offset.
        let timer = self.arm(entry, fire.at).await;
        let fires = self.fires();
        let Some(entry) = self.jobs.get_mut(&fire.job) else {
            return;
        };
        entry.timer = timer;
        if !fires {
            tracing::debug!(job = %fire.job, at = %self.zoned(&fire.job, fire.at), "Not the scheduler's leader: the leader fires this.");
            return;
        }
        let late_ms = (Utc::now() - fire.at).num_milliseconds();
        tracing::info!(job = %fire.job, at = %self.zoned(&fire.job, fire.at), late_ms, "Fired.");
        let Some(entry) = self.jobs.get_mut(&fire.job) else {
            return;
        };
        // Busy: our own run of it, or one the API or a forwarded `crier send` started.
        let elsewhere = self
            .store
            .cluster()
            .and_then(|c| c.job_holder(&fire.job).ok().flatten())
            .is_some();
        let busy = entry.running || running::holder(&fire.job).is_some() || elsewhere;
        let overlap = entry
            .job
            .schedule
            .as_ref()
            .map(|s| s.overlap)
            .unwrap_or_default();
        match on_fire(busy, overlap, entry.pending.is_some()) {
            OnFire::Start => self.start(&fire.job, fire.at),
            OnFire::Skip => self.record_skipped(&fire.job, fire.at),
            OnFire::Wait { replaces } => {
                if replaces {
                    tracing::warn!(job = %fire.job, "A queued firing was replaced by a newer one.");
                }
                entry.pending = Some(fire.at);
            }
        }
    }

    /// `overlap: skip`: the firing at `at` becomes a cancelled run with no messages, so the
    /// history shows it was skipped and why (and a restart does not catch it up).
    fn record_skipped(&self, name: &str, at: DateTime<Utc>) {
        let previous = running::holder(name)
            .flatten()
            .or_else(|| self.jobs.get(name).and_then(|e| e.run))
            .map(|r| format!(" (run {r})"))
            .unwrap_or_default();
        let why = format!(
            "skipped: the previous run{previous} was still sending at this firing (overlap: skip)"
        );
        tracing::warn!(job = %name, at = %self.zoned(name, at), "Skipped: the previous run is still going (overlap: skip).");
        let Some(entry) = self.jobs.get(name) else {
            return;
        };
        let ledger = Ledger::new(self.store.as_ref());
        let new_run = crate::history::ledger::NewRun {
            job: name.to_string(),
            trigger: Trigger::Schedule {
                at: at.timestamp_millis(),
            },
            channels: entry.job.send_to.channels().to_vec(),
            provider: String::new(),
            body: why,
            subject: None,
        };
        let id = scheduled_run_id(name, at);
        let recorded = ledger
            .create_run_with_id(id, new_run, Utc::now().timestamp_millis())
            .and_then(|_| ledger.cancel(id))
            .and_then(|_| ledger.flush());
        if let Err(e) = recorded {
            tracing::error!(job = %name, run = %id, error = %e, "Cannot record the skipped firing.");
        }
    }

    /// Another sender's run of `name` ended: a firing queued behind it may start now.
    fn released(&mut self, name: &str) {
        let Some(entry) = self.jobs.get_mut(name) else {
            return;
        };
        if entry.running || running::holder(name).is_some() {
            return;
        }
        if let Some(at) = entry.pending.take() {
            tracing::info!(job = %name, at = %self.zoned(name, at), "The queued firing starts now (overlap: queue).");
            self.start(name, at);
        }
    }

    /// Starts a scheduled run of `name` for instant `at` (unless that run exists).
    fn start(&mut self, name: &str, at: DateTime<Utc>) {
        if !self.jobs.contains_key(name) {
            return;
        }
        if self.cancel.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::info!(job = %name, at = %self.zoned(name, at), "Shutting down: this firing does not start.");
            return;
        }
        let id = scheduled_run_id(name, at);
        if Ledger::new(self.store.as_ref()).run(id).is_ok() {
            tracing::info!(job = %name, run = %id, "This firing already has its run.");
            return;
        }
        let options = SendOptions {
            run_id: Some(id),
            trigger: Some(Trigger::Schedule {
                at: at.timestamp_millis(),
            }),
            cancel: Some(self.cancel.clone()),
            ..SendOptions::default()
        };
        self.launch(name, options);
    }

    /// Runs `name` with `options` on a blocking thread; reports `Done` when it ends.
    fn launch(&mut self, name: &str, mut options: SendOptions) {
        options.holder = self.holder.clone();
        let Some(entry) = self.jobs.get_mut(name) else {
            return;
        };
        entry.running = true;
        entry.run = options.resume.or(options.run_id);
        let id = entry.run.map(|i| i.to_string()).unwrap_or_default();
        let job = entry.job.clone();
        let config = self.config.clone();
        let store = self.store.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let mut reopen = None;
            match send(&job, &config, store.as_ref(), &options) {
                Ok(summary) => {
                    tracing::info!(
                        job = %job.name, run = %id, sent = summary.sent, failed = summary.failed,
                        paused = summary.paused.as_deref().unwrap_or(""),
                        "Run finished."
                    );
                    if let Some(error) = &summary.script_error {
                        let run = summary
                            .run
                            .as_ref()
                            .map(|r| r.id.to_string())
                            .unwrap_or_else(|| id.clone());
                        tracing::error!(
                            job = %job.name, run = %run, failed = summary.script_failed, error = %error,
                            "A script failed for recipients of this run; their messages failed."
                        );
                    }
                    let by_window = summary
                        .paused
                        .as_deref()
                        .is_some_and(|p| p.starts_with(OUTSIDE_WINDOW));
                    // Per-recipient windows say when the first waiting one opens.
                    if let (true, Some(run), Some(schedule)) =
                        (by_window, &summary.run, &job.schedule)
                        && let Some(window) = &schedule.window
                        && let Some(at) = summary
                            .reopens
                            .or_else(|| window.next_open(Utc::now(), schedule.tz))
                    {
                        reopen = Some((run.id, at));
                    }
                }
                // Another worker took the run first (two resuming one left by a dead one).
                Err(e @ SendError::Busy { .. }) => {
                    tracing::info!(job = %job.name, run = %id, why = %e, "Not started.")
                }
                Err(e) => tracing::error!(job = %job.name, run = %id, error = %e, "Run failed."),
            }
            let _ = events.send(Event::Done {
                job: job.name,
                reopen,
            });
        });
    }

    /// A run paused by its window goes on when the window opens (status `processing`
    /// meanwhile).
    fn reopen(&mut self, name: &str, run: RunId) {
        match self.jobs.get(name) {
            Some(entry) if !entry.running => {
                tracing::info!(job = %name, run = %run, "The send window is open: resuming.");
                self.launch(
                    name,
                    SendOptions {
                        resume: Some(run),
                        cancel: Some(self.cancel.clone()),
                        ..SendOptions::default()
                    },
                );
            }
            Some(_) => {}
            None => {
                tracing::warn!(job = %name, run = %run, "Job gone: the paused run stays paused.")
            }
        }
    }

    fn done(&mut self, name: &str, reopen: Option<(RunId, DateTime<Utc>)>) {
        if let Some((run, at)) = reopen {
            tracing::info!(job = %name, run = %run, opens = %self.zoned(name, at), "Paused until the send window opens.");
            let events = self.events.clone();
            let job = name.to_string();
            tokio::spawn(async move {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                let _ = events.send(Event::Reopen { job, run });
            });
        }
        let pending = match self.jobs.get_mut(name) {
            Some(entry) => {
                entry.running = false;
                entry.run = None;
                entry.pending.take()
            }
            None => None,
        };
        if let Some(at) = pending {
            tracing::info!(job = %name, at = %self.zoned(name, at), "The queued firing starts now (overlap: queue).");
            self.start(name, at);
        }
    }

    /// PostgreSQL, every [`CLUSTER_EVERY`]: helps with the runs other workers are sending
    /// (claiming their queued messages), and resumes runs whose starting worker stopped,
    /// after taking back what stopped workers held.
    fn cluster_tick(&mut self) {
        let (Some(cluster), Some(me)) = (self.store.cluster().cloned(), self.holder.clone()) else {
            return;
        };
        if self.cancel.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Some(worker) = &self.worker
            && worker.fenced()
        {
            // Declared dead while it could not heartbeat (paused, cut off): what it held
            // went to others. Once everything it was sending has stopped, it works again
            // under its new registration.
            let busy = self.jobs.values().any(|e| e.running) || !self.joined.is_empty();
            if !busy {
                worker.unfence();
                tracing::warn!(worker = %worker.id(), "Every send of this worker stopped after it was declared dead: it takes work again.");
            }
            return;
        }
        // The leader takes back what dead and stopped workers held, and resumes the runs
        // they started.
        let abandoned = if self.fires() {
            let ledger = Ledger::new(self.store.as_ref());
            if let Err(e) = crate::engine::send::sweep(&ledger, &cluster, &self.config, &me.id) {
                tracing::error!(error = %e, "Cannot take back what stopped workers held.");
                return;
            }
            cluster.abandoned_runs(&me.id)
        } else {
            Ok(Vec::new())
        };
        match abandoned {
            Ok(abandoned) if !abandoned.is_empty() => {
                for (run, job, worker) in abandoned {
                    // Not while this worker is still helping with it: one send of a run
                    // per process (both would claim, and hand back, as this one worker).
                    if self.joined.contains(&run) || self.jobs.get(&job).is_none_or(|e| e.running) {
                        continue;
                    }
                    tracing::warn!(job = %job, run = %run, worker = %worker, "Resuming a run whose worker stopped.");
                    self.launch(
                        &job,
                        SendOptions {
                            resume: Some(run),
                            cancel: Some(self.cancel.clone()),
                            ..SendOptions::default()
                        },
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Cannot look for runs left by stopped workers."),
        }
        let runs = match cluster.runs_to_join() {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot look for runs to help with.");
                return;
            }
        };
        for (run, job, _) in runs {
            if self.joined.contains(&run) {
                continue;
            }
            let Some(entry) = self.jobs.get(&job) else {
                continue;
            };
            // Our own run of it (the scheduler's, the API's, a forwarded `crier send`), or
            // its window is closed (the run's starter reopens it).
            if entry.running || running::holder(&job).flatten() == Some(run) {
                continue;
            }
            if let Some(schedule) = &entry.job.schedule
                && let Some(window) = &schedule.window
                && !window.per_recipient
                && !window.contains(Utc::now(), schedule.tz)
            {
                continue;
            }
            self.join(entry.job.clone(), run);
        }
    }

    /// Helps send `run` of `job`, another worker's, on a blocking thread.
    fn join(&mut self, job: Job, run: RunId) {
        self.joined.insert(run);
        tracing::info!(job = %job.name, run = %run, "Helping with a run.");
        let options = SendOptions {
            join: Some(run),
            holder: self.holder.clone(),
            cancel: Some(self.cancel.clone()),
            ..SendOptions::default()
        };
        let config = self.config.clone();
        let store = self.store.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            match send(&job, &config, store.as_ref(), &options) {
                Ok(summary) => tracing::info!(
                    job = %job.name, run = %run, sent = summary.sent, failed = summary.failed,
                    "Done helping with the run."
                ),
                Err(e) => {
                    tracing::error!(job = %job.name, run = %run, error = %e, "Helping with the run failed.")
                }
            }
            let _ = events.send(Event::Left { run });
        });
    }

    /// Re-reads job files that changed; an invalid edit keeps the previous version.
    async fn reload(&mut self) {
        let Ok(files) = job::job_files(std::slice::from_ref(&self.jobs_dir)) else {
            return;
        };
        for file in &files {
            let now = modified(file);
            let known = self.jobs.values().find(|e| &e.job.file == file);
            let unchanged = match known {
                Some(e) => e.modified == now,
                None => self.broken.get(file).is_some_and(|m| *m == now),
            };
            if unchanged {
                continue;
            }
            match job::load(file, &self.config, &crate::config::env::from_process) {
                Ok(job) => {
                    tracing::info!(job = %job.name, file = %file.display(), "Reloaded.");
                    self.broken.remove(file);
                    self.install(job).await;
                }
                Err(diags) => {
                    tracing::error!(file = %file.display(), errors = %diags, "Invalid edit: the previous version stays scheduled.");
                    if let Some(name) = known.map(|e| e.job.name.clone())
                        && let Some(entry) = self.jobs.get_mut(&name)
                    {
                        entry.modified = now;
                    } else {
                        self.broken.insert(file.clone(), now);
                    }
                }
            }
        }
        // Deleted files: their jobs stop.
        let gone: Vec<String> = self
            .jobs
            .values()
            .filter(|e| !files.contains(&e.job.file))
            .map(|e| e.job.name.clone())
            .collect();
        for name in gone {
            if let Some(entry) = self.jobs.remove(&name) {
                tracing::info!(job = %name, "Job file removed: unscheduled.");
                if let Some(timer) = entry.timer {
                    let _ = self.scheduler.remove(&timer).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(expr: &str, misfire: Misfire, grace_s: u64) -> Schedule {
        Schedule {
            when: crate::job::schedule::When::Cron {
                expr: expr.into(),
                cron: Box::new(crate::job::schedule::parse_cron(expr).unwrap()),
            },
            tz: chrono_tz::Africa::Johannesburg,
            misfire,
            grace: Duration::from_secs(grace_s),
            overlap: Overlap::Skip,
            window: None,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn one_catch_up_for_the_latest_missed_fire_within_grace() {
        // Every 10 minutes; down from 07:02 to 07:35: three fire times missed, one run.
        let s = schedule("*/10 * * * *", Misfire::Run, 3600);
        assert_eq!(
            missed_fire(&s, utc("2026-11-27T07:35:00Z")),
            Some(utc("2026-11-27T07:30:00Z"))
        );
        // 09:00 local (07:00Z) daily: an hour of grace covers 07:59Z, not 08:01Z.
        let daily = schedule("0 9 * * *", Misfire::Run, 3600);
        assert_eq!(
            missed_fire(&daily, utc("2026-11-27T07:59:00Z")),
            Some(utc("2026-11-27T07:00:00Z"))
        );
        assert_eq!(missed_fire(&daily, utc("2026-11-27T08:01:00Z")), None);
        // A one-shot missed by a few minutes runs once.
        let mut once = schedule("0 9 * * *", Misfire::Run, 3600);
        once.when = crate::job::schedule::When::At(
            chrono::NaiveDate::from_ymd_opt(2026, 11, 27)
                .unwrap()
                .and_hms_opt(9, 0, 0)
                .unwrap(),
        );
        assert_eq!(
            missed_fire(&once, utc("2026-11-27T07:10:00Z")),
            Some(utc("2026-11-27T07:00:00Z"))
        );
        // misfire: skip never catches up.
        let skip = schedule("0 9 * * *", Misfire::Skip, 3600);
        assert_eq!(missed_fire(&skip, utc("2026-11-27T07:30:00Z")), None);
    }

    #[test]
    fn overlap_policy_starts_skips_or_waits_once() {
        use Overlap::{Queue, Skip};
        let cases = [
            // busy, policy, a firing already waiting → decision
            (false, Skip, false, OnFire::Start),
            (false, Queue, false, OnFire::Start),
            (true, Skip, false, OnFire::Skip),
            (true, Skip, true, OnFire::Skip),
            (true, Queue, false, OnFire::Wait { replaces: false }),
            // One waiting firing at most: a newer one takes its place.
            (true, Queue, true, OnFire::Wait { replaces: true }),
        ];
        for (busy, overlap, waiting, expected) in cases {
            assert_eq!(
                on_fire(busy, overlap, waiting),
                expected,
                "{busy} {overlap:?} {waiting}"
            );
        }
    }

    #[test]
    fn scheduled_run_ids_are_stable_and_distinct() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T07:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = scheduled_run_id("payment-reminder", at);
        assert_eq!(a, scheduled_run_id("payment-reminder", at));
        assert_ne!(a, scheduled_run_id("welcome-email", at));
        assert_ne!(
            a,
            scheduled_run_id("payment-reminder", at + chrono::Duration::seconds(1))
        );
        // The id sorts by the scheduled instant.
        assert_eq!(ulid::Ulid(a.0).timestamp_ms(), at.timestamp_millis() as u64);
    }
}
