//! Counters the server exposes at `/metrics` (Prometheus text format).

use std::sync::atomic::AtomicU64;

/// Process-wide counters; handlers add, `/metrics` reads.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Delivery reports received, per outcome.
    pub reports_applied: AtomicU64,
    pub reports_duplicate: AtomicU64,
    pub reports_unknown_id: AtomicU64,
    pub reports_rejected: AtomicU64,
    /// Sum and count of delivery-report lag (report time minus send time), ms.
    pub report_lag_ms_sum: AtomicU64,
    pub report_lag_count: AtomicU64,
}
