//! The HTTP API end to end: the real `crier serve` binary on a loopback port, real HTTP
//! requests, and the CLI's answers for the same data to compare with. The store is one
//! process's at a time, so every CLI command runs before the server starts or after it
//! stops.

mod common;

use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};
use common::Project;
use common::server::Server;
use crier::history::ledger::{Change, Ledger, NewMessage, NewRun};
use crier::history::query::{ANY_STATUS, Period};
use crier::history::{MessageState, MessageType, RunId, RunStatus, Trigger};
use crier::job::Channel;
use crier::recipients::RecipientKind;
use crier::store::open;

const TOKEN: &str = "s3cret-api-token-0123456789";
const ENV: &[(&str, &str)] = &[("CRIER_API_TOKEN", TOKEN)];
/// Messages of the bulk run: enough that a CSV export spans many 64 KB chunks.
const BULK: u64 = 3000;

struct Fixture {
    project: Project,
    /// Sent with an error (1 sent, 1 failed, 1 test sent, 1 skipped), 5 minutes ago.
    reminder: RunId,
    /// One email, sent, 3 days ago.
    welcome: RunId,
    /// Five queued SMS, a minute ago.
    maintenance: RunId,
    /// Cancelled, 40 days ago.
    old: RunId,
}

fn message(id: u64, address: &str, channel: Channel, kind: MessageType) -> NewMessage {
    NewMessage {
        recipient_kind: RecipientKind::Customer,
        recipient_id: id,
        address: address.into(),
        channel,
        provider: "bulksms".into(),
        kind,
        subject: None,
        body: "Hi Zoë, \"R 1,250.00\" is overdue;\nplease pay 🙏".into(),
        encoding: Some("ucs2".into()),
        parts: 2,
        state: MessageState::Queued,
        reason: None,
        error: None,
        snapshot: Default::default(),
        html: None,
        route: Vec::new(),
    }
}

/// A project with people, two jobs, and a ledger of runs written through the library.
fn fixture() -> Fixture {
    let project = Project::new();
    project.write(
        "crier.yaml",
        "timezone: Africa/Johannesburg\nserver:\n  token: ${CRIER_API_TOKEN}\n",
    );
    project.write(
        "people.csv",
        "id,name,status,phone,email,login\n\
         1,Ann,active,082 123 4567,ann@example.com,ann\n\
         2,Ben,active,083 123 4567,,ben\n\
         3,Bad Phone,active,12345,bad@example.com,bad\n",
    );
    project.write(
        "jobs/sms.yaml",
        "send_to: sms\nmessage: \"Hi {{ customer.name }}\"\nrecipients: {}\n",
    );
    project.write(
        "jobs/notice.yaml",
        "send_to: portal\nsubject: \"Maintenance tonight\"\nmessage: \"Hi {{ customer.name }}, the network is down 01:00-03:00.\"\nrecipients: {}\n",
    );
    project.write("jobs/broken.yaml", "send_to: fax\nmessage: hi\n");
    let import = project.crier_env(&["import", "people.csv"], ENV);
    assert_eq!(import.code, 0, "{}", import.stderr);

    let store = open(&project.store_config()).unwrap();
    let ledger = Ledger::new(store.as_ref());
    let now = Utc::now();
    let run = |job: &str, at: chrono::DateTime<Utc>, channel: Channel| {
        ledger
            .create_run_with_id(
                RunId::new(),
                NewRun {
                    job: job.into(),
                    trigger: Trigger::Schedule {
                        at: at.timestamp_millis(),
                    },
                    channels: vec![channel],
                    provider: "bulksms".into(),
                    body: "Hi {{ customer.name }}".into(),
                    subject: None,
                },
                at.timestamp_millis(),
            )
            .unwrap()
            .id
    };
    let old = run("payment-reminder", now - Duration::days(40), Channel::Sms);
    let welcome = run("welcome-email", now - Duration::days(3), Channel::Email);
    let bulk = run("bulk", now - Duration::days(2), Channel::Sms);
    let reminder = run("payment-reminder", now - Duration::minutes(5), Channel::Sms);
    let maintenance = run("maintenance", now - Duration::minutes(1), Channel::Sms);
    let plan = |run: RunId, msgs: Vec<NewMessage>, at: chrono::DateTime<Utc>| {
        ledger.plan_at(run, msgs, at.timestamp_millis()).unwrap()
    };

    let ids = plan(
        reminder,
        vec![
            message(1, "+27821234567", Channel::Sms, MessageType::Message),
            message(2, "+27831234567", Channel::Sms, MessageType::Message),
            message(3, "+27841234567", Channel::Sms, MessageType::Test),
        ],
        now - Duration::minutes(5),
    );
    let mut skipped = message(4, "12345", Channel::Sms, MessageType::Message);
    skipped.state = MessageState::Skipped;
    skipped.reason = Some("invalid_phone".into());
    plan(reminder, vec![skipped], now - Duration::minutes(5));
    ledger.finish_planning(reminder).unwrap();
    let sending: Vec<Change> = ids
        .iter()
        .map(|id| Change::to(*id, MessageState::Sending))
        .collect();
    ledger.transition(&sending).unwrap();
    let mut ok = Change::to(ids[0], MessageState::Sent);
    ok.provider_message_id = Some("bulk-1".into());
    let mut bad = Change::to(ids[1], MessageState::Failed);
    bad.error = Some(("403".into(), "Insufficient Credits".into()));
    ledger
        .transition(&[ok, bad, Change::to(ids[2], MessageState::Sent)])
        .unwrap();

    let w = plan(
        welcome,
        vec![message(
            5,
            "ann@example.com",
            Channel::Email,
            MessageType::Message,
        )],
        now - Duration::days(3),
    );
    ledger.finish_planning(welcome).unwrap();
    ledger
        .transition(&[Change::to(w[0], MessageState::Sending)])
        .unwrap();
    ledger
        .transition(&[Change::to(w[0], MessageState::Sent)])
        .unwrap();

    let b = plan(
        bulk,
        (0..BULK)
            .map(|i| {
                message(
                    100 + i,
                    &format!("+2772{:07}", i),
                    Channel::Sms,
                    MessageType::Message,
                )
            })
            .collect(),
        now - Duration::days(2),
    );
    ledger.finish_planning(bulk).unwrap();
    ledger
        .transition(
            &b.iter()
                .map(|id| Change::to(*id, MessageState::Sending))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    ledger
        .transition(
            &b.iter()
                .map(|id| Change::to(*id, MessageState::Sent))
                .collect::<Vec<_>>(),
        )
        .unwrap();

    plan(
        maintenance,
        (10..15)
            .map(|i| {
                message(
                    i,
                    &format!("+2721555{i:04}"),
                    Channel::Sms,
                    MessageType::Message,
                )
            })
            .collect(),
        now - Duration::minutes(1),
    );
    plan(
        old,
        vec![message(
            1,
            "+27821234567",
            Channel::Sms,
            MessageType::Message,
        )],
        now - Duration::days(40),
    );
    ledger.finish_planning(old).unwrap();
    ledger.cancel(old).unwrap();
    ledger.flush().unwrap();
    drop(store);
    Fixture {
        project,
        reminder,
        welcome,
        maintenance,
        old,
    }
}

/// `crier serve` for the fixture, with the API token.
fn start(p: &Project) -> Server {
    Server::start(p, ENV, Some(TOKEN))
}

/// Stops the server; the token is nowhere in its log.
fn stop(server: Server) -> String {
    let log = server.stop();
    assert!(!log.contains(TOKEN), "the token is in the log:\n{log}");
    log
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn cli_json(p: &Project, args: &[&str]) -> serde_json::Value {
    let out = p.crier_env(args, ENV);
    assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out.stdout))
}

