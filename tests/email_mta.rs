//! Email that a strict MTA accepts and a recipient saves byte for byte: the real
//! `crier send` against a real SMTP server nobody on the project wrote (Python's
//! `aiosmtpd`, `tests/tools/smtp_sink.py`, which refuses bare LF like Postfix's
//! `smtpd_forbid_bare_newline`), with the DATA it received read by an independent parser
//! (Python's `email` package, `tests/tools/mail_facts.py`).
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
