//! End-to-end: the transform store and asynchronous jobs, each scenario on the embedded
//! SQLite and on a throwaway PostgreSQL cluster: 202 → SSE progress → complete → 200 from
//! the store (ranges too); identical requests → one job; a failing try retried with backoff,
//! then success; tries exhausted → `failed`; SIGKILL mid-job and a restart → the job
//! completes once; a second node sharing the database and the objects serves the result
//! without transforming; a bust gives a path a new key.

use e2e::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The database a scenario runs on.
enum Db {
    Sqlite,
    Postgres(Postgres),
}

impl Db {
    async fn postgres() -> Db {
        Db::Postgres(Postgres::start().await)
    }

    /// The `database_url` line of `[store]` (empty: the embedded SQLite file).
    fn url_line(&self) -> String {
        match self {
            Db::Sqlite => String::new(),
            Db::Postgres(pg) => format!("database_url = \"{}\"\n", pg.url),
        }
    }
}

const VIDEO: &str = "/vids/clip.mp4?mode=video&width=160";

/// Fast job settings: tries a second apart, a short lease, a quick poll.
fn jobs_section(extra: &str) -> String {
    format!(
        "[jobs]\nworkers = 1\nsync_max_duration = \"4s\"\npoll_interval = \"100ms\"\n\
         lease = \"3s\"\nretry_base = \"1s\"\nretry_max = \"1s\"\n{extra}\n"
    )
}

/// A config with the `vids` origin on `folder` and the given `[store]` lines.
fn config(folder: &Path, store: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{{PORT}}\"]\nthreads = 2\n\
         [store]\n{store}\n{}\
         [[origins]]\nname = \"vids\"\nmatcher = \"^/vids/(.+)$\"\n\
         [[origins.sources]]\nkind = \"local\"\nroot = \"{}\"\n",
        jobs_section(""),
        folder.display()
    )
}

async fn get_json(edge: &Edge, path: &str) -> (u16, Value) {
    let (s, _, b) = get(edge, path, &[]).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Polls `GET /jobs/{id}` until `done` says so (at most `limit`); the last state.
async fn job_until(edge: &Edge, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (s, v) = get_json(edge, &format!("/jobs/{id}")).await;
        assert_eq!(s, 200, "{v}");
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "job never reached the state; last {v}\n{}",
            edge.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["status"] == status
}

/// Asks for `path` and expects the 202 of a job: its id.
async fn queued(edge: &Edge, path: &str) -> String {
    let (s, h, b) = get(edge, path, &[]).await;
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    assert_eq!(s, 202, "{v}\n{}", edge.log());
    assert_eq!(h["retry-after"], "10");
    assert_eq!(h["cache-control"], "no-store");
    let id = v["job_id"].as_str().expect("job_id").to_string();
    assert_eq!(v["status_url"], format!("/jobs/{id}"));
    assert_eq!(v["sse_url"], format!("/sse/job/{id}"));
    assert!(
        matches!(v["status"].as_str(), Some("queued" | "running")),
        "{v}"
    );
    id
}

async fn admin_post(edge: &Edge, path: &str, body: String) -> (u16, Value) {
    let r = client()
        .post(edge.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .body(body)
        .send()
        .await
        .expect("admin call");
    let s = r.status().as_u16();
    let b = r.bytes().await.unwrap_or_default();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// The events of the job's SSE stream until it ends: `(event, data)`.
async fn sse_events(edge: &Edge, id: &str) -> Vec<(String, Value)> {
    let mut r = client()
        .get(edge.url(&format!("/sse/job/{id}")))
        .send()
        .await
        .expect("sse");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, r.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("sse stream failed: {e}"),
            Err(_) => panic!("sse stream did not end: {text}"),
        }
    }
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).ok();
                }
            }
            Some((name?, data?))
        })
        .collect()
}

fn video_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    make_test_video(&dir.path().join("clip.mp4"), 8, "320x240");
    dir
}

