//! Several `crier run` workers on one PostgreSQL database, as real processes: a run is
//! sent by all of them, each message exactly once; a worker killed mid-run loses
//! nothing; a cancel from another host stops every worker; two workers that both
//! believe they lead still make one run per instant.
//!
//! Each worker is its own project directory (its own `data/`, as on its own host) with
//! the same `crier.yaml` and the same job, all on one database of the harness's server.
//! Leases are short (heartbeat 200 ms, lease 1 s) so that the tests are quick.

mod common;
mod mocks;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Project;
use mocks::Fault;

const TOKEN_ID: &str = "CLUSTER-TOKEN-01";
const SECRET: &str = "cluster-secret-value";

/// One `crier run` worker, its log collected as it runs.
struct Worker {
    child: Child,
    id: String,
    log: Arc<Mutex<String>>,
}

impl Worker {
    fn start(p: &Project, id: &str) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(["-v", "run", "--worker-id", id])
            .current_dir(p.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start crier run");
        let log = common::drain(child.stderr.take().unwrap());
        Worker {
            child,
            id: id.to_string(),
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([signal, &pid]).status();
    }

    fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }

    /// SIGTERM; the exit code and the log.
    fn stop(mut self) -> (i32, String) {
        let code = common::terminate(&mut self.child);
        std::thread::sleep(Duration::from_millis(100));
        (code, self.log())
    }
}

/// `n` worker directories on one fresh database, with `recipients` imported, the
/// provider `provider_yaml` (as `sms`) and the job `job` in each.
struct Cluster {
    url: String,
    /// A directory for commands run from "another host" (no worker in it).
    cli: Project,
    homes: Vec<Project>,
}

impl Cluster {
    fn new(n: usize, recipients: usize, provider_yaml: &str, job: &str) -> Cluster {
        let url = common::pg::server().database();
        let home = || {
            let p = Project {
                dir: tempfile::tempdir().unwrap(),
                pg_url: Some(url.clone()),
            };
            p.write(
                "crier.yaml",
                format!(
                    "providers:\n  sms:\n{provider_yaml}channels:\n  sms: sms\ncluster:\n  heartbeat: 200ms\n  lease: 1s\n"
                ),
            );
            p.write("jobs/reminder.yaml", job);
            p
        };
        let cli = home();
        cli.write("people.csv", common::customers(recipients));
        let imported = cli.crier(&["import", "people.csv"]);
        assert_eq!(imported.code, 0, "{}", imported.stderr);
        Cluster {
            homes: (0..n).map(|_| home()).collect(),
            cli,
            url,
        }
    }

    fn start(&self, i: usize, id: &str) -> Worker {
        Worker::start(&self.homes[i], id)
    }

    /// One SQL query's rows, `|`-separated.
    fn sql(&self, sql: &str) -> String {
        let database = self.url.rsplit('/').next().unwrap();
        common::pg::server().psql(database, &format!("SET search_path = crier; {sql}"))
    }

