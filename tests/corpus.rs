//! The bad-input corpus (`tests/corpus/`): broken job files, configs, CSVs, templates,
//! scripts, webhook requests and API queries, each with the exact error crier must give.
//!
//! Every case `NAME.<ext>` has a sibling `NAME.expected`:
//!
//! - CLI cases (`jobs/`, `configs/`, `csv/`, `templates/`, `scripts/`): lines that must
//!   each appear, whole, among crier's stderr lines; the exit status must be non-zero.
//! - HTTP cases (`webhooks/`, `api/`, a request: `METHOD PATH`, headers, a blank line,
//!   the body): the status on the first line, the exact JSON body on the second.
//!   `{webhook_token}`, `{api_token}`, `{run}` and `{twilio_signature}` are filled in;
//!   `/api` requests carry the right bearer token unless they set `Authorization`.
//!
//! Each category runs in a scratch project built from `tests/corpus/project/` (with its
//! customers imported), and the store must be the same afterwards: recipients, history,
//! messages, opt-outs and stored templates, as the CLI dumps them, and every file of the
//! data directory outside the store itself. Adding a case is adding two files.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::server::Server;
use common::{Project, Run, root};
use crier::server::webhooks::twilio_signature;

/// One case: the input file and what it must produce.
struct Case {
    name: String,
    input: PathBuf,
    expected: Vec<String>,
}

impl Case {
    fn file_name(&self) -> String {
        self.input
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.input).unwrap()
    }
}

/// Every case of `category`; every input has its `.expected` and the other way round.
fn cases(category: &str) -> Vec<Case> {
    let dir = root().join("tests/corpus").join(category);
    let mut inputs = BTreeMap::new();
    let mut expected = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let stem = file.split('.').next().unwrap().to_string();
        if file.ends_with(".expected") {
            expected.insert(stem, path);
        } else {
            assert!(
                inputs.insert(stem, path).is_none(),
                "{category}: two inputs named {file}"
            );
        }
    }
    for stem in expected.keys() {
        assert!(
            inputs.contains_key(stem),
            "{category}/{stem}.expected has no input"
        );
    }
    let cases: Vec<Case> = inputs
        .into_iter()
        .map(|(name, input)| {
            let path = expected
                .get(&name)
                .unwrap_or_else(|| panic!("{category}/{name} has no .expected"));
            let text = std::fs::read_to_string(path).unwrap();
            let expected: Vec<String> = text.lines().map(String::from).collect();
            assert!(!expected.is_empty(), "{category}/{name}.expected is empty");
            Case {
                name,
                input,
                expected,
            }
        })
        .collect();
    assert!(cases.len() >= 5, "{category}: only {} cases", cases.len());
    cases
}

/// A scratch project: `tests/corpus/project/` copied, `crier.yaml` if given, the
/// customers imported.
fn scratch(config: Option<&str>) -> Project {
    let p = Project::new();
    copy_dir(&root().join("tests/corpus/project"), p.path());
    if let Some(config) = config {
        p.write("crier.yaml", config);
    }
    let import = p.crier_env(&["import", "people.csv"], ENV);
    assert_eq!(import.code, 0, "{}", import.stderr);
    p
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Everything the store holds, as the CLI shows it, and the data directory's other files.
fn snapshot(p: &Project) -> String {
    let mut out = String::new();
    for args in [
        &["recipients", "--format", "csv"][..],
        &["recipients", "--kind", "lead", "--format", "csv"],
        &["history", "--status", "any", "--format", "csv"],
        &["logs", "--format", "csv"],
        &["optout", "list"],
        &["templates", "list"],
    ] {
        let run = p.crier_env(args, ENV);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        out.push_str(&format!("$ crier {}\n{}\n", args.join(" "), run.stdout));
    }
    let data = p.path().join("data");
    let mut files = Vec::new();
    list_files(&data, &mut files);
    for file in files {
        if !file.starts_with(data.join("store")) {
            let bytes = std::fs::read(&file).unwrap();
            out.push_str(&format!(
                "{}: {}\n",
                file.display(),
                String::from_utf8_lossy(&bytes)
            ));
        }
    }
    out
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            list_files(&path, out);
        } else {
            out.push(path);
        }
    }
    out.sort();
}

/// Why `run` does not meet `case`, if it does not.
fn cli_mismatch(case: &Case, run: &Run) -> Option<String> {
    let mut problems = Vec::new();
    if run.code == 0 {
        problems.push("exit status 0".to_string());
    }
    assert!(
        run.code != 101,
        "{}: crier panicked:\n{}",
        case.name,
        run.stderr
    );
    for line in &case.expected {
        if !run.stderr.lines().any(|l| l == line) {
            problems.push(format!("no line `{line}`"));
        }
    }
    (!problems.is_empty()).then(|| {
        format!(
            "{}: {}\n--- stderr:\n{}--- stdout:\n{}",
            case.name,
            problems.join("; "),
            run.stderr,
            run.stdout
        )
    })
}

