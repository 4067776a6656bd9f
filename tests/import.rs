//! `crier import` and `crier recipients` end to end, on real sled files in a temp dir.

mod common;

use common::{Project, root};

/// Every trap a real export has: BOM, CRLF, `;`, a quoted newline and quoted `;`,
/// accents and emoji, duplicate ids, invalid phones, an unknown status, a missing id,
/// a login-only row, extra columns.
const NASTY: &str = "\u{feff}ID;Portal login;Full name;Status;Phone number;Category;Location;Tariff plans;Overdue days;Notes\r\n\
1;000001;Zoë Müller 🎉;Active;082 123 4567;Individual;Cape Town;Internet: Fiber 100;14;\"line one\r\nline two; still notes\"\r\n\
2;000002;José Naidoo;blocked;+27 21 555 0100;Business;Durban;Internet: Fiber 50 | Voice: Basic;0;\r\n\
3;000003;Bad Status;actve;082 000 1111;Individual;Durban;;0;\r\n\
;;No Id Or Login;active;082 000 2222;;;;;\r\n\
4;000004;Invalid Phone;new;12345;Individual;Cape Town;;0;\r\n\
2;000002;José Naidoo Updated;active;+27 21 555 0100;Business;Durban;Internet: Fiber 50;0;dup\r\n\
;000099;Login Only;active;+44 7911 123456;;London;;;\r\n\
5;000005;Alien;active;;Martian;Cape Town;;;\r\n";