fn csv_rows(text: &str) -> Vec<csv::StringRecord> {
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn refuses_requests_without_the_right_token() {
    let f = fixture();
    let server = start(&f.project);
    // Every operation of the published document under /api (but the document itself),
    // so a route added later is covered without touching this test.
    let doc = server.request("GET", "/api/openapi.json", None).json();
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            if !path.starts_with("/api/") || path == "/api/openapi.json" {
                assert!(
                    op["security"].is_null(),
                    "{method} {path} is open but documented secured"
                );
                continue;
            }
            assert!(
                op["security"].is_array(),
                "{method} {path} is not documented as secured"
            );
            let concrete = path
                .replace("{id}", &f.maintenance.to_string())
                .replace("{name}", "sms")
                .replace("{customer_id}", "2")
                .replace("{message_id}", "x");
            assert!(
                !concrete.contains('{'),
                "a parameter this test cannot fill: {path}"
            );
            routes.push((method.to_uppercase(), concrete));
        }
    }
    assert!(
        routes.len() >= 9,
        "only {} secured routes: {routes:?}",
        routes.len()
    );
    let wrong = format!("{}x", &TOKEN[..TOKEN.len() - 1]);
    for (method, path) in &routes {
        for token in [None, Some(wrong.as_str()), Some(""), Some(&TOKEN[..10])] {
            let a = server.request(method, path, token);
            assert_eq!(a.status, 401, "{method} {path} with {token:?}: {}", a.body);
            // No detail: the same body whatever was wrong.
            assert_eq!(a.json(), serde_json::json!({"error": "unauthorized"}));
        }
    }
    // Another scheme carrying the right token is still refused.
    let basic = server.rt.block_on(async {
        server
            .client
            .get(format!("{}/api/runs", server.base))
            .header("Authorization", format!("Basic {TOKEN}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(basic, 401);
    // The right token passes; nothing was changed by the refused requests.
    let runs = server.get("/api/runs?limit=100");
    assert_eq!(runs.status, 200, "{}", runs.body);
    assert!(
        runs.json()
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] != "removed")
    );
    assert_eq!(
        server.get(&format!("/api/runs/{}", f.maintenance)).json()["status"],
        "processing"
    );
    // Health, metrics and the API's document are open.
    for path in ["/healthz", "/metrics", "/api/openapi.json"] {
        assert_eq!(server.request("GET", path, None).status, 200, "{path}");
    }
    stop(server);
}

#[test]
fn every_filter_answers_what_the_cli_answers() {
    let f = fixture();
    let p = &f.project;
    let from = (Utc::now() - Duration::days(60))
        .format("%Y-%m-%d")
        .to_string();
    let to = (Utc::now() - Duration::days(20))
        .format("%Y-%m-%d")
        .to_string();
    let run = f.reminder.to_string();
    // (API query, CLI arguments, how many the fixture holds: so no case is vacuous)
    let message_cases: Vec<(String, Vec<&str>, usize)> = vec![
        ("".into(), vec![], 100),
        ("channel=email".into(), vec!["--channel", "email"], 1),
        (
            "channel=sms&state=failed".into(),
            vec!["--channel", "sms", "--state", "failed"],
            1,
        ),
        ("state=queued".into(), vec!["--state", "queued"], 5),
        ("state=cancelled".into(), vec!["--state", "cancelled"], 1),
        ("type=test".into(), vec!["--type", "test"], 1),
        (
            "type=message&period=today".into(),
            vec!["--type", "message", "--period", "today"],
            8,
        ),
        (
            "period=last-7-days&state=sent".into(),
            vec!["--period", "last-7-days", "--state", "sent"],
            100,
        ),
        ("period=yesterday".into(), vec!["--period", "yesterday"], 0),
        (
            format!("from={from}&to={to}"),
            vec!["--from", &from, "--to", &to],
            1,
        ),
        // Any local form of the number finds the E.164 address.
        (
            "phone=082%20123%204567".into(),
            vec!["--phone", "082 123 4567"],
            2,
        ),
        (
            "phone=ann@example.com".into(),
            vec!["--phone", "ann@example.com"],
            1,
        ),
        ("recipient=1".into(), vec!["--recipient", "1"], 2),
        ("recipient=lead:1".into(), vec!["--recipient", "lead:1"], 0),
        (
            "recipient=customer:12&state=queued".into(),
            vec!["--recipient", "customer:12", "--state", "queued"],
            1,
        ),
        (format!("run={run}"), vec!["--run", &run], 4),
        (
            format!("run={run}&state=skipped"),
            vec!["--run", &run, "--state", "skipped"],
            1,
        ),
    ];
    let run_cases: Vec<(String, Vec<&str>, usize)> = vec![
        ("".into(), vec![], 5),
        (
            "status=sent_with_error".into(),
            vec!["--status", "sent_with_error"],
            1,
        ),
        (
            "status=processing".into(),
            vec!["--status", "processing"],
            1,
        ),
        ("status=cancelled".into(), vec!["--status", "cancelled"], 1),
        (
            "status=sent&period=last-7-days".into(),
            vec!["--status", "sent", "--period", "last-7-days"],
            2,
        ),
        ("period=today".into(), vec!["--period", "today"], 2),
        (
            "job=payment-reminder".into(),
            vec!["--job", "payment-reminder"],
            2,
        ),
        (
            "job=payment-reminder&period=last-30-days".into(),
            vec!["--job", "payment-reminder", "--period", "last-30-days"],
            1,
        ),
        (
            format!("from={from}&to={to}"),
            vec!["--from", &from, "--to", &to],
            1,
        ),
    ];
    // The CLI first: the server will hold the store.
    let cli_messages: Vec<Vec<String>> = message_cases
        .iter()
        .map(|(_, args, _)| {
            let mut a = vec!["logs", "--format", "json", "--limit", "100"];
            a.extend(args);
            ids(&cli_json(p, &a))
        })
        .collect();
    let cli_runs: Vec<serde_json::Value> = run_cases
        .iter()
        .map(|(_, args, _)| {
            let mut a = vec!["history", "--format", "json"];
            a.extend(args);
            cli_json(p, &a)
        })
        .collect();
    let cli_run_messages = ids(&cli_json(
        p,
        &["history", "recipients", &run, "--format", "json"],
    ));
    let cli_run_failed = ids(&cli_json(
        p,
        &[
            "history",
            "recipients",
            &run,
            "--state",
            "failed",
            "--format",
            "json",
        ],
    ));

    let server = start(p);
    for ((query, _, expected), cli) in message_cases.iter().zip(&cli_messages) {
        let a = server.get(&format!("/api/messages?limit=100&{query}"));
        assert_eq!(a.status, 200, "{query}: {}", a.body);
        assert!(a.content_type.starts_with("application/json"));
        let api = ids(&a.json());
        assert_eq!(&api, cli, "/api/messages?{query}");
        assert_eq!(api.len(), *expected, "/api/messages?{query}");
    }
    for ((query, _, expected), cli) in run_cases.iter().zip(&cli_runs) {
        let a = server.get(&format!("/api/runs?{query}"));
        assert_eq!(a.status, 200, "{query}: {}", a.body);
        // The whole record, not just the ids: the same view type prints both.
        assert_eq!(&a.json(), cli, "/api/runs?{query}");
        assert_eq!(ids(cli).len(), *expected, "/api/runs?{query}");
    }
    assert_eq!(
        ids(&server.get("/api/runs?status=cancelled").json()),
        vec![f.old.to_string()]
    );
    let all = server.get(&format!("/api/runs/{run}/messages"));
    assert_eq!(ids(&all.json()), cli_run_messages);
    let failed = server
        .get(&format!("/api/runs/{run}/messages?state=failed"))
        .json();
    assert_eq!(ids(&failed), cli_run_failed);
    assert_eq!(failed[0]["error_text"], "Insufficient Credits");

    let one = server.get(&format!("/api/runs/{run}"));
    assert_eq!(one.status, 200);
    let one = one.json();
    assert_eq!(one["status"], "sent_with_error");
    assert_eq!(one["counters"]["failed"], 1);
    assert_eq!(one["body"], "Hi {{ customer.name }}");
    assert_eq!(one["trigger"], "schedule");

    // limit caps a JSON answer.
    assert_eq!(ids(&server.get("/api/messages?limit=7").json()).len(), 7);
    assert_eq!(ids(&server.get("/api/messages").json()).len(), 100);
    let missing = server.get(&format!("/api/runs/{}", RunId::new()));
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("no run"));
    stop(server);
}

