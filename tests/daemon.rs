//! `crier run` end to end: the real binary as a child process firing a job every two
//! seconds against the BulkSMS mock; overlap skipping (recorded) and queueing; hot reload
//! of a good and a bad edit; graceful shutdown on SIGTERM; other commands carried out by
//! the daemon while it holds the store; the same job never running twice at once.

mod common;
mod mocks;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Project;
use mocks::Fault;

const TOKEN_ID: &str = "DAEMON-TOKEN-01-B";
const SECRET: &str = "daemon-secret-value";

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(p: &Project) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(["-v", "run"])
            .current_dir(p.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start crier run");
        Daemon { child }
    }

    /// Starts `crier run` and waits until its control socket answers.
    fn start_ready(p: &Project) -> Daemon {
        let daemon = Daemon::start(p);
        let socket = p.path().join("data/crier.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "the daemon never opened {socket:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// SIGTERM, then the exit code and the log.
    fn stop(mut self) -> (i32, String) {
        let code = common::terminate(&mut self.child);
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut log);
        }
        (code, log)
    }
}

/// `crier send jobs/tick.yaml --yes`, started and left running (the daemon carries it out).
fn send_in_background(p: &Project) -> Child {
    Command::new(env!("CARGO_BIN_EXE_crier"))
        .args(["send", "jobs/tick.yaml", "--yes"])
        .current_dir(p.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn project(mock_url: &str, n: usize, job: &str) -> Project {
    let p = Project::new();
    let mut csv = String::from("id,name,status,phone\n");
    for i in 1..=n {
        csv.push_str(&format!("{i},Customer {i},active,082 555 {i:04}\n"));
    }
    p.write("people.csv", csv);
    assert_eq!(p.crier(&["import", "people.csv"]).code, 0);
    p.write(
        "crier.yaml",
        format!(
            "providers:\n  bulksms:\n    type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: {SECRET}\n    base_url: {mock_url}\n    limits: {{ concurrency: 4, backoff: 10ms }}\nchannels:\n  sms: bulksms\n"
        ),
    );
    p.write("jobs/tick.yaml", job);
    p
}

/// Every run (all but removed), as JSON; checks on the way that the CSV export agrees
/// and that every scheduled run records its fire instant, the one its id carries.
/// Waits until the history holds `n` runs and none of them is still `new` or
/// `processing`: the provider counting a message does not mean crier has recorded it,
/// and a daemon stopped before its run ends leaves the run to be resumed.
fn until_finished(p: &Project, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = p.crier(&["history", "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
        let open = runs
            .iter()
            .filter(|r| r["status"] == "new" || r["status"] == "processing")
            .count();
        if runs.len() >= n && open == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "runs not finished: {runs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runs(p: &Project) -> Vec<serde_json::Value> {
    // A scheduler may start a run between the two reads: read again until they agree.
    let mut tries = 0;
    let (runs, header, rows) = loop {
        let out = p.crier(&["history", "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let runs = serde_json::from_str::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone();
        let csv = p.crier(&["history", "--format", "csv"]);
        assert_eq!(csv.code, 0, "{}", csv.stderr);
        let mut reader = csv::Reader::from_reader(csv.stdout.as_bytes());
        let header = reader.headers().unwrap().clone();
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        tries += 1;
        if rows.len() == runs.len() || tries == 5 {
            assert_eq!(rows.len(), runs.len(), "{}", csv.stdout);
            break (runs, header, rows);
        }
    };
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (run, row) in runs.iter().zip(&rows) {
        assert_eq!(row[col("run_id")], *run["id"].as_str().unwrap());
        if run["trigger"] != "schedule" {
            continue;
        }
        let at = &row[col("scheduled_at")];
        assert!(
            !at.is_empty(),
            "a scheduled run without its instant: {row:?}"
        );
        assert_eq!(run["scheduled_at"], at, "{run}");
        let ms = chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .timestamp_millis() as u64;
        assert_eq!(ms, ulid_ms(run["id"].as_str().unwrap()), "{run}");
    }
    runs
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn fires_on_schedule_once_per_instant_and_stops_cleanly() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    let p = project(
        &mock.url,
        3,
        "send_to: sms\nmessage: \"Tick for {{ customer.name }}\"\nrecipients: {}\nschedule:\n  cron: \"*/2 * * * * *\"\n  timezone: Europe/Berlin\n",
    );
    let daemon = Daemon::start(&p);
    std::thread::sleep(Duration::from_millis(5_500));
    let stopping = chrono::Utc::now() - chrono::Duration::milliseconds(300);
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    let runs = runs(&p);
    assert!(runs.len() >= 2, "{runs:?}\n{log}");
    let mut sent = 0;
    for run in &runs {
        assert_eq!(run["trigger"], "schedule", "{run}");
        if run["status"] == "sent" {
            sent += 1;
            continue;
        }
        // Only a run that fired as the daemon was told to stop may be left unfinished
        // (the next start resumes it).
        let created =
            chrono::DateTime::parse_from_rfc3339(run["created_at"].as_str().unwrap()).unwrap();
        assert!(created >= stopping, "{run}\n{log}");
    }
    // Every finished run sent each recipient exactly once.
    assert!(sent >= 2, "{runs:?}");
    assert_eq!(
        mock.state.accepted_count(),
        runs.iter()
            .map(|r| r["counters"]["sent"].as_u64().unwrap())
            .sum::<u64>() as usize
    );
    assert!(mock.state.accepted_count() >= 3 * sent);
    // A run's id carries its scheduled instant, on an even second.
    for run in &runs {
        let id = run["id"].as_str().unwrap();
        let ms = ulid_ms(id);
        assert_eq!(ms % 2000, 0, "{id} fired off its instant: {run}");
    }
}

/// A scheduled run whose script fails for its recipients is logged at error level, with
/// the job and the run, and recorded as `sent_with_error`.
#[test]
fn a_scheduled_run_whose_script_fails_is_an_error_in_the_log() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    let p = project(
        &mock.url,
        2,
        "send_to: sms\nmessage: hi\nrecipients: {}\nscripts:\n  filter: scripts/spin.rhai\nschedule:\n  cron: \"*/2 * * * * *\"\n",
    );
    p.write("scripts/spin.rhai", "fn filter(customer) { loop { } }\n");
    let daemon = Daemon::start_ready(&p);
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs(&p).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    let runs = runs(&p);
    assert!(!runs.is_empty(), "{log}");
    let id = runs.last().unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(
        runs.last().unwrap()["status"],
        "sent_with_error",
        "{runs:?}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("A script failed for recipients"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        line.contains("job=tick") && line.contains(&format!("run={id}")),
        "{line}"
    );
    assert!(line.contains("operation limit reached"), "{line}");
    assert_eq!(mock.state.accepted_count(), 0);
}

fn ulid_ms(id: &str) -> u64 {
    const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    id.chars()
        .take(10)
        .fold(0u64, |acc, c| acc * 32 + ALPHABET.find(c).unwrap() as u64)
}

#[test]
fn a_run_still_going_makes_the_next_firing_skip_and_the_skip_is_recorded() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    // 3 messages at 1/s: a run takes about 2 s, and the job fires every second.
    let p = project(
        &mock.url,
        3,
        "send_to: sms\nmessage: \"Slow tick\"\nrecipients: {}\nrate: 1/s\nschedule:\n  cron: \"*/1 * * * * *\"\n  overlap: skip\n",
    );
    let daemon = Daemon::start(&p);
    std::thread::sleep(Duration::from_millis(4_500));
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("Skipped: the previous run is still going"),
        "{log}"
    );
    let runs = runs(&p);
    let (skipped, sending): (Vec<_>, Vec<_>) =
        runs.iter().partition(|r| r["status"] == "cancelled");
    // Fewer sending runs than seconds that passed; each skipped firing is in the history.
    assert!(!sending.is_empty() && sending.len() < 4, "{runs:?}");
    assert!(!skipped.is_empty(), "no skipped firing recorded: {runs:?}");
    for run in &skipped {
        assert_eq!(run["trigger"], "schedule", "{run}");
        assert_eq!(run["messages"], 0, "{run}");
        // The previous run is named, even while it is being created or in the moment
        // between its end and the daemon hearing of it (its id is the firing's): one of
        // the runs that sent.
        let show = p.crier(&["history", "show", run["id"].as_str().unwrap()]);
        assert!(
            show.stdout.contains("overlap: skip")
                && sending.iter().any(|s| show.stdout.contains(&format!(
                    "skipped: the previous run (run {}) was still sending",
                    s["id"].as_str().unwrap()
                ))),
            "{}\n{sending:?}",
            show.stdout
        );
    }
}

#[test]
fn overlap_queue_runs_one_waiting_firing_after_the_current_run() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    // 4 messages at 1/s: a run takes about 3 s, and the job fires every second.
    let p = project(
        &mock.url,
        4,
        "send_to: sms\nmessage: \"Queued tick\"\nrecipients: {}\nrate: 1/s\nschedule:\n  cron: \"*/1 * * * * *\"\n  overlap: queue\n",
    );
    let daemon = Daemon::start(&p);
    std::thread::sleep(Duration::from_millis(5_500));
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    let mut runs = runs(&p);
    runs.sort_by(|a, b| a["created_at"].as_str().cmp(&b["created_at"].as_str()));
    // Nothing skipped; at least one firing waited for the run before it.
    assert!(runs.len() >= 2, "{runs:?}\n{log}");
    assert!(runs.iter().all(|r| r["status"] != "cancelled"), "{runs:?}");
    // Never two at once: each run started after the one before finished.
    for pair in runs.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let finished = before["finished_at"]
            .as_str()
            .unwrap_or_else(|| panic!("the earlier run never finished: {runs:#?}\n{log}"));
        let started = after["started_at"].as_str().unwrap_or("9");
        assert!(started >= finished, "overlapping runs: {before} {after}");
    }
    // A firing waited for the run before it and then ran, under its own instant's id,
    // after that run finished.
    assert!(
        log.contains("The queued firing starts now (overlap: queue)."),
        "{log}"
    );
    let waited = runs.windows(2).any(|pair| {
        let finished = pair[0]["finished_at"].as_str().unwrap_or("");
        let scheduled = pair[1]["scheduled_at"].as_str().unwrap_or("");
        scheduled < finished
    });
    assert!(waited, "no run waited in the queue: {runs:?}");
    // One pending firing at most: far fewer runs than firings.
    assert!(runs.len() <= 4, "{runs:?}");
}

#[test]
fn a_run_paused_by_its_window_is_resumed_by_the_daemon_when_the_window_opens() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    // Fires in 2 s; the window opens 5 s from now (and closes in an hour).
    let now = chrono::Utc::now();
    // (`from` is written to the second, so the window opens up to 1 s before now + 5 s.)
    let opened = std::time::Instant::now() + Duration::from_secs(4);
    let opens = now + chrono::Duration::seconds(5);
    let window = format!(
        "  window: {{ from: \"{}\", to: \"{}\" }}\n",
        opens.format("%H:%M:%S"),
        (now + chrono::Duration::hours(1)).format("%H:%M:%S")
    );
    let p = project(&mock.url, 5, &format!("{}{window}", one_shot_job(2, "")));
    let daemon = Daemon::start(&p);
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.state.accepted_count() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    until_finished(&p, 1);
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("Paused until the send window opens."), "{log}");
    assert!(log.contains("The send window is open: resuming."), "{log}");
    // Everyone once, and nobody before the window opened.
    assert_eq!(mock.state.accepted_count(), 5, "{log}");
    let early: Vec<_> = mock
        .state
        .arrivals()
        .into_iter()
        .filter(|t| *t < opened)
        .collect();
    assert!(
        early.is_empty(),
        "{} messages went out before the window opened\n{log}",
        early.len()
    );
    let runs = runs(&p);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "sent", "{runs:?}");
    assert_eq!(runs[0]["trigger"], "schedule", "{runs:?}");
}