fn recipients_json(p: &Project, args: &[&str]) -> Vec<serde_json::Value> {
    let mut full = vec!["recipients", "--format", "json"];
    full.extend_from_slice(args);
    let run = p.crier(&full);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

#[test]
fn nasty_csv_imports_what_it_can_and_rejects_the_rest_with_reasons() {
    let p = Project::new();
    p.write("nasty.csv", NASTY);
    let run = p.crier(&["import", "nasty.csv", "--rejects", "rejects.csv"]);
    assert_eq!(
        run.code, 1,
        "rejected rows make the import fail:\n{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("8 rows: 4 inserted, 1 updated, 0 unchanged, 3 rejected"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1 invalid phone numbers"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("1 repeated ids"), "{}", run.stdout);
    assert!(
        run.stderr.contains(
            "line 5: rejected: Status: `actve`: expected one of new, active, inactive, blocked"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("line 6: rejected: row has neither an id nor a login"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("line 10: rejected: Category: `Martian`"),
        "{}",
        run.stderr
    );

    // The rejects file is a CSV with the original columns plus line and error.
    let mut rejects = csv::Reader::from_path(p.path().join("rejects.csv")).unwrap();
    let header: Vec<String> = rejects
        .headers()
        .unwrap()
        .iter()
        .map(String::from)
        .collect();
    assert_eq!(header.first().map(String::as_str), Some("ID"));
    assert_eq!(&header[header.len() - 2..], ["line", "error"]);
    let rows: Vec<csv::StringRecord> = rejects.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][2], "Bad Status");
    assert_eq!(&rows[0][header.len() - 2], "5");

    let all = recipients_json(&p, &[]);
    assert_eq!(all.len(), 4);
    let zoe = &all[0];
    assert_eq!(zoe["name"], "Zoë Müller 🎉");
    assert_eq!(zoe["phone"], "+27821234567");
    assert_eq!(zoe["status"], "active");
    assert_eq!(zoe["attrs"]["notes"], "line one\r\nline two; still notes");
    assert_eq!(zoe["attrs"]["overdue_days"], "14");
    assert_eq!(zoe["tariffs"][0]["service"], "internet");
    // The later duplicate row won.
    let jose = &all[1];
    assert_eq!(jose["name"], "José Naidoo Updated");
    assert_eq!(jose["status"], "active");
    // Invalid phone: stored, raw kept, no E.164.
    let invalid = all.iter().find(|r| r["id"] == 4).unwrap();
    assert_eq!(invalid["phone_raw"], "12345");
    assert!(invalid["phone"].is_null());
    // Login-only row got an id of crier's own and is found by login.
    let login_only = all.iter().find(|r| r["login"] == "000099").unwrap();
    assert!(login_only["id"].as_u64().unwrap() >= 1_000_000_000_000);
    assert_eq!(login_only["phone"], "+447911123456");
}

#[test]
fn reimport_counts_unchanged_and_updates_by_id_or_login() {
    let p = Project::new();
    p.write(
        "a.csv",
        "id,login,name,status\n1,0001,Ann,active\n,0002,Ben,new\n",
    );
    assert_eq!(p.crier(&["import", "a.csv"]).code, 0);
    let again = p.crier(&["import", "a.csv"]);
    assert!(
        again
            .stdout
            .contains("2 rows: 0 inserted, 0 updated, 2 unchanged"),
        "{}",
        again.stdout
    );
    p.write(
        "b.csv",
        "login,name,status\n0001,Ann Smith,active\n0002,Ben,active\n",
    );
    let run = p.crier(&["import", "b.csv"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("2 rows: 0 inserted, 2 updated"),
        "{}",
        run.stdout
    );
    let all = recipients_json(&p, &[]);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["name"], "Ann Smith");
    assert_eq!(all[0]["id"], 1);
}

#[test]
fn strict_import_with_one_bad_row_writes_nothing() {
    let p = Project::new();
    p.write("nasty.csv", NASTY);
    let run = p.crier(&["import", "nasty.csv", "--strict", "--rejects", "r.csv"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("strict: 3 of 8 rows rejected; nothing was imported"),
        "{}",
        run.stderr
    );
    assert!(recipients_json(&p, &[]).is_empty());
    assert!(
        std::fs::read_to_string(p.path().join("r.csv"))
            .unwrap()
            .contains("Bad Status")
    );
}

#[test]
fn dry_run_reports_without_writing() {
    let p = Project::new();
    p.write("a.csv", "id,name,status\n1,Ann,active\n2,Ben,active\n");
    let run = p.crier(&["import", "a.csv", "--dry-run"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("would import a.csv (customers): 2 rows: 2 inserted"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("dry run: nothing was written"));
    assert!(recipients_json(&p, &[]).is_empty());
}

#[test]
fn delimiter_kind_and_region_flags() {
    let p = Project::new();
    p.write("leads.tsv", "id\tname\tphone\n7\tLee\t020 7183 8750\n");
    let run = p.crier(&[
        "import",
        "leads.tsv",
        "--kind",
        "lead",
        "--default-region",
        "GB",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let leads = recipients_json(&p, &["--kind", "lead"]);
    assert_eq!(leads[0]["phone"], "+442071838750");
    assert!(
        recipients_json(&p, &[]).is_empty(),
        "customers and leads are apart"
    );
    let forced = p.crier(&["import", "leads.tsv", "--delimiter", ";", "--dry-run"]);
    assert_eq!(
        forced.code, 1,
        "a wrong forced delimiter finds no id column"
    );
    assert!(
        forced.stderr.contains("no `id` or `login` column"),
        "{}",
        forced.stderr
    );
    assert_eq!(
        p.crier(&["import", "leads.tsv", "--default-region", "XX"])
            .code,
        1
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let p = Project::new();
    let run = p.crier(&["import", "nope.csv"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("cannot read nope.csv"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_store_held_by_another_process_is_reported_not_corrupted() {
    if common::on_postgres() {
        // sled's one-process lock; PostgreSQL is shared by design.
        return;
    }
    let p = Project::new();
    p.write("a.csv", "id,name\n1,Ann\n");
    assert_eq!(p.crier(&["import", "a.csv"]).code, 0);
    // Hold the store from this test process, as a running daemon would.
    let held = crier::store::open(&crier::store::StoreConfig {
        path: p.path().join("data/store"),
        cache_bytes: 8 << 20,
        backend: crier::store::Backend::Embedded,
        postgres: None,
    })
    .unwrap();
    let run = p.crier(&["import", "a.csv"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("in use by another crier process"),
        "{}",
        run.stderr
    );
    drop(held);
    assert_eq!(p.crier(&["recipients"]).code, 0);
}

#[test]
fn recipients_of_the_shipped_jobs_on_the_sample_data() {
    let p = Project::new();
    let csv = root().join("jobs/data/customers.csv");
    let run = p.crier(&["import", csv.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("300 rows: 300 inserted"),
        "{}",
        run.stdout
    );

    let job = root().join("jobs/payment-reminder.yaml");
    let list = recipients_json(&p, &[job.to_str().unwrap()]);
    assert!(!list.is_empty());
    assert!(
        list.iter()
            .all(|r| r["status"] == "active" && r["location"] == "Cape Town")
    );
    // Cross-check the count with an independent read of the CSV.
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let expected = reader
        .records()
        .map(Result::unwrap)
        .filter(|r| &r[2] == "active" && &r[8] == "Cape Town")
        .count();
    assert_eq!(list.len(), expected);

    // A CSV-sourced job reads its file directly, no import needed.
    let leads = root().join("jobs/lead-follow-up.yaml");
    let table = p.crier(&["recipients", leads.to_str().unwrap(), "--limit", "3"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
    assert!(table.stdout.contains("(3 shown)"), "{}", table.stdout);

    // --where and CSV output.
    let csv_out = p.crier(&[
        "recipients",
        "--where",
        "category=business",
        "--where",
        "location=durban,Cape Town",
        "--format",
        "csv",
    ]);
    assert_eq!(csv_out.code, 0);
    let mut reader = csv::Reader::from_reader(csv_out.stdout.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| &r[9] == "business" && (&r[10] == "Durban" || &r[10] == "Cape Town"))
    );
    assert!(
        csv_out
            .stderr
            .contains(&format!("{} customers", rows.len()))
    );
    assert_eq!(p.crier(&["recipients", "--where", "stauts=active"]).code, 1);
}

#[test]
fn config_show_redacts_every_secret() {
    let p = Project::new();
    p.write(
        "crier.yaml",
        "providers:\n  sms:\n    type: bulksms\n    token_id: id-1\n    token_secret: ${BULK_SECRET}\n  gw:\n    type: http\n    url: https://gw.example/send?api_key=${GW_KEY}\n    headers:\n      Authorization: Bearer ${GW_KEY}\n    payload:\n      password: ${GW_KEY}\n  mail:\n    type: smtp\n    host: localhost\n    username: u\n    password: ${SMTP_PW}\n    from: a@b.example\n",
    );
    let secrets = [
        ("BULK_SECRET", "bulk-s3cret-value"),
        ("GW_KEY", "gw-k3y-value"),
        ("SMTP_PW", "smtp-pa55-value"),
    ];
    let run = p.crier_env(&["config", "show"], &secrets);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for (_, value) in secrets {
        assert!(
            !run.stdout.contains(value) && !run.stderr.contains(value),
            "{value} leaked:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("token_secret: <redacted>"));
    assert!(run.stdout.contains("api_key=<redacted>"));
    // An unset secret is shown as unset, by its variable's name.
    let unset_secret = p.crier_env(&["config", "show"], &secrets[1..]);
    assert_eq!(unset_secret.code, 0, "{}", unset_secret.stderr);
    assert!(
        unset_secret
            .stdout
            .contains("token_secret: '<unset: BULK_SECRET>'"),
        "{}",
        unset_secret.stdout
    );
    // A variable missing from a field that is not a secret is an error naming the
    // variable and the field, never a value.
    let missing = p.crier(&["config", "show"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("providers.gw.url: environment variable `GW_KEY` is not set"),
        "{}",
        missing.stderr
    );
}

#[test]
fn logs_are_json_lines_on_stderr_when_asked() {
    let p = Project::new();
    p.write("a.csv", "id,name\n1,Ann\n");
    let run = p.crier(&["--log-format", "json", "-v", "import", "a.csv"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("Import finished"))
        .expect("an import log line");
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["fields"]["inserted"], 1);
    assert!(run.stdout.contains("1 inserted"), "results stay on stdout");
    let quiet = p.crier(&["import", "a.csv"]);
    assert!(
        quiet.stderr.is_empty(),
        "no log lines by default: {}",
        quiet.stderr
    );
}

#[test]
fn config_show_redacts_the_postgres_password_and_open_says_what_is_missing() {
    if common::on_postgres() {
        // Writes its own unreachable PostgreSQL URL; the suite's rewrite would replace it.
        return;
    }
    let p = Project::new();
    p.write(
        "crier.yaml",
        // Port 1 on loopback: nothing listens there, and nothing leaves the machine.
        "store:\n  backend: postgres\n  url: postgres://crier:hunter2@127.0.0.1:1/mail\n  pool_size: 4\n",
    );
    let show = p.crier(&["config", "show"]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert!(
        show.stdout
            .contains("postgres://crier:<redacted>@127.0.0.1:1/mail"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("pool_size: 4"), "{}", show.stdout);
    assert!(show.stdout.contains("schema: crier"), "{}", show.stdout);
    assert!(!show.stdout.contains("hunter2"), "{}", show.stdout);
    p.write("people.csv", "id,name\n1,Ann\n");
    let run = p.crier(&["import", "people.csv"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("cannot reach PostgreSQL at 127.0.0.1:1: Connection refused"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    // `backend: postgres` needs a URL, and a schema must be a plain identifier.
    p.write(
        "crier.yaml",
        "store:\n  backend: postgres\n  schema: Bad-Name\n",
    );
    let bad = p.crier(&["validate"]);
    assert_ne!(bad.code, 0);
    let text = format!("{}{}", bad.stdout, bad.stderr);
    assert!(
        text.contains("store.url: is required with `backend: postgres`"),
        "{text}"
    );
    assert!(
        text.contains("store.schema: `Bad-Name` is not a lower-case SQL identifier"),
        "{text}"
    );
}

#[test]
fn large_files_keep_file_order_across_chunks() {
    // Several thousand rows cross the parser threads' chunk boundaries: the later of two
    // rows with one id must still win, and line numbers must still be the file's.
    let p = Project::new();
    let mut csv = String::from("id,name,status\n");
    for i in 1..=5000 {
        let name = if i == 4500 {
            "Late Duplicate".to_string()
        } else {
            format!("Customer {i}")
        };
        let id = if i == 4500 { 7 } else { i };
        let status = if i == 3333 { "bogus" } else { "active" };
        csv.push_str(&format!("{id},{name},{status}\n"));
    }
    p.write("big.csv", csv);
    let run = p.crier(&["import", "big.csv", "--rejects", "r.csv"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("5000 rows: 4998 inserted, 1 updated, 0 unchanged, 1 rejected"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("line 3334: rejected: status: `bogus`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("line 4501: warning: id 7 appears again"),
        "{}",
        run.stderr
    );
    let seven = recipients_json(&p, &["--where", "name=Late*"]);
    assert_eq!(seven.len(), 1);
    assert_eq!(seven[0]["id"], 7);
}

#[test]
fn a_recipients_csv_neutralises_formula_names_and_keeps_phones_and_ids() {
    let p = Project::new();
    p.write(
        "customers.csv",
        "id,name,status,phone,location\n\
         1042,@SUM(1+1)*cmd|' /C calc'!A0,active,+27821234567,=HYPERLINK(\"http://x\")\n\
         7,Ann,active,082 123 4568,Cape Town\n",
    );
    let imported = p.crier(&["import", "customers.csv"]);
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    let column = |args: &[&str]| {
        let mut full = vec!["recipients", "--format", "csv"];
        full.extend_from_slice(args);
        let run = p.crier(&full);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.ends_with("\r\n"), "CRLF rows: {:?}", run.stdout);
        let mut reader = csv::Reader::from_reader(run.stdout.as_bytes());
        let header = reader.headers().unwrap().clone();
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let row = reader
            .records()
            .map(Result::unwrap)
            .find(|r| &r[col("id")] == "1042")
            .unwrap();
        (
            row[col("name")].to_string(),
            row[col("location")].to_string(),
            row[col("phone")].to_string(),
        )
    };
    assert_eq!(
        column(&[]),
        (
            "'@SUM(1+1)*cmd|' /C calc'!A0".to_string(),
            "'=HYPERLINK(\"http://x\")".to_string(),
            "+27821234567".to_string()
        )
    );
    assert_eq!(
        column(&["--raw"]),
        (
            "@SUM(1+1)*cmd|' /C calc'!A0".to_string(),
            "=HYPERLINK(\"http://x\")".to_string(),
            "+27821234567".to_string()
        )
    );
}
