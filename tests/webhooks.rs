//! Delivery-report webhooks end to end: a ledger of sent messages written through the
//! library, the real `crier serve` on loopback, each provider's real report payloads over
//! HTTP, and the outcome read back through `crier logs` and `crier optout list` after the
//! server stopped on SIGTERM.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::Project;
use crier::server::webhooks::twilio_signature;
use serde_json::{Value, json};

const TOKEN: &str = "hook-0123456789abcdef";
const TWILIO_TOKEN: &str = "twilio-auth-token-1234";
const PUBLIC: &str = "https://crier.example.net";

const CONFIG: &str = r#"
timezone: Africa/Johannesburg
default_region: ZA
providers:
  bulk:
    type: bulksms
    token_id: id
    token_secret: secret
  click:
    type: clickatell
    api_key: key
  tw:
    type: twilio
    account_sid: AC0123456789abcdef0123456789abcdef
    auth_token: twilio-auth-token-1234
    from: "+15005550006"
  von:
    type: vonage
    api_key: abcd1234
    api_secret: secret1234
    from: crier
  gw:
    type: http
    url: https://gw.example.net/send
    delivery_reports:
      message_id: data.id
      status: data.state
      error_code: data.err
      time: data.ts
      delivered: [DELIVRD]
      undelivered: [UNDELIV]
      failed: [REJECTD]
      opted_out: [OPTOUT]
  gwq:
    type: http
    url: https://gw2.example.net/send
    delivery_reports:
      format: query
      message_id: id
      status: st
      delivered: ["1"]
      failed: ["2"]
channels:
  sms: bulk
server:
  webhook_token: hook-0123456789abcdef
  public_url: https://crier.example.net
"#;

/// A project whose store holds one `sent` message per `(provider, provider id, number)`.
fn project(messages: &[(&str, &str, &str)]) -> Project {
    let project = Project::new();
    project.write("crier.yaml", CONFIG);
    common::ledger::sent_messages(&project, messages);
    project
}

/// `crier serve` on an ephemeral loopback port; SIGTERM on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(project: &Project) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(project.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start crier serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, base: addr }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, and wait for the store to be flushed and released.
    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "crier serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn client() -> reqwest::Client {
    crier::provider::http_client()
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

