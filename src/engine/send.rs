//! Sending a run: a streaming pipeline with bounded queues, group-committed to the ledger.
//!
//! Three parts run at once, joined by bounded channels so memory does not grow with the
//! number of recipients:
//!
//! - the **planner** thread resolves recipients, renders them ([`Planner`]) and writes
//!   them to the ledger in batches (`queued`, or `skipped` with the reason), then hands
//!   the sendable ones on;
//! - the **dispatcher** (async, on a small tokio runtime) drives up to
//!   [`MAX_IN_FLIGHT`] messages at once. For each: the job's and the provider's rate limits
//!   (governor; both hold), a slot in the provider's `sending` window (its concurrency,
//!   or four times it where a resubmission is safe), the durable `sending` mark, a concurrency permit of the provider
//!   (reqwest does not cap connections per host), the provider call, and the
//!   classified outcome: retries with exponential backoff and jitter (or the provider's
//!   `Retry-After`) until the provider's `retries` or the job's `expire_after` run out;
//!   `halt` (no credit, bad credentials) pauses the run, leaving the rest `queued`.
//!   A message the job's `route` script gave several providers fails over: when one
//!   rejects it or its retries run out, it goes back to `queued` on the next provider,
//!   and the ledger keeps the one it left (and why) in the message's `failovers`. Lanes
//!   for providers only a route names are built on first use;
//! - the **recorder** threads group-commit state changes: whatever has arrived is one
//!   ledger write and one flush, and a message's `sending` mark is durable before its
//!   provider is called. A crash leaves only messages actually in flight in `sending`.
//!   One recorder on SQLite (one writer at a time); two on PostgreSQL, whose server
//!   overlaps one transaction's commit and round trips with the other's work. A
//!   message's changes all go to one recorder, in the order they were made.
//!
//! A message cancelled meanwhile (`crier history cancel`) is never sent: its `sending`
//! transition is refused by the ledger and the dispatcher drops it.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use governor::{Quota, RateLimiter};
use thiserror::Error;
use tokio::sync::oneshot;

use super::{PlanError, Planned, Planner, SkipReason};
use crate::cluster::Cluster;
use crate::cluster::claims::Holder;
use crate::cluster::rate::{Limit, job_key, provider_key};
use crate::config::Config;
use crate::history::RecipientSnapshot;
use crate::history::ledger::{Change, Ledger, LedgerError, NewMessage, NewRun};
use crate::history::{MessageId, MessageState, MessageType, Run, RunId, Trigger};
use crate::job::{Channel, Job, Source};
use crate::provider::{self, BuildContext, Provider, ProviderConfig, RoutedMessage, SendOutcome};
use crate::recipients::optout::OptOuts;
use crate::recipients::source::{self, SourceError};
use crate::recipients::unsubscribe::Ticket;
use crate::render::stored::Templates;
use crate::store::{Store, StoreError};
use crate::throttle::Rate;

/// Messages planned per ledger write.
const BATCH: usize = 500;
/// Messages one claim takes (PostgreSQL).
const CLAIM_BATCH: usize = 256;
/// Most messages a worker holds at once, claimed and not yet settled: enough to keep its
/// providers busy, few enough that workers joining a run find work (a worker that
/// claimed all it could buffer would send a rate-limited run alone).
const HOLD_MAX: usize = 2 * CLAIM_BATCH;
/// How long a worker helping with a run waits for more to claim before it leaves.
const JOIN_IDLE: Duration = Duration::from_secs(1);
/// How often a worker with nothing to claim looks at the run again.
const CLAIM_POLL: Duration = Duration::from_millis(50);
/// How often a run's starter, waiting for other workers to finish it, takes back what
/// dead workers held.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Messages the dispatcher works on at once (waiting for a rate limit, a permit, a
/// retry, or an answer).
pub const MAX_IN_FLIGHT: usize = 1024;
/// Most state changes in one group commit.
const COMMIT_MAX: usize = 4096;
/// Process-wide counters of the engine, for `/metrics`: every run of this process (the
/// daemon's, the API's) adds to them.
pub mod stats {
    use std::sync::atomic::AtomicU64;

    /// Send attempts beyond the first.
    pub static RETRIES: AtomicU64 = AtomicU64::new(0);
    /// Messages that had to wait for a rate limit (the job's or a provider's).
    pub static RATE_LIMIT_WAITS: AtomicU64 = AtomicU64::new(0);
}

/// How a pause at the end of the send window begins (the daemon resumes such runs when
/// the window opens again).
pub const OUTSIDE_WINDOW: &str = "outside the send window";
/// How the stop reason of a planner failure begins.
const PLANNING_FAILED: &str = "planning failed";
/// Concurrency of providers that write locally (file outbox, portal inbox).
const LOCAL_CONCURRENCY: usize = 256;
/// The `sending` window of a provider that deduplicates, in multiples of its concurrency.
const WINDOW_FACTOR: usize = 8;
/// Longest wait between two attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(300);

#[derive(Debug, Error)]
pub enum SendError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("provider `{0}` is not configured")]
    NoProvider(String),
    #[error("cannot retry: {0}")]
    Retry(String),
    #[error("job `{job}` is already sending{run}: the same job never runs twice at once")]
    Busy { job: String, run: String },
    #[error("provider `{name}` (type {kind}) cannot carry {channel} messages")]
    WrongChannel {
        name: String,
        kind: &'static str,
        channel: Channel,
    },
    #[error("provider `{0}` cannot be set up: {1}")]
    Build(String, String),
    #[error("provider `{0}` refused the balance check: {1}")]
    Balance(String, String),
    #[error(
        "provider `{name}` balance is {balance} {unit}, below the job's min_balance {min}: top up before sending"
    )]
    LowBalance {
        name: String,
        balance: f64,
        unit: String,
        min: f64,
    },
    #[error("cannot start the sending runtime: {0}")]
    Runtime(std::io::Error),
    #[error("no recipient of this job has id {0}")]
    NoRecipient(u64),
    #[error("{0}")]
    MissingSecrets(crate::diag::Diagnostics),
}

/// Reports how many messages are settled so far.
pub type ProgressFn = dyn Fn(u64) + Send + Sync;

/// How to send.
#[derive(Clone, Default)]
pub struct SendOptions {
    /// Send as test: one message to this address, with one recipient's data.
    pub test_to: Option<String>,
    /// With `test_to`: whose data (default: the first recipient).
    pub recipient: Option<u64>,
    /// Called as messages settle (a progress bar).
    pub progress: Option<Arc<ProgressFn>>,
    /// The run's id (the scheduler's deterministic one); default: a new ULID.
    pub run_id: Option<RunId>,
    /// What started the run (default: `manual`, or `test` with `test_to`).
    pub trigger: Option<Trigger>,
    /// Set from outside to stop the run (daemon shutdown): nothing more is planned or
    /// sent; what is queued stays queued.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Resume this run (left `processing` by a crash, a pause or a shutdown) instead of
    /// starting one: see [`recover`].
    pub resume: Option<RunId>,
    /// "Retry failed": start a new run of the failed and expired messages of this run
    /// (of the same job), recorded as its retry ([`Ledger::create_retry`]).
    pub retry_failed: Option<RunId>,
    /// Called once the run exists in the ledger, before anything is planned (the HTTP
    /// API answers `202 Accepted` with the run id then).
    pub on_run: Option<Arc<RunFn>>,
    /// Send outside the job's send window (`crier send --ignore-window`).
    pub ignore_window: bool,
    /// Help send this run, which another worker started (PostgreSQL): claim its queued
    /// messages and send them; plan nothing.
    pub join: Option<RunId>,
    /// The worker this process claims messages as (PostgreSQL); default: `host-pid`.
    pub holder: Option<Holder>,
    /// Plan the run and leave the sending to the workers (`crier send --enqueue`).
    pub enqueue: bool,
}

/// Told the run that was just created.
pub type RunFn = dyn Fn(&Run) + Send + Sync;

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub run: Option<Run>,
    pub sent: u64,
    pub failed: u64,
    pub expired: u64,
    /// Outcome lost (a timeout after the request went out): not resent.
    pub unknown: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    /// SMS parts of the sent messages.
    pub parts: u64,
    /// Attempts beyond the first.
    pub retries: u64,
    /// Messages left `queued` by a pause.
    pub queued: u64,
    /// Recipients the job's `filter` script left out (not recorded as messages).
    pub filtered: u64,
    /// Messages a script failed for (counted in `failed` too).
    pub script_failed: u64,
    /// The first script error of the run, with its script, line and limit.
    pub script_error: Option<String>,
    /// Why the run paused, if it did.
    pub paused: Option<String>,
    /// Messages left `queued` because their recipient's send window was closed
    /// (`window.per_recipient`).
    pub deferred: u64,
    /// When the run should go on: the earliest opening of a deferred recipient's window.
    pub reopens: Option<chrono::DateTime<chrono::Utc>>,
}

