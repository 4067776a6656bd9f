//! `crier history` and `crier logs` end to end: a ledger written through the library on
//! real sled files, then read back through the real binary.

mod common;

use chrono::{Duration, Utc};
use common::Project;
use crier::history::ledger::{Change, Ledger, NewMessage, NewRun};
use crier::history::{MessageState, MessageType, RunId, Trigger};
use crier::job::Channel;
use crier::recipients::RecipientKind;
use crier::store::open;

struct Fixture {
    project: Project,
    /// Sent with an error, today.
    reminder: RunId,
    /// All sent, 3 days ago.
    welcome: RunId,
    /// Still queued, today.
    maintenance: RunId,
    /// 40 days ago.
    old: RunId,
}

const BODY: &str = "Hi Zoë, \"R 1,250.00\" is overdue;\nplease pay 🙏";

fn message(id: u64, address: &str, channel: Channel, kind: MessageType) -> NewMessage {
    NewMessage {
        recipient_kind: RecipientKind::Customer,
        recipient_id: id,
        address: address.into(),
        channel,
        provider: "bulksms".into(),
        kind,
        subject: None,
        body: BODY.into(),
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

fn fixture() -> Fixture {
    let project = Project::new();
    project.write("crier.yaml", "timezone: Africa/Johannesburg\n");
    let store = open(&project.store_config()).unwrap();
    let ledger = Ledger::new(store.as_ref());
    let now = Utc::now();
    let run = |job: &str, at: chrono::DateTime<Utc>| {
        ledger
            .create_run_with_id(
                RunId::new(),
                NewRun {
                    job: job.into(),
                    trigger: Trigger::Schedule {
                        at: at.timestamp_millis(),
                    },
                    channels: vec![Channel::Sms],
                    provider: "bulksms".into(),
                    body: "Hi {{ customer.name }}".into(),
                    subject: None,
                },
                at.timestamp_millis(),
            )
            .unwrap()
    };
    let old = run("payment-reminder", now - Duration::days(40));
    let welcome = run("welcome-email", now - Duration::days(3));
    let reminder = run("payment-reminder", now - Duration::minutes(5));
    let maintenance = run("maintenance", now - Duration::minutes(1));

    let plan = |run: RunId, msgs: Vec<NewMessage>, at: chrono::DateTime<Utc>| {
        ledger.plan_at(run, msgs, at.timestamp_millis()).unwrap()
    };
    let ids = plan(
        reminder.id,
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
    plan(reminder.id, vec![skipped], now - Duration::minutes(5));
    ledger.finish_planning(reminder.id).unwrap();
    ledger
        .transition(
            &ids.iter()
                .map(|id| Change::to(*id, MessageState::Sending))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let mut ok = Change::to(ids[0], MessageState::Sent);
    ok.provider_message_id = Some("bulk-1".into());
    let mut bad = Change::to(ids[1], MessageState::Failed);
    bad.error = Some(("403".into(), "Insufficient Credits".into()));
    let test_sent = Change::to(ids[2], MessageState::Sent);
    ledger.transition(&[ok, bad, test_sent]).unwrap();

    let w = plan(
        welcome.id,
        vec![message(
            5,
            "ann@example.com",
            Channel::Email,
            MessageType::Message,
        )],
        now - Duration::days(3),
    );
    ledger.finish_planning(welcome.id).unwrap();
    ledger
        .transition(&[Change::to(w[0], MessageState::Sending)])
        .unwrap();
    ledger
        .transition(&[Change::to(w[0], MessageState::Sent)])
        .unwrap();

    plan(
        maintenance.id,
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
        old.id,
        vec![message(
            1,
            "+27821234567",
            Channel::Sms,
            MessageType::Message,
        )],
        now - Duration::days(40),
    );
    ledger.finish_planning(old.id).unwrap();
    ledger.cancel(old.id).unwrap();
    ledger.flush().unwrap();
    ledger.verify().unwrap();
    Fixture {
        project,
        reminder: reminder.id,
        welcome: welcome.id,
        maintenance: maintenance.id,
        old: old.id,
    }
}

fn csv_rows(text: &str) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().iter().map(String::from).collect();
    (header, r.records().map(Result::unwrap).collect())
}

#[test]
fn history_lists_runs_by_status_period_and_job() {
    let f = fixture();
    let p = &f.project;
    let all = p.crier(&["history"]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert!(lines[0].starts_with("RUN"));
    // Newest first.
    assert!(lines[1].starts_with(&f.maintenance.to_string()));
    assert!(lines[2].starts_with(&f.reminder.to_string()));
    assert!(all.stdout.contains("4 runs"), "{}", all.stdout);

    let errors = p.crier(&["history", "--status", "sent_with_error", "--format", "csv"]);
    let (header, rows) = csv_rows(&errors.stdout);
    assert_eq!(&header[..3], ["run_id", "job", "status"]);
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][0], f.reminder.to_string());
    assert_eq!(&rows[0][2], "sent_with_error");

    let processing = p.crier(&["history", "--status", "processing", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&processing.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["id"], f.maintenance.to_string());
    assert_eq!(runs[0]["counters"]["queued"], 5);

    let sent = p.crier(&["history", "--status", "sent", "--format", "csv"]);
    assert_eq!(&csv_rows(&sent.stdout).1[0][0], f.welcome.to_string());
    let cancelled = p.crier(&["history", "--status", "cancelled", "--format", "csv"]);
    assert_eq!(&csv_rows(&cancelled.stdout).1[0][0], f.old.to_string());

    let today = p.crier(&["history", "--period", "today", "--format", "csv"]);
    let ids: Vec<String> = csv_rows(&today.stdout)
        .1
        .iter()
        .map(|r| r[0].to_string())
        .collect();
    assert!(ids.contains(&f.reminder.to_string()) && !ids.contains(&f.welcome.to_string()));
    let week = p.crier(&["history", "--period", "last-7-days", "--format", "csv"]);
    assert_eq!(csv_rows(&week.stdout).1.len(), 3);
    let month = p.crier(&[
        "history",
        "--period",
        "last-30-days",
        "--job",
        "payment-reminder",
        "--format",
        "csv",
    ]);
    let rows = csv_rows(&month.stdout).1;
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][0], f.reminder.to_string());
    let from = (Utc::now() - Duration::days(60))
        .format("%Y-%m-%d")
        .to_string();
    let to = (Utc::now() - Duration::days(20))
        .format("%Y-%m-%d")
        .to_string();
    let custom = p.crier(&["history", "--from", &from, "--to", &to, "--format", "csv"]);
    assert_eq!(&csv_rows(&custom.stdout).1[0][0], f.old.to_string());
}

#[test]
fn show_recipients_and_csv_round_trip() {
    let f = fixture();
    let p = &f.project;
    let run = f.reminder.to_string();
    let show = p.crier(&["history", "show", &run]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert!(
        show.stdout.contains("status:    sent_with_error"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("failed       1"), "{}", show.stdout);
    assert!(show.stdout.contains("skipped      1"), "{}", show.stdout);

    let export = p.crier(&["history", "recipients", &run, "--format", "csv"]);
    assert_eq!(export.code, 0, "{}", export.stderr);
    let (header, rows) = csv_rows(&export.stdout);
    assert_eq!(header.len(), crier::history::export::MESSAGE_COLUMNS.len());
    assert_eq!(rows.len(), 4);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    // Every awkward character survives the round trip through the csv crate.
    assert!(rows.iter().all(|r| &r[col("body")] == BODY));
    assert_eq!(&rows[0][col("state")], "sent");
    assert_eq!(&rows[0][col("provider_message_id")], "bulk-1");
    assert_eq!(&rows[0][col("job")], "payment-reminder");
    assert_eq!(&rows[1][col("error_text")], "Insufficient Credits");
    assert_eq!(&rows[3][col("reason")], "invalid_phone");
    let created = &rows[0][col("created_at")];
    assert!(
        created.ends_with('Z') && created.len() == 24,
        "ISO 8601 UTC: {created}"
    );

    let failed = p.crier(&[
        "history",
        "recipients",
        &run,
        "--state",
        "failed",
        "--format",
        "csv",
    ]);
    let rows = csv_rows(&failed.stdout).1;
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][col("address")], "+27831234567");
}

#[test]
fn delete_purge_and_cancel() {
    let f = fixture();
    let p = &f.project;
    let welcome = f.welcome.to_string();
    let removed = p.crier(&["history", "delete", &welcome]);
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    let listed = p.crier(&["history", "--format", "csv"]);
    assert!(!listed.stdout.contains(&welcome), "removed runs are hidden");
    let audit = p.crier(&["history", "--status", "removed", "--format", "csv"]);
    assert!(audit.stdout.contains(&welcome));

    let refused = p.crier(&["history", "delete", &welcome, "--purge"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("add --yes"), "{}", refused.stderr);
    assert_eq!(
        p.crier(&["history", "show", &welcome]).code,
        0,
        "still there"
    );
    let purged = p.crier(&["history", "delete", &welcome, "--purge", "--yes"]);
    assert_eq!(purged.code, 0, "{}", purged.stderr);
    let gone = p.crier(&["history", "show", &welcome]);
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr.contains(&format!("no run with id {welcome}")),
        "{}",
        gone.stderr
    );

    let maintenance = f.maintenance.to_string();
    let cancel = p.crier(&["history", "cancel", &maintenance]);
    assert_eq!(cancel.code, 0, "{}", cancel.stderr);
    assert!(
        cancel
            .stdout
            .contains("5 queued messages cancelled; status cancelled"),
        "{}",
        cancel.stdout
    );
    let states = p.crier(&[
        "history",
        "recipients",
        &maintenance,
        "--state",
        "cancelled",
        "--format",
        "csv",
    ]);
    assert_eq!(csv_rows(&states.stdout).1.len(), 5);
}

#[test]
fn logs_filter_by_channel_state_type_phone_and_recipient() {
    let f = fixture();
    let p = &f.project;
    let count = |args: &[&str]| {
        let mut full = vec!["logs", "--format", "csv"];
        full.extend_from_slice(args);
        let run = p.crier(&full);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        csv_rows(&run.stdout).1
    };
    assert_eq!(count(&[]).len(), 11);
    assert_eq!(count(&["--channel", "email"]).len(), 1);
    assert_eq!(count(&["--channel", "sms", "--state", "failed"]).len(), 1);
    assert_eq!(count(&["--type", "test"]).len(), 1);
    // A local number finds the E.164 address, in every run it appears in.
    let by_phone = count(&["--phone", "082 123 4567"]);
    assert_eq!(by_phone.len(), 2);
    assert_eq!(
        count(&["--phone", "082 123 4567", "--period", "today"]).len(),
        1
    );
    assert_eq!(count(&["--recipient", "5"]).len(), 1);
    assert_eq!(count(&["--recipient", "lead:5"]).len(), 0);
    assert_eq!(count(&["--period", "today", "--state", "queued"]).len(), 5);
    assert_eq!(
        count(&["--run", &f.reminder.to_string(), "--state", "skipped"]).len(),
        1
    );
    let table = p.crier(&["logs", "--state", "failed"]);
    assert!(
        table.stdout.contains("Insufficient Credits"),
        "{}",
        table.stdout
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let f = fixture();
    let p = &f.project;
    let cases: &[(&[&str], &str)] = &[
        (&["history", "show", "nope"], "`nope` is not a run id"),
        (
            &["history", "show", &RunId::new().to_string()],
            "no run with id",
        ),
        (&["history", "--status", "done"], "unknown status `done`"),
        (
            &["history", "--period", "fortnight"],
            "unknown period `fortnight`",
        ),
        (
            &["history", "--from", "2026-13-01"],
            "`2026-13-01` is not a date",
        ),
        (
            &["history", "--from", "2026-11-05", "--to", "2026-11-01"],
            "is not before --to",
        ),
        (
            &["history", "--period", "today", "--from", "2026-11-01"],
            "not both",
        ),
        (&["logs", "--state", "lost"], "unknown message state `lost`"),
        (&["logs", "--channel", "fax"], "unknown channel `fax`"),
        (&["logs", "--phone", "12"], "not a valid phone number"),
        (&["logs", "--recipient", "abc"], "not a recipient id"),
    ];
    for (args, expected) in cases {
        let run = p.crier(args);
        assert_eq!(run.code, 1, "{args:?}");
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }
}

/// A run whose message, subject, error text and reason a spreadsheet would run as
/// formulas, added to the fixture's store.
fn add_formula_run(p: &Project) -> RunId {
    let store = open(&p.store_config()).unwrap();
    let ledger = Ledger::new(store.as_ref());
    let run = ledger
        .create_run(NewRun {
            job: "formulas".into(),
            trigger: Trigger::Manual,
            channels: vec![Channel::Email],
            provider: "smtp".into(),
            body: "x".into(),
            subject: None,
        })
        .unwrap();
    let mut m = message(1042, "+27821234567", Channel::Sms, MessageType::Message);
    m.subject = Some("-5".into());
    m.body = "=HYPERLINK(\"x\")".into();
    let ids = ledger.plan(run.id, vec![m]).unwrap();
    ledger.finish_planning(run.id).unwrap();
    ledger
        .transition(&[Change::to(ids[0], MessageState::Sending)])
        .unwrap();
    let mut failed = Change::to(ids[0], MessageState::Failed);
    failed.error = Some(("-1".into(), "@SUM(A1:A9)".into()));
    ledger.transition(&[failed]).unwrap();
    ledger.flush().unwrap();
    run.id
}

#[test]
fn csv_exports_neutralise_formulas_keep_ids_phones_and_times_and_end_rows_in_crlf() {
    let f = fixture();
    let p = &f.project;
    let run = add_formula_run(p).to_string();
    let export = |args: &[&str]| {
        let out = p.crier(args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(out.stdout.ends_with("\r\n"), "{:?}", out.stdout);
        // Every row ends in CRLF; a bare LF is only ever inside a quoted body.
        let rows = out.stdout.matches("\r\n").count();
        assert_eq!(rows, csv_rows(&out.stdout).1.len() + 1, "{:?}", out.stdout);
        let (header, rows) = csv_rows(&out.stdout);
        let run_id = header.iter().position(|h| h == "run_id").unwrap();
        let row = rows.iter().find(|r| r[run_id] == run).unwrap();
        let cells: std::collections::HashMap<String, String> = header
            .iter()
            .cloned()
            .zip(row.iter().map(String::from))
            .collect();
        move |name: &str| cells[name].clone()
    };
    for args in [
        &["history", "recipients", &run, "--format", "csv"][..],
        &["logs", "--format", "csv"][..],
    ] {
        let cell = export(args);
        assert_eq!(cell("body"), "'=HYPERLINK(\"x\")", "{args:?}");
        assert_eq!(cell("subject"), "'-5");
        assert_eq!(cell("error_text"), "'@SUM(A1:A9)");
        assert_eq!(cell("address"), "+27821234567");
        assert_eq!(
            cell("error_code"),
            "-1",
            "a provider's code is an identifier"
        );
        assert!(cell("message_id").starts_with(&run));
        assert_eq!(cell("recipient_id"), "1042");
        assert!(cell("created_at").ends_with('Z'));
        assert_eq!(cell("created_at").len(), 24);
    }
    for args in [
        &["history", "recipients", &run, "--format", "csv", "--raw"][..],
        &["logs", "--format", "csv", "--raw"][..],
    ] {
        let cell = export(args);
        assert_eq!(cell("body"), "=HYPERLINK(\"x\")", "{args:?}");
        assert_eq!(cell("subject"), "-5");
        assert_eq!(cell("error_text"), "@SUM(A1:A9)");
    }
    // Runs' rows end in CRLF too, and scheduled runs carry their fire instant.
    let runs = p.crier(&["history", "--format", "csv"]);
    assert!(runs.stdout.ends_with("\r\n"));
    let (header, rows) = csv_rows(&runs.stdout);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for r in &rows {
        let scheduled = &r[col("scheduled_at")];
        match &r[col("trigger")] {
            "schedule" => assert!(scheduled.ends_with('Z'), "{r:?}"),
            _ => assert_eq!(scheduled, "", "{r:?}"),
        }
    }
}

#[test]
fn logs_hide_the_messages_of_removed_runs_unless_asked_for() {
    let f = fixture();
    let p = &f.project;
    let welcome = f.welcome.to_string();
    let count = |args: &[&str]| {
        let mut full = vec!["logs", "--format", "csv"];
        full.extend_from_slice(args);
        let run = p.crier(&full);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        csv_rows(&run.stdout).1.len()
    };
    assert_eq!(count(&["--channel", "email"]), 1);
    assert_eq!(p.crier(&["history", "delete", &welcome]).code, 0);
    assert_eq!(count(&[]), 10, "the removed run's message is hidden");
    assert_eq!(count(&["--channel", "email"]), 0);
    assert_eq!(count(&["--recipient", "5"]), 0);
    assert_eq!(count(&["--include-removed"]), 11);
    assert_eq!(count(&["--channel", "email", "--include-removed"]), 1);
    // Naming the run is asking for it, as `history show` does.
    assert_eq!(count(&["--run", &welcome]), 1);
}

/// The ```sql blocks of the README's "The history in SQL" section, in order.
fn readme_queries() -> Vec<String> {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let start = readme
        .find("### The history in SQL")
        .expect("the README documents the history's tables");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |i| i + 4)];
    section
        .split("```sql\n")
        .skip(1)
        .map(|block| block[..block.find("```").unwrap()].to_string())
        .collect()
}

/// Rows of `sql` on the fixture's history, through Python's `sqlite3`, read-only.
fn sqlite_rows(p: &Project, sql: &str) -> Vec<serde_json::Value> {
    let python = std::env::var("CRIER_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import json, sqlite3, sys\n\
                  db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)\n\
                  print(json.dumps(db.execute(sys.argv[2]).fetchall()))\n";
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(p.path().join("data/history.sqlite3"))
        .arg(sql)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn the_readmes_example_queries_answer_on_a_real_history() {
    let f = fixture();
    // Each example comes in both dialects: SQLite's, then PostgreSQL's (`-- PostgreSQL`).
    let (postgres, sqlite): (Vec<String>, Vec<String>) = readme_queries()
        .into_iter()
        .partition(|q| q.starts_with("-- PostgreSQL"));
    assert_eq!(
        (sqlite.len(), postgres.len()),
        (4, 4),
        "{sqlite:?} {postgres:?}"
    );
    // Rows as text cells, whichever database answers.
    let rows: Vec<Vec<Vec<String>>> = match &f.project.pg_url {
        None => sqlite
            .iter()
            .map(|q| {
                sqlite_rows(&f.project, q)
                    .into_iter()
                    .map(|row| {
                        row.as_array()
                            .unwrap()
                            .iter()
                            .map(|v| match v {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect(),
        Some(url) => {
            let database = url.rsplit('/').next().unwrap();
            postgres
                .iter()
                .map(|q| {
                    let out = common::pg::server()
                        .psql(database, &format!("SET search_path TO crier; {q}"));
                    out.lines()
                        .filter(|l| !l.is_empty())
                        .map(|l| l.split('|').map(str::to_string).collect())
                        .collect()
                })
                .collect()
        }
    };
    let [_by_location, failed, missed, per_day] = &rows[..] else {
        unreachable!()
    };
    // Last month's reminder: the fixture's runs are from this month and 40 days ago, so
    // the rows depend on the date; the query must run (it did, above).
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0][0], format!("{}-000001", f.reminder));
    assert_eq!(failed[0][4], "Insufficient Credits");
    assert_eq!(
        missed,
        &vec![
            vec!["2", "+27831234567", "failed", "Insufficient Credits"],
            vec!["4", "12345", "skipped", "invalid_phone"],
        ]
    );
    let total: u64 = per_day.iter().map(|r| r[2].parse::<u64>().unwrap()).sum();
    // Everything but the 40-day-old run's one message.
    assert_eq!(total, 10, "{per_day:?}");
}
