//! `crier send` end to end through the `file` outbox: confirmation, dry run, the run and
//! its messages in the history, send-as-test.

mod common;

use common::Project;

fn project() -> Project {
    let p = Project::new();
    p.write(
        "people.csv",
        "id,name,status,phone,email,location\n\
         1,Ann,active,082 123 4567,ann@example.com,Cape Town\n\
         2,Ben,active,083 123 4567,,Cape Town\n\
         3,Bad Phone,active,12345,bad@example.com,Cape Town\n",
    );
    assert_eq!(p.crier(&["import", "people.csv"]).code, 0);
    p.write(
        "jobs/sms.yaml",
        "send_to: sms\nmessage: \"Hi {{ customer.name }}\"\nrecipients: {}\n",
    );
    p
}

fn outbox(p: &Project, channel: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p.path().join(format!("data/outbox/{channel}.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn refuses_without_a_terminal_and_dry_run_sends_nothing() {
    let p = project();
    let refused = p.crier(&["send", "jobs/sms.yaml"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("refusing to send 2 messages without confirmation"),
        "{}",
        refused.stderr
    );
    let dry = p.crier(&["send", "jobs/sms.yaml", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains("messages: 2 to send, 1 skipped (invalid_phone 1)"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("dry run: nothing was sent"));
    assert!(outbox(&p, "sms").is_empty());
    assert!(p.crier(&["history"]).stdout.contains("0 runs"));
}

#[test]
fn sends_records_every_message_and_writes_the_outbox() {
    let p = project();
    let run = p.crier(&["send", "jobs/sms.yaml", "--yes"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("(sent): 2 sent, 0 failed, 1 skipped (invalid_phone 1); 2 SMS parts"),
        "{}",
        run.stdout
    );
    // Messages in flight at once may reach the provider in either order (PostgreSQL
    // records with two writers): each is looked up by its recipient.
    let mut lines = outbox(&p, "sms");
    lines.sort_by_key(|l| l["to"].as_str().map(String::from));
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["to"], "+27821234567");
    assert_eq!(lines[0]["body"], "Hi Ann");

    let csv = p.crier(&["logs", "--format", "csv"]).stdout;
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let sent: Vec<_> = rows.iter().filter(|r| &r[col("state")] == "sent").collect();
    assert_eq!(sent.len(), 2);
    // The outbox line and the ledger agree on the message id.
    assert!(
        sent.iter()
            .any(|r| r[col("message_id")] == *lines[0]["id"].as_str().unwrap())
    );
    assert!(
        sent.iter()
            .all(|r| &r[col("attempts")] == "1" && &r[col("encoding")] == "gsm7")
    );
    let skipped = rows.iter().find(|r| &r[col("state")] == "skipped").unwrap();
    assert_eq!(&skipped[col("reason")], "invalid_phone");
    let history = p.crier(&["history", "--format", "csv"]).stdout;
    assert!(
        history.lines().nth(1).unwrap().contains(",sms-") || history.contains(",sent,manual,"),
        "{history}"
    );
}

#[test]
fn send_as_test_goes_to_one_address_only() {
    let p = project();
    let run = p.crier(&[
        "send",
        "jobs/sms.yaml",
        "--test-to",
        "084 555 0000",
        "--recipient",
        "2",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = outbox(&p, "sms");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["to"], "+27845550000");
    assert_eq!(lines[0]["body"], "Hi Ben");
    let tests = p
        .crier(&["logs", "--type", "test", "--format", "csv"])
        .stdout;
    assert_eq!(tests.lines().count(), 2, "{tests}");
    let wrong = p.crier(&["send", "jobs/sms.yaml", "--test-to", "ann@example.com"]);
    assert_eq!(wrong.code, 1);
    assert!(
        wrong
            .stderr
            .contains("is an email address but the job sends sms"),
        "{}",
        wrong.stderr
    );
}

#[test]
fn outside_its_send_window_a_run_pauses_and_resumes_later() {
    let p = project();
    // A window that is closed now: it opens in two hours, for one hour, every day.
    let now = chrono::Utc::now();
    let from = (now + chrono::Duration::hours(2))
        .format("%H:%M")
        .to_string();
    let to = (now + chrono::Duration::hours(3))
        .format("%H:%M")
        .to_string();
    p.write(
        "jobs/windowed.yaml",
        format!(
            "send_to: sms\nmessage: \"Hi {{{{ customer.name }}}}\"\nrecipients: {{}}\nschedule:\n  cron: \"0 9 * * *\"\n  timezone: UTC\n  window: {{ from: \"{from}\", to: \"{to}\" }}\n"
        ),
    );
    let run = p.crier(&["send", "jobs/windowed.yaml", "--yes"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("paused: outside the send window (it opens "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("{from}:00 +00:00 UTC")),
        "{}",
        run.stdout
    );
    assert!(outbox(&p, "sms").is_empty());
    let history = p.crier(&["history", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(runs[0]["status"], "processing");
    let id = runs[0]["id"].as_str().unwrap().to_string();
    // Send-as-test ignores the window: a person asked for it now.
    let test = p.crier(&["send", "jobs/windowed.yaml", "--test-to", "082 999 0000"]);
    assert_eq!(test.code, 0, "{}", test.stdout);
    assert_eq!(outbox(&p, "sms").len(), 1);
    // With the window gone from the job, --resume sends what was planned, once.
    p.write(
        "jobs/windowed.yaml",
        "send_to: sms\nmessage: \"Hi {{ customer.name }}\"\nrecipients: {}\nschedule:\n  cron: \"0 9 * * *\"\n  timezone: UTC\n",
    );
    let resumed = p.crier(&["send", "jobs/windowed.yaml", "--yes", "--resume", &id]);
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    let sent: Vec<_> = outbox(&p, "sms");
    assert_eq!(sent.len(), 3, "{sent:?}");
    let history = p.crier(&["history", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    let resumed_run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(resumed_run["status"], "sent", "{resumed_run}");
    assert_eq!(resumed_run["counters"]["sent"], 2);
    // A finished run cannot be resumed again.
    let again = p.crier(&["send", "jobs/windowed.yaml", "--yes", "--resume", &id]);
    assert_eq!(again.code, 1);
    assert!(
        again
            .stderr
            .contains("only a processing run can be resumed"),
        "{}",
        again.stderr
    );
}

#[test]
fn ignore_window_sends_a_windowed_job_now_and_only_that_run() {
    let p = project();
    // Closed now (it opens in two hours), for the job and for each recipient.
    let now = chrono::Utc::now();
    let from = (now + chrono::Duration::hours(2))
        .format("%H:%M")
        .to_string();
    let to = (now + chrono::Duration::hours(3))
        .format("%H:%M")
        .to_string();
    for per_recipient in [false, true] {
        p.write(
            "jobs/windowed.yaml",
            format!(
                "send_to: sms\nmessage: \"Hi {{{{ customer.name }}}}\"\nrecipients: {{}}\nschedule:\n  cron: \"0 9 * * *\"\n  timezone: UTC\n  window: {{ from: \"{from}\", to: \"{to}\", per_recipient: {per_recipient} }}\n"
            ),
        );
        let before = outbox(&p, "sms").len();
        let now = p.crier(&["send", "jobs/windowed.yaml", "--yes", "--ignore-window"]);
        assert_eq!(now.code, 0, "{}\n{}", now.stdout, now.stderr);
        assert!(now.stdout.contains("2 sent, 0 failed"), "{}", now.stdout);
        assert_eq!(outbox(&p, "sms").len(), before + 2);
        // The next run without the flag keeps to the window.
        let later = p.crier(&["send", "jobs/windowed.yaml", "--yes"]);
        assert_eq!(later.code, 1, "{}", later.stdout);
        assert!(
            later.stdout.contains("outside the send window"),
            "{}",
            later.stdout
        );
        assert_eq!(outbox(&p, "sms").len(), before + 2);
    }
}

#[test]
fn a_per_recipient_window_holds_back_only_recipients_whose_own_window_is_closed() {
    let p = project();
    // Open now in UTC (an hour either side), closed six hours east (Asia/Dhaka, UTC+6,
    // no daylight saving time).
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    let to = (now + chrono::Duration::hours(1))
        .format("%H:%M")
        .to_string();
    p.write(
        "zoned.csv",
        "id,name,status,phone,timezone\n11,Uma,active,082 555 1011,UTC\n12,Dev,active,082 555 1012,Asia/Dhaka\n13,Noor,active,082 555 1013,Asia/Dhaka\n14,Zed,active,082 555 1014,\n",
    );
    assert_eq!(p.crier(&["import", "zoned.csv"]).code, 0);
    p.write(
        "jobs/zoned.yaml",
        format!(
            "send_to: sms\nmessage: \"Hi {{{{ customer.name }}}}\"\nrecipients: {{}}\nschedule:\n  cron: \"0 9 * * *\"\n  timezone: UTC\n  window: {{ from: \"{from}\", to: \"{to}\", per_recipient: true }}\n"
        ),
    );
    let run = p.crier(&["send", "jobs/zoned.yaml", "--yes"]);
    // Uma (UTC) and Zed (no zone: the job's) now; Dev and Noor wait for their morning.
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let sent: Vec<String> = outbox(&p, "sms")
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    assert!(sent.contains(&"Hi Uma".to_string()), "{sent:?}");
    assert!(sent.contains(&"Hi Zed".to_string()), "{sent:?}");
    assert!(
        !sent.iter().any(|b| b == "Hi Dev" || b == "Hi Noor"),
        "{sent:?}"
    );
    assert!(
        run.stdout
            .contains("paused: outside the send window of 2 recipients in their own time zones"),
        "{}",
        run.stdout
    );
    // Reported in the job's zone: `from` in Dhaka is six hours earlier in UTC.
    let opens_utc = (chrono::NaiveTime::parse_from_str(&from, "%H:%M").unwrap()
        - chrono::Duration::hours(6))
    .format("%H:%M")
    .to_string();
    assert!(
        run.stdout.contains(&format!("{opens_utc}:00 +00:00 UTC")),
        "{}",
        run.stdout
    );
    let history = p.crier(&["history", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    let zoned = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["job"] == "zoned")
        .unwrap();
    assert_eq!(zoned["status"], "processing", "{zoned}");
    assert_eq!(zoned["counters"]["queued"], 2, "{zoned}");
}
