//! Security checks end to end: no credential anywhere crier writes or answers after a
//! full run against the provider mocks; every API route of the published document
//! refuses a missing or wrong token; oversized bodies to every webhook route are 413 and
//! change nothing.
//!
//! Covered elsewhere, not repeated here: the API token on each route and the open
//! routes (`tests/api.rs`, which enumerates the routes from `/api/openapi.json`),
//! webhook tokens and Twilio signatures (`tests/webhooks.rs`), wrong credentials never
//! printed or stored (`tests/engine.rs`), attachments through a symlink out of
//! `documents_dir` (`tests/smtp.rs`), and path traversal in `attach`, script paths,
//! script `import`s and API job names (`tests/corpus/`: `attach-traversal`,
//! `attach-absolute`, `script-outside-scripts`, `script-absolute`, `import-parent`,
//! `import-absolute`, `job-name-traversal`, `job-name-absolute`).

mod common;
mod mocks;

use std::path::Path;

use common::server::Server;
use common::{Project, Run, runtime};
use crier::server::webhooks::twilio_signature;

/// Every credential the project is configured with, by the variable that carries it.
const SECRETS: &[(&str, &str)] = &[
    ("BULKSMS_SECRET", "bulk-S3CRET-7f3a9c1e"),
    ("TWILIO_TOKEN", "twilio-S3CRET-0b8d2e44"),
    ("CLICKATELL_KEY", "click-S3CRET-5e6f7a8b"),
    ("VONAGE_SECRET", "vonage-S3CRET-91c2"),
    ("GATEWAY_KEY", "gateway-S3CRET-d4e5f6"),
    ("CRIER_WEBHOOK_TOKEN", "hook-S3CRET-0123456789abcdef"),
    ("CRIER_API_TOKEN", "api-S3CRET-0123456789abcdef"),
];

const BULK_ID: &str = "BBDE1B476E03498AA768F66A286AABDC-01-B";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const VONAGE_KEY: &str = "abcd1234";
const PUBLIC_URL: &str = "https://crier.example.net";

fn secret(name: &str) -> &'static str {
    SECRETS.iter().find(|(n, _)| *n == name).unwrap().1
}

/// Fails if any secret, or its Base64 in a Basic header, is in `text`.
fn assert_clean(what: &str, text: &str) {
    for (name, value) in SECRETS {
        assert!(!text.contains(value), "{name} is in {what}:\n{text}");
    }
    for (user, name) in [
        (BULK_ID, "BULKSMS_SECRET"),
        (SID, "TWILIO_TOKEN"),
        (VONAGE_KEY, "VONAGE_SECRET"),
    ] {
        let basic = mocks::basic(user, secret(name));
        let encoded = basic.trim_start_matches("Basic ");
        assert!(
            !text.contains(encoded),
            "{name} (as Basic auth) is in {what}"
        );
    }
}

