//! The email API providers end to end: each client against a local mock speaking its
//! real HTTP API over TCP on loopback (the request as the mock sees it, faults, wrong
//! credentials, no secret in any outcome).

mod mocks;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use crier::job::{Channel, DocumentKind};
use crier::provider::mailgun::{Mailgun, MailgunConfig};
use crier::provider::sendgrid::{Sendgrid, SendgridConfig};
use crier::provider::{Provider, RoutedMessage, SendOutcome};
use mocks::Fault;
use serde_json::json;

const TIMEOUT: &str = "1s";
const SLOW: Duration = Duration::from_millis(1600);
const MESSAGE_ID: &str = "01JDQ7ZK5X3V9M2C8B4N6P1R0T-000042";
const TO: &str = "ann@customer.example";
const INVOICE: &[u8] = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\nfake invoice\r\n";

fn client() -> reqwest::Client {
    crier::provider::http_client()
}

/// A temp `documents_dir` holding customer 7's invoice.
fn documents() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("7/invoices");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("INV-0042.pdf"), INVOICE).unwrap();
    dir
}

fn message(attach: bool) -> RoutedMessage {
    RoutedMessage {
        id: MESSAGE_ID.into(),
        channel: Channel::Email,
        to: TO.into(),
        subject: Some("Your invoice is due".into()),
        body: "Hi Ann,\nyour invoice is attached.".into(),
        html: Some("<p>Hi Ann,<br>your invoice is attached.</p>".into()),
        encoding: None,
        parts: 1,
        recipient_id: 7,
        attach: if attach {
            vec![DocumentKind::Invoices]
        } else {
            vec![]
        },
        dedup_id: 0,
    }
}

fn kind(outcome: &SendOutcome) -> String {
    match outcome {
        SendOutcome::Sent { .. } => "sent".into(),
        SendOutcome::Retry { .. } => "retry".into(),
        SendOutcome::RetryAfter { after, .. } => format!("retry after {}", after.as_secs()),
        SendOutcome::Rejected { code, .. } => format!("rejected {code}"),
        SendOutcome::Unknown { .. } => "unknown".into(),
        SendOutcome::Resubmit { .. } => "resubmit".into(),
        SendOutcome::Halt { code, .. } => format!("halt {code}"),
    }
}

fn sent_id(outcome: &SendOutcome) -> &str {
    match outcome {
        SendOutcome::Sent { provider_id } => provider_id,
        other => panic!("expected Sent, got {other:?}"),
    }
}

// ---------------------------------------------------------------- SendGrid

const SG_KEY: &str = "SG.test-key.0123456789abcdefghijklmnopqrstuvwxyz";
const SG_FROM: &str = "billing@acme.example";

fn sendgrid(url: &str, key: &str, documents_dir: &Path) -> Sendgrid {
    let config: SendgridConfig = serde_yaml::from_str(&format!(
        "api_key: {key}\nfrom: Acme ISP <{SG_FROM}>\nbase_url: {url}\ndocuments_dir: {}\nlimits: {{timeout: {TIMEOUT}}}\n",
        documents_dir.display()
    ))
    .unwrap();
    Sendgrid::new(&config, client()).unwrap()
}

#[tokio::test]
async fn sendgrid_sends_mail_send_json_with_attachments_and_crier_id() {
    let mock = mocks::sendgrid(SG_KEY, SG_FROM).await;
    let docs = documents();
    let outcome = sendgrid(&mock.url, SG_KEY, docs.path())
        .send(&message(true))
        .await;
    let accepted = mock.state.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(sent_id(&outcome), accepted[0].provider_id, "X-Message-Id");
    assert_eq!(accepted[0].to, TO);

    let req = mock.state.last_request().unwrap();
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {SG_KEY}").as_str())
    );
    let body = req.json().unwrap();
    let p = &body["personalizations"][0];
    assert_eq!(p["to"], json!([{"email": TO}]));
    assert_eq!(p["custom_args"]["crier_message_id"], MESSAGE_ID);
    assert_eq!(body["from"], json!({"email": SG_FROM, "name": "Acme ISP"}));
    assert_eq!(body["subject"], "Your invoice is due");
    assert_eq!(body["content"][0]["type"], "text/plain");
    assert_eq!(body["content"][1]["type"], "text/html");
    let a = &body["attachments"][0];
    assert_eq!(a["filename"], "INV-0042.pdf");
    assert_eq!(a["type"], "application/pdf");
    assert_eq!(a["disposition"], "attachment");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(a["content"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, INVOICE, "the file byte for byte");
}