#[test]
fn other_commands_are_carried_out_by_the_daemon_holding_the_store() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    // An unscheduled job: only sent on demand.
    let p = project(
        &mock.url,
        3,
        "send_to: sms\nmessage: \"Hello {{ customer.name }}\"\nrecipients: {}\n",
    );
    p.write("more/people.csv", "id,name,status,phone\n4,Customer 4,active,082 555 0004\n5,Customer 5,active,082 555 0005\n");
    let daemon = Daemon::start_ready(&p);

    let import = p.crier(&["import", "more/people.csv"]);
    assert_eq!(import.code, 0, "{}", import.stderr);
    assert!(import.stdout.contains("2 inserted"), "{}", import.stdout);
    let optout = p.crier(&["optout", "add", "082 555 0002", "--reason", "asked"]);
    assert_eq!(optout.code, 0, "{}", optout.stderr);
    let listed = p.crier(&["recipients", "jobs/tick.yaml", "--format", "csv"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_eq!(listed.stdout.lines().count(), 1 + 5, "{}", listed.stdout);

    // No terminal and no --yes: refused, as without a daemon.
    let refused = p.crier(&["send", "jobs/tick.yaml"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("refusing to send 4 messages without confirmation"),
        "{}",
        refused.stderr
    );
    assert_eq!(mock.state.accepted_count(), 0);

    // From another directory: relative paths are the caller's, not the daemon's.
    // (Its crier.yaml names the same data directory; the daemon's own config applies.)
    p.write("sub/crier.yaml", "data_dir: ../data\n");
    let sent = Command::new(env!("CARGO_BIN_EXE_crier"))
        .args(["send", "../jobs/tick.yaml", "--yes"])
        .current_dir(p.path().join("sub"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert_eq!(
        sent.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(stdout.contains("4 sent, 0 failed"), "{stdout}");
    assert_eq!(mock.state.accepted_count(), 4);

    let logs = p.crier(&["logs", "--format", "csv"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(logs.stdout.contains("opted_out"), "{}", logs.stdout);
    assert_eq!(logs.stdout.lines().count(), 1 + 5, "{}", logs.stdout);
    let history = p.crier(&["history"]);
    assert!(history.stdout.contains("1 run"), "{}", history.stdout);

    // A second daemon on the same store is refused at once, clearly.
    let second = p.crier(&["run"]);
    assert_eq!(second.code, 1);
    assert!(
        second.stderr.contains("crier is already running"),
        "{}",
        second.stderr
    );

    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("Carrying out a command for another crier process"),
        "{log}"
    );
    // The socket goes with the daemon; the store is this process's again.
    assert!(!p.path().join("data/crier.sock").exists());
    assert_eq!(runs(&p).len(), 1);
}

#[test]
fn a_cancel_while_the_run_is_still_planning_stops_the_rest_from_being_planned() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    // 3,000 recipients at 100/s: planning runs ahead of sending by a bounded queue only,
    // so a cancel after the first few sends comes while most are not planned yet.
    let n = 3000;
    let p = project(
        &mock.url,
        n,
        "send_to: sms\nmessage: \"Hello {{ customer.name }}\"\nrecipients: {}\nrate: 100/s\n",
    );
    let daemon = Daemon::start_ready(&p);
    let send = send_in_background(&p);
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.state.accepted_count() < 20 {
        assert!(Instant::now() < deadline, "the run never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let run = runs(&p)[0]["id"].as_str().unwrap().to_string();
    let cancel = p.crier(&["history", "cancel", &run]);
    assert_eq!(cancel.code, 0, "{}", cancel.stderr);
    let send = send.wait_with_output().unwrap();
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    let sent = mock.state.accepted_count();
    // Those sent before the cancel, and at most the provider's window in flight; before
    // the fix the planner went on and all 3,000 went out.
    assert!(
        sent < 400,
        "{sent} sent after a cancel at 20: {}",
        String::from_utf8_lossy(&send.stdout)
    );
    let runs = runs(&p);
    assert_eq!(runs[0]["status"], "cancelled", "{}", runs[0]);
    let c = &runs[0]["counters"];
    assert_eq!(c["queued"], 0, "{c}");
    assert_eq!(c["sending"], 0, "{c}");
    assert_eq!(c["sent"], sent as u64, "{c}");
    assert!(c["cancelled"].as_u64().unwrap() > 0, "{c}");
}

#[test]
fn the_same_job_never_runs_twice_at_once_whoever_starts_it() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    // 8 messages at 2/s take about 4 s; the schedule fires once, 3 s from now, mid-run.
    let p = project(&mock.url, 8, &one_shot_job(3, "rate: 2/s\n"));
    let daemon = Daemon::start_ready(&p);
    let manual = send_in_background(&p);
    let deadline = Instant::now() + Duration::from_secs(20);
    while mock.state.accepted_count() == 0 {
        assert!(Instant::now() < deadline, "the manual run never sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second manual send of the same job, meanwhile: refused.
    let second = p.crier(&["send", "jobs/tick.yaml", "--yes"]);
    assert_eq!(second.code, 1, "{}", second.stdout);
    assert!(
        second
            .stderr
            .contains("job `tick` is already sending (run 01"),
        "{}",
        second.stderr
    );
    let manual = manual.wait_with_output().unwrap();
    assert_eq!(
        manual.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&manual.stderr)
    );
    std::thread::sleep(Duration::from_millis(500));
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");

    // Everyone exactly once: the scheduled firing met the manual run and was skipped.
    assert_eq!(mock.state.accepted_count(), 8, "{log}");
    let runs = runs(&p);
    assert_eq!(runs.len(), 2, "{runs:?}\n{log}");
    let scheduled = runs
        .iter()
        .find(|r| r["trigger"] == "schedule")
        .expect("the firing is recorded");
    assert_eq!(scheduled["status"], "cancelled", "{scheduled}");
    let manual = runs.iter().find(|r| r["trigger"] == "manual").unwrap();
    assert_eq!(manual["status"], "sent", "{manual}");
    let show = p.crier(&["history", "show", scheduled["id"].as_str().unwrap()]);
    let manual_id = manual["id"].as_str().unwrap();
    assert!(
        show.stdout.contains(&format!(
            "the previous run (run {manual_id}) was still sending"
        )),
        "{}",
        show.stdout
    );
}

#[test]
fn hot_reload_applies_a_good_edit_and_keeps_the_job_on_a_bad_one() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    let p = project(
        &mock.url,
        1,
        "send_to: sms\nmessage: \"version one\"\nrecipients: {}\nschedule:\n  cron: \"*/2 * * * * *\"\n",
    );
    let daemon = Daemon::start(&p);
    std::thread::sleep(Duration::from_millis(2_500));
    // (The safety-net poll runs every 30 s: within these few seconds only the file
    // watcher can notice the edits.)
    // A bad edit: the old version keeps firing.
    p.write(
        "jobs/tick.yaml",
        "send_to: sms\nmessage: \"broken\"\nrecipients: {}\nschedule:\n  cron: \"*/2 * * *\"\n",
    );
    std::thread::sleep(Duration::from_millis(4_500));
    let bodies_bad: Vec<String> = mock
        .state
        .accepted()
        .iter()
        .map(|a| a.body.clone())
        .collect();
    // A good edit: the new text goes out.
    p.write(
        "jobs/tick.yaml",
        "send_to: sms\nmessage: \"version two\"\nrecipients: {}\nschedule:\n  cron: \"*/2 * * * * *\"\n",
    );
    std::thread::sleep(Duration::from_millis(5_000));
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("Invalid edit: the previous version stays scheduled"),
        "{log}"
    );
    assert!(bodies_bad.len() >= 2, "{bodies_bad:?}");
    assert!(
        bodies_bad.iter().all(|b| b == "version one"),
        "{bodies_bad:?}"
    );
    let all: Vec<String> = mock
        .state
        .accepted()
        .iter()
        .map(|a| a.body.clone())
        .collect();
    assert_eq!(
        all.last().map(String::as_str),
        Some("version two"),
        "{all:?}"
    );
}

/// Starts `crier run`, waits until the mock has `at_least` messages, and kills it hard.
fn kill_mid_run(p: &Project, mock: &mocks::Mock, at_least: usize) {
    let mut daemon = Daemon::start(p);
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.state.accepted_count() < at_least && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.child.kill().expect("SIGKILL");
    let _ = daemon.child.wait();
}

fn one_shot_job(seconds_ahead: i64, extra: &str) -> String {
    let at = chrono::Utc::now() + chrono::Duration::seconds(seconds_ahead);
    format!(
        "send_to: sms\nmessage: \"Reminder for {{{{ customer.name }}}}\"\nrecipients: {{}}\n{extra}schedule:\n  at: \"{}\"\n  timezone: UTC\n",
        at.format("%Y-%m-%dT%H:%M:%S")
    )
}

#[test]
fn a_fire_time_missed_while_down_is_caught_up_under_its_own_instant() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    let job = one_shot_job(-3, "");
    let p = project(&mock.url, 2, &job);
    let at = job
        .lines()
        .find_map(|l| l.trim().strip_prefix("at: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let daemon = Daemon::start(&p);
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.state.accepted_count() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    until_finished(&p, 1);
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("Catching up a fire time missed while down."),
        "{log}"
    );
    let runs = runs(&p);
    assert_eq!(runs.len(), 1, "{runs:?}\n{log}");
    assert_eq!(runs[0]["trigger"], "schedule");
    assert_eq!(runs[0]["scheduled_at"], format!("{at}.000Z"), "{}", runs[0]);
}

#[test]
fn a_run_killed_mid_way_resumes_with_nobody_missed_or_sent_twice() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    mock.state
        .set_fault_every(1, Fault::Delay(Duration::from_millis(15)));
    let n = 150;
    let p = project(&mock.url, n, &one_shot_job(2, ""));
    kill_mid_run(&p, &mock, 40);
    let before = mock.state.accepted_count();
    assert!(before < n, "the run finished before the kill");
    // Restart: the run left `processing` is resumed.
    let daemon = Daemon::start(&p);
    let deadline = Instant::now() + Duration::from_secs(60);
    while mock.state.accepted_count() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    until_finished(&p, 1);
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("Resuming an interrupted run"), "{log}");
    // Everyone exactly once at the provider: in-flight messages were resubmitted with
    // their deduplication ids, and BulkSMS recognised them.
    let accepted = mock.state.accepted();
    let mut to: Vec<&str> = accepted.iter().map(|a| a.to.as_str()).collect();
    to.sort();
    to.dedup();
    assert_eq!(to.len(), n, "recipients missed");
    assert_eq!(accepted.len(), n, "sent twice");
    let runs = runs(&p);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "sent", "{}", runs[0]);
    assert_eq!(runs[0]["counters"]["sent"], n as u64);
}

#[test]
fn without_deduplication_in_flight_messages_become_unknown_never_resent() {
    let rt = runtime();
    let sid = "AC0123456789abcdef0123456789abcdef";
    let mock = rt.block_on(mocks::twilio(sid, SECRET));
    mock.state
        .set_fault_every(1, Fault::Delay(Duration::from_millis(15)));
    let n = 150;
    let p = project(&mock.url, n, &one_shot_job(2, ""));
    p.write(
        "crier.yaml",
        format!(
            "providers:\n  twilio:\n    type: twilio\n    account_sid: {sid}\n    auth_token: {SECRET}\n    from: \"+15005550006\"\n    base_url: {}\n    limits: {{ concurrency: 4 }}\nchannels:\n  sms: twilio\n",
            mock.url
        ),
    );
    kill_mid_run(&p, &mock, 40);
    let daemon = Daemon::start(&p);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let settled = mock.state.requests();
        std::thread::sleep(Duration::from_millis(300));
        if (settled == mock.state.requests() && settled > 40) || Instant::now() > deadline {
            break;
        }
    }
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    let accepted = mock.state.accepted();
    let mut to: Vec<&str> = accepted.iter().map(|a| a.to.as_str()).collect();
    to.sort();
    to.dedup();
    // Never sent twice: no blind resend of what was in flight.
    assert_eq!(to.len(), accepted.len(), "sent twice");
    let out = p.crier(&["logs", "--format", "json", "--limit", "1000"]);
    let messages: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), n, "recipients missing from the ledger");
    let count = |s: &str| messages.iter().filter(|m| m["state"] == s).count();
    // Nobody missed: every recipient is sent, or unknown and listed for a person.
    assert_eq!(count("sent") + count("unknown"), n, "{log}");
    // Every message the ledger calls sent is one the provider accepted.
    let ids: std::collections::HashSet<&str> =
        accepted.iter().map(|a| a.provider_id.as_str()).collect();
    for m in messages.iter().filter(|m| m["state"] == "sent") {
        assert!(
            ids.contains(m["provider_message_id"].as_str().unwrap()),
            "{m}"
        );
    }
    for m in messages.iter().filter(|m| m["state"] == "unknown") {
        assert_eq!(m["error_code"], "interrupted");
    }
    // A person checks with the provider, then queues the unknown ones again.
    let unknown = count("unknown");
    if unknown > 0 {
        let run = messages[0]["run_id"].as_str().unwrap().to_string();
        let asked = p.crier(&["history", "retry", &run]);
        assert_eq!(asked.code, 1);
        assert!(asked.stderr.contains("add --yes"), "{}", asked.stderr);
        let retried = p.crier(&["history", "retry", &run, "--yes"]);
        assert_eq!(retried.code, 0, "{}", retried.stderr);
        let resumed = p.crier(&["send", "jobs/tick.yaml", "--yes", "--resume", &run]);
        assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
        let out = p.crier(&["logs", "--format", "json", "--limit", "1000"]);
        let messages: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let sent = messages
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["state"] == "sent")
            .count();
        assert_eq!(sent, n);
    }
}

