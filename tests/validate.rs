//! `crier validate` end to end: the shipped examples pass, broken jobs fail with exact,
//! positioned messages, and every error of every file is reported in one run.

mod common;

use common::{Project, root};

/// The credentials the root `crier.yaml` names, none of which a fresh clone has.
const ROOT_SECRETS: [&str; 5] = [
    "BULKSMS_TOKEN_ID",
    "BULKSMS_TOKEN_SECRET",
    "CLICKATELL_API_KEY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
];

/// `crier validate` at the root of a fresh clone, as a user types it, passes: every
/// shipped job and script against the root `crier.yaml`, whose secrets are not set.
#[test]
fn validate_at_the_repository_root_passes_without_credentials() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_crier"));
    cmd.arg("validate")
        .current_dir(root())
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    for var in ROOT_SECRETS {
        cmd.env_remove(var);
    }
    let run: common::Run = cmd.output().unwrap().into();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("ok  crier.yaml\n"), "{}", run.stdout);
    let jobs = std::fs::read_dir(root().join("jobs"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert!(jobs >= 7, "the shipped jobs");
    assert_eq!(
        run.stdout.lines().filter(|l| l.starts_with("ok  ")).count(),
        jobs + 1,
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("next 20"),
        "scheduled jobs show a next fire time:\n{}",
        run.stdout
    );
    // Said once, with every variable, and never a value.
    let notes: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("note:"))
        .collect();
    assert_eq!(notes.len(), 1, "{}", run.stdout);
    for var in ROOT_SECRETS {
        assert!(notes[0].contains(var), "{}", notes[0]);
    }
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

/// A jobs repository's CI validates without production secrets; the commands that use
/// them refuse, naming the variable, and send nothing.
#[test]
fn unset_secrets_pass_validate_and_stop_the_commands_that_use_them() {
    let p = Project::new();
    p.write(
        "crier.yaml",
        "providers:\n  bulk:\n    type: bulksms\n    token_id: ${BULK_ID}\n    token_secret: ${BULK_SECRET}\n  clicka:\n    type: clickatell\n    api_key: ${CLICKATELL_KEY}\nchannels:\n  sms: bulk\n",
    );
    p.write("jobs/notice.yaml", GOOD);
    p.write("jobs/other.yaml", format!("provider: outbox\n{GOOD}"));
    p.write(
        "customers.csv",
        "id,name,phone,status\n1,Ann,+27821234567,active\n",
    );
    let run = p.crier(&["validate"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("note: these secrets are not set here (fine for validate; send, run, serve and providers check need them): BULK_ID, BULK_SECRET, CLICKATELL_KEY"),
        "{}",
        run.stdout
    );
    assert_eq!(p.crier(&["import", "customers.csv"]).code, 0);

    let send = p.crier(&["send", "jobs/notice.yaml", "--yes"]);
    assert_eq!(send.code, 1, "{}\n{}", send.stdout, send.stderr);
    assert!(
        send.stderr.contains(
            "crier.yaml:4:15: providers.bulk.token_id: environment variable `BULK_ID` is not set"
        ),
        "{}",
        send.stderr
    );
    assert!(
        send.stderr
            .contains("providers.bulk.token_secret: environment variable `BULK_SECRET` is not set")
    );
    // Only what this job uses is asked for, and no run was made.
    assert!(!send.stderr.contains("CLICKATELL_KEY"), "{}", send.stderr);
    assert!(!send.stdout.contains("run "), "{}", send.stdout);
    let history = p.crier(&["history", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(runs, serde_json::json!([]), "{}", history.stdout);
    // A job on a provider without credentials sends as usual.
    let other = p.crier(&["send", "jobs/other.yaml", "--yes"]);
    assert_eq!(other.code, 0, "{}\n{}", other.stdout, other.stderr);

    let check = p.crier(&["providers", "check", "clicka"]);
    assert_eq!(check.code, 1);
    assert!(
        check
            .stderr
            .contains("providers.clicka.api_key: environment variable `CLICKATELL_KEY` is not set"),
        "{}",
        check.stderr
    );
    for args in [&["serve", "--listen", "127.0.0.1:0"][..], &["run"][..]] {
        let run = p.crier(args);
        assert_eq!(run.code, 1, "{args:?}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("`BULK_SECRET` is not set"),
            "{args:?}: {}",
            run.stderr
        );
    }
    // With the variables set, the same config is complete.
    let set = p.crier_env(
        &["send", "jobs/notice.yaml", "--dry-run"],
        &[
            ("BULK_ID", "id"),
            ("BULK_SECRET", "s"),
            ("CLICKATELL_KEY", "k"),
        ],
    );
    assert_eq!(set.code, 0, "{}\n{}", set.stdout, set.stderr);
}

/// A non-secret field cannot be checked without its value: still an error at validate.
#[test]
fn an_unset_variable_in_a_plain_field_fails_validate() {
    let p = Project::new();
    p.write(
        "crier.yaml",
        "providers:\n  bulk:\n    type: bulksms\n    token_id: ${BULK_ID}\n    token_secret: ${BULK_SECRET}\n    base_url: ${BULK_URL}\n",
    );
    let run = p.crier(&["validate"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let first = run.stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "crier.yaml:6:15: providers.bulk.base_url: environment variable `BULK_URL` is not set (set it, or write `${BULK_URL:-default}`)"
    );
    assert!(!run.stderr.contains("BULK_SECRET"), "{}", run.stderr);
}

#[test]
fn routed_jobs_name_providers_the_default_config_lacks() {
    let p = Project::new();
    let job = root().join("jobs/outage-sms-routed.yaml");
    let run = p.crier(&["validate", job.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("scripts/route.rhai:14:9: scripts.route: route returns provider `bulksms`, which is not defined in crier.yaml"),
        "{out}"
    );
}

#[test]
fn the_example_config_validates_with_its_variables_set() {
    let p = Project::new();
    let config = root().join("jobs/config/crier.example.yaml");
    let env = [
        ("BULKSMS_TOKEN_ID", "BBDE1B476E03498AA768F66A286AABDC-01-B"),
        ("BULKSMS_TOKEN_SECRET", "not-a-real-secret"),
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
        ("TWILIO_AUTH_TOKEN", "also-not-real"),
        ("GATEWAY_PASSWORD", "pw"),
        ("SMTP_PASSWORD", "pw"),
        ("CLICKATELL_API_KEY", "not-a-real-key"),
    ];
    let jobs = root().join("jobs");
    let run = p.crier_env(
        &[
            "--config",
            config.to_str().unwrap(),
            "validate",
            jobs.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("crier.example.yaml"));
}

const GOOD: &str = "send_to: sms\nmessage: hi\nrecipients: {}\n";

/// One broken job per kind of error, with the exact line the user sees.
#[test]
fn broken_jobs_fail_with_exact_messages() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "typo.yaml",
            "send_to: sms\nmessage: hi\nrecipients: {}\nshedule:\n  cron: \"0 9 1 * *\"\n",
            "typo.yaml:4:1: shedule: unknown field `shedule` (did you mean `schedule`?)",
        ),
        (
            "cron.yaml",
            "send_to: sms\nmessage: hi\nrecipients: {}\nschedule:\n  cron: \"0 9 * *\"\n",
            "cron.yaml:5:9: schedule.cron: expected 5 or 6 fields, got `0 9 * *` (e.g. `0 9 1 * *`)",
        ),
        (
            "tz.yaml",
            "send_to: sms\nmessage: hi\nrecipients: {}\nschedule:\n  cron: \"@daily\"\n  timezone: Africa/Johanesburg\n",
            "tz.yaml:6:13: schedule.timezone: unknown time zone `Africa/Johanesburg` (did you mean `Africa/Johannesburg`?)",
        ),
        (
            "status.yaml",
            "send_to: sms\nmessage: hi\nrecipients:\n  where:\n    status: [active, actve]\n",
            "status.yaml:5:22: recipients.where.status[1]: unknown value `actve` (did you mean `active`? expected one of `new`, `active`, `inactive`, `blocked`)",
        ),
        (
            "attach.yaml",
            "send_to: sms\nmessage: hi\nrecipients: {}\nattach: [invoices]\n",
            "attach.yaml:4:9: attach: financial documents cannot be attached to SMS (only to email)",
        ),
        (
            "both.yaml",
            "send_to: sms\nmessage: hi\ntemplate: t.sms.j2\nrecipients: {}\n",
            "both.yaml:2:10: message: give `message` or `template`, not both",
        ),
        (
            "provider.yaml",
            "send_to: sms\nmessage: hi\nrecipients: {}\nprovider: bulksms\n",
            "provider.yaml:4:11: provider: provider `bulksms` is not defined in crier.yaml (defined: outbox, portal)",
        ),
        (
            "rate.yaml",
            "send_to: sms\nmessage: hi\nrecipients: {}\nrate: 10/day\n",
            "rate.yaml:4:7: rate: expected N/s, N/min or N/h (e.g. `10/s`), got `10/day`",
        ),
        (
            "html.yaml",
            "send_to: sms\nmessage: hi\nrecipients: {}\nhtml_template: x.html.j2\n",
            "html.yaml:4:16: html_template: an HTML part is for email only",
        ),
        (
            "expire.yaml",
            "send_to: sms\nmessage: hi\nrecipients: {}\nexpire_after: soon\n",
            "expire.yaml:4:15: expire_after: `soon` is not a duration above zero (e.g. `6h`, `2d`)",
        ),
        (
            "template.yaml",
            "send_to: sms\ntemplate: missing.sms.j2\nrecipients: {}\n",
            "template.yaml:2:11: template: template file `",
        ),
        (
            "csv.yaml",
            "send_to: sms\nmessage: hi\nrecipients:\n  source: nowhere.csv\n",
            "csv.yaml:4:11: recipients.source: CSV file `",
        ),
        (
            "sendto.yaml",
            "send_to: fax\nmessage: hi\nrecipients: {}\n",
            "sendto.yaml:1:10: send_to: unknown value `fax` (expected one of `sms`, `email`, `portal`, `portal+email`)",
        ),
        (
            "phone.yaml",
            "send_to: sms\nmessage: hi\nrecipients:\n  where:\n    phone: \"12\"\n",
            "phone.yaml:5:12: recipients.where.phone[0]: `12` is not a valid phone number in region ZA",
        ),
        (
            "missing.yaml",
            "message: hi\nrecipients: {}\n",
            "missing.yaml:1:1: send_to: missing required field `send_to`",
        ),
        (
            "field.yaml",
            "send_to: sms\nmessage: \"Hi {{ customer.nmae }}\"\nrecipients: {}\n",
            "field.yaml:2:10: message: `customer` has no field `nmae` (did you mean `name`?)",
        ),
        (
            "tfile.yaml",
            "send_to: sms\ntemplate: bad.sms.j2\nrecipients: {}\n",
            "bad.sms.j2:2:7: template: `customer` has no field `adrs` (did you mean `attrs`?)",
        ),
        (
            "syntax.yaml",
            "send_to: sms\nmessage: \"Hi {{ customer.name \"\nrecipients: {}\n",
            "syntax.yaml:2:10: message: syntax error",
        ),
        (
            "long.yaml",
            &format!(
                "send_to: sms\nmessage: \"{} {{{{ customer.name }}}}\"\nrecipients: {{}}\nsms:\n  max_parts: 1\n",
                "x".repeat(200)
            ),
            "long.yaml:5:14: sms.max_parts: the text alone is 2 gsm7 parts (200 septets), over max_parts 1",
        ),
        (
            "smsmail.yaml",
            "send_to: email\nsubject: Hi\nmessage: hi\nrecipients: {}\nsms: { gsm_safe: true }\n",
            "smsmail.yaml:5:6: sms: `sms` settings need `send_to: sms`",
        ),
        (
            "yaml.yaml",
            "send_to: sms\nmessage: hi\n  indented: x\nrecipients: {}\n",
            "yaml.yaml:3:11: mapping values are not allowed in this context",
        ),
    ];
    for (file, text, expected) in cases {
        let p = Project::new();
        p.write(file, text);
        p.write("t.sms.j2", "hi");
        p.write("bad.sms.j2", "Hello\n   {{ customer.adrs }}\n");
        let run = p.crier(&["validate", file]);
        assert_eq!(run.code, 1, "{file} must fail:\n{}", run.stderr);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(expected),
            "{file}:\n  got:      {first}\n  expected: {expected}"
        );
        assert!(run.stdout.is_empty(), "{file}: nothing printed as ok");
    }
}

#[test]
fn every_error_in_every_file_is_reported_at_once() {
    let p = Project::new();
    p.write(
        "jobs/a.yaml",
        "name: same\nsend_to: sms\nmessage: hi\nrecipients: {}\nrate: fast\nschedule:\n  cron: \"0 9 * *\"\n  timezone: Mars/Base\n",
    );
    p.write("jobs/b.yaml", format!("name: same\n{GOOD}"));
    p.write("jobs/c.yaml", format!("name: same\n{GOOD}"));
    p.write("jobs/d.yaml", "send_to: sms\n");
    let run = p.crier(&["validate"]);
    assert_eq!(run.code, 1);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("jobs/"))
        .collect();
    assert_eq!(errors.len(), 5, "{}", run.stderr);
    assert!(errors[0].starts_with("jobs/a.yaml:5:7: rate:"));
    assert!(errors[1].starts_with("jobs/a.yaml:7:9: schedule.cron:"));
    assert!(
        errors[2].starts_with("jobs/a.yaml:8:13: schedule.timezone: unknown time zone `Mars/Base`")
    );
    assert_eq!(
        errors[3],
        "jobs/c.yaml:1:7: name: job name `same` is already used by jobs/b.yaml (names must be unique)"
    );
    assert!(errors[4].starts_with("jobs/d.yaml:1:1: recipients: missing required field"));
    assert!(run.stderr.contains("5 errors in 3 files"));
}

/// Structural errors do not hide each other, nor the semantic ones.
#[test]
fn five_independent_defects_are_five_lines() {
    let p = Project::new();
    p.write(
        "jobs/five.yaml",
        "send_to: sms\nmessage: hi\nrecipients:\n  where:\n    status: [active, actve]\nschedule:\n  cron: \"0 9 * *\"\n  overlap: sometimes\nattach: [invoices]\nrate: 5\nshedule: x\n",
    );
    let run = p.crier(&["validate"]);
    assert_eq!(run.code, 1);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("jobs/"))
        .collect();
    assert_eq!(
        errors,
        [
            "jobs/five.yaml:5:22: recipients.where.status[1]: unknown value `actve` (did you mean `active`? expected one of `new`, `active`, `inactive`, `blocked`)",
            "jobs/five.yaml:7:9: schedule.cron: expected 5 or 6 fields, got `0 9 * *` (e.g. `0 9 1 * *`)",
            "jobs/five.yaml:8:12: schedule.overlap: unknown value `sometimes` (expected one of `skip`, `queue`)",
            "jobs/five.yaml:9:9: attach: financial documents cannot be attached to SMS (only to email)",
            "jobs/five.yaml:10:7: rate: expected a string, got integer 5",
            "jobs/five.yaml:11:1: shedule: unknown field `shedule` (did you mean `schedule`?)",
        ],
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("6 errors in 1 file"), "{}", run.stderr);
}

/// A wrong type is reported at its field, in crier's words.
#[test]
fn a_wrong_type_is_placed_at_its_field() {
    let p = Project::new();
    p.write(
        "file.yaml",
        "name: typed\nsend_to: sms\nmessage: hi\nrecipients: {}\nschedule:\n  timezone: UTC\n  cron: 5\n",
    );
    let run = p.crier(&["validate", "file.yaml"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr.lines().next().unwrap_or_default(),
        "file.yaml:7:9: schedule.cron: expected a string, got integer 5"
    );
}

#[test]
fn provider_names_are_checked_against_crier_yaml() {
    let p = Project::new();
    p.write(
        "crier.yaml",
        "providers:\n  bulksms:\n    type: bulksms\n    token_id: id\n    token_secret: s\n  mail:\n    type: smtp\n    host: localhost\n    from: a@b.example\n",
    );
    p.write("jobs/ok.yaml", format!("provider: bulksms\n{GOOD}"));
    p.write("jobs/wrong-channel.yaml", format!("provider: mail\n{GOOD}"));
    p.write("jobs/typo.yaml", format!("provider: bulkms\n{GOOD}"));
    let run = p.crier(&["validate"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains(
        "jobs/typo.yaml:1:11: provider: provider `bulkms` is not defined in crier.yaml (did you mean `bulksms`?)"
    ), "{}", run.stderr);
    assert!(run.stderr.contains(
        "jobs/wrong-channel.yaml:1:11: provider: provider `mail` (type smtp) cannot send sms messages"
    ), "{}", run.stderr);
    assert!(!run.stderr.contains("jobs/ok.yaml"));
}

#[test]
fn schema_describes_job_files() {
    let p = Project::new();
    let run = p.crier(&["schema"]);
    assert_eq!(run.code, 0);
    let schema: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let props = &schema["properties"];
    for field in [
        "name",
        "schedule",
        "recipients",
        "send_to",
        "template",
        "message",
        "attach",
        "rate",
    ] {
        assert!(props.get(field).is_some(), "schema lacks {field}");
    }
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
    assert!(
        props["schedule"].to_string().contains("Schedule")
            || schema.to_string().contains("Crontab expression"),
        "field docs reach the schema"
    );
    let config = p.crier(&["schema", "config"]);
    let schema: serde_json::Value = serde_json::from_str(&config.stdout).unwrap();
    assert!(schema["properties"].get("providers").is_some());
}

#[test]
fn usage_errors_exit_2_and_help_lists_every_command() {
    let p = Project::new();
    assert_eq!(p.crier(&["frobnicate"]).code, 2);
    assert_eq!(p.crier(&["import"]).code, 2);
    let help = p.crier(&["--help"]);
    assert_eq!(help.code, 0);
    // Every command, and every subcommand of the command groups, shows an example.
    let commands: &[&[&str]] = &[
        &["validate"],
        &["schema"],
        &["config", "show"],
        &["import"],
        &["recipients"],
        &["preview"],
        &["templates", "list"],
        &["templates", "show"],
        &["templates", "save"],
        &["templates", "delete"],
        &["optout", "add"],
        &["optout", "remove"],
        &["optout", "list"],
        &["optout", "import"],
        &["bounces", "ingest"],
        &["history"],
        &["history", "show"],
        &["history", "recipients"],
        &["history", "delete"],
        &["history", "cancel"],
        &["logs"],
    ];
    for cmd in commands {
        assert!(help.stdout.contains(cmd[0]), "--help lists {}", cmd[0]);
        let mut args = cmd.to_vec();
        args.push("--help");
        let text = p.crier(&args).stdout;
        assert!(text.contains("Example"), "{cmd:?} --help has an example");
    }
}

/// The schema `crier validate` checks structure with (and editors and check-jsonschema
/// use) accepts every shipped job and config: it is never stricter than crier itself.
#[test]
fn the_json_schema_accepts_every_shipped_file() {
    let read = |path: &std::path::Path| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let mut checked = 0;
    for dir in [
        root().join("jobs"),
        root().join("tests/corpus/project/jobs"),
    ] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "yaml") {
                let problems = crier::config::shape::check::<crier::job::RawJob>(&read(&path));
                assert!(problems.is_empty(), "{}: {problems:?}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 7);
    for config in [
        root().join("crier.yaml"),
        root().join("jobs/config/crier.example.yaml"),
    ] {
        let problems = crier::config::shape::check::<crier::config::RawConfig>(&read(&config));
        assert!(problems.is_empty(), "{}: {problems:?}", config.display());
    }
}

/// One-click unsubscribe: an email job that may leave through SMTP needs
/// `email.unsubscribe` unless it is service mail, and each setting is checked.
#[test]
fn unsubscribe_settings_are_required_for_bulk_mail_and_checked() {
    let p = Project::new();
    let smtp = "providers:\n  mail:\n    type: smtp\n    host: 127.0.0.1\n    from: a@atlantic.example\nchannels:\n  email: mail\n";
    p.write("crier.yaml", smtp);
    let email = "send_to: email\nsubject: News\nrecipients: {}\n";
    p.write("jobs/news.yaml", format!("{email}message: hi\n"));
    p.write(
        "jobs/notice.yaml",
        format!("{email}email: {{ transactional: true }}\nmessage: hi\n"),
    );
    p.write(
        "jobs/notice-link.yaml",
        format!(
            "{email}email: {{ transactional: true }}\nmessage: \"bye: {{{{ unsubscribe_url }}}}\"\n"
        ),
    );
    p.write(
        "jobs/sms-link.yaml",
        "send_to: sms\nrecipients: {}\nmessage: \"{{ unsubscribe_url }}\"\nemail: { transactional: true }\n",
    );
    let run = p.crier(&["validate", "jobs"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [
            "jobs/news.yaml:1:10: send_to: email through provider `mail` offers one-click unsubscribe, but crier.yaml has no `email.unsubscribe` (give it `secret` and `public_url`), or mark service mail `email: { transactional: true }`",
            "jobs/notice-link.yaml:5:10: message: uses `unsubscribe_url`, but a transactional job has no unsubscribe link",
            "jobs/sms-link.yaml:3:10: message: uses `unsubscribe_url`, but only email has an unsubscribe link",
            "jobs/sms-link.yaml:4:8: email: `email` settings need `send_to: email` or `portal+email`",
            "4 errors in 3 files",
        ],
        "{}",
        run.stderr
    );

    // Service mail by default, for the whole channel.
    p.write(
        "crier.yaml",
        format!("{smtp}email:\n  transactional: true\n"),
    );
    let run = p.crier(&["validate", "jobs/news.yaml", "jobs/notice.yaml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Every setting is checked, each at its line.
    p.write(
        "crier.yaml",
        format!("{smtp}email:\n  unsubscribe:\n    secret: short\n    mailto: not an address\n"),
    );
    let run = p.crier(&["validate", "jobs/notice.yaml"]);
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [
            "crier.yaml:9:3: email.unsubscribe: needs `public_url` (where recipients reach `crier serve`, e.g. `https://crier.example.net`), or `server.public_url`",
            "crier.yaml:10:13: email.unsubscribe.secret: must be at least 32 characters (e.g. the output of `openssl rand -base64 32`)",
            "crier.yaml:11:13: email.unsubscribe.mailto: `not an address` is not an email address (e.g. `unsubscribe@acme.example`)",
            "3 errors in 1 file",
            "job files were not checked: fix crier.yaml first",
        ],
        "{}",
        run.stderr
    );

    // With the section, the secret from the environment: validate needs no secret,
    // `server.public_url` serves as the link's base, and the bulk job passes.
    p.write(
        "crier.yaml",
        format!("{smtp}server:\n  public_url: https://crier.atlantic.example\nemail:\n  unsubscribe:\n    secret: ${{CRIER_UNSUBSCRIBE_SECRET}}\n"),
    );
    let run = p.crier(&["validate", "jobs/news.yaml", "jobs/notice.yaml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("is not set here") && run.stdout.contains("CRIER_UNSUBSCRIBE_SECRET"),
        "{}",
        run.stdout
    );
}
