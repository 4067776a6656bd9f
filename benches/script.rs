//! Script benchmark: what a typical `route` + `vars` pair costs per message.
//!
//! `cargo bench --bench script -- [MESSAGES]` (default 1,000,000).
//!
//! Runs the shipped `scripts/overdue.rhai` `vars` and `scripts/route.rhai` `route` for
//! every message, as the planner does: the customer map is built once per recipient,
//! `vars` called, the message map built, `route` called. Recipients cycle through a
//! thousand distinct customers (South African and foreign numbers). Reports the time per
//! message of the whole step and of each part, single-threaded (the planner is one
//! thread). Target: at most 5 µs per message.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crier::recipients::{Recipient, RecipientKind, Service, Status, Tariff};
use crier::script::{self, Limits, MessageView, Route, Scripts};

fn recipient(i: u64) -> Recipient {
    let phone = if i.is_multiple_of(5) {
        format!("+4479111{:05}", i % 100_000)
    } else {
        format!("+2782{:07}", i % 10_000_000)
    };
    Recipient {
        kind: RecipientKind::Customer,
        id: i,
        login: Some(format!("{i:06}")),
        status: Status::Active,
        name: format!("Customer {i}"),
        email: Some(format!("c{i}@example.co.za")),
        billing_email: None,
        phone: Some(phone),
        phone_raw: None,
        category: None,
        location: Some("Cape Town".into()),
        billing_type: None,
        partner: Some("Main".into()),
        tariffs: vec![Tariff {
            service: Some(Service::Internet),
            plan: "Fiber 100".into(),
        }],
        timezone: None,
        attrs: BTreeMap::from([
            ("overdue_days".to_string(), (i % 60).to_string()),
            (
                "balance".to_string(),
                format!("{}.50", (i % 3000) as i64 - 1500),
            ),
        ]),
    }
}

fn load(name: &str) -> Scripts {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name);
    let source = std::fs::read_to_string(&path).expect("shipped script");
    Scripts::from_source(&format!("scripts/{name}"), &source, Limits::default()).expect("compiles")
}

/// CPU time this process has used (user + system), from `/proc/self/stat`: the figure
/// that holds on a machine shared with other work, where wall time does not.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn per_message(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let (vars, route) = if std::env::var_os("CRIER_BENCH_TRIVIAL").is_some() {
        // For comparison only: the cost of a call itself.
        let s = |src: &str| {
            Scripts::from_source("scripts/t.rhai", src, Limits::default()).expect("compiles")
        };
        (
            s("fn vars(c) { #{} }"),
            s(r#"fn route(m, c) { "bulksms" }"#),
        )
    } else if let Ok(src) = std::env::var("CRIER_BENCH_VARS") {
        // For comparison only: another `vars` body.
        let vars =
            Scripts::from_source("scripts/v.rhai", &src, Limits::default()).expect("compiles");
        (vars, load("route.rhai"))
    } else {
        (load("overdue.rhai"), load("route.rhai"))
    };
    let people: Vec<Recipient> = (0..1000).map(recipient).collect();
    let body =
        "Hi Customer, your Atlantic Fibre account is 21 days overdue with R 1 250.50 to pay.";

    let (mut t_customer, mut t_vars, mut t_message, mut t_route) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut routed = [0u64; 3];
    let cpu_started = cpu_time();
    let started = Instant::now();
    for i in 0..n {
        let r = &people[(i % 1000) as usize];
        let t0 = Instant::now();
        let customer = script::customer(r);
        let t1 = Instant::now();
        let v = vars.vars(&customer).expect("vars");
        let t2 = Instant::now();
        let message = script::message(&MessageView {
            channel: "sms",
            provider: "outbox",
            address: r.phone.as_deref().unwrap_or_default(),
            subject: None,
            body,
            encoding: Some("gsm7"),
            parts: 1,
        });
        let t3 = Instant::now();
        let out = route.route(message, &customer).expect("route");
        let t4 = Instant::now();
        t_customer += t1 - t0;
        t_vars += t2 - t1;
        t_message += t3 - t2;
        t_route += t4 - t3;
        std::hint::black_box(&v);
        match out {
            Route::To(p) if p[0] == "bulksms" => routed[0] += 1,
            Route::To(_) => routed[1] += 1,
            Route::Out => routed[2] += 1,
        }
    }
    let total = started.elapsed();
    let cpu = cpu_started.zip(cpu_time()).map(|(a, b)| b - a);
    println!("script bench: {n} messages, route + vars per message (one thread)");
    if let Some(cpu) = cpu {
        println!(
            "  CPU time       {:>7.3} µs/message  (user + system; the parts below are wall time)",
            per_message(cpu, n)
        );
    }
    println!(
        "  total          {:>7.3} µs/message  ({:.2} s, {:.0} messages/s)",
        per_message(total, n),
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    println!("  customer map   {:>7.3} µs", per_message(t_customer, n));
    println!("  vars() call    {:>7.3} µs", per_message(t_vars, n));
    println!("  message map    {:>7.3} µs", per_message(t_message, n));
    println!("  route() call   {:>7.3} µs", per_message(t_route, n));
    println!(
        "  routed: {} via bulksms first, {} via twilio first, {} out",
        routed[0], routed[1], routed[2]
    );
    let measured = cpu.map_or(per_message(total, n), |c| per_message(c, n));
    println!(
        "  target ≤ 5 µs/message (CPU time): {}",
        if measured <= 5.0 { "met" } else { "NOT met" }
    );
}
