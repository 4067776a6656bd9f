//! The end-to-end benchmark suite: the real `crier` binary against mocks on loopback,
//! beside a plain load generator and a peer tool, printed as Markdown tables: one per
//! store backend, measured side by side (each run imports, sends and exports on every
//! backend in turn), and one of the rest.
//!
//! `cargo bench --bench suite -- [CUSTOMERS] [RUNS]` (default 1,000,000 and 3);
//! `CRIER_BENCH_DATABASE_URL` (a PostgreSQL database: a fresh schema per project);
//! `CRIER_BENCH_BACKEND` (`embedded`, `postgres` or `both`; default both with a database
//! URL, else embedded); `CRIER_BENCH_CONCURRENCY` (default 64);
//! `CRIER_BENCH_CACHE_MB` (the embedded store's `cache_mb`, default crier's);
//! `CRIER_BENCH_RATE_SECS` (default 30); `CRIER_BENCH_PEER_MESSAGES` (default 10,000);
//! `CRIER_BENCH_PYTHON` (default `python3`) for Apprise;
//! `CRIER_BENCH_BINARIES` (`LABEL=PATH,LABEL=PATH`: crier binaries measured side by
//! side, each run interleaved; default the one Cargo built), e.g. the default build and
//! one built with `--no-default-features` (the system's malloc);
//! `CRIER_BENCH_ONLY=store` (import, send, export and `wrk` only).
//!
//! Every crier figure is one child process of the release binary, timed from spawn to
//! exit, with its peak RSS read from the kernel's accounting of that process alone
//! (`VmHWM`, read every 10 ms). Each figure is the median of RUNS runs, with min and max, and
//! the 1-minute load average seen at the start of its runs (the machine may be shared).
//!
//! 1. Generates CUSTOMERS customers; each run imports them into a fresh store
//!    (`crier import`, rows/s), sends one SMS job to all of them through the `bulksms`
//!    provider to the BulkSMS mock with history on (`crier send JOB --yes`, messages/s for
//!    the whole command: preview, planning, sending, recording), and exports the message
//!    history as CSV (`crier logs --format csv`, rows/s).
//! 2. Runs `wrk` (Debian package `wrk`) against the same mock with the same number of
//!    connections, posting the same BulkSMS request: crier's throughput as a fraction of
//!    what a plain load generator reaches.
//! 3. Apprise (`pip install apprise`), the notification tool many admins reach for, sends
//!    the same PEER_MESSAGES messages crier sent through its generic `http` provider, to
//!    the same generic gateway mock: Apprise's `json://` plugin POSTs
//!    `{"version","title","message","attachments","type"}`; the URL adds the recipient
//!    (`:to=`, a payload field) and the key (`+X-Api-Key=`, a header), which is all the
//!    gateway mock needs to accept and count it. Apprise is driven through its Python
//!    API in one process, in its async mode (`async_notify`, its own worker pool) and in
//!    a plain `notify()` loop, each timed around the sending only (its import and URL
//!    parsing excluded, while crier's figure is its whole command); and its CLI, one
//!    process per message as a shell loop would run it, on a sample.
//! 4. Sends a job limited to 200 messages/s for RATE_SECS seconds and reports the
//!    achieved rate (from the mock's arrival times) and its error.
//!
//! Nothing is installed: a missing `wrk` or Apprise is reported with how to install it,
//! and its rows are left out.

#[path = "../tests/mocks/mod.rs"]
mod mocks;
mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN_ID: &str = "BENCH0TOKEN0ID-01-B";
const SECRET: &str = "bench-secret";
const GATEWAY_KEY: &str = "bench-gateway-key";
const BODY: &str =
    "Hi {{ customer.name }}, your Atlantic Fibre invoice is overdue. Pay at portal.example.net";

