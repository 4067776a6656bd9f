//! Rate limits shared by every worker: a provider's `limits.rate` is the account's limit
//! and a job's `rate:` is the job's, so they hold for the sum of all workers.
//!
//! Each limit is one row of the unlogged table `rate_limits (key, tat_us)`: the
//! theoretical arrival time of the next message (GCRA), in microseconds of the
//! database's clock. A worker reserves a batch of slots (~200 ms worth) in one statement
//! ([`Cluster::reserve`]) and paces them locally ([`SharedLimiter`]), so the database sees
//! a few round trips per second per worker, not one per message. The row only moves
//! forward: slots reserved by a worker that dies unused are lost, so the limit
//! undershoots then, and never overshoots. A provider's 429 / `Retry-After` pushes the
//! row forward ([`Cluster::push_back`]) so every worker backs off, each once the slots it
//! already holds (at most its last batch) are spent.
//!
//! Slots are instants of the database's clock; a worker turns them into its own
//! [`Instant`]s with the database's `now` read in the same statement: a slot `d` after
//! that `now` is `d` after the answer arrived. Hosts' clocks need not agree, and the
//! answer's latency only makes a worker a little late, never early.
//!
//! If the database fails, a worker does not fall back to the full rate (every worker
//! would, together overshooting it as many times as there are workers): it warns once
//! and paces locally at the rate divided by the live workers it last saw, retrying the
//! database every second. [`Limit`] is what the engine holds: governor's in-process
//! limiter when the store is embedded (one process sends alone), this one on PostgreSQL.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::Cluster;
use crate::store::StoreError;
use crate::throttle::Rate;

/// Reserves `$3` slots `$2` µs apart from the row `$1` (created at the first use), none
/// earlier than `$4` µs before now; answers the new `tat_us`, the database's now and how
/// many workers are alive (the share to pace at if the database fails later).
const RESERVE: &str = "\
WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint AS now_us)
INSERT INTO rate_limits AS r (key, tat_us)
SELECT $1::text, clock.now_us + $2::bigint * $3::bigint FROM clock
ON CONFLICT (key) DO UPDATE
    SET tat_us = greatest(r.tat_us, (SELECT now_us FROM clock) - $4::bigint) + $2::bigint * $3::bigint
RETURNING r.tat_us,
    (SELECT now_us FROM clock),
    (SELECT count(*) FROM workers WHERE state = 'alive')";

/// Moves the row `$1` to at least `$2` µs from now (a provider asked every sender to wait).
const PUSH_BACK: &str = "\
WITH clock AS (SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint AS now_us)
INSERT INTO rate_limits AS r (key, tat_us)
SELECT $1::text, clock.now_us + $2::bigint FROM clock
ON CONFLICT (key) DO UPDATE SET tat_us = greatest(r.tat_us, excluded.tat_us)";

/// How much of the rate a worker reserves per round trip.
pub const BATCH_SPAN: Duration = Duration::from_millis(200);
/// The most slots reserved per round trip, whatever the rate.
pub const MAX_BATCH: u32 = 256;
/// A reservation slower than this counts as a database failure (its slots, if it
/// commits after all, are lost: an undershoot).
const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);
/// While the database fails, how often a worker tries it again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The key of a provider's shared limit.
pub fn provider_key(name: &str) -> String {
    format!("provider:{name}")
}

/// The key of a job's shared limit.
pub fn job_key(name: &str) -> String {
    format!("job:{name}")
}

/// Slots one [`Cluster::reserve`] granted: `n` instants `interval_us` apart from
/// `first_us`, in the database's clock, with the database's `now_us` of the same answer
/// and the local instant it arrived.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub first_us: i64,
    pub interval_us: i64,
    pub n: u32,
    /// The database's clock when it answered.
    pub now_us: i64,
    /// When the answer arrived here.
    pub arrived: Instant,
    /// Workers alive (`workers.state = 'alive'`) at that moment.
    pub live_workers: i64,
}

impl Reservation {
    /// The slots, in microseconds of the database's clock.
    pub fn slots_us(&self) -> impl Iterator<Item = i64> + '_ {
        (0..i64::from(self.n)).map(|i| self.first_us + i * self.interval_us)
    }

    /// The slots as local instants: `arrived + (slot - now_us)`; a slot already past is
    /// due at once.
    pub fn instants(&self) -> impl Iterator<Item = Instant> + '_ {
        self.slots_us().map(|slot| {
            let ahead = slot - self.now_us;
            if ahead >= 0 {
                self.arrived + Duration::from_micros(ahead as u64)
            } else {
                self.arrived
                    .checked_sub(Duration::from_micros(ahead.unsigned_abs()))
                    .unwrap_or(self.arrived)
            }
        })
    }
}