    fn runs(&self) -> Vec<serde_json::Value> {
        let out = self.cli.crier(&["history", "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until every run is finished (none `processing` or `new`) or the deadline.
    fn wait_finished(&self, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let runs = self.runs();
            let open = runs
                .iter()
                .any(|r| r["finished_at"].is_null() && r["status"] != "cancelled");
            if (!runs.is_empty() && !open) || Instant::now() > deadline {
                return runs;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Messages by the worker that sent them: `(worker, count)`.
    fn sent_by_worker(&self) -> Vec<(String, u64)> {
        self.sql(
            "SELECT coalesce(worker, '-'), count(*) FROM messages WHERE state = 'sent' GROUP BY 1 ORDER BY 1",
        )
        .lines()
        .map(|l| {
            let (w, n) = l.split_once('|').unwrap();
            (w.to_string(), n.parse().unwrap())
        })
        .collect()
    }
}

/// A BulkSMS mock answering every request after `delay_ms`, and the runtime it runs on.
fn slow_bulksms(delay_ms: u64) -> (tokio::runtime::Runtime, mocks::Mock) {
    let rt = common::runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    mock.state
        .set_fault_every(1, Fault::Delay(Duration::from_millis(delay_ms)));
    (rt, mock)
}

fn bulksms_yaml(url: &str, concurrency: u32) -> String {
    format!(
        "    type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: {SECRET}\n    base_url: {url}\n    limits: {{ concurrency: {concurrency}, backoff: 10ms }}\n"
    )
}

/// A job firing once, `seconds_ahead` from now.
fn one_shot_job(seconds_ahead: i64) -> String {
    let at = chrono::Utc::now() + chrono::Duration::seconds(seconds_ahead);
    format!(
        "send_to: sms\nmessage: \"Reminder for {{{{ customer.name }}}}\"\nrecipients: {{}}\nschedule:\n  at: \"{}\"\n  timezone: UTC\n",
        at.format("%Y-%m-%dT%H:%M:%S")
    )
}

/// Every recipient at the provider exactly once (by number), and `n` in all.
fn assert_exactly_once(mock: &mocks::Mock, n: usize) {
    let accepted = mock.state.accepted();
    let mut to: Vec<&str> = accepted.iter().map(|a| a.to.as_str()).collect();
    to.sort_unstable();
    to.dedup();
    assert_eq!(to.len(), n, "recipients missed");
    assert_eq!(accepted.len(), n, "sent twice");
}

#[test]
fn three_workers_send_one_scheduled_run_each_message_exactly_once() {
    let (_rt, mock) = slow_bulksms(3);
    let n = 10_000;
    let c = Cluster::new(3, n, &bulksms_yaml(&mock.url, 4), &one_shot_job(4));
    let workers: Vec<Worker> = (0..3).map(|i| c.start(i, &format!("w{i}"))).collect();
    let runs = c.wait_finished(Duration::from_secs(120));
    let logs: Vec<(i32, String)> = workers.into_iter().map(Worker::stop).collect();
    let all = logs
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n----\n");
    for (code, _) in &logs {
        assert_eq!(*code, 0, "{all}");
    }
    assert_eq!(runs.len(), 1, "one run for the instant: {runs:?}");
    assert_eq!(runs[0]["status"], "sent", "{runs:?}\n{all}");
    assert_eq!(runs[0]["counters"]["sent"], n as u64);
    assert_exactly_once(&mock, n);
    let by_worker = c.sent_by_worker();
    assert!(
        by_worker.len() >= 2 && by_worker.iter().all(|(w, _)| w.starts_with('w')),
        "more than one worker sent: {by_worker:?}"
    );
    // One worker fired the instant: the leader.
    let fired: Vec<&str> = logs
        .iter()
        .filter(|(_, l)| l.contains("Fired."))
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(fired.len(), 1, "{all}");
}

#[test]
fn a_cancel_from_another_host_stops_every_worker() {
    let (_rt, mock) = slow_bulksms(20);
    let n = 5_000;
    let c = Cluster::new(3, n, &bulksms_yaml(&mock.url, 2), &one_shot_job(3));
    let workers: Vec<Worker> = (0..3).map(|i| c.start(i, &format!("c{i}"))).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while mock.state.accepted_count() < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Until every worker has a share (they join within a second).
    std::thread::sleep(Duration::from_millis(1500));
    let run = c.runs()[0]["id"].as_str().unwrap().to_string();
    let cancelled = c.cli.crier(&["history", "cancel", &run]);
    assert_eq!(cancelled.code, 0, "{}", cancelled.stderr);
    // Within a second nobody sends any more.
    std::thread::sleep(Duration::from_secs(1));
    let after_a_second = mock.state.accepted_count();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        mock.state.accepted_count(),
        after_a_second,
        "still sending after the cancel"
    );
    let senders = c.sent_by_worker();
    let logs: Vec<(i32, String)> = workers.into_iter().map(Worker::stop).collect();
    let all = logs
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n----\n");
    assert!(senders.len() >= 2, "{senders:?}\n{all}");
    let runs = c.runs();
    assert_eq!(runs[0]["status"], "cancelled", "{runs:?}");
    let counters = &runs[0]["counters"];
    assert!(counters["cancelled"].as_u64().unwrap() > 0, "{counters}");
    assert_eq!(counters["queued"], 0, "{counters}");
    assert_eq!(counters["sending"], 0, "{counters}");
    // The history agrees with the provider.
    assert_eq!(
        counters["sent"].as_u64().unwrap() as usize,
        mock.state.accepted_count(),
        "{counters}"
    );
}

/// Kill rounds: in each, a run of `n` on three workers; one worker (the leader in odd
/// rounds, the run's starter or a helper otherwise) is SIGKILLed at a random moment and a
/// replacement started. Returns per round `(sent, unknown, requests)`.
fn kill_rounds(rounds: usize, provider: &str) -> Vec<(u64, u64, usize, usize)> {
    let rt = common::runtime();
    let mut results = Vec::new();
    for round in 0..rounds {
        let (mock, yaml) = match provider {
            "bulksms" => {
                let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
                let yaml = bulksms_yaml(&mock.url, 4);
                (mock, yaml)
            }
            _ => {
                let sid = "AC0123456789abcdef0123456789abcdef";
                let mock = rt.block_on(mocks::twilio(sid, SECRET));
                let yaml = format!(
                    "    type: twilio\n    account_sid: {sid}\n    auth_token: {SECRET}\n    from: \"+15005550006\"\n    base_url: {}\n    limits: {{ concurrency: 4 }}\n",
                    mock.url
                );
                (mock, yaml)
            }
        };
        mock.state
            .set_fault_every(1, Fault::Delay(Duration::from_millis(4)));
        let n = 1_500;
        let c = Cluster::new(4, n, &yaml, &one_shot_job(3));
        let mut workers: Vec<Option<Worker>> = (0..3)
            .map(|i| Some(c.start(i, &format!("r{round}w{i}"))))
            .collect();
        let at = 100 + fastrand::usize(..n / 2);
        let deadline = Instant::now() + Duration::from_secs(60);
        while mock.state.accepted_count() < at && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let victim = if round % 2 == 1 {
            // The leader: the one whose log says it leads.
            workers
                .iter()
                .position(|w| {
                    w.as_ref()
                        .unwrap()
                        .log()
                        .contains("This worker leads the scheduler")
                })
                .unwrap_or(0)
        } else {
            fastrand::usize(..3)
        };
        let killed = workers[victim].take().unwrap();
        let killed_id = killed.id.clone();
        let killed_log = killed.kill();
        let replacement = c.start(3, &format!("r{round}new"));
        let runs = c.wait_finished(Duration::from_secs(90));
        let mut logs = vec![format!("killed {killed_id}:\n{killed_log}")];
        for w in workers.into_iter().flatten().chain([replacement]) {
            logs.push(w.stop().1);
        }
        let all = logs.join("\n----\n");
        assert_eq!(runs.len(), 1, "{runs:?}\n{all}");
        assert!(!runs[0]["finished_at"].is_null(), "{runs:?}\n{all}");
        let counters = &runs[0]["counters"];
        let sent = counters["sent"].as_u64().unwrap();
        let unknown = counters["unknown"].as_u64().unwrap();
        assert_eq!(sent + unknown, n as u64, "nobody missed: {counters}\n{all}");
        let accepted = mock.state.accepted();
        let mut to: Vec<&str> = accepted.iter().map(|a| a.to.as_str()).collect();
        to.sort_unstable();
        let total = to.len();
        to.dedup();
        let duplicates = total - to.len();
        if provider == "bulksms" {
            assert_eq!(unknown, 0, "{counters}\n{all}");
            assert_eq!(duplicates, 0, "sent twice\n{all}");
            assert_eq!(to.len(), n, "missed\n{all}");
        } else {
            // No deduplication: at most what the killed worker had in flight (its
            // concurrency), each of them `unknown`, never resent.
            assert_eq!(duplicates, 0, "resent\n{all}");
            assert!(unknown <= 4, "{counters}\n{all}");
            let listed = c.sql("SELECT count(*) FROM messages WHERE state = 'unknown' AND error_code = 'interrupted'");
            assert_eq!(listed, unknown.to_string());
        }
        results.push((sent, unknown, duplicates, mock.state.requests()));
    }
    results
}

#[test]
fn killing_a_worker_mid_run_misses_nobody_and_sends_nobody_twice() {
    let rounds: usize = std::env::var("CRIER_CLUSTER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    for provider in ["bulksms", "twilio"] {
        let results = kill_rounds(rounds, provider);
        let unknown: u64 = results.iter().map(|r| r.1).sum();
        let duplicates: usize = results.iter().map(|r| r.2).sum();
        eprintln!(
            "ok   {provider}: {rounds} kill rounds of 1500 recipients on 3 workers: 0 missed, {duplicates} duplicates at the provider, {unknown} unknown"
        );
    }
}

#[test]
fn a_worker_paused_past_its_lease_sends_nothing_it_held_when_it_wakes() {
    let (_rt, mock) = slow_bulksms(5);
    let n = 3_000;
    // An instant every few seconds: both workers believe they lead after the pause.
    let job = "send_to: sms\nmessage: \"Tick for {{ customer.name }}\"\nrecipients: {}\nschedule:\n  cron: \"*/3 * * * * *\"\n  timezone: UTC\n  overlap: skip\n";
    let c = Cluster::new(2, n, &bulksms_yaml(&mock.url, 4), job);
    let a = c.start(0, "pa");
    let b = c.start(1, "pb");
    let deadline = Instant::now() + Duration::from_secs(60);
    while mock.state.accepted_count() < 500 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Pause the leader (or, if b leads, b) past its lease, then wake it.
    let (paused, other) = if a.log().contains("This worker leads the scheduler") {
        (a, b)
    } else {
        (b, a)
    };
    paused.signal("-STOP");
    std::thread::sleep(Duration::from_secs(3));
    paused.signal("-CONT");
    std::thread::sleep(Duration::from_secs(4));
    let (_, paused_log) = paused.stop();
    let (_, other_log) = other.stop();
    let all = format!("{paused_log}\n----\n{other_log}");
    // One run per instant, whoever fired it.
    let runs = c.runs();
    let mut instants: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["scheduled_at"].as_str())
        .collect();
    let before = instants.len();
    instants.sort_unstable();
    instants.dedup();
    assert_eq!(instants.len(), before, "two runs of one instant\n{all}");
    // The paused worker found itself replaced and stopped.
    assert!(paused_log.contains("declared dead"), "{all}");
    // And once its sends had stopped, it took work again.
    assert!(paused_log.contains("it takes work again"), "{all}");
    // Nobody was sent twice within a run (the mock deduplicates across resubmissions
    // by deduplication id; a recipient may be in several runs).
    let dup = c.sql(
        "SELECT count(*) FROM (SELECT run_id, recipient_id FROM messages WHERE state = 'sent' GROUP BY 1, 2 HAVING count(*) > 1) d",
    );
    assert_eq!(dup, "0", "{all}");
    let accepted = mock.state.accepted();
    let mut ids: Vec<i32> = accepted.iter().filter_map(|a| a.dedup_id).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "one message accepted twice\n{all}");
}

/// The most arrivals in any `window`-long stretch of `times`.
fn busiest(times: &[Instant], window: Duration) -> usize {
    let mut times = times.to_vec();
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[test]
fn a_providers_rate_holds_for_the_sum_of_one_two_and_three_workers() {
    let rt = common::runtime();
    let n = 1_000;
    for workers in 1..=3 {
        let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
        let yaml = format!(
            "    type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: {SECRET}\n    base_url: {}\n    limits: {{ rate: 100/s, concurrency: 8, backoff: 10ms }}\n",
            mock.url
        );
        let c = Cluster::new(workers, n, &yaml, &one_shot_job(3));
        let started: Vec<Worker> = (0..workers)
            .map(|i| c.start(i, &format!("rate{workers}w{i}")))
            .collect();
        let runs = c.wait_finished(Duration::from_secs(90));
        let logs: Vec<String> = started.into_iter().map(|w| w.stop().1).collect();
        let all = logs.join("\n----\n");
        assert_eq!(runs[0]["counters"]["sent"], n as u64, "{runs:?}\n{all}");
        assert_exactly_once(&mock, n);
        let arrivals = mock.state.arrivals();
        let most = busiest(&arrivals, Duration::from_secs(5));
        eprintln!("{workers} worker(s) at 100/s: the busiest 5 s window had {most} messages");
        assert!(
            (490..=510).contains(&most),
            "{workers} workers: {most} in the busiest 5 s (500 ± 2%)\n{all}"
        );
        if workers > 1 {
            assert!(c.sent_by_worker().len() > 1, "{:?}", c.sent_by_worker());
        }
    }
}

#[test]
fn a_job_sending_on_one_worker_is_refused_elsewhere_and_a_stopped_worker_hands_back_at_once() {
    let (_rt, mock) = slow_bulksms(20);
    let n = 3_000;
    let c = Cluster::new(2, n, &bulksms_yaml(&mock.url, 2), &one_shot_job(3));
    let first = c.start(0, "busy-a");
    let second = c.start(1, "busy-b");
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.sent_by_worker().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Another start of the job, from another host: refused, naming the run and its worker.
    let again = c.cli.crier(&["send", "jobs/reminder.yaml", "--yes"]);
    assert_eq!(again.code, 1, "{}\n{}", again.stdout, again.stderr);
    let run = c.runs()[0]["id"].as_str().unwrap().to_string();
    assert!(
        again.stderr.contains("already sending")
            && again.stderr.contains(&run)
            && again.stderr.contains("started by worker `busy-"),
        "{}",
        again.stderr
    );
    assert_eq!(c.runs().len(), 1, "the refused start left no run behind");
    // SIGTERM one worker: what it claimed and did not send is nobody's at once.
    let (code, log) = second.stop();
    assert_eq!(code, 0, "{log}");
    let held = c.sql(
        "SELECT count(*) FROM messages WHERE worker = 'busy-b' AND state IN ('queued', 'sending')",
    );
    assert_eq!(held, "0", "{log}");
    let runs = c.wait_finished(Duration::from_secs(120));
    let (_, first_log) = first.stop();
    assert_eq!(runs[0]["counters"]["sent"], n as u64, "{first_log}");
    assert_exactly_once(&mock, n);
}

#[test]
fn an_enqueued_run_is_sent_by_the_workers_alone() {
    let (_rt, mock) = slow_bulksms(10);
    let n = 2_000;
    // No schedule: the run is started by hand, from a host with no worker. The workers
    // join as soon as it is planned; the leader then resumes it as its starter left,
    // while it is still helping with it (slow enough that the two overlap).
    let job = "send_to: sms\nmessage: \"Notice for {{ customer.name }}\"\nrecipients: {}\n";
    let c = Cluster::new(2, n, &bulksms_yaml(&mock.url, 4), job);
    let workers: Vec<Worker> = (0..2).map(|i| c.start(i, &format!("q{i}"))).collect();
    std::thread::sleep(Duration::from_millis(800));
    let enqueued = c
        .cli
        .crier(&["send", "jobs/reminder.yaml", "--yes", "--enqueue"]);
    assert_eq!(enqueued.code, 0, "{}\n{}", enqueued.stdout, enqueued.stderr);
    assert!(
        enqueued
            .stdout
            .contains(&format!("{n} messages planned for the workers")),
        "{}",
        enqueued.stdout
    );
    let runs = c.wait_finished(Duration::from_secs(90));
    let logs: Vec<String> = workers.into_iter().map(|w| w.stop().1).collect();
    let all = logs.join("\n----\n");
    assert_eq!(runs[0]["status"], "sent", "{runs:?}\n{all}");
    assert_exactly_once(&mock, n);
    // Sent by the workers, not by the process that planned it.
    let by_worker = c.sent_by_worker();
    assert!(
        by_worker.iter().all(|(w, _)| w.starts_with('q')),
        "{by_worker:?}"
    );
    // On the embedded store there are no workers to leave it to.
    let alone = Project::new();
    alone.write("jobs/x.yaml", job);
    let refused = alone.crier(&["send", "jobs/x.yaml", "--yes", "--enqueue"]);
    if alone.pg_url.is_none() {
        assert_eq!(refused.code, 1, "{}", refused.stderr);
        assert!(
            refused
                .stderr
                .contains("--enqueue leaves the run to the workers"),
            "{}",
            refused.stderr
        );
    }
}
