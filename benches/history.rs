//! History benchmark: queries, export and transitions over a large ledger.
//!
//! `CRIER_BENCH_BACKEND=postgres` runs it on PostgreSQL at `CRIER_BENCH_DATABASE_URL`
//! (a fresh schema per run).
//!
//! `cargo bench --bench history -- [MESSAGES]` (default 1,000,000; the README's figures
//! are for 10,000,000). Progress lines show the resident memory. `CRIER_BENCH_CACHE_MB` sets the cache. Fills a fresh store
//! with MESSAGES message records in runs of 1,000 spread over 60 days, then measures, each
//! as the median of several repeats with min and max:
//! - a filtered run query (status sent_with_error, last 7 days, first page of 50);
//! - a filtered message query (state failed, last 7 days, first page of 50);
//! - a CSV export of 1,000,000 messages to a file, in a child process (rows/s, peak RSS);
//! - state transitions with durability batching (1,000 per atomic write, flushed).

mod support;

use std::io::{BufWriter, Write};
use std::time::Instant;

use chrono::Utc;
use crier::history::export::messages_csv;
use crier::history::ledger::{Change, Ledger, NewRun};
use crier::history::query::{self, MessageFilter, Period, RunFilter};
use crier::history::{MessageState, RunId, RunStatus, Trigger};
use crier::job::Channel;
use crier::store::{Store, StoreConfig, open};

const DAY: i64 = 86_400_000;

