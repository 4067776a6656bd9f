//! Several workers on one PostgreSQL database (a real server, `common/pg.rs`): their
//! registration, heartbeats and the scheduler lease, first through the library's
//! `Worker` handles, then as real `crier run` processes killed with SIGKILL, watched
//! through `crier workers --format json`, `/healthz` and `/metrics`.
//!
//! Leases are short (heartbeat 100–200 ms, lease 0.5–1 s) so each test takes seconds.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::{Project, drain, pg};
use crier::cluster::Cluster;
use crier::cluster::members::{ClusterError, Leases, Role, Worker, WorkerInfo};

/// Every test shares this binary's PostgreSQL server; the one that stops it holds this
/// exclusively, the others share it.
static SERVER: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERVER.write().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// The library: `Cluster` and `Worker` on one database.

/// A fresh database with crier's tables; its URL and cluster.
fn cluster() -> (String, Cluster) {
    let url = pg::server().database();
    let store = crier::store::open(&crier::store::StoreConfig {
        path: "unused".into(),
        cache_bytes: 8 << 20,
        backend: crier::store::Backend::Postgres,
        postgres: Some(crier::store::PgSettings::new(url.clone())),
    })
    .expect("open the PostgreSQL store");
    let cluster = store
        .cluster()
        .expect("a PostgreSQL store has a cluster")
        .clone();
    (url, cluster)
}

fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

const FAST: Leases = Leases {
    heartbeat: Duration::from_millis(100),
    lease: Duration::from_millis(500),
    lead: true,
};

fn info(id: &str) -> WorkerInfo {
    WorkerInfo::here(Some(id.into()), Role::Run)
}

/// `on_dead` that records the ids it is given.
fn recorder() -> (Arc<Mutex<Vec<String>>>, crier::cluster::members::OnDead) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (
        seen,
        Box::new(move |ids: &[String]| sink.lock().unwrap().extend_from_slice(ids)),
    )
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn one_worker_leads_and_a_silent_leader_is_replaced_and_declared_dead() {
    let _server = shared();
    let (_, cluster) = cluster();
    let (seen_a, on_dead_a) = recorder();
    let (seen_b, on_dead_b) = recorder();
    let a = Worker::start(cluster.clone(), info("a"), FAST, on_dead_a).unwrap();
    // The first worker takes the lease as it starts.
    assert!(a.is_leader());
    let b = Worker::start(cluster.clone(), info("b"), FAST, on_dead_b).unwrap();
    std::thread::sleep(FAST.lease);
    assert!(a.is_leader() && !b.is_leader(), "{a:?} {b:?}");
    assert_eq!(cluster.leader().unwrap().unwrap().holder, "a");

    // `a` goes silent as a killed process would: no retirement, its lease runs out.
    a.abandon();
    assert!(!a.is_leader());
    let took = wait_for(
        "b leads",
        FAST.lease + FAST.heartbeat * 2 + Duration::from_millis(300),
        || b.is_leader(),
    );
    wait_for("a declared dead", FAST.heartbeat * 3, || {
        seen_b.lock().unwrap().contains(&"a".to_string())
    });
    eprintln!("b led {took:?} after a went silent");
    assert!(seen_a.lock().unwrap().is_empty());
    let rows = cluster.workers().unwrap();
    let state = |id: &str| rows.iter().find(|w| w.id == id).unwrap().clone();
    assert_eq!(state("a").state, "dead", "{rows:?}");
    assert!(!state("a").leader);
    assert_eq!(state("b").state, "alive", "{rows:?}");
    assert!(state("b").leader);
    assert!(state("b").heartbeat_age_ms < 400, "{rows:?}");

    // A clean stop retires the row and gives the lease up at once.
    b.stop();
    assert!(!b.is_leader());
    let rows = cluster.workers().unwrap();
    assert_eq!(rows.iter().find(|w| w.id == "b").unwrap().state, "stopped");
    assert_eq!(cluster.leader().unwrap(), None);
}

