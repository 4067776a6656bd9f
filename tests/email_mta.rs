//! Email that a strict MTA accepts and a recipient saves byte for byte: the real
//! `crier send` against a real SMTP server nobody on the project wrote (Python's
//! `aiosmtpd`, `tests/tools/smtp_sink.py`, which refuses bare LF like Postfix's
//! `smtpd_forbid_bare_newline`), with the DATA it received read by an independent parser
//! (Python's `email` package, `tests/tools/mail_facts.py`). And a bounce that finds its
//! message: the envelope sender the server recorded is the message's VERP address, and a
//! Postfix DSN to it piped into `crier bounces ingest -` makes the message `undelivered`.
//!
//! Needs a Python with `aiosmtpd`: `CRIER_PYTHON`, else `python3` if it has the module.
//! Without one the test says `skipped:` on stderr, and fails when `CI` is set.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::Project;
use serde_json::Value;

/// A Python that can import `module`, or `None` (a panic under CI).
fn python_with(module: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("CRIER_PYTHON") {
        Some(python) => vec![python.into()],
        None => vec!["python3".into()],
    };
    for python in candidates {
        let imports = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if imports {
            return Some(python);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI: no Python with `{module}` (set CRIER_PYTHON)");
    }
    eprintln!("skipped: no Python with `{module}` (set CRIER_PYTHON to one)");
    None
}

fn tool(name: &str) -> PathBuf {
    common::root().join("tests/tools").join(name)
}

/// `smtp_sink.py` running on 127.0.0.1; killed when dropped.
struct Sink {
    child: Child,
    port: u16,
    folder: tempfile::TempDir,
}

impl Sink {
    fn start(python: &Path) -> Sink {
        let folder = tempfile::tempdir().unwrap();
        let mut child = Command::new(python)
            .arg(tool("smtp_sink.py"))
            .arg(folder.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start smtp_sink.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("smtp_sink.py said {line:?}"));
        Sink {
            child,
            port,
            folder,
        }
    }

    /// The saved raw messages, in arrival order, with what the sink replied to each.
    fn messages(&self) -> Vec<(PathBuf, Value)> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.folder.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        found.sort();
        found
            .into_iter()
            .map(|json| {
                let envelope = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
                (json.with_extension("eml"), envelope)
            })
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mail_facts.py` on `messages`, the attachments saved under `out`.
fn facts(python: &Path, out: &Path, messages: &[PathBuf]) -> Vec<Value> {
    let output = Command::new(python)
        .arg(tool("mail_facts.py"))
        .arg(out)
        .args(messages)
        .output()
        .expect("run mail_facts.py");
    assert!(
        output.status.success(),
        "mail_facts.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let facts: Value = serde_json::from_slice(&output.stdout).unwrap();
    facts.as_array().unwrap().clone()
}

/// The decoded text part: `mail_facts.py` maps its bytes to latin-1 code points.
fn text_bytes(facts: &Value) -> Vec<u8> {
    let text = facts["text"].as_str().expect("a text/plain part");
    text.chars().map(|c| u8::try_from(c).unwrap()).collect()
}

/// A PDF-like file with every byte value, lone CRs and LFs, and SMTP's end-of-data line.
fn binary_document() -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\r<< >>\rendobj\n".to_vec();
    bytes.extend(0..=255u8);
    bytes.extend_from_slice(b"\r\n.\r\n\n.\nstream\n\0\0\n%%EOF\n");
    bytes
}

#[test]
fn a_strict_mta_accepts_the_email_and_the_recipient_saves_the_files_unchanged() {
    let Some(python) = python_with("aiosmtpd") else {
        return;
    };
    let sink = Sink::start(&python);
    let p = Project::new();
    p.write(
        "people.csv",
        "id,name,status,email\n1,Zoë Ångström,new,zoe@example.com\n2,Ben,new,ben@example.com\n",
    );
    assert_eq!(p.crier(&["import", "people.csv"]).code, 0);

    // Zoë's invoices: ASCII text with LF ends (a dot line, a `From ` line, trailing
    // spaces), an ASCII CSV with LF ends and none at the end, a binary PDF-like file, and
    // a PDF whose name is not ASCII and long enough to be folded.
    let notes = b"Usage report\n.\n..two dots\nFrom here on\ntrailing spaces   \n\nend\n".to_vec();
    let csv = b"id,month,amount\n1,2026-10,499.00\n2,2026-11,\"1,299.00\"".to_vec();
    let pdf = binary_document();
    let named = b"%PDF-1.4\nRechnung\n%%EOF\n".to_vec();
    let named_as = "Rechnung für März 2026 – Kundennummer 1 (Café Zürich).pdf";
    // Attached in name order: `R` sorts before `a`.
    let documents: [(&str, &[u8]); 4] = [
        (named_as, &named),
        ("a-notes.txt", &notes),
        ("b-usage.csv", &csv),
        ("c-invoice.pdf", &pdf),
    ];
    for (name, bytes) in documents {
        p.write(&format!("docs/1/invoices/{name}"), bytes);
    }
    p.write(
        "crier.yaml",
        format!(
            "providers:\n  mail:\n    type: smtp\n    host: 127.0.0.1\n    port: {}\n    security: plain\n    from: Atlantic Fibre Zürich <billing@atlantic.example>\n    documents_dir: docs\nchannels:\n  email: mail\n",
            sink.port
        ),
    );
    // Templates with LF line ends, as an editor on Linux saves them.
    p.write(
        "jobs/t/invoice.email.j2",
        "Dear {{ customer.name }},\n\nyour invoice is attached.\n.\nThe line above is a dot.\n\n-- \nAtlantic Fibre\n",
    );
    p.write(
        "jobs/t/invoice.email.html.j2",
        "<p>Dear {{ customer.name }},</p>\n<p>your invoice is attached.</p>\n",
    );
    p.write(
        "jobs/invoice.yaml",
        "send_to: email\nsubject: \"Ihre Rechnung für März, {{ customer.name }}\"\ntemplate: t/invoice.email.j2\nhtml_template: t/invoice.email.html.j2\nattach: [invoices]\nrecipients:\n  where:\n    status: new\n",
    );

    let run = p.crier(&["send", "jobs/invoice.yaml", "--yes"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("2 sent, 0 failed, 0 skipped; 0 retries"),
        "{}",
        run.stdout
    );
    // An email run costs no SMS parts, so its summary does not count them.
    assert!(!run.stdout.contains("SMS parts"), "{}", run.stdout);

    let messages = sink.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    for (_, envelope) in &messages {
        assert_eq!(envelope["reply"], "250 2.0.0 Ok: queued", "{envelope}");
    }
    let saved = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = messages.iter().map(|(eml, _)| eml.clone()).collect();
    let mut facts = facts(&python, saved.path(), &paths);
    facts.sort_by(|a, b| a["to"][0].as_str().cmp(&b["to"][0].as_str()));
    let (ben, zoe) = (&facts[0], &facts[1]);

    for message in [ben, zoe] {
        // Every line of DATA ends in CRLF, as received, before any parsing.
        assert_eq!(message["bare_lf"], 0, "{message:#}");
        assert_eq!(message["bare_cr"], 0, "{message:#}");
        assert!(
            message["longest_line"].as_u64().unwrap() <= 998,
            "{message:#}"
        );
        assert_eq!(message["defects"], serde_json::json!([]), "{message:#}");
        // Non-ASCII header text is RFC 2047 encoded; the parser decodes it back.
        assert_eq!(message["header_ascii"], true, "{message:#}");
        assert_eq!(message["from_name"], "Atlantic Fibre Zürich");
        assert_eq!(message["from_address"], "billing@atlantic.example");
        let raw_from = message["raw_headers"]["from"].as_str().unwrap();
        assert!(raw_from.contains("=?utf-8?"), "{raw_from}");
    }
    assert_eq!(zoe["to"], serde_json::json!(["zoe@example.com"]));
    assert_eq!(zoe["subject"], "Ihre Rechnung für März, Zoë Ångström");
    let raw_subject = zoe["raw_headers"]["subject"].as_str().unwrap();
    assert!(raw_subject.contains("=?utf-8?"), "{raw_subject}");
    assert_eq!(ben["subject"], "Ihre Rechnung für März, Ben");

    // The body text, written with LF ends, arrives with CRLF only.
    let text = String::from_utf8(text_bytes(zoe)).unwrap();
    assert_eq!(zoe["text_charset"], "utf-8");
    assert_eq!(
        text.trim_end(),
        "Dear Zoë Ångström,\r\n\r\nyour invoice is attached.\r\n.\r\nThe line above is a dot.\r\n\r\n-- \r\nAtlantic Fibre"
    );
    let text = String::from_utf8(text_bytes(ben)).unwrap();
    assert!(text.starts_with("Dear Ben,\r\n\r\nyour"), "{text:?}");

    // Each attachment, saved, is the file itself; its type comes from its name and its
    // name survives RFC 2231 encoding.
    assert_eq!(ben["attachments"], serde_json::json!([]));
    let attachments = zoe["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 4, "{attachments:#?}");
    let types = [
        "application/pdf",
        "text/plain",
        "text/csv",
        "application/pdf",
    ];
    for ((attachment, (name, bytes)), content_type) in attachments.iter().zip(documents).zip(types)
    {
        assert_eq!(attachment["filename"], name, "{attachment:#}");
        assert_eq!(attachment["content_type"], content_type, "{attachment:#}");
        let got = std::fs::read(attachment["saved"].as_str().unwrap()).unwrap();
        assert!(got == bytes, "{name}: saved bytes differ from the file");
    }
    let dispositions = zoe["raw_headers"]["content_disposition"]
        .as_array()
        .unwrap();
    let named_header = dispositions[0].as_str().unwrap();
    assert!(named_header.contains("filename*"), "{named_header}");
}

/// The DSN Postfix writes when the next hop refuses `recipient` at RCPT TO, for the
/// message `original` sent with envelope sender `verp`.
fn postfix_dsn(verp: &str, recipient: &str, original: &str) -> String {
    let boundary = "4dLq2R1VbXz9sWq.1764586802/mail.atlantic.example";
    format!(
        "Return-Path: <>\n\
         Delivered-To: {verp}\n\
         Date: Tue,  1 Dec 2026 11:00:02 +0000 (UTC)\n\
         From: MAILER-DAEMON@mail.atlantic.example (Mail Delivery System)\n\
         Subject: Undelivered Mail Returned to Sender\n\
         To: {verp}\n\
         Auto-Submitted: auto-replied\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status;\n\
         \tboundary=\"{boundary}\"\n\
         Content-Transfer-Encoding: 8bit\n\
         Message-Id: <20261201110002.4dLq2R1VbXz9sWq@mail.atlantic.example>\n\
         \n\
         This is a MIME-encapsulated message.\n\
         \n\
         --{boundary}\n\
         Content-Description: Notification\n\
         Content-Type: text/plain; charset=utf-8\n\
         \n\
         This is the mail system at host mail.atlantic.example.\n\
         \n\
         <{recipient}>: host mx.example.com[203.0.113.25] said: 550 5.1.1\n\
         \x20   <{recipient}>: Recipient address rejected: User unknown (in reply to RCPT\n\
         \x20   TO command)\n\
         \n\
         --{boundary}\n\
         Content-Description: Delivery report\n\
         Content-Type: message/delivery-status\n\
         \n\
         Reporting-MTA: dns; mail.atlantic.example\n\
         X-Postfix-Queue-ID: 4dLq2R1VbXz9sWq\n\
         X-Postfix-Sender: rfc822; {verp}\n\
         Arrival-Date: Tue,  1 Dec 2026 11:00:01 +0000 (UTC)\n\
         \n\
         Final-Recipient: rfc822; {recipient}\n\
         Original-Recipient: rfc822;{recipient}\n\
         Action: failed\n\
         Status: 5.1.1\n\
         Remote-MTA: dns; mx.example.com\n\
         Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected:\n\
         \x20   User unknown\n\
         \n\
         --{boundary}\n\
         Content-Description: Undelivered Message\n\
         Content-Type: message/rfc822\n\
         Content-Transfer-Encoding: 8bit\n\
         \n\
         Return-Path: <{verp}>\n\
         {original}\n\
         --{boundary}--\n"
    )
}

/// `crier bounces ingest -` in `p` with `input` on standard input.
fn ingest(p: &Project, input: &[u8]) -> common::Run {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
        .args(["bounces", "ingest", "-"])
        .current_dir(p.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap().into()
}

#[test]
fn a_bounce_to_the_verp_sender_makes_the_message_undelivered_and_opts_the_address_out() {
    let Some(python) = python_with("aiosmtpd") else {
        return;
    };
    let sink = Sink::start(&python);
    let p = Project::new();
    p.write(
        "people.csv",
        "id,name,status,email\n1,Ann,new,Ann@Example.com\n2,Ben,new,ben@example.com\n",
    );
    assert_eq!(p.crier(&["import", "people.csv"]).code, 0);
    p.write(
        "crier.yaml",
        format!(
            "providers:\n  mail:\n    type: smtp\n    host: 127.0.0.1\n    port: {}\n    security: plain\n    from: Atlantic Fibre <billing@atlantic.example>\n    bounce_domain: bounces.atlantic.example\nchannels:\n  email: mail\n",
            sink.port
        ),
    );
    p.write(
        "jobs/notice.yaml",
        "send_to: email\nsubject: Maintenance tonight\nmessage: \"Dear {{ customer.name }}, we work on the network tonight.\"\nrecipients:\n  where:\n    status: new\n",
    );
    assert_eq!(
        p.crier(&["validate"]).code,
        0,
        "bounce_domain is known to validate"
    );
    let run = p.crier(&["send", "jobs/notice.yaml", "--yes"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    let logs = |p: &Project| -> Vec<Value> {
        let run = p.crier(&["logs", "--channel", "email", "--format", "json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        serde_json::from_str(&run.stdout).unwrap()
    };
    let before = logs(&p);
    let ann = before
        .iter()
        .find(|m| {
            m["address"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("ann@example.com")
        })
        .expect("Ann's message");
    let id = ann["id"].as_str().unwrap();
    assert_eq!(ann["state"], "sent");

    // The envelope sender the server was given is the message's VERP address; the
    // message's own From is unchanged.
    let verp = format!("bounces+{id}@bounces.atlantic.example");
    let messages = sink.messages();
    let (eml, envelope) = messages
        .iter()
        .find(|(_, e)| {
            e["rcpt_tos"][0]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case("ann@example.com")
        })
        .expect("Ann's email at the sink");
    assert_eq!(envelope["mail_from"], verp.as_str(), "{envelope}");
    let original = String::from_utf8(std::fs::read(eml).unwrap()).unwrap();
    assert!(
        original.contains("From: \"Atlantic Fibre\" <billing@atlantic.example>"),
        "{original}"
    );
    let other = messages.iter().find(|(e, _)| e != eml).unwrap();
    assert_ne!(
        other.1["mail_from"],
        verp.as_str(),
        "one VERP address per message"
    );

    // Unusable input: a non-zero exit naming what is missing, and nothing changes.
    let refused = ingest(&p, original.as_bytes());
    assert_eq!(refused.code, 65, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("no `message/delivery-status`"),
        "{}",
        refused.stderr
    );
    assert_eq!(logs(&p), before);

    let dsn = postfix_dsn(&verp, "Ann@Example.com", &original.replace("\r\n", "\n"));
    let run = ingest(&p, dsn.as_bytes());
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("{id}: undelivered")),
        "{}",
        run.stdout
    );

    let after = logs(&p);
    let ann = after.iter().find(|m| m["id"] == id).unwrap();
    assert_eq!(ann["state"], "undelivered", "{ann:#}");
    assert_eq!(ann["error_code"], "bounce:5.1.1");
    assert_eq!(
        ann["error_text"],
        "550 5.1.1 <Ann@Example.com>: Recipient address rejected: User unknown"
    );
    let ben = after.iter().find(|m| m["id"] != id).unwrap();
    assert_eq!(ben["state"], "sent", "the other message is untouched");

    let list = p.crier(&["optout", "list", "--format", "json"]);
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["address"], "ann@example.com");
    assert_eq!(list[0]["reason"], "bounce");

    // The next run skips her.
    let run = p.crier(&["send", "jobs/notice.yaml", "--yes"]);
    assert!(run.stdout.contains("1 sent"), "{}", run.stdout);
}
