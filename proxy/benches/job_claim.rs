//! Job claim latency with 1,000 queued jobs, on SQLite (a temp file, WAL) and, when
//! `MEDIA_EDGE_BENCH_PG` holds a `postgres://` URL, on PostgreSQL: the time of one
//! `Db::claim` (one `UPDATE … WHERE id = (SELECT …)` statement: atomic under SQLite's write
//! lock, with `FOR UPDATE SKIP LOCKED` on Postgres)
//! while the queue holds 1,000 jobs (each claimed job is completed and replaced, untimed).
//! One claimer, then four claiming at once (their claims never return the same job: the
//! bench counts duplicates and fails on any).
//!
//! `cargo bench -p media-edge --bench job_claim` (`scripts/bench/jobs.sh` also starts a
//! throwaway PostgreSQL cluster for the second half). `MEDIA_EDGE_BENCH_CLAIMS` sets the
//! timed claims per claimer (default 2,000).

use media_edge::store::db::Db;
use media_edge::store::jobs::NewJob;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const QUEUED: usize = 1000;

async fn enqueue(db: &Db, n: usize) {
    let key = format!("bench-{}-{n}", media_edge::store::jobs::new_id());
    let job = NewJob {
        dedup_key: &key,
        origin: "bench",
        path: "/bench/clip.mp4",
        query: "mode=video&width=640",
        reason: "bench",
        max_attempts: 3,
    };
    db.enqueue(&job).await.expect("enqueue");
}

/// Claims (timed), completes and replaces (untimed) `claims` jobs; the claim times.
async fn claimer(
    db: Db,
    owner: String,
    claims: usize,
    seen: Arc<parking_lot::Mutex<HashSet<String>>>,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(claims);
    for i in 0..claims {
        let t = Instant::now();
        let job = db.claim(&owner, 60_000).await.expect("claim");
        times.push(t.elapsed());
        let job = job.expect("the queue is never empty");
        assert!(
            seen.lock().insert(job.id.clone()),
            "a job was claimed twice"
        );
        db.complete(&job.id, &owner, "k").await.expect("complete");
        enqueue(&db, i).await;
    }
    times
}

fn report(label: &str, mut times: Vec<Duration>, wall: Duration) {
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{label:<28} claims {:>6}  mean {:>8.1} µs  p50 {:>8.1} µs  p99 {:>8.1} µs  {:>8.0} claims/s",
        times.len(),
        mean.as_secs_f64() * 1e6,
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        times.len() as f64 / wall.as_secs_f64()
    );
}

async fn run(label: &str, url: &str, claims: usize) {
    let db = Db::open(url, 8).await.expect("open the database");
    sqlx::query("DELETE FROM jobs")
        .execute(&db.pool)
        .await
        .expect("empty the queue");
    for n in 0..QUEUED {
        enqueue(&db, n).await;
    }
    for claimers in [1usize, 4] {
        let seen = Arc::new(parking_lot::Mutex::new(HashSet::new()));
        let t = Instant::now();
        let tasks: Vec<_> = (0..claimers)
            .map(|c| {
                tokio::spawn(claimer(
                    db.clone(),
                    format!("bench-{c}"),
                    claims / claimers,
                    seen.clone(),
                ))
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("claimer"));
        }
        report(&format!("{label}, {claimers} claimer(s)"), all, t.elapsed());
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: a short run.
    let full = std::env::args().any(|a| a == "--bench");
    let claims = std::env::var("MEDIA_EDGE_BENCH_CLAIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 2000 } else { 40 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    println!("job claim latency, {QUEUED} jobs queued");
    rt.block_on(run("sqlite", &sqlite, claims));
    match std::env::var("MEDIA_EDGE_BENCH_PG") {
        Ok(url) if !url.is_empty() => rt.block_on(run("postgres", &url, claims)),
        _ => println!("postgres: skipped (set MEDIA_EDGE_BENCH_PG=postgres://…)"),
    }
}
