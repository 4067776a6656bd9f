//! Every SMS provider client against a local mock speaking its real HTTP API: the
//! request as the mock sees it, each fault kind, wrong credentials, the balance check,
//! and that no secret reaches an outcome or an error.

mod mocks;

use std::time::Duration;

use crier::job::Channel;
use crier::provider::bulksms::{BulkSms, BulkSmsConfig};
use crier::provider::clickatell::{Clickatell, ClickatellConfig};
use crier::provider::http::{HttpConfig, HttpGateway};
use crier::provider::twilio::{Twilio, TwilioConfig};
use crier::provider::vonage::{Vonage, VonageConfig};
use crier::provider::{Balance, Provider, RoutedMessage, SendOutcome};
use crier::render::sms::Encoding;
use mocks::Fault;

/// The clients' request timeout, generous for a loaded machine ...
const TIMEOUT: &str = "1s";
/// ... and a delay past it, for the timeout faults.
const SLOW: Duration = Duration::from_millis(1600);

const MESSAGE_ID: &str = "01JDQ7ZK5X3V9M2C8B4N6P1R0T-42";
const TO: &str = "+447700900123";

fn message(body: &str) -> RoutedMessage {
    RoutedMessage {
        id: MESSAGE_ID.into(),
        channel: Channel::Sms,
        to: TO.into(),
        subject: None,
        body: body.into(),
        html: None,
        encoding: Some(Encoding::Gsm7),
        parts: 1,
        recipient_id: 7,
        attach: vec![],
        unsubscribe: None,
        dedup_id: 1001,
    }
}

fn client() -> reqwest::Client {
    crier::provider::http_client()
}

fn sent_id(outcome: &SendOutcome) -> &str {
    match outcome {
        SendOutcome::Sent { provider_id } => provider_id,
        other => panic!("expected Sent, got {other:?}"),
    }
}

fn halt_code(outcome: &SendOutcome) -> &str {
    match outcome {
        SendOutcome::Halt { code, .. } => code,
        other => panic!("expected Halt, got {other:?}"),
    }
}