impl Summary {
    /// Did every message that could be sent go out?
    pub fn all_sent(&self) -> bool {
        self.failed == 0 && self.expired == 0 && self.unknown == 0 && self.paused.is_none()
    }
}

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// A limiter for `rate`. Without an explicit `burst`, 20 ms worth of messages (at least
/// one) may go together: timers wake a little late, and with a burst of one every late
/// wake-up would be a slot lost for good (200/s measured 189/s); a small burst lets the
/// next message catch up while the long-run rate stays exact.
fn limiter(rate: Rate, burst: Option<u32>) -> Limiter {
    let per_message = rate.per / rate.count.get();
    let per_second = rate.count.get() as f64 / rate.per.as_secs_f64();
    let default_burst = NonZeroU32::new((per_second / 50.0) as u32).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(per_message)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst.and_then(NonZeroU32::new).unwrap_or(default_burst));
    RateLimiter::direct(quota)
}

/// One provider as a run uses it: the client, its limits, its retry policy.
struct Lane<'a> {
    name: String,
    provider: Box<dyn Provider + 'a>,
    limiter: Option<Limit>,
    /// Messages of this provider that may be `sending` at once, so `sending` marks are
    /// group-committed in large groups while requests go out. A crash leaves at most this
    /// many in `sending`.
    window: tokio::sync::Semaphore,
    /// Requests in flight to this provider at once.
    permits: tokio::sync::Semaphore,
    /// Whether resubmitting a message this provider may have is safe (a local provider,
    /// BulkSMS's deduplication): a `sending` message left by a crash is sent again
    /// instead of becoming `unknown`.
    deduplicates: bool,
    retries: u32,
    backoff: Duration,
}

/// Every provider a run may use, by index: the job's own providers, built before the
/// run starts, and, when the job has a `route` script, every other configured provider
/// that carries one of the job's channels, built when a route first names it.
struct Lanes<'a> {
    slots: Vec<Slot<'a>>,
    ctx: BuildContext<'a>,
    /// Where rate limits are shared by every worker (PostgreSQL).
    cluster: Option<&'a Cluster>,
}

struct Slot<'a> {
    name: String,
    config: ProviderConfig,
    lane: OnceLock<Result<Lane<'a>, String>>,
}

impl<'a> Lanes<'a> {
    /// The index of provider `name`, adding it (unbuilt) if it is new.
    fn add(&mut self, name: &str, config: &ProviderConfig) -> usize {
        match self.index(name) {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    name: name.to_string(),
                    config: config.clone(),
                    lane: OnceLock::new(),
                });
                self.slots.len() - 1
            }
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == name)
    }

    fn name(&self, i: usize) -> &str {
        &self.slots[i].name
    }

    /// The lane at `i`, built on first use.
    fn get(&self, i: usize) -> Result<&Lane<'a>, &str> {
        let slot = &self.slots[i];
        slot.lane
            .get_or_init(|| {
                lane(&slot.name, &slot.config, &self.ctx, self.cluster).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// The lanes built so far.
    fn built(&self) -> impl Iterator<Item = &Lane<'a>> {
        self.slots
            .iter()
            .filter_map(|s| s.lane.get().and_then(|l| l.as_ref().ok()))
    }
}

/// The provider name `job` uses for `channel`.
/// Every provider a run of `job` may send through: the job's own for each channel and,
/// with a `route` script, those it names (every one that carries the channel when it
/// names none literally).
pub fn providers_of(job: &Job, config: &Config) -> BTreeSet<String> {
    let channels = job.send_to.channels();
    let mut names: BTreeSet<String> = channels
        .iter()
        .map(|&c| provider_name(job, config, c))
        .collect();
    if let Some(scripts) = job
        .scripts
        .as_ref()
        .filter(|s| s.has(crate::script::Hook::Route))
    {
        let carries = |pc: &ProviderConfig| channels.iter().any(|c| pc.carries(*c));
        let literal: Vec<&str> = scripts
            .route_literals()
            .iter()
            .map(|(name, ..)| name.as_str())
            .filter(|n| config.providers.get(*n).is_some_and(carries))
            .collect();
        if literal.is_empty() {
            names.extend(
                config
                    .providers
                    .iter()
                    .filter(|(_, pc)| carries(pc))
                    .map(|(n, _)| n.clone()),
            );
        } else {
            names.extend(literal.into_iter().map(String::from));
        }
    }
    names
}

/// Refuses, naming each variable, when a secret a run of `job` uses is not set: the
/// credentials of its providers, and the unsubscribe key of a job whose emails carry
/// unsubscribe links.
pub fn secrets_of(job: &Job, config: &Config) -> Result<(), crate::diag::Diagnostics> {
    let providers = providers_of(job, config);
    let prefixes: Vec<String> = providers
        .iter()
        .map(|n| format!("providers.{n}."))
        .collect();
    let links = job.unsubscribe && config.email.unsubscribe.is_some();
    config.require_secrets(|field| {
        prefixes.iter().any(|p| field.starts_with(p))
            || (links && field == "email.unsubscribe.secret")
    })
}

pub(super) fn provider_name(job: &Job, config: &Config, channel: Channel) -> String {
    match (&job.provider, channel) {
        (Some(p), c) if c != Channel::Portal => p.clone(),
        _ => config.channels.provider_for(channel).to_string(),
    }
}

fn lane<'a>(
    name: &str,
    config: &ProviderConfig,
    ctx: &BuildContext<'a>,
    cluster: Option<&Cluster>,
) -> Result<Lane<'a>, SendError> {
    let provider =
        provider::build(name, config, ctx).map_err(|e| SendError::Build(name.to_string(), e))?;
    let limits = match config {
        ProviderConfig::Http(c) => Some(&c.limits),
        ProviderConfig::Bulksms(c) => Some(&c.limits),
        ProviderConfig::Clickatell(c) => Some(&c.limits),
        ProviderConfig::Twilio(c) => Some(&c.limits),
        ProviderConfig::Vonage(c) => Some(&c.limits),
        ProviderConfig::Smtp(c) => Some(&c.limits),
        ProviderConfig::Sendgrid(c) => Some(&c.limits),
        ProviderConfig::Mailgun(c) => Some(&c.limits),
        ProviderConfig::Ses(c) => Some(&c.limits),
        ProviderConfig::File(_) | ProviderConfig::Portal(_) => None,
    };
    let default = provider::Limits::default();
    let local = limits.is_none();
    let limits = limits.unwrap_or(&default);
    // Local providers (the outbox file, the portal inbox) take whatever comes.
    let concurrency = match (local, limits.concurrency) {
        (true, _) => LOCAL_CONCURRENCY,
        (false, c) => c.unwrap_or(8) as usize,
    };
    // A crash leaves the window's messages `sending`. Where resubmitting is safe (local
    // providers, BulkSMS's deduplication) a wide window buys throughput; elsewhere those
    // messages would become `unknown`, so the window is the concurrency itself.
    let deduplicates = local || matches!(config, ProviderConfig::Bulksms(_));
    let window = if deduplicates {
        (concurrency * WINDOW_FACTOR).clamp(64, MAX_IN_FLIGHT)
    } else {
        concurrency
    };
    Ok(Lane {
        name: name.to_string(),
        provider,
        limiter: limits.rate.map(|r| {
            let local = limiter(r, limits.burst);
            Limit::new(cluster, provider_key(name), r, limits.burst, local)
        }),
        window: tokio::sync::Semaphore::new(window),
        permits: tokio::sync::Semaphore::new(concurrency),
        deduplicates,
        retries: limits.retries.unwrap_or(5),
        backoff: limits
            .backoff
            .as_deref()
            .and_then(|b| humantime::parse_duration(b).ok())
            .unwrap_or(Duration::from_secs(1)),
    })
}

