//! Rhai scripts end to end, with the real `crier` binary: filter, vars, helpers and
//! routing with failover against a mock BulkSMS on loopback; per-message script
//! failures (an unknown provider, a sandbox limit) that leave the rest of the run going;
//! and `crier validate` catching broken scripts with their file, line and column.

mod common;
mod mocks;

use common::{Project, Run, root};
use mocks::Fault;

const TOKEN_ID: &str = "BBDE1B476E03498AA768F66A286AABDC-01-B";
const SECRET: &str = "s3cr3t-t0ken-NEVER-PRINTED";

const CUSTOMERS: &str = "\
id,name,status,phone,partner,overdue_days,balance
1,Ann Dlamini,active,082 100 0001,Main,30,1250.5
2,Ben Naidoo,active,082 100 0002,Main,3,99
3,Cara Smith,active,+44 7911 123456,Main,20,10
4,Dan Ghost,active,082 100 0004,Ghost,40,10
5,Eve Loop,active,082 100 0005,Loop,50,10
";

const ROUTE: &str = r#"// Test routing: South Africa through the mock, then the file backup.
fn route(message, customer) {
    if customer.partner == "Loop" {
        loop { }
    }
    if customer.partner == "Ghost" {
        return customer.partner.to_lower();
    }
    if message.country == "ZA" {
        ["sms", "backup"]
    } else {
        ()
    }
}
"#;

const OVERDUE: &str = r#"
fn filter(customer) { parse_int(customer.attrs.overdue_days) > 14 }
fn vars(customer) { #{ days: parse_int(customer.attrs.overdue_days), balance: parse_float(customer.attrs.balance) } }
"#;

const HELPERS: &str = r#"fn rand(amount) { `R${amount}` }"#;

const JOB: &str = "\
send_to: sms
recipients: {}
scripts:
  filter: scripts/overdue.rhai
  vars: scripts/overdue.rhai
  route: scripts/route.rhai
  helpers: [scripts/helpers.rhai]
message: \"Hi {{ customer.name }}, {{ vars.days }} days overdue, {{ rand(vars.balance) }} to pay\"
";

struct Setup {
    project: Project,
    mock: mocks::Mock,
    _runtime: tokio::runtime::Runtime,
}

impl Setup {
    fn crier(&self, args: &[&str]) -> Run {
        self.project.crier_env(args, &[("BULKSMS_SECRET", SECRET)])
    }

    fn messages(&self) -> Vec<serde_json::Value> {
        let logs = self.crier(&["logs", "--format", "json", "--limit", "1000"]);
        assert_eq!(logs.code, 0, "{}", logs.stderr);
        let mut all: Vec<serde_json::Value> =
            serde_json::from_str::<serde_json::Value>(&logs.stdout)
                .unwrap()
                .as_array()
                .unwrap()
                .clone();
        all.sort_by_key(|m| m["recipient_id"].as_u64());
        all
    }
}

fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mock = runtime.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    let project = Project::new();
    project.write("people.csv", CUSTOMERS);
    assert_eq!(project.crier(&["import", "people.csv"]).code, 0);
    project.write(
        "crier.yaml",
        format!(
            "providers:\n  sms:\n    type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: ${{BULKSMS_SECRET}}\n    base_url: {}\n    limits: {{ backoff: 5ms, retries: 1 }}\n  backup:\n    type: file\n    dir: backup\nchannels:\n  sms: sms\n",
            mock.url
        ),
    );
    project.write("scripts/route.rhai", ROUTE);
    project.write("scripts/overdue.rhai", OVERDUE);
    project.write("scripts/helpers.rhai", HELPERS);
    project.write("jobs/remind.yaml", JOB);
    Setup {
        project,
        mock,
        _runtime: runtime,
    }
}

