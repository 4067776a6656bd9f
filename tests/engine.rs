//! The send engine end to end: the real `crier` binary against mock providers speaking
//! their real APIs on loopback. Retries, Retry-After, expiry, pauses, lost answers with
//! and without deduplication, rate limits and concurrency caps, balance checks, and no
//! secret anywhere in what crier prints or stores.

mod common;
mod mocks;

use std::time::{Duration, Instant};

use common::{Project, Run, customers, runtime};
use mocks::{Fault, Mock};

const TOKEN_ID: &str = "BBDE1B476E03498AA768F66A286AABDC-01-B";
const SECRET: &str = "s3cr3t-t0ken-NEVER-PRINTED";
const SID: &str = "AC0123456789abcdef0123456789abcdef";

/// A project with `n` customers with valid, distinct mobile numbers, a mock provider and
/// an SMS job through it.
struct Bench {
    project: Project,
    mock: Mock,
    _runtime: tokio::runtime::Runtime,
}

/// `provider` is the YAML of the provider (without `base_url`), `job` extra job lines.
fn setup(kind: &str, n: usize, limits: &str, job: &str) -> Bench {
    let runtime = runtime();
    let (mock, provider) = runtime.block_on(async {
        match kind {
            "bulksms" => (
                mocks::bulksms(TOKEN_ID, SECRET).await,
                format!("type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: ${{BULKSMS_SECRET}}"),
            ),
            "twilio" => (
                mocks::twilio(SID, SECRET).await,
                format!(
                    "type: twilio\n    account_sid: {SID}\n    auth_token: ${{BULKSMS_SECRET}}\n    from: \"+15005550006\""
                ),
            ),
            other => panic!("no mock {other}"),
        }
    });
    let project = Project::new();
    project.write("people.csv", customers(n));
    assert_eq!(project.crier(&["import", "people.csv"]).code, 0);
    project.write(
        "crier.yaml",
        format!(
            "providers:\n  sms:\n    {provider}\n    base_url: {}\n    limits: {{ {limits} }}\nchannels:\n  sms: sms\n",
            mock.url
        ),
    );
    project.write(
        "jobs/remind.yaml",
        format!("send_to: sms\nmessage: \"Hi {{{{ customer.name }}}}, your invoice is due\"\nrecipients: {{}}\n{job}"),
    );
    Bench {
        project,
        mock,
        _runtime: runtime,
    }
}

impl Bench {
    fn crier(&self, args: &[&str]) -> Run {
        self.project.crier_env(args, &[("BULKSMS_SECRET", SECRET)])
    }

    fn send(&self) -> Run {
        self.crier(&["send", "jobs/remind.yaml", "--yes"])
    }