fn rejected_code(outcome: &SendOutcome) -> &str {
    match outcome {
        SendOutcome::Rejected { code, .. } => code,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn assert_retry(outcome: &SendOutcome) {
    assert!(
        matches!(outcome, SendOutcome::Retry { .. }),
        "expected Retry, got {outcome:?}"
    );
}

/// A deduplicated resubmission after an answer that may follow a commit, waiting `secs`
/// when the provider said.
fn assert_resubmit(outcome: &SendOutcome, secs: Option<u64>) {
    match outcome {
        SendOutcome::Resubmit { after, .. } => {
            assert_eq!(*after, secs.map(Duration::from_secs), "{outcome:?}")
        }
        other => panic!("expected Resubmit, got {other:?}"),
    }
}

fn assert_unknown(outcome: &SendOutcome) {
    assert!(
        matches!(outcome, SendOutcome::Unknown { .. }),
        "expected Unknown, got {outcome:?}"
    );
}

fn assert_retry_after(outcome: &SendOutcome, secs: u64) {
    match outcome {
        SendOutcome::RetryAfter { after, .. } => assert_eq!(*after, Duration::from_secs(secs)),
        other => panic!("expected RetryAfter({secs}s), got {other:?}"),
    }
}

// ---------------------------------------------------------------- BulkSMS

const BULK_ID: &str = "BBDE1B476E03498AA768F66A286AABDC-01-B";
const BULK_SECRET: &str = "bulk-S3CRET-token-value";

fn bulksms(url: &str, secret: &str) -> BulkSms {
    let config: BulkSmsConfig = serde_yaml::from_str(&format!(
        "token_id: {BULK_ID}\ntoken_secret: {secret}\nfrom: CrierISP\nbase_url: {url}\nlimits: {{timeout: {TIMEOUT}}}\n"
    ))
    .unwrap();
    BulkSms::new(&config, client())
}

#[tokio::test]
async fn bulksms_sends_the_real_request_and_reads_the_message_id() {
    let mock = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    let provider = bulksms(&mock.url, BULK_SECRET);
    let outcome = provider.send(&message("Your bill is ready")).await;

    let accepted = mock.state.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(sent_id(&outcome), accepted[0].provider_id);
    assert_eq!(accepted[0].to, TO);
    assert_eq!(accepted[0].body, "Your bill is ready");
    assert_eq!(accepted[0].from.as_deref(), Some("CrierISP"));
    assert_eq!(accepted[0].dedup_id, Some(1001));
    assert!(!accepted[0].unicode);

    let req = mock.state.last_request().unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(
        req.header("authorization").unwrap(),
        mocks::basic(BULK_ID, BULK_SECRET)
    );
    assert!(req.content_type().starts_with("application/json"));
    assert_eq!(req.query_param("deduplication-id").as_deref(), Some("1001"));
    let body = req.json().unwrap();
    assert_eq!(body["encoding"], "TEXT");
    assert_eq!(body["longMessageMaxParts"], 3);
    let usid = body["userSuppliedId"].as_str().unwrap();
    assert_eq!(usid.chars().count(), 20);
    assert!(MESSAGE_ID.ends_with(usid));
}

#[tokio::test]
async fn bulksms_sends_ucs2_as_unicode_with_enough_parts() {
    let mock = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    let provider = bulksms(&mock.url, BULK_SECRET);
    let mut m = message("Привет, ваш счёт готов");
    m.encoding = Some(Encoding::Ucs2);
    m.parts = 5;
    sent_id(&provider.send(&m).await);
    let body = mock.state.last_request().unwrap().json().unwrap();
    assert_eq!(body["encoding"], "UNICODE");
    assert_eq!(body["longMessageMaxParts"], 5);
    assert!(mock.state.accepted()[0].unicode);
}

#[tokio::test]
async fn bulksms_wrong_credentials_halt_the_run() {
    let mock = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    let provider = bulksms(&mock.url, "not-the-secret");
    let outcome = provider.send(&message("x")).await;
    assert_eq!(halt_code(&outcome), "bulksms:401");
    assert_eq!(mock.state.accepted_count(), 0);
}

#[tokio::test]
async fn bulksms_lost_answer_is_resubmitted_with_the_same_dedup_id_and_sent_once() {
    let mock = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    let provider = bulksms(&mock.url, BULK_SECRET);
    mock.state.push_faults([Fault::AcceptThenDrop]);
    let m = message("Once only");

    assert_resubmit(&provider.send(&m).await, None);
    assert_eq!(
        mock.state.accepted_count(),
        1,
        "the mock committed before dropping"
    );
    let second = provider.send(&m).await;

    assert_eq!(mock.state.requests(), 2);
    let accepted = mock.state.accepted();
    assert_eq!(accepted.len(), 1, "the resubmission must not send again");
    assert_eq!(sent_id(&second), accepted[0].provider_id);
}

#[tokio::test]
async fn bulksms_timeout_then_retry_commits_once() {
    let mock = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    let provider = bulksms(&mock.url, BULK_SECRET);
    mock.state.push_faults([Fault::Delay(SLOW)]);
    let m = message("Slow");
    assert_resubmit(&provider.send(&m).await, None);
    sent_id(&provider.send(&m).await);
    // Let the delayed request finish: it finds its dedup id taken and commits nothing.
    tokio::time::sleep(SLOW).await;
    assert_eq!(mock.state.accepted_count(), 1);
}

#[tokio::test]
async fn bulksms_faults_map_to_their_outcomes() {
    let mock = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    let provider = bulksms(&mock.url, BULK_SECRET);
    let m = message("x");
    let credits = r#"{"type":"https://developer.bulksms.com/json/v1/errors#insufficient-credits","title":"Insufficient Credits","status":403}"#;
    mock.state.push_faults([
        Fault::Status(503, String::new(), Some(7)),
        Fault::Status(500, "oops".into(), None),
        Fault::Status(429, String::new(), None),
        Fault::Status(403, credits.into(), None),
        Fault::Drop,
    ]);
    // A 5xx or a reset may follow a commit: resubmitted (deduplicated); a 429 did not.
    assert_resubmit(&provider.send(&m).await, Some(7));
    assert_resubmit(&provider.send(&m).await, None);
    assert_retry(&provider.send(&m).await);
    assert_eq!(halt_code(&provider.send(&m).await), "bulksms:403");
    assert_resubmit(&provider.send(&m).await, None);
    assert_eq!(mock.state.accepted_count(), 0);

    // The mock's own answers: a bad number, then an empty account.
    let mut bad = message("x");
    bad.to = "12".into();
    assert_eq!(rejected_code(&provider.send(&bad).await), "bulksms:400");
    mock.state.set_balance(0.0);
    assert_eq!(halt_code(&provider.send(&m).await), "bulksms:403");
    assert_eq!(mock.state.accepted_count(), 0);
}

#[tokio::test]
async fn bulksms_without_a_dedup_id_leaves_a_lost_answer_unknown() {
    let mock = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    let provider = bulksms(&mock.url, BULK_SECRET);
    let mut m = message("x");
    m.dedup_id = 0;
    mock.state.push_faults([
        Fault::AcceptThenDrop,
        Fault::Status(502, String::new(), None),
    ]);
    assert_unknown(&provider.send(&m).await);
    assert_unknown(&provider.send(&m).await);
    sent_id(&provider.send(&m).await);
    assert_eq!(
        mock.state
            .last_request()
            .unwrap()
            .query_param("deduplication-id"),
        None
    );
}

#[tokio::test]
async fn bulksms_message_can_be_found_again_by_its_user_supplied_id() {
    let mock = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    let outcome = bulksms(&mock.url, BULK_SECRET).send(&message("x")).await;
    // What a reconciliation after a crash asks: the last 20 characters of crier's id.
    let tail: String = MESSAGE_ID
        .chars()
        .skip(MESSAGE_ID.chars().count() - 20)
        .collect();
    let found: serde_json::Value = client()
        .get(format!("{}/messages", mock.url))
        .query(&[("filter", format!("userSuppliedId={tail}"))])
        .basic_auth(BULK_ID, Some(BULK_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["id"], sent_id(&outcome));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulksms_concurrent_sends_with_dropped_answers_commit_each_message_once() {
    let mock = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    let provider = std::sync::Arc::new(bulksms(&mock.url, BULK_SECRET));
    mock.state.set_fault_every(7, Fault::AcceptThenDrop);
    let tasks: Vec<_> = (1..=200u32)
        .map(|i| {
            let provider = provider.clone();
            tokio::spawn(async move {
                let mut m = message(&format!("message {i}"));
                m.dedup_id = i;
                for _ in 0..5 {
                    match provider.send(&m).await {
                        SendOutcome::Sent { provider_id } => return provider_id,
                        SendOutcome::Resubmit { .. } => continue,
                        other => panic!("{other:?}"),
                    }
                }
                panic!("never sent");
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    assert_eq!(mock.state.accepted_count(), 200);
    assert!(
        mock.state.requests() > 200,
        "some answers were dropped and retried"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}

#[tokio::test]
async fn bulksms_balance_reads_the_profile() {
    let mock = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    mock.state.set_balance(1234.5);
    let balance = bulksms(&mock.url, BULK_SECRET).balance().await.unwrap();
    assert_eq!(
        balance,
        Some(Balance {
            amount: 1234.5,
            unit: "credits".into()
        })
    );
    let refused = bulksms(&mock.url, "wrong").balance().await.unwrap_err();
    assert_eq!(refused, "credentials refused (HTTP 401)");
}

// ---------------------------------------------------------------- Clickatell

const CLICK_KEY: &str = "click-KEY-Zm9vYmFyYmF6";

fn clickatell(url: &str, key: &str) -> Clickatell {
    let config: ClickatellConfig = serde_yaml::from_str(&format!(
        "api_key: {key}\nbase_url: {url}\nlimits: {{timeout: {TIMEOUT}}}\n"
    ))
    .unwrap();
    Clickatell::new(&config, client())
}

#[tokio::test]
async fn clickatell_sends_the_raw_key_and_digits_only() {
    let mock = mocks::clickatell(CLICK_KEY).await;
    let outcome = clickatell(&mock.url, CLICK_KEY)
        .send(&message("Hello"))
        .await;
    let accepted = mock.state.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(sent_id(&outcome), accepted[0].provider_id);
    assert_eq!(accepted[0].provider_id.len(), 32);
    assert_eq!(accepted[0].to, "447700900123");

    let req = mock.state.last_request().unwrap();
    assert_eq!(req.path, "/v1/message");
    assert_eq!(req.header("authorization"), Some(CLICK_KEY));
    assert!(req.content_type().starts_with("application/json"));
    let body = req.json().unwrap();
    assert_eq!(body["messages"][0]["to"], "447700900123");
    assert_eq!(body["messages"][0]["content"], "Hello");
    assert_eq!(body["messages"][0]["channel"], "sms");
}

#[tokio::test]
async fn clickatell_wrong_key_halts() {
    let mock = mocks::clickatell(CLICK_KEY).await;
    let outcome = clickatell(&mock.url, "other-key").send(&message("x")).await;
    assert_eq!(halt_code(&outcome), "clickatell:1");
}

#[tokio::test]
async fn clickatell_errors_and_faults_map_to_their_outcomes() {
    let mock = mocks::clickatell(CLICK_KEY).await;
    let provider = clickatell(&mock.url, CLICK_KEY);
    let m = message("x");
    let rate = r#"{"messages":[],"error":{"code":43,"description":"Rate limit exceeded."}}"#;
    let busy = r#"{"error":{"code":19,"description":"Internal error, please retry."}}"#;
    mock.state.push_faults([
        Fault::Status(400, rate.into(), None),
        Fault::Status(400, rate.into(), Some(2)),
        Fault::Status(503, busy.into(), None),
        Fault::Status(429, String::new(), None),
        Fault::Drop,
        Fault::AcceptThenDrop,
    ]);
    assert_retry(&provider.send(&m).await);
    assert_retry_after(&provider.send(&m).await, 2);
    assert_retry(&provider.send(&m).await);
    assert_retry(&provider.send(&m).await);
    assert_unknown(&provider.send(&m).await);
    assert_unknown(&provider.send(&m).await);
    assert_eq!(
        mock.state.accepted_count(),
        1,
        "accepted, then the answer was lost"
    );

    let mut bad = message("x");
    bad.to = "+12".into();
    assert_eq!(rejected_code(&provider.send(&bad).await), "clickatell:25");
    mock.state.set_balance(0.0);
    assert_eq!(halt_code(&provider.send(&m).await), "clickatell:20");
    assert_eq!(mock.state.accepted_count(), 1);
}

#[tokio::test]
async fn clickatell_balance() {
    let mock = mocks::clickatell(CLICK_KEY).await;
    mock.state.set_balance(42.25);
    let balance = clickatell(&mock.url, CLICK_KEY).balance().await.unwrap();
    assert_eq!(
        balance,
        Some(Balance {
            amount: 42.25,
            unit: "USD".into()
        })
    );
    let refused = clickatell(&mock.url, "wrong").balance().await.unwrap_err();
    assert_eq!(refused, "credentials refused (HTTP 401)");
}

// ---------------------------------------------------------------- Twilio

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-AUTH-token-0123456789";
const SERVICE: &str = "MG0123456789abcdef0123456789abcdef";

fn twilio(url: &str, token: &str, sender: &str) -> Twilio {
    let config: TwilioConfig = serde_yaml::from_str(&format!(
        "account_sid: {SID}\nauth_token: {token}\n{sender}\nbase_url: {url}\nlimits: {{timeout: {TIMEOUT}}}\n"
    ))
    .unwrap();
    Twilio::new(&config, client())
}

#[tokio::test]
async fn twilio_sends_a_form_with_basic_auth() {
    let mock = mocks::twilio(SID, TOKEN).await;
    let outcome = twilio(&mock.url, TOKEN, "from: '+15005550006'")
        .send(&message("Hi & bye"))
        .await;
    let accepted = mock.state.accepted();
    assert_eq!(accepted.len(), 1);
    assert!(sent_id(&outcome).starts_with("SM"));
    assert_eq!(sent_id(&outcome), accepted[0].provider_id);

    let req = mock.state.last_request().unwrap();
    assert_eq!(
        req.path,
        format!("/2010-04-01/Accounts/{SID}/Messages.json")
    );
    assert_eq!(
        req.header("authorization").unwrap(),
        mocks::basic(SID, TOKEN)
    );
    assert!(
        req.content_type()
            .starts_with("application/x-www-form-urlencoded")
    );
    assert_eq!(req.form_value("To").as_deref(), Some(TO));
    assert_eq!(req.form_value("From").as_deref(), Some("+15005550006"));
    assert_eq!(req.form_value("Body").as_deref(), Some("Hi & bye"));
    assert_eq!(req.form_value("MessagingServiceSid"), None);
}

#[tokio::test]
async fn twilio_sends_through_a_messaging_service() {
    let mock = mocks::twilio(SID, TOKEN).await;
    let outcome = twilio(
        &mock.url,
        TOKEN,
        &format!("messaging_service_sid: {SERVICE}"),
    )
    .send(&message("x"))
    .await;
    sent_id(&outcome);
    let req = mock.state.last_request().unwrap();
    assert_eq!(
        req.form_value("MessagingServiceSid").as_deref(),
        Some(SERVICE)
    );
    assert_eq!(req.form_value("From"), None);
}

#[tokio::test]
async fn twilio_wrong_token_halts() {
    let mock = mocks::twilio(SID, TOKEN).await;
    let outcome = twilio(&mock.url, "wrong", "from: '+15005550006'")
        .send(&message("x"))
        .await;
    assert_eq!(halt_code(&outcome), "twilio:20003");
}

#[tokio::test]
async fn twilio_errors_and_faults_map_to_their_outcomes() {
    let mock = mocks::twilio(SID, TOKEN).await;
    let provider = twilio(&mock.url, TOKEN, "from: '+15005550006'");
    let m = message("x");
    let too_many = r#"{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}"#;
    mock.state.push_faults([
        Fault::Status(429, too_many.into(), Some(3)),
        Fault::Status(429, too_many.into(), None),
        Fault::Status(500, String::new(), None),
        Fault::Delay(SLOW),
        Fault::Drop,
    ]);
    assert_retry_after(&provider.send(&m).await, 3);
    assert_retry(&provider.send(&m).await);
    assert_unknown(&provider.send(&m).await);
    assert_unknown(&provider.send(&m).await);
    assert_unknown(&provider.send(&m).await);

    let mut bad = message("x");
    bad.to = "+12".into();
    assert_eq!(rejected_code(&provider.send(&bad).await), "twilio:21211");
    // The delayed request is answered (and committed) after the client gave up.
    tokio::time::sleep(SLOW).await;
    assert_eq!(mock.state.accepted_count(), 1);
}

#[tokio::test]
async fn twilio_balance() {
    let mock = mocks::twilio(SID, TOKEN).await;
    mock.state.set_balance(0.5);
    let balance = twilio(&mock.url, TOKEN, "from: x").balance().await.unwrap();
    assert_eq!(
        balance,
        Some(Balance {
            amount: 0.5,
            unit: "USD".into()
        })
    );
    let refused = twilio(&mock.url, "wrong", "from: x")
        .balance()
        .await
        .unwrap_err();
    assert_eq!(refused, "credentials refused (HTTP 401)");
}

// ---------------------------------------------------------------- Vonage

const VKEY: &str = "a1b2c3d4";
const VSECRET: &str = "vonage-SECRET-99";

fn vonage(url: &str, secret: &str) -> Vonage {
    let config: VonageConfig = serde_yaml::from_str(&format!(
        "api_key: {VKEY}\napi_secret: {secret}\nfrom: CrierISP\nbase_url: {url}\nlimits: {{timeout: {TIMEOUT}}}\n"
    ))
    .unwrap();
    Vonage::new(&config, client())
}

#[tokio::test]
async fn vonage_sends_form_credentials_and_digits_only() {
    let mock = mocks::vonage(VKEY, VSECRET).await;
    let outcome = vonage(&mock.url, VSECRET).send(&message("Hello")).await;
    let accepted = mock.state.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(sent_id(&outcome), accepted[0].provider_id);
    assert!(!accepted[0].unicode);

    let req = mock.state.last_request().unwrap();
    assert_eq!(req.path, "/sms/json");
    assert!(
        req.content_type()
            .starts_with("application/x-www-form-urlencoded")
    );
    assert_eq!(req.form_value("api_key").as_deref(), Some(VKEY));
    assert_eq!(req.form_value("api_secret").as_deref(), Some(VSECRET));
    assert_eq!(req.form_value("to").as_deref(), Some("447700900123"));
    assert_eq!(req.form_value("from").as_deref(), Some("CrierISP"));
    assert_eq!(req.form_value("text").as_deref(), Some("Hello"));
    assert_eq!(req.form_value("client-ref").as_deref(), Some(MESSAGE_ID));
    assert_eq!(req.form_value("type"), None);
}

#[tokio::test]
async fn vonage_sends_ucs2_as_unicode_and_takes_the_first_parts_id() {
    let mock = mocks::vonage(VKEY, VSECRET).await;
    let mut m = message(&"ü€😀".repeat(40));
    m.encoding = Some(Encoding::Ucs2);
    m.parts = 3;
    let outcome = vonage(&mock.url, VSECRET).send(&m).await;
    assert_eq!(
        mock.state
            .last_request()
            .unwrap()
            .form_value("type")
            .as_deref(),
        Some("unicode")
    );
    let accepted = mock.state.accepted();
    assert!(accepted[0].unicode);
    assert_eq!(sent_id(&outcome), accepted[0].provider_id);
}

#[tokio::test]
async fn vonage_status_inside_http_200_decides() {
    let mock = mocks::vonage(VKEY, VSECRET).await;
    let provider = vonage(&mock.url, VSECRET);
    let m = message("x");
    let throttled = r#"{"message-count":"1","messages":[{"status":"1","error-text":"Throttled"}]}"#;
    mock.state.push_faults([
        Fault::Status(200, throttled.into(), None),
        Fault::Status(500, String::new(), Some(4)),
        Fault::AcceptThenDrop,
    ]);
    assert_retry(&provider.send(&m).await);
    assert_retry_after(&provider.send(&m).await, 4);
    assert_unknown(&provider.send(&m).await);

    assert_eq!(
        halt_code(&vonage(&mock.url, "wrong").send(&m).await),
        "vonage:4"
    );
    let mut bad = message("x");
    bad.to = "12".into();
    assert_eq!(rejected_code(&provider.send(&bad).await), "vonage:3");
    mock.state.set_balance(0.0);
    assert_eq!(halt_code(&provider.send(&m).await), "vonage:9");
    assert_eq!(
        mock.state.accepted_count(),
        1,
        "only the dropped answer committed"
    );
}

#[tokio::test]
async fn vonage_balance() {
    let mock = mocks::vonage(VKEY, VSECRET).await;
    mock.state.set_balance(10.28);
    let balance = vonage(&mock.url, VSECRET).balance().await.unwrap();
    assert_eq!(
        balance,
        Some(Balance {
            amount: 10.28,
            unit: "EUR".into()
        })
    );
    let refused = vonage(&mock.url, "wrong").balance().await.unwrap_err();
    assert_eq!(refused, "credentials refused (HTTP 401)");
}

// ---------------------------------------------------------------- HTTP gateway

const GW_KEY: &str = "gw-KEY-abcdef123";

fn gateway(yaml: &str) -> HttpGateway {
    let config: HttpConfig = serde_yaml::from_str(yaml).unwrap();
    HttpGateway::new(&config, client()).unwrap()
}

#[tokio::test]
async fn gateway_get_fills_and_encodes_query_placeholders() {
    let mock = mocks::http_gateway(GW_KEY).await;
    let provider = gateway(&format!(
        "url: '{}/send?key={GW_KEY}&to={{to}}&text={{message}}'\nmethod: GET\nfrom: ISP\npayload:\n  from: '{{from}}'\nmessage_id: data.id\n",
        mock.url
    ));
    let text = "a+b & c=d #1 ü?";
    let outcome = provider.send(&message(text)).await;
    let accepted = mock.state.accepted();
    assert_eq!(sent_id(&outcome), "gw-1");
    assert_eq!(accepted[0].to, TO);
    assert_eq!(accepted[0].body, text);
    assert_eq!(accepted[0].from.as_deref(), Some("ISP"));
    assert_eq!(mock.state.last_request().unwrap().method, "GET");
}

#[tokio::test]
async fn gateway_post_json_with_a_header_credential() {
    let mock = mocks::http_gateway(GW_KEY).await;
    let provider = gateway(&format!(
        "url: '{}/send'\nheaders:\n  X-Api-Key: {GW_KEY}\npayload:\n  to: '{{to}}'\n  text: 'Note: {{message}}'\nmessage_id: data.id\n",
        mock.url
    ));
    let outcome = provider.send(&message("hi")).await;
    assert_eq!(sent_id(&outcome), "gw-1");
    let req = mock.state.last_request().unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("x-api-key"), Some(GW_KEY));
    assert!(req.content_type().starts_with("application/json"));
    assert_eq!(
        req.json().unwrap(),
        serde_json::json!({"to": TO, "text": "Note: hi"})
    );
}

#[tokio::test]
async fn gateway_post_form_and_crier_id_fallback() {
    let mock = mocks::http_gateway(GW_KEY).await;
    let provider = gateway(&format!(
        "url: '{}/send'\ncontent_type: form\npayload:\n  key: {GW_KEY}\n  to: '{{to}}'\n  message: '{{message}}'\n",
        mock.url
    ));
    let outcome = provider.send(&message("x y")).await;
    assert_eq!(
        sent_id(&outcome),
        MESSAGE_ID,
        "no message_id path: crier's id"
    );
    let req = mock.state.last_request().unwrap();
    assert!(
        req.content_type()
            .starts_with("application/x-www-form-urlencoded")
    );
    assert_eq!(req.form_value("message").as_deref(), Some("x y"));
}

#[tokio::test]
async fn gateway_success_rule_and_statuses() {
    let mock = mocks::http_gateway(GW_KEY).await;
    let strict = gateway(&format!(
        "url: '{}/send'\nheaders:\n  X-Api-Key: {GW_KEY}\npayload:\n  to: '{{to}}'\n  text: '{{message}}'\nsuccess:\n  status: [200]\n  body_contains: '\"queued\"'\n",
        mock.url
    ));
    assert_eq!(rejected_code(&strict.send(&message("x")).await), "http:200");

    let regex = gateway(&format!(
        "url: '{}/send'\nheaders:\n  X-Api-Key: {GW_KEY}\npayload:\n  to: '{{to}}'\n  text: '{{message}}'\nsuccess:\n  body_regex: '\"status\":\\s*\"ok\"'\nmessage_id: data.id\n",
        mock.url
    ));
    sent_id(&regex.send(&message("x")).await);

    let wrong = gateway(&format!(
        "url: '{}/send'\nheaders:\n  X-Api-Key: nope\npayload:\n  to: '{{to}}'\n  text: '{{message}}'\n",
        mock.url
    ));
    assert_eq!(halt_code(&wrong.send(&message("x")).await), "http:401");

    mock.state.push_faults([
        Fault::Status(429, String::new(), Some(9)),
        Fault::Status(500, String::new(), None),
        Fault::Drop,
    ]);
    assert_retry_after(&regex.send(&message("x")).await, 9);
    assert_unknown(&regex.send(&message("x")).await);
    assert_unknown(&regex.send(&message("x")).await);
    assert_eq!(regex.balance().await, Ok(None));
}

// ---------------------------------------------------------------- secrets

/// Every credential-bearing failure path, printed: no secret may appear.
#[tokio::test]
async fn no_outcome_or_error_prints_a_secret() {
    let mut printed = Vec::new();
    let m = message("x");
    // A port nobody listens on: connection refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };

    let bulk = mocks::bulksms(BULK_ID, "other").await;
    bulk.state.push_faults([Fault::Drop]);
    let p = bulksms(&bulk.url, BULK_SECRET);
    printed.push(format!("{:?}", p.send(&m).await));
    printed.push(format!("{:?}", p.send(&m).await));
    printed.push(format!("{:?}", p.balance().await));
    printed.push(format!("{:?}", bulksms(&dead, BULK_SECRET).balance().await));

    let click = mocks::clickatell("other").await;
    let p = clickatell(&click.url, CLICK_KEY);
    printed.push(format!("{:?}", p.send(&m).await));
    printed.push(format!("{:?}", p.balance().await));
    printed.push(format!("{:?}", clickatell(&dead, CLICK_KEY).send(&m).await));

    let tw = mocks::twilio(SID, "other").await;
    let p = twilio(&tw.url, TOKEN, "from: x");
    printed.push(format!("{:?}", p.send(&m).await));
    printed.push(format!("{:?}", p.balance().await));

    let von = mocks::vonage(VKEY, "other").await;
    let p = vonage(&von.url, VSECRET);
    printed.push(format!("{:?}", p.send(&m).await));
    printed.push(format!("{:?}", p.balance().await));
    // The balance request carries the secret in its query string.
    printed.push(format!("{:?}", vonage(&dead, VSECRET).balance().await));
    let slow = mocks::vonage(VKEY, VSECRET).await;
    slow.state.push_faults([Fault::Delay(SLOW)]);
    printed.push(format!("{:?}", vonage(&slow.url, VSECRET).balance().await));

    let gw_config = format!(
        "url: '{dead}/send?key={GW_KEY}&to={{to}}'\nmethod: GET\nheaders:\n  Authorization: Bearer {GW_KEY}\n"
    );
    printed.push(format!("{:?}", gateway(&gw_config).send(&m).await));
    let config: HttpConfig = serde_yaml::from_str(&gw_config).unwrap();
    printed.push(format!("{config:?}"));
    printed.push(serde_json::to_string(&config).unwrap());

    let config: VonageConfig =
        serde_yaml::from_str(&format!("api_key: k\napi_secret: {VSECRET}\nfrom: x\n")).unwrap();
    printed.push(format!("{config:?}"));

    // Error bodies that echo the request, credentials and all.
    let echo = mocks::bulksms(BULK_ID, BULK_SECRET).await;
    echo.state.push_faults([Fault::Status(
        400,
        format!(r#"{{"type":"x#validation","title":"Bad Request","status":400,"detail":"token {BULK_SECRET}"}}"#),
        None,
    )]);
    printed.push(format!(
        "{:?}",
        bulksms(&echo.url, BULK_SECRET).send(&m).await
    ));
    let gw = mocks::http_gateway(GW_KEY).await;
    gw.state.push_faults([
        Fault::Status(
            400,
            format!("bad request: key={GW_KEY} pass=pw-hunter2"),
            None,
        ),
        Fault::Status(401, format!("Bearer {GW_KEY} refused"), None),
    ]);
    let p = gateway(&format!(
        "url: '{}/send?key={GW_KEY}&to={{to}}'\nmethod: GET\npayload:\n  pass: pw-hunter2\n",
        gw.url
    ));
    printed.push(format!("{:?}", p.send(&m).await));
    let p = gateway(&format!(
        "url: '{}/send'\nheaders:\n  Authorization: Bearer {GW_KEY}\n",
        gw.url
    ));
    printed.push(format!("{:?}", p.send(&m).await));
    assert!(printed[17].contains("token <redacted>"), "{}", printed[17]);
    assert!(
        printed[18].contains("key=<redacted> pass=<redacted>"),
        "{}",
        printed[18]
    );
    assert!(
        printed[19].contains("HTTP 401: <redacted> refused"),
        "{}",
        printed[19]
    );

    assert_eq!(printed.len(), 20);
    for text in &printed {
        for secret in [BULK_SECRET, CLICK_KEY, TOKEN, VSECRET, GW_KEY, "pw-hunter2"] {
            assert!(!text.contains(secret), "{secret} printed in: {text}");
        }
    }
    // The failures were real ones, not empty strings.
    assert!(printed[0].contains("Resubmit"), "{}", printed[0]);
    assert!(printed[1].contains("Halt"), "{}", printed[1]);
    assert!(printed[3].contains("connect"), "{}", printed[3]);
}