impl Cluster {
    /// Reserves `n` (at least 1) slots `interval_us` apart from the shared limit `key`,
    /// the first no earlier than `burst_us` before now: one statement, one round trip.
    pub async fn reserve(
        &self,
        key: &str,
        interval_us: i64,
        n: u32,
        burst_us: i64,
    ) -> Result<Reservation, StoreError> {
        let n = n.max(1);
        let interval_us = interval_us.max(1);
        let burst_us = burst_us.max(0);
        let key = key.to_string();
        let (tat_us, now_us, live_workers) = self
            .pg()
            .call_async("reserve rate-limit slots", move |client| async move {
                let row = client
                    .query_one(RESERVE, &[&key, &interval_us, &i64::from(n), &burst_us])
                    .await?;
                Ok((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get(2)))
            })
            .await?;
        Ok(Reservation {
            first_us: tat_us - i64::from(n) * interval_us,
            interval_us,
            n,
            now_us,
            arrived: Instant::now(),
            live_workers,
        })
    }

    /// Moves the shared limit `key` to at least `wait` from now, for every worker.
    pub async fn push_back(&self, key: &str, wait: Duration) -> Result<(), StoreError> {
        let key = key.to_string();
        let wait_us = i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 2);
        self.pg()
            .call_async("push a rate limit back", move |client| async move {
                client.execute(PUSH_BACK, &[&key, &wait_us]).await?;
                Ok(())
            })
            .await
    }
}

/// One worker's handle on a shared limit: reserves batches of slots and hands them out
/// one per [`SharedLimiter::until_ready`]. Send + Sync; one reservation at a time.
pub struct SharedLimiter {
    cluster: Cluster,
    key: String,
    interval_us: i64,
    burst_us: i64,
    batch: u32,
    held: tokio::sync::Mutex<Held>,
    /// Bumped by [`SharedLimiter::back_off`]: a caller asleep on a slot taken before it
    /// takes another when it wakes.
    generation: AtomicU64,
}

/// What a worker holds of a shared limit.
struct Held {
    /// Reserved slots not handed out yet, earliest first.
    slots: VecDeque<Instant>,
    /// Just after the last slot this worker was given: where local pacing carries on.
    horizon: Instant,
    /// Live workers at the last reservation: the share to pace at without the database.
    live_workers: u32,
    /// Set while the database fails: pace locally until then, then try it again.
    degraded_until: Option<Instant>,
}

impl SharedLimiter {
    /// A limiter for `rate` on the shared row `key` ([`provider_key`], [`job_key`]).
    /// `burst` messages may go at once after an idle spell (default 1: reserved slots
    /// are never lost to a late wake-up, so no burst is needed to hold the rate).
    pub fn new(cluster: Cluster, key: impl Into<String>, rate: Rate, burst: Option<u32>) -> Self {
        // Rounded up: the shared rate is never above the configured one.
        let per_us = u64::try_from(rate.per.as_micros()).unwrap_or(u64::MAX);
        let interval_us = per_us.div_ceil(u64::from(rate.count.get())).max(1);
        let interval_us = i64::try_from(interval_us).unwrap_or(i64::MAX / 4);
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(NonZeroU32::MIN);
        let batch = (BATCH_SPAN.as_micros() as i64 / interval_us).clamp(1, i64::from(MAX_BATCH));
        SharedLimiter {
            cluster,
            key: key.into(),
            interval_us,
            burst_us: i64::from(burst.get() - 1).saturating_mul(interval_us),
            batch: batch as u32,
            held: tokio::sync::Mutex::new(Held {
                slots: VecDeque::new(),
                horizon: Instant::now(),
                live_workers: 1,
                degraded_until: None,
            }),
            generation: AtomicU64::new(0),
        }
    }

    /// The shared row's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Slots reserved per round trip.
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// Waits for this worker's next slot (reserving a batch when it holds none).
    pub async fn until_ready(&self) {
        loop {
            let (slot, generation) = {
                let mut held = self.held.lock().await;
                if held.slots.is_empty() {
                    self.refill(&mut held).await;
                }
                let slot = held.slots.pop_front().expect("a refill adds a slot");
                (slot, self.generation.load(Ordering::Acquire))
            };
            tokio::time::sleep_until(slot).await;
            if self.generation.load(Ordering::Acquire) == generation {
                return;
            }
        }
    }

    /// Takes a slot that is due now, if this worker holds one (no round trip, no wait).
    pub fn check(&self) -> bool {
        let Ok(mut held) = self.held.try_lock() else {
            return false;
        };
        match held.slots.front() {
            Some(&slot) if slot <= Instant::now() => {
                held.slots.pop_front();
                true
            }
            _ => false,
        }
    }

