//! The web console in a real browser: Debian's Chromium driven by `playwright-core`
//! (`tests/browser/`, run with `node --test`) against a real `crier serve` with imported
//! customers and the BulkSMS mock on loopback.
//!
//! This binary sets the world up and hands it to node: it starts the mock (and a small
//! loopback endpoint, `GET /accepted`, that lists what the mock accepted, so the browser
//! test can see a test message arrive), imports customers, records one finished run
//! with the CLI, starts `crier serve`, then runs `node --test tests/browser/` with the
//! addresses in its environment and fails with node's output if any browser test
//! fails. Screenshots of failures land in `target/browser-screenshots/`.
//!
//! Needs `node`, `/usr/bin/chromium` and `npm ci` in `tests/browser` (`.ci/run` does
//! all three); it fails, saying which is missing, rather than pass without them. Set
//! `CRIER_BROWSER=skip` to skip it knowingly. `CRIER_DOCS_SHOTS=$PWD/docs` (passed on to
//! node) also writes the README's screenshots there.

mod common;
mod mocks;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::server::Server;
use common::{Project, root};

const TOKEN: &str = "browser-console-token-5678";
const TOKEN_ID: &str = "bulk-id";
const SECRET: &str = "bulk-secret";

/// Customers in Cape Town (the jobs' filter), one named like an attack.
const CUSTOMERS: usize = 24;
/// Customers in `Bulk`, for the run that is cancelled.
const BULK: usize = 100;

fn people() -> String {
    let mut csv = String::from("id,name,status,phone,email,location,partner,billing_type\n");
    for i in 1..=CUSTOMERS {
        let name = if i == 3 {
            "<script>window.__xss = 1</script>".to_string()
        } else {
            format!("Customer {i}")
        };
        let partner = if i % 2 == 0 { "North" } else { "South" };
        csv.push_str(&format!(
            "{i},\"{name}\",active,082 555 {:04},c{i}@example.com,Cape Town,{partner},recurring\n",
            1000 + i
        ));
    }
    csv.push_str("99,Elsewhere,active,083 555 0099,e@example.com,Durban,North,recurring\n");
    // More than BulkSMS's in-flight window (64), so a slow run keeps some queued.
    for i in 0..BULK {
        csv.push_str(&format!(
            "{},Bulk {i},active,084 555 {:04},b{i}@example.com,Bulk,South,recurring\n",
            200 + i,
            2000 + i
        ));
    }
    csv
}

fn missing_prerequisite() -> Option<String> {
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !Path::new("/usr/bin/chromium").exists() {
        return Some("/usr/bin/chromium is missing (apt-get install chromium)".into());
    }
    if !root()
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Some("tests/browser/node_modules is missing (cd tests/browser && npm ci)".into());
    }
    None
}

#[test]
fn console_in_chromium() {
    if std::env::var("CRIER_BROWSER").as_deref() == Ok("skip") {
        eprintln!("CRIER_BROWSER=skip: browser tests skipped.");
        return;
    }
    if let Some(why) = missing_prerequisite() {
        panic!("browser tests cannot run: {why} (or set CRIER_BROWSER=skip)");
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    let inspect = rt.block_on(inspection(mock.state.clone()));

    let p = Project::new();
    p.write(
        "crier.yaml",
        format!(
            "timezone: Africa/Johannesburg\nserver:\n  token: {TOKEN}\nproviders:\n  bulksms:\n    type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: {SECRET}\n    base_url: {}\n    limits: {{ concurrency: 2, backoff: 10ms }}\nchannels:\n  sms: bulksms\n",
            mock.url
        ),
    );
    p.write("people.csv", people());
    let run = p.crier(&["import", "people.csv"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let cape_town = "recipients:\n  where: { location: Cape Town }\nsend_to: sms\n";
    p.write(
        "jobs/quick.yaml",
        format!("{cape_town}message: \"Hello {{{{ customer.name }}}}, quick notice.\"\n"),
    );
    // Slow enough to watch (about 5 s), fast enough for a test.
    p.write(
        "jobs/slow.yaml",
        format!("description: Maintenance notice, watched live\n{cape_town}message: \"Dear {{{{ customer.name }}}}, maintenance tonight.\"\nrate: 5/s\n"),
    );
    // Slow enough to cancel.
    p.write(
        "jobs/crawl.yaml",
        "recipients:\n  where: { location: Bulk }\nsend_to: sms\nmessage: \"Slow notice for {{ customer.name }}.\"\nrate: 5/s\n",
    );
    p.write(
        "jobs/nightly.yaml",
        format!("{cape_town}message: Nightly\nschedule:\n  cron: \"0 2 * * *\"\n  timezone: Africa/Johannesburg\n"),
    );
    // A finished run in the history before the server starts.
    let sent = p.crier(&["send", "jobs/quick.yaml", "--yes"]);
    assert_eq!(sent.code, 0, "{}\n{}", sent.stdout, sent.stderr);

    let server = Server::start(&p, &[], Some(TOKEN));
    let shots = root().join("target/browser-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = Command::new("node");
    node.args(["--test", "--test-concurrency=1", "tests/browser/"])
        .current_dir(root())
        .env("CRIER_URL", &server.base)
        .env("CRIER_TOKEN", TOKEN)
        .env("CRIER_MOCK", &inspect)
        .env("CRIER_BIN", env!("CARGO_BIN_EXE_crier"))
        .env("CRIER_PROJECT", p.path())
        .env("CRIER_CUSTOMERS", CUSTOMERS.to_string())
        .env("CRIER_SHOTS", &shots);
    let out = node.output().expect("run node --test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = server.stop();
    assert!(
        out.status.success(),
        "browser tests failed (screenshots in {}):\n{stdout}\n{stderr}\n--- crier serve log (tail):\n{}",
        shots.display(),
        log.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{stdout}");
    assert!(!log.contains(TOKEN), "the token is in the server log");
    drop(mock);
}

/// `GET /accepted` on loopback: what the mock accepted, as JSON `[{to, body}]`.
async fn inspection(state: Arc<mocks::State>) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/accepted",
        get(move || {
            let state = state.clone();
            async move {
                let list: Vec<serde_json::Value> = state
                    .accepted()
                    .into_iter()
                    .map(|a| serde_json::json!({ "to": a.to, "body": a.body }))
                    .collect();
                axum::Json(list)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
