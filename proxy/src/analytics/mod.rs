//! The request log and the analytics made of it.
//!
//! Every answered request is counted where it is answered ([`count`], into
//! [`counts::Counts`]: the hourly groups, latency buckets and minutes the analytics read),
//! and every error and a sample of the rest (`analytics.sample`) also becomes a
//! [`RequestRow`] handed to a bounded channel ([`record`]: never blocks; when the channel is
//! full the row is dropped and counted in `media_edge_request_log_dropped_total`). A
//! background service ([`Writer`]) adds the counts to the metadata store (SQLite or
//! PostgreSQL) about once a second, writes the rows in batches, and prunes what is older
//! than `analytics.retention`. [`report`] turns the window's groups into the `GET
//! /admin/analytics` answer; it is pure.

pub mod counts;

use crate::config::AnalyticsConfig;
use crate::metrics::METRICS;
use crate::store::requests::{Group, RequestRow, Rollup, BATCH};
use crate::store::Store;
use counts::{Counts, Seen};
use serde_json::{json, Map, Value};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// The log of this process (the first server's, when a test runs several).
struct Log {
    rows: mpsc::Sender<RequestRow>,
    counts: Counts,
    /// One successful request's row in this many is kept (0: none).
    sample_every: u64,
}

static LOG: OnceLock<Log> = OnceLock::new();

thread_local! {
    static SAMPLED: Cell<u64> = const { Cell::new(0) };
}

/// Counts an answered request into the analytics (when the log is on).
pub fn count(seen: &Seen<'_>) {
    if let Some(log) = LOG.get() {
        log.counts.count(seen);
    }
}

/// Whether this request's raw row is to be kept: every error, one in `sample_every` of the
/// rest (counted per thread).
pub fn keep_row(status: u16) -> bool {
    let Some(log) = LOG.get() else { return false };
    if status >= 400 {
        return true;
    }
    if log.sample_every == 0 {
        return false;
    }
    SAMPLED.with(|n| {
        let v = n.get() + 1;
        n.set(v % log.sample_every);
        v == log.sample_every
    })
}

/// Hands a row to the writer; drops it (counted) when the queue is full or the log is off.
pub fn record(row: RequestRow) {
    let Some(log) = LOG.get() else { return };
    if log.rows.try_send(row).is_err() {
        METRICS.request_log_dropped.inc();
    }
}

/// Whether requests are being counted (the log is on in this process).
pub fn enabled() -> bool {
    LOG.get().is_some()
}

/// The key client IPs are hashed with: `MEDIA_EDGE_IP_HASH_KEY` (set it, the same on every
/// node, for hashes that hold across restarts and a fleet), else random for this process.
/// Without a secret key the whole IPv4 space could be hashed back in seconds.
static IP_KEY: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| match std::env::var("MEDIA_EDGE_IP_HASH_KEY") {
        Ok(k) if !k.is_empty() => k.into_bytes(),
        _ => {
            use sha2::Digest;
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            let mut h = sha2::Sha256::new();
            h.update(seed.as_bytes());
            h.update(crate::store::jobs::new_id().as_bytes());
            h.finalize().to_vec()
        }
    });

/// The client as recorded: the address, or the first 16 hex digits of a keyed SHA-256 of it.
pub fn client_label(ip: Option<std::net::IpAddr>, hash: bool) -> String {
    match ip {
        None => String::new(),
        Some(ip) if hash => {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(IP_KEY.as_slice());
            h.update([0]);
            h.update(ip.to_string().as_bytes());
            hex::encode(&h.finalize()[..8])
        }
        Some(ip) => ip.to_string(),
    }
}

/// The writer: a Pingora background service with its own runtime.
pub struct Writer {
    store: Arc<Store>,
    cfg: AnalyticsConfig,
    rx: parking_lot::Mutex<Option<mpsc::Receiver<RequestRow>>>,
}

/// How often the counts are added to the store.
const FLUSH: Duration = Duration::from_secs(1);

impl Writer {
    /// Opens the log (requests are counted from now on); `None` when it is off.
    pub fn new(store: Arc<Store>, cfg: &AnalyticsConfig) -> Option<Writer> {
        if !cfg.enabled {
            return None;
        }
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let sample_every = if cfg.sample <= 0.0 {
            0
        } else {
            (1.0 / cfg.sample.min(1.0)).round().max(1.0) as u64
        };
        // A second server in one process (tests) keeps the first log.
        LOG.set(Log {
            rows: tx,
            counts: Counts::default(),
            sample_every,
        })
        .ok()?;
        Some(Writer {
            store,
            cfg: cfg.clone(),
            rx: parking_lot::Mutex::new(Some(rx)),
        })
    }

