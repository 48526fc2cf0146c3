//! Analytics queries over 1,000,000 request-log rows on SQLite (a temp file, WAL): the time
//! of each query `GET /admin/analytics` makes (groups for totals and breakdowns, latency
//! histogram, the series: all read from the writer's rollups) and of the errors list (the
//! raw rows), over a 24 h window holding every row; and the insert rate of batches of raw
//! rows with their rollups (the worst case: the server keeps raw rows of errors and a sample
//! only, and adds its in-memory counts to the rollups once a second). Target: each query under 200 ms.
//!
//! `cargo bench -p media-edge --bench analytics` (`MEDIA_EDGE_BENCH_ROWS` sets the rows;
//! `cargo test --benches` runs a 20,000-row pass).

use media_edge::store::db::{now_ms, Db};
use media_edge::store::requests::{RequestRow, Rollup, BATCH};
use std::time::Instant;

fn row(i: u64, now: i64) -> RequestRow {
    // A deterministic mix: 80 % hits (3 memory : 1 disk), 15 % misses, 5 % errors.
    let r = i % 100;
    let (status, cache, tier) = match r {
        0..=59 => (200, "HIT", "memory"),
        60..=79 => (200, "HIT", "disk"),
        80..=94 => (200, "MISS", ""),
        95..=97 => (404, "", ""),
        _ => (502, "MISS", ""),
    };
    let modes = ["", "image", "image", "video", "frame"];
    RequestRow {
        at: now - (i as i64 * 7919) % 86_000_000,
        route: if modes[(i % 5) as usize].is_empty() {
            "original"
        } else {
            "transform"
        },
        method: "GET".into(),
        path: format!("/samples/img{}.jpg", i % 5000),
        status,
        cache: cache.into(),
        tier,
        origin: ["samples", "s3", "remote"][(i % 3) as usize].into(),
        derivative: if i % 7 == 0 {
            "thumb".into()
        } else {
            String::new()
        },
        source: ["local", "s3", "remote"][(i % 3) as usize].into(),
        mode: modes[(i % 5) as usize].into(),
        bytes: 1000 + (i % 90_000),
        us: ((i * 31) % 400 + if r > 80 { 100 } else { 0 }) * 1000 + i % 997,
        client: format!("10.0.{}.{}", (i / 256) % 256, i % 256),
        error: if status >= 400 {
            "NOT_FOUND".into()
        } else {
            String::new()
        },
    }
}

/// The request side's cost: `Counts::count` from two threads at once (the edge's two), over
/// a realistic spread of groups; ns a request.
fn count_cost(requests: usize) {
    use media_edge::analytics::counts::{Counts, Seen};
    let counts = Counts::default();
    let now = now_ms();
    let origins = ["samples", "s3", "remote"];
    let t = Instant::now();
    std::thread::scope(|s| {
        for th in 0..2 {
            let counts = &counts;
            s.spawn(move || {
                for i in 0..requests / 2 {
                    let hit = i % 10 != 0;
                    counts.count(&Seen {
                        at: now + (i as i64 / 50),
                        route: if i % 3 == 0 { "transform" } else { "original" },
                        status: if i % 50 == 0 { 404 } else { 200 },
                        cache: if hit { "HIT" } else { "MISS" },
                        tier: if hit { "memory" } else { "" },
                        origin: origins[(i + th) % 3],
                        derivative: "",
                        source: "local",
                        mode: if i % 3 == 0 { "image" } else { "" },
                        bytes: 10_240,
                        us: 150 + (i as u64 % 400),
                    });
                }
            });
        }
    });
    // Each thread counted half: the time a request costs the thread that answers it.
    let ns = t.elapsed().as_nanos() as f64 / (requests / 2) as f64;
    let groups = counts.take().hours.len();
    println!("count {requests} requests from 2 threads: {ns:.0} ns a request ({groups} groups)");
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    count_cost(if full { 20_000_000 } else { 200_000 });
    let rows: u64 = std::env::var("MEDIA_EDGE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 20_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    rt.block_on(async {
        let db = Db::open(&url, 4).await.expect("open");
        let now = now_ms();
        let t = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        for i in 0..rows {
            batch.push(row(i, now));
            if batch.len() == BATCH {
                db.insert_requests(&batch).await.expect("insert");
                db.add_rollup(&Rollup::of(&batch)).await.expect("rollup");
                batch.clear();
            }
        }
        db.insert_requests(&batch).await.expect("insert");
        db.add_rollup(&Rollup::of(&batch)).await.expect("rollup");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "insert {rows} rows in batches of {BATCH}: {secs:.1} s ({:.0} rows/s)",
            rows as f64 / secs
        );
        let hour = media_edge::store::requests::HOUR;
        let since = media_edge::store::requests::floor(now, hour) - 23 * hour;
        let time = |label: &str, t: Instant, n: usize| {
            println!(
                "{label:<40} {:>8.1} ms  ({n} result rows)",
                t.elapsed().as_secs_f64() * 1000.0
            )
        };
        for _ in 0..2 {
            let t = Instant::now();
            let g = db.request_groups(since).await.expect("groups");
            time("groups (totals, tiers, breakdowns)", t, g.len());
            let t = Instant::now();
            let l = db.request_latencies(since).await.expect("latencies");
            time("latency histogram (p50/p95/p99)", t, l.len());
            let t = Instant::now();
            let s = db.request_series(since, 24 * 60_000).await.expect("series");
            time("series (60 points)", t, s.len());
            let t = Instant::now();
            let e = db.request_errors(since, 50, false).await.expect("errors");
            time("recent errors (50)", t, e.len());
        }
    });
}