#[test]
fn csv_exports_stream_the_rows_the_cli_writes() {
    let f = fixture();
    let p = &f.project;
    let run = f.reminder.to_string();
    let cli_all = p.crier_env(&["logs", "--format", "csv"], ENV).stdout;
    let cli_failed = p
        .crier_env(&["logs", "--state", "failed", "--format", "csv"], ENV)
        .stdout;
    let cli_run = p
        .crier_env(&["history", "recipients", &run, "--format", "csv"], ENV)
        .stdout;
    let cli_runs = p
        .crier_env(&["history", "--status", "any", "--format", "csv"], ENV)
        .stdout;
    // Every message of the fixture, in many 64 KB chunks.
    assert_eq!(csv_rows(&cli_all).len() as u64, BULK + 11);
    assert!(cli_all.len() > 4 * 64 * 1024, "{}", cli_all.len());

    let server = start(p);
    let all = server.get("/api/messages?format=csv");
    assert_eq!(all.status, 200);
    assert!(
        all.content_type.starts_with("text/csv"),
        "{}",
        all.content_type
    );
    assert_eq!(all.body, cli_all);
    let failed = server.get("/api/messages?state=failed&format=csv");
    assert_eq!(failed.body, cli_failed);
    assert_eq!(csv_rows(&failed.body).len(), 1);
    let of_run = server.get(&format!("/api/runs/{run}/messages?format=csv"));
    assert_eq!(of_run.body, cli_run);
    assert_eq!(csv_rows(&of_run.body).len(), 4);
    let runs = server.get("/api/runs?format=csv");
    assert_eq!(runs.body, cli_runs);
    // A CSV export is not capped by the JSON limit.
    assert_eq!(csv_rows(&all.body).len() as u64, BULK + 11);
    stop(server);
}