fn assert_run_clean(what: &str, run: &Run) {
    assert_clean(&format!("{what} stdout"), &run.stdout);
    assert_clean(&format!("{what} stderr"), &run.stderr);
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn no_secret_in_any_log_record_export_or_answer() {
    let rt = runtime();
    let (bulk, twilio, click, vonage, gateway) = rt.block_on(async {
        (
            mocks::bulksms(BULK_ID, secret("BULKSMS_SECRET")).await,
            mocks::twilio(SID, secret("TWILIO_TOKEN")).await,
            mocks::clickatell(secret("CLICKATELL_KEY")).await,
            mocks::vonage(VONAGE_KEY, secret("VONAGE_SECRET")).await,
            mocks::http_gateway(secret("GATEWAY_KEY")).await,
        )
    });
    let p = Project::new();
    p.write(
        "crier.yaml",
        format!(
            r#"timezone: Africa/Johannesburg
providers:
  bulk:
    type: bulksms
    token_id: {BULK_ID}
    token_secret: ${{BULKSMS_SECRET}}
    base_url: {}
  tw:
    type: twilio
    account_sid: {SID}
    auth_token: ${{TWILIO_TOKEN}}
    from: "+15005550006"
    base_url: {}
  click:
    type: clickatell
    api_key: ${{CLICKATELL_KEY}}
    base_url: {}
  von:
    type: vonage
    api_key: {VONAGE_KEY}
    api_secret: ${{VONAGE_SECRET}}
    from: CrierISP
    base_url: {}
  gw:
    type: http
    url: {}/send
    method: POST
    content_type: json
    payload:
      key: ${{GATEWAY_KEY}}
      to: "{{to}}"
      text: "{{message}}"
    message_id: data.id
channels:
  sms: bulk
server:
  token: ${{CRIER_API_TOKEN}}
  webhook_token: ${{CRIER_WEBHOOK_TOKEN}}
  public_url: {PUBLIC_URL}
"#,
            bulk.url, twilio.url, click.url, vonage.url, gateway.url
        ),
    );
    p.write(
        "people.csv",
        "id,name,status,phone\n1,Ann,active,082 123 4567\n2,Ben,active,083 123 4567\n3,Cas,active,084 123 4567\n",
    );
    for provider in ["bulk", "tw", "click", "von", "gw"] {
        p.write(
            &format!("jobs/{provider}.yaml"),
            format!(
                "send_to: sms\nprovider: {provider}\nmessage: \"Hi {{{{ customer.name }}}}, your invoice is due\"\nrecipients: {{}}\n"
            ),
        );
    }
    let env: Vec<(&str, &str)> = SECRETS.to_vec();
    let crier = |args: &[&str]| {
        let run = p.crier_env(args, &env);
        assert_run_clean(&format!("`crier {}`", args.join(" ")), &run);
        run
    };
    let import = crier(&["import", "people.csv"]);
    assert_eq!(import.code, 0, "{}", import.stderr);

    // A full run through every provider, logging at debug level, as text and as JSON.
    for (i, provider) in ["bulk", "tw", "click", "von", "gw"].iter().enumerate() {
        let job = format!("jobs/{provider}.yaml");
        let run = if i % 2 == 0 {
            crier(&["-vvv", "send", &job, "--yes"])
        } else {
            crier(&["--log-format", "json", "-vvv", "send", &job, "--yes"])
        };
        assert_eq!(run.code, 0, "{provider}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.lines().count() >= 2,
            "{provider}: no log:\n{}",
            run.stderr
        );
    }
    // The credentials were the right ones: every mock took its three messages.
    for (name, mock) in [
        ("bulk", &bulk),
        ("tw", &twilio),
        ("click", &click),
        ("von", &vonage),
        ("gw", &gateway),
    ] {
        assert_eq!(mock.state.accepted().len(), 3, "{name}");
    }
    let check = crier(&["-vv", "providers", "check"]);
    assert_eq!(check.code, 0, "{}\n{}", check.stdout, check.stderr);

    // Every record and export of the history.
    let history = crier(&["history", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 5);
    for run in runs.as_array().unwrap() {
        let id = run["id"].as_str().unwrap();
        crier(&["history", "show", id]);
        crier(&["history", "recipients", id, "--format", "json"]);
        crier(&["history", "recipients", id, "--format", "csv"]);
    }
    let logs = crier(&["logs", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&logs.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        15
    );
    for args in [
        &["logs", "--format", "csv"][..],
        &["logs"],
        &["history", "--format", "csv"],
        &["history"],
        &["config", "show"],
        &["recipients", "--format", "json"],
        &["jobs"],
        &["validate"],
    ] {
        let run = crier(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }

    // The server: a delivery report, a refused one, the API and the metrics, logged as
    // JSON at debug level.
    let server = Server::start_with(
        &p,
        &["--log-format", "json", "-vv"],
        &env,
        Some(secret("CRIER_API_TOKEN")),
    );
    let pid = bulk.state.accepted()[0].provider_id.clone();
    let report = serde_json::json!([{"id": pid, "type": "SENT", "status": {"type": "DELIVERED"}}]);
    let hook = format!("/webhooks/bulksms/{}", secret("CRIER_WEBHOOK_TOKEN"));
    let json = [("Content-Type".to_string(), "application/json".to_string())];
    let ok = server.send("POST", &hook, &json, report.to_string().into_bytes());
    assert_eq!(ok.status, 200, "{}", ok.body);
    let refused = server.send(
        "POST",
        "/webhooks/bulksms/wrong-0123456789abcdef",
        &json,
        b"[]".to_vec(),
    );
    assert_eq!(refused.status, 403);
    let mut answers = vec![ok.body, refused.body];
    for path in [
        "/metrics",
        "/healthz",
        "/api/openapi.json",
        "/api/runs",
        "/api/messages",
        "/api/messages?format=csv",
    ] {
        let a = server.get(path);
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        answers.push(a.body);
    }
    let log = server.stop();
    assert!(log.contains("\"level\""), "the server logged JSON:\n{log}");
    assert_clean("the server log", &log);
    for answer in &answers {
        assert_clean("a server answer", answer);
    }
    assert!(answers[2].contains("crier_"), "metrics: {}", answers[2]);

    // And nothing the project wrote to disk holds one: store, outbox, anything.
    let mut files = Vec::new();
    files_under(p.path(), &mut files);
    for file in files {
        if file.file_name().is_some_and(|n| n == "crier.yaml") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert_clean(&file.display().to_string(), &text);
    }
}

/// A request: path, headers, body.
type Request = (String, Vec<(String, String)>, Vec<u8>);

/// The webhook routes that read a body, each with a report that would apply, in the
/// order of the providers `bulk`, `click`, `tw`, `von`, `gw`.
fn oversized_requests(pid: &str, pad: usize) -> Vec<Request> {
    let token = secret("CRIER_WEBHOOK_TOKEN");
    let json = vec![("Content-Type".to_string(), "application/json".to_string())];
    let form = vec![(
        "Content-Type".to_string(),
        "application/x-www-form-urlencoded".to_string(),
    )];
    let padding = "x".repeat(pad);
    let bulk = serde_json::json!([{"id": pid, "type": "SENT", "status": {"type": "DELIVERED"}, "body": padding}]);
    let click =
        serde_json::json!({"messageId": pid, "status": "DEVICE_ACK", "statusDescription": padding});
    let params = vec![
        ("MessageSid".to_string(), pid.to_string()),
        ("MessageStatus".to_string(), "delivered".to_string()),
        ("Padding".to_string(), padding.clone()),
    ];
    let twilio_body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let signature = twilio_signature(
        secret("TWILIO_TOKEN"),
        &format!("{PUBLIC_URL}/webhooks/twilio"),
        &params,
    );
    let mut signed = form.clone();
    signed.push(("X-Twilio-Signature".into(), signature));
    vec![
        (
            format!("/webhooks/bulksms/{token}"),
            json.clone(),
            bulk.to_string().into_bytes(),
        ),
        (
            format!("/webhooks/clickatell/{token}"),
            json.clone(),
            click.to_string().into_bytes(),
        ),
        (
            "/webhooks/twilio".to_string(),
            signed,
            twilio_body.into_bytes(),
        ),
        (
            format!("/webhooks/vonage/{token}"),
            form.clone(),
            format!("messageId={pid}&status=delivered&padding={padding}").into_bytes(),
        ),
        (
            format!("/webhooks/http/gw/{token}"),
            json,
            serde_json::json!({"data": {"id": pid, "state": "DELIVRD"}, "padding": padding})
                .to_string()
                .into_bytes(),
        ),
    ]
}

#[test]
fn oversized_bodies_to_every_webhook_route_are_413_and_change_nothing() {
    let p = Project::new();
    p.write(
        "crier.yaml",
        format!(
            r#"providers:
  bulk: {{ type: bulksms, token_id: id, token_secret: secret }}
  click: {{ type: clickatell, api_key: key }}
  tw: {{ type: twilio, account_sid: {SID}, auth_token: "${{TWILIO_TOKEN}}", from: "+15005550006" }}
  von: {{ type: vonage, api_key: k, api_secret: s, from: crier }}
  gw:
    type: http
    url: https://gw.example.net/send
    delivery_reports: {{ message_id: data.id, status: data.state, delivered: [DELIVRD] }}
server:
  webhook_token: ${{CRIER_WEBHOOK_TOKEN}}
  public_url: {PUBLIC_URL}
  max_body_kb: 4
"#
        ),
    );
    let providers = ["bulk", "click", "tw", "von", "gw"];
    let messages: Vec<(&str, String, String)> = providers
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, format!("{p}-1"), format!("+2782100000{i}")))
        .collect();
    let refs: Vec<(&str, &str, &str)> = messages
        .iter()
        .map(|(a, b, c)| (*a, b.as_str(), c.as_str()))
        .collect();
    common::ledger::sent_messages(&p, &refs);
    let env: Vec<(&str, &str)> = SECRETS.to_vec();
    let states = |p: &Project| -> Vec<String> {
        let run = p.crier_env(&["logs", "--format", "json"], &env);
        let list: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let mut states: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{} {}",
                    m["provider_message_id"].as_str().unwrap(),
                    m["state"].as_str().unwrap()
                )
            })
            .collect();
        states.sort();
        states
    };
    let before = states(&p);
    assert!(before.iter().all(|s| s.ends_with(" sent")), "{before:?}");

    let server = Server::start(&p, &env, None);
    for (i, provider) in providers.iter().enumerate() {
        let pid = format!("{provider}-1");
        let (path, headers, body) = oversized_requests(&pid, 5 * 1024).swap_remove(i);
        assert!(body.len() > 4 * 1024);
        let a = server.send("POST", &path, &headers, body);
        assert_eq!(a.status, 413, "{path}: {}", a.body);
    }
    let metrics = server.get("/metrics").body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("crier_delivery_reports_total{outcome=\"applied\"} 0")),
        "{metrics}"
    );
    server.stop();
    assert_eq!(states(&p), before, "an oversized report changed the ledger");

    // The same reports under the limit are applied: the 413s were the size, not the
    // reports.
    let server = Server::start(&p, &env, None);
    for (i, provider) in providers.iter().enumerate() {
        let pid = format!("{provider}-1");
        let (path, headers, body) = oversized_requests(&pid, 10).swap_remove(i);
        let a = server.send("POST", &path, &headers, body);
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        if !path.contains("twilio") {
            assert_eq!(
                a.json()["applied"],
                1,
                "{path}: {}\n{}",
                a.body,
                server.log()
            );
        }
    }
    server.stop();
    let after = states(&p);
    assert!(after.iter().all(|s| s.ends_with(" delivered")), "{after:?}");
}
