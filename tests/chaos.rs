//! The chaos suite: the real `crier send` against providers that misbehave and a data
//! directory that fails under it.
//!
//! **Provider faults** (`provider_faults_*`): a run through the BulkSMS, Twilio and
//! Clickatell mocks while each request draws a seeded random fault — 5xx, 429 with
//! `Retry-After`, Clickatell's code 43, a timeout (an answer slower than the provider's
//! `timeout`), a reset connection, an accepted message whose answer is lost, a
//! permanent refusal. Then, from the ledger and the mock's own log of every request:
//! every recipient has exactly one message; each ended `sent` (with the id the mock
//! gave), `failed` with a reason (and the mock never accepted it) or `unknown`; no
//! number was accepted twice; every attempt the ledger counts reached the mock; a 429's
//! `Retry-After` was waited out; after a lost answer a provider without safe
//! resubmission was never called again for that message, and BulkSMS resubmissions
//! carried the same `deduplication-id`; the busiest second at the mock stayed within
//! the configured rate plus its burst (with an allowance for scheduling stalls; the
//! exact bound is `a_stalled_provider_does_not_break_the_rate`, at 20/s).
//!
//! **Disk faults** (`disk_full_embedded`, `disk_read_only_embedded`): the data
//! directory is a filesystem the test mounts (so we need root, or `unshare -Urm`; a
//! test that cannot mount fails, it never skips). Mid-run it fills up (a tmpfs and a
//! filler file) or turns read-only (ext4 on a loop device with `errors=remount-ro` and
//! its `trigger_fs_error` switch: a plain `mount -o remount,ro` is refused while crier
//! holds files open for writing). `crier send` must stop with an error naming the
//! problem, without a panic or a hang; once space is back (or the filesystem is
//! checked and mounted again), `crier send --resume RUN` finishes the run with every
//! recipient sent exactly once, no duplicate at the mock, a history whose SQLite
//! `PRAGMA integrity_check` is `ok` and whose counters agree, and the directory intact.
//!
//! Process faults (SIGKILL of `crier run`) are `tests/daemon_crash.rs`.
//!
//! Size: `CRIER_CHAOS_RECIPIENTS` (default 1,500 for provider faults, 6,000 for disk
//! faults); `CRIER_CHAOS_SEED` replays a provider-fault run (each test prints its
//! seed and figures; `-- --nocapture` shows them). Full size, as the README says:
//! `CRIER_CHAOS_RECIPIENTS=10000 cargo test --test chaos provider_faults -- --nocapture
//! --test-threads 1`.

mod common;
mod mocks;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Project, Run, customers, runtime};
use mocks::{Fault, Logged, Mock};

const TOKEN_ID: &str = "CHAOS-TOKEN-01-B";
const SECRET: &str = "chaos-secret-value";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const CLICKATELL_KEY: &str = "chaos-clickatell-key";

