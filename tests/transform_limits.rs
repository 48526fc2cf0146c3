//! End-to-end: the transform pool's bounds under hostile load (issue #15, items 4 and 5).
//! One client's burst never holds every worker; a transform the edge gave up on stops and
//! frees its worker (a counter moves, no timing); the memory budget refuses what alone
//! needs more; an origin can forbid enlargement; a short video at a huge work size becomes
//! a job. Nothing here times anything: each check waits on state with a deadline.

use e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A 1280×720 h264 clip of `secs` seconds, slow to re-encode in vp9.
fn heavy_clip(dir: &Path, secs: u32) {
    std::fs::create_dir_all(dir).unwrap();
    make_test_video(&dir.join("clip.mp4"), secs, "1280x720");
}

fn png(dir: &Path, name: &str, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, 90])
    });
    img.save(dir.join(name)).unwrap();
}

/// The config: `extra` sections, and two origins on the folder `media` (made before the node
/// starts: a local source must exist).
fn config(media: &Path, extra: &str) -> String {
    let root = media.display();
    format!(
        "[server]\nlisten = [\"127.0.0.1:{{PORT}}\"]\nthreads = 2\n{extra}\n\
         [[origins]]\nname = \"media\"\nmatcher = \"^/lib/(.+)$\"\n\
         [[origins.sources]]\nkind = \"local\"\nroot = \"{root}\"\n\
         [[origins]]\nname = \"strict\"\nmatcher = \"^/strict/(.+)$\"\nmax_upscale_area = 1.0\n\
         [[origins.sources]]\nkind = \"local\"\nroot = \"{root}\"\n"
    )
}

/// The value of an unlabelled (or fully labelled) series on `/metrics`.
fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `/metrics` until `cond` holds on it (30 s at most): the last page.
async fn metrics_until(edge: &Edge, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics_of(edge).await;
        if cond(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "never: {what}\n{m}\n{}",
            edge.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RUNNING: &str = "media_edge_transforms_running";
const WAITING: &str = "media_edge_transforms_waiting";
const CANCELLED: &str = "media_edge_transforms_stopped_total{reason=\"cancelled\"}";

/// The edge gives up on a slow transform (its origin read timeout): the origin service's
/// request goes away, the encoder sees it at its next frame, the worker is free again and
/// the cancelled counter moves. Without cancellation the encode would run on for its whole
/// length, holding the worker, and the counter would stay at 0.
#[tokio::test(flavor = "multi_thread")]
async fn a_transform_the_edge_gave_up_on_stops_and_frees_its_worker() {
    let extra = "origin_timeout = \"2s\"\n\
                 [jobs]\nsync_max_duration = \"600s\"\nsync_slow_codec_max_duration = \"600s\"\n\
                 sync_max_frame_pixels = 2000000000\n";
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path();
    heavy_clip(media, 30);
    let edge = Edge::start(&config(media, extra)).await;
    let (s, _, body) = get(&edge, "/lib/clip.mp4?mode=video&codec=vp9&width=640", &[]).await;
    assert_eq!(s, 504, "{}", String::from_utf8_lossy(&body));
    let m = metrics_until(&edge, "the cancelled encode freed its worker", |m| {
        series(m, CANCELLED) >= 1.0 && series(m, RUNNING) == 0.0
    })
    .await;
    assert_eq!(series(&m, WAITING), 0.0);
    // The node is whole: the next transform gets a worker and answers.
    png(media, "small.png", 64, 64);
    let (s, _, _) = get(&edge, "/lib/small.png?width=32&format=png", &[]).await;
    assert_eq!(s, 200);
    // A short clip at 30 × 1280×720 × 4 (vp9) frame pixels a second is over the 2 G of
    // synchronous work: a job (202), not a request that holds a worker for a minute.
    let (s, _, body) = get(&edge, "/lib/clip.mp4?mode=video&codec=vp9", &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(s, 202, "{v}");
    assert!(v.to_string().contains("sync_max_frame_pixels"), "{v}");
}

/// Two workers: one client's two slow transforms take one of them (the second waits although
/// the other worker is free), and another client's request is answered at once on the free
/// worker while the first client's are still in flight.
#[tokio::test(flavor = "multi_thread")]
async fn one_client_cannot_hold_every_worker() {
    let extra = "origin_timeout = \"15s\"\n\
                 [transform]\nworkers = 2\nmemory_budget = \"64MiB\"\n\
                 [security]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
                 [jobs]\nsync_max_duration = \"600s\"\nsync_slow_codec_max_duration = \"600s\"\n\
                 sync_max_frame_pixels = 100000000000\n";
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path();
    heavy_clip(media, 30);
    png(media, "small.png", 100, 100);
    let edge = Edge::start(&config(media, extra)).await;
    let attacker = [("x-forwarded-for", "203.0.113.9")];
    let slow = |w: u32| {
        let url = edge.url(&format!("/lib/clip.mp4?mode=video&codec=vp9&width={w}"));
        tokio::spawn(async move {
            client()
                .get(url)
                .header(attacker[0].0, attacker[0].1)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let (a1, a2) = (slow(640), slow(600));
    metrics_until(
        &edge,
        "one running and one waiting for the same client",
        |m| series(m, RUNNING) == 1.0 && series(m, WAITING) == 1.0,
    )
    .await;
    let user = [("x-forwarded-for", "198.51.100.7")];
    let (s, _, _) = get(&edge, "/lib/small.png?width=50&format=png", &user).await;
    assert_eq!(s, 200);
    assert!(
        !a1.is_finished() && !a2.is_finished(),
        "the other client was answered while the burst was still in flight"
    );
    // The burst ends — done, or given up by the edge at 15 s on a slower machine — and
    // leaves the pool empty.
    for a in [a1, a2] {
        let s = a.await.unwrap().unwrap();
        assert!(s == 200 || s == 504, "a burst request answered {s}");
    }
    metrics_until(&edge, "the pool is empty", |m| {
        series(m, RUNNING) == 0.0 && series(m, WAITING) == 0.0
    })
    .await;

    // The memory budget: a 3000×2000 PNG decodes into ~42 MB; as a small output it fits the
    // 64 MiB budget, at nearly full size its output rasters do not (413, and the key named).
    png(media, "big.png", 3000, 2000);
    let (s, h, body) = get(&edge, "/lib/big.png?width=100&format=png", &user).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["x-resolved-width"], "100");
    let (s, h, body) = get(&edge, "/lib/big.png?width=2900&format=png", &user).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(s, 413, "{text}");
    assert!(text.contains("transform.memory_budget"), "{text}");
    assert_eq!(h["cache-control"], "no-store");
    let m = metrics_of(&edge).await;
    assert_eq!(
        series(&m, "media_edge_transform_memory_reserved_bytes"),
        0.0
    );

    // An origin may forbid enlargement: the same 100 px image to 200 px is 413 there and
    // fine on the origin with the node's default (16× the area).
    let (s, h, _) = get(&edge, "/lib/small.png?width=200&format=png", &user).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-resolved-width"], "200");
    let (s, _, body) = get(&edge, "/strict/small.png?width=200&format=png", &user).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(s, 413, "{text}");
    assert!(text.contains("max_upscale_area"), "{text}");
    let (s, _, _) = get(&edge, "/strict/small.png?width=80&format=png", &user).await;
    assert_eq!(s, 200);
}
