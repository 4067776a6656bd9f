//! The sled directory's write path, taken apart: what each part of an upsert costs.
//!
//! `cargo bench --bench sled_paths -- [ROWS]` (default 200,000). Writes ROWS ready-made
//! recipients (as `benches/store.rs` makes them) into a fresh sled database per variant,
//! laid out as `src/recipients/directory/sled.rs` lays them out, and prints upserts/s:
//!
//! - `as crier does`: read the stored record (to tell inserted/updated/unchanged), encode,
//!   write record + login index entry in one `apply_batch` of 4,096 rows, flush at the end;
//! - `no read`: the same without the read before the write (what a blind write costs);
//! - `no login index`: the read, but only the record written;
//! - `batch N`: other batch sizes;
//! - `high throughput` / `no compression + no flusher`: sled `Config` modes.
//!
//! Each variant runs RUNS (3) times in this process, in order (median, min, max); the figures are for comparing
//! variants with each other, not an import's rate (no CSV, no phone parsing).

use std::time::Instant;

use crier::recipients::{Recipient, RecipientKind, Status, Tariff};

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

struct Variant {
    name: &'static str,
    read: bool,
    login: bool,
    batch: u64,
    config: fn(sled::Config) -> sled::Config,
}

fn run(v: &Variant, rows: u64, dir: &std::path::Path) -> f64 {
    let db = (v.config)(sled::Config::new().path(dir).cache_capacity(64 << 20))
        .open()
        .expect("sled");
    let tree = db.open_tree("recipients").expect("tree");
    let started = Instant::now();
    let mut next = 1;
    while next <= rows {
        let end = (next + v.batch).min(rows + 1);
        let mut batch = sled::Batch::default();
        for id in next..end {
            let r = recipient(id);
            let mut key = [0u8; 10];
            key[0] = b'r';
            key[1] = b'c';
            key[2..].copy_from_slice(&id.to_be_bytes());
            let mut bytes = vec![1u8];
            postcard::to_io(&r, &mut bytes).expect("encode");
            if v.read {
                let old = tree.get(key).expect("get");
                if old.as_deref() == Some(bytes.as_slice()) {
                    continue;
                }
            }
            if v.login {
                let mut lk = vec![b'l', b'c'];
                lk.extend_from_slice(r.login.as_deref().unwrap_or_default().as_bytes());
                batch.insert(lk, &id.to_be_bytes());
            }
            batch.insert(&key, bytes);
        }
        tree.apply_batch(batch).expect("apply");
        next = end;
    }
    db.flush().expect("flush");
    rows as f64 / started.elapsed().as_secs_f64()
}

/// Runs per variant (interleaving would be fairer on a shared machine; these are in turn).
const RUNS: usize = 3;

fn main() {
    let rows: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let same = |c: sled::Config| c;
    let variants = [
        Variant {
            name: "as crier does (read, login index, batch 4096)",
            read: true,
            login: true,
            batch: 4096,
            config: same,
        },
        Variant {
            name: "no read before write",
            read: false,
            login: true,
            batch: 4096,
            config: same,
        },
        Variant {
            name: "no login index",
            read: true,
            login: false,
            batch: 4096,
            config: same,
        },
        Variant {
            name: "neither",
            read: false,
            login: false,
            batch: 4096,
            config: same,
        },
        Variant {
            name: "batch 512",
            read: true,
            login: true,
            batch: 512,
            config: same,
        },
        Variant {
            name: "batch 32768",
            read: true,
            login: true,
            batch: 32768,
            config: same,
        },
        Variant {
            name: "Mode::HighThroughput",
            read: true,
            login: true,
            batch: 4096,
            config: |c| c.mode(sled::Mode::HighThroughput),
        },
        Variant {
            name: "no flusher thread",
            read: true,
            login: true,
            batch: 4096,
            config: |c| c.flush_every_ms(None),
        },
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    println!("| sled write path, {rows} upserts, {RUNS} runs | median upserts/s | min | max |");
    println!("|---|---|---|---|");
    for (i, v) in variants.iter().enumerate() {
        let mut rates: Vec<f64> = (0..RUNS)
            .map(|r| {
                let path = dir.path().join(format!("db-{i}-{r}"));
                let rate = run(v, rows, &path);
                let _ = std::fs::remove_dir_all(&path);
                rate
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} |",
            v.name,
            rates[RUNS / 2],
            rates[0],
            rates[RUNS - 1]
        );
    }
}
