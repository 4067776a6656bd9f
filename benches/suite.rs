//! Send benchmark: the real `crier send` against the BulkSMS mock on loopback.
//!
//! `cargo bench --bench send -- [RECIPIENTS] [RUNS]` (default 1,000,000 and 3);
//! `CRIER_BENCH_BACKEND=redb` for the redb store; `CRIER_BENCH_CONCURRENCY` (default 64);
//! `CRIER_BENCH_RATE_SECS` (default 30) for the rate-limit part.
//!
//! 1. Generates the customers, imports them once, and for each run copies that store
//!    and runs `crier send JOB --yes` (the release binary, history on) in a child
//!    process through the `bulksms` provider to the mock, which answers as BulkSMS does.
//!    Reports messages per second end to end (preview, planning, sending, recording:
//!    the whole command) and the child's peak RSS.
//! 2. Runs `wrk` (Debian package `wrk`) against the same mock with the same number of
//!    connections, posting the same BulkSMS request, so crier's throughput can be read
//!    as a fraction of what a plain load generator reaches.
//! 3. Sends a job limited to 200 messages/s for about 30 s and reports the achieved rate
//!    (from the mock's arrival times) and its error.

#[path = "../tests/mocks/mod.rs"]
mod mocks;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN_ID: &str = "BENCH0TOKEN0ID-01-B";
const SECRET: &str = "bench-secret";

fn crier() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crier"));
    c.env_remove("RUST_LOG");
    c
}

fn write_project(dir: &Path, url: &str, concurrency: u32, job_extra: &str) {
    let backend = match crier::store::Backend::from_env("CRIER_BENCH_BACKEND") {
        crier::store::Backend::Sled => "sled",
        crier::store::Backend::Redb => "redb",
    };
    std::fs::write(
        dir.join("crier.yaml"),
        format!(
            "store: {{ backend: {backend} }}\nproviders:\n  bulksms:\n    type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: {SECRET}\n    base_url: {url}\n    limits: {{ concurrency: {concurrency}, timeout: 30s }}\nchannels:\n  sms: bulksms\n"
        ),
    )
    .expect("crier.yaml");
    std::fs::write(
        dir.join("job.yaml"),
        format!(
            "send_to: sms\nmessage: \"Hi {{{{ customer.name }}}}, your Atlantic Fibre invoice is overdue. Pay at portal.example.net\"\nrecipients: {{}}\n{job_extra}"
        ),
    )
    .expect("job.yaml");
}

