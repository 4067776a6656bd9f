//! HTTP API benchmark: latency of filtered `GET /api/messages` queries over a large ledger,
//! through the real server on loopback.
//!
//! `cargo bench --bench api -- [MESSAGES] [REQUESTS]` (defaults 1,000,000 and 1,000).
//! (sled's memory grows with the data and cannot hold 10,000,000 messages on a normal
//! machine; see `benches/history.rs`; the SQL history of issue 13 is meant to.)
//! Fills a fresh store like the history benchmark (runs of 1,000 spread over 60 days,
//! 2 % failed), serves it with `crier::server::serve` on 127.0.0.1, and sends each query
//! REQUESTS times in sequence over one keep-alive connection, after a warm-up of 20,
//! reporting the median, p99 and max of the request time the client sees (status checked,
//! body read). One row per query shape; the figure is the first one.

mod support;

use std::sync::Arc;
use std::time::Instant;

use crier::config::Config;
use crier::config::secret::Secret;
use crier::history::ledger::Ledger;
use crier::server::{AppState, serve};
use crier::store::{Store, StoreConfig, open};

const TOKEN: &str = "bench-token-0123456789abcdef";

/// The `q`-quantile of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

use support::history::populate;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let total: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let backend = crier::store::Backend::from_env("CRIER_BENCH_BACKEND");
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::from(
        open(&StoreConfig {
            path: dir.path().join("store"),
            cache_bytes: 64 << 20,
            backend,
            postgres: None,
        })
        .expect("store"),
    );
    let newest = populate(&Ledger::new(store.as_ref()), total);

    let mut config = Config::defaults();
    config.tz = chrono_tz::Africa::Johannesburg;
    config.server.token = Some(Secret::new(TOKEN));
    let state = Arc::new(AppState {
        config,
        store: store.clone(),
        metrics: Default::default(),
        jobs_dir: dir.path().join("jobs"),
        scheduler: None,
        worker: None,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("listen");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(serve(listener, state, async {
        let _ = stop_rx.await;
    }));

    // The client on its own runtime and thread, like a separate process would be.
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let get = |query: &str| -> (f64, usize) {
        client_rt.block_on(async {
            let t = Instant::now();
            let resp = client
                .get(format!("{base}/api/messages?{query}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("request");
            assert!(resp.status().is_success(), "{query}: {}", resp.status());
            let body = resp.bytes().await.expect("body");
            (t.elapsed().as_secs_f64() * 1000.0, body.len())
        })
    };
    let queries = [
        "state=failed&period=last-7-days&limit=50".to_string(),
        "channel=sms&state=failed&limit=50".to_string(),
        "phone=0821234567&limit=50".to_string(),
        "recipient=4242&limit=50".to_string(),
        format!("run={newest}&state=failed&limit=50"),
        "period=today&limit=50".to_string(),
    ];
    let backend_name = match backend {
        crier::store::Backend::Postgres => "postgres",
        crier::store::Backend::Embedded => "sled",
    };
    println!(
        "| GET /api/messages?… over {total} messages ({backend_name}), {requests} requests | median | p99 | max | rows | bytes |"
    );
    println!("|---|---|---|---|---|---|");
    for q in &queries {
        for _ in 0..20 {
            get(q);
        }
        let mut times = Vec::with_capacity(requests);
        let mut bytes = 0;
        for _ in 0..requests {
            let (ms, n) = get(q);
            times.push(ms);
            bytes = n;
        }
        times.sort_by(f64::total_cmp);
        let rows = client_rt.block_on(async {
            client
                .get(format!("{base}/api/messages?{q}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("request")
                .json::<Vec<serde_json::Value>>()
                .await
                .expect("json")
                .len()
        });
        println!(
            "| `{q}` | {:.2} ms | {:.2} ms | {:.2} ms | {rows} | {bytes} |",
            quantile(&times, 0.5),
            quantile(&times, 0.99),
            times.last().copied().unwrap_or_default(),
        );
    }
    let _ = stop_tx.send(());
    runtime.block_on(server).expect("join").expect("serve");
    println!("peak RSS {:.0} MB", support::peak_rss_mb());
}