/// Sends each line of a file (`to<TAB>body`) through Apprise's Python API; prints the
/// number accepted and the seconds the sending took. `loop` calls `notify()` one message
/// after another; `async` gathers every `async_notify()` at once (Apprise runs them on its
/// shared thread pool). One `Apprise` object per recipient, since `json://` carries the
/// recipient in its URL; they are built before the clock starts.
const APPRISE_SCRIPT: &str = r#"
import asyncio, sys, time
from urllib.parse import quote
import apprise

mode, base, path = sys.argv[1], sys.argv[2], sys.argv[3]
senders = []
with open(path, encoding="utf-8") as f:
    for line in f:
        to, body = line.rstrip("\n").split("\t", 1)
        a = apprise.Apprise()
        if not a.add(base + "&:to=" + quote(to, safe="")):
            sys.exit("apprise rejected the URL for " + to)
        senders.append((a, body))

started = time.perf_counter()
if mode == "loop":
    ok = sum(1 for a, body in senders if a.notify(body=body))
else:
    async def main():
        results = await asyncio.gather(*(a.async_notify(body=body) for a, body in senders))
        return sum(1 for r in results if r)
    ok = asyncio.run(main())
print(ok, time.perf_counter() - started)
"#;

fn crier(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env_remove("RUST_LOG");
    c
}