#[test]
fn csv_exports_neutralise_formulas_unless_raw_is_true() {
    let f = fixture();
    let p = &f.project;
    let store = open(&p.store_config()).unwrap();
    let ledger = Ledger::new(store.as_ref());
    let run = ledger
        .create_run(NewRun {
            job: "formulas".into(),
            trigger: Trigger::Manual,
            channels: vec![Channel::Sms],
            provider: "bulksms".into(),
            body: "x".into(),
            subject: None,
        })
        .unwrap()
        .id;
    let mut m = message(1042, "+27821234567", Channel::Sms, MessageType::Message);
    m.body = "=HYPERLINK(\"x\")".into();
    m.subject = Some("-5".into());
    ledger.plan(run, vec![m]).unwrap();
    ledger.flush().unwrap();
    drop(store);

    let cli = |args: &[&str]| p.crier_env(args, ENV).stdout;
    let cli_safe = cli(&["logs", "--run", &run.to_string(), "--format", "csv"]);
    let cli_raw = cli(&[
        "logs",
        "--run",
        &run.to_string(),
        "--format",
        "csv",
        "--raw",
    ]);
    let server = start(p);
    let cells = |path: &str| {
        let got = server.get(path);
        assert_eq!(got.status, 200, "{}", got.body);
        assert!(got.body.ends_with("\r\n"), "CRLF rows: {:?}", got.body);
        let rows = csv_rows(&got.body);
        let mut reader = csv::Reader::from_reader(got.body.as_bytes());
        let header = reader.headers().unwrap().clone();
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let cells = (
            rows[0][col("body")].to_string(),
            rows[0][col("subject")].to_string(),
            rows[0][col("address")].to_string(),
        );
        (got.body, cells)
    };
    let (safe, safe_cells) = cells(&format!("/api/messages?run={run}&format=csv"));
    assert_eq!(
        safe_cells,
        (
            "'=HYPERLINK(\"x\")".to_string(),
            "'-5".to_string(),
            "+27821234567".to_string()
        )
    );
    assert_eq!(safe, cli_safe);
    let (raw, raw_cells) = cells(&format!("/api/messages?run={run}&format=csv&raw=true"));
    assert_eq!(
        raw_cells,
        (
            "=HYPERLINK(\"x\")".to_string(),
            "-5".to_string(),
            "+27821234567".to_string()
        )
    );
    assert_eq!(raw, cli_raw);
    let (_, of_run) = cells(&format!("/api/runs/{run}/messages?format=csv"));
    assert_eq!(of_run, safe_cells);
    let (_, of_run_raw) = cells(&format!("/api/runs/{run}/messages?format=csv&raw=true"));
    assert_eq!(of_run_raw, raw_cells);
    stop(server);
}