#[test]
fn a_worker_whose_row_is_taken_over_is_fenced_and_registers_again() {
    let _server = shared();
    let (url, cluster) = cluster();
    let settings = Leases {
        lead: false,
        ..FAST
    };
    let (_, on_dead) = recorder();
    let w = Worker::start(cluster.clone(), info("web-1"), settings, on_dead).unwrap();
    assert!(!w.fenced() && !w.is_leader());
    // The leader declared it dead (as after a long pause).
    pg::server().psql(
        db_name(&url),
        "UPDATE crier.workers SET state = 'dead' WHERE id = 'web-1'",
    );
    wait_for("fenced", FAST.heartbeat * 5, || w.fenced());
    // It registered again (a fresh row, alive), and stays fenced until its owner says.
    wait_for("alive again", FAST.heartbeat * 5, || {
        cluster
            .workers()
            .unwrap()
            .iter()
            .any(|r| r.id == "web-1" && r.state == "alive")
    });
    std::thread::sleep(FAST.heartbeat * 2);
    assert!(w.fenced());
    w.unfence();
    assert!(!w.fenced());
    assert!(w.healthy());
}

#[test]
fn register_refuses_a_live_duplicate_id_and_accepts_a_dead_one() {
    let _server = shared();
    let (_, cluster) = cluster();
    let lease = Duration::from_millis(300);
    let elsewhere = |host: &str, pid: u32| WorkerInfo {
        id: "web-1".into(),
        host: host.into(),
        pid,
        role: Role::Run,
        version: "0.1.0".into(),
    };
    let first = cluster.register(&elsewhere("host-a", 4242), lease).unwrap();
    let err = cluster
        .register(&elsewhere("host-b", 77), lease)
        .unwrap_err();
    assert!(matches!(err, ClusterError::InUse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "worker id `web-1` is in use by a live worker on host host-a, pid 4242, heartbeat 0."
        ),
        "{text}"
    );
    assert!(
        text.ends_with("ago: give this one another --worker-id"),
        "{text}"
    );

    // Silent past the lease: declared dead, and the id is free again.
    std::thread::sleep(lease + Duration::from_millis(100));
    assert_eq!(
        cluster.declare_dead(lease).unwrap(),
        vec!["web-1".to_string()]
    );
    let second = cluster.register(&elsewhere("host-b", 77), lease).unwrap();
    // The first process's heartbeats find their row taken over.
    assert!(!cluster.heartbeat(&first).unwrap());
    assert!(cluster.heartbeat(&second).unwrap());

    // Also alive but silent past the lease (nobody declared it dead yet): free.
    std::thread::sleep(lease + Duration::from_millis(100));
    cluster.register(&elsewhere("host-c", 5), lease).unwrap();
    assert!(!cluster.heartbeat(&second).unwrap());
}

#[test]
fn a_restart_on_the_same_host_takes_its_id_over_without_waiting_for_the_lease() {
    let _server = shared();
    let (_, cluster) = cluster();
    let lease = Duration::from_secs(60);
    // A previous process of this host, now gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let mut before = info("web-1");
    before.pid = gone_pid;
    cluster.register(&before, lease).unwrap();
    // This process, same id, same host: the old row is alive and fresh, yet its
    // process is gone.
    let now = cluster.register(&info("web-1"), lease).unwrap();
    assert_eq!(now.pid, i64::from(std::process::id()));
    // Another live process of this host keeps its id.
    let mut other = info("web-2");
    other.pid = 1; // init: always running
    cluster.register(&other, lease).unwrap();
    let err = cluster.register(&info("web-2"), lease).unwrap_err();
    assert!(matches!(err, ClusterError::InUse { pid: 1, .. }), "{err}");

    // The leader's sweep finds gone processes of its host at once, too.
    let mut stale = info("web-3");
    stale.pid = gone_pid;
    cluster.register(&stale, lease).unwrap();
    let dead = cluster.dead_on_this_host(&before.host).unwrap();
    assert_eq!(dead, vec!["web-3".to_string()]);
}

// ---------------------------------------------------------------------------------------
// Real `crier run` processes.

