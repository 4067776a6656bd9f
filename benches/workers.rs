//! Several workers on one PostgreSQL: what coordination costs and what it buys.
//!
//! The machine has 2 cores, so CPU scaling cannot show; this measures coordination. The
//! BulkSMS mock answers every request after `CRIER_BENCH_LATENCY_MS` (default 50) with
//! no rate limit; each worker has `concurrency: 8`, so one worker is bound by latency
//! (about 8 / 50 ms = 160 messages/s). A run of `CRIER_BENCH_RECIPIENTS` (default
//! 20,000) is planned with `crier send --enqueue` and sent by 1, then 3 `crier run`
//! workers; the figure is the run's messages over the time from its first message to
//! its last (`started_at` .. `finished_at` in the history). Then the overhead of claims
//! and records on PostgreSQL: one worker against the mock with 0 ms latency, at the
//! suite's `concurrency: 64`, the run planned before the worker starts (so planning,
//! which `crier send` overlaps with sending, does not bound it).
//!
//! ```sh
//! CRIER_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:55432/bench cargo bench --bench workers -- 3
//! ```
//! (the argument: runs per figure; medians with min–max). Each run uses a fresh schema.

#[path = "../tests/mocks/mod.rs"]
mod mocks;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN_ID: &str = "BENCH-WORKERS-ID";
const SECRET: &str = "bench-workers-secret";

fn crier() -> &'static str {
    env!("CARGO_BIN_EXE_crier")
}

