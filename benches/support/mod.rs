//! Shared by the benchmarks: synthetic customers (realistic shapes, deterministic,
//! streamed to disk), memory readings and summary statistics. Each bench uses a part.
#![allow(dead_code)]

use std::io::{BufWriter, Write};
use std::path::Path;

/// A small deterministic generator (xorshift), so runs are comparable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Thabo", "Lerato", "Sipho", "Zoë", "Johan", "Naledi", "José", "Priya", "Emma", "Bongani",
];
const LAST: &[&str] = &[
    "Mokoena",
    "Naidoo",
    "van der Merwe",
    "Botha",
    "Dlamini",
    "Müller",
    "Pillay",
    "Smith",
];
const LOCATIONS: &[&str] = &[
    "Cape Town",
    "Durban",
    "Johannesburg",
    "Pretoria",
    "Stellenbosch",
];
const PARTNERS: &[&str] = &["Main", "Atlantic Fibre", "Coastal Wireless"];
const STATUSES: &[&str] = &[
    "active", "active", "active", "active", "new", "inactive", "blocked",
];
const PLANS: &[&str] = &[
    "Internet: Fiber 50",
    "Internet: Fiber 100",
    "Internet: LTE 20 | Voice: Basic",
];
const PREFIXES: &[&str] = &["082", "083", "072", "076", "060", "071", "081"];

/// Writes `rows` customers as a Splynx-style CSV to `path`.
pub fn write_customers(path: &Path, rows: u64, seed: u64) -> std::io::Result<()> {
    let mut rng = Rng::new(seed);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(
        out,
        "ID,Portal login,Status,Full name,Email,Phone number,Category,Location,Billing type,Partner,Tariff plans,Overdue days,Balance"
    )?;
    for i in 1..=rows {
        let first = rng.pick(FIRST);
        let last = rng.pick(LAST);
        // About 3% of phones are invalid, as in real exports.
        let phone = if rng.next_u64().is_multiple_of(33) {
            "12345".to_string()
        } else {
            format!(
                "{} {:03} {:04}",
                rng.pick(PREFIXES),
                rng.next_u64() % 900 + 100,
                rng.next_u64() % 10_000
            )
        };
        writeln!(
            out,
            "{i},{i:06},{},{first} {last},c{i}@example.co.za,{phone},{},{},Recurring,{},{},{},{}.{:02}",
            rng.pick(STATUSES),
            if rng.next_u64().is_multiple_of(5) {
                "Business"
            } else {
                "Individual"
            },
            rng.pick(LOCATIONS),
            rng.pick(PARTNERS),
            rng.pick(PLANS),
            rng.next_u64() % 60,
            rng.next_u64() % 3000,
            rng.next_u64() % 100,
        )?;
    }
    out.flush()
}

/// Peak resident memory of this process so far (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    proc_status_mb("VmHWM:")
}

/// Resident memory of this process now (VmRSS), in MB.
pub fn rss_mb() -> f64 {
    proc_status_mb("VmRSS:")
}

fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Median, min and max.
pub fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs this bench binary again with `args` (its child mode) and returns the numbers the
/// child printed on stdout, so each measured run has a process, and a peak RSS, of its own.
pub fn run_child(args: &[&str]) -> Vec<f64> {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(args)
        .output()
        .expect("start the child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect()
}

/// A history the size of a production one, for the API and console benchmarks.
pub mod history {
    use std::time::Instant;

    use chrono::Utc;
    use crier::history::ledger::{Ledger, NewMessage, NewRun};
    use crier::history::{MessageState, MessageType, RunId, Trigger};
    use crier::job::Channel;
    use crier::recipients::RecipientKind;

    const DAY: i64 = 86_400_000;

    pub fn message(i: u64, state: MessageState) -> NewMessage {
        NewMessage {
            recipient_kind: RecipientKind::Customer,
            recipient_id: i,
            address: format!("+2782{:07}", i % 10_000_000),
            channel: Channel::Sms,
            provider: "bulksms".into(),
            kind: MessageType::Message,
            subject: None,
            body: "Hi Thabo, your Atlantic Fibre account 001234 has an overdue balance of R450.00. Pay via the portal to avoid suspension.".into(),
            encoding: Some("gsm7".into()),
            parts: 1,
            state,
            reason: None,
            error: None,
            snapshot: crier::history::RecipientSnapshot {
                location: Some(["Cape Town", "Durban", "Pretoria"][i as usize % 3].into()),
                status: Some("active".into()),
                ..Default::default()
            },
            html: None,
            route: Vec::new(),
        }
    }

    /// `total` messages in runs of 1,000, oldest first over 60 days; returns the newest run.
    pub fn populate(ledger: &Ledger, total: u64) -> RunId {
        let now = Utc::now().timestamp_millis();
        let runs = total.div_ceil(1000);
        let started = Instant::now();
        let mut last = RunId(0);
        for r in 0..runs {
            let at = now - 60 * DAY + (r as i64 * 60 * DAY) / runs as i64;
            let run = ledger
                .create_run_with_id(
                    RunId::new(),
                    NewRun {
                        job: format!("job-{}", r % 10),
                        trigger: Trigger::Manual,
                        channels: vec![Channel::Sms],
                        provider: "bulksms".into(),
                        body: "Hi {{ customer.name }}".into(),
                        subject: None,
                    },
                    at,
                )
                .expect("run");
            let msgs = (0..1000)
                .map(|i| {
                    let state = match (r * 1000 + i) % 50 {
                        0 => MessageState::Failed,
                        1..=4 => MessageState::Skipped,
                        5..=30 => MessageState::Delivered,
                        _ => MessageState::Sent,
                    };
                    message(r * 1000 + i, state)
                })
                .collect();
            ledger.plan_at(run.id, msgs, at).expect("plan");
            ledger.finish_planning(run.id).expect("finish");
            last = run.id;
            if r % 500 == 499 {
                println!(
                    "  populated {} messages ({:.0}/s), RSS {:.0} MB",
                    (r + 1) * 1000,
                    ((r + 1) * 1000) as f64 / started.elapsed().as_secs_f64(),
                    super::rss_mb()
                );
            }
        }
        ledger.flush().expect("flush");
        println!(
            "populated {total} messages in {:.0}s",
            started.elapsed().as_secs_f64()
        );
        last
    }
}