/// A `crier run` child with its output collected as it comes (so no pipe fills).
struct Node {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Node {
    fn start(p: &Project, id: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(["--config", &format!("{id}.yaml"), "run", "--worker-id", id])
            .current_dir(p.path())
            .env("RUST_LOG", "crier=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start crier run");
        let stdout = drain(child.stdout.take().unwrap());
        let stderr = drain(child.stderr.take().unwrap());
        Node {
            child,
            stdout,
            stderr,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The HTTP address it prints once it listens.
    fn addr(&self) -> String {
        let mut addr = None;
        wait_for("the server listens", Duration::from_secs(20), || {
            addr = self
                .stdout
                .lock()
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("listening on http://"))
                .map(str::to_string);
            addr.is_some()
        });
        addr.unwrap()
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        // Reaped, so its pid is gone from /proc (a zombie still has an entry).
        self.child.wait().unwrap();
    }

    /// SIGTERM; the exit code.
    fn stop(&mut self) -> i32 {
        common::terminate(&mut self.child)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A project with one database and a config per worker (`a.yaml`, `b.yaml`: own data
/// dirs, as on two hosts); `a` serves HTTP.
fn cluster_project(job: &str) -> Project {
    let p = Project::new();
    let url = pg::server().database();
    for id in ["a", "b"] {
        let server = if id == "a" {
            "server:\n  listen: 127.0.0.1:0\n  token: abcdefghijklmnopqrstuvwxyz\n"
        } else {
            ""
        };
        std::fs::write(
            p.path().join(format!("{id}.yaml")),
            format!(
                "data_dir: data-{id}\nstore:\n  backend: postgres\n  url: \"{url}\"\ncluster:\n  heartbeat: 200ms\n  lease: 1s\n{server}"
            ),
        )
        .unwrap();
    }
    p.write("jobs/tick.yaml", job);
    p.write(
        "people.csv",
        "id,name,status,phone\n1,Ann,active,082 555 0001\n2,Bob,active,082 555 0002\n",
    );
    let import = p.crier(&["--config", "a.yaml", "import", "people.csv"]);
    assert_eq!(import.code, 0, "{}", import.stderr);
    p
}

/// `crier workers --format json` as a value.
fn workers(p: &Project) -> serde_json::Value {
    let out = p.crier(&["--config", "b.yaml", "workers", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn worker<'a>(view: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    view["workers"].as_array()?.iter().find(|w| w["id"] == id)
}

fn leaders(view: &serde_json::Value) -> Vec<String> {
    view["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["leader"] == true)
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect()
}

use common::http_get as get;

const UNSCHEDULED: &str = "send_to: sms\nmessage: hi\nrecipients: {}\n";

#[test]
fn two_workers_one_leader_and_a_killed_leader_is_replaced_within_the_lease() {
    let _server = shared();
    let p = cluster_project(UNSCHEDULED);
    let mut a = Node::start(&p, "a");
    let addr = a.addr();
    wait_for("a leads", Duration::from_secs(10), || {
        leaders(&workers(&p)) == ["a"]
    });
    let mut b = Node::start(&p, "b");
    wait_for("b is alive", Duration::from_secs(20), || {
        worker(&workers(&p), "b").is_some_and(|w| w["state"] == "alive")
    });
    let view = workers(&p);
    assert_eq!(leaders(&view), ["a"], "{view:#}");
    for id in ["a", "b"] {
        let w = worker(&view, id).unwrap();
        assert_eq!(w["state"], "alive", "{view:#}");
        assert_eq!(w["role"], "run", "{view:#}");
        assert!(w["heartbeat_age_ms"].as_i64().unwrap() < 1000, "{view:#}");
    }
    assert_eq!(view["lease"]["holder"], "a", "{view:#}");

    // The table form says the same.
    let table = p.crier(&["--config", "b.yaml", "workers"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("WORKER  HOST"), "{}", table.stdout);
    assert!(
        table
            .stdout
            .contains("scheduler lease: held by a, expires in"),
        "{}",
        table.stdout
    );

    let (code, body) = get(&addr, "/healthz");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, &health["worker"]), (200, &"ok".into()), "{health}");
    let (_, metrics) = get(&addr, "/metrics");
    for line in [
        "crier_workers{state=\"alive\"} 2",
        "crier_worker_leader{worker=\"a\"} 1",
        "crier_worker_leader{worker=\"b\"} 0",
        "crier_worker_claimed_messages{worker=\"b\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("crier_worker_heartbeat_age_seconds{worker=\"a\"} "),
        "{metrics}"
    );

    // SIGKILL the leader: b leads, and a is dead, within the lease and two heartbeats
    // (plus what one `crier workers` takes to answer).
    a.kill();
    let took = wait_for(
        "b leads and a is dead",
        Duration::from_millis(1000 + 2 * 200 + 600),
        || {
            let view = workers(&p);
            leaders(&view) == ["b"] && worker(&view, "a").is_some_and(|w| w["state"] == "dead")
        },
    );
    eprintln!("b led and a was dead {took:?} after the SIGKILL");
    assert!(
        b.log().contains("This worker leads the scheduler."),
        "{}",
        b.log()
    );

    // SIGTERM: retired, the lease given up.
    assert_eq!(b.stop(), 0, "{}", b.log());
    let view = workers(&p);
    assert_eq!(worker(&view, "b").unwrap()["state"], "stopped", "{view:#}");
    assert!(view["lease"].is_null(), "{view:#}");
}

/// Scheduled instants (ms) of the runs in the history, ascending; each once.
fn scheduled_instants(p: &Project) -> Vec<i64> {
    let out = p.crier(&["--config", "a.yaml", "history", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let runs: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut at: Vec<i64> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["trigger"], "schedule", "{r}");
            chrono::DateTime::parse_from_rfc3339(r["scheduled_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    at.sort();
    let n = at.len();
    at.dedup();
    assert_eq!(at.len(), n, "two runs of one instant: {runs:#}");
    at
}

#[test]
fn the_schedule_fires_on_the_leader_only_and_the_next_leader_misses_no_instant() {
    let _server = shared();
    let p = cluster_project(
        "send_to: sms\nmessage: \"Tick for {{ customer.name }}\"\nrecipients: {}\nschedule:\n  cron: \"*/3 * * * * *\"\n",
    );
    let mut a = Node::start(&p, "a");
    wait_for("a leads", Duration::from_secs(10), || {
        leaders(&workers(&p)) == ["a"]
    });
    let mut b = Node::start(&p, "b");
    wait_for("b is alive", Duration::from_secs(20), || {
        worker(&workers(&p), "b").is_some_and(|w| w["state"] == "alive")
    });
    // Two instants with both alive: a fires them, b's timers see it does not lead.
    wait_for("two runs", Duration::from_secs(10), || {
        scheduled_instants(&p).len() >= 2
    });
    let b_log = b.log();
    assert!(!b_log.contains("Fired."), "{b_log}");
    wait_for(
        "b's timer fired and stood back",
        Duration::from_secs(4),
        || {
            b.log()
                .contains("Not the scheduler's leader: the leader fires this.")
        },
    );
    // (The first run may be a's catch-up of the instant just before it started.)
    assert!(a.log().contains("Fired."), "{}", a.log());
    let before = scheduled_instants(&p).len();

    // Kill the leader; b takes over, catches up an instant missed meanwhile, fires on.
    a.kill();
    let killed_at = chrono::Utc::now().timestamp_millis();
    wait_for("b fires twice", Duration::from_secs(12), || {
        b.log().matches("Fired.").count() >= 2
    });
    assert_eq!(b.stop(), 0, "{}", b.log());
    let log = b.log();
    assert!(
        log.contains("Leading the scheduler: catching up missed fire times."),
        "{log}"
    );
    let at = scheduled_instants(&p);
    // One run per instant, every instant from the first to the last: nothing missed
    // across the failover, nothing doubled.
    assert!(at.len() >= before + 2, "{at:?}");
    for pair in at.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            3000,
            "a gap or a stray instant: {at:?}\n{log}"
        );
    }
    assert!(at.last().unwrap() > &killed_at, "{at:?}");
}

#[test]
fn workers_on_the_embedded_store_is_a_clear_error() {
    let _server = shared();
    let p = Project::new();
    if p.pg_url.is_some() {
        return; // The suite runs every project on PostgreSQL: no embedded store here.
    }
    let out = p.crier(&["workers"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("workers share a PostgreSQL store (store.backend: postgres)"),
        "{}",
        out.stderr
    );
}

/// The server stopped (as a crash stops it); started again when dropped, so a failed
/// test does not leave the other tests without it.
struct Down;

impl Down {
    fn stop() -> Down {
        pg::server().stop_immediate();
        Down
    }

    fn start(self) {
        drop(self);
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        pg::server().start();
    }
}

#[test]
fn a_worker_that_loses_its_database_stops_leading_and_is_unhealthy_until_it_is_back() {
    let _server = exclusive();
    let p = cluster_project(UNSCHEDULED);
    let mut a = Node::start(&p, "a");
    let addr = a.addr();
    wait_for("a leads", Duration::from_secs(10), || {
        leaders(&workers(&p)) == ["a"]
    });
    // A library worker alone on a database of its own: it leads there.
    let (_, cluster) = cluster();
    let (_, on_dead) = recorder();
    let w = Worker::start(cluster, info("lib"), FAST, on_dead).unwrap();
    assert!(w.is_leader() && w.healthy());
    assert_eq!(get(&addr, "/healthz").0, 200);

    let gone = Instant::now();
    let down = Down::stop();
    // The lease is no longer believed as soon as a renewal fails.
    wait_for("not leading", FAST.heartbeat * 3, || !w.is_leader());
    wait_for("unhealthy", FAST.lease + FAST.heartbeat * 3, || {
        !w.healthy()
    });
    // Its last heartbeat was at most one heartbeat before the server went down.
    assert!(
        gone.elapsed() >= FAST.lease - FAST.heartbeat,
        "unhealthy before the lease ran out"
    );
    let why = w.health().unwrap_err();
    assert!(
        why.starts_with("worker `lib` has had no heartbeat for"),
        "{why}"
    );
    // The daemon's /healthz says so (its lease: 1 s; the store itself fails at once).
    let mut body = String::new();
    wait_for("/healthz names the worker", Duration::from_secs(3), || {
        let (code, b) = get(&addr, "/healthz");
        body = b;
        code == 503 && body.contains("has had no heartbeat")
    });
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        health["worker"]
            .as_str()
            .unwrap()
            .starts_with("worker `a` has had no heartbeat for"),
        "{health}"
    );
    assert!(!body.contains("postgres://"), "{body}");

    down.start();
    wait_for("healthy again", Duration::from_secs(10), || w.healthy());
    wait_for("leading again", Duration::from_secs(10), || w.is_leader());
    wait_for("a leads again", Duration::from_secs(10), || {
        leaders(&workers(&p)) == ["a"]
    });
    wait_for("/healthz 200", Duration::from_secs(10), || {
        get(&addr, "/healthz").0 == 200
    });
    assert_eq!(a.stop(), 0, "{}", a.log());
}

#[test]
fn crier_send_on_postgres_claims_as_a_worker_of_its_own_and_retires() {
    let _server = shared();
    let p = cluster_project(UNSCHEDULED);
    let out = p.crier(&["--config", "b.yaml", "send", "jobs/tick.yaml", "--yes"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let view = workers(&p);
    let rows = view["workers"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{view:#}");
    let w = &rows[0];
    assert_eq!(
        (&w["role"], &w["state"]),
        (&"send".into(), &"stopped".into()),
        "{view:#}"
    );
    let id = w["id"].as_str().unwrap();
    assert!(id.starts_with(&crier::cluster::members::hostname()), "{id}");
    // Its messages name it as the worker that held them.
    let url = std::fs::read_to_string(p.path().join("b.yaml")).unwrap();
    let db = url
        .split('"')
        .nth(1)
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let holders = pg::server().psql(&db, "SELECT DISTINCT worker FROM crier.messages");
    assert_eq!(holders, id, "{view:#}");
}
