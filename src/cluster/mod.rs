//! Several crier workers on one PostgreSQL database: PostgreSQL is the only thing they
//! share. Each worker registers and heartbeats ([`members`]); one of them holds the
//! scheduler lease and fires the schedule; every worker claims a run's queued messages
//! in batches and sends them ([`claims`]); providers' and jobs' rate limits are shared
//! rows every worker reserves slots from ([`rate`]).
//!
//! Correctness never rests on a lease alone: a scheduled run's id is derived from (job,
//! instant) and is the primary key of `runs`, so two workers that both believe they lead
//! still make one run; a message's `sending` mark is refused to a worker that no longer
//! holds it, so a worker woken after its claims were handed on sends none of them.
//!
//! The tables are the history's migration 002 (`history/store/postgres/002_workers.sql`).
//! The embedded store has none of this: sled admits one process, which sends alone.

pub mod claims;
pub mod members;
pub mod rate;

use crate::store::postgres::Pg;

/// The coordination tables of one PostgreSQL database.
#[derive(Clone, Debug)]
pub struct Cluster {
    pg: Pg,
}

impl Cluster {
    /// The cluster on an already connected database (the store's pool).
    pub fn on(pg: Pg) -> Cluster {
        Cluster { pg }
    }

    /// The database underneath.
    pub fn pg(&self) -> &Pg {
        &self.pg
    }
}

/// Milliseconds of the database's clock, as SQL: every worker reads one clock.
pub const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
