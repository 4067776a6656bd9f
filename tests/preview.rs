//! `crier preview` end to end: counts, skip reasons, rendering and SMS cost.

mod common;

use common::{Project, root};

fn project() -> Project {
    let p = Project::new();
    p.write(
        "people.csv",
        "id,name,status,phone,email,location\n\
         1,Ann,active,082 123 4567,ann@example.com,Cape Town\n\
         2,Ben,active,083 123 4567,,Cape Town\n\
         3,Zoë Žižek,active,084 123 4567,zoe@example.com,Cape Town\n\
         4,Bad Phone,active,12345,bad@example.com,Cape Town\n\
         5,No Phone,active,,none@example.com,Cape Town\n\
         6,Ann Twin,active,+27821234567,twin@example.com,Cape Town\n\
         7,Elsewhere,active,085 123 4567,x@example.com,Durban\n",
    );
    let run = p.crier(&["import", "people.csv"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    p
}

#[test]
fn preview_counts_skips_and_renders() {
    let p = project();
    p.write(
        "jobs/sms.yaml",
        "send_to: sms\nmessage: \"Hi {{ customer.name }}, {{ customer.location }} maintenance tonight.\"\nrecipients:\n  where: { location: Cape Town }\n",
    );
    let run = p.crier(&["preview", "jobs/sms.yaml", "--limit", "3"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.contains("job sms: sms via outbox"), "{out}");
    assert!(out.contains("recipients: 6 customers"), "{out}");
    assert!(
        out.contains("messages: 3 to send, 3 skipped (duplicate 1, invalid_phone 1, no_phone 1)"),
        "{out}"
    );
    // Zoë Žižek's name makes her message UCS-2.
    assert!(out.contains("sms parts: 3 (gsm7 2, ucs2 1)"), "{out}");
    assert!(out.contains("--- 1. customer 1 Ann  +27821234567 (sms)  gsm7, 1 part\nHi Ann, Cape Town maintenance tonight."), "{out}");
    assert!(
        out.contains("customer 3 Zoë Žižek  +27841234567 (sms)  ucs2, 1 part"),
        "{out}"
    );
}

#[test]
fn one_recipient_shows_why_it_is_skipped() {
    let p = project();
    p.write(
        "jobs/sms.yaml",
        "send_to: sms\nmessage: Hi\nrecipients: {}\n",
    );
    let run = p.crier(&["preview", "jobs/sms.yaml", "--recipient", "4"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "customer 4 (sms): skipped: invalid_phone: `12345` is not a valid phone number"
        ),
        "{}",
        run.stdout
    );
    let missing = p.crier(&["preview", "jobs/sms.yaml", "--recipient", "99"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("no recipient of this job has id 99")
    );
}

#[test]
fn a_missing_value_fails_only_that_message() {
    let p = project();
    p.write(
        "jobs/mail.yaml",
        "send_to: email\nsubject: \"Hello {{ customer.name }}\"\nmessage: \"Write to {{ customer.email }}\"\nrecipients:\n  where: { id: 2 }\n",
    );
    // `id` is not a filter: validation says so.
    let bad = p.crier(&["preview", "jobs/mail.yaml"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("unknown field `id`"), "{}", bad.stderr);
    p.write(
        "jobs/mail.yaml",
        "send_to: email\nsubject: \"Hello {{ customer.name }}\"\nmessage: \"Your phone: {{ customer.phone }}\"\nrecipients:\n  where: { location: Cape Town }\n",
    );
    let run = p.crier(&["preview", "jobs/mail.yaml", "--limit", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Ben has no email; Bad Phone and No Phone have no E.164 phone to render.
    assert!(
        run.stdout
            .contains("messages: 3 to send, 3 skipped (no_email 1, render_failed 2)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Subject: Hello Ann"), "{}", run.stdout);
}

#[test]
fn every_shipped_job_previews_on_the_sample_data() {
    let p = Project::new();
    // The providers the shipped `route` scripts name (nothing is sent by a preview).
    p.write(
        "crier.yaml",
        "providers:
  bulksms: { type: bulksms, token_id: ID-01-B, token_secret: s }
  bulksms-coastal: { type: bulksms, token_id: ID-01-B, token_secret: s, from: CoastalWL }
  clickatell: { type: clickatell, api_key: k }
  twilio: { type: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: t, from: \"+15005550006\" }
",
    );
    let csv = root().join("jobs/data/customers.csv");
    assert_eq!(p.crier(&["import", csv.to_str().unwrap()]).code, 0);
    for entry in std::fs::read_dir(root().join("jobs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let run = p.crier(&["preview", path.to_str().unwrap(), "--limit", "1"]);
            assert_eq!(run.code, 0, "{}: {}", path.display(), run.stderr);
            assert!(run.stdout.contains("to send"), "{}", run.stdout);
            assert!(
                run.stdout.contains("--- 1."),
                "{}: shows a message\n{}",
                path.display(),
                run.stdout
            );
        }
    }
}

#[test]
fn opted_out_addresses_are_skipped() {
    let p = project();
    p.write(
        "jobs/sms.yaml",
        "send_to: sms\nmessage: Hi\nrecipients:\n  where: { location: Cape Town }\n",
    );
    let add = p.crier(&["optout", "add", "082 123 4567", "--reason", "asked"]);
    assert_eq!(add.code, 0, "{}", add.stderr);
    assert!(add.stdout.contains("1 added"));
    p.write("stops.csv", "phone\n+27 84 123 4567\n");
    assert_eq!(p.crier(&["optout", "import", "stops.csv"]).code, 0);
    let list = p.crier(&["optout", "list", "--format", "csv"]);
    assert!(
        list.stdout.contains("+27821234567") && list.stdout.contains("+27841234567"),
        "{}",
        list.stdout
    );
    let run = p.crier(&["preview", "jobs/sms.yaml"]);
    // Ann and Zoë are opted out; Ann's twin shares her number, so it stays a duplicate.
    assert!(
        run.stdout.contains(
            "messages: 1 to send, 5 skipped (duplicate 1, invalid_phone 1, no_phone 1, opted_out 2)"
        ),
        "{}",
        run.stdout
    );
    let bad = p.crier(&["optout", "add", "12"]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("not a valid phone number"),
        "{}",
        bad.stderr
    );
    assert_eq!(p.crier(&["optout", "remove", "+27821234567"]).code, 0);
    let after = p.crier(&["preview", "jobs/sms.yaml"]);
    assert!(
        after.stdout.contains("messages: 2 to send"),
        "{}",
        after.stdout
    );
}

#[test]
fn gsm_safe_and_max_parts() {
    let p = project();
    // A curly apostrophe alone would make every message UCS-2.
    p.write(
        "jobs/curly.yaml",
        "send_to: sms\nmessage: \"It\u{2019}s {{ customer.name }}\u{2026}\"\nrecipients:\n  where: { location: Durban }\nsms: { gsm_safe: true }\n",
    );
    let run = p.crier(&["preview", "jobs/curly.yaml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("sms parts: 1 (gsm7 1)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("It's Elsewhere..."), "{}", run.stdout);
    // Names push some messages over one part: those fail as too_long, the rest go.
    p.write(
        "jobs/long.yaml",
        format!(
            "send_to: sms\nmessage: \"{} {{{{ customer.name }}}}\"\nrecipients:\n  where: {{ location: Cape Town }}\nsms: {{ max_parts: 1 }}\n",
            "x".repeat(155)
        ),
    );
    let long = p.crier(&["preview", "jobs/long.yaml"]);
    assert_eq!(long.code, 0, "{}", long.stderr);
    // "Ann" and "Ben" fit in 160 septets; "Zoë Žižek" is UCS-2 and longer.
    assert!(
        long.stdout.contains("messages: 2 to send"),
        "{}",
        long.stdout
    );
    assert!(long.stdout.contains("too_long 1"), "{}", long.stdout);
}

#[test]
fn stored_templates_save_use_and_delete() {
    let p = project();
    p.write("t/reminder.sms.j2", "Stored hello {{ customer.name }}");
    p.write("t/broken.sms.j2", "Hi {{ customer.nmae }}");
    let saved = p.crier(&[
        "templates",
        "save",
        "reminder",
        "--channel",
        "sms",
        "--file",
        "t/reminder.sms.j2",
    ]);
    assert_eq!(saved.code, 0, "{}", saved.stderr);
    assert!(
        saved.stdout.contains("saved template `reminder` (sms)"),
        "{}",
        saved.stdout
    );
    let broken = p.crier(&[
        "templates",
        "save",
        "broken",
        "--channel",
        "sms",
        "--file",
        "t/broken.sms.j2",
    ]);
    assert_eq!(broken.code, 1);
    assert!(
        broken
            .stderr
            .contains("t/broken.sms.j2:1:7: template: `customer` has no field `nmae`"),
        "{}",
        broken.stderr
    );
    let list = p.crier(&["templates", "list"]);
    assert!(
        list.stdout.contains("reminder") && !list.stdout.contains("broken"),
        "{}",
        list.stdout
    );
    assert!(
        p.crier(&["templates", "show", "reminder"])
            .stdout
            .contains("Stored hello {{ customer.name }}")
    );

    p.write(
        "jobs/stored.yaml",
        "send_to: sms\ntemplate: stored:reminder\nrecipients:\n  where: { location: Durban }\n",
    );
    let run = p.crier(&["preview", "jobs/stored.yaml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("Stored hello Elsewhere"),
        "{}",
        run.stdout
    );

    p.write(
        "jobs/wrong.yaml",
        "send_to: email\nsubject: Hi\ntemplate: stored:reminder\nrecipients: {}\n",
    );
    let wrong = p.crier(&["preview", "jobs/wrong.yaml"]);
    assert_eq!(wrong.code, 1);
    assert!(
        wrong
            .stderr
            .contains("stored template `reminder` is for sms, but the job sends email"),
        "{}",
        wrong.stderr
    );

    assert_eq!(p.crier(&["templates", "delete", "reminder"]).code, 0);
    let gone = p.crier(&["preview", "jobs/stored.yaml"]);
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr.contains("no stored template `reminder`"),
        "{}",
        gone.stderr
    );
}
