//! An email job end to end: `crier send` through the `smtp` provider to a real SMTP
//! server on loopback, with the HTML part (auto-escaped) and invoices from the documents
//! folder; and a `portal+email` job landing in the portal inbox too.

mod common;
#[path = "mocks/smtp.rs"]
mod smtp_mock;

use common::Project;
use mail_parser::{MessageParser, MimeHeaders};

const PASSWORD: &str = "mail-Pa55word-secret";

#[test]
fn an_email_job_sends_text_html_and_invoices_over_smtp() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(smtp_mock::start(Some((
        "crier".to_string(),
        PASSWORD.to_string(),
    ))));
    let p = Project::new();
    p.write(
        "people.csv",
        "id,name,status,email,login\n\
         1,Ann <b>Smith</b>,new,ann@example.com,ann\n\
         2,Ben,new,ben@example.com,ben\n\
         3,No Mail,new,,none\n",
    );
    assert_eq!(p.crier(&["import", "people.csv"]).code, 0);
    let invoice = b"%PDF-1.4 invoice 2026-11 for Ann".to_vec();
    p.write("docs/1/invoices/2026-11.pdf", &invoice);
    p.write(
        "crier.yaml",
        format!(
            "providers:\n  mail:\n    type: smtp\n    host: 127.0.0.1\n    port: {}\n    security: plain\n    username: crier\n    password: ${{SMTP_PASSWORD}}\n    from: Atlantic Fibre <billing@atlantic.example>\n    documents_dir: docs\nchannels:\n  email: mail\nemail:\n  unsubscribe:\n    secret: ${{CRIER_UNSUBSCRIBE_SECRET}}\n    public_url: https://crier.atlantic.example\n",
            server.port
        ),
    );
    p.write(
        "jobs/t/welcome.email.j2",
        "Dear {{ customer.name }},\nwelcome.\n",
    );
    p.write(
        "jobs/t/welcome.email.html.j2",
        "<p>Dear {{ customer.name }},</p><p>welcome.</p>",
    );
    p.write(
        "jobs/welcome.yaml",
        "send_to: email\nsubject: \"Welcome, {{ customer.name }}\"\ntemplate: t/welcome.email.j2\nhtml_template: t/welcome.email.html.j2\nattach: [invoices]\nrecipients:\n  where:\n    status: new\n",
    );
    let run = p.crier_env(
        &["send", "jobs/welcome.yaml", "--yes"],
        &[
            ("SMTP_PASSWORD", PASSWORD),
            (
                "CRIER_UNSUBSCRIBE_SECRET",
                "an unsubscribe key of 32 characters+",
            ),
        ],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    // An email run costs no SMS parts: its summary does not count them.
    assert!(
        run.stdout
            .contains("2 sent, 0 failed, 1 skipped (no_email 1); 0 retries"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("SMS parts"), "{}", run.stdout);
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD));

    let mut received = server.messages();
    assert_eq!(received.len(), 2);
    received.sort_by(|a, b| a.to.cmp(&b.to));
    assert_eq!(received[0].to, ["ann@example.com"]);
    let ann = MessageParser::default().parse(&received[0].data).unwrap();
    assert_eq!(ann.subject(), Some("Welcome, Ann <b>Smith</b>"));
    assert_eq!(
        ann.body_text(0).unwrap().replace("\r\n", "\n").trim_end(),
        "Dear Ann <b>Smith</b>,\nwelcome."
    );
    // The HTML part escapes what the customer's data holds.
    let html = ann.body_html(0).unwrap();
    assert!(
        html.contains("Dear Ann &lt;b&gt;Smith&lt;&#x2f;b&gt;,"),
        "{html}"
    );
    assert!(!html.contains("<b>"), "{html}");
    let attachment = ann.attachment(0).expect("the invoice");
    assert_eq!(attachment.attachment_name(), Some("2026-11.pdf"));
    assert_eq!(attachment.contents(), invoice.as_slice());
    // A welcome is not service mail: it offers one-click unsubscribe.
    let header = |name: &str| {
        ann.header_raw(name)
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let unsubscribe = header("List-Unsubscribe").expect("List-Unsubscribe");
    assert!(
        unsubscribe.starts_with("<https://crier.atlantic.example/u/") && unsubscribe.ends_with('>'),
        "{unsubscribe}"
    );
    assert_eq!(
        header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    // Ben has no invoices: his welcome goes without.
    let ben = MessageParser::default().parse(&received[1].data).unwrap();
    assert_eq!(ben.attachment_count(), 0);

    // The history has each message sent, with the Message-ID as the provider's id.
    let env = [("SMTP_PASSWORD", PASSWORD)];
    let logs = p.crier_env(&["logs", "--format", "json", "--channel", "email"], &env);
    let messages: serde_json::Value = serde_json::from_str(&logs.stdout).unwrap();
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 3);
    let sent: Vec<_> = messages.iter().filter(|m| m["state"] == "sent").collect();
    assert_eq!(sent.len(), 2);
    for m in sent {
        let pid = m["provider_message_id"].as_str().unwrap();
        assert!(
            pid.starts_with("<crier.") || pid.starts_with("crier."),
            "{pid}"
        );
    }
    let export = p.crier_env(&["logs", "--format", "csv"], &env);
    assert!(!export.stdout.contains(PASSWORD));
}

#[test]
fn a_portal_and_email_job_fills_the_inbox_and_the_outbox() {
    let p = Project::new();
    p.write(
        "people.csv",
        "id,name,status,email,login\n1,Ann,active,ann@example.com,ann\n2,Ben,active,,ben\n",
    );
    assert_eq!(p.crier(&["import", "people.csv"]).code, 0);
    p.write(
        "jobs/maint.yaml",
        "send_to: portal+email\nsubject: \"Maintenance tonight\"\nmessage: \"Hi {{ customer.name }}, the network is down 01:00-03:00.\"\nrecipients: {}\n",
    );
    let run = p.crier(&["send", "jobs/maint.yaml", "--yes"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("3 sent, 0 failed, 1 skipped (no_email 1); 0 retries"),
        "{}",
        run.stdout
    );
    let inbox = p.crier(&["portal", "inbox", "2", "--format", "json"]);
    let items: serde_json::Value = serde_json::from_str(&inbox.stdout).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["title"], "Maintenance tonight");
    assert_eq!(items[0]["body"], "Hi Ben, the network is down 01:00-03:00.");
    assert!(items[0]["read_at"].is_null());
    let id = items[0]["id"].as_str().unwrap().to_string();
    assert_eq!(p.crier(&["portal", "read", "2", &id]).code, 0);
    let again = p.crier(&["portal", "inbox", "2", "--format", "json"]);
    let items: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert!(items[0]["read_at"].is_i64());
    let missing = p.crier(&["portal", "read", "1", &id]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("customer 1 has no message"),
        "{}",
        missing.stderr
    );
    // Ann's email went to the outbox (the default email provider).
    let outbox = std::fs::read_to_string(p.path().join("data/outbox/email.jsonl")).unwrap();
    assert_eq!(outbox.lines().count(), 1);
    assert!(outbox.contains("ann@example.com"));
}
