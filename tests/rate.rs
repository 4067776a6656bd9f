//! Shared rate limits on a real PostgreSQL (tests/common/pg.rs): several workers, each
//! with its own connection pool and client runtime (as separate processes have), reserve
//! slots from one `rate_limits` row, and together hold its rate.
//!
//! Every check is computed from recorded grant times (the busiest 5-second window slid
//! over them, totals, gaps), never from how fast this machine happens to be. The timed
//! tests run one at a time ([`TIMED`]) so they do not compete for the two cores.

mod common;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg;
use crier::cluster::Cluster;
use crier::cluster::rate::{Limit, SharedLimiter};
use crier::store::postgres::{Pg, PgSettings};
use tokio::time::Instant;

static TIMED: Mutex<()> = Mutex::new(());

/// The key every limiter of a test shares.
const KEY: &str = "provider:mock";
/// The rate under test, per second.
const RATE: usize = 100;
/// The window the limit holds over.
const WINDOW: Duration = Duration::from_secs(5);
/// Concurrent callers per limiter, as the engine's in-flight messages are.
const CALLERS: usize = 4;

/// Runs `f` on its own multi-thread runtime, alone among the timed tests.
fn timed<F: Future>(f: F) -> F::Output {
    let _alone = TIMED.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// A fresh database with the history's tables (migration 002 has `rate_limits`).
fn database() -> String {
    let url = pg::server().database();
    crier::history::store::postgres::PgHistory::open(&PgSettings::new(url.clone()))
        .expect("migrate the history");
    url
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_string()
}

/// A worker's view of the cluster: its own pool and client runtime.
fn worker(url: &str) -> Cluster {
    Cluster::on(Pg::connect(&PgSettings::new(url)).expect("connect"))
}

fn limiter(url: &str) -> Arc<SharedLimiter> {
    let rate = format!("{RATE}/s").parse().unwrap();
    Arc::new(SharedLimiter::new(worker(url), KEY, rate, None))
}

/// [`CALLERS`] tasks call `until_ready` as fast as they can from `t0 + from` until
/// `t0 + until`, then the limiter is dropped with whatever slots it still holds. Returns
/// the offset from `t0` of every grant.
async fn drive(
    limiter: Arc<SharedLimiter>,
    t0: Instant,
    from: Duration,
    until: Duration,
) -> Vec<Duration> {
    tokio::time::sleep_until(t0 + from).await;
    let grants = Arc::new(Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (limiter, grants) = (limiter.clone(), grants.clone());
        callers.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = limiter.until_ready() => {}
                    _ = tokio::time::sleep_until(t0 + until) => break,
                }
                let at = t0.elapsed();
                if at >= until {
                    break;
                }
                grants.lock().unwrap().push(at);
            }
        }));
    }
    for c in callers {
        c.await.expect("a caller");
    }
    drop(limiter);
    let mut grants = std::mem::take(&mut *grants.lock().unwrap());
    grants.sort();
    grants
}