/// Runs `crier send` in `dir`; returns (seconds, peak RSS MB, stdout).
fn timed_send(dir: &Path) -> (f64, f64, String) {
    let started = Instant::now();
    let mut child = crier()
        .args(["send", "job.yaml", "--yes"])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start crier");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0.0f64;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if let Ok(status) = std::fs::read_to_string(&status_path)
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        {
            peak = peak.max(kb / 1024.0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = started.elapsed().as_secs_f64();
    let out = child.wait_with_output().expect("crier output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "crier send failed: {stdout}");
    (secs, peak, stdout)
}

/// The number before `what` in crier's summary line, e.g. `970123 sent`.
fn count(stdout: &str, what: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("run "))
        .expect("summary line");
    let words: Vec<&str> = line.split([' ', ',']).collect();
    words
        .windows(2)
        .find(|w| w[1] == what)
        .and_then(|w| w[0].parse().ok())
        .expect("count in summary")
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(ok.success());
}

fn wrk(url: &str, connections: u32) -> Option<f64> {
    let script = std::env::temp_dir().join("crier-bench-wrk.lua");
    let auth = mocks::basic(TOKEN_ID, SECRET);
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"{auth}\"\nwrk.body = '[{{\"to\":\"+27821234567\",\"body\":\"Hi Thabo Mokoena, your Atlantic Fibre invoice is overdue. Pay at portal.example.net\",\"encoding\":\"TEXT\",\"userSuppliedId\":\"x\"}}]'\n"
        ),
    )
    .ok()?;
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), "-d15s", "-s"])
        .arg(&script)
        .arg(format!("{url}/messages"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let total: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let concurrency: u32 = std::env::var("CRIER_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let rate_secs: u64 = std::env::var("CRIER_BENCH_RATE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mock = runtime.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    mock.state.keep_accepted(false);

    let work = tempfile::tempdir().expect("temp dir");
    let seed = work.path().join("seed");
    std::fs::create_dir_all(&seed).expect("seed dir");
    let csv = work.path().join("customers.csv");
    support::write_customers(&csv, total, 42).expect("customers");
    write_project(&seed, &mock.url, concurrency, "");
    let imported = crier()
        .args(["import"])
        .arg(&csv)
        .current_dir(&seed)
        .output()
        .expect("import");
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );

    let mut rates = Vec::new();
    let mut peaks = Vec::new();
    for i in 0..runs {
        let dir = work.path().join(format!("run{i}"));
        copy_dir(&seed, &dir);
        // Each run's store is a copy of one seed, so its deduplication ids repeat the
        // previous run's: let the mock forget them, as BulkSMS does after 12 hours.
        mock.state.forget_dedup();
        let before = mock.state.accepted_count();
        let (secs, peak, stdout) = timed_send(&dir);
        let sent = count(&stdout, "sent");
        assert_eq!(mock.state.accepted_count() - before, sent as usize);
        let rate = sent as f64 / secs;
        println!(
            "run {i}: {sent} sent in {secs:.1} s: {rate:.0} messages/s, peak RSS {peak:.0} MB"
        );
        rates.push(rate);
        peaks.push(peak);
        std::fs::remove_dir_all(&dir).ok();
    }
    let (rate, rate_min, rate_max) = support::median_min_max(rates);
    let (peak, peak_min, peak_max) = support::median_min_max(peaks);
    println!(
        "| crier send, {total} recipients, bulksms mock, concurrency {concurrency} | {rate:.0} messages/s ({rate_min:.0}–{rate_max:.0}) | peak RSS {peak:.0} MB ({peak_min:.0}–{peak_max:.0}) |"
    );

    let mut wrk_rates = Vec::new();
    for _ in 0..runs {
        match wrk(&mock.url, concurrency) {
            Some(r) => wrk_rates.push(r),
            None => {
                println!("wrk not found or failed: `apt-get install wrk` to compare");
                break;
            }
        }
    }
    if !wrk_rates.is_empty() {
        let (w, wmin, wmax) = support::median_min_max(wrk_rates);
        println!(
            "| wrk, same mock, {concurrency} connections | {w:.0} requests/s ({wmin:.0}–{wmax:.0}) | crier at {:.0}% of it |",
            100.0 * rate / w
        );
    }

    // The rate limiter: 200/s for about `rate_secs` seconds.
    let n = 200 * rate_secs;
    let dir = work.path().join("rate");
    std::fs::create_dir_all(&dir).expect("rate dir");
    let small = work.path().join("small.csv");
    support::write_customers(&small, n * 105 / 100, 7).expect("customers");
    write_project(&dir, &mock.url, 8, "rate: 200/s\n");
    let imported = crier()
        .arg("import")
        .arg(&small)
        .current_dir(&dir)
        .output()
        .expect("import");
    assert!(imported.status.success());
    let mut achieved = Vec::new();
    for _ in 0..runs {
        mock.state.clear_arrivals();
        let (_, _, stdout) = timed_send(&dir);
        let sent = count(&stdout, "sent");
        let mut arrivals = mock.state.arrivals();
        arrivals.sort();
        let span = arrivals[arrivals.len() - 1] - arrivals[0];
        // n arrivals span n-1 intervals.
        let r = (arrivals.len() - 1) as f64 / span.as_secs_f64();
        println!(
            "rate run: {sent} sent, {r:.2}/s over {:.1} s",
            span.as_secs_f64()
        );
        achieved.push(r);
    }
    let (r, rmin, rmax) = support::median_min_max(achieved);
    println!(
        "| rate limit 200/s, {n} messages | achieved {r:.2}/s ({rmin:.2}–{rmax:.2}) | error {:+.2}% |",
        100.0 * (r / 200.0 - 1.0)
    );
}
