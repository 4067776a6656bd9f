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
