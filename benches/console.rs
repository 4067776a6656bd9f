//! Web console benchmark: how long the console's pages take over a large history,
//! through the real server on loopback, signed in as a browser is (session cookie).
//!
//! `cargo bench --bench console -- [MESSAGES] [REQUESTS]` (defaults 1,000,000 and 100).
//! `CRIER_BENCH_BACKEND` selects the backend (embedded by default; for 10,000,000 messages, as
//! `benches/api.rs` explains). The history is filled as the API benchmark fills it (runs
//! of 1,000 over 60 days, 2 % failed). Each page is fetched REQUESTS times in sequence
//! after a warm-up of 5, and the median, min and max of the whole request (status
//! checked, body read) are reported. The dashboard (`/`) reads the runs of the last 30
//! days (its per-day chart).

mod support;

use std::sync::Arc;
use std::time::Instant;

use crier::config::Config;
use crier::config::secret::Secret;
use crier::history::ledger::Ledger;
use crier::server::{AppState, serve};
use crier::store::{Store, StoreConfig, open};

const TOKEN: &str = "bench-token-0123456789abcdef";

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
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let backend = crier::store::Backend::from_env("CRIER_BENCH_BACKEND");
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::from(
        open(&StoreConfig {
            path: dir.path().join("store"),
            cache_bytes: 64 << 20,
            backend,
            postgres: (backend == crier::store::Backend::Postgres).then(|| {
                crier::store::PgSettings::new(
                    std::env::var("CRIER_BENCH_DATABASE_URL")
                        .expect("CRIER_BENCH_DATABASE_URL for CRIER_BENCH_BACKEND=postgres"),
                )
            }),
        })
        .expect("store"),
    );
    let newest = populate(&Ledger::new(store.as_ref()), total);

    let mut config = Config::defaults();
    config.tz = chrono_tz::Africa::Johannesburg;
    config.server.token = Some(Secret::new(TOKEN));
    std::fs::create_dir_all(dir.path().join("jobs")).expect("jobs dir");
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

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cookie = client_rt.block_on(sign_in(&client, &base));
    let get = |path: &str| -> f64 {
        client_rt.block_on(async {
            let t = Instant::now();
            let resp = client
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .send()
                .await
                .expect("request");
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            resp.bytes().await.expect("body");
            t.elapsed().as_secs_f64() * 1000.0
        })
    };
    let pages = [
        "/runs".to_string(),
        "/runs?status=sent_with_error&period=last-7-days".to_string(),
        "/runs?job=job-3&page=20".to_string(),
        format!("/runs/{newest}"),
        format!("/runs/{newest}/progress"),
        format!("/runs/{newest}/breakdown?by=location"),
        "/messages".to_string(),
        "/messages?state=failed&period=last-7-days".to_string(),
        format!("/messages?run={newest}&state=failed"),
        format!("/messages/{newest}-0"),
        "/".to_string(),
    ];
    let backend_name = match backend {
        crier::store::Backend::Embedded => "embedded",
        crier::store::Backend::Postgres => "postgres",
    };
    println!(
        "| console page over {total} messages ({backend_name}), {requests} requests | median | min | max |"
    );
    println!("|---|---|---|---|");
    let row = |path: &str, n: usize| {
        for _ in 0..5 {
            get(path);
        }
        let times: Vec<f64> = (0..n).map(|_| get(path)).collect();
        let (median, min, max) = support::median_min_max(times);
        println!("| `{path}` | {median:.2} ms | {min:.2} ms | {max:.2} ms |");
    };
    for p in &pages {
        row(p, requests);
    }
    let _ = stop_tx.send(());
    runtime.block_on(server).expect("join").expect("serve");
    println!("peak RSS {:.0} MB", support::peak_rss_mb());
}

/// Signs in through the form, as a browser does; returns the session cookie.
async fn sign_in(client: &reqwest::Client, base: &str) -> String {
    let page = client
        .get(format!("{base}/signin"))
        .send()
        .await
        .expect("sign-in page");
    let pre = cookie_of(&page);
    let html = page.text().await.expect("body");
    let at = html.find("name=\"csrf\" value=\"").expect("csrf field") + 19;
    let csrf = &html[at..at + 64];
    let resp = client
        .post(format!("{base}/signin"))
        .header("cookie", &pre)
        .form(&[("token", TOKEN), ("csrf", csrf), ("next", "/")])
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status(), 303, "sign-in refused");
    cookie_of(&resp)
}

fn cookie_of(resp: &reqwest::Response) -> String {
    let set = resp.headers()["set-cookie"].to_str().expect("cookie");
    set.split(';').next().expect("cookie").to_string()
}