#[tokio::test]
async fn sendgrid_refusals_and_faults_map_to_their_outcomes_without_the_key() {
    let mock = mocks::sendgrid(SG_KEY, SG_FROM).await;
    let docs = documents();
    let good = sendgrid(&mock.url, SG_KEY, docs.path());
    // A wrong key halts the run; so does a sender SendGrid has not verified.
    let wrong = sendgrid(&mock.url, "SG.wrong-key-0123456789", docs.path());
    assert_eq!(
        kind(&wrong.send(&message(false)).await),
        "halt sendgrid:401"
    );
    let mock_other = mocks::sendgrid(SG_KEY, "someone@else.example").await;
    let unverified = sendgrid(&mock_other.url, SG_KEY, docs.path());
    assert_eq!(
        kind(&unverified.send(&message(false)).await),
        "halt sendgrid:403"
    );
    // An address SendGrid refuses.
    let mut bad = message(false);
    bad.to = "not an address".into();
    let refused = good.send(&bad).await;
    assert_eq!(kind(&refused), "rejected sendgrid:400");
    assert!(format!("{refused:?}").contains("personalizations.0.to.0.email"));

    let echo = format!(r#"{{"errors":[{{"message":"bad key {SG_KEY}","field":null}}]}}"#);
    mock.state.push_faults([
        Fault::Status(
            429,
            r#"{"errors":[{"message":"too many requests"}]}"#.into(),
            Some(3),
        ),
        Fault::Status(429, "".into(), None),
        Fault::Status(500, "".into(), None),
        Fault::Status(503, "".into(), None),
        Fault::Status(413, echo, None),
        Fault::Drop,
        Fault::Delay(SLOW),
    ]);
    let mut got = Vec::new();
    for _ in 0..7 {
        let outcome = good.send(&message(false)).await;
        assert!(
            !format!("{outcome:?}").contains(SG_KEY),
            "the key leaked: {outcome:?}"
        );
        got.push(kind(&outcome));
    }
    assert_eq!(
        got,
        [
            "retry after 3",
            "retry",
            "unknown",
            "retry",
            "rejected sendgrid:413",
            "unknown",
            "unknown",
        ]
    );
    // A dead port never connected: retried.
    let dead = sendgrid("http://127.0.0.1:9", SG_KEY, docs.path());
    assert_eq!(kind(&dead.send(&message(false)).await), "retry");
}

// ---------------------------------------------------------------- Mailgun

const MG_KEY: &str = "key-0123456789abcdef0123456789abcdef";
const MG_DOMAIN: &str = "mg.acme.example";

fn mailgun(url: &str, key: &str, domain: &str, documents_dir: &Path) -> Mailgun {
    let config: MailgunConfig = serde_yaml::from_str(&format!(
        "api_key: {key}\ndomain: {domain}\nfrom: Acme ISP <billing@{MG_DOMAIN}>\nregion: eu\nbase_url: {url}\ndocuments_dir: {}\nlimits: {{timeout: {TIMEOUT}}}\n",
        documents_dir.display()
    ))
    .unwrap();
    Mailgun::new(&config, client()).unwrap()
}

#[tokio::test]
async fn mailgun_sends_multipart_with_basic_auth_attachments_and_crier_id() {
    let mock = mocks::mailgun(MG_DOMAIN, MG_KEY).await;
    let docs = documents();
    let outcome = mailgun(&mock.url, MG_KEY, MG_DOMAIN, docs.path())
        .send(&message(true))
        .await;
    let accepted = mock.state.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        sent_id(&outcome),
        accepted[0].provider_id,
        "the id without <>"
    );
    assert!(!sent_id(&outcome).starts_with('<'));

    let req = mock.state.last_request().unwrap();
    assert_eq!(req.path, format!("/v3/{MG_DOMAIN}/messages"));
    assert_eq!(req.basic_auth(), Some(("api".into(), MG_KEY.into())));
    assert!(req.content_type().starts_with("multipart/form-data"));
    let parts = req.multipart();
    let field = |name: &str| {
        parts
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.text())
            .unwrap_or_else(|| panic!("no {name} in {parts:?}"))
    };
    assert_eq!(field("from"), format!("Acme ISP <billing@{MG_DOMAIN}>"));
    assert_eq!(field("to"), TO);
    assert_eq!(field("subject"), "Your invoice is due");
    assert_eq!(field("text"), "Hi Ann,\nyour invoice is attached.");
    assert!(field("html").starts_with("<p>"));
    assert_eq!(field("v:crier_message_id"), MESSAGE_ID);
    let file = parts.iter().find(|p| p.name == "attachment").unwrap();
    assert_eq!(file.filename.as_deref(), Some("INV-0042.pdf"));
    assert_eq!(file.content_type.as_deref(), Some("application/pdf"));
    assert_eq!(file.data, INVOICE, "the file byte for byte");
}

#[tokio::test]
async fn mailgun_refusals_and_faults_map_to_their_outcomes_without_the_key() {
    let mock = mocks::mailgun(MG_DOMAIN, MG_KEY).await;
    let docs = documents();
    let good = mailgun(&mock.url, MG_KEY, MG_DOMAIN, docs.path());
    let wrong = mailgun(&mock.url, "key-wrong-0123456789", MG_DOMAIN, docs.path());
    assert_eq!(kind(&wrong.send(&message(false)).await), "halt mailgun:401");
    let elsewhere = mailgun(&mock.url, MG_KEY, "mg.other.example", docs.path());
    assert_eq!(
        kind(&elsewhere.send(&message(false)).await),
        "halt mailgun:404"
    );
    let mut bad = message(false);
    bad.to = "not an address".into();
    let refused = good.send(&bad).await;
    assert_eq!(kind(&refused), "rejected mailgun:400");
    assert!(format!("{refused:?}").contains("not a valid address"));

    let echo = format!(r#"{{"message":"key {MG_KEY} may not send"}}"#);
    mock.state.push_faults([
        Fault::Status(429, r#"{"message":"Too many requests"}"#.into(), Some(5)),
        Fault::Status(500, r#"{"message":"Internal Server Error"}"#.into(), None),
        Fault::Status(402, echo, None),
        Fault::Status(413, "".into(), None),
        Fault::AcceptThenDrop,
        Fault::Delay(SLOW),
    ]);
    let mut got = Vec::new();
    for _ in 0..6 {
        let outcome = good.send(&message(false)).await;
        assert!(
            !format!("{outcome:?}").contains(MG_KEY),
            "the key leaked: {outcome:?}"
        );
        got.push(kind(&outcome));
    }
    assert_eq!(
        got,
        [
            "retry after 5",
            "unknown",
            "halt mailgun:402",
            "rejected mailgun:413",
            "unknown",
            "unknown",
        ]
    );
}