#[test]
fn preview_applies_filter_vars_helpers_and_route() {
    let s = setup();
    let run = s.crier(&["preview", "jobs/remind.yaml"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("routed by scripts/route.rhai"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("recipients: 5 customers (1 left out by the filter script, 4 kept)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Hi Ann Dlamini, 30 days overdue, R1250.5 to pay"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("via sms → backup"), "{}", run.stdout);
    assert!(run.stdout.contains("routed_out 1"), "{}", run.stdout);
    assert!(run.stdout.contains("script_failed 2"), "{}", run.stdout);
    // Preview sends nothing.
    assert_eq!(s.mock.state.requests(), 0);
}

#[test]
fn a_rejected_message_fails_over_and_the_history_shows_every_attempt() {
    let s = setup();
    s.mock.state.push_faults([Fault::Status(
        400,
        r#"{"type":"https://developer.bulksms.com/json/v1/errors#validation","title":"Bad Request","status":400,"detail":"no route"}"#.into(),
        None,
    )]);
    let run = s.crier(&["send", "jobs/remind.yaml", "--yes"]);
    // Two messages failed on their scripts: exit 1, the run went on.
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("1 sent, 2 failed"), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 left out by the filter script"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("routed_out 1"), "{}", run.stdout);
    assert!(!run.stdout.contains(SECRET) && !run.stderr.contains(SECRET));

    let messages = s.messages();
    // The filtered recipient (2) has no message at all.
    let ids: Vec<u64> = messages
        .iter()
        .map(|m| m["recipient_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 3, 4, 5]);

    // 1: rejected by the mock, then sent through the file backup.
    let ann = &messages[0];
    assert_eq!(ann["state"], "sent", "{ann}");
    assert_eq!(ann["provider"], "backup");
    assert_eq!(ann["attempts"], 2);
    let failovers = ann["failovers"].as_array().unwrap();
    assert_eq!(failovers.len(), 1, "{ann}");
    assert_eq!(failovers[0]["provider"], "sms");
    assert_eq!(failovers[0]["attempts"], 1);
    assert!(
        failovers[0]["error_text"]
            .as_str()
            .unwrap()
            .contains("no route"),
        "{ann}"
    );
    let states: Vec<&str> = ann["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "sending", "queued", "sending", "sent"]);
    assert_eq!(ann["error_code"], serde_json::Value::Null);
    let outbox = std::fs::read_to_string(s.project.path().join("backup/sms.jsonl")).unwrap();
    assert!(outbox.contains("Hi Ann Dlamini, 30 days overdue, R1250.5 to pay"));
    assert_eq!(s.mock.state.accepted_count(), 0);

    // 3: a UK number, routed out.
    assert_eq!(messages[1]["state"], "skipped");
    assert_eq!(messages[1]["reason"], "routed_out");

    // 4: routed to a provider that does not exist: that message fails, with why.
    assert_eq!(messages[2]["state"], "failed");
    assert_eq!(messages[2]["error_code"], "script_failed");
    let why = messages[2]["error_text"].as_str().unwrap();
    assert!(
        why.contains("scripts/route.rhai: route: `ghost` is not a provider defined in crier.yaml"),
        "{why}"
    );

    // 5: an endless loop, stopped by the operation limit; named script and limit.
    assert_eq!(messages[3]["state"], "failed");
    let why = messages[3]["error_text"].as_str().unwrap();
    assert!(
        why.starts_with("scripts/route.rhai:") && why.contains("operation limit reached"),
        "{why}"
    );

    // The table view shows the providers tried.
    let table = s.crier(&["logs", "--limit", "10"]);
    assert!(table.stdout.contains("sms→backup"), "{}", table.stdout);
}

#[test]
fn exhausted_retries_fail_over_too() {
    let s = setup();
    s.mock
        .state
        // A 429: not taken (a 5xx may follow a commit, and would make it `unknown`).
        .set_fault_every(1, Fault::Status(429, "{}".into(), None));
    let run = s.crier(&["send", "jobs/remind.yaml", "--yes"]);
    assert!(
        run.stdout.contains("1 sent"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    let ann = &s.messages()[0];
    assert_eq!(ann["provider"], "backup");
    assert_eq!(ann["failovers"][0]["error_code"], "retries_exhausted");
    assert_eq!(ann["failovers"][0]["attempts"], 2);
    assert_eq!(ann["attempts"], 3);
}

fn validate(p: &Project, job: &str) -> Run {
    p.write("jobs/j.yaml", job);
    p.crier(&["validate", "jobs/j.yaml"])
}

#[test]
fn validate_reports_broken_scripts_with_file_line_and_column() {
    let p = Project::new();
    p.write(
        "scripts/route.rhai",
        "fn route(message, customer) {\n    if message.country == \"ZA\" {\n        [\"outbox\", \"twillio\"]\n    } else {\n        \"outbx\"\n    }\n}\n",
    );
    p.write(
        "scripts/broken.rhai",
        "fn filter(customer) {\n  customer.id >\n}\n",
    );
    p.write("scripts/helpers.rhai", "fn shout(s) { s.to_upper() }\n");
    let run = validate(
        &p,
        "send_to: sms\nrecipients: {}\nmessage: \"{{ shout(customer.name) }} {{ whisper(customer.name) }}\"\nscripts:\n  filter: scripts/broken.rhai\n  vars: scripts/helpers.rhai\n  route: scripts/route.rhai\n  helpers: [scripts/helpers.rhai]\n",
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let out = format!("{}{}", run.stdout, run.stderr);
    for expected in [
        "scripts/broken.rhai:3:1: scripts.filter: ",
        "scripts/route.rhai:3:9: scripts.route: route returns provider `twillio`, which is not defined in crier.yaml",
        "scripts/route.rhai:5:9: scripts.route: route returns provider `outbx`, which is not defined in crier.yaml (did you mean `outbox`?)",
        "jobs/j.yaml:6:9: scripts.vars: `scripts/helpers.rhai` defines no `fn vars(customer)`",
        "unknown variable `whisper`",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // `shout` is a helper, so templates may call it.
    assert!(!out.contains("`shout`"), "{out}");
}

#[test]
fn validate_refuses_scripts_outside_scripts_dir() {
    let p = Project::new();
    p.write("secret.rhai", "fn x() { 1 }\n");
    p.write(
        "scripts/sneaky.rhai",
        "import \"../secret\" as s;\nfn filter(customer) { s::x() == 1 }\n",
    );
    let run = validate(
        &p,
        "send_to: sms\nrecipients: {}\nmessage: hi\nscripts:\n  filter: scripts/sneaky.rhai\n  vars: ../secret.rhai\n",
    );
    assert_eq!(run.code, 1);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("scripts/sneaky.rhai:1:8: scripts.filter: ")
            && out.contains("imports are limited to files under scripts/"),
        "{out}"
    );
    assert!(
        out.contains("`../secret.rhai` is not under `scripts/`"),
        "{out}"
    );
}

#[test]
fn every_shipped_script_compiles() {
    let dir = root().join("scripts");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rhai") {
            continue;
        }
        let rel = format!("scripts/{}", path.file_name().unwrap().to_str().unwrap());
        let paths = crier::script::ScriptPaths {
            helpers: vec![rel.clone()],
            ..Default::default()
        };
        let job = root().join("jobs/payment-reminder.yaml");
        let scripts = crier::script::Scripts::load(&paths, &job, Default::default());
        assert!(scripts.is_ok(), "{rel}: {:?}", scripts.err());
        n += 1;
    }
    assert!(n >= 4, "at least four example scripts");
}

/// A filter script that fails for every recipient is a failed run, recorded as one: never
/// a silent "nothing to send" with exit 0 and no history.
#[test]
fn a_script_failing_for_everyone_is_a_recorded_failed_run() {
    let s = setup();
    s.project.write(
        "scripts/spin.rhai",
        "fn filter(customer) {\n    loop { }\n}\n",
    );
    s.project.write(
        "jobs/spin.yaml",
        "send_to: sms\nmessage: hi\nrecipients: {}\nscripts:\n  filter: scripts/spin.rhai\n",
    );
    let run = s.crier(&["send", "jobs/spin.yaml", "--yes"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("nothing to send"), "{}", run.stdout);
    assert!(
        run.stdout.contains("(sent_with_error): 0 sent, 5 failed"),
        "{}",
        run.stdout
    );
    // The first error, with its script and limit, once in the summary.
    assert!(
        run.stderr.contains(
            "a script failed for 5 recipients (recorded as failed, reason script_failed); the first error: scripts/spin.rhai: filter: operation limit reached"
        ),
        "{}",
        run.stderr
    );
    // The run is in the history, every recipient a failed message with the script's error.
    let history = s.crier(&["history", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["status"], "sent_with_error", "{runs}");
    let messages = s.messages();
    assert_eq!(messages.len(), 5);
    for m in &messages {
        assert_eq!(m["state"], "failed", "{m}");
        assert_eq!(m["error_code"], "script_failed", "{m}");
        assert!(
            m["error_text"]
                .as_str()
                .unwrap_or_default()
                .contains("scripts/spin.rhai"),
            "{m}"
        );
    }
    assert_eq!(s.mock.state.requests(), 0, "nothing was sent");
}