/// Runs every case of a CLI category through `run`, and checks that none changed the
/// store (`every_case`: compare after each case, for commands that open it).
fn cli_category(
    category: &str,
    config: Option<&str>,
    every_case: bool,
    run: impl Fn(&Project, &Case) -> Run,
) {
    let p = scratch(config);
    let before = snapshot(&p);
    let mut failures = Vec::new();
    for case in cases(category) {
        let result = run(&p, &case);
        failures.extend(cli_mismatch(&case, &result));
        if every_case {
            assert_eq!(
                snapshot(&p),
                before,
                "{category}/{}: the store changed",
                case.name
            );
        }
    }
    assert_eq!(snapshot(&p), before, "{category}: the store changed");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

const ENV: &[(&str, &str)] = &[
    ("CRIER_WEBHOOK_TOKEN", "hook-0123456789abcdef"),
    ("CRIER_API_TOKEN", "api-token-0123456789abcdef"),
];

#[test]
fn broken_job_files() {
    cli_category("jobs", None, false, |p, case| {
        let rel = format!("jobs/{}", case.file_name());
        p.write(&rel, case.bytes());
        p.crier(&["validate", &rel])
    });
}

#[test]
fn broken_configs() {
    cli_category("configs", None, false, |p, case| {
        let rel = format!("configs/{}", case.file_name());
        p.write(&rel, case.bytes());
        p.crier(&["--config", &rel, "validate", "jobs"])
    });
}

#[test]
fn broken_csv_files_with_strict_import() {
    cli_category("csv", None, true, |p, case| {
        let rel = format!("csv/{}", case.file_name());
        p.write(&rel, case.bytes());
        p.crier(&["import", "--strict", &rel])
    });
}

#[test]
fn broken_templates() {
    cli_category("templates", None, false, |p, case| {
        let file = case.file_name();
        p.write(&format!("jobs/templates/{file}"), case.bytes());
        let job = format!("jobs/{}.yaml", case.name);
        p.write(
            &job,
            format!("send_to: sms\ntemplate: templates/{file}\nrecipients: {{}}\n"),
        );
        p.crier(&["validate", &job])
    });
}

#[test]
fn broken_scripts() {
    cli_category("scripts", None, false, |p, case| {
        let file = case.file_name();
        let source = String::from_utf8(case.bytes()).unwrap();
        let field = source
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// field: "))
            .unwrap_or_else(|| panic!("{file}: the first line must be `// field: NAME`"));
        p.write(&format!("scripts/{file}"), &source);
        let job = format!("jobs/{}.yaml", case.name);
        p.write(
            &job,
            format!(
                "send_to: sms\nmessage: hi\nrecipients: {{}}\nscripts:\n  {field}: scripts/{file}\n"
            ),
        );
        p.crier(&["validate", &job])
    });
}

const TWILIO_TOKEN: &str = "twilio-auth-token-1234";
const PUBLIC_URL: &str = "https://crier.example.net";

const SERVER_CONFIG: &str = r#"
timezone: Africa/Johannesburg
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
      delivered: [DELIVRD]
channels:
  sms: bulk
server:
  token: ${CRIER_API_TOKEN}
  webhook_token: ${CRIER_WEBHOOK_TOKEN}
  public_url: https://crier.example.net
"#;

/// A request case: method, path, headers and body, placeholders filled.
fn request(
    case: &Case,
    fill: &dyn Fn(&str) -> String,
) -> (String, String, Vec<(String, String)>, Vec<u8>) {
    let bytes = case.bytes();
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or_else(|| panic!("{}: no blank line after the headers", case.name));
    let head = String::from_utf8(bytes[..split].to_vec()).unwrap();
    let body = bytes[split + 2..].to_vec();
    let mut lines = head.lines();
    let (method, path) = lines.next().unwrap().split_once(' ').unwrap();
    let path = fill(path);
    let mut headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_string(), fill(v))
        })
        .collect();
    if let Some(h) = headers.iter_mut().find(|(_, v)| v == "{twilio_signature}") {
        let params: Vec<(String, String)> = form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        h.1 = twilio_signature(TWILIO_TOKEN, &format!("{PUBLIC_URL}{path}"), &params);
    }
    let api_token = ENV[1].1;
    if path.starts_with("/api") && !headers.iter().any(|(k, _)| k == "Authorization") {
        headers.push(("Authorization".into(), format!("Bearer {api_token}")));
    }
    (method.to_string(), path, headers, body)
}

/// Runs every request case of `category` against one `crier serve`; the store must be
/// unchanged afterwards.
fn http_category(category: &str) {
    let p = scratch(Some(SERVER_CONFIG));
    p.write(
        "jobs/sms.yaml",
        "send_to: sms\nmessage: \"Hi {{ customer.name }}\"\nrecipients: {}\n",
    );
    common::ledger::sent_messages(
        &p,
        &[
            ("bulk", "bulk-1", "+27821000001"),
            ("click", "click-1", "+27821000002"),
            ("tw", "SM0001", "+27821000003"),
            ("von", "von-1", "+27821000004"),
            ("gw", "gw-1", "+27821000005"),
        ],
    );
    let history = p.crier_env(&["history", "--format", "json"], ENV);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    let run = runs[0]["id"].as_str().unwrap().to_string();
    let before = snapshot(&p);
    let server = Server::start(&p, ENV, None);
    let fill = |s: &str| {
        s.replace("{webhook_token}", ENV[0].1)
            .replace("{api_token}", ENV[1].1)
            .replace("{run}", &run)
    };
    let mut failures = Vec::new();
    for case in cases(category) {
        let (method, path, headers, body) = request(&case, &fill);
        let answer = server.send(&method, &path, &headers, body);
        let status: u16 = case.expected[0].parse().unwrap();
        let expected: serde_json::Value = serde_json::from_str(&case.expected[1])
            .unwrap_or_else(|e| panic!("{}: line 2 is not JSON: {e}", case.name));
        let body = serde_json::from_str::<serde_json::Value>(&answer.body).ok();
        if answer.status != status || body.as_ref() != Some(&expected) {
            failures.push(format!(
                "{}: {method} {path}: expected {status} {expected}, got {} {}",
                case.name, answer.status, answer.body
            ));
        }
    }
    let log = server.stop();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(snapshot(&p), before, "{category}: the store changed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn malformed_and_refused_webhook_requests() {
    http_category("webhooks");
}

#[test]
fn malformed_api_queries() {
    http_category("api");
}
