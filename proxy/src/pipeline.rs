//! The request path shared by every frontend. Today it records each request (metrics);
//! classification, authorization and caching join it as one linear function.

use std::time::Instant;

use crate::metrics::{self as m, GaugeGuard};

/// Marks a request as in flight until dropped.
pub fn in_flight(protocol: &'static str) -> GaugeGuard {
    GaugeGuard::new(metrics::gauge!(m::QUERIES_IN_FLIGHT, "protocol" => protocol))
}

/// Records one finished request.
pub fn record(protocol: &'static str, ok: bool, started: Instant) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!(m::QUERIES, "protocol" => protocol, "outcome" => outcome).increment(1);
    metrics::histogram!(m::QUERY_DURATION, "protocol" => protocol)
        .record(started.elapsed().as_secs_f64());
}

/// The request metrics of one session, looked up once instead of per request.
pub struct Recorder {
    ok: metrics::Counter,
    error: metrics::Counter,
    duration: metrics::Histogram,
}

impl Recorder {
    pub fn new(protocol: &'static str) -> Recorder {
        Recorder {
            ok: metrics::counter!(m::QUERIES, "protocol" => protocol, "outcome" => "ok"),
            error: metrics::counter!(m::QUERIES, "protocol" => protocol, "outcome" => "error"),
            duration: metrics::histogram!(m::QUERY_DURATION, "protocol" => protocol),
        }
    }

    /// Records one finished request.
    pub fn record(&self, ok: bool, started: Instant) {
        if ok { &self.ok } else { &self.error }.increment(1);
        self.duration.record(started.elapsed().as_secs_f64());
    }
}
