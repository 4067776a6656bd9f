//! Webhook benchmark: delivery reports ingested per second over loopback HTTP.
//!
//! `cargo bench --bench webhooks` fills a fresh store with sent BulkSMS messages, serves
//! the real router in this process (2 worker threads, as `crier serve`), and posts one
//! BulkSMS delivery report per message — each moves a distinct message `sent` →
//! `delivered`, and is acknowledged only once durable. Several runs; prints each and
//! the median with min and max.
//!
//! Settings (environment):
//! - `CRIER_BENCH_BACKEND`: `embedded` (default);
//! - `CRIER_BENCH_REPORTS`: reports per run (default 20,000);
//! - `CRIER_BENCH_RUNS`: runs (default 5);
//! - `CRIER_BENCH_CONNS`: concurrent connections (default 64);
//! - `CRIER_BENCH_BATCH`: reports per request (default 1; BulkSMS MANY sends up to 10);
//! - `CRIER_BENCH_WRK=1`: load from `wrk` (Debian's, with a generated Lua script) for
//!   `CRIER_BENCH_SECONDS` (default 5) per run instead of the built-in Rust client; the
//!   rate is then the server's count of applied reports over the run's time.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crier::config::Config;
use crier::history::ledger::{Change, Ledger, NewMessage, NewRun};
use crier::history::{MessageState, MessageType, Trigger};
use crier::job::Channel;
use crier::recipients::RecipientKind;
use crier::server::{self, AppState};
use crier::store::Store;

const TOKEN: &str = "bench-webhook-token-0123";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Plans `n` messages and marks them sent with provider ids `p0`…
fn fill(store: &dyn Store, n: u64) {
    let ledger = Ledger::new(store);
    let chunk = 5_000;
    let mut done = 0;
    while done < n {
        let run = ledger
            .create_run(NewRun {
                job: "bench".into(),
                trigger: Trigger::Manual,
                channels: vec![Channel::Sms],
                provider: "bulk".into(),
                body: "Hi".into(),
                subject: None,
            })
            .unwrap();
        let count = chunk.min(n - done);
        let messages = (done..done + count)
            .map(|i| NewMessage {
                recipient_kind: RecipientKind::Customer,
                recipient_id: i,
                address: format!("+2782{:07}", i % 10_000_000),
                channel: Channel::Sms,
                provider: "bulk".into(),
                kind: MessageType::Message,
                subject: None,
                body: "Hi Thabo, your account has an overdue balance of R450.00.".into(),
                encoding: Some("gsm7".into()),
                parts: 1,
                state: MessageState::Queued,
                reason: None,
                error: None,
                snapshot: Default::default(),
                html: None,
                route: Vec::new(),
            })
            .collect();
        let ids = ledger.plan(run.id, messages).unwrap();
        ledger.finish_planning(run.id).unwrap();
        let sending: Vec<Change> = ids
            .iter()
            .map(|id| Change::to(*id, MessageState::Sending))
            .collect();
        ledger.transition(&sending).unwrap();
        let sent: Vec<Change> = ids
            .iter()
            .enumerate()
            .map(|(k, id)| {
                let mut c = Change::to(*id, MessageState::Sent);
                c.provider_message_id = Some(format!("p{}", done + k as u64));
                c
            })
            .collect();
        ledger.transition(&sent).unwrap();
        done += count;
    }
    ledger.flush().unwrap();
}

fn report(i: u64) -> String {
    format!(
        r#"{{"id":"p{i}","type":"SENT","from":"crier","to":"27821234567","body":null,"submission":{{"id":"s","date":"2026-01-01T10:00:00+00:00"}},"status":{{"id":"DELIVERED.null","type":"DELIVERED","subtype":null}}}}"#
    )
}

