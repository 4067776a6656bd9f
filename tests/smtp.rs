//! The SMTP provider end to end: `Smtp::new` + `Provider::send` against a real SMTP
//! server on loopback (`tests/mocks/smtp.rs`), messages read back with mail-parser.

#[path = "mocks/smtp.rs"]
mod smtp_mock;

use std::path::Path;
use std::time::{Duration, Instant};

use crier::job::{Channel, DocumentKind};
use crier::provider::smtp::{Smtp, SmtpConfig, documents};
use crier::provider::{Provider, RoutedMessage, SendOutcome};
use mail_parser::{MessageParser, MimeHeaders};
use smtp_mock::Stage;

const PASSWORD: &str = "s3cret-Pa55word";

fn config(port: u16, extra: &str) -> SmtpConfig {
    let yaml = format!(
        "host: 127.0.0.1\nport: {port}\nsecurity: plain\nfrom: Acme ISP <billing@acme.example>\n{extra}"
    );
    serde_yaml::from_str(&yaml).expect("valid smtp config")
}

fn message(to: &str, recipient_id: u64, attach: Vec<DocumentKind>) -> RoutedMessage {
    RoutedMessage {
        id: "run7-42".into(),
        channel: Channel::Email,
        to: to.into(),
        subject: Some("Your invoice".into()),
        body: "Hello Ann,\r\n.a line starting with a dot\r\nRegards".into(),
        html: None,
        encoding: None,
        parts: 1,
        recipient_id,
        attach,
        unsubscribe: None,
        dedup_id: 1,
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Every text an outcome carries, for secrecy checks.
fn outcome_text(outcome: &SendOutcome) -> String {
    format!("{outcome:?}")
}

#[tokio::test]
async fn delivers_text_html_and_invoice_pdfs_with_headers() {
    let server = smtp_mock::start(None).await;
    let docs = tempfile::tempdir().unwrap();
    // Binary content with a line that starts with a dot and non-UTF-8 bytes.
    let first: Vec<u8> = b"%PDF-1.4\r\n.dot line\r\n\x00\xff\xfe end".to_vec();
    let second: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    write(&docs.path().join("42/invoices/2026-02.pdf"), &second);
    write(&docs.path().join("42/invoices/2026-01.pdf"), &first);
    write(&docs.path().join("42/payments/p.pdf"), b"not requested");
    let smtp = Smtp::new(&config(
        server.port,
        &format!("documents_dir: {}", docs.path().display()),
    ))
    .unwrap();

    let mut msg = message(
        "Ann Smith <ann@example.net>",
        42,
        vec![DocumentKind::Invoices],
    );
    msg.html = Some("<p>Hello <b>Ann</b></p>".into());
    let outcome = smtp.send(&msg).await;

    let SendOutcome::Sent { provider_id } = outcome else {
        panic!("expected Sent, got {outcome:?}");
    };
    let received = server.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].from, "billing@acme.example");
    assert_eq!(received[0].to, vec!["ann@example.net".to_string()]);

    let parsed = MessageParser::default().parse(&received[0].data).unwrap();
    let from = parsed.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("billing@acme.example"));
    assert_eq!(from.name.as_deref(), Some("Acme ISP"));
    assert_eq!(
        parsed.to().unwrap().first().unwrap().address(),
        Some("ann@example.net")
    );
    assert_eq!(parsed.subject(), Some("Your invoice"));
    assert_eq!(
        parsed.header("X-Crier-Message-Id").unwrap().as_text(),
        Some("run7-42")
    );
    assert_eq!(format!("<{}>", parsed.message_id().unwrap()), provider_id);
    let text = parsed.body_text(0).unwrap();
    assert!(text.contains(".a line starting with a dot"), "{text}");
    assert!(
        parsed
            .body_html(0)
            .unwrap()
            .contains("<p>Hello <b>Ann</b></p>")
    );

    let attachments: Vec<_> = parsed.attachments().collect();
    assert_eq!(attachments.len(), 2, "only the invoices, not the payments");
    assert_eq!(attachments[0].attachment_name(), Some("2026-01.pdf"));
    assert_eq!(attachments[0].contents(), &first[..]);
    assert_eq!(attachments[1].attachment_name(), Some("2026-02.pdf"));
    assert_eq!(attachments[1].contents(), &second[..]);
    for attachment in &attachments {
        let ctype = attachment.content_type().unwrap();
        assert_eq!(
            (ctype.ctype(), ctype.subtype()),
            ("application", Some("pdf"))
        );
    }
}