#[test]
fn portal_inbox_lists_and_marks_read() {
    let f = fixture();
    let p = &f.project;
    let sent = p.crier_env(&["send", "jobs/notice.yaml", "--yes"], ENV);
    assert_eq!(sent.code, 0, "{}\n{}", sent.stdout, sent.stderr);
    let cli = cli_json(p, &["portal", "inbox", "2", "--format", "json"]);
    let id = cli[0]["id"].as_str().unwrap().to_string();

    let server = start(p);
    let inbox = server.get("/api/portal/2/messages");
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    let inbox = inbox.json();
    assert_eq!(inbox["customer_id"], 2);
    assert_eq!(inbox["unread"], 1);
    assert_eq!(ids(&inbox["messages"]), vec![id.clone()]);
    assert_eq!(inbox["messages"][0]["title"], "Maintenance tonight");
    assert_eq!(
        inbox["messages"][0]["body"],
        "Hi Ben, the network is down 01:00-03:00."
    );
    assert!(inbox["messages"][0]["read_at"].is_null());
    // Each customer sees only their own message.
    let ann = server.get("/api/portal/1/messages").json();
    assert_eq!(ann["messages"].as_array().unwrap().len(), 1);
    assert_ne!(ann["messages"][0]["id"], id.as_str());
    assert_eq!(
        server.get("/api/portal/999/messages").json()["messages"],
        serde_json::json!([])
    );

    let read = server.post(&format!("/api/portal/2/messages/{id}/read"));
    assert_eq!(read.status, 200, "{}", read.body);
    let read_at = read.json()["read_at"].as_str().unwrap().to_string();
    let again = server.get("/api/portal/2/messages").json();
    assert_eq!(again["unread"], 0);
    assert_eq!(again["messages"][0]["read_at"], read_at.as_str());
    // Reading twice keeps the first time.
    let twice = server.post(&format!("/api/portal/2/messages/{id}/read"));
    assert_eq!(twice.json()["read_at"], read_at.as_str());
    // Another customer's message is not yours to read.
    let other = server.post(&format!("/api/portal/1/messages/{id}/read"));
    assert_eq!(other.status, 404);
    assert!(
        other.json()["error"]
            .as_str()
            .unwrap()
            .contains("customer 1 has no message")
    );
    stop(server);

    // Durable: the CLI sees it read after the server is gone.
    let after = cli_json(p, &["portal", "inbox", "2", "--format", "json"]);
    assert!(after[0]["read_at"].is_i64(), "{after}");
}