/// A plain HTTP GET on loopback; returns the body.
fn get(addr: &str, path: &str) -> String {
    common::http_get(addr, path).1
}

#[test]
fn the_daemon_serves_health_and_metrics_with_its_scheduler_alive() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    let p = project(&mock.url, 3, &one_shot_job(1, "rate: 2/s\n"));
    let config = std::fs::read_to_string(p.path().join("crier.yaml")).unwrap();
    p.write(
        "crier.yaml",
        format!("{config}server:\n  listen: 127.0.0.1:0\n  token: abcdefghijklmnopqrstuvwxyz\n"),
    );
    let mut daemon = Daemon::start(&p);
    let mut stdout = std::io::BufReader::new(daemon.child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let health: serde_json::Value = serde_json::from_str(&get(&addr, "/healthz")).unwrap();
    assert_eq!(health["scheduler"], "ok", "{health}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while mock.state.accepted_count() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = get(&addr, "/metrics");
    let waits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("crier_rate_limit_waits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    // Three messages at 2/s: at least two waited for the limiter.
    assert!(waits >= 2, "{metrics}");
    assert!(metrics.contains("crier_send_retries_total 0"), "{metrics}");
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
}

/// Runs `sql` on the history file the way an analyst's script would: Python's `sqlite3`,
/// opened read-only (`mode=ro`) beside the daemon that writes it. Rows as JSON.
fn analyst_query(p: &Project, sql: &str) -> Result<serde_json::Value, String> {
    let python = std::env::var("CRIER_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import json, sqlite3, sys\n\
                  db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True, timeout=5)\n\
                  print(json.dumps(db.execute(sys.argv[2]).fetchall()))\n";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(p.path().join("data/history.sqlite3"))
        .arg(sql)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

#[test]
fn an_analyst_reads_the_history_with_sqlite_while_the_daemon_sends() {
    if common::on_postgres() {
        // Reads the SQLite file; psql's view of the PostgreSQL tables is tests/storage.rs.
        return;
    }
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    mock.state
        .set_fault_every(1, Fault::Delay(Duration::from_millis(10)));
    let n = 400;
    let p = project(&mock.url, n, &one_shot_job(1, ""));
    let daemon = Daemon::start_ready(&p);
    let by_state = "SELECT state, COUNT(*) FROM messages GROUP BY state ORDER BY state";
    // Mid-run: the file opens read-only while the daemon writes, and shows the run as
    // it stands (some sent, the rest still to go).
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.state.accepted_count() < 20 {
        assert!(Instant::now() < deadline, "the run did not get going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mid = analyst_query(&p, by_state).expect("read while the daemon writes");
    let counted: u64 = mid
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[1].as_u64().unwrap())
        .sum();
    assert!(counted > 0, "{mid}");
    assert!(
        mock.state.accepted_count() < n,
        "the run ended before the read"
    );
    // crier's own read-only commands read the file directly too: they answer with the
    // daemon stopped (SIGSTOP), which could not answer a forwarded command.
    let pid = daemon.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let within = |args: &[&str]| {
        let out = Command::new("timeout")
            .arg("20")
            .arg(env!("CARGO_BIN_EXE_crier"))
            .args(args)
            .current_dir(p.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (logs_code, csv) = within(&["logs", "--format", "csv"]);
    let (list_code, listed) = within(&["history", "--format", "json"]);
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(
        logs_code,
        Some(0),
        "crier logs beside a stopped daemon: {csv}"
    );
    assert_eq!(
        list_code,
        Some(0),
        "crier history beside a stopped daemon: {listed}"
    );
    assert!(
        csv.lines().count() > 1 + counted as usize / 2,
        "the messages planned so far: {csv}"
    );
    assert!(listed.contains("\"job\""), "{listed}");
    while mock.state.accepted_count() < n {
        assert!(Instant::now() < deadline, "the run did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    until_finished(&p, 1);
    let (code, log) = daemon.stop();
    assert_eq!(code, 0, "{log}");
    // After the run: the analyst's counts are crier's own.
    let runs = runs(&p);
    let show = p.crier(&["history", "show", runs[0]["id"].as_str().unwrap()]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let after = analyst_query(&p, by_state).unwrap();
    for row in after.as_array().unwrap() {
        let state = row[0].as_str().unwrap();
        assert_eq!(
            runs[0]["counters"][state], row[1],
            "state {state}: crier says {}, sqlite3 {after}",
            runs[0]["counters"]
        );
        let line = format!("  {state:<12} {}", row[1]);
        assert!(show.stdout.contains(&line), "{line:?} in {}", show.stdout);
    }
    assert_eq!(after, serde_json::json!([["sent", n]]));
    // The run row's own counters agree, as analysts would read them.
    let run_row = analyst_query(
        &p,
        "SELECT n_sent, planned_all, finished_at IS NOT NULL FROM runs",
    )
    .unwrap();
    assert_eq!(run_row, serde_json::json!([[n, 1, 1]]));
}

#[test]
fn retry_failed_sends_the_failed_messages_again_as_a_new_run() {
    let rt = runtime();
    let mock = rt.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    // Every third request refused for good: those messages fail.
    mock.state.set_fault_every(
        3,
        Fault::Status(
            400,
            r#"{"status":400,"title":"Bad Request","detail":"refused"}"#.into(),
            None,
        ),
    );
    let n = 30;
    let p = project(
        &mock.url,
        n,
        "send_to: sms\nmessage: \"Hi {{ customer.name }}\"\nrecipients: {}\n",
    );
    let first = p.crier(&["send", "jobs/tick.yaml", "--yes"]);
    assert_eq!(first.code, 1, "{}\n{}", first.stdout, first.stderr);
    let before = runs(&p);
    let run = before[0]["id"].as_str().unwrap().to_string();
    let failed = before[0]["counters"]["failed"].as_u64().unwrap();
    assert!(failed > 0, "{}", before[0]);
    assert_eq!(mock.state.accepted_count() as u64, n as u64 - failed);
    mock.state.set_fault_every(0, Fault::Drop);
    let retry = p.crier(&["send", "jobs/tick.yaml", "--retry-failed", &run]);
    assert_eq!(retry.code, 0, "{}\n{}", retry.stdout, retry.stderr);
    let after = runs(&p);
    assert_eq!(after.len(), 2);
    assert_eq!(after[0]["retry_of"], run.as_str(), "{}", after[0]);
    assert_eq!(after[0]["counters"]["sent"], failed);
    assert_eq!(after[0]["messages"], failed);
    // Everyone once at the provider now, and the first run's record is unchanged.
    let accepted = mock.state.accepted();
    let mut to: Vec<&str> = accepted.iter().map(|a| a.to.as_str()).collect();
    to.sort();
    to.dedup();
    assert_eq!((to.len(), accepted.len()), (n, n));
    assert_eq!(after[1]["counters"]["failed"], failed);
    let show = p.crier(&["history", "show", after[0]["id"].as_str().unwrap()]);
    assert!(
        show.stdout.contains(&format!("retry of:  {run}")),
        "{}",
        show.stdout
    );
    // Nothing left to retry in the retry; another job's run is refused.
    let again = p.crier(&[
        "send",
        "jobs/tick.yaml",
        "--retry-failed",
        after[0]["id"].as_str().unwrap(),
    ]);
    assert_ne!(again.code, 0);
    assert!(
        again
            .stderr
            .contains("no failed or expired messages to retry"),
        "{}",
        again.stderr
    );
}
