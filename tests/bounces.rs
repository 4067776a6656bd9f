//! Bounces and abuse reports as real MTAs write them (`tests/bounces/*.eml`: Postfix,
//! Exim, Outlook.com, on-premises Exchange, Gmail, Yahoo's feedback loop, and the
//! examples of RFC 3464 and RFC 5965), each with its expected reading; then the real
//! `crier bounces ingest` on them against a history that holds the messages they name:
//! states, error codes, the opt-out list, exit codes, a Maildir, a locked store and a
//! running daemon.
//!
//! The samples that name a crier message name `01JDZ8X6Q4T5N0V9K3M2R7W1YB-00000N`, the
//! message planted here as number N.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Project, Run};
use crier::bounces::{Clue, Kind, ParseError, parse};
use crier::history::ledger::{Change, Ledger, NewMessage, NewRun};
use crier::history::{MessageState, MessageType, RunId, Trigger};
use crier::job::Channel;
use crier::recipients::RecipientKind;
use crier::store::open;
use serde_json::Value;

const RUN: &str = "01JDZ8X6Q4T5N0V9K3M2R7W1YB";

/// The address of each planted message, by number.
const ADDRESSES: [&str; 7] = [
    "ann@example.net",
    "erin@example.net",
    "bob@example.org",
    "carol@contoso.com",
    "frank@fabrikam.example",
    "dave@gmail.com",
    "grace@yahoo.com",
];

fn sample(name: &str) -> PathBuf {
    common::root().join("tests/bounces").join(name)
}

/// What each sample says, as its MTA meant it.
#[test]
fn every_sample_reads_as_its_mta_wrote_it() {
    type Expected = (
        &'static str,
        Kind,
        &'static str,
        &'static str,
        Option<(u32, Clue)>,
    );
    let table: &[Expected] = &[
        (
            "postfix.eml",
            Kind::Hard,
            "5.1.1",
            "ann@example.net",
            Some((0, Clue::Verp)),
        ),
        (
            "postfix-delayed.eml",
            Kind::Soft,
            "4.4.1",
            "erin@example.net",
            Some((1, Clue::Verp)),
        ),
        // Exim's envelope recipient is in `Envelope-to`.
        (
            "exim.eml",
            Kind::Hard,
            "5.0.0",
            "bob@example.org",
            Some((2, Clue::Verp)),
        ),
        (
            "outlook.eml",
            Kind::Hard,
            "5.1.10",
            "carol@contoso.com",
            Some((3, Clue::Verp)),
        ),
        // Sent without a bounce domain, so the NDR went to the From address; its returned
        // headers (a relay dropped the X- ones) still carry crier's Message-ID.
        (
            "exchange.eml",
            Kind::Hard,
            "5.1.1",
            "frank@fabrikam.example",
            Some((4, Clue::MessageIdHeader)),
        ),
        (
            "gmail.eml",
            Kind::Hard,
            "5.1.1",
            "dave@gmail.com",
            Some((5, Clue::Verp)),
        ),
        // A feedback loop writes to its own address: `Original-Mail-From` names the message.
        (
            "arf-yahoo.eml",
            Kind::Complaint,
            "abuse",
            "grace@yahoo.com",
            Some((6, Clue::ReturnPath)),
        ),
        // RFC 3464 §9.1: `Action: failed` with a 4.x.x status is still a temporary cause.
        (
            "rfc3464-simple.eml",
            Kind::Soft,
            "4.0.0",
            "louisl@larry.slip.umd.edu",
            None,
        ),
        // RFC 3464 §9.2: the first recipient that failed.
        (
            "rfc3464-multi.eml",
            Kind::Hard,
            "5.0.0",
            "arathib@vnet.ibm.com",
            None,
        ),
        (
            "rfc3464-delayed.eml",
            Kind::Soft,
            "4.0.0",
            "thomas@de-montfort.ac.uk",
            None,
        ),
        (
            "rfc5965.eml",
            Kind::Complaint,
            "abuse",
            "user@example.com",
            None,
        ),
    ];
    for (file, kind, status, address, message) in table {
        let raw = std::fs::read(sample(file)).unwrap();
        let bounce = parse(&raw).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(bounce.kind, *kind, "{file}");
        assert_eq!(bounce.status, *status, "{file}");
        assert_eq!(bounce.recipient.as_deref(), Some(*address), "{file}");
        let expected = message.map(|(n, clue)| (format!("{RUN}-{n:06}").parse().unwrap(), clue));
        assert_eq!(bounce.message, expected, "{file}");
    }
    let gmail = parse(&std::fs::read(sample("gmail.eml")).unwrap()).unwrap();
    assert!(
        gmail
            .diagnostic
            .unwrap()
            .starts_with("550-5.1.1 The email account that you tried to reach does not exist."),
    );
    let outlook = parse(&std::fs::read(sample("outlook.eml")).unwrap()).unwrap();
    assert_eq!(
        outlook.diagnostic.as_deref(),
        Some(
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
        )
    );
    assert_eq!(
        outlook.reporter.as_deref(),
        Some("AM0PR01MB1234.eurprd01.prod.exchangelabs.com")
    );
}