/// The provider's limits in every provider-fault run.
const RATE: usize = 250;
const BURST: usize = 10;
/// Requests the mock may count in a window beyond rate and burst: on a machine this
/// busy (two cores, parallel builds) either process can stall for tens of milliseconds
/// between crier taking a token and the mock reading the request, and a stall moves
/// requests into the next window (100 ms worth at 250/s). The exact bound is checked at
/// a low rate by [`a_stalled_provider_does_not_break_the_rate`].
const JITTER: usize = RATE / 10;
/// The provider's `timeout`; a delayed answer takes longer.
const TIMEOUT: Duration = Duration::from_secs(1);
/// The `Retry-After` of every 429.
const RETRY_AFTER: u64 = 1;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The E.164 digits (no `+`) of customer `i`.
fn number_of(i: usize) -> String {
    format!("2782{:03}{:04}", 100 + i / 10_000, i % 10_000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BulkSms,
    Twilio,
    Clickatell,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::BulkSms => "bulksms",
            Kind::Twilio => "twilio",
            Kind::Clickatell => "clickatell",
        }
    }

    /// Resubmitting a message whose answer was lost is safe (BulkSMS's
    /// `deduplication-id`).
    fn deduplicates(self) -> bool {
        self == Kind::BulkSms
    }

    async fn mock(self) -> Mock {
        match self {
            Kind::BulkSms => mocks::bulksms(TOKEN_ID, SECRET).await,
            Kind::Twilio => mocks::twilio(SID, SECRET).await,
            Kind::Clickatell => mocks::clickatell(CLICKATELL_KEY).await,
        }
    }

    /// The provider's YAML (indented for `providers.sms`), pointing at `mock`.
    fn provider_yaml(self, mock: &Mock, limits: &str) -> String {
        let head = match self {
            Kind::BulkSms => {
                format!("type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: {SECRET}")
            }
            Kind::Twilio => format!(
                "type: twilio\n    account_sid: {SID}\n    auth_token: {SECRET}\n    from: \"+15005550006\""
            ),
            Kind::Clickatell => format!("type: clickatell\n    api_key: {CLICKATELL_KEY}"),
        };
        format!(
            "{head}\n    base_url: {}\n    limits: {{ {limits} }}",
            mock.url
        )
    }

    /// The recipient a send request is for: the number's digits, without `+`.
    fn number_in(self, request: &mocks::Request) -> Option<String> {
        let to = match self {
            Kind::BulkSms => request.json()?.get("to")?.as_str()?.to_string(),
            Kind::Twilio => request.form_value("To")?,
            Kind::Clickatell => request.json()?["messages"][0]["to"].as_str()?.to_string(),
        };
        Some(to.trim_start_matches('+').to_string())
    }

    /// The random fault mix of a provider-fault run: `(per-mille, fault)`.
    fn faults(self) -> Vec<(u32, Fault)> {
        let slow = Fault::Delay(TIMEOUT + Duration::from_millis(500));
        let mut faults = vec![
            (60, Fault::Status(503, self.server_error(), None)),
            (20, Fault::Status(500, self.server_error(), None)),
            (50, Fault::Status(429, self.too_many(), Some(RETRY_AFTER))),
            (20, slow),
            (30, Fault::Drop),
            (30, Fault::AcceptThenDrop),
            (10, Fault::Status(400, self.refusal(), None)),
        ];
        if self == Kind::Clickatell {
            faults.push((
                50,
                Fault::Status(
                    400,
                    r#"{"messages":[],"error":{"code":43,"description":"Too many requests. Rate limit exceeded."}}"#.into(),
                    None,
                ),
            ));
        }
        faults
    }

    fn server_error(self) -> String {
        match self {
            Kind::BulkSms => r#"{"type":"https://developer.bulksms.com/json/v1/errors#internal","title":"Internal Server Error","status":503}"#.into(),
            Kind::Twilio => r#"{"code":20500,"message":"Internal Server Error","more_info":"https://www.twilio.com/docs/errors/20500","status":503}"#.into(),
            Kind::Clickatell => r#"{"error":{"code":19,"description":"Internal error."}}"#.into(),
        }
    }

    fn too_many(self) -> String {
        match self {
            Kind::BulkSms => r#"{"type":"https://developer.bulksms.com/json/v1/errors#too-many-requests","title":"Too Many Requests","status":429}"#.into(),
            Kind::Twilio => r#"{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}"#.into(),
            Kind::Clickatell => r#"{"error":{"code":43,"description":"Too many requests."}}"#.into(),
        }
    }

    /// A permanent refusal of this one message.
    fn refusal(self) -> String {
        match self {
            Kind::BulkSms => r#"{"type":"https://developer.bulksms.com/json/v1/errors#validation","title":"Bad Request","status":400,"detail":"Invalid to"}"#.into(),
            Kind::Twilio => r#"{"code":21610,"message":"Attempt to send to unsubscribed recipient","more_info":"https://www.twilio.com/docs/errors/21610","status":400}"#.into(),
            Kind::Clickatell => r#"{"messages":[{"accepted":false,"to":"0","error":{"code":105,"description":"Invalid destination address."}}],"error":null}"#.into(),
        }
    }
}

/// A project with `n` customers, `crier.yaml` (`store_yaml` extra lines, the provider)
/// and the job `jobs/remind.yaml`.
fn project(n: usize, provider: &str, extra: &str) -> Project {
    let p = Project::new();
    p.write(
        "crier.yaml",
        format!("{extra}providers:\n  sms:\n    {provider}\nchannels:\n  sms: sms\n"),
    );
    p.write(
        "jobs/remind.yaml",
        "send_to: sms\nmessage: \"Hi {{ customer.name }}, your invoice is due\"\nrecipients: {}\n",
    );
    p.write("people.csv", customers(n));
    p
}