/// Sends `job` (or one test message), writing every message's fate to the ledger.
pub fn send(
    job: &Job,
    config: &Config,
    store: &dyn Store,
    options: &SendOptions,
) -> Result<Summary, SendError> {
    secrets_of(job, config).map_err(SendError::MissingSecrets)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("crier-send")
        .enable_all()
        .build()
        .map_err(SendError::Runtime)?;
    // lettre's pool and reqwest expect a runtime around them from the start.
    let _entered = runtime.enter();
    // Held until the run ends; a test message may go out while the job runs.
    let claim = match (&options.test_to, options.join) {
        (Some(_), _) | (_, Some(_)) => None,
        (None, None) => Some(super::running::claim(&job.name).map_err(|run| {
            SendError::Busy {
                job: job.name.clone(),
                run: run
                    .map(|r| format!(" (run {r}; `crier history cancel {r}` stops it)"))
                    .unwrap_or_default(),
            }
        })?),
    };

    let ctx = BuildContext {
        http: provider::http_client(),
        data_dir: &config.data_dir,
        inbox: store.history(),
    };
    let mut lanes = Lanes {
        slots: Vec::new(),
        ctx,
        cluster: store.cluster(),
    };
    let mut lane_of: BTreeMap<Channel, usize> = BTreeMap::new();
    for &channel in job.send_to.channels() {
        let name = provider_name(job, config, channel);
        let Some(pc) = config.providers.get(&name) else {
            return Err(SendError::NoProvider(name));
        };
        if !pc.carries(channel) {
            return Err(SendError::WrongChannel {
                name,
                kind: pc.type_name(),
                channel,
            });
        }
        let index = match lanes.index(&name) {
            Some(i) => i,
            None => {
                let built = lane(&name, pc, &lanes.ctx, lanes.cluster)?;
                let i = lanes.add(&name, pc);
                let _ = lanes.slots[i].lane.set(Ok(built));
                i
            }
        };
        lane_of.insert(channel, index);
    }
    let own: Vec<usize> = {
        let mut own: Vec<usize> = lane_of.values().copied().collect();
        own.sort_unstable();
        own.dedup();
        own
    };
    if job
        .scripts
        .as_ref()
        .is_some_and(|s| s.has(crate::script::Hook::Route))
    {
        for (name, pc) in &config.providers {
            if job.send_to.channels().iter().any(|c| pc.carries(*c)) {
                lanes.add(name, pc);
            }
        }
    }
    if let Some(min) = job.min_balance.filter(|_| options.join.is_none()) {
        for lane in own.iter().filter_map(|&i| lanes.get(i).ok()) {
            match runtime.block_on(lane.provider.balance()) {
                Ok(Some(b)) if b.amount < min => {
                    return Err(SendError::LowBalance {
                        name: lane.name.clone(),
                        balance: b.amount,
                        unit: b.unit,
                        min,
                    });
                }
                Ok(Some(_)) => {}
                Ok(None) => tracing::warn!(
                    provider = %lane.name,
                    "The provider has no balance to check against min_balance."
                ),
                Err(e) => return Err(SendError::Balance(lane.name.clone(), e)),
            }
        }
    }

    let templates = Templates::new(store.directory());
    let testing = options.test_to.is_some();
    let optouts = (!testing).then(|| OptOuts::new(store.directory()));
    let ledger = Ledger::new(store);
    let body = super::body_source(job, Some(&templates))?.1;
    let new_run = NewRun {
        job: job.name.clone(),
        trigger: if testing {
            Trigger::Test
        } else {
            options.trigger.clone().unwrap_or(Trigger::Manual)
        },
        channels: job.send_to.channels().to_vec(),
        provider: own
            .iter()
            .map(|&i| lanes.name(i))
            .collect::<Vec<_>>()
            .join("+"),
        body,
        subject: job.subject.clone(),
    };
    // On PostgreSQL, every worker claims the run's messages from the database and sends
    // them; the embedded store's one process hands its planned messages straight on.
    let cluster = store.cluster().filter(|_| !testing);
    let holder = cluster.map(|_| {
        options
            .holder
            .clone()
            .or_else(|| crate::cluster::members::current().map(|w| w.holder()))
            .unwrap_or_else(|| Holder::new(&crate::cluster::claims::default_worker_id()))
    });
    let shared = cluster.zip(holder.as_ref());
    let resume = match options.retry_failed {
        Some(of) => {
            let old = ledger.run(of)?;
            if old.job != job.name {
                return Err(SendError::Retry(format!(
                    "run {of} is of job `{}`, not `{}`",
                    old.job, job.name
                )));
            }
            match ledger.create_retry(of)? {
                Some(retry) => Some(retry.id),
                None => {
                    return Err(SendError::Retry(format!(
                        "run {of} has no failed or expired messages to retry"
                    )));
                }
            }
        }
        None => options.resume,
    };
    // Taken before the run is created, so a refused start leaves no run behind; given
    // up when this process is done with the run (see `Participation`).
    let mut taken = None;
    let (run, resumed) = match (options.join, resume, options.run_id) {
        (Some(id), ..) => (ledger.run(id)?, None),
        (None, Some(id), _) => {
            let run = ledger.run(id)?;
            if let Some((cluster, holder)) = shared {
                taken = Some(take_job(cluster, &job.name, id, holder)?);
                // What dead workers held, this run's included, is nobody's now.
                sweep(&ledger, cluster, config, &holder.id)?;
            }
            // On PostgreSQL the sweep did what a crash left `sending`: live workers'
            // messages in flight are theirs.
            let resumed = recover(&ledger, &run, config, shared.is_none())?;
            (run, Some(resumed))
        }
        (None, None, id) => {
            let id = id.unwrap_or_else(RunId::new);
            if let Some((cluster, holder)) = shared {
                taken = Some(take_job(cluster, &job.name, id, holder)?);
            }
            let created =
                ledger.create_run_with_id(id, new_run, chrono::Utc::now().timestamp_millis());
            match created {
                Ok(run) => (run, None),
                Err(e) => {
                    if let Some(taken) = &mut taken {
                        taken.keep = matches!(e, LedgerError::RunExists(_));
                    }
                    return Err(e.into());
                }
            }
        }
    };
    let mut participation = shared.map(|(cluster, holder)| Participation {
        cluster,
        holder,
        run: run.id,
        job: taken,
    });
    if let Some(claim) = &claim {
        claim.set_run(run.id);
    }
    if let Some(on_run) = &options.on_run {
        on_run(&run);
    }
    let mut planner = Planner::new(job, config, &run.id.to_string(), optouts, Some(&templates))?;
    if let Some(resumed) = &resumed {
        planner.already_planned(resumed.addresses.iter().map(|(c, a)| (*c, a.as_str())));
    }
    let span = tracing::info_span!("run", job = %job.name, run = %run.id);
    let _span = span.enter();
    tracing::info!("Sending.");

    let stop = Stop::default();
    let held = Held::default();
    let (work_tx, work_rx) = tokio::sync::mpsc::channel::<Work>(BATCH * 2);
    // One recorder per writer the history takes at once; a message's changes all go to
    // the same one, in order.
    let (record_tx, record_rx): (Vec<_>, Vec<_>) = (0..ledger.writers())
        .map(|_| mpsc::channel::<Record>())
        .unzip();
    let dispatch = Dispatch {
        lanes: &lanes,
        job_limiter: job.rate.map(|r| {
            let key = job_key(&job.name);
            Limit::new(store.cluster(), key, r, None, limiter(r, None))
        }),
        expire_after: job.expire_after,
        record: Recorders(record_tx),
        stop: &stop,
        holder: holder.as_ref(),
        held: shared.map(|_| &held),
        progress: options.progress.clone(),
        cancel: options.cancel.clone(),
        // Send-as-test is one message a person asked for now: no window; nor is there
        // one for a run its sender told to ignore it.
        window: job
            .schedule
            .as_ref()
            .filter(|_| !testing && !options.ignore_window)
            .and_then(|s| s.window.clone().map(|w| (w, s.tz))),
    };
    let input = PlanInput {
        job,
        config,
        store,
        ledger: &ledger,
        run: &run,
        lane_of: &lane_of,
        lanes: &lanes,
        options,
        testing,
        resumed: resumed.as_ref(),
        claims: shared.is_some(),
        keep: shared
            .filter(|_| !options.enqueue)
            .map(|(cluster, holder)| (cluster, holder, &held)),
    };
    // Still planning: a worker that finds nothing to claim waits for more meanwhile.
    let planning = AtomicBool::new(options.join.is_none());
    let claimer_work = shared.filter(|_| !options.enqueue).map(|_| work_tx.clone());
    let (planned, mut summary, recorded, claimed) = std::thread::scope(|s| {
        let plan = s.spawn(|| {
            let _span = span.enter();
            let planned = match options.join {
                Some(_) => {
                    drop(work_tx);
                    Ok(PlanResult::default())
                }
                None => plan_all(&input, planner, work_tx, &stop),
            };
            planning.store(false, Ordering::SeqCst);
            planned
        });
        let claims = shared.zip(claimer_work).map(|((cluster, holder), work)| {
            s.spawn(|| {
                let _span = span.enter();
                claim_all(&input, cluster, holder, work, &stop, &planning, &held)
            })
        });
        let record: Vec<_> = record_rx
            .into_iter()
            .map(|rx| {
                s.spawn(|| {
                    let _span = span.enter();
                    record_all(&ledger, &lanes, rx, &stop)
                })
            })
            .collect();
        let summary = runtime.block_on(dispatch.run(work_rx));
        drop(dispatch);
        let planned = plan.join().unwrap_or_else(|_| Err(panicked("planner")));
        let claimed = match claims {
            Some(c) => c.join().unwrap_or_else(|_| Err(panicked("claimer"))),
            None => Ok(()),
        };
        // The first recorder's failure stopped the run; later ones may only echo it.
        let recorded = record
            .into_iter()
            .map(|r| r.join().unwrap_or_else(|_| Err(panicked("recorder"))))
            .fold(Ok(()), Result::and);
        (planned, summary, recorded, claimed)
    });
    if let Some(p) = &mut participation {
        // Shutting down: the run is left to the other workers (the leader resumes it).
        let leaving = options
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
            || options.enqueue
            || holder.as_ref().is_some_and(Holder::fenced);
        p.end(leaving);
    }
    drop(participation);
    claimed?;
    // When both failed, the one that stopped the run first names the cause; the other
    // may only echo it ("an earlier write failed").
    let planning_first = stop
        .reason()
        .is_some_and(|r| r.starts_with(PLANNING_FAILED));
    let planned = match (planned, recorded) {
        (Err(e), Err(_)) if planning_first => return Err(e),
        (_, Err(e)) => return Err(e),
        (planned, Ok(())) => planned?,
    };
    summary.skipped = planned.skipped;
    if let Some(resumed) = &resumed {
        summary.unknown += resumed.unknown;
    }
    summary.failed += planned.failed;
    summary.script_failed = planned.failed;
    summary.script_error = planned.script_error;
    summary.filtered = planned.filtered;
    summary.paused = stop.reason();
    if summary.paused.is_none()
        && summary.deferred > 0
        && let Some(opens) = summary.reopens
    {
        let tz = job
            .schedule
            .as_ref()
            .map(|s| s.tz)
            .unwrap_or(chrono_tz::UTC);
        let reason = format!(
            "{OUTSIDE_WINDOW} of {} recipients in their own time zones (the first opens {})",
            summary.deferred,
            crate::job::schedule::zoned(opens, tz)
        );
        tracing::info!(reason = %reason, "Run paused.");
        summary.paused = Some(reason);
    }
    if planned.complete && summary.paused.is_none() {
        ledger.finish_planning(run.id)?;
    }
    ledger.flush()?;
    let run = ledger.run(run.id)?;
    summary.queued = run.counters.get(MessageState::Queued);
    if shared.is_some() && options.join.is_none() {
        // Every worker sent some of it: the run's own counts, not this process's share.
        let c = &run.counters;
        summary.sent = c.get(MessageState::Sent)
            + c.get(MessageState::Delivered)
            + c.get(MessageState::Undelivered);
        summary.failed = c.get(MessageState::Failed);
        summary.expired = c.get(MessageState::Expired);
        summary.unknown = c.get(MessageState::Unknown);
    }
    summary.run = Some(run);
    tracing::info!(
        sent = summary.sent,
        failed = summary.failed,
        paused = summary.paused.is_some(),
        "Run done."
    );
    Ok(summary)
}