    /// The run's messages as JSON (from `crier logs`).
    fn messages(&self) -> Vec<serde_json::Value> {
        let logs = self.crier(&["logs", "--format", "json", "--limit", "100000"]);
        assert_eq!(logs.code, 0, "{}", logs.stderr);
        serde_json::from_str::<serde_json::Value>(&logs.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn states(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for m in self.messages() {
            *out.entry(m["state"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        out
    }
}

fn no_secret(run: &Run) {
    assert!(
        !run.stdout.contains(SECRET),
        "secret in stdout: {}",
        run.stdout
    );
    assert!(
        !run.stderr.contains(SECRET),
        "secret in stderr: {}",
        run.stderr
    );
}

#[test]
fn transient_failures_are_retried_and_counted() {
    let b = setup("bulksms", 3, "concurrency: 1, backoff: 10ms", "");
    b.mock.state.push_faults([
        Fault::Status(503, "{}".into(), None),
        Fault::Status(500, "{}".into(), None),
    ]);
    let run = b.send();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("3 sent, 0 failed"), "{}", run.stdout);
    assert!(run.stdout.contains("2 retries"), "{}", run.stdout);
    assert_eq!(b.mock.state.accepted_count(), 3);
    let attempts: Vec<u64> = b
        .messages()
        .iter()
        .map(|m| m["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts.iter().sum::<u64>(), 5, "{attempts:?}");
}

#[test]
fn retry_after_is_honoured() {
    let b = setup("twilio", 1, "concurrency: 1, backoff: 10ms", "");
    b.mock.state.push_faults([Fault::Status(
        429,
        r#"{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}"#.into(),
        Some(1),
    )]);
    let started = Instant::now();
    let run = b.send();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(b.mock.state.accepted_count(), 1);
    // The backoff alone is 10 ms; the second attempt waited for the provider's 1 s.
    assert!(started.elapsed() >= Duration::from_secs(1));
    let m = &b.messages()[0];
    assert_eq!(m["attempts"], 2);
    assert_eq!(m["state"], "sent");
}

/// BulkSMS's 429 says the message was not taken (a 5xx may follow a commit, see below).
fn too_many() -> Fault {
    Fault::Status(
        429,
        r#"{"title":"Too Many Requests","status":429}"#.into(),
        None,
    )
}

#[test]
fn exhausted_retries_fail_with_the_reason() {
    let b = setup("bulksms", 2, "concurrency: 2, backoff: 5ms, retries: 2", "");
    b.mock.state.set_fault_every(1, too_many());
    let run = b.send();
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("0 sent, 2 failed"), "{}", run.stdout);
    for m in b.messages() {
        assert_eq!(m["state"], "failed");
        assert_eq!(m["error_code"], "retries_exhausted");
        assert_eq!(m["attempts"], 3);
    }
    assert_eq!(b.mock.state.accepted_count(), 0);
}

#[test]
fn messages_past_expire_after_expire() {
    let b = setup(
        "bulksms",
        2,
        "concurrency: 2, backoff: 2s",
        "expire_after: 500ms\n",
    );
    b.mock.state.set_fault_every(1, too_many());
    let run = b.send();
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("2 expired"), "{}", run.stdout);
    assert_eq!(b.states().get("expired"), Some(&2));
}

#[test]
fn a_message_that_may_have_gone_out_is_unknown_not_failed() {
    // The first answer is lost after BulkSMS committed the message; every resubmission
    // then meets a 503 (which may follow a commit too). The retries run out, but the
    // message is on its way: `unknown`, not `failed`.
    let b = setup("bulksms", 1, "concurrency: 1, backoff: 5ms, retries: 2", "");
    b.mock.state.push_faults([
        Fault::AcceptThenDrop,
        Fault::Status(503, "{}".into(), None),
        Fault::Status(503, "{}".into(), None),
    ]);
    let run = b.send();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("1 unknown"), "{}", run.stdout);
    assert_eq!(b.mock.state.accepted_count(), 1);
    let m = &b.messages()[0];
    assert_eq!(m["state"], "unknown");
    assert_eq!(m["attempts"], 3);
    let text = m["error_text"].as_str().unwrap();
    assert!(text.contains("may have been sent"), "{text}");
}

#[test]
fn no_credit_pauses_the_run_instead_of_failing_everyone() {
    let b = setup("bulksms", 20, "concurrency: 1", "");
    b.mock.state.set_balance(0.0);
    let run = b.send();
    no_secret(&run);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("paused: provider `sms` refused to send"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Insufficient Credits"),
        "{}",
        run.stdout
    );
    let states = b.states();
    assert_eq!(states.get("failed"), None, "{states:?}");
    assert_eq!(states.get("queued"), Some(&20), "{states:?}");
    let history = b.crier(&["history", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(runs[0]["status"], "processing");
}

#[test]
fn a_lost_answer_is_resubmitted_with_the_same_deduplication_id() {
    let b = setup("bulksms", 3, "concurrency: 1, backoff: 10ms", "");
    b.mock.state.push_faults([Fault::AcceptThenDrop]);
    let run = b.send();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    // Four submissions, three messages: BulkSMS recognised the resubmission.
    assert_eq!(b.mock.state.requests(), 4);
    let accepted = b.mock.state.accepted();
    assert_eq!(accepted.len(), 3, "{accepted:?}");
    let mut dedups: Vec<i32> = accepted.iter().filter_map(|a| a.dedup_id).collect();
    dedups.sort();
    dedups.dedup();
    assert_eq!(dedups.len(), 3);
    assert_eq!(b.states().get("sent"), Some(&3));
}

#[test]
fn a_lost_answer_without_deduplication_is_unknown_and_not_resent() {
    let b = setup("twilio", 3, "concurrency: 1, backoff: 10ms", "");
    b.mock.state.push_faults([Fault::AcceptThenDrop]);
    let run = b.send();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("1 unknown"), "{}", run.stdout);
    assert_eq!(b.mock.state.requests(), 3);
    assert_eq!(b.mock.state.accepted_count(), 3);
    let states = b.states();
    assert_eq!(states.get("unknown"), Some(&1), "{states:?}");
    assert_eq!(states.get("sent"), Some(&2), "{states:?}");
}

/// Most arrivals in any window of `window` length.
fn busiest(arrivals: &[Instant], window: Duration) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[test]
fn the_job_rate_and_the_provider_rate_both_hold() {
    // The provider allows 10/s; the job asks for 50/s: the provider's limit wins.
    let b = setup("bulksms", 25, "concurrency: 8, rate: 10/s", "rate: 50/s\n");
    let run = b.send();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let arrivals = b.mock.state.arrivals();
    assert_eq!(arrivals.len(), 25);
    // One token of burst plus ten a second.
    assert!(busiest(&arrivals, Duration::from_secs(1)) <= 11);
    // The job's own rate holds when it is the stricter one.
    let b = setup("bulksms", 25, "concurrency: 8, rate: 100/s", "rate: 10/s\n");
    assert_eq!(b.send().code, 0);
    let arrivals = b.mock.state.arrivals();
    assert!(busiest(&arrivals, Duration::from_secs(1)) <= 11);
}

#[test]
fn concurrency_per_provider_is_capped() {
    let b = setup("bulksms", 12, "concurrency: 3", "");
    b.mock
        .state
        .set_fault_every(1, Fault::Delay(Duration::from_millis(150)));
    let run = b.send();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(b.mock.state.accepted_count(), 12);
    assert_eq!(b.mock.state.max_in_flight(), 3);
}

#[test]
fn send_as_test_goes_to_the_test_number_only() {
    let b = setup("bulksms", 5, "concurrency: 2", "");
    let run = b.crier(&[
        "send",
        "jobs/remind.yaml",
        "--test-to",
        "071 555 0000",
        "--recipient",
        "4",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let accepted = b.mock.state.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].to.trim_start_matches('+'), "27715550000");
    assert_eq!(accepted[0].body, "Hi Customer 4, your invoice is due");
    let m = &b.messages()[0];
    assert_eq!(m["type"], "test");
}

#[test]
fn providers_check_reads_the_balance_and_min_balance_refuses() {
    let b = setup("bulksms", 3, "concurrency: 1", "min_balance: 10\n");
    b.mock.state.set_balance(7.5);
    let check = b.crier(&["providers", "check", "sms"]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(check.stdout.contains("7.50 credits"), "{}", check.stdout);
    let run = b.send();
    no_secret(&run);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("balance is 7.5 credits, below the job's min_balance 10"),
        "{}",
        run.stderr
    );
    assert_eq!(b.mock.state.requests(), 2, "two balance reads, no send");
}

#[test]
fn wrong_credentials_pause_and_no_secret_is_printed_or_stored() {
    let b = setup("bulksms", 3, "concurrency: 1", "");
    let wrong = b.project.crier_env(
        &["send", "jobs/remind.yaml", "--yes", "-vv"],
        &[("BULKSMS_SECRET", "wrong-secret-ALSO-SECRET")],
    );
    assert_eq!(wrong.code, 1);
    assert!(wrong.stdout.contains("paused"), "{}", wrong.stdout);
    assert!(!wrong.stdout.contains("wrong-secret-ALSO-SECRET"));
    assert!(!wrong.stderr.contains("wrong-secret-ALSO-SECRET"));
    let check = b.project.crier_env(
        &["providers", "check"],
        &[("BULKSMS_SECRET", "wrong-secret-ALSO-SECRET")],
    );
    assert_eq!(check.code, 1);
    assert!(!check.stdout.contains("wrong-secret-ALSO-SECRET"));
    let run = b.send();
    no_secret(&run);
    for args in [
        vec!["logs", "--format", "csv"],
        vec!["history", "--format", "csv"],
        vec!["config", "show"],
    ] {
        let out = b.crier(&args);
        no_secret(&out);
        assert!(!out.stdout.contains("wrong-secret-ALSO-SECRET"));
    }
}