fn import(p: &Project, n: usize) {
    let run = p.crier(&["import", "people.csv"]);
    assert_eq!(run.code, 0, "import: {}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("{n} inserted")),
        "{}",
        run.stdout
    );
}

/// The id of the newest run.
fn newest_run(p: &Project) -> String {
    let out = p.crier(&["history", "--status", "any", "--format", "json"]);
    assert_eq!(out.code, 0, "history: {}", out.stderr);
    let runs: serde_json::Value = serde_json::from_str(&out.stdout).expect("history JSON");
    runs[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run in {}", out.stdout))
        .to_string()
}

/// One message of `crier history recipients RUN --format csv`.
#[derive(Debug, Clone)]
struct Message {
    recipient_id: usize,
    /// Digits, no `+`.
    number: String,
    state: String,
    attempts: u32,
    provider_message_id: String,
    error_code: String,
}

fn ledger(p: &Project, run: &str) -> Vec<Message> {
    let out = p.crier(&["history", "recipients", run, "--format", "csv"]);
    assert_eq!(out.code, 0, "history recipients: {}", out.stderr);
    let mut reader = csv::Reader::from_reader(out.stdout.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {headers:?}"))
    };
    let (rid, address, state, attempts, pid, code) = (
        col("recipient_id"),
        col("address"),
        col("state"),
        col("attempts"),
        col("provider_message_id"),
        col("error_code"),
    );
    reader
        .records()
        .map(|r| {
            let r = r.expect("CSV row");
            Message {
                recipient_id: r[rid].parse().expect("recipient id"),
                number: r[address].trim_start_matches('+').to_string(),
                state: r[state].to_string(),
                attempts: r[attempts].parse().expect("attempts"),
                provider_message_id: r[pid].to_string(),
                error_code: r[code].to_string(),
            }
        })
        .collect()
}

/// Most arrivals in any window of `window` length (as `tests/engine.rs` measures).
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

/// Every recipient `1..=n` has exactly one message in `messages`.
fn assert_everyone_once(messages: &[Message], n: usize) {
    let mut seen = HashSet::new();
    for m in messages {
        assert!(
            seen.insert(m.recipient_id),
            "recipient {} has two messages",
            m.recipient_id
        );
        assert_eq!(
            m.number,
            number_of(m.recipient_id),
            "recipient {}",
            m.recipient_id
        );
    }
    let missing: Vec<usize> = (1..=n).filter(|i| !seen.contains(i)).take(10).collect();
    assert!(missing.is_empty(), "not in the ledger: {missing:?}…");
    assert_eq!(messages.len(), n, "messages in the ledger");
}

/// How many times the mock accepted each number, and the ids it answered with.
fn accepted_by_number(mock: &Mock) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for a in mock.state.accepted() {
        out.entry(a.to.trim_start_matches('+').to_string())
            .or_default()
            .push(a.provider_id);
    }
    out
}

// ---------------------------------------------------------------------------------------
// Provider faults
// ---------------------------------------------------------------------------------------