#[test]
fn malformed_input_is_a_400_with_a_reason() {
    let f = fixture();
    let server = start(&f.project);
    let run = f.reminder.to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("GET", "/api/messages?colour=red".into(), "unknown field"),
        (
            "GET",
            "/api/messages?state=gone".into(),
            "unknown message state",
        ),
        ("GET", "/api/messages?channel=fax".into(), "unknown channel"),
        ("GET", "/api/messages?type=spam".into(), "unknown type"),
        (
            "GET",
            "/api/messages?period=fortnight".into(),
            "unknown period",
        ),
        (
            "GET",
            "/api/messages?period=today&from=2026-01-01".into(),
            "not both",
        ),
        (
            "GET",
            "/api/messages?from=yesterday-ish".into(),
            "is not a date",
        ),
        (
            "GET",
            "/api/messages?from=2026-11-05&to=2026-11-01".into(),
            "is not before",
        ),
        (
            "GET",
            "/api/messages?phone=12".into(),
            "not a valid phone number",
        ),
        (
            "GET",
            "/api/messages?recipient=bob".into(),
            "not a recipient id",
        ),
        (
            "GET",
            "/api/messages?recipient=alien:3".into(),
            "recipient kind",
        ),
        ("GET", "/api/messages?run=nope".into(), "not a run id"),
        ("GET", "/api/messages?format=xml".into(), "unknown value"),
        ("GET", "/api/messages?limit=0".into(), "out of range"),
        ("GET", "/api/messages?limit=100001".into(), "out of range"),
        ("GET", "/api/messages?limit=-1".into(), "limit"),
        ("GET", "/api/messages?limit=ten".into(), "limit"),
        ("GET", "/api/runs?status=done".into(), "unknown status"),
        ("GET", "/api/runs?job=a&jobs=b".into(), "unknown field"),
        ("GET", "/api/runs/not-a-run".into(), "not a run id"),
        ("GET", "/api/runs/not-a-run/messages".into(), "not a run id"),
        (
            "GET",
            format!("/api/runs/{run}/messages?state=lost"),
            "unknown message state",
        ),
        (
            "POST",
            "/api/runs/%F0%9F%99%8F/cancel".into(),
            "not a run id",
        ),
        ("DELETE", "/api/runs/0000".into(), "not a run id"),
        ("POST", "/api/jobs/sms/run?dry_run=maybe".into(), "dry_run"),
        ("POST", "/api/jobs/bad%20name/run".into(), "not a job name"),
        ("POST", "/api/jobs/..%2Fcrier/run".into(), "not a job name"),
        (
            "GET",
            "/api/portal/ben/messages".into(),
            "not a customer id",
        ),
        ("GET", "/api/portal/-1/messages".into(), "not a customer id"),
        (
            "POST",
            "/api/portal/x/messages/y/read".into(),
            "not a customer id",
        ),
        ("GET", "/api/messages?state=%FF".into(), ""),
    ];
    for (method, path, reason) in &cases {
        let a = server.request(method, path, Some(TOKEN));
        assert_eq!(a.status, 400, "{method} {path}: {}", a.body);
        let error = a.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(!error.is_empty(), "{method} {path}: no reason");
        assert!(error.contains(reason), "{method} {path}: {error}");
        // API terms, not the command line's flags.
        assert!(
            !error.contains("--"),
            "{method} {path} names a flag: {error}"
        );
    }
    for (path, expected) in [
        (
            "/api/messages?from=2026-11-05&to=2026-11-01",
            "`from` 2026-11-05 is not before `to` 2026-11-01",
        ),
        (
            "/api/runs?period=today&to=2026-11-01",
            "give `period` or `from`/`to`, not both",
        ),
    ] {
        let a = server.get(path);
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.json()["error"], expected, "{path}");
    }
    // Still serving after all that.
    assert_eq!(server.get("/healthz").status, 200);
    let log = stop(server);
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn runs_start_preview_cancel_and_remove_through_the_api() {
    let f = fixture();
    let p = &f.project;
    let preview = p.crier_env(&["preview", "jobs/sms.yaml"], ENV);
    assert!(
        preview
            .stdout
            .contains("messages: 2 to send, 1 skipped (invalid_phone 1)"),
        "{}",
        preview.stdout
    );

    let server = start(p);
    let runs_before = ids(&server.get("/api/runs?status=any").json()).len();
    let dry = server.post("/api/jobs/sms/run?dry_run=true");
    assert_eq!(dry.status, 200, "{}", dry.body);
    let dry = dry.json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["recipients"], 3);
    assert_eq!(dry["to_send"], 2);
    assert_eq!(dry["skipped"], serde_json::json!({"invalid_phone": 1}));
    assert_eq!(dry["sms_parts"], 2);
    assert_eq!(
        dry["channels"],
        serde_json::json!([{"channel": "sms", "provider": "outbox"}])
    );
    assert_eq!(
        ids(&server.get("/api/runs?status=any").json()).len(),
        runs_before,
        "a dry run records nothing"
    );

    let started = server.post("/api/jobs/sms/run");
    assert_eq!(started.status, 202, "{}", started.body);
    let body = started.json();
    let id = body["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        started.location.as_deref(),
        Some(format!("/api/runs/{id}").as_str())
    );
    assert_eq!(body["job"], "sms");
    let deadline = Instant::now() + StdDuration::from_secs(30);
    let run = loop {
        let r = server.get(&format!("/api/runs/{id}")).json();
        if r["status"] == "sent" {
            break r;
        }
        assert!(Instant::now() < deadline, "the run did not finish: {r}");
        std::thread::sleep(StdDuration::from_millis(50));
    };
    assert_eq!(run["trigger"], "api");
    assert_eq!(run["counters"]["sent"], 2);
    assert_eq!(run["counters"]["skipped"], 1);
    let outbox = std::fs::read_to_string(p.path().join("data/outbox/sms.jsonl")).unwrap();
    assert_eq!(outbox.lines().count(), 2);

    assert_eq!(server.post("/api/jobs/nope/run").status, 404);
    let broken = server.post("/api/jobs/broken/run");
    assert_eq!(broken.status, 422, "{}", broken.body);
    assert!(broken.json()["error"].as_str().unwrap().contains("fax"));

    let cancelled = server.post(&format!("/api/runs/{}/cancel", f.maintenance));
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let cancelled = cancelled.json();
    assert_eq!(cancelled["cancelled_messages"], 5);
    assert_eq!(cancelled["run"]["status"], "cancelled");
    assert_eq!(
        server
            .post(&format!("/api/runs/{}/cancel", RunId::new()))
            .status,
        404
    );

    let removed = server.request("DELETE", &format!("/api/runs/{}", f.welcome), Some(TOKEN));
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.json()["status"], "removed");
    let listed = ids(&server.get("/api/runs").json());
    assert!(!listed.contains(&f.welcome.to_string()));
    assert_eq!(
        ids(&server.get("/api/runs?status=removed").json()),
        vec![f.welcome.to_string()]
    );
    // The removed run's messages leave the message listing too, unless asked for.
    let emails = |query: &str| {
        let got = server.get(&format!("/api/messages?channel=email{query}"));
        assert_eq!(got.status, 200, "{}", got.body);
        got.json().as_array().unwrap().len()
    };
    assert_eq!(emails(""), 0);
    assert_eq!(emails("&include_removed=false"), 0);
    assert_eq!(emails("&include_removed=true"), 1);
    assert_eq!(emails(&format!("&run={}", f.welcome)), 1);
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("crier_api_runs_started_total 1"),
        "{metrics}"
    );
    stop(server);

    // The CLI agrees afterwards.
    let removed = cli_json(p, &["history", "--status", "removed", "--format", "json"]);
    assert_eq!(ids(&removed), vec![f.welcome.to_string()]);
    let cancelled = cli_json(p, &["history", "--status", "cancelled", "--format", "json"]);
    assert!(ids(&cancelled).contains(&f.maintenance.to_string()));
    let logs = |args: &[&str]| {
        let mut full = vec!["logs", "--channel", "email", "--format", "json"];
        full.extend_from_slice(args);
        cli_json(p, &full).as_array().unwrap().len()
    };
    assert_eq!(logs(&[]), 0);
    assert_eq!(logs(&["--include-removed"]), 1);
    let api_run = cli_json(p, &["history", "--job", "sms", "--format", "json"]);
    assert_eq!(api_run[0]["trigger"], "api");
    assert_eq!(api_run[0]["id"], id.as_str());
}