    /// Makes every worker wait `wait` (a provider's 429 / `Retry-After`): pushes the
    /// shared row forward and drops the slots this worker holds, including those callers
    /// are asleep on.
    pub async fn back_off(&self, wait: Duration) {
        let mut held = self.held.lock().await;
        let now = Instant::now();
        let pushed = tokio::time::timeout(RESERVE_TIMEOUT, self.cluster.push_back(&self.key, wait));
        match pushed.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.degrade(&mut held, now, wait, &format!("{e:#}")),
            Err(_) => self.degrade(&mut held, now, wait, "no answer within 2 s"),
        }
        held.slots.clear();
        held.horizon = held.horizon.max(now + wait);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Adds at least one slot: a batch from the database or, while it fails, one paced
    /// locally at this worker's share.
    async fn refill(&self, held: &mut Held) {
        let now = Instant::now();
        if held.degraded_until.is_none_or(|until| now >= until) {
            let reserve =
                self.cluster
                    .reserve(&self.key, self.interval_us, self.batch, self.burst_us);
            match tokio::time::timeout(RESERVE_TIMEOUT, reserve).await {
                Ok(Ok(r)) => {
                    if held.degraded_until.take().is_some() {
                        tracing::info!(key = %self.key, "Shared rate limit reachable again.");
                    }
                    held.live_workers = u32::try_from(r.live_workers.max(1)).unwrap_or(u32::MAX);
                    held.slots.extend(r.instants());
                    let last = *held.slots.back().expect("a reservation has a slot");
                    held.horizon = last + self.local_interval(held.live_workers);
                    return;
                }
                Ok(Err(e)) => self.degrade(held, now, RETRY_EVERY, &format!("{e:#}")),
                Err(_) => self.degrade(held, now, RETRY_EVERY, "no answer within 2 s"),
            }
        }
        let slot = held.horizon.max(now);
        held.slots.push_back(slot);
        held.horizon = slot + self.local_interval(held.live_workers);
    }

    /// Paces locally for at least `for_at_least` (and [`RETRY_EVERY`]); warns once per
    /// outage.
    fn degrade(&self, held: &mut Held, now: Instant, for_at_least: Duration, error: &str) {
        if held.degraded_until.is_none() {
            tracing::warn!(
                key = %self.key,
                error = %error,
                live_workers = held.live_workers,
                "Shared rate limit unreachable; pacing locally at the rate divided by the live workers."
            );
        } else {
            tracing::debug!(key = %self.key, error = %error, "Shared rate limit still unreachable.");
        }
        held.degraded_until = Some(now + for_at_least.max(RETRY_EVERY));
    }

    /// The interval between this worker's slots when it paces alone, at its share.
    fn local_interval(&self, live_workers: u32) -> Duration {
        Duration::from_micros(self.interval_us as u64).saturating_mul(live_workers)
    }
}

/// Governor's in-process limiter, as the engine builds it for one process sending alone.
pub type Governor = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// A rate limit as the engine holds it: in-process (embedded store) or shared by every
/// worker (PostgreSQL).
pub enum Limit {
    Local(Governor),
    Shared(Box<SharedLimiter>),
}

impl Limit {
    /// The limit of `rate` under `key` ([`provider_key`], [`job_key`]): shared on
    /// `cluster` when the store has one, else `local` (governor, built as the engine
    /// always has).
    pub fn new(
        cluster: Option<&Cluster>,
        key: String,
        rate: Rate,
        burst: Option<u32>,
        local: Governor,
    ) -> Limit {
        match cluster {
            Some(c) => Limit::Shared(Box::new(SharedLimiter::new(c.clone(), key, rate, burst))),
            None => Limit::Local(local),
        }
    }

    /// Waits until a message may go, and takes its slot.
    pub async fn until_ready(&self) {
        match self {
            Limit::Local(g) => g.until_ready().await,
            Limit::Shared(s) => s.until_ready().await,
        }
    }

    /// Takes a slot if one is free now without waiting (governor's `check().is_ok()`);
    /// `false` means the caller must [`Limit::until_ready`].
    pub fn check(&self) -> bool {
        match self {
            Limit::Local(g) => g.check().is_ok(),
            Limit::Shared(s) => s.check(),
        }
    }

    /// A provider asked to wait `wait`: every worker backs off (shared); nothing locally,
    /// where the message's own retry wait already does.
    pub async fn back_off(&self, wait: Duration) {
        match self {
            Limit::Local(_) => {}
            Limit::Shared(s) => s.back_off(wait).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_local_instants_from_the_answer() {
        let arrived = Instant::now() + Duration::from_secs(1);
        let r = Reservation {
            first_us: 1_000_000 - 20_000,
            interval_us: 10_000,
            n: 4,
            now_us: 1_000_000,
            arrived,
            live_workers: 2,
        };
        let got: Vec<Instant> = r.instants().collect();
        let ms = Duration::from_millis;
        assert_eq!(
            got,
            vec![
                arrived - ms(20),
                arrived - ms(10),
                arrived,
                arrived + ms(10)
            ]
        );
        assert_eq!(
            r.slots_us().collect::<Vec<_>>(),
            vec![980_000, 990_000, 1_000_000, 1_010_000]
        );
    }
}