fn provider_faults(kind: Kind) {
    let n = env_or("CRIER_CHAOS_RECIPIENTS", 1_500) as usize;
    let seed = env_or(
        "CRIER_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    let runtime = runtime();
    let mock = runtime.block_on(kind.mock());
    let limits = format!(
        "rate: {RATE}/s, burst: {BURST}, concurrency: 16, timeout: {}ms, backoff: 50ms, retries: 5",
        TIMEOUT.as_millis()
    );
    let p = project(n, &kind.provider_yaml(&mock, &limits), "");
    import(&p, n);
    mock.state.log_requests(true);
    mock.state.set_random_faults(seed, kind.faults());

    let started = Instant::now();
    let run = p.crier(&["send", "jobs/remind.yaml", "--yes"]);
    let took = started.elapsed();
    let context = format!("{} seed {seed} (CRIER_CHAOS_SEED replays it)", kind.name());
    assert!(
        !run.stderr.contains("panicked"),
        "{context}: {}",
        run.stderr
    );
    let id = newest_run(&p);
    let messages = ledger(&p, &id);
    let log: Vec<Logged> = mock
        .state
        .log()
        .into_iter()
        .filter(|l| l.request.method == "POST")
        .collect();
    let accepted = accepted_by_number(&mock);

    // Every recipient is in the ledger once, and every message has an outcome.
    assert_everyone_once(&messages, n);
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &messages {
        *states.entry(m.state.as_str()).or_default() += 1;
        match m.state.as_str() {
            "sent" => {
                let ids = accepted.get(&m.number);
                assert!(
                    ids.is_some_and(|ids| ids.contains(&m.provider_message_id)),
                    "{context}: recipient {} is sent as {:?} but the mock accepted {ids:?}",
                    m.recipient_id,
                    m.provider_message_id
                );
            }
            "failed" => {
                assert!(
                    !m.error_code.is_empty(),
                    "{context}: recipient {} failed without a reason",
                    m.recipient_id
                );
                assert!(
                    !accepted.contains_key(&m.number),
                    "{context}: recipient {} is failed ({}) but the mock accepted it",
                    m.recipient_id,
                    m.error_code
                );
            }
            "unknown" => assert!(
                !m.error_code.is_empty(),
                "{context}: recipient {} is unknown without a reason",
                m.recipient_id
            ),
            other => panic!("{context}: recipient {} ended `{other}`", m.recipient_id),
        }
    }
    let (sent, failed, unknown) = (
        states.get("sent").copied().unwrap_or(0),
        states.get("failed").copied().unwrap_or(0),
        states.get("unknown").copied().unwrap_or(0),
    );
    assert!(
        run.stdout
            .contains(&format!("{sent} sent, {failed} failed")),
        "{context}: the summary disagrees with the ledger {states:?}: {}",
        run.stdout
    );
    assert_eq!(
        run.code,
        if sent == n { 0 } else { 1 },
        "{context}: exit code\n{}\n{}",
        run.stdout,
        run.stderr
    );

    // No number accepted twice.
    let duplicated: usize = accepted.values().map(|ids| ids.len() - 1).sum();
    assert_eq!(duplicated, 0, "{context}: messages accepted twice");
    let lost = n - sent - failed - unknown;

    // Each message's attempts, as the mock saw them.
    let mut by_number: HashMap<String, Vec<&Logged>> = HashMap::new();
    for l in &log {
        let number = kind
            .number_in(&l.request)
            .unwrap_or_else(|| panic!("{context}: a send without a number: {:?}", l.request));
        by_number.entry(number).or_default().push(l);
    }
    let mut retry_after_waits = 0;
    for m in &messages {
        let attempts = by_number.get(&m.number).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            attempts.len(),
            m.attempts as usize,
            "{context}: recipient {}: the ledger counts {} attempts, the mock saw {:?}",
            m.recipient_id,
            m.attempts,
            attempts.iter().map(|a| &a.fault).collect::<Vec<_>>()
        );
        for pair in attempts.windows(2) {
            let (first, then) = (pair[0], pair[1]);
            let fault = first.fault.as_deref().unwrap_or("none");
            if fault == "status-429" {
                retry_after_waits += 1;
                assert!(
                    then.at - first.at >= Duration::from_millis(RETRY_AFTER * 1000 - 10),
                    "{context}: recipient {}: resent {:?} after a 429 with Retry-After: {RETRY_AFTER}",
                    m.recipient_id,
                    then.at - first.at
                );
            }
            // An answer that may follow a commit: only a deduplicating provider may
            // hear of the message again.
            let uncertain = matches!(fault, "drop" | "accept-then-drop" | "delay")
                || (kind == Kind::Twilio && fault == "5xx");
            assert!(
                !uncertain || kind.deduplicates(),
                "{context}: recipient {}: sent again after `{fault}`",
                m.recipient_id
            );
        }
        if kind.deduplicates() {
            let ids: HashSet<Option<String>> = attempts
                .iter()
                .map(|a| a.request.query_param("deduplication-id"))
                .collect();
            assert_eq!(
                ids.len(),
                1,
                "{context}: recipient {}: deduplication ids {ids:?}",
                m.recipient_id
            );
            assert!(!ids.contains(&None), "{context}: no deduplication-id");
        }
    }
    assert!(
        retry_after_waits > 0 || n < 200,
        "{context}: no 429 was ever retried"
    );

    // The rate limit held at the provider.
    let arrivals: Vec<Instant> = log.iter().map(|l| l.at).collect();
    let peak = busiest(&arrivals, Duration::from_secs(1));
    assert!(
        peak <= RATE + BURST + JITTER,
        "{context}: {peak} requests in one second, limit {RATE}/s with a burst of {BURST} \
         (and {JITTER} for scheduling jitter)"
    );
    let peak5 = busiest(&arrivals, Duration::from_secs(5));
    assert!(
        peak5 <= 5 * RATE + BURST + JITTER,
        "{context}: {peak5} requests in five seconds, limit {RATE}/s with a burst of {BURST}"
    );

    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    for l in &log {
        *faults
            .entry(l.fault.clone().unwrap_or_else(|| "ok".into()))
            .or_default() += 1;
    }
    println!(
        "chaos {context}: {n} recipients in {:.1}s: {sent} sent, {failed} failed, {unknown} unknown, \
         {lost} lost, {duplicated} duplicated; {} requests {faults:?}; busiest second {peak} \
         (limit {RATE}/s + burst {BURST})",
        took.as_secs_f64(),
        log.len()
    );
}