#[test]
fn the_openapi_document_lists_every_route() {
    let f = fixture();
    let server = start(&f.project);
    let doc = server.request("GET", "/api/openapi.json", None);
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected: &[(&str, &str, bool)] = &[
        ("get", "/api/runs", true),
        ("get", "/api/runs/{id}", true),
        ("delete", "/api/runs/{id}", true),
        ("get", "/api/runs/{id}/messages", true),
        ("post", "/api/runs/{id}/cancel", true),
        ("get", "/api/messages", true),
        ("post", "/api/jobs/{name}/run", true),
        ("get", "/api/portal/{customer_id}/messages", true),
        (
            "post",
            "/api/portal/{customer_id}/messages/{message_id}/read",
            true,
        ),
        ("get", "/api/openapi.json", false),
        ("get", "/healthz", false),
        ("get", "/metrics", false),
    ];
    let paths = doc["paths"].as_object().unwrap();
    for (method, path, secured) in expected {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not in the document"))[*method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        assert_eq!(
            op["security"].is_array(),
            *secured,
            "{method} {path} security"
        );
    }
    let documented: usize = paths
        .values()
        .map(|item| {
            ["get", "post", "delete", "put", "patch"]
                .iter()
                .filter(|m| item[**m].is_object())
                .count()
        })
        .sum();
    assert_eq!(documented, expected.len(), "undocumented extras: {paths:?}");
    // Every filter of the listing is a documented parameter.
    let params: Vec<&str> = paths["/api/messages"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "channel",
        "state",
        "type",
        "period",
        "from",
        "to",
        "phone",
        "recipient",
        "format",
    ] {
        assert!(params.contains(&name), "{name} missing from {params:?}");
    }
    // And every documented operation is routed: the router answers, never its own 404/405.
    for (method, path, _) in expected {
        let concrete = path
            .replace("{id}", &RunId::new().to_string())
            .replace("{name}", "nope")
            .replace("{customer_id}", "7")
            .replace("{message_id}", "m");
        let a = server.request(&method.to_uppercase(), &concrete, Some(TOKEN));
        assert_ne!(a.status, 405, "{method} {path}");
        assert!(
            a.status != 404 || a.json()["error"].is_string(),
            "{method} {path} is not routed"
        );
    }
    assert_eq!(server.get("/api/nothing-here").status, 404);
    stop(server);
}

/// The parameter `name` of `method path` in the published document.
fn param<'a>(
    doc: &'a serde_json::Value,
    method: &str,
    path: &str,
    name: &str,
) -> &'a serde_json::Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} has no parameters"))
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter `{name}`"))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_openapi_document_says_exactly_what_the_server_accepts() {
    let f = fixture();
    let server = start(&f.project);
    let doc = server.request("GET", "/api/openapi.json", None).json();

    // Enum filters list exactly the values of the types the handlers parse with, and the
    // server takes every one of them.
    let names = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let statuses: Vec<&str> = std::iter::once(ANY_STATUS)
        .chain(RunStatus::ALL.map(RunStatus::as_str))
        .collect();
    let states = MessageState::ALL.map(MessageState::as_str);
    let channels = Channel::ALL.map(Channel::as_str);
    let types = MessageType::ALL.map(MessageType::as_str);
    let periods = Period::ALL.map(Period::as_str);
    let enums: [(&str, &str, &str, &[&str]); 7] = [
        ("get", "/api/runs", "status", &statuses),
        ("get", "/api/runs", "period", &periods),
        ("get", "/api/runs/{id}/messages", "state", &states),
        ("get", "/api/messages", "state", &states),
        ("get", "/api/messages", "channel", &channels),
        ("get", "/api/messages", "type", &types),
        ("get", "/api/messages", "period", &periods),
    ];
    for (method, path, name, expected) in enums {
        let p = param(&doc, method, path, name);
        assert_eq!(p["required"], false, "{path} {name}");
        assert_eq!(p["schema"]["type"], "string", "{path} {name}");
        let listed = strings(&p["schema"]["enum"]);
        assert_eq!(listed, names(expected), "{path} {name}");
        let concrete = path.replace("{id}", &f.reminder.to_string());
        for value in &listed {
            let a = server.get(&format!("{concrete}?{name}={value}"));
            assert_eq!(a.status, 200, "{path}?{name}={value}: {}", a.body);
        }
    }

    // Run ids: the ULID pattern and length, wherever a run id is taken.
    let run_ids = [
        ("get", "/api/runs/{id}", "id"),
        ("delete", "/api/runs/{id}", "id"),
        ("get", "/api/runs/{id}/messages", "id"),
        ("post", "/api/runs/{id}/cancel", "id"),
        ("get", "/api/messages", "run"),
    ];
    for (method, path, name) in run_ids {
        let schema = &param(&doc, method, path, name)["schema"];
        assert_eq!(schema["pattern"], RunId::PATTERN, "{method} {path}");
        assert_eq!(schema["minLength"], 26, "{method} {path}");
        assert_eq!(schema["maxLength"], 26, "{method} {path}");
    }
    let ulid = regex::Regex::new(RunId::PATTERN).unwrap();
    let id = f.reminder.to_string();
    assert!(ulid.is_match(&id) && ulid.is_match(&id.to_lowercase()));
    let overflow = format!("Z{}", &id[1..]);
    assert!(!ulid.is_match(&overflow));
    assert_eq!(server.get(&format!("/api/runs/{overflow}")).status, 400);
    assert_eq!(
        server
            .get(&format!("/api/runs/{}", id.to_lowercase()))
            .json()["id"],
        id.as_str()
    );

    // `limit`: 1 to 10000, and the server holds to both ends.
    for (method, path) in [
        ("get", "/api/runs"),
        ("get", "/api/runs/{id}/messages"),
        ("get", "/api/messages"),
    ] {
        let schema = &param(&doc, method, path, "limit")["schema"];
        assert_eq!(schema["type"], "integer", "{path}");
        assert_eq!(schema["minimum"], 1, "{path}");
        assert_eq!(schema["maximum"], 10_000, "{path}");
        let concrete = path.replace("{id}", &f.reminder.to_string());
        for (limit, status) in [(0, 400), (1, 200), (10_000, 200), (10_001, 400)] {
            let a = server.get(&format!("{concrete}?limit={limit}"));
            assert_eq!(a.status, status, "{path}?limit={limit}: {}", a.body);
        }
    }

    // Customer ids: any u64.
    for path in [
        "/api/portal/{customer_id}/messages",
        "/api/portal/{customer_id}/messages/{message_id}/read",
    ] {
        let method = if path.ends_with("read") {
            "post"
        } else {
            "get"
        };
        let p = param(&doc, method, path, "customer_id");
        assert_eq!(p["required"], true, "{path}");
        let schema = &p["schema"];
        assert_eq!(schema["type"], "integer", "{path}");
        assert_eq!(schema["format"], "uint64", "{path}");
        assert_eq!(schema["minimum"], 0, "{path}");
        assert_eq!(schema["maximum"].as_u64(), Some(u64::MAX), "{path}");
    }
    let max = server.get(&format!("/api/portal/{}/messages", u64::MAX));
    assert_eq!(max.status, 200, "{}", max.body);
    assert_eq!(max.json()["customer_id"].as_u64(), Some(u64::MAX));
    for bad in ["18446744073709551616", "-1", "+7", "%207"] {
        let a = server.get(&format!("/api/portal/{bad}/messages"));
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
    }

    // Job names: the pattern the handler checks.
    let schema = &param(&doc, "post", "/api/jobs/{name}/run", "name")["schema"];
    let job_name = regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
    for (name, plain) in [
        ("sms", true),
        ("payment-reminder_2.v1", true),
        ("-x", true),
        (".hidden", false),
        ("a b", false),
        ("a/b", false),
        ("", false),
    ] {
        assert_eq!(job_name.is_match(name), plain, "{name:?}");
    }
    for name in ["nope", "-x", "payment-reminder_2.v1"] {
        let a = server.post(&format!("/api/jobs/{name}/run?dry_run=true"));
        assert_eq!(a.status, 404, "{name}: {}", a.body);
    }
    for name in ["..%2Fcrier", "a%20b", ".hidden"] {
        let a = server.post(&format!("/api/jobs/{name}/run?dry_run=true"));
        assert_eq!(a.status, 400, "{name}: {}", a.body);
    }

    // DELETE says it is a soft delete, and it is one: the run stays readable as removed.
    let delete = &doc["paths"]["/api/runs/{id}"]["delete"];
    let text = format!("{} {}", delete["summary"], delete["description"]);
    assert!(text.contains("soft delete"), "{text}");
    assert!(text.contains("`removed`"), "{text}");
    let removed = server.request("DELETE", &format!("/api/runs/{}", f.old), Some(TOKEN));
    assert_eq!(removed.status, 200, "{}", removed.body);
    let after = server.get(&format!("/api/runs/{}", f.old));
    assert_eq!(after.status, 200);
    assert_eq!(after.json()["status"], "removed");
    stop(server);
}

