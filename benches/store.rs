//! Store benchmark: upserts of ready-made recipients through the `Store` trait, in the
//! import's batch size, with no CSV or phone parsing. It shows what the backend alone
//! sustains, so the import benchmark's figure can be read against it.
//!
//! `cargo bench --bench store -- [ROWS] [RUNS]` (default 1,000,000 rows, 3 runs);
//! `CRIER_BENCH_CACHE_MB` sets the cache (default 64). `CRIER_BENCH_BACKEND=postgres`
//! measures the PostgreSQL directory at `CRIER_BENCH_DATABASE_URL` (a fresh schema per run).

mod support;

use std::time::Instant;

use crier::recipients::directory::Directory;
use crier::recipients::directory::postgres::PgDirectory;
use crier::recipients::{Recipient, RecipientKind, Status, Tariff};
use crier::store::{PgSettings, StoreConfig, open};

fn recipient(id: u64) -> Recipient {
    Recipient {
        kind: RecipientKind::Customer,
        id,
        login: Some(format!("{id:06}")),
        status: Status::Active,
        name: "Thabo Mokoena".into(),
        email: Some(format!("c{id}@example.co.za")),
        billing_email: None,
        phone: Some(format!("+2782{:07}", id % 10_000_000)),
        phone_raw: Some(format!("082 {:03} {:04}", id % 900 + 100, id % 10_000)),
        category: None,
        location: Some("Cape Town".into()),
        billing_type: None,
        partner: Some("Main".into()),
        tariffs: vec![Tariff {
            service: None,
            plan: "Fiber 50".into(),
        }],
        timezone: None,
        attrs: [("overdue_days".to_string(), (id % 60).to_string())].into(),
    }
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
    let cache_mb: u64 = std::env::var("CRIER_BENCH_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rates = Vec::new();
    for run in 0..runs {
        let path = dir.path().join(format!("store-{run}"));
        let backend = crier::store::Backend::from_env("CRIER_BENCH_BACKEND");
        let store: Box<dyn Directory> = match backend {
            crier::store::Backend::Embedded => open(&StoreConfig {
                path: path.clone(),
                cache_bytes: cache_mb << 20,
                backend,
                postgres: None,
            })
            .expect("store"),
            crier::store::Backend::Postgres => {
                let url = std::env::var("CRIER_BENCH_DATABASE_URL")
                    .expect("CRIER_BENCH_DATABASE_URL for CRIER_BENCH_BACKEND=postgres");
                let mut settings = PgSettings::new(url);
                settings.schema = format!("bench_store_{}_{run}", std::process::id());
                Box::new(PgDirectory::open(&settings).expect("PostgreSQL directory"))
            }
        };
        let started = Instant::now();
        let mut next = 1;
        while next <= rows {
            let end = (next + 4096).min(rows + 1);
            let batch: Vec<Recipient> = (next..end).map(recipient).collect();
            store.upsert_recipients(&batch, true).expect("upsert");
            next = end;
        }
        store.sync().expect("flush");
        let secs = started.elapsed().as_secs_f64();
        let rate = rows as f64 / secs;
        println!(
            "run {}: {rate:.0} upserts/s, peak RSS {:.1} MB",
            run + 1,
            support::peak_rss_mb()
        );
        rates.push(rate);
        drop(store);
        let _ = std::fs::remove_dir_all(&path);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "store upserts (cache {cache_mb} MB): median {:.0}/s (min {:.0}, max {:.0}) over {runs} runs; peak RSS {:.1} MB",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        support::peak_rss_mb()
    );
}
