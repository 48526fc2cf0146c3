//! End-to-end: HTTP/2 — h2c with prior knowledge on a plain listener (`server.h2c`) and h2
//! by ALPN on TLS listeners — behaves as HTTP/1.1 does: cache results, fast hits, ranges,
//! transforms, errors. Driven by the `curl` CLI (`--http2-prior-knowledge`, `--http2`).

use e2e::*;

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_and_http1_share_a_plain_listener() {
    let edge = Edge::start(&samples_config("h2c = true\n")).await;
    let h2 = ["--http2-prior-knowledge"];
    let url = edge.url("/samples/photo.jpg");
    let miss = curl(&h2, &url);
    assert_eq!((miss.version.as_str(), miss.status), ("2", 200));
    assert_eq!(miss.header("x-cache"), "MISS");
    assert_eq!(miss.header("content-type"), "image/jpeg");
    // The pingora-cache hit decodes the entry; the next is answered by the fast path.
    let hit = curl(&h2, &url);
    assert_eq!((hit.version.as_str(), hit.header("x-cache")), ("2", "HIT"));
    let fast_before = counter(
        &metrics_of(&edge).await,
        "media_edge_cache_fast_hits_total ",
    );
    let fast = curl(&h2, &url);
    assert_eq!(
        (fast.version.as_str(), fast.header("x-cache")),
        ("2", "HIT")
    );
    assert_eq!(fast.body, miss.body);
    assert_eq!(
        counter(
            &metrics_of(&edge).await,
            "media_edge_cache_fast_hits_total "
        ),
        fast_before + 1,
        "fast hits over HTTP/2"
    );
    // HTTP/1.1 on the same listener, same cache.
    let (s, h, body) = get(&edge, "/samples/photo.jpg", &[]).await;
    assert_eq!((s, h["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert_eq!(body, miss.body);
    // Ranges on a hit.
    let part = curl(&["--http2-prior-knowledge", "-r", "0-99"], &url);
    assert_eq!((part.version.as_str(), part.status), ("2", 206));
    assert_eq!(part.body, miss.body[..100].to_vec());
    assert!(part.header("content-range").starts_with("bytes 0-99/"));
    // A transform, twice: MISS then HIT, the right size.
    let t = edge.url("/samples/photo.jpg?width=64&format=png");
    let first = curl(&h2, &t);
    assert_eq!(
        (first.status, first.header("content-type")),
        (200, "image/png")
    );
    let img = image::load_from_memory(&first.body).expect("a PNG");
    assert_eq!(img.width(), 64);
    assert_eq!(curl(&h2, &t).header("x-cache"), "HIT");
    // Errors keep their JSON shape.
    let bad = curl(&h2, &edge.url("/samples/photo.jpg?width=99999"));
    assert_eq!(bad.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&bad.body).unwrap();
    assert_eq!(v["error"]["code"], "BAD_REQUEST");
    let missing = curl(&h2, &edge.url("/samples/nope.jpg"));
    assert_eq!(missing.status, 404);
    // A plain HTTP/1.1 curl still gets HTTP/1.1.
    let one = curl(&["--http1.1"], &url);
    assert_eq!(
        (one.version.as_str(), one.header("x-cache")),
        ("1.1", "HIT")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_listeners_offer_h2_and_http11() {
    let (edge, tls_port, cert, _certs) = start_tls_edge("").await;
    let ca = cert.to_string_lossy().to_string();
    let url = format!("https://127.0.0.1:{tls_port}/samples/alpha.png");
    let h2 = curl(&["--http2", "--cacert", &ca], &url);
    assert_eq!((h2.version.as_str(), h2.status), ("2", 200));
    assert_eq!(h2.header("x-cache"), "MISS");
    let h1 = curl(&["--http1.1", "--cacert", &ca], &url);
    assert_eq!((h1.version.as_str(), h1.header("x-cache")), ("1.1", "HIT"));
    assert_eq!(h1.body, h2.body);
    let again = curl(&["--http2", "--cacert", &ca], &url);
    assert_eq!(
        (again.version.as_str(), again.header("x-cache")),
        ("2", "HIT")
    );
    // A range over h2 on TLS.
    let part = curl(&["--http2", "--cacert", &ca, "-r", "10-19"], &url);
    assert_eq!((part.version.as_str(), part.status), ("2", 206));
    assert_eq!(part.body, h2.body[10..20].to_vec());
    // Plain listeners without `server.h2c` speak HTTP/1.1 only.
    let plain = curl(&["--http1.1"], &edge.url("/samples/alpha.png"));
    assert_eq!((plain.version.as_str(), plain.status), ("1.1", 200));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_front_door_pingora_serves_everything() {
    let edge = Edge::start(&samples_config("front_door = false\nh2c = true\n")).await;
    let url = edge.url("/samples/alpha.png");
    let (s, h, first) = get(&edge, "/samples/alpha.png", &[]).await;
    assert_eq!((s, h["x-cache"].to_str().unwrap()), (200, "MISS"));
    for _ in 0..2 {
        let (s, h, body) = get(&edge, "/samples/alpha.png", &[]).await;
        assert_eq!((s, h["x-cache"].to_str().unwrap()), (200, "HIT"));
        assert_eq!(body, first);
    }
    let h2 = curl(&["--http2-prior-knowledge"], &url);
    assert_eq!((h2.version.as_str(), h2.header("x-cache")), ("2", "HIT"));
    let m = metrics_of(&edge).await;
    assert_eq!(
        counter(
            &m,
            "media_edge_front_door_requests_total{outcome=\"answered\"} "
        ),
        0,
        "no front door"
    );
    assert!(
        counter(&m, "media_edge_cache_fast_hits_total ") >= 2,
        "fast hits from request_filter"
    );
}