#[test]
fn input_that_is_no_report_names_what_is_missing() {
    let read = |f: &str| parse(&std::fs::read(sample(f)).unwrap()).unwrap_err();
    assert_eq!(
        read("auto-reply.eml"),
        ParseError::NotReport("text/plain".into())
    );
    assert_eq!(
        read("no-status.eml"),
        ParseError::NoStatus("ann@example.net".into())
    );
    assert_eq!(parse(b"").unwrap_err(), ParseError::NotMail);
    assert_eq!(
        parse(b"\x00\x01 not mail").unwrap_err(),
        ParseError::NotReport("text/plain".into())
    );
}

/// A project whose history holds run `RUN` with messages 0 to 6, emails `sent` to
/// [`ADDRESSES`].
fn project_with_messages() -> Project {
    let p = Project::new();
    let store = open(&p.store_config()).unwrap();
    let ledger = Ledger::new(store.as_ref());
    let run = ledger
        .create_run_with_id(
            RUN.parse::<RunId>().unwrap(),
            NewRun {
                job: "invoice".into(),
                trigger: Trigger::Manual,
                channels: vec![Channel::Email],
                provider: "mail".into(),
                body: "Dear {{ customer.name }}".into(),
                subject: Some("Your invoice for November".into()),
            },
            crier::history::now_ms(),
        )
        .unwrap();
    let planned = ADDRESSES
        .iter()
        .enumerate()
        .map(|(i, address)| NewMessage {
            recipient_kind: RecipientKind::Customer,
            recipient_id: i as u64 + 1,
            address: address.to_string(),
            channel: Channel::Email,
            provider: "mail".into(),
            kind: MessageType::Message,
            subject: Some("Your invoice for November".into()),
            body: "your invoice for November is ready.".into(),
            encoding: None,
            parts: 0,
            state: MessageState::Queued,
            reason: None,
            error: None,
            snapshot: Default::default(),
            html: None,
            route: Vec::new(),
        })
        .collect();
    let ids = ledger.plan(run.id, planned).unwrap();
    ledger.finish_planning(run.id).unwrap();
    for to in [MessageState::Sending, MessageState::Sent] {
        let changes: Vec<Change> = ids.iter().map(|id| Change::to(*id, to)).collect();
        ledger.record(&changes).unwrap();
    }
    p
}

