//! Email that a strict MTA accepts and a recipient saves byte for byte: the real
//! `crier send` against a real SMTP server nobody on the project wrote (Python's
//! `aiosmtpd`, `tests/tools/smtp_sink.py`, which refuses bare LF like Postfix's
//! `smtpd_forbid_bare_newline`), with the DATA it received read by an independent parser
//! (Python's `email` package, `tests/tools/mail_facts.py`). And a bounce that finds its
//! message: the envelope sender the server recorded is the message's VERP address, and a
//! Postfix DSN to it piped into `crier bounces ingest -` makes the message `undelivered`.
//!
//! The same server receives the one-click unsubscribe and DKIM test's mail: `dkimpy`
//! (`tests/tools/dkim_facts.py`) verifies every message against the public keys of
//! `tests/fixtures/dkim/` (test-only keys), its DNS lookups answered locally, and the
//! real `crier serve` answers the unsubscribe links.
//!
//! Needs a Python with `aiosmtpd` (and `dkim` and `nacl` for DKIM): `CRIER_PYTHON`, else
//! `python3` if it has the modules. Without one a test says `skipped:` on stderr, and
//! fails when `CI` is set.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::Project;
use common::server::Server;
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
    let Some(python) = python_with("aiosmtpd, dkim") else {
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
    // Signed too: multipart, folded and encoded headers must verify as well.
    let (rsa_key, rsa_record) = test_key("rsa");
    p.write("keys/rsa.pem", &rsa_key);
    p.write(
        "crier.yaml",
        format!(
            "providers:\n  mail:\n    type: smtp\n    host: 127.0.0.1\n    port: {}\n    security: plain\n    from: Atlantic Fibre Zürich <billing@atlantic.example>\n    documents_dir: docs\n    dkim: {{ domain: atlantic.example, selector: rsa2026, private_key_file: keys/rsa.pem }}\nchannels:\n  email: mail\n",
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
        "send_to: email\nemail: { transactional: true }\nsubject: \"Ihre Rechnung für März, {{ customer.name }}\"\ntemplate: t/invoice.email.j2\nhtml_template: t/invoice.email.html.j2\nattach: [invoices]\nrecipients:\n  where:\n    status: new\n",
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
    let records = serde_json::json!({ "rsa2026._domainkey.atlantic.example": rsa_record });
    for signed in dkim_facts(&python, &records, &paths) {
        assert_eq!(signed["verified"], true, "{signed:#}");
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
    p.crier_stdin(&["bounces", "ingest", "-"], input)
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
        "send_to: email\nemail: { transactional: true }\nsubject: Maintenance tonight\nmessage: \"Dear {{ customer.name }}, we work on the network tonight.\"\nrecipients:\n  where:\n    status: new\n",
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

/// The test-only key pair `name` of `tests/fixtures/dkim/`: the private key file's text
/// and the TXT record of its public half.
fn test_key(name: &str) -> (String, String) {
    let dir = common::root().join("tests/fixtures/dkim");
    let read = |file: String| std::fs::read_to_string(dir.join(file)).unwrap();
    (
        read(format!("{name}.test-only.pem")),
        read(format!("{name}.test-only.txt")).trim().to_string(),
    )
}

/// `dkim_facts.py` on `messages`, with `records` as the DNS.
fn dkim_facts(python: &Path, records: &Value, messages: &[PathBuf]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let dns = dir.path().join("records.json");
    std::fs::write(&dns, records.to_string()).unwrap();
    let output = Command::new(python)
        .arg(tool("dkim_facts.py"))
        .arg(&dns)
        .args(messages)
        .output()
        .expect("run dkim_facts.py");
    assert!(
        output.status.success(),
        "dkim_facts.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let facts: Value = serde_json::from_slice(&output.stdout).unwrap();
    facts.as_array().unwrap().clone()
}

const UNSUBSCRIBE_SECRET: &str = "test-only unsubscribe key, 32+ characters long";

/// The opt-out list as `crier optout list --format json` prints it.
fn optouts(p: &Project) -> Value {
    let list = p.crier(&["optout", "list", "--format", "json"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    serde_json::from_str(&list.stdout).unwrap()
}

#[test]
fn unsubscribe_headers_and_dkim_verify_and_a_one_click_post_opts_the_address_out() {
    let Some(python) = python_with("aiosmtpd, dkim, nacl") else {
        return;
    };
    let sink = Sink::start(&python);
    let p = Project::new();
    p.write(
        "people.csv",
        "id,name,status,email\n1,Zoë Ångström,new,Zoe@Example.com\n2,Ben,new,ben@example.com\n",
    );
    assert_eq!(p.crier(&["import", "people.csv"]).code, 0);
    let (rsa_key, rsa_record) = test_key("rsa");
    let (ed_key, ed_record) = test_key("ed25519");
    p.write("keys/rsa.pem", &rsa_key);
    p.write("keys/ed25519.pem", &ed_key);
    let provider = |name: &str, from: &str, selector: &str, key: &str| {
        format!(
            "  {name}:\n    type: smtp\n    host: 127.0.0.1\n    port: {}\n    security: plain\n    from: Atlantic Fibre <{from}>\n    dkim: {{ domain: atlantic.example, selector: {selector}, private_key_file: keys/{key} }}\n",
            sink.port
        )
    };
    p.write(
        "crier.yaml",
        format!(
            "providers:\n{}{}{}email:\n  unsubscribe:\n    secret: ${{CRIER_UNSUBSCRIBE_SECRET}}\n    public_url: https://crier.atlantic.example/\n    mailto: unsubscribe@atlantic.example\n",
            provider("mail-rsa", "news@atlantic.example", "rsa2026", "rsa.pem"),
            provider("mail-ed", "news@mail.atlantic.example", "ed2026", "ed25519.pem"),
            // Not aligned: DMARC would not count its signature.
            provider("mail-partner", "news@partner.example", "rsa2026", "rsa.pem"),
        ),
    );
    let job = |provider: &str, extra: &str| {
        format!(
            "send_to: email\nprovider: {provider}\nsubject: \"News for {{{{ customer.name }}}}\"\nmessage: \"Hello {{{{ customer.name }}}},\\nthe news.\\nUnsubscribe: {{{{ unsubscribe_url }}}}\\n\"\nrecipients: {{}}\n{extra}"
        )
    };
    p.write("jobs/news-rsa.yaml", job("mail-rsa", ""));
    p.write("jobs/news-ed.yaml", job("mail-ed", ""));
    p.write(
        "jobs/notice.yaml",
        "send_to: email\nprovider: mail-rsa\nemail: { transactional: true }\nsubject: Maintenance tonight\nmessage: \"The network is down 01:00-03:00.\"\nrecipients: {}\n",
    );
    let env = [("CRIER_UNSUBSCRIBE_SECRET", UNSUBSCRIBE_SECRET)];

    // `providers check` prints the TXT record of each key and warns of the one whose
    // From domain does not align with its DKIM domain.
    let check = p.crier(&["providers", "check"]);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    for (name, selector, record) in [
        ("mail-ed", "ed2026", &ed_record),
        ("mail-partner", "rsa2026", &rsa_record),
        ("mail-rsa", "rsa2026", &rsa_record),
    ] {
        // A zone file's TXT value: quoted strings of at most 255 characters.
        let strings: Vec<String> = record
            .as_bytes()
            .chunks(255)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        let line = format!(
            "providers.{name}: DKIM public key: {selector}._domainkey.atlantic.example TXT {}",
            strings.join(" ")
        );
        assert!(check.stdout.contains(&line), "{line}\n{}", check.stdout);
    }
    assert_eq!(
        check.stderr.trim(),
        "warning: providers.mail-partner: the From domain `partner.example` does not align with dkim.domain `atlantic.example`: DMARC will not count the signature"
    );

    // Validation needs no secret; sending does, and says which.
    let check = p.crier(&["validate", "jobs"]);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);
    let refused = p.crier(&["send", "jobs/news-rsa.yaml", "--yes"]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("email.unsubscribe.secret")
            && refused.stderr.contains("CRIER_UNSUBSCRIBE_SECRET"),
        "{}",
        refused.stderr
    );
    assert!(sink.messages().is_empty());

    let mut runs = Vec::new();
    for job in ["news-rsa", "news-ed", "notice"] {
        let run = p.crier_env(&["send", &format!("jobs/{job}.yaml"), "--yes"], &env);
        assert_eq!(run.code, 0, "{job}: {}\n{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("2 sent, 0 failed"), "{}", run.stdout);
        assert!(!run.stderr.contains(UNSUBSCRIBE_SECRET), "{}", run.stderr);
        runs.push(run.stdout);
    }

    let messages = sink.messages();
    assert_eq!(messages.len(), 6, "{messages:?}");
    for (_, envelope) in &messages {
        assert_eq!(envelope["reply"], "250 2.0.0 Ok: queued", "{envelope}");
    }
    let paths: Vec<PathBuf> = messages.iter().map(|(eml, _)| eml.clone()).collect();
    let records = serde_json::json!({
        "rsa2026._domainkey.atlantic.example": rsa_record,
        "ed2026._domainkey.atlantic.example": ed_record,
    });
    let dkim = dkim_facts(&python, &records, &paths);
    let saved = tempfile::tempdir().unwrap();
    let mail = facts(&python, saved.path(), &paths);

    // Sent in job order, recipients in id order: Zoë and Ben for each job.
    let algorithms = ["rsa-sha256", "ed25519-sha256", "rsa-sha256"];
    let selectors = ["rsa2026", "ed2026", "rsa2026"];
    let (mut zoe_link, mut ben_link) = (None, None);
    for (i, (signed, parsed)) in dkim.iter().zip(&mail).enumerate() {
        let job = i / 2;
        assert_eq!(signed["verified"], true, "{signed:#}");
        let signature = &signed["signature"];
        assert_eq!(signature["a"], algorithms[job], "{signed:#}");
        assert_eq!(signature["d"], "atlantic.example");
        assert_eq!(signature["s"], selectors[job]);
        assert_eq!(signature["c"], "relaxed/relaxed");
        let covered: Vec<String> = signature["h"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_ascii_lowercase())
            .collect();
        for header in [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
            "list-unsubscribe",
            "list-unsubscribe-post",
        ] {
            assert!(covered.iter().any(|h| h == header), "{header}: {covered:?}");
        }
        assert_eq!(
            signed["lookups"],
            serde_json::json!([format!("{}._domainkey.atlantic.example", selectors[job])])
        );
        assert_eq!(parsed["defects"], serde_json::json!([]), "{parsed:#}");
        assert_eq!(parsed["bare_lf"], 0);
        if job == 2 {
            // Service mail: no unsubscribe headers at all.
            assert_eq!(signed["list_unsubscribe"], Value::Null, "{signed:#}");
            assert_eq!(signed["list_unsubscribe_post"], Value::Null, "{signed:#}");
            continue;
        }
        let header = signed["list_unsubscribe"].as_str().unwrap();
        let (https, mailto) = header.split_once(", ").unwrap();
        let url = https
            .strip_prefix("<https://crier.atlantic.example/u/")
            .and_then(|u| u.strip_suffix('>'))
            .unwrap_or_else(|| panic!("{header}"));
        assert_eq!(mailto, "<mailto:unsubscribe@atlantic.example>");
        assert_eq!(
            signed["list_unsubscribe_post"],
            "List-Unsubscribe=One-Click"
        );
        // `{{ unsubscribe_url }}` in the body is the same link.
        let text = String::from_utf8(text_bytes(parsed)).unwrap();
        assert!(
            text.contains(&format!("https://crier.atlantic.example/u/{url}")),
            "{text:?}"
        );
        match (job, parsed["to"][0].as_str()) {
            (0, Some("Zoe@Example.com")) => zoe_link = Some(format!("/u/{url}")),
            (1, Some("ben@example.com")) => ben_link = Some(format!("/u/{url}")),
            _ => {}
        }
    }
    let zoe_link = zoe_link.expect("Zoë's link in the RSA job");
    let ben_link = ben_link.expect("Ben's link in the Ed25519 job");

    // The server: a GET shows the page and changes nothing; a forged token, an altered
    // one and a POST without the one-click body are refused and change nothing.
    let server = Server::start(&p, &env, None);
    let page = server.get(&zoe_link);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.body.contains("Zoe@Example.com"), "{}", page.body);
    assert!(
        page.body.contains(&format!(
            "action=\"https://crier.atlantic.example{zoe_link}\""
        )) && page
            .body
            .contains("name=\"List-Unsubscribe\" value=\"One-Click\""),
        "{}",
        page.body
    );
    let form = [(
        "Content-Type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )];
    let one_click = b"List-Unsubscribe=One-Click".to_vec();
    let post =
        |server: &Server, path: &str, body: &[u8]| server.send("POST", path, &form, body.to_vec());
    let mut altered = zoe_link.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for (path, body, status) in [
        (altered.as_str(), &one_click[..], 403),
        ("/u/forged-token", &one_click[..], 403),
        (zoe_link.as_str(), b"List-Unsubscribe=Maybe".as_slice(), 400),
        (zoe_link.as_str(), b"".as_slice(), 400),
    ] {
        let answer = post(&server, path, body);
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(answer.location.is_none());
    }
    let log = server.stop();
    assert!(!log.contains(UNSUBSCRIBE_SECRET), "{log}");
    assert_eq!(optouts(&p), serde_json::json!([]));

    // One click: 200, no redirect, and the address is on the list with the run and
    // message; a second click changes nothing. Zoë's as a browser's form sends it, Ben's
    // as RFC 8058 says mail clients should (multipart/form-data).
    let server = Server::start(&p, &env, None);
    let multipart = [(
        "Content-Type".to_string(),
        "multipart/form-data; boundary=crier-test".to_string(),
    )];
    let multipart_body = b"--crier-test\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--crier-test--\r\n";
    for click in 0..4 {
        let answer = match click % 2 {
            0 => post(&server, &zoe_link, &one_click),
            _ => server.send("POST", &ben_link, &multipart, multipart_body.to_vec()),
        };
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.location.is_none());
        assert!(answer.body.contains("unsubscribed"), "{}", answer.body);
    }
    let log = server.stop();
    assert!(!log.contains(UNSUBSCRIBE_SECRET), "{log}");
    let list = optouts(&p);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    // In address order: Ben (from the Ed25519 job's run), then Zoë (the RSA job's).
    for (entry, (address, sent_by)) in list
        .iter()
        .zip([("ben@example.com", &runs[1]), ("zoe@example.com", &runs[0])])
    {
        assert_eq!(entry["address"], address);
        assert_eq!(entry["reason"], "unsubscribe");
        let run = entry["run"].as_str().unwrap();
        let message = entry["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{run}-")), "{message}");
        assert!(sent_by.contains(run), "{sent_by}");
    }

    // The next run skips both.
    let again = p.crier_env(&["send", "jobs/news-rsa.yaml", "--yes"], &env);
    assert!(
        again.stdout.contains("0 to send, 2 skipped (opted_out 2)"),
        "{}",
        again.stdout
    );
}