fn panicked(part: &str) -> SendError {
    SendError::Ledger(LedgerError::Store(StoreError::Corrupt {
        path: part.into(),
        detail: format!("the {part} thread panicked"),
    }))
}

/// Why the run stopped early, shared by every part of the pipeline.
#[derive(Default)]
struct Stop {
    stopped: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Stop {
    fn stop(&self, reason: String) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            tracing::error!(reason = %reason, "Run paused.");
            *r = Some(reason);
        }
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A planned message on its way to a provider.
struct Work {
    id: MessageId,
    /// The lanes to try, in failover order (at least one).
    route: Vec<usize>,
    message: RoutedMessage,
    planned_at: Instant,
    /// The recipient's own time zone, for `window.per_recipient`.
    tz: Option<chrono_tz::Tz>,
}

/// A recipient's `timezone`, if it names a zone.
fn zone_of(timezone: Option<&str>) -> Option<chrono_tz::Tz> {
    timezone.and_then(|z| z.parse().ok())
}

struct PlanInput<'s, 'a> {
    job: &'s Job,
    config: &'s Config,
    store: &'s dyn Store,
    ledger: &'s Ledger<'a>,
    run: &'s Run,
    lane_of: &'s BTreeMap<Channel, usize>,
    lanes: &'s Lanes<'a>,
    options: &'s SendOptions,
    testing: bool,
    resumed: Option<&'s Resumed>,
    /// Workers claim the planned messages from the database (PostgreSQL): planning
    /// hands nothing on, except what it keeps (below).
    claims: bool,
    /// With claims, while no daemon could help with the run, the planner keeps what it
    /// plans: written as this worker's and handed straight to the dispatcher, so no claim
    /// has to take it back out of the database (one update a message less). A daemon
    /// that starts meanwhile helps with what is planned after it registered.
    keep: Option<(&'s Cluster, &'s Holder, &'s Held)>,
}

#[derive(Default)]
struct PlanResult {
    skipped: BTreeMap<&'static str, u64>,
    /// Messages a script failed for (recorded `failed`).
    failed: u64,
    /// The first script error met (script, line, limit).
    script_error: Option<String>,
    /// Recipients the `filter` script left out.
    filtered: u64,
    /// Every recipient was planned (not cut short by a pause).
    complete: bool,
}

fn plan_all(
    input: &PlanInput,
    mut planner: Planner,
    work: tokio::sync::mpsc::Sender<Work>,
    stop: &Stop,
) -> Result<PlanResult, SendError> {
    let result = plan_inner(input, &mut planner, &work, stop);
    if let Err(e) = &result {
        stop.stop(format!("{PLANNING_FAILED}: {e}"));
    }
    result
}

fn plan_inner(
    input: &PlanInput,
    planner: &mut Planner,
    work: &tokio::sync::mpsc::Sender<Work>,
    stop: &Stop,
) -> Result<PlanResult, SendError> {
    let from_store = match input.job.recipients.source {
        Source::Store => Some(input.store),
        Source::Csv(_) => None,
    };
    let mut result = PlanResult {
        skipped: BTreeMap::new(),
        failed: 0,
        script_error: None,
        filtered: 0,
        complete: false,
    };
    if let Some(resumed) = input.resumed {
        // What the interrupted run had planned and not sent goes first (workers claim it).
        if !input.claims && !hand_on_queued(input, work)? {
            return Ok(result);
        }
        if resumed.planned_all {
            result.complete = true;
            return Ok(result);
        }
    }
    let mut pending: Vec<Planned> = Vec::with_capacity(BATCH);
    let mut found = false;
    let recipients = source::resolve(&input.job.recipients, from_store, input.config.region)?;
    'recipients: for batch in source::batches(recipients, source::PLAN_BATCH) {
        if !input.testing {
            let ok: Vec<_> = batch.iter().filter_map(|i| i.as_ref().ok()).collect();
            planner.prime(&ok)?;
        }
        for item in batch {
            if stop.stopped() {
                return Ok(result);
            }
            let r = item?;
            if input
                .resumed
                .is_some_and(|s| s.recipients.contains(&(r.kind, r.id)))
            {
                continue; // Planned before the interruption.
            }
            if let Some(id) = input.options.recipient
                && id != r.id
            {
                continue;
            }
            found = true;
            let planned_for = planner.plan(&r)?;
            result.filtered = planner.filtered();
            if planned_for.is_empty() && input.testing && input.options.recipient.is_none() {
                // A send-as-test uses the first recipient the job's filter keeps.
                continue;
            }
            for mut planned in planned_for {
                if let Some(to) = &input.options.test_to {
                    planned.address = Some(to.clone());
                    planned.skip = None;
                }
                pending.push(planned);
            }
            if input.testing {
                break 'recipients;
            }
            if pending.len() >= BATCH
                && !hand_on(input, std::mem::take(&mut pending), work, &mut result)?
            {
                return Ok(result);
            }
        }
    }
    if let Some(id) = input.options.recipient
        && !found
    {
        return Err(SendError::NoRecipient(id));
    }
    if !hand_on(input, pending, work, &mut result)? {
        return Ok(result);
    }
    result.complete = true;
    Ok(result)
}

/// Writes one batch to the ledger and passes the sendable messages to the dispatcher.
/// `false` when the dispatcher has stopped taking messages.
fn hand_on(
    input: &PlanInput,
    batch: Vec<Planned>,
    work: &tokio::sync::mpsc::Sender<Work>,
    result: &mut PlanResult,
) -> Result<bool, SendError> {
    if batch.is_empty() {
        return Ok(true);
    }
    let messages: Vec<NewMessage> = batch
        .iter()
        .map(|p| NewMessage {
            recipient_kind: p.recipient.kind,
            recipient_id: p.recipient.id,
            address: p.address.clone().unwrap_or_default(),
            channel: p.channel,
            provider: match p.route.first() {
                Some(first) => first.clone(),
                None => input.lanes.name(input.lane_of[&p.channel]).to_string(),
            },
            kind: if input.testing {
                MessageType::Test
            } else {
                MessageType::Message
            },
            subject: p.subject.clone(),
            body: p.body.clone(),
            encoding: p.encoding.map(|e| e.as_str().to_string()),
            parts: p.parts as u32,
            state: match &p.skip {
                Some((SkipReason::ScriptFailed, _)) => MessageState::Failed,
                Some(_) => MessageState::Skipped,
                None => MessageState::Queued,
            },
            reason: p.skip.as_ref().map(|(r, _)| r.as_str().to_string()),
            error: match &p.skip {
                Some((SkipReason::ScriptFailed, detail)) => {
                    Some(("script_failed".into(), detail.clone()))
                }
                _ => None,
            },
            snapshot: RecipientSnapshot::of(&p.recipient),
            html: p.html.clone(),
            route: p.route.iter().skip(1).cloned().collect(),
        })
        .collect();
    let keep = match input.keep {
        Some((cluster, holder, held)) => {
            let helped = cluster.helpers(&holder.id).map_err(LedgerError::from)?;
            (!helped).then_some((holder, held))
        }
        None => None,
    };
    // Planning hands the sendable messages on, unless workers claim them.
    let hands_on = !input.claims || keep.is_some();
    let planned = match keep {
        Some((holder, _)) => input.ledger.plan_held(input.run.id, messages, &holder.id),
        None => input.ledger.plan(input.run.id, messages),
    };
    let ids = match planned {
        Ok(ids) => ids,
        // Cancelled while planning: the rest is not planned, nothing more is handed on.
        Err(LedgerError::Cancelled(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let dedup_base = match ids.first() {
        Some(first) if hands_on => input.ledger.dedup_id(*first)?,
        _ => 0,
    };
    let now = Instant::now();
    for (i, (p, id)) in batch.into_iter().zip(ids).enumerate() {
        if let Some((reason, detail)) = &p.skip {
            if *reason == SkipReason::ScriptFailed {
                // Once at warn (the summary and the daemon's error say the rest), not
                // once per recipient of a script that fails for all of them.
                if result.script_error.is_none() {
                    tracing::warn!(message = %id, error = %detail, "A script failed; the message failed.");
                    result.script_error = Some(detail.clone());
                } else {
                    tracing::debug!(message = %id, error = %detail, "A script failed; the message failed.");
                }
                result.failed += 1;
            } else {
                *result.skipped.entry(reason.as_str()).or_default() += 1;
            }
            continue;
        }
        if !hands_on {
            continue; // In the database for whichever worker claims it.
        }
        let message = RoutedMessage {
            id: id.to_string(),
            channel: p.channel,
            to: p.address.unwrap_or_default(),
            subject: p.subject,
            body: p.body,
            html: p.html,
            encoding: p.encoding,
            parts: p.parts as u32,
            recipient_id: p.recipient.id,
            attach: if p.channel == Channel::Email {
                input.job.attach.clone()
            } else {
                Vec::new()
            },
            unsubscribe: p.unsubscribe,
            dedup_id: crate::history::ledger::dedup_after(dedup_base, i as u64),
        };
        let default = input.lane_of[&p.channel];
        let route = if p.route.is_empty() {
            vec![default]
        } else {
            // The planner checked every name against the configured providers that
            // carry the channel, and a lane exists for each of those.
            p.route
                .iter()
                .map(|name| input.lanes.index(name).unwrap_or(default))
                .collect()
        };
        let item = Work {
            id,
            route,
            message,
            planned_at: now,
            tz: zone_of(p.recipient.timezone.as_deref()),
        };
        if let Some((_, held)) = keep {
            held.claimed(1); // Settled by the dispatcher like a claimed one.
        }
        if work.blocking_send(item).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What an interrupted run already holds, for [`send`] with `resume`.
pub struct Resumed {
    /// The run had planned every recipient.
    pub planned_all: bool,
    /// Recipients with a message in the run (not planned again).
    pub recipients: std::collections::HashSet<(crate::recipients::RecipientKind, u64)>,
    /// Addresses already in the run, for duplicate detection.
    pub addresses: Vec<(Channel, String)>,
    /// Messages in flight when the run stopped, now `unknown` (not resent).
    pub unknown: u64,
    /// Messages in flight that were resubmitted safely (BulkSMS deduplication).
    pub resubmitted: u64,
}

/// Prepares an interrupted run to go on. Messages left `sending` were in flight when the
/// process stopped: where the provider deduplicates resubmissions (BulkSMS, with the
/// message's own `deduplication-id`) they go back to `queued` and are sent again, safely;
/// elsewhere they become `unknown` — never a blind resend — for a person to decide.
///
/// `in_flight`: whether to do that here (one process, the embedded store); on
/// PostgreSQL [`sweep`] does it for the workers that stopped, and a live worker's
/// messages in flight stay its own.
pub fn recover(
    ledger: &Ledger,
    run: &Run,
    config: &Config,
    in_flight: bool,
) -> Result<Resumed, SendError> {
    let mut resumed = Resumed {
        planned_all: run.planned_all,
        recipients: Default::default(),
        addresses: Vec::new(),
        unknown: 0,
        resubmitted: 0,
    };
    let mut changes = Vec::new();
    for m in ledger.messages_of(run.id, None) {
        let m = m?;
        resumed
            .recipients
            .insert((m.recipient_kind, m.recipient_id));
        resumed.addresses.push((m.channel, m.address.clone()));
        if !in_flight || m.state != MessageState::Sending {
            continue;
        }
        let change = after_interruption(&m, config, "in flight when crier stopped; not resent");
        match change.to {
            MessageState::Queued => resumed.resubmitted += 1,
            _ => resumed.unknown += 1,
        }
        changes.push(change);
        if changes.len() >= BATCH {
            ledger.record(&std::mem::take(&mut changes))?;
        }
    }
    ledger.record(&changes)?;
    Ok(resumed)
}

/// Hands the run's `queued` messages to the dispatcher, as the ledger holds them.
fn hand_on_queued(
    input: &PlanInput,
    work: &tokio::sync::mpsc::Sender<Work>,
) -> Result<bool, SendError> {
    let ids: Vec<MessageId> = input
        .ledger
        .ids_in_state(input.run.id, MessageState::Queued)
        .collect::<Result<_, _>>()?;
    let rebuild = Rebuild::new(input);
    for id in ids {
        let m = input.ledger.message(id)?;
        let dedup_id = input.ledger.dedup_id(id)?;
        let Some(item) = rebuild.work(m, dedup_id)? else {
            continue;
        };
        if work.blocking_send(item).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Turns messages as the history holds them back into work for the dispatcher (a
/// resumed run's, or those a worker claimed).
struct Rebuild<'i, 's, 'a> {
    input: &'i PlanInput<'s, 'a>,
    unsubscriber: Option<crate::recipients::unsubscribe::Unsubscriber>,
    per_recipient: bool,
    now: Instant,
    now_ms: i64,
}

impl<'i, 's, 'a> Rebuild<'i, 's, 'a> {
    fn new(input: &'i PlanInput<'s, 'a>) -> Self {
        Rebuild {
            input,
            unsubscriber: input
                .config
                .email
                .unsubscribe
                .as_ref()
                .filter(|_| input.job.unsubscribe)
                .map(|u| u.unsubscriber()),
            per_recipient: input
                .job
                .schedule
                .as_ref()
                .and_then(|s| s.window.as_ref())
                .is_some_and(|w| w.per_recipient),
            now: Instant::now(),
            now_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// The work for `m`; `None` when no provider of this run can take it.
    fn work(&self, m: crate::history::Message, dedup_id: u32) -> Result<Option<Work>, SendError> {
        let input = self.input;
        let tz = if self.per_recipient {
            input
                .store
                .recipient(m.recipient_kind, m.recipient_id)?
                .and_then(|r| zone_of(r.timezone.as_deref()))
        } else {
            None
        };
        // `expire_after` counts from when the message was planned, not from the resume.
        let age = Duration::from_millis((self.now_ms - m.created_at).max(0) as u64);
        let planned_at = self.now.checked_sub(age).unwrap_or(self.now);
        // On the provider it was queued for (after a failover, the next one of its route),
        // then on those its route still names.
        let Some(lane) = input
            .lanes
            .index(&m.provider)
            .or_else(|| input.lane_of.get(&m.channel).copied())
        else {
            return Ok(None);
        };
        let mut route = vec![lane];
        route.extend(m.route.iter().filter_map(|name| input.lanes.index(name)));
        let message = RoutedMessage {
            id: m.id.to_string(),
            channel: m.channel,
            subject: m.subject,
            body: m.body,
            html: m.html,
            encoding: match m.encoding.as_deref() {
                Some("ucs2") => Some(crate::render::sms::Encoding::Ucs2),
                Some("gsm7") => Some(crate::render::sms::Encoding::Gsm7),
                _ => None,
            },
            parts: m.parts,
            recipient_id: m.recipient_id,
            attach: if m.channel == Channel::Email {
                input.job.attach.clone()
            } else {
                Vec::new()
            },
            // The links the body was rendered with: the same run, recipient and address.
            unsubscribe: match (&self.unsubscriber, m.channel) {
                (Some(u), Channel::Email) => Some(u.links(&Ticket {
                    run: m.id.run,
                    kind: m.recipient_kind,
                    recipient: m.recipient_id,
                    address: m.address.clone(),
                })),
                _ => None,
            },
            dedup_id,
            to: m.address,
        };
        Ok(Some(Work {
            id: m.id,
            route,
            message,
            planned_at,
            tz,
        }))
    }
}

/// Why a worker stops sending when its claims were handed on.
const FENCED: &str =
    "this worker was declared dead (silent past its lease): what it held was handed to others";

/// The claimer (PostgreSQL): claims the run's queued messages in batches and hands them
/// to the dispatcher, until the run is done, cancelled, stopped, or — for a worker
/// helping another's run — there has been nothing to claim for [`JOIN_IDLE`]. The
/// worker that started the run stays until no other worker holds any of it, taking
/// back what dead workers held.
fn claim_all(
    input: &PlanInput,
    cluster: &Cluster,
    holder: &Holder,
    work: tokio::sync::mpsc::Sender<Work>,
    stop: &Stop,
    planning: &AtomicBool,
    held: &Held,
) -> Result<(), SendError> {
    let run = input.run.id;
    let joining = input.options.join.is_some();
    let mut after: Option<u32> = None;
    let mut idle_since: Option<Instant> = None;
    let mut swept = Instant::now();
    loop {
        if stop.stopped() {
            return Ok(());
        }
        if holder.fenced() {
            stop.stop(FENCED.into());
            return Ok(());
        }
        if !held.room(CLAIM_BATCH, CLAIM_POLL) {
            continue; // Full: the dispatcher settles some first.
        }
        let batch = cluster
            .claim(run, &holder.id, after, CLAIM_BATCH)
            .map_err(LedgerError::from)?;
        held.claimed(batch.len());
        if let Some((last, _)) = batch.last() {
            after = Some(last.id.seq);
            idle_since = None;
            let rebuild = Rebuild::new(input);
            for (m, dedup_id) in batch {
                let Some(item) = rebuild.work(m, dedup_id)? else {
                    held.settled(); // No provider of this run takes it.
                    continue;
                };
                if work.blocking_send(item).is_err() {
                    return Ok(());
                }
            }
            continue;
        }
        if planning.load(Ordering::SeqCst) {
            // More is coming, after the cursor.
            std::thread::sleep(CLAIM_POLL);
            continue;
        }
        if after.take().is_some() {
            continue; // Once more from the start: messages handed back meanwhile.
        }
        let current = input.ledger.run(run)?;
        if current.cancelled || current.finished_at.is_some() {
            return Ok(());
        }
        if joining {
            if idle_since.get_or_insert_with(Instant::now).elapsed() >= JOIN_IDLE {
                return Ok(());
            }
        } else {
            if cluster
                .pending_elsewhere(run, &holder.id)
                .map_err(LedgerError::from)?
                == 0
            {
                return Ok(());
            }
            if swept.elapsed() >= SWEEP_EVERY {
                sweep(input.ledger, cluster, input.config, &holder.id)?;
                swept = Instant::now();
            }
        }
        std::thread::sleep(CLAIM_POLL);
    }
}

/// How many messages a worker holds and has not settled, so that it claims no more
/// than [`HOLD_MAX`].
#[derive(Default)]
struct Held {
    count: Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Held {
    /// Waits up to `wait` until `n` more fit; whether they do.
    fn room(&self, n: usize, wait: Duration) -> bool {
        let count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let (count, _) = self
            .freed
            .wait_timeout_while(count, wait, |c| *c + n > HOLD_MAX)
            .unwrap_or_else(|e| e.into_inner());
        *count + n <= HOLD_MAX
    }

    fn claimed(&self, n: usize) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += n;
    }

    fn settled(&self) {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_sub(1);
        self.freed.notify_one();
    }
}

/// What [`sweep`] took back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Workers whose messages were taken back.
    pub workers: Vec<String>,
    /// Claimed messages not yet sending, handed back to any worker.
    pub released: u64,
    /// Messages in flight resubmitted (their provider deduplicates).
    pub resubmitted: u64,
    /// Messages in flight that became `unknown` (not resent).
    pub unknown: u64,
}

/// Takes back what workers that are not alive held (PostgreSQL): their messages in
/// flight are resubmitted where the provider deduplicates and otherwise become
/// `unknown` — never a blind resend — and their claimed messages go back to any worker.
/// `me`: the sweeping worker, never counted among the stopped.
pub fn sweep(
    ledger: &Ledger,
    cluster: &Cluster,
    config: &Config,
    me: &str,
) -> Result<Swept, SendError> {
    let mut swept = Swept::default();
    for worker in cluster.orphans(me).map_err(LedgerError::from)? {
        let why = format!("in flight on worker `{worker}` when it stopped; not resent");
        loop {
            let held = cluster
                .held(&worker, MessageState::Sending, BATCH)
                .map_err(LedgerError::from)?;
            if held.is_empty() {
                break;
            }
            let changes: Vec<Change> = held
                .iter()
                .map(|m| {
                    let change = after_interruption(m, config, &why);
                    match change.to {
                        MessageState::Queued => swept.resubmitted += 1,
                        _ => swept.unknown += 1,
                    }
                    change
                })
                .collect();
            if ledger.record(&changes)?.iter().all(Result::is_err) {
                break; // Nothing moved: another sweep got there first.
            }
        }
        swept.released += cluster.release(&worker, None).map_err(LedgerError::from)?;
        tracing::warn!(worker = %worker, "Took back what a worker that stopped held.");
        swept.workers.push(worker);
    }
    if !swept.workers.is_empty() {
        tracing::warn!(
            workers = swept.workers.len(),
            released = swept.released,
            resubmitted = swept.resubmitted,
            unknown = swept.unknown,
            "Swept the claims of stopped workers."
        );
    }
    Ok(swept)
}

/// What becomes of a message left `sending` by a process that stopped: back to
/// `queued` where its provider deduplicates a resubmission (BulkSMS, with the message's
/// own `deduplication-id`), otherwise `unknown` with `why`.
fn after_interruption(m: &crate::history::Message, config: &Config, why: &str) -> Change {
    let idempotent = matches!(
        config.providers.get(&m.provider),
        Some(ProviderConfig::Bulksms(_))
    );
    let mut change = Change::to(m.id, MessageState::Queued);
    if idempotent {
        change.reason = Some("resubmitted after a restart (deduplicated)".into());
    } else {
        change.to = MessageState::Unknown;
        change.error = Some(("interrupted".into(), why.into()));
    }
    change
}

/// The job's row in `job_runs`, for this run, or why not.
fn take_job(
    cluster: &Cluster,
    job: &str,
    run: RunId,
    holder: &Holder,
) -> Result<JobTaken, SendError> {
    match cluster
        .lock_job(job, run, &holder.id)
        .map_err(LedgerError::from)?
    {
        Ok(()) => Ok(JobTaken {
            job: job.to_string(),
            keep: false,
        }),
        Err((other, worker)) => Err(SendError::Busy {
            job: job.to_string(),
            run: format!(
                " (run {other}, started by worker `{worker}`; `crier history cancel {other}` stops it)"
            ),
        }),
    }
}

/// A job taken for a run; `keep`: left to the other workers when this process is done.
struct JobTaken {
    job: String,
    keep: bool,
}

/// This process's part in a run on PostgreSQL: when it ends (or fails), what it holds
/// and has not sent goes back to the other workers, and the job is given up unless the
/// run is left to them.
struct Participation<'c> {
    cluster: &'c Cluster,
    holder: &'c Holder,
    run: RunId,
    job: Option<JobTaken>,
}

impl Participation<'_> {
    /// `leaving`: this process stops (shutdown, `--enqueue`, declared dead): the job
    /// stays with the run, for the leader to resume it.
    fn end(&mut self, leaving: bool) {
        if let Err(e) = self.cluster.release(&self.holder.id, Some(self.run)) {
            tracing::error!(error = %e, "Cannot hand back the claimed messages: the leader takes them back once this worker is gone.");
        }
        if let Some(job) = self.job.take()
            && !leaving
            && !job.keep
            && let Err(e) = self.cluster.unlock_job(&job.job, self.run)
        {
            tracing::error!(error = %e, "Cannot give up the job.");
        }
    }
}

impl Drop for Participation<'_> {
    fn drop(&mut self) {
        // After `end` this has nothing left to give up; on an error it is the cleanup.
        self.end(false);
    }
}

/// A state change for the recorder; `ack` hears whether it is durable.
struct Record {
    change: Change,
    ack: Option<oneshot::Sender<Ack>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// Durable.
    Done,
    /// The ledger refused the transition (the message was cancelled meanwhile).
    Refused,
    /// The store failed; the run stops.
    Failed,
}

/// The recorders' inboxes: a message's changes go to one of them, picked by its
/// sequence number, so each message's changes are committed in the order they were made.
struct Recorders(Vec<mpsc::Sender<Record>>);

impl Recorders {
    /// Hands `record` to its recorder; `false` when that recorder has stopped.
    fn send(&self, record: Record) -> bool {
        let shard = record.change.id.seq as usize % self.0.len();
        self.0[shard].send(record).is_ok()
    }
}

/// A recorder: group-commits whatever changes have arrived, one flush per group.
fn record_all(
    ledger: &Ledger,
    lanes: &Lanes,
    records: mpsc::Receiver<Record>,
    stop: &Stop,
) -> Result<(), SendError> {
    let mut failure = None;
    while let Ok(first) = records.recv() {
        let mut group = vec![first];
        while group.len() < COMMIT_MAX {
            match records.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        if failure.is_some() {
            for r in group {
                if let Some(ack) = r.ack {
                    let _ = ack.send(Ack::Failed);
                }
            }
            continue;
        }
        let result = commit(ledger, lanes, &group);
        match result {
            Ok(results) => {
                for (r, ok) in group.into_iter().zip(results) {
                    if let Some(ack) = r.ack {
                        let _ = ack.send(if ok { Ack::Done } else { Ack::Refused });
                    }
                }
            }
            Err(e) => {
                stop.stop(format!("the history cannot be written: {e}"));
                for r in group {
                    if let Some(ack) = r.ack {
                        let _ = ack.send(Ack::Failed);
                    }
                }
                failure = Some(e);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn commit(ledger: &Ledger, lanes: &Lanes, group: &[Record]) -> Result<Vec<bool>, SendError> {
    if group.iter().any(|r| r.change.to == MessageState::Sent) {
        // What a provider buffered (the file outbox) is on disk before it counts as sent.
        for lane in lanes.built() {
            lane.provider.sync().map_err(|e| {
                SendError::Store(StoreError::Io {
                    path: lane.name.clone().into(),
                    error: std::io::Error::other(e),
                })
            })?;
        }
    }
    let changes: Vec<Change> = group.iter().map(|r| r.change.clone()).collect();
    let results = ledger.record(&changes)?;
    Ok(results.iter().map(Result::is_ok).collect())
}

/// How one message ended, for the summary.
enum Settled {
    Sent {
        parts: u32,
    },
    Failed,
    Expired,
    Unknown,
    /// Left `queued` (a pause) or no longer ours (cancelled meanwhile).
    NotSent,
    /// Left `queued`: outside the send window in the recipient's own zone, which opens at
    /// this instant (`window.per_recipient`).
    Deferred(chrono::DateTime<chrono::Utc>),
}

struct Dispatch<'s, 'a> {
    lanes: &'s Lanes<'a>,
    job_limiter: Option<Limit>,
    expire_after: Duration,
    record: Recorders,
    stop: &'s Stop,
    /// The worker sending (PostgreSQL): its changes are refused for messages it no
    /// longer holds.
    holder: Option<&'s Holder>,
    /// What this worker holds (PostgreSQL): each message settled makes room to claim.
    held: Option<&'s Held>,
    progress: Option<Arc<ProgressFn>>,
    cancel: Option<Arc<AtomicBool>>,
    /// The job's send window and zone.
    window: Option<(crate::job::schedule::Window, chrono_tz::Tz)>,
}

impl Dispatch<'_, '_> {
    async fn run(&self, mut work: tokio::sync::mpsc::Receiver<Work>) -> Summary {
        let mut summary = Summary::default();
        let mut in_flight = FuturesUnordered::new();
        let mut open = true;
        let mut settled = 0u64;
        loop {
            if let Some(cancel) = &self.cancel
                && cancel.load(Ordering::SeqCst)
                && !self.stop.stopped()
            {
                self.stop.stop("crier is shutting down".into());
            }
            if self.holder.is_some_and(Holder::fenced) && !self.stop.stopped() {
                self.stop.stop(FENCED.into());
            }
            if open && self.stop.stopped() {
                // Whatever is still in the queue stays `queued` in the ledger.
                work.close();
                open = false;
            }
            tokio::select! {
                biased;
                Some((outcome, retries)) = in_flight.next(), if !in_flight.is_empty() => {
                    summary.retries += retries;
                    match outcome {
                        Settled::Sent { parts } => {
                            summary.sent += 1;
                            summary.parts += parts as u64;
                        }
                        Settled::Failed => summary.failed += 1,
                        Settled::Expired => summary.expired += 1,
                        Settled::Unknown => summary.unknown += 1,
                        Settled::NotSent => {}
                        Settled::Deferred(opens) => {
                            summary.deferred += 1;
                            summary.reopens = Some(summary.reopens.map_or(opens, |t| t.min(opens)));
                        }
                    }
                    settled += 1;
                    if let Some(held) = self.held {
                        held.settled();
                    }
                    if let Some(p) = &self.progress {
                        p(settled);
                    }
                }
                item = work.recv(), if open && in_flight.len() < MAX_IN_FLIGHT => match item {
                    Some(w) => in_flight.push(self.deliver(w)),
                    None => open = false,
                },
                else => break,
            }
        }
        summary
    }

    /// Hands a change to the recorder; with `wait`, returns once it is durable.
    async fn record(&self, mut change: Change, wait: bool) -> Ack {
        change.worker = self.holder.map(|h| h.id.clone());
        if !wait {
            return if self.record.send(Record { change, ack: None }) {
                Ack::Done
            } else {
                Ack::Failed
            };
        }
        let (tx, rx) = oneshot::channel();
        if !self.record.send(Record {
            change,
            ack: Some(tx),
        }) {
            return Ack::Failed;
        }
        rx.await.unwrap_or(Ack::Failed)
    }

    /// One message from `queued` to its outcome, along its route; returns the outcome
    /// and the retries it took.
    async fn deliver(&self, w: Work) -> (Settled, u64) {
        let deadline = w.planned_at + self.expire_after;
        let mut retries = 0;
        for (hop, &lane) in w.route.iter().enumerate() {
            let next = w.route.get(hop + 1).map(|&i| self.lanes.name(i));
            match self.deliver_on(&w, lane, next, deadline).await {
                Hop::Settled(settled, r) => return (settled, retries + r),
                Hop::Next(r) => retries += r,
            }
        }
        (Settled::NotSent, retries)
    }

    /// The message on one provider: retries until an outcome, or until the provider
    /// rejects it or its retries run out and `next` is there to fail over to.
    async fn deliver_on(
        &self,
        w: &Work,
        lane_index: usize,
        next: Option<&str>,
        deadline: Instant,
    ) -> Hop {
        let lane = match self.lanes.get(lane_index) {
            Ok(lane) => lane,
            Err(e) => {
                // A provider that cannot be set up rejects every message it is given.
                let name = self.lanes.name(lane_index);
                tracing::warn!(provider = %name, error = %e, "Provider cannot be set up.");
                match self
                    .record(Change::to(w.id, MessageState::Sending), true)
                    .await
                {
                    Ack::Done => {}
                    Ack::Refused | Ack::Failed => return Hop::Settled(Settled::NotSent, 0),
                }
                let error = ("provider_unavailable".to_string(), e.to_string());
                return self.give_up(w, name, next, error, 0, false).await;
            }
        };
        let mut attempts: u32 = 0;
        // Whether an answer is recorded durably before the message's window slot frees.
        // One recorder commits changes in the order they were made, so a slot freed at
        // the answer is taken by a `sending` mark committed after that answer. Several
        // commit in no set order: only a durable answer keeps a crash from leaving more
        // than the window in `sending`, where those would become `unknown`.
        let durable = !lane.deduplicates && self.record.0.len() > 1;
        // Why an earlier attempt may have reached the provider (its answer was lost and
        // the provider deduplicates resubmissions): from then on the message ends `sent`
        // or `unknown`, never `failed`, `expired` or on another provider.
        let mut unsure: Option<String> = None;
        loop {
            if let Some((window, job_tz)) = &self.window
                && window.per_recipient
            {
                let tz = w.tz.unwrap_or(*job_tz);
                let now = chrono::Utc::now();
                // Only before its first attempt: a message being retried finishes.
                if attempts == 0 && !window.contains(now, tz) {
                    // Only this recipient waits; the others go on.
                    let retries = attempts.saturating_sub(1) as u64;
                    return match window.next_open(now, tz) {
                        Some(opens) => Hop::Settled(Settled::Deferred(opens), retries),
                        None => Hop::Settled(Settled::NotSent, retries),
                    };
                }
            } else if let Some((window, tz)) = &self.window {
                let now = chrono::Utc::now();
                if !window.contains(now, *tz) {
                    let opens = window
                        .next_open(now, *tz)
                        .map(|t| crate::job::schedule::zoned(t, *tz))
                        .unwrap_or_else(|| "never".into());
                    self.stop
                        .stop(format!("{OUTSIDE_WINDOW} (it opens {opens})"));
                }
            }
            let retries = attempts.saturating_sub(1) as u64;
            if self.stop.stopped() {
                return Hop::Settled(Settled::NotSent, retries);
            }
            // A message the provider may already have is resubmitted once more instead
            // (deduplicated): its answer settles it, `sent` or, on a retry past the
            // deadline, `unknown`.
            if Instant::now() >= deadline && unsure.is_none() {
                let mut c = Change::to(w.id, MessageState::Expired);
                c.reason = Some("expired".into());
                self.record(c, false).await;
                return Hop::Settled(Settled::Expired, retries);
            }
            let Ok(slot) = lane.window.acquire().await else {
                return Hop::Settled(Settled::NotSent, 0);
            };
            let mut sending = Change::to(w.id, MessageState::Sending);
            sending.attempt = true;
            match self.record(sending, true).await {
                Ack::Done => {}
                Ack::Refused | Ack::Failed => return Hop::Settled(Settled::NotSent, retries),
            }
            let Ok(permit) = lane.permits.acquire().await else {
                return Hop::Settled(Settled::NotSent, 0);
            };
            // The rate limits are taken last, just before the request: a message that
            // waited for its `sending` mark or a permit after taking its slot would
            // otherwise go out in a bunch with others that waited, above the rate.
            for l in [&self.job_limiter, &lane.limiter].into_iter().flatten() {
                if !l.check() {
                    stats::RATE_LIMIT_WAITS.fetch_add(1, Ordering::Relaxed);
                    l.until_ready().await;
                }
            }
            if self.stop.stopped() {
                // Paused while waiting for a permit: not sent, so back to `queued`.
                self.record(Change::to(w.id, MessageState::Queued), false)
                    .await;
                return Hop::Settled(Settled::NotSent, retries);
            }
            attempts += 1;
            let outcome = lane.provider.send(&w.message).await;
            drop(permit);
            // Kept until this attempt's outcome is recorded (the function returns, or the
            // retry below is recorded) where `durable`.
            let slot = if durable {
                Some(slot)
            } else {
                drop(slot);
                None
            };
            let retries = (attempts - 1) as u64;
            let mut change = Change::to(w.id, MessageState::Sent);
            let (wait, reason) = match outcome {
                SendOutcome::Sent { provider_id } => {
                    change.provider_message_id = Some(provider_id);
                    self.record(change, durable).await;
                    let parts = w.message.parts;
                    return Hop::Settled(Settled::Sent { parts }, retries);
                }
                SendOutcome::Rejected { code, text } => {
                    tracing::debug!(message = %w.id, provider = %lane.name, code = %code, "Rejected.");
                    if let Some(lost) = &unsure {
                        let last = format!("{code}: {text}");
                        return self.unsure(change, lost, &last, retries, durable).await;
                    }
                    return self
                        .give_up(w, &lane.name, next, (code, text), retries, durable)
                        .await;
                }
                SendOutcome::Unknown { reason } => {
                    tracing::warn!(message = %w.id, provider = %lane.name, reason = %reason, "Outcome unknown; not resent.");
                    change.to = MessageState::Unknown;
                    change.error = Some(("unknown".into(), reason));
                    self.record(change, durable).await;
                    return Hop::Settled(Settled::Unknown, retries);
                }
                SendOutcome::Halt { code, text } => {
                    self.stop.stop(format!(
                        "provider `{}` refused to send: {code} {text}",
                        lane.name
                    ));
                    change.to = MessageState::Queued;
                    change.error = Some((code, text));
                    self.record(change, durable).await;
                    return Hop::Settled(Settled::NotSent, retries);
                }
                SendOutcome::Retry { reason } => (None, reason),
                SendOutcome::RetryAfter { after, reason } => {
                    // The account's limit: every worker waits, not only this message.
                    if let Some(l) = &lane.limiter {
                        l.back_off(after).await;
                    }
                    (Some(after), reason)
                }
                SendOutcome::Resubmit { after, reason } => {
                    unsure.get_or_insert_with(|| reason.clone());
                    (after, reason)
                }
            };
            if attempts > lane.retries {
                if let Some(lost) = &unsure {
                    let last = format!("{attempts} attempts; last: {reason}");
                    return self.unsure(change, lost, &last, retries, durable).await;
                }
                let error = (
                    "retries_exhausted".to_string(),
                    format!("{attempts} attempts; last: {reason}"),
                );
                return self
                    .give_up(w, &lane.name, next, error, retries, durable)
                    .await;
            }
            let wait = wait.unwrap_or_else(|| backoff(lane.backoff, attempts));
            if Instant::now() + wait >= deadline {
                if let Some(lost) = &unsure {
                    let last = format!("expired; last attempt: {reason}");
                    return self.unsure(change, lost, &last, retries, durable).await;
                }
                change.to = MessageState::Expired;
                change.reason = Some("expired".into());
                change.error = Some(("expired".into(), format!("last attempt: {reason}")));
                self.record(change, durable).await;
                return Hop::Settled(Settled::Expired, retries);
            }
            tracing::debug!(message = %w.id, wait_ms = wait.as_millis() as u64, reason = %reason, "Retrying.");
            change.to = MessageState::Queued;
            change.error = Some(("retry".into(), reason));
            stats::RETRIES.fetch_add(1, Ordering::Relaxed);
            self.record(change, durable).await;
            drop(slot);
            tokio::time::sleep(wait).await;
        }
    }

    /// A message an earlier attempt may have delivered (its answer was lost) that got no
    /// definite answer since: `unknown`, with both reasons, instead of `failed` or
    /// `expired` — it may be on the recipient's phone.
    async fn unsure(
        &self,
        mut change: Change,
        lost: &str,
        last: &str,
        retries: u64,
        durable: bool,
    ) -> Hop {
        change.to = MessageState::Unknown;
        change.reason = None;
        change.error = Some((
            "unknown".into(),
            format!(
                "an earlier attempt may have been sent (its answer was lost: {lost}); then: {last}"
            ),
        ));
        self.record(change, durable).await;
        Hop::Settled(Settled::Unknown, retries)
    }

    /// The provider `name` is done with a `sending` message: it fails, or moves on to
    /// `next` with `error` kept in its failover history; recorded durably before it
    /// returns where `durable`.
    async fn give_up(
        &self,
        w: &Work,
        name: &str,
        next: Option<&str>,
        error: (String, String),
        retries: u64,
        durable: bool,
    ) -> Hop {
        let mut change = Change::to(w.id, MessageState::Failed);
        change.error = Some(error);
        match next {
            None => {
                self.record(change, durable).await;
                Hop::Settled(Settled::Failed, retries)
            }
            Some(next) => {
                tracing::info!(message = %w.id, from = %name, to = %next, "Failing over.");
                change.to = MessageState::Queued;
                change.failover = Some(next.to_string());
                self.record(change, durable).await;
                Hop::Next(retries)
            }
        }
    }
}

/// Where one provider left a message.
enum Hop {
    Settled(Settled, u64),
    /// On to the next provider of the route, after these retries.
    Next(u64),
}

/// Exponential backoff with full jitter: a random wait in `[base·2^(n-1)/2, base·2^(n-1)]`,
/// at most [`BACKOFF_CAP`].
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(BACKOFF_CAP);
    let half = ceiling / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_millis(100);
        for _ in 0..100 {
            let first = backoff(base, 1);
            assert!(
                first >= Duration::from_millis(50) && first <= base,
                "{first:?}"
            );
            let third = backoff(base, 3);
            assert!(
                third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
                "{third:?}"
            );
            assert!(backoff(base, 40) <= BACKOFF_CAP);
        }
    }
}
