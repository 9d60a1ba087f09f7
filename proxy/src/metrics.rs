//! Metric names and the Prometheus recorder. Every name starts with `sluice_`; every
//! client-facing metric carries a `protocol` label.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS_ACCEPTED: &str = "sluice_connections_accepted_total";
pub const CONNECTIONS_ACTIVE: &str = "sluice_connections_active";
pub const AUTH_FAILURES: &str = "sluice_auth_failures_total";
pub const LOGINS: &str = "sluice_logins_total";
pub const QUERIES: &str = "sluice_queries_total";
pub const QUERY_DURATION: &str = "sluice_query_duration_seconds";
pub const QUERIES_IN_FLIGHT: &str = "sluice_queries_in_flight";
pub const CANCEL_REQUESTS: &str = "sluice_cancel_requests_total";
pub const POOL_CONNECTIONS: &str = "sluice_pool_connections";
pub const POOL_CHECKOUT_WAIT: &str = "sluice_pool_checkout_wait_seconds";
pub const POOL_CHECKOUT_TIMEOUTS: &str = "sluice_pool_checkout_timeouts_total";
pub const SERVER_CONNECT_FAILURES: &str = "sluice_server_connect_failures_total";
pub const POLICY_DENIALS: &str = "sluice_policy_denials_total";
pub const AUDIT_DROPPED: &str = "sluice_audit_dropped_total";
pub const RELOADS: &str = "sluice_reloads_total";
pub const RELOAD_FAILURES: &str = "sluice_reload_failures_total";
pub const CACHE_HITS: &str = "sluice_cache_hits_total";
pub const CACHE_MISSES: &str = "sluice_cache_misses_total";
pub const CACHE_SHARED: &str = "sluice_cache_shared_total";
pub const CACHE_BYPASSES: &str = "sluice_cache_bypasses_total";
pub const CACHE_STORES: &str = "sluice_cache_stores_total";
pub const CACHE_INVALIDATIONS: &str = "sluice_cache_invalidations_total";
pub const CACHE_ERRORS: &str = "sluice_cache_errors_total";
pub const CACHE_ENTRY_BYTES: &str = "sluice_cache_entry_bytes";
pub const CACHE_BREAKER_OPEN: &str = "sluice_cache_breaker_open";

const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Installs the process-wide recorder once and returns its handle. Several sluice instances
/// in one process (tests) share it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed by an embedding program; then sluice's
            // metrics go there and /metrics renders only what this recorder saw.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(CONNECTIONS_ACCEPTED, "Client connections accepted.");
    describe_gauge!(CONNECTIONS_ACTIVE, "Client connections open now.");
    describe_counter!(AUTH_FAILURES, "Failed client logins, by reason.");
    describe_counter!(
        POLICY_DENIALS,
        "Statements refused by access policy, by protocol."
    );
    describe_counter!(AUDIT_DROPPED, "Audit events not written, by reason.");
    describe_counter!(RELOADS, "Configuration reloads applied.");
    describe_counter!(CACHE_HITS, "Reads answered from the cache.");
    describe_counter!(CACHE_MISSES, "Cacheable reads not found in the cache.");
    describe_counter!(
        CACHE_SHARED,
        "Reads answered by an identical read running for another session (counted as hits too)."
    );
    describe_counter!(CACHE_BYPASSES, "Reads that skipped the cache, by reason.");
    describe_counter!(CACHE_STORES, "Answers stored in the cache.");
    describe_counter!(
        CACHE_INVALIDATIONS,
        "Table (or whole-database) generations bumped by writes."
    );
    describe_counter!(
        CACHE_ERRORS,
        "Failed or timed-out Redis calls, by operation."
    );
    describe_histogram!(CACHE_ENTRY_BYTES, Unit::Bytes, "Sizes of stored answers.");
    describe_gauge!(
        CACHE_BREAKER_OPEN,
        "1 while the Redis circuit breaker is open."
    );
    describe_counter!(
        RELOAD_FAILURES,
        "Configuration reloads refused; the old state stayed."
    );
    describe_counter!(LOGINS, "Successful client logins.");
    describe_counter!(QUERIES, "Client requests, by outcome (ok, error).");
    describe_histogram!(
        QUERY_DURATION,
        Unit::Seconds,
        "Time to answer a client request."
    );
    describe_gauge!(QUERIES_IN_FLIGHT, "Client requests being answered now.");
    describe_counter!(CANCEL_REQUESTS, "Cancel requests received, by result.");
    describe_gauge!(
        POOL_CONNECTIONS,
        "Server connections of a route's pool, by state (open, idle)."
    );
    describe_histogram!(
        POOL_CHECKOUT_WAIT,
        Unit::Seconds,
        "Time clients waited for a server connection."
    );
    describe_counter!(
        POOL_CHECKOUT_TIMEOUTS,
        "Clients that gave up waiting for a server connection (53300)."
    );
    describe_counter!(
        SERVER_CONNECT_FAILURES,
        "Failed attempts to open a server connection."
    );
}

/// Renders the Prometheus text exposition.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

/// Keeps a gauge raised while alive.
pub struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    pub fn new(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
