//! `crier jobs` and `crier jobs next` end to end: fire times people read (offset and
//! zone abbreviation) and JSON scripts read (RFC 3339).

mod common;

use chrono::{DateTime, Timelike};
use common::Project;

fn project() -> Project {
    let p = Project::new();
    p.write("crier.yaml", "timezone: Africa/Johannesburg\n");
    p.write(
        "jobs/summer.yaml",
        "send_to: sms\nmessage: hi\nrecipients: {}\nschedule:\n  at: \"2099-07-01T09:00\"\n  timezone: Europe/Berlin\n",
    );
    p.write(
        "jobs/nightly.yaml",
        "send_to: sms\nmessage: hi\nrecipients: {}\nschedule:\n  cron: \"0 3 * * *\"\n  timezone: Europe/Berlin\n",
    );
    p.write(
        "jobs/india.yaml",
        "send_to: sms\nmessage: hi\nrecipients: {}\nschedule:\n  at: \"2099-01-15T17:30\"\n  timezone: Asia/Kolkata\n",
    );
    p.write(
        "jobs/adhoc.yaml",
        "send_to: sms\nmessage: hi\nrecipients: {}\n",
    );
    p
}

#[test]
fn jobs_next_prints_the_offset_with_the_zone_abbreviation() {
    let p = project();
    let summer = p.crier(&["jobs", "next", "summer"]);
    assert_eq!(summer.code, 0, "{}", summer.stderr);
    assert_eq!(summer.stdout, "2099-07-01 09:00:00 +02:00 CEST\n");
    let india = p.crier(&["jobs", "next", "india"]);
    assert_eq!(india.stdout, "2099-01-15 17:30:00 +05:30 IST\n");
    let nightly = p.crier(&["jobs", "next", "nightly", "--count", "3"]);
    let lines: Vec<&str> = nightly.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", nightly.stdout);
    for line in lines {
        assert!(
            line.ends_with(" 03:00:00 +01:00 CET") || line.ends_with(" 03:00:00 +02:00 CEST"),
            "{line}"
        );
    }
    // The listing and validate's "next" line use the same form.
    let table = p.crier(&["jobs"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("2099-07-01 09:00:00 +02:00 CEST"),
        "{}",
        table.stdout
    );
    let validate = p.crier(&["validate"]);
    assert!(
        validate
            .stdout
            .contains("next 2099-07-01 09:00:00 +02:00 CEST"),
        "{}",
        validate.stdout
    );
}

#[test]
fn jobs_and_jobs_next_print_json_with_rfc3339_instants() {
    let p = project();
    let next = p.crier(&[
        "jobs", "next", "nightly", "--count", "2", "--format", "json",
    ]);
    assert_eq!(next.code, 0, "{}", next.stderr);
    let v: serde_json::Value = serde_json::from_str(&next.stdout).unwrap();
    assert_eq!(v["job"], "nightly");
    assert_eq!(v["time_zone"], "Europe/Berlin");
    let times = v["next"].as_array().unwrap();
    assert_eq!(times.len(), 2);
    for t in times {
        let t = DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap();
        assert_eq!((t.hour(), t.minute()), (3, 0), "{t}");
        assert!([3600, 7200].contains(&t.offset().local_minus_utc()), "{t}");
    }
    let summer = p.crier(&["jobs", "next", "summer", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&summer.stdout).unwrap();
    assert_eq!(v["next"], serde_json::json!(["2099-07-01T09:00:00+02:00"]));

    let all = p.crier(&["jobs", "--format", "json"]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&all.stdout).unwrap();
    let job = |name: &str| jobs.iter().find(|j| j["job"] == name).unwrap().clone();
    assert_eq!(job("summer")["next"], "2099-07-01T09:00:00+02:00");
    assert_eq!(job("india")["next"], "2099-01-15T17:30:00+05:30");
    assert_eq!(job("summer")["time_zone"], "Europe/Berlin");
    assert_eq!(job("summer")["last_run"], serde_json::Value::Null);
    assert_eq!(job("adhoc")["schedule"], serde_json::Value::Null);
    assert_eq!(job("adhoc")["next"], serde_json::Value::Null);
    DateTime::parse_from_rfc3339(job("nightly")["next"].as_str().unwrap()).unwrap();
}

#[test]
fn a_bad_format_is_a_usage_error() {
    let p = project();
    let csv = p.crier(&["jobs", "next", "nightly", "--format", "csv"]);
    assert_eq!(csv.code, 2, "{}", csv.stderr);
    assert!(csv.stderr.contains("invalid value 'csv'"), "{}", csv.stderr);
}

/// The README's quick start, as a newcomer types it (less `cargo run --release --`), in a
/// copy of the repository's `crier.yaml`, `jobs/` and `scripts/`: it sends the payment
/// reminder's 26 messages to the outbox and exits 0, whatever the hour (the job has a
/// send window; the command says `--ignore-window`).
#[test]
fn the_readmes_quick_start_sends_the_payment_reminder_at_any_hour() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let start = readme
        .find("## Quick start")
        .expect("a Quick start section");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").unwrap() + 6..];
    let line = block[..block.find("```").unwrap()].trim();
    let p = Project::new();
    for dir in ["jobs", "scripts"] {
        copy_tree(&common::root().join(dir), &p.path().join(dir));
    }
    p.write(
        "crier.yaml",
        std::fs::read(common::root().join("crier.yaml")).unwrap(),
    );
    let commands: Vec<&str> = line.split("&&").map(str::trim).collect();
    assert_eq!(commands.len(), 2, "{line}");
    let mut last = None;
    for command in commands {
        let args = command
            .strip_prefix("cargo run --release -- ")
            .unwrap_or_else(|| panic!("`{command}` is not `cargo run --release -- …`"));
        let args: Vec<&str> = args.split_whitespace().collect();
        let out = p.crier(&args);
        assert_eq!(out.code, 0, "{command}:\n{}\n{}", out.stdout, out.stderr);
        last = Some(out);
    }
    let sent = last.unwrap();
    assert!(sent.stdout.contains("26 sent, 0 failed"), "{}", sent.stdout);
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