    async fn prune(&self) {
        let before = crate::store::db::now_ms() - self.cfg.retention.0.as_millis() as i64;
        match self.store.db.prune_requests(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "request log pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning the request log"),
        }
    }

    /// Adds the counts so far (and any a failed write kept) to the store. A failed write
    /// keeps them for the next try: their size is bounded by the groups, not the traffic.
    async fn flush(&self, pending: &mut Rollup) {
        let Some(log) = LOG.get() else { return };
        pending.merge(log.counts.take());
        match self.store.db.add_rollup(pending).await {
            Ok(()) => *pending = Rollup::default(),
            Err(e) => tracing::warn!(error = %e, "writing the request counts"),
        }
    }

    async fn write_rows(&self, batch: &mut Vec<RequestRow>) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.db.insert_requests(batch).await {
            METRICS.request_log_dropped.inc_by(batch.len() as u64);
            tracing::warn!(error = %e, rows = batch.len(), "writing the request log");
        }
        batch.clear();
    }
}

/// The request log writer has started and not yet written its last rows (the process
/// must not end before: see `edge::drain`).
static WRITER_RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Is the request log writer still running?
pub fn writer_running() -> bool {
    WRITER_RUNNING.load(std::sync::atomic::Ordering::Acquire)
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for Writer {
    async fn start(&self, shutdown: pingora_core::server::ShutdownWatch) {
        WRITER_RUNNING.store(true, std::sync::atomic::Ordering::Release);
        self.run(shutdown).await;
        WRITER_RUNNING.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Writer {
    async fn run(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        let Some(mut rx) = self.rx.lock().take() else {
            return;
        };
        self.prune().await;
        let mut prune = tokio::time::interval(Duration::from_secs(600));
        prune.tick().await;
        let mut flush = tokio::time::interval(FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending = Rollup::default();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            // Never 0: a full batch is written at the end of the loop.
            let room = BATCH - batch.len();
            tokio::select! {
                // Rows are written a batch at a time, or with the counts once a second:
                // never a transaction a row.
                n = rx.recv_many(&mut batch, room) => {
                    if n == 0 {
                        break;
                    }
                }
                _ = flush.tick() => {
                    self.write_rows(&mut batch).await;
                    self.flush(&mut pending).await;
                }
                _ = prune.tick() => self.prune().await,
                _ = shutdown.changed() => {
                    // What is queued is written before the process goes.
                    while let Ok(row) = rx.try_recv() {
                        batch.push(row);
                        if batch.len() == BATCH {
                            self.write_rows(&mut batch).await;
                        }
                    }
                    break;
                }
            }
            if batch.len() >= BATCH {
                self.write_rows(&mut batch).await;
            }
        }
        self.write_rows(&mut batch).await;
        self.flush(&mut pending).await;
    }
}

/// Percentiles from `(value, count)` pairs sorted by value (exact over the values given).
pub fn percentiles(hist: &[(i64, i64)], ps: &[f64]) -> Vec<i64> {
    let total: i64 = hist.iter().map(|(_, n)| n).sum();
    ps.iter()
        .map(|p| {
            if total == 0 {
                return 0;
            }
            // The smallest value with at least p of the requests at or under it.
            let rank = ((p * total as f64).ceil() as i64).clamp(1, total);
            let mut seen = 0;
            for (v, n) in hist {
                seen += n;
                if seen >= rank {
                    return *v;
                }
            }
            hist.last().map_or(0, |(v, _)| *v)
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    requests: i64,
    hits: i64,
    errors: i64,
    bytes: i64,
    us: i64,
}

impl Tally {
    fn add(&mut self, g: &Group) {
        self.requests += g.count;
        if g.cache == "HIT" {
            self.hits += g.count;
        }
        if g.status >= 400 {
            self.errors += g.count;
        }
        self.bytes += g.bytes;
        self.us += g.us;
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "hits": self.hits,
            "hit_rate": ratio(self.hits, self.requests),
            "errors": self.errors,
            "bytes": self.bytes,
            "avg_ms": ms(ratio(self.us, self.requests)),
        })
    }
}

/// Microseconds as milliseconds, to the microsecond.
fn ms(us: f64) -> f64 {
    (us).round() / 1000.0
}

fn ratio(a: i64, b: i64) -> f64 {
    if b == 0 {
        0.0
    } else {
        ((a as f64 / b as f64) * 10_000.0).round() / 10_000.0
    }
}

fn breakdown(groups: &[Group], key: impl Fn(&Group) -> String) -> Value {
    let mut m: BTreeMap<String, Tally> = BTreeMap::new();
    for g in groups {
        m.entry(key(g)).or_default().add(g);
    }
    let mut rows: Vec<(String, Tally)> = m.into_iter().collect();
    rows.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(&b.0)));
    Value::Array(
        rows.into_iter()
            .map(|(k, t)| {
                let mut v = t.json();
                v["key"] = json!(k);
                v
            })
            .collect(),
    )
}

/// The analytics answer: totals, hit rate by tier, latency, breakdowns, the series.
pub fn report(
    hours: i64,
    groups: &[Group],
    latencies: &[(i64, i64)],
    series: &[(i64, i64, i64, i64)],
    bucket_ms: i64,
) -> Value {
    let mut total = Tally::default();
    for g in groups {
        total.add(g);
    }
    let cached: Vec<&Group> = groups.iter().filter(|g| !g.cache.is_empty()).collect();
    let lookups: i64 = cached.iter().map(|g| g.count).sum();
    let mut tiers = Map::new();
    for tier in ["memory", "disk"] {
        let hits: i64 = cached
            .iter()
            .filter(|g| g.cache == "HIT" && g.tier == tier)
            .map(|g| g.count)
            .sum();
        tiers.insert(
            tier.into(),
            json!({"hits": hits, "hit_rate": ratio(hits, lookups)}),
        );
    }
    let p = percentiles(latencies, &[0.5, 0.95, 0.99]);
    let lat_n: i64 = latencies.iter().map(|(_, n)| n).sum();
    // The average from the exact sums (the histogram's values are rounded).
    let lat_sum: i64 = groups
        .iter()
        .filter(|g| g.route != "admin")
        .map(|g| g.us)
        .sum();
    let nonempty = |f: fn(&Group) -> &String| {
        move |g: &Group| {
            let v = f(g);
            if v.is_empty() {
                "-".to_string()
            } else {
                v.clone()
            }
        }
    };
    json!({
        "hours": hours,
        "totals": {
            "requests": total.requests,
            "success": total.requests - total.errors,
            "errors": total.errors,
            "bytes": total.bytes,
            "cache_lookups": lookups,
            "hits": total.hits,
            "hit_rate": ratio(total.hits, lookups),
        },
        "tiers": tiers,
        "latency_ms": {
            "avg": ms(ratio(lat_sum, lat_n)),
            "p50": ms(p[0] as f64),
            "p95": ms(p[1] as f64),
            "p99": ms(p[2] as f64),
            "requests": lat_n,
        },
        "by_status": breakdown(groups, |g| g.status.to_string()),
        "by_route": breakdown(groups, |g| g.route.clone()),
        "by_origin": breakdown(groups, nonempty(|g| &g.origin)),
        "by_derivative": breakdown(groups, nonempty(|g| &g.derivative)),
        "by_source": breakdown(groups, nonempty(|g| &g.source)),
        "by_mode": breakdown(groups, nonempty(|g| &g.mode)),
        "by_cache": breakdown(groups, nonempty(|g| &g.cache)),
        "series": {
            "bucket_ms": bucket_ms,
            "points": series.iter().map(|(t, n, h, e)| json!({
                "t": t, "requests": n, "hits": h, "errors": e, "hit_rate": ratio(*h, *n),
            })).collect::<Vec<_>>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact() {
        // 1..=100 ms, one request each.
        let hist: Vec<(i64, i64)> = (1..=100).map(|v| (v, 1)).collect();
        assert_eq!(
            percentiles(&hist, &[0.5, 0.95, 0.99, 1.0]),
            [50, 95, 99, 100]
        );
        // 90 fast, 10 slow.
        assert_eq!(
            percentiles(&[(2, 90), (700, 10)], &[0.5, 0.9, 0.95]),
            [2, 2, 700]
        );
        assert_eq!(percentiles(&[], &[0.5]), [0]);
    }

    fn group(cache: &str, tier: &str, status: i64, count: i64) -> Group {
        Group {
            route: "transform".into(),
            status,
            cache: cache.into(),
            tier: tier.into(),
            origin: "samples".into(),
            derivative: String::new(),
            source: "local".into(),
            mode: "image".into(),
            count,
            bytes: count * 100,
            us: count * 3000,
        }
    }

    #[test]
    fn hit_rates_by_tier_and_breakdowns() {
        let groups = [
            group("HIT", "memory", 200, 6),
            group("HIT", "disk", 200, 2),
            group("MISS", "", 200, 1),
            group("", "", 404, 1),
        ];
        let r = report(24, &groups, &[(3000, 10)], &[], 60_000);
        assert_eq!(r["totals"]["requests"], 10);
        assert_eq!(r["totals"]["errors"], 1);
        assert_eq!(r["totals"]["cache_lookups"], 9);
        assert_eq!(r["tiers"]["memory"]["hits"], 6);
        assert_eq!(r["tiers"]["disk"]["hits"], 2);
        assert_eq!(r["by_status"][0]["key"], "200");
        assert_eq!(r["by_status"][0]["requests"], 9);
        assert_eq!(r["by_cache"][0]["key"], "HIT");
        assert_eq!(r["latency_ms"]["p50"], 3.0);
        assert_eq!(r["by_status"][0]["avg_ms"], 3.0);
    }
}
