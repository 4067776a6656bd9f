//! Crash safety of the ledger: a child process writes runs, plans, transitions, cancels
//! and purges as fast as it can; the parent kills it with SIGKILL at a random moment,
//! reopens the store and checks that the history database is intact and its runs' counters
//! still agree with their messages. Several
//! rounds on the same store, so recovery after recovery is exercised.
//!
//! Both backends: the SQLite history on a real file, then the PostgreSQL history on a
//! real server this test starts (the writer is the client killed; the server lives on).
//!
//! A plain `main` (harness = false), because the child is this same executable started
//! with `--child DIR BACKEND [URL]`. `CRIER_CRASH_ROUNDS` sets the rounds (default 8).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crier::history::ledger::{Change, Ledger, NewMessage, NewRun};
use crier::history::{MessageState, MessageType, Trigger};
use crier::job::Channel;
use crier::recipients::RecipientKind;
use crier::store::{Backend, StoreConfig, open};

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    nanos | 1
}

fn store_config(dir: &str, backend: Backend, url: Option<&str>) -> StoreConfig {
    StoreConfig {
        path: dir.into(),
        cache_bytes: 8 << 20,
        backend,
        postgres: url.map(crier::store::PgSettings::new),
    }
}

fn backend_named(name: &str) -> Backend {
    match name {
        "postgres" => Backend::Postgres,
        _ => Backend::Embedded,
    }
}

/// Writes forever, until killed.
fn child(dir: &str, backend: Backend, url: Option<&str>) -> ! {
    let store = open(&store_config(dir, backend, url)).expect("child opens the store");
    let ledger = Ledger::new(store.as_ref());
    let mut rng = Rng(seed());
    let mut round = 0u64;
    loop {
        round += 1;
        let run = ledger
            .create_run(NewRun {
                job: format!("job-{}", round % 3),
                trigger: Trigger::Manual,
                channels: vec![Channel::Sms],
                provider: "bulksms".into(),
                body: "Hi".into(),
                subject: None,
            })
            .expect("create run");
        let n = 50 + rng.next_u64() % 200;
        let messages = (0..n)
            .map(|i| NewMessage {
                recipient_kind: RecipientKind::Customer,
                recipient_id: i,
                address: format!("+2782{:07}", i),
                channel: Channel::Sms,
                provider: "bulksms".into(),
                kind: MessageType::Message,
                subject: None,
                body: "Hi".into(),
                encoding: Some("gsm7".into()),
                parts: 1,
                state: MessageState::Queued,
                reason: None,
                error: None,
                snapshot: Default::default(),
                html: None,
                route: Vec::new(),
            })
            .collect();
        let ids = ledger.plan(run.id, messages).expect("plan");
        ledger.finish_planning(run.id).expect("finish planning");
        if round.is_multiple_of(5) {
            ledger.cancel(run.id).expect("cancel");
            continue;
        }
        for chunk in ids.chunks(32) {
            let sending: Vec<Change> = chunk
                .iter()
                .map(|id| Change::to(*id, MessageState::Sending))
                .collect();
            ledger.transition(&sending).expect("sending");
            let outcomes: Vec<Change> = chunk
                .iter()
                .map(|id| {
                    let to = match rng.next_u64() % 10 {
                        0 => MessageState::Failed,
                        1 => MessageState::Unknown,
                        _ => MessageState::Sent,
                    };
                    let mut c = Change::to(*id, to);
                    if to == MessageState::Sent {
                        c.provider_message_id = Some(format!("{}-{}", run.id, id.seq));
                    }
                    c
                })
                .collect();
            ledger.transition(&outcomes).expect("outcomes");
        }
        if round.is_multiple_of(7) {
            ledger.purge(run.id).expect("purge");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(
            &args[2],
            backend_named(&args[3]),
            args.get(4).map(String::as_str),
        );
    }
    let (mut passed, mut failed) = rounds_on("embedded", None);
    let url = common::pg::server().database();
    let (p, f) = rounds_on("postgres", Some(&url));
    passed += p;
    failed += f;
    println!("ledger_crash: {passed} passed, {failed} failed");
    if failed > 0 || passed == 0 {
        std::process::exit(1);
    }
}

/// Waits until the killed writer's server sessions have ended. On PostgreSQL the writer
/// is a client: the server ends its sessions only when it notices the closed socket, and
/// a `COMMIT` sent before the kill still commits. What is durable is known only then;
/// checking sooner reads a transaction as it commits, one statement's snapshot before it
/// and the next one's after (seen in CI: a chunk of 32 messages `sending`, their run's
/// counters read a moment before they moved).
fn sessions_ended(url: &str) {
    let database = url.rsplit('/').next().expect("a database in the URL");
    let others = "SELECT count(*) FROM pg_stat_activity \
                  WHERE datname = current_database() AND pid <> pg_backend_pid()";
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::pg::server().psql(database, others) != "0" {
        assert!(
            Instant::now() < deadline,
            "the killed writer's sessions are still open after 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kill-and-verify rounds on one backend; returns (passed, failed).
fn rounds_on(backend_name: &str, url: Option<&str>) -> (u32, u32) {
    let backend = backend_named(backend_name);
    let rounds: u32 = std::env::var("CRIER_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().expect("temp dir");
    let store_dir = dir.path().join("store");
    let store_dir = store_dir.to_str().expect("utf-8 path");
    let mut rng = Rng(seed());
    let (mut passed, mut failed) = (0, 0);
    let mut last_messages = 0;
    for round in 1..=rounds {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .args(["--child", store_dir, backend_name])
            .args(url)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let wait = Duration::from_millis(300 + rng.next_u64() % 1200);
        let started = Instant::now();
        while started.elapsed() < wait {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the writer died on its own: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        if let Some(url) = url {
            sessions_ended(url);
        }

        let store = open(&store_config(store_dir, backend, url)).expect("reopen after SIGKILL");
        let ledger = Ledger::new(store.as_ref());
        match ledger.verify() {
            Ok(v) => {
                println!(
                    "{backend_name} round {round}: killed after {} ms; consistent: {} runs, {} messages",
                    wait.as_millis(),
                    v.runs,
                    v.messages,
                );
                passed += 1;
                last_messages = v.messages;
            }
            Err(e) => {
                println!("{backend_name} round {round}: FAILED: {e}");
                failed += 1;
            }
        }
    }
    if last_messages == 0 {
        println!(
            "{backend_name}: the writer never got a message recorded: the test proved nothing"
        );
        failed += 1;
    }
    (passed, failed)
}