/// The most grants in any `window` (slid over the grants themselves).
fn busiest(grants: &[Duration], window: Duration) -> usize {
    let mut sorted = grants.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut end = 0;
    for (start, &t) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < t + window {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

fn between(grants: &[Duration], from: f64, to: f64) -> usize {
    grants
        .iter()
        .filter(|g| (from..to).contains(&g.as_secs_f64()))
        .count()
}

/// `workers` limiters at 100/s for 6 s: the busiest 5 s holds 500 within 2% (over and
/// under), and the total is 600 within 2%.
fn workers_share_the_rate(workers: usize) {
    let url = database();
    let limiters: Vec<_> = (0..workers).map(|_| limiter(&url)).collect();
    let run = Duration::from_secs(6);
    let (all, per_worker) = timed(async move {
        let t0 = Instant::now() + Duration::from_millis(50);
        let tasks: Vec<_> = limiters
            .into_iter()
            .map(|l| tokio::spawn(drive(l, t0, Duration::ZERO, run)))
            .collect();
        let mut all = Vec::new();
        let mut per_worker = Vec::new();
        for t in tasks {
            let grants = t.await.unwrap();
            per_worker.push(grants.len());
            all.extend(grants);
        }
        (all, per_worker)
    });
    let window = busiest(&all, WINDOW);
    let expected = RATE as f64 * run.as_secs_f64();
    println!(
        "{workers} worker(s) at {RATE}/s: busiest 5 s window {window}, total {} (per worker {per_worker:?})",
        all.len()
    );
    assert!(window <= 510, "busiest window {window} > 510");
    assert!(
        window >= 490,
        "busiest window {window} < 490: the rate is undershot"
    );
    let total = all.len() as f64;
    assert!(
        (total - expected).abs() <= expected * 0.02,
        "total {total} not within 2% of {expected}"
    );
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "every worker sends: {per_worker:?}"
    );
}

#[test]
fn one_worker_holds_the_rate() {
    workers_share_the_rate(1);
}

#[test]
fn two_workers_share_the_rate() {
    workers_share_the_rate(2);
}

#[test]
fn three_workers_share_the_rate() {
    workers_share_the_rate(3);
}

#[test]
fn workers_joining_and_dying_never_overshoot() {
    let url = database();
    let (stays, joins, dies) = (limiter(&url), limiter(&url), limiter(&url));
    let s = Duration::from_secs;
    let (stays, joins, dies) = timed(async move {
        let t0 = Instant::now() + Duration::from_millis(50);
        let stays = tokio::spawn(drive(stays, t0, s(0), s(9)));
        let joins = tokio::spawn(drive(joins, t0, s(3), s(9)));
        let dies = tokio::spawn(drive(dies, t0, s(0), s(5)));
        (
            stays.await.unwrap(),
            joins.await.unwrap(),
            dies.await.unwrap(),
        )
    });
    let all: Vec<Duration> = [&stays, &joins, &dies]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    let window = busiest(&all, WINDOW);
    println!(
        "join at 3 s, death at 5 s: busiest 5 s window {window}, total {} (stays {}, joins {}, dies {})",
        all.len(),
        stays.len(),
        joins.len(),
        dies.len()
    );
    assert!(window <= 510, "busiest window {window} > 510");
    assert!(
        joins.first().is_some_and(|g| g.as_secs_f64() < 3.5),
        "the joiner sends at once"
    );
    assert!(dies.last().is_some_and(|g| g.as_secs_f64() < 5.0));
    // The dead worker's held slots (at most one batch, 200 ms) are lost, nothing more.
    let total = all.len() as f64;
    assert!(total <= 900.0 * 1.02, "total {total} above 9 s at 100/s");
    assert!(
        total >= 900.0 - 20.0 - 900.0 * 0.02,
        "total {total}: more than the dead worker's batch lost"
    );
}

#[test]
fn a_back_off_holds_every_worker() {
    let url = database();
    let (asked, other1, other2) = (limiter(&url), limiter(&url), limiter(&url));
    let s = Duration::from_secs;
    let (asked, others, backed_off_at) = timed(async move {
        let t0 = Instant::now() + Duration::from_millis(50);
        let backer = asked.clone();
        let asked = tokio::spawn(drive(asked, t0, s(0), s(6)));
        let other1 = tokio::spawn(drive(other1, t0, s(0), s(6)));
        let other2 = tokio::spawn(drive(other2, t0, s(0), s(6)));
        tokio::time::sleep_until(t0 + s(2)).await;
        backer.back_off(s(2)).await;
        let backed_off_at = t0.elapsed().as_secs_f64();
        drop(backer);
        let mut others = other1.await.unwrap();
        others.extend(other2.await.unwrap());
        (asked.await.unwrap(), others, backed_off_at)
    });
    let all: Vec<Duration> = asked.iter().chain(&others).copied().collect();
    let b = backed_off_at;
    let first_after = all
        .iter()
        .map(|g| g.as_secs_f64())
        .filter(|&g| g > b + 1.0)
        .fold(f64::MAX, f64::min);
    println!(
        "back_off(2 s) at {b:.3} s: the others spent {} held slots, then the next grant at {first_after:.3} s",
        between(&others, b, b + 1.0)
    );
    // The worker asked to back off grants nothing more until the row's new time.
    assert_eq!(between(&asked, b, b + 1.95), 0, "the asking worker waits");
    // The others spend what they already hold (their last batches, ~3 x 200 ms), then
    // nothing until the row's new time: without the shared push they would go on at
    // 100/s.
    assert!(
        between(&others, b, b + 0.8) <= 3 * 20 + 2 * CALLERS,
        "the others hold at most their batches"
    );
    assert_eq!(
        between(&others, b + 0.8, b + 1.95),
        0,
        "every worker backs off"
    );
    assert!(first_after >= b + 1.95, "nothing before the 2 s are up");
    assert!(
        between(&all, b + 2.2, b + 3.2) >= 90,
        "and all resume at the rate"
    );
    assert!(busiest(&all, WINDOW) <= 510);
}

#[test]
fn a_lost_database_paces_each_worker_at_its_share() {
    let url = database();
    let db = db_name(&url);
    pg::server().psql(
        &db,
        "INSERT INTO crier.workers (id, host, pid, role, version, started_at, heartbeat_at, state) VALUES \
         ('w1', 'h1', 1, 'run', '0', 0, 0, 'alive'), ('w2', 'h2', 2, 'run', '0', 0, 0, 'alive'), \
         ('w3', 'h3', 3, 'run', '0', 0, 0, 'dead')",
    );
    let one = limiter(&url);
    let s = Duration::from_secs;
    let grants = timed(async move {
        let t0 = Instant::now() + Duration::from_millis(50);
        let driven = tokio::spawn(drive(one, t0, s(0), s(7)));
        let psql = |sql: &'static str| {
            let db = db.clone();
            tokio::task::spawn_blocking(move || pg::server().psql(&db, sql))
        };
        tokio::time::sleep_until(t0 + s(2)).await;
        psql("ALTER TABLE crier.rate_limits RENAME TO rate_limits_away")
            .await
            .unwrap();
        tokio::time::sleep_until(t0 + s(5)).await;
        psql("ALTER TABLE crier.rate_limits_away RENAME TO rate_limits")
            .await
            .unwrap();
        driven.await.unwrap()
    });
    let (before, without, after) = (
        between(&grants, 0.5, 1.5),
        between(&grants, 2.5, 4.5),
        between(&grants, 6.2, 7.0),
    );
    println!(
        "database lost 2-5 s, 2 live workers: {before}/s before, {}/s without, {}/s after",
        without / 2,
        after as f64 / 0.8
    );
    assert!((98..=102).contains(&before), "{before} in a second before");
    // Half the rate, as two workers are alive (the dead one does not count).
    assert!(
        (90..=101).contains(&without),
        "{without} in 2 s without the database"
    );
    assert!(
        after >= 78,
        "{after} in 0.8 s once it is back: the shared rate resumes"
    );
    assert!(busiest(&grants, WINDOW) <= 510);
}

