//! Prometheus metrics: one registry, counters and histograms the edge updates per request.
//!
//! Owns metric names and labels; the text exposition for `GET /metrics` adds the cache
//! tiers' counters read at scrape time.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub cache_results: IntCounterVec,
    pub bytes_out: IntCounter,
    pub origin_latency: HistogramVec,
    pub request_latency: HistogramVec,
    pub purges: IntCounterVec,
    pub front_door: IntCounterVec,
    pub origin_connections: IntCounterVec,
    pub connection_events: IntCounterVec,
    pub jobs: IntCounterVec,
    pub store: IntCounterVec,
    pub uploads: IntCounterVec,
    pub request_log_dropped: IntCounter,
    pub config_applied: IntCounter,
}

fn build() -> Metrics {
    let registry =
        Registry::new_custom(Some("media_edge".into()), None).expect("static registry prefix");
    let requests = IntCounterVec::new(
        Opts::new("requests_total", "Requests by status code"),
        &["status"],
    )
    .expect("static metric");
    let cache_results = IntCounterVec::new(
        Opts::new("cache_results_total", "Responses by X-Cache result"),
        &["result"],
    )
    .expect("static metric");
    let bytes_out = IntCounter::new("response_body_bytes_total", "Body bytes sent to clients")
        .expect("static metric");
    let origin_latency = HistogramVec::new(
        HistogramOpts::new(
            "origin_response_seconds",
            "Time to the origin service's response header",
        )
        .buckets(vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ]),
        &["origin"],
    )
    .expect("static metric");
    let request_latency = HistogramVec::new(
        HistogramOpts::new("request_seconds", "Whole request time by cache result").buckets(vec![
            0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
        ]),
        &["result"],
    )
    .expect("static metric");
    let purges = IntCounterVec::new(Opts::new("purges_total", "Purged items by kind"), &["kind"])
        .expect("static metric");
    let front_door = IntCounterVec::new(
        Opts::new(
            "front_door_requests_total",
            "HTTP/1 requests the front door answered itself (fast hits) or handed to Pingora",
        ),
        &["outcome"],
    )
    .expect("static metric");
    let origin_connections = IntCounterVec::new(
        Opts::new(
            "origin_connections_total",
            "Connections to the origin service by whether they came from the pool",
        ),
        &["reused"],
    )
    .expect("static metric");
    let connection_events = IntCounterVec::new(
        Opts::new(
            "front_door_connection_events_total",
            "Client connections refused or closed by the front door, by reason",
        ),
        &["event"],
    )
    .expect("static metric");
    let jobs = IntCounterVec::new(
        Opts::new(
            "jobs_total",
            "Job events on this node: queued, complete, retry (a try failed, another is due), failed",
        ),
        &["event"],
    )
    .expect("static metric");
    let store = IntCounterVec::new(
        Opts::new(
            "transform_store_total",
            "Transform store lookups and writes: hit, miss, write, write_error",
        ),
        &["result"],
    )
    .expect("static metric");
    let uploads = IntCounterVec::new(
        Opts::new(
            "uploads_total",
            "Uploads recorded: stored (a new object) or deduplicated (shared with the tenant's record of the same bytes)",
        ),
        &["result"],
    )
    .expect("static metric");
    let request_log_dropped = IntCounter::new(
        "request_log_dropped_total",
        "Request-log rows dropped: the writer's queue was full, or a batch failed to write",
    )
    .expect("static metric");
    let config_applied = IntCounter::new(
        "config_applied_total",
        "Config changes applied live (POST /admin/config)",
    )
    .expect("static metric");
    for c in [
        Box::new(connection_events.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(config_applied.clone()),
        Box::new(request_log_dropped.clone()),
        Box::new(uploads.clone()),
        Box::new(jobs.clone()),
        Box::new(store.clone()),
        Box::new(origin_connections.clone()),
        Box::new(requests.clone()),
        Box::new(cache_results.clone()),
        Box::new(bytes_out.clone()),
        Box::new(origin_latency.clone()),
        Box::new(request_latency.clone()),
        Box::new(purges.clone()),
        Box::new(front_door.clone()),
    ] {
        let _ = registry.register(c);
    }
    Metrics {
        registry,
        requests,
        cache_results,
        bytes_out,
        origin_latency,
        request_latency,
        purges,
        front_door,
        origin_connections,
        connection_events,
        jobs,
        store,
        uploads,
        request_log_dropped,
        config_applied,
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(build);

/// Label values resolved once: a per-request `with_label_values` hashes its labels and takes
/// a lock, which showed up on the cache-hit path.
struct Resolved<T> {
    by_label: Vec<(&'static str, T)>,
    /// Makes the handle of a label outside the list.
    make: fn(&str) -> T,
}

impl<T: Clone> Resolved<T> {
    fn new(labels: &[&'static str], make: fn(&str) -> T) -> Self {
        Resolved {
            by_label: labels.iter().map(|l| (*l, make(l))).collect(),
            make,
        }
    }

    fn get(&self, label: &str) -> T {
        match self.by_label.iter().find(|(l, _)| *l == label) {
            Some((_, t)) => t.clone(),
            None => (self.make)(label),
        }
    }
}

const CACHE_RESULTS: &[&str] = &["HIT", "MISS", "STALE", "EXPIRED", "REVALIDATED", "BYPASS"];
const PHASES: &[&str] = &[
    "hit",
    "miss",
    "stale",
    "stale-updating",
    "expired",
    "revalidated",
    "revalidated-nocache",
    "disabled",
    "bypass",
    "uninitialized",
    "key",
];
/// Every label [`status_label`] gives.
const STATUS_LABELS: &[&str] = &[
    "200", "204", "206", "304", "400", "401", "403", "404", "416", "429", "500", "502", "504",
    "508", "0", "2xx", "3xx", "4xx", "5xx",
];

/// The `status` label of a response status (the request never answered: 0).
fn status_label(s: u16) -> &'static str {
    match s {
        200 => "200",
        204 => "204",
        206 => "206",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        416 => "416",
        429 => "429",
        500 => "500",
        502 => "502",
        504 => "504",
        508 => "508",
        0 => "0",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

static REQUEST_COUNTERS: LazyLock<Resolved<prometheus::IntCounter>> =
    LazyLock::new(|| Resolved::new(STATUS_LABELS, |l| METRICS.requests.with_label_values(&[l])));
static CACHE_RESULT_COUNTERS: LazyLock<Resolved<prometheus::IntCounter>> = LazyLock::new(|| {
    Resolved::new(CACHE_RESULTS, |l| {
        METRICS.cache_results.with_label_values(&[l])
    })
});
static LATENCY_BY_PHASE: LazyLock<Resolved<prometheus::Histogram>> =
    LazyLock::new(|| Resolved::new(PHASES, |l| METRICS.request_latency.with_label_values(&[l])));

static FRONT_DOOR: LazyLock<[prometheus::IntCounter; 2]> = LazyLock::new(|| {
    ["answered", "handed_over"].map(|l| METRICS.front_door.with_label_values(&[l]))
});

/// Counts one request on the front door: answered there, or handed to Pingora.
pub fn count_front_door(answered: bool) {
    FRONT_DOOR[usize::from(!answered)].inc();
}

static ORIGIN_CONNECTIONS: LazyLock<[prometheus::IntCounter; 2]> =
    LazyLock::new(|| ["false", "true"].map(|l| METRICS.origin_connections.with_label_values(&[l])));

/// Counts one request's connection to the origin service: new, or reused from the pool.
pub fn count_origin_connection(reused: bool) {
    ORIGIN_CONNECTIONS[usize::from(reused)].inc();
}

/// What the front door did to a client connection (`front_door_connection_events_total`).
#[derive(Debug, Clone, Copy)]
pub enum ConnectionEvent {
    RefusedPerIp,
    RefusedFull,
    ClosedForRoom,
    HeadTimeout,
    HeadTooLarge,
}

impl ConnectionEvent {
    fn label(self) -> &'static str {
        match self {
            ConnectionEvent::RefusedPerIp => "refused_per_ip",
            ConnectionEvent::RefusedFull => "refused_full",
            ConnectionEvent::ClosedForRoom => "closed_for_room",
            ConnectionEvent::HeadTimeout => "head_timeout",
            ConnectionEvent::HeadTooLarge => "head_too_large",
        }
    }
}

/// Counts one [`ConnectionEvent`] (rare: not pre-resolved).
pub fn count_connection_event(e: ConnectionEvent) {
    METRICS
        .connection_events
        .with_label_values(&[e.label()])
        .inc();
}

/// Counts an idle connection closed to make room for a new one.
pub fn count_connection_closed_for_room() {
    count_connection_event(ConnectionEvent::ClosedForRoom);
}

/// Counts one response by its `X-Cache` value.
pub fn count_cache_result(x_cache: &str) {
    CACHE_RESULT_COUNTERS.get(x_cache).inc();
}

/// Counts one request by its response status.
pub fn count_request(status: u16) {
    REQUEST_COUNTERS.get(status_label(status)).inc();
}

/// Records one request's time by its cache phase (`CachePhase::as_str`).
pub fn observe_request(phase: &str, seconds: f64) {
    LATENCY_BY_PHASE.get(phase).observe(seconds);
}

/// The text exposition, with the storage tiers' counters appended.
pub fn render(stats: &crate::edge::storage::TierStats, pool: &crate::transform::Pool) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut buf);
    let mut out = String::from_utf8(buf).unwrap_or_default();
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let _ = write!(
        out,
        "# HELP media_edge_cache_lookups_total Cache lookups by tier that answered\n\
         # TYPE media_edge_cache_lookups_total counter\n\
         media_edge_cache_lookups_total{{tier=\"memory\"}} {}\n\
         media_edge_cache_lookups_total{{tier=\"disk\"}} {}\n\
         media_edge_cache_lookups_total{{tier=\"miss\"}} {}\n\
         # HELP media_edge_cache_fast_hits_total Fresh memory hits answered without the cache state machine\n\
         # TYPE media_edge_cache_fast_hits_total counter\n\
         media_edge_cache_fast_hits_total {}\n\
         # HELP media_edge_disk_cache_bytes Bytes held by the disk tier\n\
         # TYPE media_edge_disk_cache_bytes gauge\n\
         media_edge_disk_cache_bytes {}\n\
         # HELP media_edge_disk_cache_objects Objects held by the disk tier\n\
         # TYPE media_edge_disk_cache_objects gauge\n\
         media_edge_disk_cache_objects {}\n\
         # HELP media_edge_disk_cache_evictions_total Objects evicted from the disk tier\n\
         # TYPE media_edge_disk_cache_evictions_total counter\n\
         media_edge_disk_cache_evictions_total {}\n\
         # HELP media_edge_disk_cache_torn_total Disk entries refused as torn or mismatched\n\
         # TYPE media_edge_disk_cache_torn_total counter\n\
         media_edge_disk_cache_torn_total {}\n\
         # HELP media_edge_disk_cache_write_errors_total Disk tier writes that failed (entry kept in memory only)\n\
         # TYPE media_edge_disk_cache_write_errors_total counter\n\
         media_edge_disk_cache_write_errors_total {}\n",
        l(&stats.mem_hits),
        l(&stats.disk_hits),
        l(&stats.misses),
        l(&stats.fast_hits),
        l(&stats.disk_bytes),
        l(&stats.disk_objects),
        l(&stats.disk_evictions),
        l(&stats.torn_entries),
        l(&stats.disk_write_errors),
    );
    use crate::transform::pool::{CANCELLED, DEADLINE};
    let (running, waiting) = pool.load();
    let _ = write!(
        out,
        "# HELP media_edge_transforms_running Transforms running on the pool\n\
         # TYPE media_edge_transforms_running gauge\n\
         media_edge_transforms_running {running}\n\
         # HELP media_edge_transforms_waiting Transforms waiting for a turn on the pool\n\
         # TYPE media_edge_transforms_waiting gauge\n\
         media_edge_transforms_waiting {waiting}\n\
         # HELP media_edge_transform_memory_reserved_bytes Bytes of the transform memory budget reserved by running transforms\n\
         # TYPE media_edge_transform_memory_reserved_bytes gauge\n\
         media_edge_transform_memory_reserved_bytes {}\n\
         # HELP media_edge_transforms_stopped_total Transforms stopped early: the request went away (cancelled) or the time limit passed (deadline)\n\
         # TYPE media_edge_transforms_stopped_total counter\n\
         media_edge_transforms_stopped_total{{reason=\"cancelled\"}} {}\n\
         media_edge_transforms_stopped_total{{reason=\"deadline\"}} {}\n",
        pool.memory_reserved(),
        l(&CANCELLED),
        l(&DEADLINE),
    );
    #[cfg(feature = "image-engine")]
    {
        use crate::transform::sandbox::{
            CRASHED, FINISHED, OUT_OF_MEMORY, RECYCLED, STARTED, STOPPED,
        };
        let _ = write!(
            out,
            "# HELP media_edge_transform_workers_started_total Sandboxed transform worker processes started\n\
             # TYPE media_edge_transform_workers_started_total counter\n\
             media_edge_transform_workers_started_total {}\n\
             # HELP media_edge_transform_workers_ended_total Transform workers ended, by why: crashed (or broke the protocol), out_of_memory, stopped (deadline or the request went away), recycled, finished (a video worker after its one call)\n\
             # TYPE media_edge_transform_workers_ended_total counter\n\
             media_edge_transform_workers_ended_total{{reason=\"crashed\"}} {}\n\
             media_edge_transform_workers_ended_total{{reason=\"out_of_memory\"}} {}\n\
             media_edge_transform_workers_ended_total{{reason=\"stopped\"}} {}\n\
             media_edge_transform_workers_ended_total{{reason=\"recycled\"}} {}\n\
             media_edge_transform_workers_ended_total{{reason=\"finished\"}} {}\n",
            l(&STARTED),
            l(&CRASHED),
            l(&OUT_OF_MEMORY),
            l(&STOPPED),
            l(&RECYCLED),
            l(&FINISHED),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series the Grafana dashboard (`conf/grafana/media-edge.json`) queries is one
    /// `/metrics` exports.
    #[test]
    fn the_grafana_dashboard_queries_exported_series() {
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../../conf/grafana/media-edge.json"))
                .expect("the dashboard is JSON");
        // One sample of each labelled family, as traffic would make them.
        let m = &*METRICS;
        m.requests.with_label_values(&["200"]).inc();
        m.cache_results.with_label_values(&["HIT"]).inc();
        m.origin_latency.with_label_values(&["o"]).observe(0.01);
        m.request_latency.with_label_values(&["hit"]).observe(0.01);
        m.purges.with_label_values(&["tag"]).inc();
        m.front_door.with_label_values(&["answered"]).inc();
        m.jobs.with_label_values(&["queued"]).inc();
        m.store.with_label_values(&["hit"]).inc();
        m.uploads.with_label_values(&["stored"]).inc();
        let text = render(
            &crate::edge::storage::TierStats::default(),
            &crate::transform::Pool::new(1),
        );
        let exported: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let name = regex::Regex::new(r"media_edge_[a-z_]+").unwrap();
        let mut queried = 0;
        for panel in dash["panels"].as_array().expect("panels") {
            for t in panel["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                for n in name.find_iter(expr) {
                    queried += 1;
                    assert!(
                        exported.contains(n.as_str()),
                        "{} queries {} which /metrics does not export",
                        panel["title"],
                        n.as_str()
                    );
                }
            }
        }
        assert!(queried >= 12, "{queried}");
    }

    #[test]
    fn every_status_label_is_pre_resolved() {
        for s in 0..1000 {
            assert!(STATUS_LABELS.contains(&status_label(s)), "{s}");
        }
    }
}