/// The opt-out list, through `crier optout list --format json`.
fn optouts(project: &Project) -> Vec<String> {
    let run = project.crier(&["optout", "list", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let list: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    list.iter()
        .map(|e| e["address"].as_str().unwrap().to_string())
        .collect()
}

fn bulksms_report(id: &str, kind: &str, subtype: Option<&str>) -> Value {
    json!({
        "id": id,
        "type": "SENT",
        "from": "crier",
        "to": "27821234567",
        "body": null,
        "submission": {"id": "S-1", "date": "2026-01-01T10:00:00+00:00"},
        "status": {"id": format!("{kind}.{}", subtype.unwrap_or("null")), "type": kind, "subtype": subtype},
    })
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// POSTs a Twilio callback to `/webhooks/twilio{query}`, signed over `signed` params
/// (the ones sent, unless a test tampers).
async fn twilio_post(
    server: &Server,
    query: &str,
    sent: &[(String, String)],
    signed: &[(String, String)],
) -> reqwest::Response {
    let path = format!("/webhooks/twilio{query}");
    let signature = twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC}{path}"), signed);
    client()
        .post(server.url(&path))
        .header("X-Twilio-Signature", signature)
        .form(sent)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_provider_report_moves_its_message_with_code_and_time() {
    let project = project(&[
        ("bulk", "bulk-1", "+27821000001"),
        ("bulk", "bulk-2", "+27821000002"),
        ("bulk", "bulk-3", "+27821000003"),
        ("click", "click-1", "+27821000004"),
        ("click", "click-2", "+27821000005"),
        ("tw", "SM0001", "+27821000006"),
        ("tw", "SM0002", "+27821000007"),
        ("von", "von-1", "+27821000008"),
        ("von", "von-2", "+27821000009"),
        ("gw", "gw-1", "+27821000010"),
        ("gw", "gw-2", "+27821000011"),
        ("gwq", "q-1", "+27821000012"),
    ]);
    let server = Server::start(&project);
    let http = client();
    let post_json = |path: String, body: Value| {
        let http = http.clone();
        let url = server.url(&path);
        async move { http.post(url).json(&body).send().await.unwrap() }
    };

    // BulkSMS: a MANY batch; then a duplicate, and a late SENT after DELIVERED.
    let batch = json!([
        bulksms_report("bulk-1", "DELIVERED", None),
        bulksms_report("bulk-2", "FAILED", Some("EXPIRED")),
        bulksms_report("bulk-3", "FAILED", Some("NOT_SENT")),
    ]);
    let r = post_json(format!("/webhooks/bulksms/{TOKEN}"), batch).await;
    assert_eq!(r.status(), 200);
    let tally: Value = r.json().await.unwrap();
    assert_eq!(tally["applied"], 3, "{tally}");
    let again = json!([bulksms_report("bulk-1", "DELIVERED", None)]);
    let r = post_json(format!("/webhooks/bulksms/{TOKEN}"), again).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["duplicate"], 1);
    let late = json!([bulksms_report("bulk-1", "SENT", None)]);
    let r = post_json(format!("/webhooks/bulksms/{TOKEN}"), late).await;
    assert_eq!(r.status(), 200);
    // The registration probe: an empty array.
    let r = post_json(format!("/webhooks/bulksms/{TOKEN}"), json!([])).await;
    assert_eq!(r.status(), 200);

    // Clickatell: One API envelope, delivered, then an older QUEUED event.
    let envelope = |id: &str, code: u32, status: &str, ts: i64| {
        json!({"integrationId": "i-1", "integrationName": "crier", "event": {"messageStatusUpdate": [
            {"channel": "sms", "timestamp": ts, "statusCode": code, "status": status, "messageId": id, "clientMessageId": "x"}
        ]}})
    };
    let r = post_json(
        format!("/webhooks/clickatell/{TOKEN}"),
        envelope("click-1", 5, "DEVICE_ACK", 1_900_000_000_000),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = post_json(
        format!("/webhooks/clickatell/{TOKEN}"),
        envelope("click-1", 2, "QUEUED", 1_899_999_999_000),
    )
    .await;
    assert_eq!(r.status(), 200);
    // Legacy flat callback by GET.
    let r = http
        .get(server.url(&format!(
            "/webhooks/clickatell/{TOKEN}?messageId=click-2&statusCode=23&status=DELIVERY_FAILURE&statusDescription=Delivery%20error&timestamp=1700000000"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Twilio: undelivered with an error code; a failed one, then its duplicate.
    let undelivered = form(&[
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("From", "+15005550006"),
        ("To", "+27821000006"),
        ("MessageSid", "SM0001"),
        ("SmsSid", "SM0001"),
        ("MessageStatus", "undelivered"),
        ("SmsStatus", "undelivered"),
        ("ErrorCode", "30003"),
    ]);
    let r = twilio_post(&server, "", &undelivered, &undelivered).await;
    assert_eq!(r.status(), 200);
    let delivered = form(&[
        ("MessageSid", "SM0002"),
        ("MessageStatus", "delivered"),
        ("RawDlrDoneDate", "2601011000"),
    ]);
    let r = twilio_post(&server, "?run=abc", &delivered, &delivered).await;
    assert_eq!(r.status(), 200);

    // Vonage: JSON per the spec, and a form body.
    let r = post_json(
        format!("/webhooks/vonage/{TOKEN}"),
        json!({"msisdn": "27821000008", "to": "crier", "network-code": "65501", "messageId": "von-1",
               "price": "0.03", "status": "delivered", "scts": "2601011000", "err-code": "0",
               "message-timestamp": "2026-01-01 10:00:05"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = http
        .post(server.url(&format!("/webhooks/vonage/{TOKEN}")))
        .form(&form(&[
            ("msisdn", "27821000009"),
            ("messageId", "von-2"),
            ("status", "rejected"),
            ("err-code", "6"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The generic gateway by its mapping: JSON and query string.
    let r = post_json(
        format!("/webhooks/http/gw/{TOKEN}"),
        json!([{"data": {"id": "gw-1", "state": "UNDELIV", "err": "E42", "ts": "2026-01-01T10:00:00Z"}},
               {"data": {"id": "gw-2", "state": "DELIVRD"}}]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = http
        .get(server.url(&format!("/webhooks/http/gwq/{TOKEN}?id=q-1&st=2")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // An id nobody knows is acknowledged.
    let r = post_json(
        format!("/webhooks/bulksms/{TOKEN}"),
        json!([bulksms_report("nobody", "DELIVERED", None)]),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["unknown_id"], 1);

    server.stop();
    let m = messages(&project);
    let state = |pid: &str| m[pid]["state"].as_str().unwrap().to_string();
    let code = |pid: &str| m[pid]["error_code"].as_str().map(str::to_string);
    assert_eq!(
        state("bulk-1"),
        "delivered",
        "duplicate and late SENT changed nothing"
    );
    assert_eq!(code("bulk-1"), None);
    assert_eq!(state("bulk-2"), "undelivered");
    assert_eq!(code("bulk-2").as_deref(), Some("FAILED.EXPIRED"));
    assert_eq!(state("bulk-3"), "failed");
    assert_eq!(
        state("click-1"),
        "delivered",
        "an older QUEUED changed nothing"
    );
    assert_eq!(state("click-2"), "undelivered");
    assert_eq!(code("click-2").as_deref(), Some("23"));
    assert_eq!(m["click-2"]["error_text"].as_str(), Some("Delivery error"));
    assert_eq!(state("SM0001"), "undelivered");
    assert_eq!(code("SM0001").as_deref(), Some("30003"));
    assert_eq!(state("SM0002"), "delivered");
    assert_eq!(state("von-1"), "delivered");
    assert_eq!(state("von-2"), "failed");
    assert_eq!(code("von-2").as_deref(), Some("6"));
    assert_eq!(state("gw-1"), "undelivered");
    assert_eq!(code("gw-1").as_deref(), Some("E42"));
    assert_eq!(state("gw-2"), "delivered");
    assert_eq!(state("q-1"), "failed");
    // Transitions: queued, sending, sent, then exactly one final state.
    for (pid, msg) in &m {
        let steps = msg["transitions"].as_array().unwrap();
        assert_eq!(steps.len(), 4, "{pid}: {steps:?}");
    }
    // The provider's event time is kept when it is not before the send (click-1 says
    // 2030; "never in the future" caps it at the time of arrival).
    let t = |pid: &str| m[pid]["transitions"][3][1].as_str().unwrap().to_string();
    let sent_at = |pid: &str| m[pid]["transitions"][2][1].as_str().unwrap().to_string();
    assert!(t("click-1") >= sent_at("click-1"));
    assert!(t("von-1") >= sent_at("von-1"));
}

#[tokio::test]
async fn refuses_missing_and_wrong_credentials() {
    let project = project(&[
        ("bulk", "bulk-1", "+27821000001"),
        ("tw", "SM0001", "+27821000002"),
    ]);
    let server = Server::start(&project);
    let http = client();
    let body = json!([bulksms_report("bulk-1", "DELIVERED", None)]);
    for path in [
        "/webhooks/bulksms".to_string(),
        "/webhooks/bulksms/wrong-token-0123456789".to_string(),
        format!("/webhooks/bulksms/{TOKEN}x"),
        "/webhooks/clickatell/nope".to_string(),
        "/webhooks/vonage/nope".to_string(),
        "/webhooks/http/gw/nope".to_string(),
        "/webhooks/http/gw".to_string(),
    ] {
        let r = http
            .post(server.url(&path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 401 || r.status() == 403,
            "{path}: {}",
            r.status()
        );
        let text = r.text().await.unwrap();
        assert!(!text.contains(TOKEN), "{path}: {text}");
    }

    // Twilio: no signature, a tampered parameter, a signature of another URL.
    let params = form(&[("MessageSid", "SM0001"), ("MessageStatus", "delivered")]);
    let r = http
        .post(server.url("/webhooks/twilio"))
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let tampered = form(&[("MessageSid", "SM0001"), ("MessageStatus", "failed")]);
    let r = twilio_post(&server, "", &tampered, &params).await;
    assert_eq!(r.status(), 403);
    let extra = form(&[
        ("MessageSid", "SM0001"),
        ("MessageStatus", "delivered"),
        ("ErrorCode", "1"),
    ]);
    let r = twilio_post(&server, "", &extra, &params).await;
    assert_eq!(r.status(), 403, "an added parameter breaks the signature");
    let signature = twilio_signature(
        TWILIO_TOKEN,
        &format!("{PUBLIC}/webhooks/twilio?a=1"),
        &params,
    );
    let r = http
        .post(server.url("/webhooks/twilio?a=2"))
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the query is signed too");
    // A gateway name that is not an http provider with delivery_reports.
    let r = http
        .post(server.url(&format!("/webhooks/http/bulk/{TOKEN}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // And the genuine one is accepted.
    let r = twilio_post(&server, "", &params, &params).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<Response/>"));

    server.stop();
    let m = messages(&project);
    assert_eq!(
        m["bulk-1"]["state"], "sent",
        "refused reports changed nothing"
    );
    assert_eq!(m["SM0001"]["state"], "delivered");
}

#[tokio::test]
async fn malformed_bodies_are_400_with_a_reason() {
    let project = project(&[("bulk", "bulk-1", "+27821000001")]);
    let server = Server::start(&project);
    let http = client();
    let cases: Vec<(String, &[u8], &str)> = vec![
        (
            format!("/webhooks/bulksms/{TOKEN}"),
            b"[{\"id\": ",
            "not JSON",
        ),
        (format!("/webhooks/bulksms/{TOKEN}"), b"\"hello\"", "array"),
        (
            format!("/webhooks/bulksms/{TOKEN}"),
            br#"[{"id":"bulk-1","type":"SENT"}]"#,
            "no `status`",
        ),
        (
            format!("/webhooks/clickatell/{TOKEN}"),
            br#"{"event":{"messageStatusUpdate":{}}}"#,
            "not an array",
        ),
        (
            format!("/webhooks/clickatell/{TOKEN}"),
            br#"{"messageId":"x","statusCode":"abc"}"#,
            "not a number",
        ),
        (
            format!("/webhooks/vonage/{TOKEN}"),
            b"status=delivered",
            "messageId",
        ),
        (format!("/webhooks/vonage/{TOKEN}"), b"\xff\xfe", "UTF-8"),
        (
            format!("/webhooks/http/gw/{TOKEN}"),
            br#"{"data":{"id":"1"}}"#,
            "data.state",
        ),
    ];
    for (path, body, reason) in cases {
        let r = http
            .post(server.url(&path))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            400,
            "{path} {:?}",
            String::from_utf8_lossy(body)
        );
        let answer: Value = r.json().await.unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(reason), "{path}: {error}");
    }
    // A body over server.max_body_kb (default 1 MiB) is refused before parsing.
    let big = vec![b' '; 2 << 20];
    let r = http
        .post(server.url(&format!("/webhooks/bulksms/{TOKEN}")))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Twilio's body is checked after its signature.
    let params = form(&[("Foo", "bar")]);
    let r = twilio_post(&server, "", &params, &params).await;
    assert_eq!(r.status(), 400);
    // The server is still up and serving.
    let r = http
        .post(server.url(&format!("/webhooks/bulksms/{TOKEN}")))
        .json(&json!([bulksms_report("bulk-1", "DELIVERED", None)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop();
    assert_eq!(messages(&project)["bulk-1"]["state"], "delivered");
}

#[tokio::test]
async fn stop_replies_and_opted_out_statuses_join_the_opt_out_list() {
    let project = project(&[
        ("bulk", "bulk-1", "+27821000001"),
        ("click", "click-1", "+27821000002"),
        ("gw", "gw-1", "+27821000003"),
    ]);
    let server = Server::start(&project);
    let http = client();
    // BulkSMS: a RECEIVED reply "STOP" (international digits, no +) and a FAILED.BLOCKED.
    let r = http
        .post(server.url(&format!("/webhooks/bulksms/{TOKEN}")))
        .json(&json!([
            {"id": "mo-1", "type": "RECEIVED", "from": "27831110001", "to": "27820000000",
             "body": "STOP", "status": {"id": "RECEIVED.null", "type": "RECEIVED"},
             "relatedSentMessageId": "bulk-9"},
            {"id": "mo-2", "type": "RECEIVED", "from": "27831110009", "to": "27820000000",
             "body": "Thanks, paid", "status": {"id": "RECEIVED.null", "type": "RECEIVED"}},
            bulksms_report("bulk-1", "FAILED", Some("BLOCKED")),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Clickatell: 21 STOPPED_BY_USER.
    let r = http
        .post(server.url(&format!("/webhooks/clickatell/{TOKEN}")))
        .json(&json!({"integrationId": "i", "integrationName": "n", "event": {"messageStatusUpdate": [
            {"channel": "sms", "timestamp": 1_700_000_000_000_i64, "statusCode": 21, "status": "STOPPED_BY_USER", "messageId": "click-1"}
        ]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Twilio: an inbound "Stop" to the signed messaging webhook.
    let inbound = form(&[
        ("MessageSid", "SM9999"),
        ("SmsStatus", "received"),
        ("From", "+27831110002"),
        ("To", "+15005550006"),
        ("Body", "Stop"),
        ("NumMedia", "0"),
    ]);
    let r = twilio_post(&server, "", &inbound, &inbound).await;
    assert_eq!(r.status(), 200);
    // Vonage inbound, and the gateway's opted-out status.
    let r = http
        .post(server.url(&format!("/webhooks/vonage/{TOKEN}")))
        .json(
            &json!({"msisdn": "27831110003", "to": "27820000000", "messageId": "mo-3",
                      "text": "unsubscribe", "type": "text", "keyword": "UNSUBSCRIBE",
                      "message-timestamp": "2026-01-01 10:00:00"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(server.url(&format!("/webhooks/http/gw/{TOKEN}")))
        .json(&json!({"data": {"id": "gw-1", "state": "OPTOUT"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop();

    let mut list = optouts(&project);
    list.sort();
    assert_eq!(
        list,
        [
            "+27821000001",
            "+27821000002",
            "+27821000003",
            "+27831110001",
            "+27831110002",
            "+27831110003"
        ]
    );
    let m = messages(&project);
    assert_eq!(m["bulk-1"]["state"], "failed");
    assert_eq!(m["click-1"]["state"], "failed");
    assert_eq!(m["click-1"]["error_code"], "21");
}

#[tokio::test]
async fn metrics_count_what_the_responses_count_under_the_same_names() {
    let project = project(&[
        ("bulk", "bulk-1", "+27821000001"),
        ("bulk", "bulk-2", "+27821000002"),
    ]);
    let server = Server::start(&project);
    let http = client();
    let mut total: HashMap<String, u64> = HashMap::new();
    // Applied, duplicate, unknown and opted out (a blocked number and a STOP reply), over
    // two requests.
    for batch in [
        json!([
            bulksms_report("bulk-1", "DELIVERED", None),
            bulksms_report("bulk-1", "DELIVERED", None),
            bulksms_report("nobody", "DELIVERED", None),
        ]),
        json!([
            bulksms_report("bulk-2", "FAILED", Some("BLOCKED")),
            {"id": "mo-1", "type": "RECEIVED", "from": "27831110001", "to": "27820000000",
             "body": "STOP", "status": {"id": "RECEIVED.null", "type": "RECEIVED"}},
        ]),
    ] {
        let r = http
            .post(server.url(&format!("/webhooks/bulksms/{TOKEN}")))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        for (name, n) in body.as_object().unwrap() {
            *total.entry(name.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    assert_eq!(
        total,
        HashMap::from([
            ("applied".to_string(), 2),
            ("duplicate".to_string(), 1),
            ("unknown_id".to_string(), 1),
            ("opted_out".to_string(), 2),
        ])
    );
    // A refused request has no counts to answer with; /metrics counts it as rejected.
    let refused = http
        .post(server.url("/webhooks/bulksms/wrong-token-0123456789"))
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    total.insert("rejected".to_string(), 1);

    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut outcomes: HashMap<String, u64> = HashMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("crier_delivery_reports_total{outcome=\"") {
            let (name, n) = rest.split_once("\"} ").unwrap();
            outcomes.insert(name.to_string(), n.parse().unwrap());
        }
    }
    assert_eq!(outcomes, total, "{metrics}");
    server.stop();
}
