//! Kill-and-restart rounds of `crier run` in the middle of a scheduled run, against the
//! BulkSMS mock (which deduplicates resubmissions) and the Twilio mock (which cannot).
//!
//! A plain `main` (harness = false): each round starts the real daemon, lets it send for
//! a random moment, and kills it with SIGKILL; after the last round it runs to the end.
//! Then: every recipient is in the ledger; nobody was missed (each is `sent`, or
//! `unknown` and listed); with BulkSMS nobody got the message twice; with Twilio the
//! duplicates are zero too, because in-flight messages become `unknown`, never resent.
//! `CRIER_CHAOS_ROUNDS` (default 4) and `CRIER_CHAOS_RECIPIENTS` (default 1,000) size it;
//! prints `daemon_crash: N passed, M failed` and each round's figures.

#[path = "common/mod.rs"]
mod common;
mod mocks;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Project;
use mocks::Fault;

const TOKEN_ID: &str = "CHAOS-TOKEN-01-B";
const SECRET: &str = "chaos-secret-value";
const SID: &str = "AC0123456789abcdef0123456789abcdef";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start(p: &Project) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_crier"))
        .arg("run")
        .current_dir(p.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start crier run")
}

/// One scenario; returns a failure description, if any.
fn scenario(kind: &str, rounds: u64, n: usize) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mock = runtime.block_on(async {
        match kind {
            "bulksms" => mocks::bulksms(TOKEN_ID, SECRET).await,
            _ => mocks::twilio(SID, SECRET).await,
        }
    });
    mock.state
        .set_fault_every(1, Fault::Delay(Duration::from_millis(3)));
    let p = Project::new();
    let mut csv = String::from("id,name,status,phone\n");
    for i in 1..=n {
        csv.push_str(&format!(
            "{i},Customer {i},active,082 {:03} {:04}\n",
            100 + i / 10_000,
            i % 10_000
        ));
    }
    p.write("people.csv", csv);
    if p.crier(&["import", "people.csv"]).code != 0 {
        return Err("import failed".into());
    }
    let provider = match kind {
        "bulksms" => format!("type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: {SECRET}"),
        _ => format!(
            "type: twilio\n    account_sid: {SID}\n    auth_token: {SECRET}\n    from: \"+15005550006\""
        ),
    };
    p.write(
        "crier.yaml",
        format!(
            "providers:\n  sms:\n    {provider}\n    base_url: {}\n    limits: {{ concurrency: 8 }}\nchannels:\n  sms: sms\n",
            mock.url
        ),
    );
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    p.write(
        "jobs/reminder.yaml",
        format!(
            "send_to: sms\nmessage: \"Invoice reminder for {{{{ customer.name }}}}\"\nrecipients: {{}}\nschedule:\n  at: \"{}\"\n  timezone: UTC\n",
            at.format("%Y-%m-%dT%H:%M:%S")
        ),
    );
    let mut rng = seed();
    for _ in 0..rounds {
        let mut child = start(&p);
        // Wait for the run to be under way, then a random moment more.
        let deadline = Instant::now() + Duration::from_secs(20);
        let before = mock.state.requests();
        while mock.state.requests() == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 400));
        let _ = child.kill();
        let _ = child.wait();
    }
    // The last start runs to the end.
    let mut child = start(&p);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (usize::MAX, Instant::now());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let now = mock.state.requests();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    let out = p.crier(&["logs", "--format", "json", "--limit", "10000000"]);
    let messages: serde_json::Value =
        serde_json::from_str(&out.stdout).map_err(|e| format!("logs: {e}: {}", out.stderr))?;
    let messages = messages.as_array().ok_or("logs is not an array")?;
    let mut states: HashMap<String, usize> = HashMap::new();
    for m in messages {
        *states
            .entry(m["state"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let accepted = mock.state.accepted();
    let mut per_number: HashMap<&str, usize> = HashMap::new();
    for a in &accepted {
        *per_number.entry(a.to.as_str()).or_default() += 1;
    }
    let duplicates: usize = per_number.values().map(|c| c - 1).sum();
    let sent = states.get("sent").copied().unwrap_or(0);
    let unknown = states.get("unknown").copied().unwrap_or(0);
    let missed = n.saturating_sub(sent + unknown);
    let figures = format!(
        "{kind}: {rounds} kills, {n} recipients: {} in the ledger, {sent} sent, {unknown} unknown, {missed} missed, {duplicates} duplicates at the provider, {} requests",
        messages.len(),
        mock.state.requests()
    );
    if messages.len() != n || missed != 0 || duplicates != 0 {
        return Err(figures);
    }
    if kind == "bulksms" && unknown != 0 {
        return Err(format!(
            "{figures} (BulkSMS resubmits, so none should be unknown)"
        ));
    }
    Ok(figures)
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1
}

fn main() {
    let rounds = env_or("CRIER_CHAOS_ROUNDS", 4);
    let n = env_or("CRIER_CHAOS_RECIPIENTS", 1_000) as usize;
    let (mut passed, mut failed) = (0, 0);
    for kind in ["bulksms", "twilio"] {
        match scenario(kind, rounds, n) {
            Ok(figures) => {
                println!("ok   {figures}");
                passed += 1;
            }
            Err(e) => {
                println!("FAIL {e}");
                failed += 1;
            }
        }
    }
    println!("daemon_crash: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
