//! The email API providers end to end: each client against a local mock speaking its
//! real HTTP API over TCP on loopback (the request as the mock sees it, faults, wrong
//! credentials, no secret in any outcome), and each provider's event webhook through the
//! real `crier serve`: signed events move sent messages to delivered / undelivered /
//! failed and put bounces and complaints on the opt-out list; forged, stale or unsigned
//! requests are refused and change nothing.

mod common;
mod mocks;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::Project;
use common::server::Server;
use crier::job::{Channel, DocumentKind};
use crier::provider::mailgun::{Mailgun, MailgunConfig};
use crier::provider::sendgrid::{Sendgrid, SendgridConfig};
use crier::provider::{Balance, Provider, RoutedMessage, SendOutcome};
use crier::recipients::unsubscribe::Links;
use mail_parser::MimeHeaders as _;
use mocks::Fault;
use ring::signature::KeyPair as _;
use serde_json::{Value, json};

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
        unsubscribe: Some(Links {
            url: UNSUBSCRIBE_URL.into(),
            mailto: Some(UNSUBSCRIBE_MAILTO.into()),
        }),
    }
}

const UNSUBSCRIBE_URL: &str = "https://crier.acme.example/u/TOKEN";
const UNSUBSCRIBE_MAILTO: &str = "mailto:unsubscribe@acme.example";
const LIST_UNSUBSCRIBE: &str =
    "<https://crier.acme.example/u/TOKEN>, <mailto:unsubscribe@acme.example>";

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
    assert_eq!(body["headers"]["List-Unsubscribe"], LIST_UNSUBSCRIBE);
    assert_eq!(
        body["headers"]["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );
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
    assert_eq!(field("h:List-Unsubscribe"), LIST_UNSUBSCRIBE);
    assert_eq!(
        field("h:List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
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

// ---------------------------------------------------------------- Webhooks

const TOKEN: &str = "hook-0123456789abcdef";
const MG_SIGNING_KEY: &str = "mg-signing-key-0123456789";

/// A P-256 key pair made for this test, and its verification key as SendGrid shows it
/// (base64 DER SubjectPublicKeyInfo).
fn p256_pair() -> (ring::signature::EcdsaKeyPair, String) {
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki);
    (pair, b64)
}

/// SendGrid's signature headers of `body` at `timestamp`.
fn sendgrid_headers(
    pair: &ring::signature::EcdsaKeyPair,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    let mut signed = timestamp.to_string().into_bytes();
    signed.extend_from_slice(body);
    let rng = ring::rand::SystemRandom::new();
    let signature = pair.sign(&rng, &signed).unwrap();
    vec![
        ("Content-Type".into(), "application/json".into()),
        (
            "X-Twilio-Email-Event-Webhook-Signature".into(),
            base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        ),
        (
            "X-Twilio-Email-Event-Webhook-Timestamp".into(),
            timestamp.to_string(),
        ),
    ]
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn project(sendgrid_key: &str, messages: &[(&str, &str, &str)]) -> Project {
    let project = Project::new();
    project.write(
        "crier.yaml",
        format!(
            r#"
timezone: UTC
default_region: ZA
providers:
  sg:
    type: sendgrid
    api_key: key
    from: billing@acme.example
    webhook_public_key: {sendgrid_key}
  mg:
    type: mailgun
    api_key: key
    domain: mg.acme.example
    from: billing@mg.acme.example
    webhook_signing_key: {MG_SIGNING_KEY}
channels:
  email: sg
server:
  webhook_token: {TOKEN}
"#
        ),
    );
    project.write("jobs/.keep", "");
    common::ledger::sent_messages_on(&project, Channel::Email, messages);
    project
}

/// Every message by provider id, through `crier logs --format json`.
fn messages(project: &Project) -> HashMap<String, Value> {
    let run = project.crier(&["logs", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let list: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    list.into_iter()
        .map(|m| (m["provider_message_id"].as_str().unwrap().to_string(), m))
        .collect()
}

/// The opt-out list as `address → reason`.
fn optouts(project: &Project) -> HashMap<String, String> {
    let run = project.crier(&["optout", "list", "--format", "json"]);
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

/// The opt-out list after each webhook test's events: Bob's hard bounce and Cat's
/// complaint, nobody else.
fn bob_bounced_and_cat_complained(project: &Project) {
    let list = optouts(project);
    assert_eq!(
        list.get("bob@customer.example").map(String::as_str),
        Some("bounce")
    );
    assert_eq!(
        list.get("cat@customer.example").map(String::as_str),
        Some("complaint")
    );
    assert_eq!(list.len(), 2, "{list:?}");
}

fn sg_event(event: &str, sg_id: &str, email: &str, extra: Value) -> Value {
    let mut e = json!({
        "email": email,
        "timestamp": now(),
        "smtp-id": format!("<{sg_id}@ismtpd-555>"),
        "event": event,
        "category": ["reminder"],
        "sg_event_id": format!("ev-{sg_id}-{event}"),
        "sg_message_id": format!("{sg_id}.filterdrecv-5645d9c87f-6r2ch-1-5F5FC76C-9.0"),
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

#[test]
fn sendgrid_signed_events_move_messages_and_opt_out_bounces_and_complaints() {
    let (pair, public) = p256_pair();
    let project = project(
        &public,
        &[
            ("sg", "SGdelivered01", "ann@customer.example"),
            ("sg", "SGbounced0002", "Bob@Customer.example"),
            ("sg", "SGcomplaint03", "cat@customer.example"),
            ("sg", "SGbycrierid04", "dan@customer.example"),
            ("sg", "SGuntouched05", "eve@customer.example"),
        ],
    );
    let before = messages(&project);
    let crier_id = before["SGbycrierid04"]["id"].as_str().unwrap().to_string();
    let server = Server::start(&project, &[], None);
    let path = format!("/webhooks/sendgrid/{TOKEN}");
    let post = |body: &Value, headers: Vec<(String, String)>| {
        server.send("POST", &path, &headers, body.to_string().into_bytes())
    };

    // Forged, stale, unsigned, wrong token: refused, and nothing changes for eve.
    let forged = json!([sg_event(
        "bounce",
        "SGuntouched05",
        "eve@customer.example",
        json!({"type": "bounce", "status": "5.1.1", "reason": "no such user"})
    )]);
    let bytes = forged.to_string().into_bytes();
    let (other, _) = p256_pair();
    assert_eq!(
        post(&forged, sendgrid_headers(&other, now(), &bytes)).status,
        403
    );
    assert_eq!(
        post(&forged, sendgrid_headers(&pair, now() - 3600, &bytes)).status,
        403,
        "stale"
    );
    let mut tampered = sendgrid_headers(&pair, now(), &bytes);
    tampered[2].1 = (now() + 1).to_string();
    assert_eq!(post(&forged, tampered).status, 403, "another timestamp");
    assert_eq!(
        post(
            &forged,
            vec![("Content-Type".into(), "application/json".into())]
        )
        .status,
        401
    );
    let wrong_token = server.send(
        "POST",
        "/webhooks/sendgrid/wrong-token-0123456789",
        &sendgrid_headers(&pair, now(), &bytes),
        bytes.clone(),
    );
    assert_eq!(wrong_token.status, 403);
    assert_eq!(
        server
            .send("POST", "/webhooks/sendgrid", &[], bytes.clone())
            .status,
        401
    );

    // One signed batch, as SendGrid posts it.
    let batch = json!([
        sg_event(
            "processed",
            "SGdelivered01",
            "ann@customer.example",
            json!({})
        ),
        sg_event(
            "delivered",
            "SGdelivered01",
            "ann@customer.example",
            json!({"response": "250 OK"})
        ),
        sg_event(
            "bounce",
            "SGbounced0002",
            "bob@customer.example",
            json!({"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 The email account does not exist."})
        ),
        sg_event(
            "spamreport",
            "SGcomplaint03",
            "cat@customer.example",
            json!({})
        ),
        // Found by crier's id in its custom arguments, not by the provider id.
        sg_event(
            "delivered",
            "SGnotinindex9",
            "dan@customer.example",
            json!({"crier_message_id": crier_id, "response": "250 OK"})
        ),
    ]);
    let bytes = batch.to_string().into_bytes();
    let answer = post(&batch, sendgrid_headers(&pair, now(), &bytes));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let tally = answer.json();
    assert_eq!(tally["applied"], 4, "{tally}");
    assert_eq!(tally["opted_out"], 2, "{tally}");
    server.stop();

    let m = messages(&project);
    let state = |pid: &str| m[pid]["state"].as_str().unwrap().to_string();
    assert_eq!(state("SGdelivered01"), "delivered");
    assert_eq!(state("SGbounced0002"), "undelivered");
    assert_eq!(m["SGbounced0002"]["error_code"], "bounce:5.1.1");
    assert_eq!(
        m["SGbounced0002"]["error_text"],
        "550 5.1.1 The email account does not exist."
    );
    assert_eq!(state("SGcomplaint03"), "delivered");
    assert_eq!(state("SGbycrierid04"), "delivered");
    assert_eq!(
        state("SGuntouched05"),
        "sent",
        "refused requests changed nothing"
    );
    bob_bounced_and_cat_complained(&project);
}

fn mg_event(event: &str, message_id: &str, recipient: &str, extra: Value) -> Value {
    let mut data = json!({
        "id": format!("ev-{event}"),
        "event": event,
        "timestamp": now() as f64 + 0.5,
        "recipient": recipient,
        "message": {"headers": {"message-id": message_id, "to": recipient,
                                "from": "billing@mg.acme.example", "subject": "Your invoice"}},
        "user-variables": {},
        "flags": {"is-test-mode": false},
    });
    for (k, v) in extra.as_object().unwrap() {
        data[k] = v.clone();
    }
    data
}

/// A Mailgun webhook body, signed with `key` at `timestamp`.
fn mg_signed(data: Value, key: &str, timestamp: i64) -> Vec<u8> {
    let token = format!(
        "{:050x}",
        data.to_string().len() as u64 * 7919 + timestamp as u64
    );
    let signature =
        crier::server::email_webhooks::mailgun_signature(key, &timestamp.to_string(), &token);
    json!({
        "signature": {"timestamp": timestamp.to_string(), "token": token, "signature": signature},
        "event-data": data,
    })
    .to_string()
    .into_bytes()
}

#[test]
fn mailgun_signed_events_move_messages_and_opt_out_bounces_and_complaints() {
    let (_, public) = p256_pair();
    let project = project(
        &public,
        &[
            (
                "mg",
                "20261127080000.1.A@mg.acme.example",
                "ann@customer.example",
            ),
            (
                "mg",
                "20261127080000.2.B@mg.acme.example",
                "bob@customer.example",
            ),
            (
                "mg",
                "20261127080000.3.C@mg.acme.example",
                "cat@customer.example",
            ),
            (
                "mg",
                "20261127080000.4.D@mg.acme.example",
                "dan@customer.example",
            ),
            (
                "mg",
                "20261127080000.5.E@mg.acme.example",
                "eve@customer.example",
            ),
        ],
    );
    let before = messages(&project);
    let crier_id = before["20261127080000.4.D@mg.acme.example"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let server = Server::start(&project, &[], None);
    let path = format!("/webhooks/mailgun/{TOKEN}");
    let json_header = vec![("Content-Type".to_string(), "application/json".to_string())];
    let post = |body: Vec<u8>| server.send("POST", &path, &json_header, body);

    // Forged, stale, unsigned, wrong token: refused, and nothing changes for eve.
    let bounce_eve = || {
        mg_event(
            "failed",
            "20261127080000.5.E@mg.acme.example",
            "eve@customer.example",
            json!({"severity": "permanent", "reason": "bounce",
                   "delivery-status": {"code": 550, "message": "5.1.1 no such user"}}),
        )
    };
    assert_eq!(
        post(mg_signed(bounce_eve(), "not-the-key-000", now())).status,
        403
    );
    assert_eq!(
        post(mg_signed(bounce_eve(), MG_SIGNING_KEY, now() - 3600)).status,
        403,
        "stale"
    );
    let mut replayed: Value =
        serde_json::from_slice(&mg_signed(bounce_eve(), MG_SIGNING_KEY, now())).unwrap();
    replayed["signature"]["timestamp"] = json!((now() + 5).to_string());
    assert_eq!(
        post(replayed.to_string().into_bytes()).status,
        403,
        "another timestamp"
    );
    let unsigned = json!({"event-data": bounce_eve()}).to_string().into_bytes();
    assert_eq!(post(unsigned).status, 401);
    let wrong_token = server.send(
        "POST",
        "/webhooks/mailgun/wrong-token-0123456789",
        &json_header,
        mg_signed(bounce_eve(), MG_SIGNING_KEY, now()),
    );
    assert_eq!(wrong_token.status, 403);

    // Signed events, one per request as Mailgun posts them.
    let events = [
        mg_event(
            "delivered",
            "20261127080000.1.A@mg.acme.example",
            "ann@customer.example",
            json!({"delivery-status": {"code": 250, "message": "OK"}}),
        ),
        mg_event(
            "failed",
            "20261127080000.2.B@mg.acme.example",
            "bob@customer.example",
            json!({"severity": "permanent", "reason": "bounce",
                   "delivery-status": {"code": 550, "message": "5.1.1 The email account that you tried to reach does not exist."}}),
        ),
        // A temporary failure: Mailgun retries, nothing changes.
        mg_event(
            "failed",
            "20261127080000.3.C@mg.acme.example",
            "cat@customer.example",
            json!({"severity": "temporary", "reason": "generic",
                   "delivery-status": {"code": 421, "message": "try again later"}}),
        ),
        mg_event(
            "delivered",
            "20261127080000.3.C@mg.acme.example",
            "cat@customer.example",
            json!({}),
        ),
        mg_event(
            "complained",
            "20261127080000.3.C@mg.acme.example",
            "cat@customer.example",
            json!({}),
        ),
        // Found by crier's id in its user variables.
        mg_event(
            "delivered",
            "unknown@mg.acme.example",
            "dan@customer.example",
            json!({"user-variables": {"crier_message_id": crier_id}}),
        ),
    ];
    let mut opted_out = 0;
    for data in events {
        let answer = post(mg_signed(data, MG_SIGNING_KEY, now()));
        assert_eq!(answer.status, 200, "{}", answer.body);
        opted_out += answer.json()["opted_out"].as_u64().unwrap();
    }
    assert_eq!(opted_out, 2);
    server.stop();

    let m = messages(&project);
    let state = |pid: &str| m[pid]["state"].as_str().unwrap().to_string();
    assert_eq!(state("20261127080000.1.A@mg.acme.example"), "delivered");
    assert_eq!(state("20261127080000.2.B@mg.acme.example"), "undelivered");
    assert_eq!(
        m["20261127080000.2.B@mg.acme.example"]["error_code"],
        "bounce:550"
    );
    assert_eq!(state("20261127080000.3.C@mg.acme.example"), "delivered");
    assert_eq!(state("20261127080000.4.D@mg.acme.example"), "delivered");
    assert_eq!(
        state("20261127080000.5.E@mg.acme.example"),
        "sent",
        "refused requests changed nothing"
    );
    bob_bounced_and_cat_complained(&project);
}

// ---------------------------------------------------------------- SES

const SES_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY-crier";
const SES_FROM: &str = "billing@acme.example";

fn ses(url: &str, key_id: &str, secret: &str, documents_dir: &Path) -> crier::provider::ses::Ses {
    let config: crier::provider::ses::SesConfig = serde_yaml::from_str(&format!(
        "access_key_id: {key_id}\nsecret_access_key: {secret}\nregion: eu-west-1\nfrom: Acme ISP <{SES_FROM}>\nconfiguration_set: crier-events\nbase_url: {url}\ndocuments_dir: {}\nlimits: {{timeout: {TIMEOUT}}}\n",
        documents_dir.display()
    ))
    .unwrap();
    crier::provider::ses::Ses::new(&config, client()).unwrap()
}

#[tokio::test]
async fn ses_sends_a_sigv4_signed_send_email_simple_or_raw() {
    let mock = mocks::ses(SES_SECRET, SES_FROM).await;
    let docs = documents();
    let client = ses(
        &mock.url,
        mocks::ses::ACCESS_KEY_ID,
        SES_SECRET,
        docs.path(),
    );
    // Without attachments: Content.Simple.
    let outcome = client.send(&message(false)).await;
    let accepted = mock.state.accepted();
    assert_eq!(sent_id(&outcome), accepted[0].provider_id, "{outcome:?}");
    let req = mock.state.last_request().unwrap();
    assert!(
        req.header("authorization")
            .unwrap()
            .contains("/eu-west-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date, ")
    );
    let body = req.json().unwrap();
    assert_eq!(body["FromEmailAddress"], format!("Acme ISP <{SES_FROM}>"));
    assert_eq!(body["Destination"]["ToAddresses"], json!([TO]));
    assert_eq!(body["ConfigurationSetName"], "crier-events");
    assert_eq!(
        body["EmailTags"],
        json!([{"Name": "crier_message_id", "Value": MESSAGE_ID}])
    );
    let simple = &body["Content"]["Simple"];
    assert_eq!(simple["Subject"]["Data"], "Your invoice is due");
    assert_eq!(
        simple["Body"]["Text"]["Data"],
        "Hi Ann,\nyour invoice is attached."
    );
    assert!(
        simple["Body"]["Html"]["Data"]
            .as_str()
            .unwrap()
            .starts_with("<p>")
    );
    assert_eq!(
        simple["Headers"],
        json!([
            {"Name": "List-Unsubscribe", "Value": LIST_UNSUBSCRIBE},
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
        ])
    );

    // With attachments: Content.Raw, the MIME carrying the file byte for byte.
    let outcome = client.send(&message(true)).await;
    assert_eq!(sent_id(&outcome), mock.state.accepted()[1].provider_id);
    let body = mock.state.last_request().unwrap().json().unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body["Content"]["Raw"]["Data"].as_str().unwrap())
        .unwrap();
    let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
    assert_eq!(parsed.subject(), Some("Your invoice is due"));
    // (lettre folds the long header; unfolded, it is the same value.)
    assert_eq!(
        parsed
            .header_raw("List-Unsubscribe")
            .map(|h| h.replace("\r\n", "").trim().to_string())
            .as_deref(),
        Some(LIST_UNSUBSCRIBE)
    );
    assert_eq!(
        parsed.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    let attachment = parsed.attachment(0).unwrap();
    assert_eq!(attachment.attachment_name(), Some("INV-0042.pdf"));
    assert_eq!(attachment.contents(), INVOICE);
}

#[tokio::test]
async fn ses_refusals_and_faults_map_to_their_outcomes_without_the_secret() {
    let mock = mocks::ses(SES_SECRET, SES_FROM).await;
    let docs = documents();
    let good = ses(
        &mock.url,
        mocks::ses::ACCESS_KEY_ID,
        SES_SECRET,
        docs.path(),
    );
    let wrong_secret = ses(
        &mock.url,
        mocks::ses::ACCESS_KEY_ID,
        "not-the-secret-000",
        docs.path(),
    );
    assert_eq!(
        kind(&wrong_secret.send(&message(false)).await),
        "halt ses:InvalidSignatureException"
    );
    let wrong_key = ses(&mock.url, "AKIAWRONGWRONGWRONG0", SES_SECRET, docs.path());
    assert_eq!(
        kind(&wrong_key.send(&message(false)).await),
        "halt ses:UnrecognizedClientException"
    );
    let other = mocks::ses(SES_SECRET, "someone@else.example").await;
    let unverified = ses(
        &other.url,
        mocks::ses::ACCESS_KEY_ID,
        SES_SECRET,
        docs.path(),
    );
    assert_eq!(
        kind(&unverified.send(&message(false)).await),
        "rejected ses:MessageRejected"
    );
    let mut bad = message(false);
    bad.to = "not an address".into();
    assert_eq!(
        kind(&good.send(&bad).await),
        "rejected ses:BadRequestException"
    );

    let typed = |kind: &str, message: &str| {
        format!(r#"{{"__type":"com.amazonaws.sesv2#{kind}","message":"{message}"}}"#)
    };
    mock.state.push_faults([
        Fault::Status(
            429,
            typed("TooManyRequestsException", "Too many requests"),
            Some(2),
        ),
        Fault::Status(
            400,
            typed(
                "SendingPausedException",
                "Sending is paused for this account.",
            ),
            None,
        ),
        Fault::Status(
            400,
            typed("AccountSuspendedException", &format!("key {SES_SECRET}")),
            None,
        ),
        Fault::Status(500, typed("InternalFailure", "internal"), None),
        Fault::Status(503, "".into(), None),
        Fault::AcceptThenDrop,
    ]);
    let mut got = Vec::new();
    for _ in 0..6 {
        let outcome = good.send(&message(false)).await;
        assert!(
            !format!("{outcome:?}").contains(SES_SECRET),
            "the secret leaked: {outcome:?}"
        );
        got.push(kind(&outcome));
    }
    assert_eq!(
        got,
        [
            "retry after 2",
            "halt ses:SendingPausedException",
            "halt ses:AccountSuspendedException",
            "unknown",
            "retry",
            "unknown",
        ]
    );
}

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:crier-ses-events";
const SNS_CERT: &str = include_str!("fixtures/sns/cert.pem");

/// The canonical string SNS signs, built here from the SNS developer guide's field list.
fn sns_canonical(n: &Value) -> String {
    let keys: &[&str] = if n["Type"] == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    keys.iter()
        .filter_map(|k| n[*k].as_str().map(|v| format!("{k}\n{v}\n")))
        .collect()
}

/// Signs `n` as SNS does with SignatureVersion 2 (SHA256withRSA) and the fixture key.
fn sns_sign(mut n: Value, cert_url: &str) -> Value {
    let pair =
        ring::signature::RsaKeyPair::from_pkcs8(include_bytes!("fixtures/sns/key.pk8")).unwrap();
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        sns_canonical(&n).as_bytes(),
        &mut signature,
    )
    .unwrap();
    n["SignatureVersion"] = json!("2");
    n["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode(signature));
    n["SigningCertURL"] = json!(cert_url);
    n
}

fn sns_notification(id: &str, event: Value) -> Value {
    json!({
        "Type": "Notification",
        "MessageId": format!("sns-{id}"),
        "TopicArn": TOPIC,
        "Message": event.to_string(),
        "Timestamp": "2026-11-27T08:00:00.000Z",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    })
}

fn ses_event(kind: &str, message_id: &str, to: &str, extra: Value) -> Value {
    let mut e = json!({
        "eventType": kind,
        "mail": {"timestamp": "2026-11-27T07:59:58.000Z", "source": SES_FROM,
                 "messageId": message_id, "destination": [to],
                 "tags": {"ses:configuration-set": ["crier-events"]}},
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

#[test]
fn ses_events_through_signed_sns_move_messages_and_opt_out_bounces_and_complaints() {
    let rt = common::runtime();
    let sns = rt.block_on(mocks::ses::sns(SNS_CERT));
    let cert_url = format!("{}/SimpleNotificationService-test.pem", sns.url);
    let project = Project::new();
    project.write(
        "crier.yaml",
        format!(
            r#"
timezone: UTC
default_region: ZA
providers:
  ses:
    type: ses
    access_key_id: AKIAIOSFODNN7EXAMPLE
    secret_access_key: secret
    region: eu-west-1
    from: billing@acme.example
    sns_topic_arns: ["{TOPIC}"]
    sns_trusted_url_prefix: {}/
channels:
  email: ses
server:
  webhook_token: {TOKEN}
"#,
            sns.url
        ),
    );
    project.write("jobs/.keep", "");
    common::ledger::sent_messages_on(
        &project,
        Channel::Email,
        &[
            ("ses", "0100018f-v1-delivered", "fay@customer.example"),
            ("ses", "0100018f-bounce", "bob@customer.example"),
            ("ses", "0100018f-complaint", "cat@customer.example"),
            ("ses", "0100018f-transient", "dan@customer.example"),
            ("ses", "0100018f-by-crier-id", "ann@customer.example"),
            ("ses", "0100018f-untouched", "eve@customer.example"),
        ],
    );
    let crier_id = messages(&project)["0100018f-by-crier-id"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let server = Server::start(&project, &[], None);
    let path = format!("/webhooks/ses/{TOKEN}");
    // SNS posts JSON as text/plain.
    let plain = vec![(
        "Content-Type".to_string(),
        "text/plain; charset=UTF-8".to_string(),
    )];
    let post = |n: &Value| server.send("POST", &path, &plain, n.to_string().into_bytes());

    // The subscription is confirmed by fetching its SubscribeURL.
    let confirm = sns_sign(
        json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": "sns-confirm",
            "Token": "2336412f37fb687f5d51e6e2425c464de257ebc2",
            "TopicArn": TOPIC,
            "Message": format!("You have chosen to subscribe to the topic {TOPIC}."),
            "SubscribeURL": format!("{}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e2425c464de257ebc2", sns.url),
            "Timestamp": "2026-11-27T07:00:00.000Z",
        }),
        &cert_url,
    );
    let answer = post(&confirm);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        sns.state.accepted()[0].to,
        "2336412f37fb687f5d51e6e2425c464de257ebc2",
        "confirmed"
    );

    // Refused, changing nothing: a tampered message, another topic, a certificate from
    // elsewhere, no signature, a wrong token.
    let bounce_eve = sns_notification(
        "eve",
        ses_event(
            "Bounce",
            "0100018f-untouched",
            "eve@customer.example",
            json!({"bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": "eve@customer.example"}],
                   "timestamp": "2026-11-27T08:00:01.000Z"}}),
        ),
    );
    let mut tampered = sns_sign(bounce_eve.clone(), &cert_url);
    tampered["Message"] = json!(
        tampered["Message"]
            .as_str()
            .unwrap()
            .replace("General", "Suppressed")
    );
    assert_eq!(post(&tampered).status, 403, "tampered");
    let mut other_topic = bounce_eve.clone();
    other_topic["TopicArn"] = json!("arn:aws:sns:eu-west-1:999999999999:someone-else");
    assert_eq!(
        post(&sns_sign(other_topic, &cert_url)).status,
        403,
        "other topic"
    );
    assert_eq!(
        post(&sns_sign(
            bounce_eve.clone(),
            "https://sns.evil.example/cert.pem"
        ))
        .status,
        403,
        "untrusted certificate URL"
    );
    let mut downgraded = sns_sign(bounce_eve.clone(), &cert_url);
    downgraded["SignatureVersion"] = json!("1");
    assert_eq!(
        post(&downgraded).status,
        403,
        "a v2 signature claimed as v1"
    );
    assert_eq!(post(&bounce_eve).status, 401, "unsigned");
    let wrong_token = server.send(
        "POST",
        "/webhooks/ses/wrong-token-0123456789",
        &plain,
        sns_sign(bounce_eve.clone(), &cert_url)
            .to_string()
            .into_bytes(),
    );
    assert_eq!(wrong_token.status, 403);

    // SignatureVersion 1 (SHA1withRSA), signed once with openssl (tests/fixtures/sns).
    let mut v1: Value =
        serde_json::from_str(include_str!("fixtures/sns/notification-v1.json")).unwrap();
    v1["SigningCertURL"] = json!(cert_url);
    let answer = post(&v1);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["applied"], 1);

    // SignatureVersion 2 events.
    let events = [
        ses_event(
            "Bounce",
            "0100018f-bounce",
            "bob@customer.example",
            json!({"bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": "bob@customer.example", "action": "failed",
                       "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                   "timestamp": "2026-11-27T08:00:02.000Z"}}),
        ),
        ses_event(
            "Complaint",
            "0100018f-complaint",
            "cat@customer.example",
            json!({"complaint": {"complainedRecipients": [{"emailAddress": "cat@customer.example"}],
                   "complaintFeedbackType": "abuse", "timestamp": "2026-11-27T08:00:03.000Z"}}),
        ),
        ses_event(
            "Bounce",
            "0100018f-transient",
            "dan@customer.example",
            json!({"bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull",
                   "bouncedRecipients": [{"emailAddress": "dan@customer.example"}],
                   "timestamp": "2026-11-27T08:00:04.000Z"}}),
        ),
        // Found by crier's id in the message's tags.
        {
            let mut e = ses_event(
                "Delivery",
                "0100018f-not-in-index",
                "ann@customer.example",
                json!({"delivery": {"timestamp": "2026-11-27T08:00:05.000Z",
                       "recipients": ["ann@customer.example"], "smtpResponse": "250 2.0.0 OK"}}),
            );
            e["mail"]["tags"]["crier_message_id"] = json!([crier_id]);
            e
        },
    ];
    let mut opted_out = 0;
    for (i, event) in events.into_iter().enumerate() {
        let n = sns_sign(sns_notification(&i.to_string(), event), &cert_url);
        let answer = post(&n);
        assert_eq!(answer.status, 200, "{}", answer.body);
        opted_out += answer.json()["opted_out"].as_u64().unwrap();
    }
    assert_eq!(opted_out, 2);
    server.stop();

    let m = messages(&project);
    let state = |pid: &str| m[pid]["state"].as_str().unwrap().to_string();
    assert_eq!(state("0100018f-v1-delivered"), "delivered");
    assert_eq!(state("0100018f-bounce"), "undelivered");
    assert_eq!(m["0100018f-bounce"]["error_code"], "bounce:5.1.1");
    assert_eq!(
        m["0100018f-bounce"]["error_text"],
        "smtp; 550 5.1.1 user unknown"
    );
    assert_eq!(state("0100018f-complaint"), "delivered");
    assert_eq!(state("0100018f-transient"), "undelivered");
    assert_eq!(state("0100018f-by-crier-id"), "delivered");
    assert_eq!(
        state("0100018f-untouched"),
        "sent",
        "refused requests changed nothing"
    );
    bob_bounced_and_cat_complained(&project);
    drop(rt);
}

#[tokio::test]
async fn providers_check_reads_each_accounts_standing() {
    let docs = documents();
    let sg = mocks::sendgrid(SG_KEY, SG_FROM).await;
    assert_eq!(
        sendgrid(&sg.url, SG_KEY, docs.path()).balance().await,
        Ok(None)
    );
    let refused = sendgrid(&sg.url, "SG.wrong-key-0123456789", docs.path())
        .balance()
        .await
        .unwrap_err();
    assert_eq!(refused, "credentials refused (HTTP 401)");
    sg.state.set_balance(0.0);
    let no_send = sendgrid(&sg.url, SG_KEY, docs.path()).balance().await;
    assert_eq!(
        no_send,
        Err("the API key lacks the `mail.send` permission".into())
    );

    let mg = mocks::mailgun(MG_DOMAIN, MG_KEY).await;
    let client = mailgun(&mg.url, MG_KEY, MG_DOMAIN, docs.path());
    assert_eq!(client.balance().await, Ok(None));
    let elsewhere = mailgun(&mg.url, MG_KEY, "mg.other.example", docs.path());
    assert!(
        elsewhere
            .balance()
            .await
            .unwrap_err()
            .contains("no domain `mg.other.example`")
    );
    mg.state.set_balance(0.0);
    assert!(client.balance().await.unwrap_err().contains("is disabled"));

    let ses_mock = mocks::ses(SES_SECRET, SES_FROM).await;
    let client = ses(
        &ses_mock.url,
        mocks::ses::ACCESS_KEY_ID,
        SES_SECRET,
        docs.path(),
    );
    client.send(&message(false)).await;
    assert_eq!(
        client.balance().await,
        Ok(Some(Balance {
            amount: 49_999.0,
            unit: "emails/24h".into()
        }))
    );
    let wrong = ses(
        &ses_mock.url,
        mocks::ses::ACCESS_KEY_ID,
        "not-the-secret-000",
        docs.path(),
    );
    let refused = wrong.balance().await.unwrap_err();
    assert_eq!(refused, "credentials refused (HTTP 403)");
    ses_mock.state.set_balance(0.0);
    assert_eq!(
        client.balance().await,
        Err("sending is paused for this SES account".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crier_providers_check_lists_the_email_apis() {
    let sg = mocks::sendgrid(SG_KEY, SG_FROM).await;
    let mg = mocks::mailgun(MG_DOMAIN, MG_KEY).await;
    let project = Project::new();
    project.write(
        "crier.yaml",
        format!(
            "providers:\n  sg:\n    type: sendgrid\n    api_key: ${{SG_KEY}}\n    from: {SG_FROM}\n    base_url: {}\n  mg:\n    type: mailgun\n    api_key: ${{MG_KEY}}\n    domain: {MG_DOMAIN}\n    from: billing@{MG_DOMAIN}\n    base_url: {}\n",
            sg.url, mg.url
        ),
    );
    let run = tokio::task::block_in_place(|| {
        project.crier_env(
            &["providers", "check"],
            &[("SG_KEY", SG_KEY), ("MG_KEY", MG_KEY)],
        )
    });
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("sendgrid"), "{}", run.stdout);
    assert!(run.stdout.contains("mailgun"), "{}", run.stdout);
    assert!(!run.stdout.contains(SG_KEY) && !run.stderr.contains(SG_KEY));
    let wrong = tokio::task::block_in_place(|| {
        project.crier_env(
            &["providers", "check", "sg"],
            &[("SG_KEY", "SG.wrong-0123456789"), ("MG_KEY", MG_KEY)],
        )
    });
    assert_eq!(wrong.code, 1, "{}", wrong.stdout);
    assert!(
        wrong.stdout.contains("credentials refused (HTTP 401)"),
        "{}",
        wrong.stdout
    );
}

/// The whole loop: `crier send` an email job through the SendGrid mock (the ledger keeps
/// `X-Message-Id`), then the signed event for it through `crier serve` delivers it.
#[test]
fn an_email_job_sent_through_sendgrid_is_delivered_by_its_event() {
    let rt = common::runtime();
    let mock = rt.block_on(mocks::sendgrid(SG_KEY, SG_FROM));
    let (pair, public) = p256_pair();
    let p = Project::new();
    p.write(
        "people.csv",
        "id,name,status,email\n1,Ann,new,ann@customer.example\n2,Ben,new,ben@customer.example\n",
    );
    assert_eq!(p.crier(&["import", "people.csv"]).code, 0);
    p.write(
        "crier.yaml",
        format!(
            "providers:\n  sg:\n    type: sendgrid\n    api_key: ${{SG_KEY}}\n    from: Acme ISP <{SG_FROM}>\n    base_url: {}\n    webhook_public_key: {public}\nchannels:\n  email: sg\nserver:\n  webhook_token: {TOKEN}\nemail:\n  unsubscribe:\n    secret: ${{UNSUBSCRIBE_SECRET}}\n    public_url: https://crier.acme.example\n",
            mock.url
        ),
    );
    p.write(
        "jobs/welcome.yaml",
        "send_to: email\nsubject: \"Welcome, {{ customer.name }}\"\nmessage: \"Dear {{ customer.name }}, welcome.\"\nrecipients:\n  where:\n    status: new\n",
    );
    let secrets = [
        ("SG_KEY", SG_KEY),
        ("UNSUBSCRIBE_SECRET", "an-unsubscribe-secret-of-32-chars+"),
    ];
    let run = p.crier_env(&["send", "jobs/welcome.yaml", "--yes"], &secrets);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("2 sent, 0 failed"), "{}", run.stdout);
    // Bulk mail through an email API carries the one-click links as SMTP mail does.
    let body = mock.state.last_request().unwrap().json().unwrap();
    let list = body["headers"]["List-Unsubscribe"]
        .as_str()
        .unwrap_or_default();
    assert!(list.starts_with("<https://crier.acme.example/u/"), "{body}");
    assert_eq!(
        body["headers"]["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );
    let accepted = mock.state.accepted();
    assert_eq!(accepted.len(), 2);
    let ann = accepted
        .iter()
        .find(|a| a.to == "ann@customer.example")
        .unwrap();
    let sent = messages(&p);
    assert_eq!(sent[&ann.provider_id]["state"], "sent", "{sent:?}");

    let server = Server::start(&p, &secrets, None);
    let batch = json!([sg_event(
        "delivered",
        &ann.provider_id,
        "ann@customer.example",
        json!({"response": "250 OK"})
    )]);
    let bytes = batch.to_string().into_bytes();
    let answer = server.send(
        "POST",
        &format!("/webhooks/sendgrid/{TOKEN}"),
        &sendgrid_headers(&pair, now(), &bytes),
        bytes.clone(),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["applied"], 1);
    server.stop();
    let after = messages(&p);
    assert_eq!(after[&ann.provider_id]["state"], "delivered");
    let ben = accepted
        .iter()
        .find(|a| a.to == "ben@customer.example")
        .unwrap();
    assert_eq!(after[&ben.provider_id]["state"], "sent");
    drop(rt);
}

/// `bounces.hard_bounce_limit` holds for the providers' bounce events as for `crier bounces
/// ingest`: with a limit of 2 the first hard bounce of an address does not opt it out, the
/// second does.
#[test]
fn a_hard_bounce_limit_counts_the_providers_bounces() {
    let (pair, public) = p256_pair();
    let p = project(&public, &[]);
    let config = std::fs::read_to_string(p.path().join("crier.yaml")).unwrap();
    p.write(
        "crier.yaml",
        format!("{config}bounces:\n  hard_bounce_limit: 2\n"),
    );
    common::ledger::sent_messages_on(
        &p,
        Channel::Email,
        &[
            ("sg", "SGfirst000001", "bob@customer.example"),
            ("sg", "SGsecond00002", "bob@customer.example"),
        ],
    );
    let server = Server::start(&p, &[], None);
    let bounce = |id: &str| {
        let body = json!([sg_event(
            "bounce",
            id,
            "bob@customer.example",
            json!({"type": "bounce", "status": "5.1.1", "reason": "550 no such user"})
        )]);
        let bytes = body.to_string().into_bytes();
        server.send(
            "POST",
            &format!("/webhooks/sendgrid/{TOKEN}"),
            &sendgrid_headers(&pair, now(), &bytes),
            bytes.clone(),
        )
    };
    let first = bounce("SGfirst000001");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["opted_out"], 0, "{}", first.body);
    let second = bounce("SGsecond00002");
    assert_eq!(second.json()["opted_out"], 1, "{}", second.body);
    server.stop();
    let m = messages(&p);
    assert_eq!(m["SGfirst000001"]["state"], "undelivered");
    assert_eq!(m["SGfirst000001"]["error_code"], "bounce:5.1.1");
    assert_eq!(
        optouts(&p).get("bob@customer.example").map(String::as_str),
        Some("bounce")
    );
}

/// A project that has sent a two-recipient email job with `crier send` through
/// `provider` (its crier.yaml entry, indented under `providers:`), with `env` set.
fn send_welcome_through(provider: &str, env: &[(&str, &str)]) -> Project {
    let p = Project::new();
    p.write(
        "people.csv",
        "id,name,status,email\n1,Ann,new,ann@customer.example\n2,Ben,new,ben@customer.example\n",
    );
    assert_eq!(p.crier(&["import", "people.csv"]).code, 0);
    p.write(
        "crier.yaml",
        format!(
            "providers:\n  mail:\n{provider}channels:\n  email: mail\nemail:\n  unsubscribe:\n    secret: an-unsubscribe-secret-of-32-chars+\n    public_url: https://crier.acme.example\n"
        ),
    );
    p.write(
        "jobs/welcome.yaml",
        "send_to: email\nsubject: \"Welcome, {{ customer.name }}\"\nmessage: \"Dear {{ customer.name }}, welcome.\"\nrecipients:\n  where:\n    status: new\n",
    );
    let run = p.crier_env(&["send", "jobs/welcome.yaml", "--yes"], env);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("2 sent, 0 failed"), "{}", run.stdout);
    p
}

#[test]
fn mailgun_and_ses_send_a_job_from_the_command_line() {
    let rt = common::runtime();

    let mock = rt.block_on(mocks::mailgun(MG_DOMAIN, MG_KEY));
    let p = send_welcome_through(
        &format!(
            "    type: mailgun\n    api_key: ${{MG_KEY}}\n    domain: {MG_DOMAIN}\n    from: Acme ISP <billing@{MG_DOMAIN}>\n    region: eu\n    base_url: {}\n",
            mock.url
        ),
        &[("MG_KEY", MG_KEY)],
    );
    let accepted = mock.state.accepted();
    assert_eq!(accepted.len(), 2);
    let history = messages(&p);
    for a in &accepted {
        assert_eq!(history[&a.provider_id]["state"], "sent", "{history:?}");
    }
    let parts = mock.state.last_request().unwrap().multipart();
    assert!(
        parts
            .iter()
            .any(|part| part.name == "h:List-Unsubscribe-Post"),
        "{parts:?}"
    );

    let mock = rt.block_on(mocks::ses(SES_SECRET, SES_FROM));
    let p = send_welcome_through(
        &format!(
            "    type: ses\n    access_key_id: {}\n    secret_access_key: ${{SES_SECRET}}\n    region: eu-west-1\n    from: Acme ISP <{SES_FROM}>\n    base_url: {}\n",
            mocks::ses::ACCESS_KEY_ID,
            mock.url
        ),
        &[("SES_SECRET", SES_SECRET)],
    );
    let accepted = mock.state.accepted();
    assert_eq!(
        accepted.len(),
        2,
        "every request's SigV4 checked by the mock"
    );
    let history = messages(&p);
    for a in &accepted {
        assert_eq!(history[&a.provider_id]["state"], "sent", "{history:?}");
    }
    let body = mock.state.last_request().unwrap().json().unwrap();
    assert_eq!(
        body["Content"]["Simple"]["Headers"][1]["Value"],
        "List-Unsubscribe=One-Click"
    );
    drop(rt);
}