#[test]
fn check_takes_a_due_held_slot_and_never_waits() {
    let url = database();
    let shared = Limit::Shared(Box::new(Arc::into_inner(limiter(&url)).unwrap()));
    timed(async move {
        assert!(!shared.check(), "nothing held before the first reservation");
        shared.until_ready().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The batch's next slots (10 ms apart) are due by now.
        assert!(shared.check());
        assert!(shared.check());
    });
}

#[test]
fn concurrent_reservations_never_overlap_and_round_trips_are_counted() {
    let url = database();
    let clusters: Vec<Cluster> = (0..4).map(|_| worker(&url)).collect();
    let (alone, together, slots) = timed(async move {
        let interval_us = 1_000;
        let span = Duration::from_secs(2);
        // One worker, back to back.
        let c = clusters[0].clone();
        let start = Instant::now();
        let mut alone = 0u64;
        while start.elapsed() < span {
            c.reserve("bench:alone", interval_us, 20, 0).await.unwrap();
            alone += 1;
        }
        // Four workers on one row at once.
        let start = Instant::now();
        let tasks: Vec<_> = clusters
            .into_iter()
            .map(|c| {
                tokio::spawn(async move {
                    let mut slots = Vec::new();
                    let mut n = 0u64;
                    while start.elapsed() < span {
                        let r = c
                            .reserve("bench:together", interval_us, 20, 0)
                            .await
                            .unwrap();
                        slots.extend(r.slots_us());
                        n += 1;
                    }
                    (n, slots)
                })
            })
            .collect();
        let mut together = 0;
        let mut slots = Vec::new();
        for t in tasks {
            let (n, s) = t.await.unwrap();
            together += n;
            slots.extend(s);
        }
        (alone as f64 / 2.0, together as f64 / 2.0, slots)
    });
    println!(
        "reserve: {alone:.0} round trips/s from one worker, {together:.0}/s from 4 workers on one row"
    );
    let mut sorted = slots.clone();
    sorted.sort();
    assert_eq!(sorted.len(), slots.len());
    assert!(
        sorted.windows(2).all(|w| w[1] - w[0] >= 1_000),
        "two workers were given the same slot"
    );
    assert!(alone > 0.0 && together > 0.0);
}

#[test]
fn push_back_creates_or_only_moves_the_row_forward() {
    let url = database();
    let c = worker(&url);
    timed(async move {
        c.push_back("provider:fresh", Duration::from_secs(3))
            .await
            .unwrap();
        let r = c.reserve("provider:fresh", 1_000, 1, 0).await.unwrap();
        let ahead = r.first_us - r.now_us;
        assert!(
            (2_900_000..=3_000_000).contains(&ahead),
            "first slot {ahead} µs ahead"
        );
        // A shorter push does not pull it back.
        c.push_back("provider:fresh", Duration::from_secs(1))
            .await
            .unwrap();
        let r = c.reserve("provider:fresh", 1_000, 1, 0).await.unwrap();
        assert!(r.first_us - r.now_us >= 2_800_000);
    });
}
