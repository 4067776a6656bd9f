//! Import benchmark: N synthetic customers into a fresh sled store.
//!
//! `cargo bench --bench import -- [ROWS] [RUNS]` (default 1,000,000 rows, 3 runs);
//! `CRIER_BENCH_CACHE_MB` sets the store cache (default 64, crier's default).
//! `CRIER_BENCH_BACKEND=postgres` imports into the PostgreSQL directory instead, at
//! `CRIER_BENCH_DATABASE_URL` (a fresh schema per run, dropped after it).
//! The file is generated once; each run imports it in a fresh child process, so the
//! peak RSS (VmHWM) reported is that of one import alone. Prints each run, then the
//! median, min and max.

mod support;

use std::time::Instant;

use crier::recipients::RecipientKind;
use crier::recipients::directory::Directory;
use crier::recipients::directory::postgres::PgDirectory;
use crier::recipients::import::{Delimiter, ImportOptions, import};
use crier::recipients::phone::parse_region;
use crier::store::{PgSettings, StoreConfig, open};

/// One import in this process; prints `rows_per_s peak_rss_mb invalid_phones`.
fn child(csv: &str, store_dir: &str) {
    let cache_mb: u64 = std::env::var("CRIER_BENCH_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let backend = crier::store::Backend::from_env("CRIER_BENCH_BACKEND");
    // On PostgreSQL, the pool and the run's schema, dropped after the run.
    let mut scratch = None;
    let directory: Box<dyn Directory> = match backend {
        crier::store::Backend::Embedded => open(&StoreConfig {
            path: store_dir.into(),
            cache_bytes: cache_mb << 20,
            backend,
            postgres: None,
        })
        .expect("store"),
        crier::store::Backend::Postgres => {
            let url = std::env::var("CRIER_BENCH_DATABASE_URL")
                .expect("CRIER_BENCH_DATABASE_URL for CRIER_BENCH_BACKEND=postgres");
            let mut settings = PgSettings::new(url);
            settings.schema = schema_of(store_dir);
            let directory = PgDirectory::open(&settings).expect("PostgreSQL directory");
            scratch = Some((directory.pg().clone(), settings.schema.clone()));
            Box::new(directory)
        }
    };
    let options = ImportOptions {
        kind: RecipientKind::Customer,
        delimiter: Delimiter::Auto,
        region: parse_region("ZA").expect("ZA"),
        dry_run: false,
        strict: false,
        rejects: None,
    };
    let started = Instant::now();
    let report = import(directory.as_ref(), std::path::Path::new(csv), &options).expect("import");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} {} {}",
        report.inserted as f64 / secs,
        support::peak_rss_mb(),
        report.invalid_phones
    );
    if let Some((pg, schema)) = scratch {
        pg.call("drop the bench schema", move |client| async move {
            client
                .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await
        })
        .expect("drop the bench schema");
    }
}

/// The bench schema of one run: `bench_` and the store dir's last path element.
fn schema_of(store_dir: &str) -> String {
    let leaf = std::path::Path::new(store_dir)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("store");
    format!("bench_{}_{}", std::process::id(), leaf.replace('-', "_"))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child") {
        return child(&args[1], &args[2]);
    }
    let rows: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("customers.csv");
    support::write_customers(&csv, rows, 42).expect("generate");
    println!(
        "generated {rows} rows ({:.0} MB)",
        std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
    );
    let (mut rates, mut rss) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let store = dir.path().join(format!("store-{run}"));
        let fields =
            support::run_child(&["--child", csv.to_str().unwrap(), store.to_str().unwrap()]);
        println!(
            "run {}: {:.0} rows/s, peak RSS {:.1} MB ({} invalid phones)",
            run + 1,
            fields[0],
            fields[1],
            fields[2]
        );
        rates.push(fields[0]);
        rss.push(fields[1]);
        let _ = std::fs::remove_dir_all(&store);
    }
    let (r_med, r_min, r_max) = support::median_min_max(rates);
    let (m_med, m_min, m_max) = support::median_min_max(rss);
    println!(
        "| import {rows} rows | {r_med:.0} rows/s | {r_min:.0} | {r_max:.0} | {m_med:.0} MB (min {m_min:.0}, max {m_max:.0}) |"
    );
}