/// Every message of the project's history, by number.
fn messages(p: &Project) -> Vec<Value> {
    let run = p.crier(&["logs", "--run", RUN, "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut all: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    all.sort_by_key(|m| m["id"].as_str().unwrap().to_string());
    all
}

fn opted_out(p: &Project) -> Vec<(String, String)> {
    let run = p.crier(&["optout", "list", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let list: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    list.iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `crier bounces ingest -` with `input` on its standard input.
fn ingest_stdin(p: &Project, input: &[u8]) -> Run {
    p.crier_stdin(&["bounces", "ingest", "-"], input)
}

fn ingest(p: &Project, file: &str) -> Run {
    let path = sample(file);
    p.crier(&["bounces", "ingest", path.to_str().unwrap()])
}

#[test]
fn each_sample_does_to_the_history_and_the_opt_out_list_what_it_says() {
    let p = project_with_messages();
    for file in [
        "postfix.eml",
        "postfix-delayed.eml",
        "exim.eml",
        "outlook.eml",
        "exchange.eml",
        "gmail.eml",
        "arf-yahoo.eml",
    ] {
        let run = ingest(&p, file);
        assert_eq!(run.code, 0, "{file}: {}\n{}", run.stdout, run.stderr);
    }
    let all = messages(&p);
    let facts: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|m| {
            (
                m["state"].as_str().unwrap(),
                m["error_code"].as_str().unwrap_or(""),
                m["address"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        facts,
        [
            ("undelivered", "bounce:5.1.1", "ann@example.net"),
            ("sent", "bounce:4.4.1", "erin@example.net"),
            ("undelivered", "bounce:5.0.0", "bob@example.org"),
            ("undelivered", "bounce:5.1.10", "carol@contoso.com"),
            ("undelivered", "bounce:5.1.1", "frank@fabrikam.example"),
            ("undelivered", "bounce:5.1.1", "dave@gmail.com"),
            ("sent", "complaint:abuse", "grace@yahoo.com"),
        ]
    );
    assert_eq!(
        all[0]["error_text"],
        "550 5.1.1 <ann@example.net>: Recipient address rejected: User unknown in virtual mailbox table"
    );
    let mut list = opted_out(&p);
    list.sort();
    assert_eq!(
        list,
        [
            ("ann@example.net".into(), "bounce".into()),
            ("bob@example.org".into(), "bounce".into()),
            ("carol@contoso.com".into(), "bounce".into()),
            ("dave@gmail.com".into(), "bounce".into()),
            ("frank@fabrikam.example".into(), "bounce".into()),
            ("grace@yahoo.com".into(), "complaint".into()),
        ]
    );

    // The same bounce again changes nothing and is no error: the MTA must not retry it.
    let again = ingest(&p, "postfix.eml");
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("undelivered, unchanged"),
        "{}",
        again.stdout
    );
    assert_eq!(messages(&p), all);
}

#[test]
fn a_postfix_dsn_piped_in_makes_its_message_undelivered() {
    let p = project_with_messages();
    let run = ingest_stdin(&p, &std::fs::read(sample("postfix.eml")).unwrap());
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.trim(),
        format!(
            "{RUN}-000000: undelivered (bounce:5.1.1: 550 5.1.1 <ann@example.net>: Recipient address rejected: User unknown in virtual mailbox table); ann@example.net put on the opt-out list (bounce)"
        )
    );
    assert_eq!(messages(&p)[0]["state"], "undelivered");
}

#[test]
fn unusable_input_changes_nothing_and_exits_65_naming_what_is_missing() {
    let p = project_with_messages();
    let before = messages(&p);
    for (input, says) in [
        (
            std::fs::read(sample("auto-reply.eml")).unwrap(),
            "no `message/delivery-status` or `message/feedback-report` part (Content-Type is `text/plain`)",
        ),
        (
            std::fs::read(sample("no-status.eml")).unwrap(),
            "the delivery status of `ann@example.net` has no `Status` field",
        ),
        (Vec::new(), "not an email message"),
    ] {
        let run = ingest_stdin(&p, &input);
        assert_eq!(run.code, 65, "{}\n{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(says), "{}", run.stderr);
        assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
    }
    // A report that names neither a message nor an address.
    let anonymous = std::fs::read_to_string(sample("rfc5965.eml"))
        .unwrap()
        .replace("Original-Rcpt-To: <user@example.com>\n", "");
    let run = ingest_stdin(&p, anonymous.as_bytes());
    assert_eq!(run.code, 65, "{}", run.stderr);
    assert!(
        run.stderr.contains("names no crier message"),
        "{}",
        run.stderr
    );
    assert_eq!(messages(&p), before);
    assert_eq!(opted_out(&p), []);

    let missing = p.crier(&["bounces", "ingest", "no-such.eml"]);
    assert_eq!(missing.code, 66, "{}", missing.stderr);
}

#[test]
fn a_hard_bounce_for_a_message_the_history_lacks_still_opts_the_address_out() {
    let p = Project::new();
    let run = ingest(&p, "rfc3464-multi.eml");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("naming no crier message"),
        "{}",
        run.stdout
    );
    let dsn = std::fs::read_to_string(sample("postfix.eml"))
        .unwrap()
        .replace("YB-000000", "YB-000099");
    let run = ingest_stdin(&p, dsn.as_bytes());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("{RUN}-000099: hard bounce (bounce:5.1.1: 550")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("for a message the history does not have"),
        "{}",
        run.stdout
    );
    assert_eq!(
        opted_out(&p),
        [
            ("ann@example.net".to_string(), "bounce".to_string()),
            ("arathib@vnet.ibm.com".to_string(), "bounce".to_string()),
        ]
    );
    // A soft bounce opts nobody out.
    let run = ingest(&p, "rfc3464-delayed.eml");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(opted_out(&p).len(), 2);
}

#[test]
fn hard_bounce_limit_opts_an_address_out_at_its_nth_hard_bounce() {
    let p = project_with_messages();
    p.write("crier.yaml", "bounces:\n  hard_bounce_limit: 2\n");
    assert_eq!(ingest(&p, "postfix.eml").code, 0);
    assert_eq!(opted_out(&p), [], "one hard bounce of two");
    assert_eq!(messages(&p)[0]["state"], "undelivered");
    // A second message to the same address bounces.
    let dsn = std::fs::read_to_string(sample("postfix.eml"))
        .unwrap()
        .replace("YB-000000", "YB-000042");
    let run = ingest_stdin(&p, dsn.as_bytes());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        opted_out(&p),
        [("ann@example.net".to_string(), "bounce".to_string())]
    );

    p.write("crier.yaml", "bounces:\n  hard_bounce_limit: 0\n");
    let run = p.crier(&["validate", "crier.yaml"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("bounces.hard_bounce_limit"),
        "{}{}",
        run.stdout,
        run.stderr
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_maildir_is_read_new_to_cur_and_an_unusable_message_is_flagged_not_fatal() {
    let p = project_with_messages();
    for (name, file) in [
        ("1764586802.M1P1.mx", "postfix.eml"),
        ("1764586803.M2P1.mx", "auto-reply.eml"),
        ("1764586804.M3P1.mx", "gmail.eml"),
    ] {
        p.write(
            &format!("Maildir/new/{name}"),
            std::fs::read(sample(file)).unwrap(),
        );
    }
    std::fs::create_dir_all(p.path().join("Maildir/cur")).unwrap();
    std::fs::create_dir_all(p.path().join("Maildir/tmp")).unwrap();
    let run = p.crier(&["bounces", "ingest", "--maildir", "Maildir"]);
    assert_eq!(run.code, 65, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("3 read: 2 hard, 0 soft, 0 complaints, 0 other; 1 unusable"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("1764586803.M2P1.mx: not a delivery status"),
        "{}",
        run.stderr
    );
    assert_eq!(names(&p.path().join("Maildir/new")), Vec::<String>::new());
    assert_eq!(
        names(&p.path().join("Maildir/cur")),
        [
            "1764586802.M1P1.mx:2,S",
            "1764586803.M2P1.mx:2,F",
            "1764586804.M3P1.mx:2,S"
        ]
    );
    let all = messages(&p);
    assert_eq!(all[0]["state"], "undelivered");
    assert_eq!(all[5]["state"], "undelivered");

    // Nothing new: nothing read, exit 0.
    let run = p.crier(&["bounces", "ingest", "--maildir", "Maildir"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("0 read"), "{}", run.stdout);
}

#[test]
fn a_store_held_by_another_process_is_a_temporary_failure() {
    if common::on_postgres() {
        // sled's one-process lock; PostgreSQL is shared by design.
        return;
    }
    let p = project_with_messages();
    let held = open(&p.store_config()).unwrap();
    let run = ingest_stdin(&p, &std::fs::read(sample("postfix.eml")).unwrap());
    assert_eq!(run.code, 75, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("try again later"), "{}", run.stderr);
    drop(held);
    assert_eq!(messages(&p)[0]["state"], "sent", "nothing was written");
    // Unusable input is still 65, not 75: the store is not needed to know that.
    let held = open(&p.store_config()).unwrap();
    assert_eq!(ingest_stdin(&p, b"Subject: hi\n\nhello\n").code, 65);
    drop(held);
}

#[test]
fn a_running_daemon_records_a_bounce_piped_to_another_crier() {
    let p = project_with_messages();
    std::fs::create_dir_all(p.path().join("jobs")).unwrap();
    let server = common::server::Server::start(&p, &[], None);
    let run = ingest_stdin(&p, &std::fs::read(sample("postfix.eml")).unwrap());
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("{RUN}-000000: undelivered")),
        "{}",
        run.stdout
    );
    // An unusable one is refused by the caller itself, with the daemon's store untouched.
    let run = ingest_stdin(&p, b"Subject: hi\n\nhello\n");
    assert_eq!(run.code, 65, "{}", run.stderr);
    // A file named relative to another directory is found there by the daemon.
    p.write("crier.yaml", "data_dir: data\n");
    p.write("mail/exim.eml", std::fs::read(sample("exim.eml")).unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_crier"))
        .args(["--config", "../crier.yaml", "bounces", "ingest", "exim.eml"])
        .current_dir(p.path().join("mail"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("{RUN}-000002: undelivered")),
        "{}",
        run.stdout
    );
    let log = server.stop();
    assert!(log.contains("Carrying out a command"), "{log}");
    let all = messages(&p);
    assert_eq!(all[0]["state"], "undelivered");
    assert_eq!(all[2]["state"], "undelivered");
}