#[tokio::test]
async fn text_only_message_has_no_html_and_no_attachments() {
    let server = smtp_mock::start(None).await;
    let smtp = Smtp::new(&config(server.port, "")).unwrap();
    let outcome = smtp.send(&message("ann@example.net", 1, vec![])).await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    let data = server.messages()[0].data.clone();
    let raw = String::from_utf8_lossy(&data);
    assert!(raw.contains("Content-Type: text/plain"), "{raw}");
    assert!(
        !raw.contains("text/html") && !raw.contains("multipart/"),
        "{raw}"
    );
    let parsed = MessageParser::default().parse(&data).unwrap();
    assert_eq!(parsed.attachment_count(), 0);
    assert!(parsed.body_text(0).unwrap().starts_with("Hello Ann,"));
}

#[tokio::test]
async fn logs_in_and_a_refused_password_halts_without_leaking_it() {
    let server = smtp_mock::start(Some(("crier".into(), PASSWORD.into()))).await;

    let good = Smtp::new(&config(
        server.port,
        &format!("username: crier\npassword: {PASSWORD}"),
    ))
    .unwrap();
    let outcome = good.send(&message("ann@example.net", 1, vec![])).await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    assert_eq!(server.auth_attempts(), vec![format!("crier\0{PASSWORD}")]);
    assert_eq!(good.balance().await, Ok(None));

    let bad_config = config(server.port, "username: crier\npassword: wrong-Pa55word");
    let bad = Smtp::new(&bad_config).unwrap();
    let outcome = bad.send(&message("bob@example.net", 2, vec![])).await;
    let SendOutcome::Halt { code, text } = &outcome else {
        panic!("expected Halt, got {outcome:?}");
    };
    assert_eq!(code, "smtp:535");
    assert!(
        text.contains("Authentication credentials invalid"),
        "{text}"
    );
    let balance = bad.balance().await.unwrap_err();
    assert!(balance.contains("refused the login"), "{balance}");
    assert_eq!(server.messages().len(), 1, "the refused login sent nothing");

    for printed in [
        outcome_text(&outcome),
        balance,
        format!("{bad:?} {good:?} {bad_config:?}"),
    ] {
        assert!(!printed.contains("wrong-Pa55word"), "{printed}");
        assert!(!printed.contains(PASSWORD), "{printed}");
    }
}

#[tokio::test]
async fn a_server_echoing_the_password_is_redacted() {
    let server = smtp_mock::start(Some(("crier".into(), PASSWORD.into()))).await;
    server.push_reply(
        Stage::Rcpt,
        format!("550 5.7.1 user crier with password {PASSWORD} may not relay"),
    );
    let smtp = Smtp::new(&config(
        server.port,
        &format!("username: crier\npassword: {PASSWORD}"),
    ))
    .unwrap();
    let outcome = smtp.send(&message("ann@example.net", 1, vec![])).await;
    let SendOutcome::Rejected { code, text } = &outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert_eq!(code, "smtp:550");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(
        text.contains("with password <redacted> may not relay"),
        "{text}"
    );
}

#[tokio::test]
async fn temporary_refusal_at_rcpt_retries_and_the_next_send_goes_through() {
    let server = smtp_mock::start(None).await;
    server.push_reply(Stage::Rcpt, "450 4.2.1 mailbox busy, try later".into());
    let smtp = Smtp::new(&config(server.port, "")).unwrap();

    let outcome = smtp.send(&message("ann@example.net", 1, vec![])).await;
    let SendOutcome::Retry { reason } = &outcome else {
        panic!("expected Retry, got {outcome:?}");
    };
    assert!(
        reason.contains("450") && reason.contains("try later"),
        "{reason}"
    );
    assert!(server.messages().is_empty());

    let outcome = smtp.send(&message("ann@example.net", 1, vec![])).await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    assert_eq!(server.messages().len(), 1);
    assert_eq!(server.connections(), 1, "RSET kept the connection usable");
}