fn hv(h: &reqwest::header::HeaderMap, k: &str) -> String {
    h.get(k)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// 202 → the same job for identical requests → SSE until complete → 200 from the store,
/// ranges; a bust gives the path a new key (a new job).
async fn job_completes_and_store_serves(db: &Db) -> Edge {
    let folder = video_folder();
    let edge = Edge::start(&config(folder.path(), &db.url_line())).await;
    let first = queued(&edge, VIDEO).await;
    // Nine more identical requests at once: the same job.
    let more = futures::future::join_all((0..9).map(|_| queued(&edge, VIDEO))).await;
    assert!(more.iter().all(|id| *id == first), "{first} vs {more:?}");

    let events = sse_events(&edge, &first).await;
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "complete", "{events:?}");
    assert_eq!(data["percent"], 100);
    assert!(events[..events.len() - 1]
        .iter()
        .all(|(e, _)| e == "progress"));
    let percents: Vec<i64> = events
        .iter()
        .filter_map(|(_, d)| d["percent"].as_i64())
        .collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");

    let (s, v) = get_json(&edge, &format!("/jobs/{first}")).await;
    assert_eq!(s, 200);
    assert_eq!(v["status"], "complete");
    assert_eq!(v["attempts"], 1);
    let result = v["result_url"].as_str().expect("result_url").to_string();
    assert!(result.starts_with("/vids/clip.mp4?"), "{result}");

    // The next request is served from the store (the 202s were never cached).
    let (s, h, body) = get(&edge, VIDEO, &[]).await;
    assert_eq!(s, 200, "{}", edge.log());
    assert_eq!(hv(&h, "x-store"), "HIT");
    assert_eq!(hv(&h, "content-type"), "video/mp4");
    let out = edge.dir.path().join("out.mp4");
    std::fs::write(&out, &body).unwrap();
    assert_eq!(probe_size(&out).0, 160);
    // The result URL names the same transform.
    let (s, _, again) = get(&edge, &result, &[]).await;
    assert_eq!((s, again.len()), (200, body.len()));
    let (s, h, part) = get(&edge, VIDEO, &[("range", "bytes=100-199")]).await;
    assert_eq!(s, 206);
    assert_eq!(
        hv(&h, "content-range"),
        format!("bytes 100-199/{}", body.len())
    );
    assert_eq!(part, body[100..200]);

    // A bust of the path: a new key, so a new job.
    let (s, v) = admin_post(
        &edge,
        "/admin/cache/bust",
        r#"{"path": "/vids/clip.mp4"}"#.into(),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = get(&edge, VIDEO, &[]).await;
    assert_eq!(s, 202);
    edge
}

#[tokio::test]
async fn sqlite_job_completes_and_store_serves() {
    let edge = job_completes_and_store_serves(&Db::Sqlite).await;
    assert!(edge.dir.path().join("data/media-edge.db").is_file());
}

#[tokio::test]
async fn postgres_job_completes_and_a_second_node_serves_it_from_the_store() {
    let db = Db::postgres().await;
    job_completes_and_store_serves(&db).await;
    // Two nodes, each its own (cold) cache, one database and one objects folder: the second
    // serves the first one's result without transforming.
    let folder = video_folder();
    let objects = tempfile::tempdir().unwrap();
    let store = format!(
        "{}objects = {{ kind = \"local\", root = \"{}\" }}\n",
        db.url_line(),
        objects.path().display()
    );
    let path = "/vids/clip.mp4?mode=video&width=120";
    let a = Edge::start(&config(folder.path(), &store)).await;
    let id = queued(&a, path).await;
    job_until(&a, &id, Duration::from_secs(120), is("complete")).await;
    let b = Edge::start(&config(folder.path(), &store)).await;
    let (s, h, body) = get(&b, path, &[]).await;
    assert_eq!(s, 200, "{}", b.log());
    assert_eq!(hv(&h, "x-store"), "HIT");
    assert!(body.len() > 1000);
    assert!(!b.log().contains("job started"), "{}", b.log());
}

/// A try that fails (the results bucket cannot be written: a file stands where its folder
/// would be) is retried after the backoff and then
/// succeeds; with the bucket gone again a job spends its tries and ends `failed` with the
/// reason; an admin retry runs it again.
async fn retries(db: Db) {
    let s3 = S3Server::start("media").await;
    let dir = tempfile::tempdir().unwrap();
    make_test_video(&dir.path().join("clip.mp4"), 8, "320x240");
    s3.put(
        "media",
        "clip.mp4",
        &std::fs::read(dir.path().join("clip.mp4")).unwrap(),
    );
    let store = format!(
        "{}objects = {{ kind = \"s3\", bucket = \"results\", region = \"us-east-1\", \
         endpoint = \"{}\", path_style = true, access_key_env = \"TEST_S3_AK\", \
         secret_key_env = \"TEST_S3_SK\" }}\n",
        db.url_line(),
        s3.endpoint
    );
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:{{PORT}}\"]\nthreads = 2\n[store]\n{store}\n{}{}",
        jobs_section("max_attempts = 3"),
        s3.origin("media", "")
    );
    let results = s3.root.path().join("results");
    std::fs::write(&results, b"not a bucket").unwrap();
    let edge = Edge::start_with_env(&cfg, S3_ENV).await;
    let a = queued(&edge, "/s3/clip.mp4?mode=video&width=160").await;
    let failed_once = |v: &Value| v["status"] == "queued" && v["attempts"] == 1;
    let v = job_until(&edge, &a, Duration::from_secs(120), failed_once).await;
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("keeping the result"),
        "{v}"
    );
    assert!(v["next_try_at"].as_i64().is_some(), "{v}");
    std::fs::remove_file(&results).unwrap();
    std::fs::create_dir_all(&results).unwrap();
    let v = job_until(&edge, &a, Duration::from_secs(120), is("complete")).await;
    assert!(v["attempts"].as_i64().unwrap() >= 2, "{v}");
    let (s, h, _) = get(&edge, "/s3/clip.mp4?mode=video&width=160", &[]).await;
    assert_eq!((s, hv(&h, "x-store").as_str()), (200, "HIT"));

    // The bucket gone: every try fails, then `failed` for good.
    std::fs::remove_dir_all(&results).unwrap();
    std::fs::write(&results, b"not a bucket").unwrap();
    let b = queued(&edge, "/s3/clip.mp4?mode=video&width=120").await;
    let v = job_until(&edge, &b, Duration::from_secs(120), is("failed")).await;
    assert_eq!(v["attempts"], 3, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("keeping the result"),
        "{v}"
    );
    let r = client()
        .get(edge.url("/admin/jobs?status=failed&q=clip"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(list["jobs"][0]["job_id"], b.as_str(), "{list}");
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1), "{list}");
    // An admin retry once the bucket is back.
    std::fs::remove_file(&results).unwrap();
    std::fs::create_dir_all(&results).unwrap();
    let (s, v) = admin_post(
        &edge,
        "/admin/jobs/retry",
        format!("{{\"job_id\": \"{b}\"}}"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    job_until(&edge, &b, Duration::from_secs(120), is("complete")).await;
}

#[tokio::test]
async fn sqlite_failed_tries_retry_then_dead_letter() {
    retries(Db::Sqlite).await;
}

#[tokio::test]
async fn postgres_failed_tries_retry_then_dead_letter() {
    retries(Db::postgres().await).await;
}

/// SIGKILL while the job runs (progress seen), restart: the lease runs out, the job is
/// taken over and completes, once.
async fn survives_kill(db: Db) {
    let folder = tempfile::tempdir().unwrap();
    make_test_video(&folder.path().join("long.mp4"), 60, "640x360");
    let mut edge = Edge::start(&config(folder.path(), &db.url_line())).await;
    let path = "/vids/long.mp4?mode=video&width=480";
    let id = queued(&edge, path).await;
    let running = |v: &Value| v["status"] == "running" && v["percent"].as_i64() > Some(0);
    let v = job_until(&edge, &id, Duration::from_secs(120), running).await;
    assert!(v["percent"].as_i64().unwrap() < 100, "{v}");
    edge.kill();
    edge.start_again().await;
    let v = job_until(&edge, &id, Duration::from_secs(180), is("complete")).await;
    assert_eq!(v["attempts"], 2, "{v}");
    let m = metrics_of(&edge).await;
    assert!(
        m.contains("media_edge_jobs_total{event=\"complete\"} 1"),
        "{m}"
    );
    let (s, h, body) = get(&edge, path, &[]).await;
    assert_eq!((s, hv(&h, "x-store").as_str()), (200, "HIT"));
    let out = edge.dir.path().join("long-out.mp4");
    std::fs::write(&out, &body).unwrap();
    assert_eq!(probe_size(&out).0, 480);
}

#[tokio::test]
async fn sqlite_job_survives_sigkill() {
    survives_kill(Db::Sqlite).await;
}

#[tokio::test]
async fn postgres_job_survives_sigkill() {
    survives_kill(Db::postgres().await).await;
}

/// Image transforms are kept too: a restart with an emptied cache serves from the store.
#[tokio::test]
async fn image_transforms_are_kept_and_survive_a_cold_cache() {
    let mut edge = Edge::start(&samples_config("")).await;
    let path = "/samples/photo.jpg?width=200&format=png";
    let (s, h, first) = get(&edge, path, &[]).await;
    assert_eq!(s, 200, "{}", edge.log());
    assert_eq!(hv(&h, "x-store"), "MISS");
    // The write is in the background: wait until it is counted (object and row written).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !metrics_of(&edge)
        .await
        .contains("media_edge_transform_store_total{result=\"write\"} 1")
    {
        assert!(Instant::now() < deadline, "never kept:\n{}", edge.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    edge.stop();
    std::fs::remove_dir_all(edge.dir.path().join("data/cache")).unwrap();
    edge.start_again().await;
    let (s, h, body) = get(&edge, path, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(hv(&h, "x-store"), "HIT", "{}", edge.log());
    assert_eq!(hv(&h, "x-cache"), "MISS");
    assert_eq!(body, first);
}

/// HLS of a source longer than `sync_slow_codec_max_duration` is a job; once complete the
/// playlist comes from the store and the segments from the package.
#[tokio::test]
async fn long_hls_is_packaged_by_a_job() {
    let edge = Edge::start(&samples_config(&jobs_section(""))).await;
    let id = queued(&edge, "/samples/clip.mp4?mode=hls").await;
    let v = job_until(&edge, &id, Duration::from_secs(120), is("complete")).await;
    assert!(v["reason"].as_str().unwrap().contains("HLS"), "{v}");
    let (s, h, body) = get(&edge, "/samples/clip.mp4?mode=hls", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hv(&h, "x-store"), "HIT");
    assert!(String::from_utf8_lossy(&body).contains("#EXT-X-ENDLIST"));
    let (s, h, seg) = get(&edge, "/samples/clip.mp4?mode=hls&segment=0", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&seg));
    assert_eq!(hv(&h, "content-type"), "video/mp2t");
}