#[test]
fn provider_faults_bulksms() {
    provider_faults(Kind::BulkSms);
}

#[test]
fn provider_faults_twilio() {
    provider_faults(Kind::Twilio);
}

#[test]
fn provider_faults_clickatell() {
    provider_faults(Kind::Clickatell);
}

/// A provider that stops answering for a while, then answers everything at once: the
/// messages that queued meanwhile must not leave in a rush above the rate (they did
/// when crier took rate tokens before waiting for a connection permit).
#[test]
fn a_stalled_provider_does_not_break_the_rate() {
    let n = 60;
    let runtime = runtime();
    let mock = runtime.block_on(Kind::BulkSms.mock());
    let limits = "rate: 20/s, burst: 1, concurrency: 2, timeout: 10s";
    let p = project(n, &Kind::BulkSms.provider_yaml(&mock, limits), "");
    import(&p, n);
    mock.state.push_faults([
        Fault::Delay(Duration::from_secs(2)),
        Fault::Delay(Duration::from_secs(2)),
    ]);
    let run = p.crier(&["send", "jobs/remind.yaml", "--yes"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(mock.state.accepted_count(), n);
    let peak = busiest(&mock.state.arrivals(), Duration::from_secs(1));
    // 20 a second plus the burst of one, and one for timer jitter.
    assert!(peak <= 22, "{peak} requests in one second after the stall");
}

// ---------------------------------------------------------------------------------------
// Disk faults
// ---------------------------------------------------------------------------------------

fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A filesystem this test mounted; unmounted when dropped, also when the test fails.
struct Mounted {
    at: PathBuf,
    /// The ext4 image behind a loop mount.
    image: Option<PathBuf>,
}

const CANNOT_MOUNT: &str = "the disk-fault tests mount a filesystem for the data directory: run them as root \
     (or under `unshare -Urm`); they fail rather than skip";

impl Mounted {
    /// A tmpfs of `mb` MiB at `at`.
    fn tmpfs(at: &Path, mb: u64) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let options = format!("size={mb}m");
        let at_str = at.to_str().unwrap();
        if let Err(e) = sh(
            "mount",
            &["-t", "tmpfs", "-o", &options, "crier-chaos", at_str],
        ) {
            panic!("{CANNOT_MOUNT}: {e}");
        }
        Mounted {
            at: at.to_path_buf(),
            image: None,
        }
    }

    /// A fresh ext4 filesystem of `mb` MiB in `image`, loop-mounted at `at` with
    /// `errors=remount-ro`.
    fn ext4(at: &Path, image: &Path, mb: u64) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let file = std::fs::File::create(image).unwrap();
        file.set_len(mb << 20).unwrap();
        if let Err(e) = sh("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]) {
            panic!("mkfs.ext4 (e2fsprogs) is needed for the read-only test: {e}");
        }
        let mounted = Mounted {
            at: at.to_path_buf(),
            image: Some(image.to_path_buf()),
        };
        mounted.mount_image();
        mounted
    }

    fn mount_image(&self) {
        let image = self.image.as_ref().unwrap();
        if let Err(e) = sh(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                image.to_str().unwrap(),
                self.at.to_str().unwrap(),
            ],
        ) {
            panic!("{CANNOT_MOUNT}: {e}");
        }
    }

    /// Makes the ext4 filesystem hit an error, which `errors=remount-ro` answers by
    /// turning it read-only under every open file.
    fn turn_read_only(&self) {
        let source = sh(
            "findmnt",
            &["-n", "-o", "SOURCE", self.at.to_str().unwrap()],
        )
        .expect("findmnt");
        let device = Path::new(source.trim())
            .file_name()
            .expect("a loop device")
            .to_string_lossy()
            .into_owned();
        std::fs::write(format!("/sys/fs/ext4/{device}/trigger_fs_error"), "1")
            .expect("trigger_fs_error");
        let probe = std::fs::write(self.at.join("probe"), "x");
        assert!(
            probe.is_err(),
            "the filesystem at {} is still writable",
            self.at.display()
        );
    }

    /// Unmounts, repairs with e2fsck (as an admin would), and mounts the image again.
    fn repair_and_remount(&self) {
        sh("umount", &[self.at.to_str().unwrap()]).expect("umount");
        let image = self.image.as_ref().unwrap().to_str().unwrap();
        // 0: clean, 1: errors corrected; anything else is a failure.
        let status = Command::new("e2fsck")
            .args(["-f", "-y", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("e2fsck");
        assert!(matches!(status.code(), Some(0 | 1)), "e2fsck: {status}");
        self.mount_image();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let at = self.at.to_str().unwrap();
        if sh("umount", &[at]).is_err() {
            // Busy (a crier left behind): detach it now, it goes when the process does.
            let _ = sh("umount", &["-l", at]);
        }
    }
}

/// Fills the filesystem holding `dir` with a file until a write fails for want of
/// space; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create the filler");
    let chunk = vec![0xA5u8; 1 << 20];
    for size in [1 << 20, 4096, 1] {
        while file.write_all(&chunk[..size]).is_ok() {}
    }
    let _ = file.sync_all();
    path
}