#[tokio::test]
async fn permanent_refusal_is_rejected_with_code_and_server_text() {
    let server = smtp_mock::start(None).await;
    server.push_reply(Stage::Rcpt, "550 5.1.1 no such user here".into());
    server.push_reply(Stage::Data, "554 5.7.1 message looks like spam".into());
    let smtp = Smtp::new(&config(server.port, "")).unwrap();

    let outcome = smtp.send(&message("nobody@example.net", 1, vec![])).await;
    assert_eq!(
        outcome,
        SendOutcome::Rejected {
            code: "smtp:550".into(),
            text: "5.1.1 no such user here".into()
        }
    );
    let outcome = smtp.send(&message("ann@example.net", 1, vec![])).await;
    assert_eq!(
        outcome,
        SendOutcome::Rejected {
            code: "smtp:554".into(),
            text: "5.7.1 message looks like spam".into()
        }
    );
    assert!(server.messages().is_empty());

    // Each refusal reset the transaction; the same connection carries the next message.
    let outcome = smtp.send(&message("ann@example.net", 1, vec![])).await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    assert_eq!(server.messages().len(), 1);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_server_silent_after_the_data_is_unknown_within_the_timeout() {
    let server = smtp_mock::start(None).await;
    server.set_stall_after_data(true);
    let smtp = Smtp::new(&config(server.port, "limits:\n  timeout: 300ms")).unwrap();

    let started = Instant::now();
    let outcome = smtp.send(&message("ann@example.net", 1, vec![])).await;
    let took = started.elapsed();
    assert!(
        matches!(outcome, SendOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(server.messages().len(), 1, "the server did get the message");

    // The abandoned connection is never reused: the next send opens a fresh one.
    server.set_stall_after_data(false);
    let outcome = smtp.send(&message("bob@example.net", 2, vec![])).await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    assert_eq!(server.connections(), 2);
    assert_eq!(server.messages()[1].to, vec!["bob@example.net".to_string()]);
}

#[tokio::test]
async fn several_sends_share_one_connection() {
    let server = smtp_mock::start(None).await;
    let smtp = Smtp::new(&config(server.port, "")).unwrap();
    for i in 0..5 {
        let outcome = smtp
            .send(&message(&format!("user{i}@example.net"), i, vec![]))
            .await;
        assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    }
    assert_eq!(server.messages().len(), 5);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let smtp = Smtp::new(&config(port, "")).unwrap();
    let outcome = smtp.send(&message("ann@example.net", 1, vec![])).await;
    let SendOutcome::Retry { reason } = &outcome else {
        panic!("expected Retry, got {outcome:?}");
    };
    assert!(reason.contains("could not connect"), "{reason}");
    let balance = smtp.balance().await.unwrap_err();
    assert!(balance.contains("could not connect"), "{balance}");
}

#[cfg(unix)]
#[tokio::test]
async fn an_attachment_leading_outside_documents_dir_is_refused_and_nothing_is_sent() {
    let server = smtp_mock::start(None).await;
    let docs = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(
        &outside.path().join("secret.pdf"),
        b"someone else's invoice",
    );
    write(&docs.path().join("7/invoices/a.pdf"), b"fine");
    std::os::unix::fs::symlink(
        outside.path().join("secret.pdf"),
        docs.path().join("7/invoices/b.pdf"),
    )
    .unwrap();
    let smtp = Smtp::new(&config(
        server.port,
        &format!("documents_dir: {}", docs.path().display()),
    ))
    .unwrap();

    let outcome = smtp
        .send(&message("ann@example.net", 7, vec![DocumentKind::Invoices]))
        .await;
    let SendOutcome::Rejected { code, text } = &outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert_eq!(code, "smtp:attachment");
    assert!(text.contains("7/invoices/b.pdf"), "{text}");
    assert!(text.contains("outside documents_dir"), "{text}");
    assert!(!text.contains(&*outside.path().to_string_lossy()), "{text}");
    assert!(server.messages().is_empty());
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn attachments_without_documents_dir_or_a_bad_address_are_rejected() {
    let server = smtp_mock::start(None).await;
    let smtp = Smtp::new(&config(server.port, "")).unwrap();
    let outcome = smtp
        .send(&message(
            "ann@example.net",
            7,
            vec![DocumentKind::CreditNotes],
        ))
        .await;
    let SendOutcome::Rejected { code, text } = &outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert_eq!(code, "smtp:attachment");
    assert!(text.contains("documents_dir"), "{text}");

    let outcome = smtp.send(&message("not an address", 7, vec![])).await;
    let SendOutcome::Rejected { code, text } = &outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert_eq!(code, "smtp:address");
    assert!(text.contains("`not an address`"), "{text}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_missing_folder_sends_without_that_kind() {
    let server = smtp_mock::start(None).await;
    let docs = tempfile::tempdir().unwrap();
    write(&docs.path().join("9/credit_notes/cn.bin"), b"\x01\x02");
    let smtp = Smtp::new(&config(
        server.port,
        &format!("documents_dir: {}", docs.path().display()),
    ))
    .unwrap();
    let attach = vec![DocumentKind::Invoices, DocumentKind::CreditNotes];
    let outcome = smtp.send(&message("ann@example.net", 9, attach)).await;
    assert!(matches!(outcome, SendOutcome::Sent { .. }), "{outcome:?}");
    let received = server.messages();
    let parsed = MessageParser::default().parse(&received[0].data).unwrap();
    let attachments: Vec<_> = parsed.attachments().collect();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].attachment_name(), Some("cn.bin"));
    let ctype = attachments[0].content_type().unwrap();
    assert_eq!(
        (ctype.ctype(), ctype.subtype()),
        ("application", Some("octet-stream"))
    );
    assert_eq!(
        documents(docs.path(), 9, &[DocumentKind::Invoices]).unwrap(),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn a_bad_from_fails_at_build_time() {
    let mut config = config(25, "");
    config.from = "billing at acme".into();
    let error = Smtp::new(&config).unwrap_err();
    assert!(
        error.contains("from") && error.contains("billing at acme"),
        "{error}"
    );
}