fn write_home(dir: &Path, url: &str, schema: &str, mock_url: &str, concurrency: u32) {
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("crier.yaml"),
        format!(
            "store:\n  backend: postgres\n  url: \"{url}\"\n  schema: {schema}\nproviders:\n  sms:\n    type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: {SECRET}\n    base_url: {mock_url}\n    limits: {{ concurrency: {concurrency}, timeout: 30s }}\nchannels:\n  sms: sms\ncluster:\n  heartbeat: 500ms\n  lease: 3s\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/reminder.yaml"),
        "send_to: sms\nmessage: \"Hi {{ customer.name }}, your invoice is due.\"\nrecipients: {}\n",
    )
    .unwrap();
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(crier())
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run crier");
    assert!(
        out.status.success(),
        "crier {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start_worker(dir: &Path, id: &str) -> Child {
    Command::new(crier())
        .args(["run", "--worker-id", id])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start crier run")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// One run of `n` recipients sent by `workers` workers: messages/s from its first
/// message to its last. `planned_first`: the run is planned before the workers start,
/// so planning does not bound the sending (the claim + record overhead alone).
fn measure(
    url: &str,
    mock: &mocks::Mock,
    n: usize,
    workers: usize,
    round: usize,
    planned_first: bool,
) -> f64 {
    let root = tempfile::tempdir().unwrap();
    let schema = format!("bench_workers_{}_{round}_{workers}", std::process::id());
    let cli = root.path().join("cli");
    // The overhead figure is not bound by latency: the suite's concurrency (64).
    let concurrency = if planned_first { 64 } else { 8 };
    write_home(&cli, url, &schema, &mock.url, concurrency);
    support::write_customers(&cli.join("people.csv"), n as u64, 7).unwrap();
    run(&cli, &["import", "people.csv"]);
    let homes: Vec<_> = (0..workers)
        .map(|i| {
            let home = root.path().join(format!("w{i}"));
            write_home(&home, url, &schema, &mock.url, concurrency);
            home
        })
        .collect();
    let before = mock.state.accepted_count();
    if planned_first {
        run(&cli, &["send", "jobs/reminder.yaml", "--yes", "--enqueue"]);
    }
    let children: Vec<Child> = homes
        .iter()
        .enumerate()
        .map(|(i, h)| start_worker(h, &format!("bench-w{i}")))
        .collect();
    // Until every worker has registered.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = run(&cli, &["workers", "--format", "json"]);
        let alive = serde_json::from_str::<serde_json::Value>(&listed)
            .ok()
            .and_then(|v| {
                v["workers"]
                    .as_array()
                    .map(|w| w.iter().filter(|w| w["state"] == "alive").count())
            })
            .unwrap_or(0);
        if alive >= workers || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !planned_first {
        run(&cli, &["send", "jobs/reminder.yaml", "--yes", "--enqueue"]);
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    let (started, finished, sent) = loop {
        let listed = run(&cli, &["history", "--format", "json"]);
        let runs: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let r = &runs[0];
        if let (Some(s), Some(f)) = (r["started_at"].as_str(), r["finished_at"].as_str()) {
            // The generated numbers repeat now and then: those are skipped as duplicates.
            let sent = r["counters"]["sent"].as_u64().unwrap() as usize;
            break (s.to_string(), f.to_string(), sent);
        }
        assert!(Instant::now() < deadline, "the run did not finish: {r}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for child in children {
        stop(child);
    }
    assert_eq!(mock.state.accepted_count() - before, sent, "sent once each");
    assert!(sent > n * 9 / 10, "{sent} of {n} sent");
    mock.state.forget_dedup();
    let ms = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .timestamp_millis()
    };
    let took = (ms(&finished) - ms(&started)).max(1) as f64 / 1000.0;
    sent as f64 / took
}

fn main() {
    let Ok(url) = std::env::var("CRIER_BENCH_DATABASE_URL") else {
        eprintln!("set CRIER_BENCH_DATABASE_URL to a PostgreSQL database to measure workers");
        return;
    };
    let rounds: usize = std::env::args()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(3);
    let n: usize = std::env::var("CRIER_BENCH_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let latency: u64 = std::env::var("CRIER_BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mock = runtime.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    mock.state.keep_accepted(false);
    let mut table = Vec::new();
    // Side by side: 1 and 3 workers alternate, round by round.
    mock.state
        .set_fault_every(1, mocks::Fault::Delay(Duration::from_millis(latency)));
    let (mut one, mut three) = (Vec::new(), Vec::new());
    // `CRIER_BENCH_ONLY=overhead`: the 0 ms figure alone.
    let scaling = std::env::var("CRIER_BENCH_ONLY").as_deref() != Ok("overhead");
    for round in (0..rounds).filter(|_| scaling) {
        for (workers, into) in [(1, &mut one), (3, &mut three)] {
            let rate = measure(&url, &mock, n, workers, round, false);
            eprintln!(
                "round {round}: {workers} worker(s), {latency} ms latency: {rate:.0} messages/s"
            );
            into.push(rate);
        }
    }
    if scaling {
        let (m1, lo1, hi1) = support::median_min_max(one);
        let (m3, lo3, hi3) = support::median_min_max(three);
        table.push(format!(
            "| 1 worker, {latency} ms mock, concurrency 8 | {m1:.0} messages/s ({lo1:.0}–{hi1:.0}) | |"
        ));
        table.push(format!(
            "| 3 workers, same run | {m3:.0} messages/s ({lo3:.0}–{hi3:.0}) | {:.2}× one worker |",
            m3 / m1
        ));
    }
    let mut zero = Vec::new();
    mock.state
        .set_fault_every(1, mocks::Fault::Delay(Duration::ZERO));
    for round in 0..rounds {
        let rate = measure(&url, &mock, n, 1, 100 + round, true);
        eprintln!("round {round}: 1 worker, 0 ms latency: {rate:.0} messages/s");
        zero.push(rate);
    }
    let (m0, lo0, hi0) = support::median_min_max(zero);
    table.push(format!(
        "| 1 worker, 0 ms mock, concurrency 64, the run planned first (claim + record overhead) | {m0:.0} messages/s ({lo0:.0}–{hi0:.0}) | |"
    ));
    println!("\n{n} recipients, {rounds} runs each, medians (min–max):\n");
    println!("| figure | result | |\n|---|---|---|");
    for row in table {
        println!("{row}");
    }
}