/// A child's stdout and stderr, read on threads so the pipes never block it.
struct Watched {
    child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Watched {
    fn start(p: &Project, args: &[&str]) -> Watched {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crier"))
            .args(args)
            .current_dir(p.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start crier");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let read = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        Watched {
            child,
            out: read(Box::new(stdout)),
            err: read(Box::new(stderr)),
        }
    }

    /// Waits at most `limit` for the exit; a hang is killed and fails the test.
    fn finish(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "crier hung: still running {limit:?} after the fault\n{}\n{}",
                    self.out.join().unwrap_or_default(),
                    self.err.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: self.out.join().unwrap_or_default(),
            stderr: self.err.join().unwrap_or_default(),
        }
    }
}

/// A Python for reading the history the way an analyst would (its `sqlite3` module).
fn python() -> String {
    std::env::var("CRIER_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskFault {
    Full,
    ReadOnly,
}

fn disk_fault(fault: DiskFault, backend: &str) {
    if common::on_postgres() {
        // The data directory's own filesystem faults: on PostgreSQL the history is not on
        // it (the database stopped mid-run is tests/storage.rs).
        return;
    }
    // Enough recipients that the planner (about 2,500 messages ahead of the sending)
    // is still adding messages when the fault strikes early on: only a store that must
    // grow meets a full disk.
    let n = env_or("CRIER_CHAOS_RECIPIENTS", 6_000) as usize;
    let runtime = runtime();
    let mock = runtime.block_on(Kind::BulkSms.mock());
    let limits = "rate: 2000/s, concurrency: 8, timeout: 5s, backoff: 50ms";
    let p = project(
        n,
        &Kind::BulkSms.provider_yaml(&mock, limits),
        &format!("data_dir: ./data\nstore: {{ backend: {backend} }}\n"),
    );
    let data = p.path().join("data");
    let mounted = match fault {
        DiskFault::Full => Mounted::tmpfs(&data, 256),
        DiskFault::ReadOnly => Mounted::ext4(&data, &p.path().join("data.img"), 256),
    };
    import(&p, n);
    let context = format!("{fault:?} {backend}");

    let child = Watched::start(&p, &["send", "jobs/remind.yaml", "--yes"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while mock.state.accepted_count() < (n / 10).min(200) {
        assert!(
            Instant::now() < deadline,
            "{context}: the run did not get going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let filler = match fault {
        DiskFault::Full => Some(fill(&data)),
        DiskFault::ReadOnly => {
            mounted.turn_read_only();
            None
        }
    };
    let at_fault = mock.state.accepted_count();
    let failed = child.finish(Duration::from_secs(60));
    let text = format!("{}\n{}", failed.stdout, failed.stderr);
    assert!(!text.contains("panicked"), "{context}: {text}");
    assert_ne!(failed.code, 0, "{context}: the run went on: {text}");
    // After an ext4 error the OS answers writes with EROFS, and a sync of what was
    // written before with EIO: either is the OS's own account of the problem.
    let named: &[&str] = match fault {
        DiskFault::Full => &["No space left on device"],
        DiskFault::ReadOnly => &["Read-only file system", "Input/output error"],
    };
    let error = failed
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        named.iter().any(|n| error.contains(n)),
        "{context}: the error does not say {named:?}: {text}"
    );
    assert!(
        !failed.stderr.contains("corrupt"),
        "{context}: a full or read-only disk is not corruption: {text}"
    );
    let stopped_at = mock.state.accepted_count();
    assert!(
        stopped_at < n,
        "{context}: every message went out though the history could not record them ({at_fault} at the fault)"
    );

    // Space back (or the filesystem checked and mounted again): resume.
    match fault {
        DiskFault::Full => std::fs::remove_file(filler.unwrap()).unwrap(),
        DiskFault::ReadOnly => mounted.repair_and_remount(),
    }
    let history = p.crier(&["history", "--status", "any", "--format", "json"]);
    assert!(
        !history.stderr.contains("panicked"),
        "{context}: {}",
        history.stderr
    );
    assert_eq!(history.code, 0, "{context}: {}", history.stderr);
    let id = newest_run(&p);
    let resumed = p.crier(&["send", "jobs/remind.yaml", "--resume", &id]);
    assert_eq!(
        resumed.code, 0,
        "{context}: resume\n{}\n{}",
        resumed.stdout, resumed.stderr
    );

    let messages = ledger(&p, &id);
    assert_everyone_once(&messages, n);
    let accepted = accepted_by_number(&mock);
    for m in &messages {
        assert_eq!(m.state, "sent", "{context}: recipient {}", m.recipient_id);
        let ids = accepted.get(&m.number).cloned().unwrap_or_default();
        assert_eq!(
            ids,
            vec![m.provider_message_id.clone()],
            "{context}: recipient {}: accepted {ids:?}, ledger says {}",
            m.recipient_id,
            m.provider_message_id
        );
    }
    assert_eq!(mock.state.accepted_count(), n, "{context}: accepted");

    // The history reads back whole (SQLite's own check says so, and the run's counters
    // agree with its messages), and every recipient is still there, unchanged.
    let check = std::process::Command::new(python())
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])",
        ])
        .arg(p.path().join("data/history.sqlite3"))
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "ok",
        "{context}: integrity check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let show = p.crier(&["history", "--status", "any", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(runs[0]["status"], "sent", "{context}: {}", show.stdout);
    assert_eq!(
        (
            runs[0]["messages"].as_u64(),
            runs[0]["counters"]["sent"].as_u64()
        ),
        (Some(n as u64), Some(n as u64)),
        "{context}: counters {}",
        show.stdout
    );
    let again = p.crier(&["import", "people.csv"]);
    assert!(
        again.stdout.contains(&format!("{n} unchanged")),
        "{context}: recipients after the fault: {}\n{}",
        again.stdout,
        again.stderr
    );
    println!(
        "chaos disk {context}: {n} recipients, {at_fault} accepted at the fault, {stopped_at} when crier stopped \
         (exit {}: {error}); resumed: {n} sent, 0 duplicated",
        failed.code
    );
    drop(mounted);
}

#[test]
fn disk_full_embedded() {
    disk_fault(DiskFault::Full, "embedded");
}

#[test]
fn disk_read_only_embedded() {
    disk_fault(DiskFault::ReadOnly, "embedded");
}