fn open_store(dir: &str) -> Box<dyn Store> {
    let cache_mb: u64 = std::env::var("CRIER_BENCH_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let backend = crier::store::Backend::from_env("CRIER_BENCH_BACKEND");
    open(&StoreConfig {
        path: dir.into(),
        cache_bytes: cache_mb << 20,
        backend,
        // A schema named after the temp dir: the export child opens the same one.
        postgres: (backend == crier::store::Backend::Postgres).then(|| {
            let mut s = crier::store::PgSettings::new(
                std::env::var("CRIER_BENCH_DATABASE_URL")
                    .expect("CRIER_BENCH_DATABASE_URL for CRIER_BENCH_BACKEND=postgres"),
            );
            let name: String = std::path::Path::new(dir)
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            s.schema = format!("history_{name}");
            s
        }),
    })
    .expect("store")
}

use support::history::message;

fn new_run(job: &str) -> NewRun {
    NewRun {
        job: job.into(),
        trigger: Trigger::Manual,
        channels: vec![Channel::Sms],
        provider: "bulksms".into(),
        body: "Hi {{ customer.name }}".into(),
        subject: None,
    }
}

fn populate(ledger: &Ledger, total: u64) {
    let now = Utc::now().timestamp_millis();
    let runs = total.div_ceil(1000);
    let started = Instant::now();
    for r in 0..runs {
        // Oldest first, spread over 60 days.
        let at = now - 60 * DAY + (r as i64 * 60 * DAY) / runs as i64;
        let run = ledger
            .create_run_with_id(RunId::new(), new_run(&format!("job-{}", r % 10)), at)
            .expect("run");
        let msgs = (0..1000)
            .map(|i| {
                let state = match (r * 1000 + i) % 50 {
                    0 => MessageState::Failed,
                    1..=4 => MessageState::Skipped,
                    5..=30 => MessageState::Delivered,
                    _ => MessageState::Sent,
                };
                message(r * 1000 + i, state)
            })
            .collect();
        ledger.plan_at(run.id, msgs, at).expect("plan");
        ledger.finish_planning(run.id).expect("finish");
        if std::env::var_os("CRIER_BENCH_FLUSH").is_some() {
            ledger.flush().expect("flush");
        }
        if r % 100 == 99 {
            println!(
                "  populated {} messages ({:.0}/s), RSS {:.0} MB",
                (r + 1) * 1000,
                ((r + 1) * 1000) as f64 / started.elapsed().as_secs_f64(),
                support::rss_mb()
            );
        }
    }
    ledger.flush().expect("flush");
    println!(
        "populated {total} messages in {:.0}s ({:.0} messages/s)",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64()
    );
}

fn time_ms(f: impl Fn() -> usize, repeats: usize) -> (f64, f64, f64, usize) {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..repeats {
        let t = Instant::now();
        n = f();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (a, b, c) = support::median_min_max(times);
    (a, b, c, n)
}

/// Exports the newest `rows` messages to a file; prints `rows_per_s peak_rss_mb`.
fn child_export(dir: &str, rows: usize) {
    let store = open_store(dir);
    let ledger = Ledger::new(store.as_ref());
    let filter = MessageFilter::default();
    // On PostgreSQL nothing else creates the data dir.
    std::fs::create_dir_all(dir).expect("bench dir");
    let out_path = std::path::Path::new(dir).join("export.csv");
    let out = BufWriter::new(std::fs::File::create(&out_path).expect("export file"));
    let t = Instant::now();
    let n = messages_csv(
        &ledger,
        query::messages(&ledger, &filter).take(rows),
        crier::history::export::Cells::Safe,
        out,
    )
    .expect("export");
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(out_path);
    println!("{} {}", n as f64 / secs, support::peak_rss_mb());
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child-export") {
        return child_export(&args[1], args[2].parse().expect("rows"));
    }
    let total: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let store_dir = dir.path().join("store");
    let store_dir = store_dir.to_str().expect("utf-8");
    {
        let store = open_store(store_dir);
        let ledger = Ledger::new(store.as_ref());
        populate(&ledger, total);

        let tz = chrono_tz::Africa::Johannesburg;
        let week = Period::Last7Days.range(tz, Utc::now());
        let runs = RunFilter {
            status: Some(RunStatus::SentWithError),
            range: Some(week),
            job: None,
        };
        let (med, min, max, n) = time_ms(|| query::runs(&ledger, &runs).take(50).count(), 21);
        println!(
            "| run query (sent_with_error, last 7 days, first 50) over {total} messages | {med:.2} ms | {min:.2} | {max:.2} | {n} rows |"
        );
        let failed = MessageFilter {
            state: Some(MessageState::Failed),
            range: Some(week),
            ..MessageFilter::default()
        };
        let (med, min, max, n) = time_ms(|| query::messages(&ledger, &failed).take(50).count(), 21);
        println!(
            "| message query (failed, last 7 days, first 50) over {total} messages | {med:.2} ms | {min:.2} | {max:.2} | {n} rows |"
        );

        // Transitions with durability batching: 1,000 per atomic write, each flushed.
        let mut rates = Vec::new();
        for round in 0..3 {
            let run = ledger.create_run(new_run("transitions")).expect("run");
            let count = 100_000u64;
            let mut ids = Vec::new();
            for chunk in 0..(count / 1000) {
                ids.extend(
                    ledger
                        .plan(
                            run.id,
                            (0..1000)
                                .map(|i| message(chunk * 1000 + i, MessageState::Queued))
                                .collect(),
                        )
                        .expect("plan"),
                );
            }
            ledger.flush().expect("flush");
            let t = Instant::now();
            for chunk in ids.chunks(1000) {
                let sending: Vec<Change> = chunk
                    .iter()
                    .map(|id| Change::to(*id, MessageState::Sending))
                    .collect();
                ledger.transition(&sending).expect("sending");
                ledger.flush().expect("flush");
                let sent: Vec<Change> = chunk
                    .iter()
                    .map(|id| {
                        let mut c = Change::to(*id, MessageState::Sent);
                        c.provider_message_id = Some(format!("{round}-{}", id.seq));
                        c
                    })
                    .collect();
                ledger.transition(&sent).expect("sent");
                ledger.flush().expect("flush");
            }
            let rate = (2 * count) as f64 / t.elapsed().as_secs_f64();
            println!("  transitions round {}: {rate:.0}/s", round + 1);
            rates.push(rate);
        }
        let (med, min, max) = support::median_min_max(rates);
        println!("| transitions, 1000 per flushed batch | {med:.0}/s | {min:.0} | {max:.0} | |");
    }

    let rows = total.min(1_000_000) as usize;
    let mut rates = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..3 {
        let f = support::run_child(&["--child-export", store_dir, &rows.to_string()]);
        println!("  export: {:.0} rows/s, peak RSS {:.1} MB", f[0], f[1]);
        rates.push(f[0]);
        rss.push(f[1]);
    }
    let (med, min, max) = support::median_min_max(rates);
    let (rss_med, _, rss_max) = support::median_min_max(rss);
    println!(
        "| CSV export of {rows} messages | {med:.0} rows/s | {min:.0} | {max:.0} | peak RSS {rss_med:.0} MB (max {rss_max:.0}) |"
    );
    std::io::stdout().flush().ok();
}
