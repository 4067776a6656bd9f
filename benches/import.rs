//! Import benchmark: N synthetic customers into a fresh sled store.
//!
//! `cargo bench --bench import -- [ROWS] [RUNS]` (default 1,000,000 rows, 3 runs).
//! Prints rows/s for each run, their median/min/max, and the process's peak RSS
//! (VmHWM), which covers generation and every import run.

mod support;

use std::time::Instant;

use crier::recipients::RecipientKind;
use crier::recipients::import::{Delimiter, ImportOptions, import};
use crier::recipients::phone::parse_region;
use crier::store::{StoreConfig, open};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rows: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("customers.csv");
    support::write_customers(&csv, rows, 42).expect("generate");
    println!(
        "generated {rows} rows ({:.0} MB), peak RSS so far {:.1} MB",
        std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
        peak_rss_mb()
    );

    let mut rates = Vec::new();
    for run in 0..runs {
        let store = open(&StoreConfig {
            path: dir.path().join(format!("store-{run}")),
            cache_bytes: std::env::var("CRIER_BENCH_CACHE_MB")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(64)
                << 20,
        })
        .expect("store");
        let options = ImportOptions {
            kind: RecipientKind::Customer,
            delimiter: Delimiter::Auto,
            region: parse_region("ZA").expect("ZA"),
            dry_run: false,
            strict: false,
            rejects: None,
        };
        let started = Instant::now();
        let report = import(store.as_ref(), &csv, &options).expect("import");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(report.inserted, rows);
        let rate = rows as f64 / secs;
        println!(
            "run {}: {rows} rows in {secs:.2}s = {rate:.0} rows/s (invalid phones {}), peak RSS {:.1} MB",
            run + 1,
            report.invalid_phones,
            peak_rss_mb()
        );
        rates.push(rate);
        drop(store);
        let _ = std::fs::remove_dir_all(dir.path().join(format!("store-{run}")));
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "import: median {:.0} rows/s (min {:.0}, max {:.0}) over {runs} runs; peak RSS {:.1} MB",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        peak_rss_mb()
    );
}