/// The binaries measured: `CRIER_BENCH_BINARIES` (`LABEL=PATH,…`), else Cargo's build.
fn binaries() -> Vec<(String, PathBuf)> {
    match std::env::var("CRIER_BENCH_BINARIES") {
        Ok(list) => list
            .split(',')
            .map(|entry| {
                let (label, path) = entry
                    .split_once('=')
                    .unwrap_or_else(|| panic!("CRIER_BENCH_BINARIES: `{entry}` is not LABEL=PATH"));
                let path = PathBuf::from(path);
                assert!(path.is_file(), "CRIER_BENCH_BINARIES: no file at {path:?}");
                (label.to_string(), path)
            })
            .collect(),
        Err(_) => vec![(String::new(), PathBuf::from(env!("CARGO_BIN_EXE_crier")))],
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The 1-minute load average.
fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The backends measured, side by side: `CRIER_BENCH_BACKEND` (`embedded`, `postgres`
/// or `both`); by default both when `CRIER_BENCH_DATABASE_URL` is set, else embedded.
fn backends() -> Vec<&'static str> {
    let url = std::env::var("CRIER_BENCH_DATABASE_URL").is_ok();
    match std::env::var("CRIER_BENCH_BACKEND").as_deref() {
        Ok("postgres") => vec!["postgres"],
        Ok("embedded") => vec!["embedded"],
        Ok("both") => vec!["embedded", "postgres"],
        _ if url => vec!["embedded", "postgres"],
        _ => vec!["embedded"],
    }
}

/// `store:` of a fresh project on `backend`: embedded, or PostgreSQL at
/// `CRIER_BENCH_DATABASE_URL` in a schema of its own (each project starts empty, as a
/// fresh data dir does), and that schema's name.
fn store_yaml(backend: &str) -> (String, Option<String>) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    match backend {
        "postgres" => {
            let url = std::env::var("CRIER_BENCH_DATABASE_URL")
                .expect("CRIER_BENCH_DATABASE_URL for the postgres backend");
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let schema = format!("bench_{}_{n}", std::process::id());
            (
                format!("{{ backend: postgres, url: \"{url}\", schema: {schema} }}"),
                Some(schema),
            )
        }
        other => match std::env::var("CRIER_BENCH_CACHE_MB") {
            Ok(mb) => (format!("{{ backend: {other}, cache_mb: {mb} }}"), None),
            Err(_) => (format!("{{ backend: {other} }}"), None),
        },
    }
}

/// Drops a project's PostgreSQL schema once its run is measured: what earlier runs left
/// in the database (a million messages each) would otherwise weigh on the later ones,
/// through the server's checkpoints and cache.
fn drop_schema(schema: &str) {
    let url = std::env::var("CRIER_BENCH_DATABASE_URL").expect("CRIER_BENCH_DATABASE_URL");
    let dropped = Command::new("psql")
        .arg(&url)
        .args(["-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
        .stdout(Stdio::null())
        .status();
    if !dropped.is_ok_and(|s| s.success()) {
        eprintln!("Could not drop schema {schema} with psql: drop it by hand.");
    }
}

/// Writes `crier.yaml` (one SMS provider, `provider_yaml` indented under its name) and
/// `job.yaml` (every customer, `job_extra` appended); the project's PostgreSQL schema.
fn write_project(
    dir: &Path,
    backend: &str,
    provider_yaml: &str,
    job_extra: &str,
) -> Option<String> {
    std::fs::create_dir_all(dir).expect("project dir");
    let (store, schema) = store_yaml(backend);
    std::fs::write(
        dir.join("crier.yaml"),
        format!("store: {store}\nproviders:\n  sms:\n{provider_yaml}channels:\n  sms: sms\n"),
    )
    .expect("crier.yaml");
    std::fs::write(
        dir.join("job.yaml"),
        format!("send_to: sms\nmessage: \"{BODY}\"\nrecipients: {{}}\n{job_extra}"),
    )
    .expect("job.yaml");
    schema
}

fn bulksms_yaml(url: &str, concurrency: u32) -> String {
    format!(
        "    type: bulksms\n    token_id: {TOKEN_ID}\n    token_secret: {SECRET}\n    base_url: {url}\n    limits: {{ concurrency: {concurrency}, timeout: 30s }}\n"
    )
}

fn gateway_yaml(url: &str, concurrency: u32) -> String {
    format!(
        "    type: http\n    url: {url}/send\n    headers: {{ X-Api-Key: {GATEWAY_KEY} }}\n    payload: {{ to: \"{{to}}\", message: \"{{message}}\" }}\n    message_id: data.id\n    limits: {{ concurrency: {concurrency}, timeout: 30s }}\n"
    )
}

/// One finished child process: wall seconds and its own peak RSS in MB.
struct Measured {
    secs: f64,
    peak_mb: f64,
}

/// Runs `cmd` to completion with stdout to the file `stdout` (stderr beside it, `.err`),
/// reading its peak resident set (`VmHWM` of `/proc/PID/status`) every 10 ms: the high
/// water mark of that process alone. (`wait4`'s `ru_maxrss` would be simpler but is
/// wrong here: a spawned child inherits its parent's high water mark at `exec`, and this
/// process, which hosts the mocks, grows to hundreds of MB during a send.)
fn measure(mut cmd: Command, stdout: &Path) -> Measured {
    let out = File::create(stdout).expect("stdout file");
    let err_path = stdout.with_extension("err");
    let err = File::create(&err_path).expect("stderr file");
    let started = Instant::now();
    let mut child = cmd
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0.0f64;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if let Some(kb) = std::fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        }) {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let secs = started.elapsed().as_secs_f64();
    assert!(
        status.success(),
        "{cmd:?} failed ({status}): {}{}",
        std::fs::read_to_string(stdout).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    Measured {
        secs,
        peak_mb: peak_kb / 1024.0,
    }
}

/// Writes back what earlier steps left dirty (`sync`) before a step is timed, so no step
/// pays for the one before it: a send measured right after another backend's import and
/// export shared the disk with their write-back.
fn settle() {
    let synced = Command::new("sync").status();
    assert!(
        synced.as_ref().is_ok_and(|s| s.success()),
        "sync: {synced:?}"
    );
}

/// The number before `what` in crier's summary line, e.g. `970123 sent`.
fn count(stdout: &str, what: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("run "))
        .expect("summary line");
    let words: Vec<&str> = line.split([' ', ',']).collect();
    words
        .windows(2)
        .find(|w| w[1] == what)
        .and_then(|w| w[0].parse().ok())
        .expect("count in summary")
}

/// `crier import CSV` in `dir`: rows (data lines of the file) per second, and the run.
fn import(bin: &Path, dir: &Path, csv: &Path, rows: u64) -> (f64, Measured) {
    let mut cmd = crier(bin);
    cmd.arg("import").arg(csv).current_dir(dir);
    let m = measure(cmd, &dir.join("import.out"));
    (rows as f64 / m.secs, m)
}

/// `crier send job.yaml --yes` in `dir`: messages sent, and the run.
fn send(bin: &Path, dir: &Path) -> (u64, Measured) {
    let mut cmd = crier(bin);
    cmd.args(["send", "job.yaml", "--yes"]).current_dir(dir);
    let out = dir.join("send.out");
    let m = measure(cmd, &out);
    let stdout = std::fs::read_to_string(&out).expect("send output");
    (count(&stdout, "sent"), m)
}

/// `crier logs --format csv` in `dir` to a file: rows exported, and the run.
fn export(bin: &Path, dir: &Path) -> (u64, Measured) {
    let mut cmd = crier(bin);
    cmd.args(["logs", "--format", "csv"]).current_dir(dir);
    let out = dir.join("messages.csv");
    let m = measure(cmd, &out);
    let file = std::io::BufReader::new(File::open(&out).expect("export"));
    let lines = std::io::BufRead::split(file, b'\n').count() as u64;
    (lines.saturating_sub(1), m)
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(ok.success());
}

/// `wrk` at `connections` for 15 s posting one BulkSMS message; requests per second.
fn wrk(url: &str, connections: u32, script: &Path) -> Option<f64> {
    let auth = mocks::basic(TOKEN_ID, SECRET);
    std::fs::write(
        script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"{auth}\"\nwrk.body = '[{{\"to\":\"+27821234567\",\"body\":\"Hi Thabo Mokoena, your Atlantic Fibre invoice is overdue. Pay at portal.example.net\",\"encoding\":\"TEXT\",\"userSuppliedId\":\"x\"}}]'\n"
        ),
    )
    .ok()?;
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), "-d15s", "-s"])
        .arg(script)
        .arg(format!("{url}/messages"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether a command starts and exits 0.
fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Writes `n` customers whose phones are all valid (the generator's invalid ones left
/// out), so a job over them sends `n` messages.
fn write_valid_customers(path: &Path, n: usize, seed: u64) {
    let all = path.with_extension("all.csv");
    support::write_customers(&all, n as u64 * 11 / 10 + 100, seed).expect("customers");
    let text = std::fs::read_to_string(&all).expect("customers");
    let mut lines = text.lines();
    let mut out = String::with_capacity(text.len());
    out.push_str(lines.next().expect("header"));
    out.push('\n');
    for line in lines
        .filter(|l| l.split(',').nth(5) != Some("12345"))
        .take(n)
    {
        out.push_str(line);
        out.push('\n');
    }
    std::fs::write(path, out).expect("customers");
    std::fs::remove_file(all).ok();
}

/// Collected figures of one table row: values per run and the load at each run's start.
/// One backend's figures.
struct Backend {
    name: &'static str,
    /// The binary's label (empty for Cargo's one) and path.
    label: String,
    bin: PathBuf,
    imp: Series,
    imp_rss: Series,
    snd: Series,
    snd_rss: Series,
    exp: Series,
    exp_rss: Series,
    sent: u64,
    rows: u64,
}

impl Backend {
    /// ` (LABEL)` when binaries are compared, else nothing.
    fn label_suffix(&self) -> String {
        if self.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.label)
        }
    }

    fn new(name: &'static str, (label, bin): (String, PathBuf)) -> Backend {
        Backend {
            name,
            label,
            bin,
            imp: Series::default(),
            imp_rss: Series::default(),
            snd: Series::default(),
            snd_rss: Series::default(),
            exp: Series::default(),
            exp_rss: Series::default(),
            sent: 0,
            rows: 0,
        }
    }
}

#[derive(Default)]
struct Series {
    values: Vec<f64>,
    loads: Vec<f64>,
}

impl Series {
    fn start(&mut self) {
        self.loads.push(load());
    }

    fn push(&mut self, v: f64) {
        self.values.push(v);
    }

    /// `median (min–max)` with `decimals`.
    fn fmt(&self, decimals: usize) -> String {
        let (m, lo, hi) = support::median_min_max(self.values.clone());
        if self.values.len() == 1 {
            thousands(m, decimals)
        } else {
            format!(
                "{} ({}–{})",
                thousands(m, decimals),
                thousands(lo, decimals),
                thousands(hi, decimals)
            )
        }
    }

    fn median(&self) -> f64 {
        support::median_min_max(self.values.clone()).0
    }

    fn load(&self) -> String {
        let (_, lo, hi) = support::median_min_max(self.loads.clone());
        if (hi - lo).abs() < 0.005 {
            format!("{lo:.2}")
        } else {
            format!("{lo:.2}–{hi:.2}")
        }
    }
}

/// `1234567.8` → `1,234,568` (or with decimals, `200.10`).
fn thousands(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{out}")
    } else {
        format!("{sign}{out}.{frac}")
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let total: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let concurrency: u32 = env_or("CRIER_BENCH_CONCURRENCY", 64);
    let rate_secs: u64 = env_or("CRIER_BENCH_RATE_SECS", 30);
    let peer_n: usize = env_or("CRIER_BENCH_PEER_MESSAGES", 10_000);
    let cli_sample: usize = env_or("CRIER_BENCH_APPRISE_CLI_SAMPLE", 100);
    let python = std::env::var("CRIER_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());

    let have_wrk = works("wrk", &["--version"]) || Command::new("wrk").output().is_ok();
    if !have_wrk {
        eprintln!(
            "wrk is not installed: its row is left out. Install it with `apt-get install wrk` (Debian, Ubuntu)."
        );
    }
    let apprise_version = Command::new(&python)
        .args(["-c", "import apprise; print(apprise.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if apprise_version.is_none() {
        eprintln!(
            "Apprise is not importable by `{python}`: its rows are left out. Install it with `{python} -m pip install apprise` (or set CRIER_BENCH_PYTHON to a Python that has it)."
        );
    }
    let have_apprise_cli = apprise_version.is_some() && works("apprise", &["--version"]);
    if apprise_version.is_some() && !have_apprise_cli {
        eprintln!("The `apprise` command is not on PATH: its CLI row is left out.");
    }

    let started_at = chrono::Local::now();
    let load_at_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bulksms = runtime.block_on(mocks::bulksms(TOKEN_ID, SECRET));
    bulksms.state.keep_accepted(false);
    let gateway = runtime.block_on(mocks::http_gateway(GATEWAY_KEY));

    let work = tempfile::tempdir().expect("temp dir");
    let csv = work.path().join("customers.csv");
    support::write_customers(&csv, total, 42).expect("customers");
    eprintln!("Generated {total} customers.");

    // 1. Import, send, export: each run in a fresh project, on each backend in turn.
    let measured = backends();
    let bins = binaries();
    let mut tables: Vec<Backend> = measured
        .iter()
        .flat_map(|&name| bins.iter().map(move |b| Backend::new(name, b.clone())))
        .collect();
    for i in 0..runs {
        for b in tables.iter_mut() {
            let name = format!("{}{}", b.name, b.label_suffix());
            let bin = b.bin.clone();
            let dir = work.path().join(format!("run{i}-{}-{}", b.name, b.label));
            let schema = write_project(&dir, b.name, &bulksms_yaml(&bulksms.url, concurrency), "");
            settle();
            b.imp.start();
            b.imp_rss.start();
            let (rate, m) = import(&bin, &dir, &csv, total);
            eprintln!(
                "{name} run {i}: import {rate:.0} rows/s ({:.1} s), peak RSS {:.0} MB, load {:.2}",
                m.secs,
                m.peak_mb,
                load()
            );
            b.imp.push(rate);
            b.imp_rss.push(m.peak_mb);

            // Each run's store sends with the same deduplication ids as the last one's; let
            // the mock forget them, as BulkSMS does after 12 hours.
            bulksms.state.forget_dedup();
            let before = bulksms.state.accepted_count();
            settle();
            b.snd.start();
            b.snd_rss.start();
            let (sent, m) = send(&bin, &dir);
            assert_eq!(bulksms.state.accepted_count() - before, sent as usize);
            let rate = sent as f64 / m.secs;
            eprintln!(
                "{name} run {i}: send {sent} in {:.1} s: {rate:.0} messages/s, peak RSS {:.0} MB, load {:.2}",
                m.secs,
                m.peak_mb,
                load()
            );
            b.sent = sent;
            b.snd.push(rate);
            b.snd_rss.push(m.peak_mb);

            settle();
            b.exp.start();
            b.exp_rss.start();
            let (rows, m) = export(&bin, &dir);
            // The ledger also records the recipients the job skipped (no valid phone, a
            // phone another recipient has): every one of them is a row.
            assert!(rows >= sent, "the export holds every message sent");
            let rate = rows as f64 / m.secs;
            eprintln!(
                "{name} run {i}: export {rows} rows in {:.1} s: {rate:.0} rows/s, peak RSS {:.0} MB, load {:.2}",
                m.secs,
                m.peak_mb,
                load()
            );
            b.rows = rows;
            b.exp.push(rate);
            b.exp_rss.push(m.peak_mb);
            std::fs::remove_dir_all(&dir).ok();
            if let Some(schema) = schema {
                drop_schema(&schema);
            }
        }
    }

    // 2. wrk on the same mock.
    let mut wrk_rates = Series::default();
    if have_wrk {
        let script = work.path().join("wrk.lua");
        for i in 0..runs {
            settle();
            wrk_rates.start();
            match wrk(&bulksms.url, concurrency, &script) {
                Some(r) => {
                    eprintln!("wrk run {i}: {r:.0} requests/s, load {:.2}", load());
                    wrk_rates.push(r);
                }
                None => {
                    eprintln!("wrk failed; its row is left out.");
                    wrk_rates = Series::default();
                    break;
                }
            }
        }
    }

    let store_tables = || {
        print_store_tables(
            &tables,
            &wrk_rates,
            (total, runs, concurrency),
            started_at,
            &load_at_start,
        )
    };
    if std::env::var("CRIER_BENCH_ONLY").as_deref() == Ok("store") {
        store_tables();
        return;
    }

    // 3. crier and Apprise, the same messages to the same gateway mock.
    let peer_csv = work.path().join("peer.csv");
    write_valid_customers(&peer_csv, peer_n, 11);
    let peer_seed = work.path().join("peer-seed");
    write_project(
        &peer_seed,
        measured[0],
        &gateway_yaml(&gateway.url, concurrency),
        "",
    );
    let bin = &bins[0].1;
    import(bin, &peer_seed, &peer_csv, peer_n as u64);
    let mut crier_peer = Series::default();
    let mut peer_messages: Vec<mocks::Accepted> = Vec::new();
    for i in 0..runs {
        let dir = work.path().join(format!("peer{i}"));
        copy_dir(&peer_seed, &dir);
        let before = gateway.state.accepted_count();
        crier_peer.start();
        let (sent, m) = send(bin, &dir);
        let accepted = gateway.state.accepted();
        assert_eq!(accepted.len() - before, sent as usize);
        let rate = sent as f64 / m.secs;
        eprintln!(
            "peer run {i}: crier sent {sent} through `http` in {:.2} s: {rate:.0} messages/s, load {:.2}",
            m.secs,
            load()
        );
        crier_peer.push(rate);
        if peer_messages.is_empty() {
            peer_messages = accepted[before..].to_vec();
        }
        std::fs::remove_dir_all(&dir).ok();
    }
    let peer_sent = peer_messages.len();
    let mut sort_key: Vec<(String, String)> = peer_messages
        .iter()
        .map(|a| (a.to.clone(), a.body.clone()))
        .collect();
    sort_key.sort();
    let messages_tsv = work.path().join("messages.tsv");
    std::fs::write(
        &messages_tsv,
        sort_key
            .iter()
            .map(|(to, body)| format!("{to}\t{body}\n"))
            .collect::<String>(),
    )
    .expect("messages.tsv");
    let gateway_host = gateway.url.trim_start_matches("http://");
    let apprise_url = format!("json://{gateway_host}/send?+X-Api-Key={GATEWAY_KEY}");
    let script = work.path().join("apprise_bench.py");
    std::fs::write(&script, APPRISE_SCRIPT).expect("apprise script");
    let mut apprise_modes: Vec<(&str, Series)> = Vec::new();
    if apprise_version.is_some() {
        for mode in ["async", "loop"] {
            let mut series = Series::default();
            for i in 0..runs {
                let before = gateway.state.accepted_count();
                series.start();
                let out = Command::new(&python)
                    .arg(&script)
                    .args([mode, &apprise_url])
                    .arg(&messages_tsv)
                    .output()
                    .expect("start python");
                assert!(
                    out.status.success(),
                    "apprise {mode}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8_lossy(&out.stdout);
                let fields: Vec<f64> = text
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                let (ok, secs) = (fields[0] as usize, fields[1]);
                let accepted = gateway.state.accepted();
                assert_eq!(ok, peer_sent, "Apprise {mode}: every message accepted");
                assert_eq!(accepted.len() - before, peer_sent);
                if i == 0 {
                    let mut got: Vec<(String, String)> = accepted[before..]
                        .iter()
                        .map(|a| (a.to.clone(), a.body.clone()))
                        .collect();
                    got.sort();
                    assert!(got == sort_key, "Apprise sent the same messages as crier");
                }
                let rate = ok as f64 / secs;
                eprintln!(
                    "Apprise {mode} run {i}: {ok} in {secs:.2} s: {rate:.0} messages/s, load {:.2}",
                    load()
                );
                series.push(rate);
            }
            apprise_modes.push((mode, series));
        }
    }
    let mut apprise_cli = Series::default();
    if have_apprise_cli {
        apprise_cli.start();
        for (to, body) in sort_key.iter().take(cli_sample) {
            let url = format!("{apprise_url}&:to={}", to.replace('+', "%2B"));
            let started = Instant::now();
            let ok = works("apprise", &["-b", body, &url]);
            assert!(ok, "apprise CLI failed");
            apprise_cli.push(1.0 / started.elapsed().as_secs_f64());
        }
        eprintln!(
            "Apprise CLI: {} messages, median {:.1} messages/s, load {:.2}",
            apprise_cli.values.len(),
            apprise_cli.median(),
            load()
        );
    }

    // 4. The rate limiter: 200/s for about `rate_secs` seconds.
    let n = 200 * rate_secs;
    let dir = work.path().join("rate");
    let small = work.path().join("small.csv");
    support::write_customers(&small, n * 105 / 100, 7).expect("customers");
    write_project(
        &dir,
        measured[0],
        &bulksms_yaml(&bulksms.url, 8),
        "rate: 200/s\n",
    );
    import(bin, &dir, &small, n * 105 / 100);
    let mut achieved = Series::default();
    let mut rate_sent = 0;
    for i in 0..runs {
        bulksms.state.clear_arrivals();
        achieved.start();
        let (sent, _) = send(bin, &dir);
        let mut arrivals = bulksms.state.arrivals();
        arrivals.sort();
        let span = arrivals[arrivals.len() - 1] - arrivals[0];
        // n arrivals span n-1 intervals.
        let r = (arrivals.len() - 1) as f64 / span.as_secs_f64();
        eprintln!(
            "rate run {i}: {sent} sent, {r:.2}/s over {:.1} s, load {:.2}",
            span.as_secs_f64(),
            load()
        );
        rate_sent = sent;
        achieved.push(r);
    }

    // The tables.
    store_tables();
    println!();
    println!("On the {} store:", measured[0]);
    println!();
    println!("| figure | median (min–max) | also | load avg (1 min) |");
    println!("|---|---|---|---|");
    println!(
        "| `crier send`, {} SMS via `http` to a generic gateway mock (whole command) | {} messages/s | | {} |",
        thousands(peer_sent as f64, 0),
        crier_peer.fmt(0),
        crier_peer.load()
    );
    let version = apprise_version.as_deref().unwrap_or("?");
    for (mode, series) in &apprise_modes {
        let how = match *mode {
            "async" => "Python API, `async_notify` all at once (its thread pool)",
            _ => "Python API, `notify()` in a loop",
        };
        println!(
            "| Apprise {version} `json://`, same {} messages, same mock: {how} | {} messages/s | crier {:.1}× faster | {} |",
            thousands(peer_sent as f64, 0),
            series.fmt(0),
            crier_peer.median() / series.median(),
            series.load()
        );
    }
    if !apprise_cli.values.is_empty() {
        println!(
            "| Apprise {version} CLI, one `apprise` process per message ({} of them) | {} messages/s | crier {:.0}× faster | {} |",
            apprise_cli.values.len(),
            apprise_cli.fmt(1),
            crier_peer.median() / apprise_cli.median(),
            apprise_cli.load()
        );
    }
    let r = achieved.median();
    println!(
        "| rate limit `200/s`, {} messages (≈ {rate_secs} s) | {}/s achieved | error {:+.2}% (target within 2%) | {} |",
        thousands(rate_sent as f64, 0),
        achieved.fmt(2),
        100.0 * (r / 200.0 - 1.0),
        achieved.load()
    );
}

/// The heading line and one table per backend (and binary).
fn print_store_tables(
    tables: &[Backend],
    wrk_rates: &Series,
    (total, runs, concurrency): (u64, usize, u32),
    started_at: chrono::DateTime<chrono::Local>,
    load_at_start: &str,
) {
    let load_at_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "crier end-to-end suite, {} customers, {runs} run(s), concurrency {concurrency}; {} on {} cores; load average at start {}, at end {}",
        thousands(total as f64, 0),
        started_at.format("%Y-%m-%d %H:%M"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_at_start
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_at_end
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    for b in tables {
        println!();
        println!(
            "{} store{} (runs interleaved with the others'):",
            b.name,
            b.label_suffix()
        );
        println!();
        println!("| figure | median (min–max) | also | load avg (1 min) |");
        println!("|---|---|---|---|");
        let row = |figure: String, unit: &str, rate: &Series, rss: &Series| {
            println!(
                "| {figure} | {} {unit} | peak RSS {} MB | {} |",
                rate.fmt(0),
                rss.fmt(0),
                rate.load()
            );
        };
        let n = |v: u64| thousands(v as f64, 0);
        row(
            format!("`crier import`, {} customers", n(total)),
            "rows/s",
            &b.imp,
            &b.imp_rss,
        );
        row(
            format!(
                "`crier send`, {} SMS via `bulksms` to its mock, history on (whole command)",
                n(b.sent)
            ),
            "messages/s",
            &b.snd,
            &b.snd_rss,
        );
        row(
            format!(
                "history CSV export (`crier logs --format csv`), {} rows",
                n(b.rows)
            ),
            "rows/s",
            &b.exp,
            &b.exp_rss,
        );
        if !wrk_rates.values.is_empty() {
            println!(
                "| `wrk`, same mock, {concurrency} connections, 15 s | {} requests/s | crier at {:.0}% of it | {} |",
                wrk_rates.fmt(0),
                100.0 * b.snd.median() / wrk_rates.median(),
                wrk_rates.load()
            );
        }
    }
}