#[test]
fn health_and_metrics_report_the_store_and_the_ledger() {
    let f = fixture();
    let server = start(&f.project);
    let health = server.request("GET", "/healthz", None);
    assert_eq!(health.status, 200);
    assert_eq!(
        health.json(),
        // crier serve has no scheduler; it is a worker on PostgreSQL only
        serde_json::json!({"status": "ok", "store": "ok", "scheduler": "not running",
            "worker": if common::on_postgres() { "ok" } else { "none" }})
    );
    let metrics = server.request("GET", "/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(metrics.content_type.starts_with("text/plain"));
    let m = metrics.body;
    for line in [
        "crier_messages{channel=\"sms\",provider=\"bulksms\",state=\"failed\"} 1",
        "crier_messages{channel=\"sms\",provider=\"bulksms\",state=\"queued\"} 5",
        &format!(
            "crier_messages{{channel=\"sms\",provider=\"bulksms\",state=\"sent\"}} {}",
            BULK + 2
        ),
        "crier_messages{channel=\"email\",provider=\"bulksms\",state=\"sent\"} 1",
        "crier_queue_depth 5",
        "crier_runs{status=\"processing\"} 1",
        "crier_runs{status=\"sent_with_error\"} 1",
        "crier_runs{status=\"cancelled\"} 1",
        "crier_delivery_reports_total{outcome=\"applied\"} 0",
        "# TYPE crier_run_duration_seconds histogram",
    ] {
        assert!(m.lines().any(|l| l == line), "missing `{line}` in\n{m}");
    }
    stop(server);
}

/// A client that stops halfway through its request cannot hold a SIGTERMed server: the
/// requests in progress get the shutdown grace, then the server stops all the same.
#[test]
fn a_request_stalled_halfway_does_not_hold_the_server_at_shutdown() {
    use std::io::{BufRead, BufReader, Write};
    let p = Project::new();
    p.write("crier.yaml", "server:\n  token: ${CRIER_API_TOKEN}\n");
    let server = start(&p);
    let addr = server
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    // One whole request first, answered: the server holds this connection.
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: crier\r\n\r\n")
        .unwrap();
    let mut status = String::new();
    BufReader::new(&conn).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // Then a request whose body never comes: its handler waits for the rest.
    conn.write_all(
        b"POST /webhooks/twilio HTTP/1.1\r\nHost: crier\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nMessageSid=",
    )
    .unwrap();
    std::thread::sleep(StdDuration::from_millis(300));
    let log = stop(server);
    assert!(
        log.contains("Requests still open after the shutdown grace"),
        "{log}"
    );
    drop(conn);
}