/// Posts reports `start..start+n` from `conns` connections; returns the seconds taken.
async fn rust_client(url: &str, start: u64, n: u64, conns: u64, batch: u64) -> f64 {
    let client = crier::provider::http_client();
    let next = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let client = client.clone();
        let next = next.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(batch, Ordering::Relaxed);
                if k >= n {
                    break;
                }
                let items: Vec<String> =
                    (k..(k + batch).min(n)).map(|j| report(start + j)).collect();
                let body = format!("[{}]", items.join(","));
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// wrk with a Lua script: each of its threads posts ids from its own range.
fn wrk(
    url: &str,
    start: u64,
    per_thread: u64,
    threads: u64,
    conns: u64,
    seconds: u64,
    dir: &std::path::Path,
) {
    let script = format!(
        r#"counter = 0
first = 0
local n = 0
function setup(thread)
  thread:set("first", {start} + n * {per_thread})
  n = n + 1
end
function request()
  local i = first + counter
  counter = counter + 1
  local body = '[{{"id":"p' .. i .. '","type":"SENT","from":"crier","to":"27821234567","status":{{"id":"DELIVERED.null","type":"DELIVERED","subtype":null}}}}]'
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json"}}, body)
end
"#
    );
    let path = dir.join("dlr.lua");
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{seconds}s"),
            "-s",
            path.to_str().unwrap(),
            url,
        ])
        .output()
        .expect("run wrk (apt-get install -y wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text
        .lines()
        .filter(|l| l.contains("Requests/sec") || l.contains("Non-2xx") || l.contains("Latency"))
    {
        println!("    wrk: {}", line.trim());
    }
}

fn main() {
    let reports = env_u64("CRIER_BENCH_REPORTS", 20_000);
    let runs = env_u64("CRIER_BENCH_RUNS", 5);
    let conns = env_u64("CRIER_BENCH_CONNS", 64);
    let batch = env_u64("CRIER_BENCH_BATCH", 1).max(1);
    let use_wrk = std::env::var("CRIER_BENCH_WRK").is_ok_and(|v| v == "1");
    let seconds = env_u64("CRIER_BENCH_SECONDS", 5);
    let backend = std::env::var("CRIER_BENCH_BACKEND").unwrap_or_else(|_| "embedded".into());
    let wrk_threads = 2;
    // wrk runs for a time, not a count: room for far more reports than it can send.
    let per_run = if use_wrk { 200_000 } else { reports };
    let total = per_run * runs;

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "store:\n  backend: {backend}\nproviders:\n  bulk:\n    type: bulksms\n    token_id: id\n    token_secret: secret\nchannels:\n  sms: bulk\nserver:\n  webhook_token: {TOKEN}\n"
    );
    let config_path = dir.path().join("crier.yaml");
    std::fs::write(&config_path, yaml).unwrap();
    let config = Config::load(Some(&config_path)).expect("config");
    let store: Arc<dyn Store> = Arc::from(crier::store::open(&config.store_config()).unwrap());
    let t = Instant::now();
    fill(store.as_ref(), total);
    println!(
        "webhooks: {backend}, {total} sent messages prepared in {:.1} s; {runs} runs, {conns} connections, {batch} report(s) per request, {}",
        t.elapsed().as_secs_f64(),
        if use_wrk {
            "wrk"
        } else {
            "Rust client (reqwest)"
        }
    );

    let state = Arc::new(AppState {
        config: config.clone(),
        store: store.clone(),
        metrics: Default::default(),
        jobs_dir: dir.path().join("jobs"),
        scheduler: None,
        worker: None,
    });
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server_rt.spawn(server::serve(listener, state.clone(), async {
        let _ = stop_rx.await;
    }));
    let url = format!("http://{addr}/webhooks/bulksms/{TOKEN}");

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rates = Vec::new();
    for run in 0..runs {
        let start = run * per_run;
        let before = state.metrics.reports_applied.load(Ordering::Relaxed);
        let secs = if use_wrk {
            let t = Instant::now();
            wrk(
                &url,
                start,
                per_run / wrk_threads,
                wrk_threads,
                conns,
                seconds,
                dir.path(),
            );
            t.elapsed().as_secs_f64()
        } else {
            client_rt.block_on(rust_client(&url, start, per_run, conns, batch))
        };
        let applied = state.metrics.reports_applied.load(Ordering::Relaxed) - before;
        if !use_wrk {
            assert_eq!(applied, per_run, "every report applied");
        }
        let rate = applied as f64 / secs;
        println!(
            "  run {}: {applied} reports in {secs:.2} s = {rate:.0} reports/s",
            run + 1
        );
        rates.push(rate);
    }
    let (median, min, max) = support::median_min_max(rates);
    println!("webhooks: median {median:.0} reports/s (min {min:.0}, max {max:.0})");
    let lag = state.metrics.report_lag_count.load(Ordering::Relaxed);
    assert!(lag > 0);

    let _ = stop_tx.send(());
    server_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), serving).await })
        .ok();
    let ledger = Ledger::new(store.as_ref());
    ledger
        .verify()
        .expect("ledger consistent after the benchmark");
}
