//! End-to-end: the edge cache in front of local, remote and S3 sources.

use e2e::*;
use std::time::{Duration, Instant};

fn config(origins: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{{PORT}}"]
threads = 2
# Restarts in these tests wait for the drain.
grace_period = "1s"
[cache]
memory_bytes = "64MiB"
memory_max_object = "64KiB"
disk_bytes = "1GiB"
stale_while_revalidate = 0
stale_if_error = 0
{origins}
"#
    )
}

fn remote_origin(name: &str, matcher: &str, base: &str, ttl: &str) -> String {
    format!(
        r#"
[[origins]]
name = "{name}"
matcher = "{matcher}"
ttl = {ttl}
[[origins.sources]]
kind = "remote"
url = "{base}"
path = "$1"
timeout = "10s"
"#
    )
}

fn h<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Asks for `url` until the answer is no longer a fresh `HIT` (at most 20 s), calling
/// `while_fresh` after each hit: the first answer once the entry has expired.
async fn get_until_expired(url: &str, while_fresh: impl Fn()) -> (reqwest::Response, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (r, body) = get(url, &[]).await;
        if h(&r, "x-cache") != "HIT" || Instant::now() > deadline {
            return (r, body);
        }
        while_fresh();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (reqwest::Response, Vec<u8>) {
    let mut rb = client().get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("request");
    let hdrs = r.headers().clone();
    let status = r.status();
    let body = r.bytes().await.expect("body").to_vec();
    // Rebuild a response-like pair: keep headers and status, return body separately.
    let mut b = http::Response::builder().status(status);
    for (k, v) in hdrs.iter() {
        b = b.header(k, v);
    }
    (
        reqwest::Response::from(b.body(Vec::<u8>::new()).unwrap()),
        body,
    )
}

async fn admin_purge(edge: &Edge, body: &str, token: Option<&str>) -> reqwest::Response {
    let mut rb = client()
        .post(edge.url("/admin/cache/purge"))
        .body(body.to_string());
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn miss_then_hit_with_headers() {
    let edge = Edge::start(&config(&samples_origin())).await;
    let want = std::fs::read(workspace().join("conf/samples/photo.jpg")).unwrap();
    let url = edge.url("/samples/photo.jpg");
    let (r, body) = get(&url, &[("x-request-id", "req-123")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-cache"), "MISS");
    assert_eq!(h(&r, "x-cache-key"), "orig:/samples/photo.jpg");
    assert_eq!(h(&r, "x-request-id"), "req-123");
    assert_eq!(h(&r, "content-type"), "image/jpeg");
    assert_eq!(h(&r, "accept-ranges"), "bytes");
    assert!(h(&r, "via").contains("media-edge"));
    assert!(!h(&r, "etag").is_empty());
    assert!(
        r.headers().get("cache-tag").is_none(),
        "Cache-Tag is stripped"
    );
    assert_eq!(body, want);
    let (r, body) = get(&url, &[]).await;
    assert_eq!(h(&r, "x-cache"), "HIT");
    assert!(!h(&r, "age").is_empty());
    assert_eq!(h(&r, "x-request-id").len(), 32, "generated request id");
    assert_eq!(body, want);
    // HEAD on a hit: headers, no body.
    let r = client().head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "content-length"), want.len().to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_cold_requests_fetch_once() {
    let origin = CountingOrigin::start().await;
    let body = pattern(200_000);
    origin.route(
        "/slow.bin",
        Canned::ok(body.clone()).delay(Duration::from_millis(700)),
    );
    let edge = Edge::start(&config(&remote_origin(
        "r",
        "^/r/(.+)$",
        &origin.base(),
        "{ ok = \"1h\" }",
    )))
    .await;
    let url = edge.url("/r/slow.bin");
    let reqs = (0..50).map(|_| {
        let url = url.clone();
        async move { get(&url, &[]).await }
    });
    let results = futures::future::join_all(reqs).await;
    for (r, b) in &results {
        assert_eq!(r.status(), 200);
        assert_eq!(b, &body);
    }
    assert_eq!(origin.hits("/slow.bin"), 1, "exactly one source fetch");
}

#[tokio::test(flavor = "multi_thread")]
async fn sources_fall_through_in_order() {
    let origin = CountingOrigin::start().await;
    origin.route("/b.txt", Canned::status(500, "boom"));
    origin.route("/c.txt", Canned::ok("late").delay(Duration::from_secs(3)));
    let folder = tempfile::tempdir().unwrap();
    for n in ["a.txt", "b.txt", "c.txt"] {
        std::fs::write(folder.path().join(n), format!("local {n}")).unwrap();
    }
    let origins = format!(
        r#"
[[origins]]
name = "multi"
matcher = "^/m/(.+)$"
[[origins.sources]]
kind = "remote"
url = "{}"
timeout = "1s"
[[origins.sources]]
kind = "local"
root = "{}"
"#,
        origin.base(),
        folder.path().display()
    );
    let edge = Edge::start(&config(&origins)).await;
    for (name, why) in [("a.txt", "404"), ("b.txt", "500"), ("c.txt", "timeout")] {
        let (r, body) = get(&edge.url(&format!("/m/{name}")), &[]).await;
        assert_eq!(r.status(), 200, "{why}");
        assert_eq!(h(&r, "x-source-type"), "local", "{why}");
        assert_eq!(body, format!("local {name}").as_bytes(), "{why}");
    }
    let (r, body) = get(&edge.url("/m/none.txt"), &[]).await;
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "NOT_FOUND");
    let (r, body) = get(&edge.url("/elsewhere/x"), &[]).await;
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "NO_MATCHING_ORIGIN");
}

#[tokio::test(flavor = "multi_thread")]
async fn ttls_by_status_class_and_cache_control() {
    let origin = CountingOrigin::start().await;
    origin.route("/ok", Canned::ok("fine"));
    origin.route("/err", Canned::status(500, "bad"));
    origin.route("/gone", Canned::status(403, "forbidden"));
    origin.route(
        "/nostore",
        Canned::ok("x").header("cache-control", "no-store"),
    );
    origin.route(
        "/private",
        Canned::ok("x").header("cache-control", "private, max-age=60"),
    );
    origin.route(
        "/long",
        Canned::ok("x").header("cache-control", "max-age=600"),
    );
    let ttl = r#"{ ok = "3s", redirects = "1m", client_error = "1m", server_error = 0 }"#;
    let edge = Edge::start(&config(&remote_origin(
        "r",
        "^/r(/.+)$",
        &origin.base(),
        ttl,
    )))
    .await;
    for p in ["/ok", "/err", "/gone", "/nostore", "/private", "/long"] {
        get(&edge.url(&format!("/r{p}")), &[]).await;
        get(&edge.url(&format!("/r{p}")), &[]).await;
    }
    assert_eq!(origin.hits("/ok"), 1, "2xx cached for ttl.ok");
    assert_eq!(origin.hits("/gone"), 1, "4xx cached for ttl.client_error");
    assert_eq!(origin.hits("/err"), 2, "5xx not cached (ttl 0)");
    assert_eq!(origin.hits("/nostore"), 2, "no-store honoured");
    assert_eq!(origin.hits("/private"), 2, "private honoured");
    assert_eq!(origin.hits("/long"), 1);
    let (r, _) = get(&edge.url("/r/err"), &[]).await;
    assert_eq!(r.status(), 502, "a 5xx source answer is an origin error");
    // Fresh for ttl.ok, then refetched: ask until the origin sees the second fetch.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while origin.hits("/ok") < 2 && Instant::now() < deadline {
        let (r, _) = get(&edge.url("/r/ok"), &[]).await;
        last = h(&r, "x-cache").to_string();
        if origin.hits("/ok") < 2 {
            assert_eq!(last, "HIT", "fresh until ttl.ok has passed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(origin.hits("/ok"), 2, "refetched after ttl.ok");
    assert_ne!(last, "HIT");
    let (r, _) = get(&edge.url("/r/long"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "HIT", "max-age beats the class ttl");
}

fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("boundary")
        .trim()
        .to_string();
    let text = body.to_vec();
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut pos = 0;
    while let Some(i) = find(&text[pos..], delim.as_bytes()) {
        let start = pos + i + delim.len();
        if text[start..].starts_with(b"--") {
            break;
        }
        let head_end = find(&text[start..], b"\r\n\r\n").expect("part head") + start;
        let head = String::from_utf8_lossy(&text[start..head_end]).to_string();
        let range = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-range: ")
                    .map(str::to_string)
            })
            .expect("part content-range");
        let data_start = head_end + 4;
        let next = find(&text[data_start..], delim.as_bytes()).expect("next delim") + data_start;
        let data = text[data_start..next - 2].to_vec();
        parts.push((range, data));
        pos = next;
    }
    parts
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_on_miss_and_hit() {
    let folder = tempfile::tempdir().unwrap();
    let data = pattern(100_000);
    for n in ["a.bin", "b.bin", "c.bin"] {
        std::fs::write(folder.path().join(n), &data).unwrap();
    }
    let origins = format!(
        "[[origins]]\nname = \"f\"\nmatcher = \"^/f/(.+)$\"\n[[origins.sources]]\nkind = \"local\"\nroot = \"{}\"\n",
        folder.path().display()
    );
    let edge = Edge::start(&config(&origins)).await;

    // Single range on a miss: answered from the source's range.
    let (r, body) = get(&edge.url("/f/a.bin"), &[("range", "bytes=100-199")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(h(&r, "content-range"), "bytes 100-199/100000");
    assert_eq!(body, &data[100..200]);
    // The whole object is filled in the background; then ranges are served from the cache.
    let mut filled = false;
    for _ in 0..100 {
        let (r, _) = get(&edge.url("/f/a.bin"), &[("range", "bytes=0-0")]).await;
        if h(&r, "x-cache") == "HIT" {
            filled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(filled, "background fill made the object a hit");
    let cases: &[(&str, usize, usize)] = &[
        ("bytes=100-199", 100, 199),
        ("bytes=-500", 99_500, 99_999),
        ("bytes=99000-", 99_000, 99_999),
    ];
    for (range, s, e) in cases {
        let (r, body) = get(&edge.url("/f/a.bin"), &[("range", range)]).await;
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(h(&r, "x-cache"), "HIT", "{range}");
        assert_eq!(
            h(&r, "content-range"),
            format!("bytes {s}-{e}/100000"),
            "{range}"
        );
        assert_eq!(body, &data[*s..=*e], "{range}");
    }
    // Multi-range on a hit.
    let (r, body) = get(&edge.url("/f/a.bin"), &[("range", "bytes=0-9,50-59")]).await;
    assert_eq!(r.status(), 206);
    assert!(h(&r, "content-type").starts_with("multipart/byteranges"));
    let parts = multipart_parts(h(&r, "content-type"), &body);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].0, "bytes 0-9/100000");
    assert_eq!(parts[0].1, &data[0..10]);
    assert_eq!(parts[1].1, &data[50..60]);
    // Unsatisfiable on a hit.
    let (r, _) = get(&edge.url("/f/a.bin"), &[("range", "bytes=200000-")]).await;
    assert_eq!(r.status(), 416);
    assert_eq!(h(&r, "content-range"), "bytes */100000");
    // Multi-range on a miss: fetched whole, cached, sliced.
    let (r, body) = get(&edge.url("/f/b.bin"), &[("range", "bytes=0-9,50-59")]).await;
    assert_eq!(r.status(), 206);
    let parts = multipart_parts(h(&r, "content-type"), &body);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].0, "bytes 50-59/100000");
    assert_eq!(parts[1].1, &data[50..60]);
    // Unsatisfiable and open ranges on a miss.
    let (r, body) = get(&edge.url("/f/c.bin"), &[("range", "bytes=200000-")]).await;
    assert_eq!(r.status(), 416);
    assert_eq!(h(&r, "content-range"), "bytes */100000");
    assert!(String::from_utf8_lossy(&body).contains("RANGE_NOT_SATISFIABLE"));
    let (r, body) = get(&edge.url("/f/c.bin"), &[("range", "bytes=99990-")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(body, &data[99_990..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn ranged_miss_is_passed_to_the_source() {
    let origin = CountingOrigin::start().await;
    let data = pattern(50_000);
    origin.route("/v.bin", Canned::ok(data.clone()).header("etag", "\"v1\""));
    let edge = edge_for(&origin).await;
    let (r, body) = get(&edge.url("/r/v.bin"), &[("range", "bytes=1000-1999")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(body, &data[1000..2000]);
    let seen = origin.seen.lock().unwrap().ranges.clone();
    assert!(
        seen.contains(&Some("bytes=1000-1999".to_string())),
        "range forwarded: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_requests_on_hits() {
    let edge = Edge::start(&config(&samples_origin())).await;
    let url = edge.url("/samples/alpha.png");
    let (r, _) = get(&url, &[]).await;
    let etag = h(&r, "etag").to_string();
    let lm = h(&r, "last-modified").to_string();
    get(&url, &[]).await;
    let (r, body) = get(&url, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), 304);
    assert!(body.is_empty());
    let (r, _) = get(&url, &[("if-modified-since", &lm)]).await;
    assert_eq!(r.status(), 304);
    let (r, body) = get(&url, &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(r.status(), 200);
    assert!(!body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_serves_when_the_origin_is_down() {
    let mut origin = CountingOrigin::start().await;
    origin.route(
        "/s",
        Canned::ok("still here").header("cache-control", "max-age=1, stale-if-error=60"),
    );
    let edge = edge_for(&origin).await;
    let (r, _) = get(&edge.url("/r/s"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "MISS");
    origin.stop();
    // Fresh for a second (HIT), then expired with the origin down: served stale.
    let (r, body) = get_until_expired(&edge.url("/r/s"), || {}).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-cache"), "STALE");
    assert_eq!(body, b"still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_while_revalidate_answers_at_once_and_refreshes() {
    let origin = CountingOrigin::start().await;
    origin.route(
        "/w",
        Canned::ok("fresh").header("cache-control", "max-age=1, stale-while-revalidate=30"),
    );
    let edge = edge_for(&origin).await;
    get(&edge.url("/r/w"), &[]).await;
    // The refreshed copy stays fresh long enough that a slow machine still sees it as a HIT.
    origin.route(
        "/w",
        Canned::ok("refreshed").header("cache-control", "max-age=600"),
    );
    // Fresh for a second (HIT, no revalidation), then stale: answered at once.
    let (r, body) = get_until_expired(&edge.url("/r/w"), || {
        assert_eq!(origin.hits("/w"), 1, "no refresh while fresh")
    })
    .await;
    assert_eq!(h(&r, "x-cache"), "STALE");
    assert_eq!(body, b"fresh", "the stale copy is answered at once");
    let deadline = Instant::now() + Duration::from_secs(20);
    while origin.hits("/w") < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(origin.hits("/w"), 2, "revalidated in the background");
    // The origin has answered; the refreshed object lands in the cache shortly after.
    let mut last = (String::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (r, body) = get(&edge.url("/r/w"), &[]).await;
        last = (h(&r, "x-cache").to_string(), body.to_vec());
        if last.0 == "HIT" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, "HIT");
    assert_eq!(last.1, b"refreshed", "the background refresh was stored");
    assert_eq!(origin.hits("/w"), 2, "one background refresh only");
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_keeps_variants_apart() {
    let origin = CountingOrigin::start().await;
    origin.route(
        "/v",
        Canned::ok("v")
            .header("vary", "Accept-Language")
            .header("cache-control", "max-age=60"),
    );
    let edge = edge_for(&origin).await;
    let u = edge.url("/r/v");
    let (r, _) = get(&u, &[("accept-language", "en")]).await;
    assert_eq!(h(&r, "x-cache"), "MISS");
    let (r, _) = get(&u, &[("accept-language", "en")]).await;
    assert_eq!(h(&r, "x-cache"), "HIT");
    let (r, _) = get(&u, &[("accept-language", "fr")]).await;
    assert_eq!(h(&r, "x-cache"), "MISS");
    let (r, _) = get(&u, &[("accept-language", "fr")]).await;
    assert_eq!(h(&r, "x-cache"), "HIT");
    assert_eq!(origin.hits("/v"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_tag_key_and_prefix_survives_restart() {
    let origin = CountingOrigin::start().await;
    let cc = "max-age=3600";
    origin.route(
        "/p/a",
        Canned::ok("a")
            .header("cache-control", cc)
            .header("cache-tag", "team-a,shared"),
    );
    origin.route(
        "/p/b",
        Canned::ok("b")
            .header("cache-control", cc)
            .header("cache-tag", "team-b"),
    );
    origin.route("/q/c", Canned::ok("c").header("cache-control", cc));
    origin.route(
        "/q/d",
        Canned::ok("d")
            .header("cache-control", cc)
            .header("cache-tag", "later"),
    );
    let mut edge = edge_for(&origin).await;
    for p in ["/p/a", "/p/b", "/q/c", "/q/d"] {
        get(&edge.url(&format!("/r{p}")), &[]).await;
    }
    // Auth.
    assert_eq!(
        admin_purge(&edge, r#"{"tags":["team-a"]}"#, None)
            .await
            .status(),
        401
    );
    assert_eq!(
        admin_purge(&edge, r#"{"tags":["team-a"]}"#, Some("wrong"))
            .await
            .status(),
        403
    );
    let bad = admin_purge(&edge, r#"{"colour":["x"]}"#, Some(ADMIN_TOKEN)).await;
    assert_eq!(bad.status(), 400);
    // By tag.
    assert_eq!(
        admin_purge(&edge, r#"{"tags":["team-a"]}"#, Some(ADMIN_TOKEN))
            .await
            .status(),
        200
    );
    let (r, _) = get(&edge.url("/r/p/a"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "MISS");
    let (r, _) = get(&edge.url("/r/p/b"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "HIT");
    // By key (a URL path or an X-Cache-Key).
    assert_eq!(
        admin_purge(&edge, r#"{"keys":["/r/p/b"]}"#, Some(ADMIN_TOKEN))
            .await
            .status(),
        200
    );
    let (r, _) = get(&edge.url("/r/p/b"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "MISS");
    // By prefix.
    assert_eq!(
        admin_purge(&edge, r#"{"prefixes":["/r/q/"]}"#, Some(ADMIN_TOKEN))
            .await
            .status(),
        200
    );
    let (r, _) = get(&edge.url("/r/q/c"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "MISS");
    assert_eq!(origin.hits("/p/a"), 2);
    assert_eq!(origin.hits("/q/c"), 2);
    // The HTTP PURGE method from an allowed address (loopback).
    let req = client().request(
        reqwest::Method::from_bytes(b"PURGE").unwrap(),
        edge.url("/r/p/a"),
    );
    assert_eq!(req.send().await.unwrap().status(), 200);
    let (r, _) = get(&edge.url("/r/p/a"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "MISS");
    // A purge recorded before a restart still applies after it.
    get(&edge.url("/r/q/d"), &[]).await;
    let (r, _) = get(&edge.url("/r/q/d"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "HIT");
    assert_eq!(
        admin_purge(&edge, r#"{"tags":["later"]}"#, Some(ADMIN_TOKEN))
            .await
            .status(),
        200
    );
    edge.restart().await;
    let (r, _) = get(&edge.url("/r/q/d"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "MISS", "purge persisted across restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn disk_tier_survives_restart() {
    let origin = CountingOrigin::start().await;
    let big = pattern(300_000); // over memory_max_object: disk only
    origin.route(
        "/big",
        Canned::ok(big.clone()).header("cache-control", "max-age=3600"),
    );
    origin.route(
        "/small",
        Canned::ok("small").header("cache-control", "max-age=3600"),
    );
    let mut edge = edge_for(&origin).await;
    get(&edge.url("/r/big"), &[]).await;
    get(&edge.url("/r/small"), &[]).await;
    edge.restart().await;
    let (r, body) = get(&edge.url("/r/big"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "HIT");
    assert_eq!(body, big);
    let (r, body) = get(&edge.url("/r/small"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "HIT");
    assert_eq!(body, b"small");
    assert_eq!(origin.hits("/big"), 1);
    assert_eq!(origin.hits("/small"), 1);
    let m = metrics_text(&edge).await;
    assert!(
        m.contains("media_edge_cache_lookups_total{tier=\"disk\"}"),
        "{m}"
    );
    assert!(m.contains("media_edge_requests_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn via_loop_is_refused() {
    let edge = Edge::start(&config(&samples_origin())).await;
    let (r, body) = get(
        &edge.url("/samples/photo.jpg"),
        &[("via", "1.1 other, 1.1 media-edge")],
    )
    .await;
    assert_eq!(r.status(), 508);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "LOOP_DETECTED");
    let (r, _) = get(&edge.url("/samples/photo.jpg"), &[("via", "1.1 other-cdn")]).await;
    assert_eq!(r.status(), 200);
    assert!(h(&r, "via").ends_with("1.1 media-edge"));
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_and_bad_methods_are_refused() {
    let edge = Edge::start(&config(&samples_origin())).await;
    for p in [
        "/samples/../../Cargo.toml",
        "/samples/..%2f..%2fCargo.toml",
        "/samples/%2e%2e/%2e%2e/Cargo.toml",
        "/samples/%252e%252e/x",
        "/samples/a%5c..%5cb",
        "/samples/..\\..\\Cargo.toml",
    ] {
        let (status, body) = raw_get(edge.port, p).await;
        assert_eq!(status, 400, "{p}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "BAD_REQUEST", "{p}");
    }
    let r = client()
        .delete(edge.url("/samples/photo.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = client()
        .get(edge.url("/admin/cache/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(edge.url("/admin/cache/stats"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(edge.url("/health")).send().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["status"], "healthy");
    assert!(v["version"].is_string() && v["uptime"].is_u64());
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_origin_passes_validators_and_ranges() {
    let s3 = S3Server::start("media").await;
    let data = pattern(150_000);
    s3.put("media", "videos/clip.bin", &data);
    s3.put("media", "videos/other.bin", &data);
    let edge = Edge::start_with_env(&config(&s3.origin("media", "videos/")), S3_ENV).await;
    let (r, body) = get(&edge.url("/s3/clip.bin"), &[]).await;
    assert_eq!(r.status(), 200, "{}", edge.log());
    assert_eq!(h(&r, "x-source-type"), "s3");
    assert!(h(&r, "etag").starts_with('"'), "ETag passes through");
    assert!(
        !h(&r, "last-modified").is_empty(),
        "Last-Modified passes through"
    );
    assert_eq!(body, data);
    let (r, _) = get(&edge.url("/s3/clip.bin"), &[]).await;
    assert_eq!(h(&r, "x-cache"), "HIT");
    let (r, body) = get(&edge.url("/s3/other.bin"), &[("range", "bytes=140000-")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(h(&r, "content-range"), "bytes 140000-149999/150000");
    assert_eq!(body, &data[140_000..]);
    let (r, _) = get(&edge.url("/s3/missing.bin"), &[]).await;
    assert_eq!(r.status(), 404);
    let (status, _) = raw_get(edge.port, "/s3/..%2f..%2fetc%2fpasswd").await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[server]
listen = ["not-an-address"]
[cache]
memory_bytes = "lots"
[[origins]]
name = "x"
matcher = "^/x/(.*"
[[origins.sources]]
kind = "local"
root = "/no/such/folder"
[[origins]]
name = "y"
matcher = "^/y/"
sources = [{ kind = "ftp" }]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(binary())
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for path in [
        "server.listen[0]",
        "cache.memory_bytes",
        "origins[0].matcher",
        "origins[0].sources[0].root",
        "origins[1].sources[0]",
    ] {
        assert!(text.contains(path), "{path} missing in:\n{text}");
    }
    let good = workspace().join("conf/media-edge.toml");
    let out = std::process::Command::new(binary())
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = std::process::Command::new(binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("media-edge"));
}

/// An edge with one remote origin `r` (`/r/...`) in front of `origin`, 2xx cached for 1 h.
async fn edge_for(origin: &CountingOrigin) -> Edge {
    Edge::start(&config(&remote_origin(
        "r",
        "^/r(/.+)$",
        &origin.base(),
        "{ ok = \"1h\" }",
    )))
    .await
}

async fn metrics_text(edge: &Edge) -> String {
    let r = client().get(edge.url("/metrics")).send().await.unwrap();
    r.text().await.unwrap()
}

async fn fast_hits(edge: &Edge) -> u64 {
    metrics_text(edge)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("media_edge_cache_fast_hits_total "))
        .expect("fast hit counter")
        .trim()
        .parse()
        .unwrap()
}

/// A fresh hit answered by the edge's fast path (memory tier, no pingora-cache lookup) is
/// indistinguishable from one answered by pingora-cache, and every case the fast path does
/// not cover (ranges, conditional requests, purges) still behaves.
#[tokio::test(flavor = "multi_thread")]
async fn fast_hits_answer_like_ordinary_hits() {
    let origin = CountingOrigin::start().await;
    let body = pattern(5000);
    origin.route(
        "/f",
        Canned::ok(body.clone())
            .header("cache-control", "max-age=600")
            .header("etag", "\"f1\"")
            .header("cache-tag", "fast"),
    );
    let edge = edge_for(&origin).await;
    let url = edge.url("/r/f");
    let (r, _) = get(&url, &[]).await;
    assert_eq!(h(&r, "x-cache"), "MISS");
    assert_eq!(fast_hits(&edge).await, 0);
    // The first hit goes through pingora-cache (and decodes the entry's metadata) ...
    let (ordinary, b2) = get(&url, &[]).await;
    assert_eq!(h(&ordinary, "x-cache"), "HIT");
    assert_eq!(fast_hits(&edge).await, 0);
    // ... later ones take the fast path, with the same status, headers and body.
    let (fast, b3) = get(&url, &[("x-request-id", "fast-1")]).await;
    assert_eq!(fast_hits(&edge).await, 1, "the fast path answered");
    assert_eq!(b2, body);
    assert_eq!(b3, body);
    assert_eq!(fast.status(), ordinary.status());
    assert_eq!(h(&fast, "x-request-id"), "fast-1");
    let skip = ["x-request-id", "age", "date"];
    let view = |r: &reqwest::Response| {
        let mut v: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(view(&fast), view(&ordinary));
    assert!(h(&fast, "age").parse::<u64>().is_ok());
    assert!(fast.headers().get("cache-tag").is_none());
    // HEAD: headers only.
    let r = client().head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "content-length"), "5000");
    assert_eq!(h(&r, "x-cache"), "HIT");
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(fast_hits(&edge).await, 2);
    // Ranges and conditional requests are left to pingora-cache.
    let (r, b) = get(&url, &[("range", "bytes=10-19")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(b, &body[10..20]);
    let (r, b) = get(&url, &[("if-none-match", "\"f1\"")]).await;
    assert_eq!(r.status(), 304);
    assert!(b.is_empty());
    assert_eq!(fast_hits(&edge).await, 2);
    // A purge is honoured by the fast path: the next request refetches.
    let purged = admin_purge(&edge, r#"{"tags":["fast"]}"#, Some(ADMIN_TOKEN)).await;
    assert_eq!(purged.status(), 200);
    let (r, b) = get(&url, &[]).await;
    assert_ne!(h(&r, "x-cache"), "HIT", "purged");
    assert_eq!(b, body);
    assert_eq!(origin.hits("/f"), 2);
    assert_eq!(fast_hits(&edge).await, 2);
}

/// One HTTP/1 response read off a raw connection: status, lower-cased headers, body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Reads one response (`Content-Length` framed; `head`: no body) from `buf` + `s`.
async fn read_response(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    head: bool,
) -> RawResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    async fn fill(
        s: &mut tokio::net::TcpStream,
        buf: &mut Vec<u8>,
        deadline: tokio::time::Instant,
    ) {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf, deadline).await;
    };
    let text = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let len: usize = if head {
        0
    } else {
        headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0)
    };
    while buf.len() < end + len {
        fill(s, buf, deadline).await;
    }
    let body = buf[end..end + len].to_vec();
    buf.drain(..end + len);
    RawResponse {
        status,
        headers,
        body,
    }
}

async fn front_door(edge: &Edge, outcome: &str) -> u64 {
    let prefix = format!("media_edge_front_door_requests_total{{outcome=\"{outcome}\"}} ");
    metrics_text(edge)
        .await
        .lines()
        .find_map(|l| {
            l.strip_prefix(prefix.as_str())
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// The front door answers fast hits on HTTP/1 connections itself and hands everything else to
/// Pingora on the same connection: pipelined requests, keep-alive after a handed-over
/// request, `Connection: close`, HTTP/1.0, bodies and malformed heads all behave.
#[tokio::test(flavor = "multi_thread")]
async fn front_door_answers_fast_hits_and_hands_over_the_rest() {
    use tokio::io::AsyncWriteExt;
    let origin = CountingOrigin::start().await;
    let body = pattern(20_000);
    origin.route(
        "/f",
        Canned::ok(body.clone()).header("cache-control", "max-age=600"),
    );
    origin.route(
        "/g",
        Canned::ok(b"gee".to_vec()).header("cache-control", "max-age=600"),
    );
    let edge = edge_for(&origin).await;
    let url = edge.url("/r/f");
    let (ordinary, _) = get(&url, &[]).await; // miss
    assert_eq!(h(&ordinary, "x-cache"), "MISS");
    let (ordinary, _) = get(&url, &[]).await; // first hit: pingora-cache (decodes the entry)
    assert_eq!(h(&ordinary, "x-cache"), "HIT");
    let answered = front_door(&edge, "answered").await;
    let fast = fast_hits(&edge).await;

    // Two pipelined requests in one write: two fast hits, in order, connection kept.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", edge.port))
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.write_all(
        b"GET /r/f HTTP/1.1\r\nHost: x\r\nX-Request-ID: p1\r\n\r\n\
          GET /r/f HTTP/1.1\r\nHost: x\r\nX-Request-ID: p2\r\n\r\n",
    )
    .await
    .unwrap();
    for id in ["p1", "p2"] {
        let r = read_response(&mut s, &mut buf, false).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body);
        assert_eq!(r.header("x-request-id"), id);
        assert_eq!(r.header("x-cache"), "HIT");
        assert_eq!(r.header("connection"), "keep-alive");
        assert_eq!(r.header("content-length"), "20000");
        assert!(!r.header("date").is_empty());
        assert!(r.header("age").parse::<u64>().is_ok());
        // Same headers as the pingora-cache hit, except the per-response ones.
        for (k, v) in ordinary.headers() {
            if !["x-request-id", "age", "date"].contains(&k.as_str()) {
                assert_eq!(r.header(k.as_str()), v.to_str().unwrap(), "{k}");
            }
        }
    }
    assert_eq!(front_door(&edge, "answered").await, answered + 2);
    assert_eq!(fast_hits(&edge).await, fast + 2);

    // A miss on the same connection goes to Pingora; the connection then comes back to the
    // front door (the next hit is answered there again).
    let handed = front_door(&edge, "handed_over").await;
    s.write_all(b"GET /r/g HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).await;
    assert_eq!(
        (r.status, r.header("x-cache"), &r.body[..]),
        (200, "MISS", &b"gee"[..])
    );
    // The miss and the `/metrics` request reading the counter were handed over.
    assert_eq!(front_door(&edge, "handed_over").await, handed + 2);
    s.write_all(b"HEAD /r/f HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s, &mut buf, true).await;
    assert_eq!((r.status, r.header("content-length")), (200, "20000"));
    assert_eq!(front_door(&edge, "answered").await, answered + 3);

    // A GET with a body length, a malformed head: Pingora's answers.
    s.write_all(b"GET /r/f HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).await;
    assert_eq!((r.status, r.body.len()), (200, body.len()));
    assert_eq!(front_door(&edge, "answered").await, answered + 3);
    let mut bad = tokio::net::TcpStream::connect(("127.0.0.1", edge.port))
        .await
        .unwrap();
    bad.write_all(b"GET /r/f HTTP/1.1\r\nBad Header: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut bad, &mut Vec::new(), false).await;
    assert_eq!(r.status, 400);

    // `Connection: close`: answered, then closed.
    s.write_all(b"GET /r/f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).await;
    assert_eq!((r.status, r.header("connection")), (200, "close"));
    let mut rest = Vec::new();
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest),
    )
    .await
    .expect("closed by the edge")
    .unwrap();
    assert_eq!(n, 0);

    // HTTP/1.0 is Pingora's (keep-alive rules differ); the hit is still a fast one there.
    let fast = fast_hits(&edge).await;
    let answered = front_door(&edge, "answered").await;
    let mut old = tokio::net::TcpStream::connect(("127.0.0.1", edge.port))
        .await
        .unwrap();
    old.write_all(b"GET /r/f HTTP/1.0\r\n\r\n").await.unwrap();
    let r = read_response(&mut old, &mut Vec::new(), false).await;
    assert_eq!((r.status, r.body.len()), (200, body.len()));
    assert_eq!(fast_hits(&edge).await, fast + 1);
    assert_eq!(front_door(&edge, "answered").await, answered);
    assert_eq!(origin.hits("/f"), 1);
}

/// A fast hit of a transformed image carries exactly the headers of a pingora-cache hit: the
/// stored `X-Resolved-*` headers are replaced by the request's, never sent twice.
#[tokio::test(flavor = "multi_thread")]
async fn fast_hits_of_transforms_replace_stored_headers() {
    let edge = Edge::start(&samples_config("")).await;
    let url = edge.url("/samples/photo.jpg?width=120&format=png");
    let all = |r: &reqwest::Response| {
        let mut v: Vec<(String, String)> = r
            .headers()
            .iter()
            .filter(|(k, _)| !["x-request-id", "age", "date"].contains(&k.as_str()))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        v.sort();
        v
    };
    let (miss, _) = get(&url, &[]).await;
    assert_eq!(miss.status(), 200);
    let (ordinary, b1) = get(&url, &[]).await;
    assert_eq!(h(&ordinary, "x-cache"), "HIT");
    let before = fast_hits(&edge).await;
    let (fast, b2) = get(&url, &[]).await;
    assert_eq!(fast_hits(&edge).await, before + 1, "answered as a fast hit");
    assert_eq!(b1, b2);
    assert_eq!(all(&fast), all(&ordinary));
    for name in [
        "x-resolved-width",
        "x-request-id",
        "content-length",
        "x-cache",
    ] {
        assert_eq!(fast.headers().get_all(name).iter().count(), 1, "{name}");
    }
    assert_eq!(h(&fast, "x-resolved-width"), "120");
}

/// Sends `head` (and nothing else) on a fresh connection and reads one response.
async fn raw_exchange(edge: &Edge, head: &[u8]) -> RawResponse {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", edge.port))
        .await
        .unwrap();
    s.write_all(head).await.unwrap();
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf, false).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clients_odd_request_never_becomes_everyones_answer() {
    let origin = CountingOrigin::start().await;
    for p in ["/q1", "/q2", "/q3", "/q4"] {
        origin.route(
            p,
            Canned::ok(format!("object {p}")).header("cache-control", "max-age=600"),
        );
    }
    // A source that answers 400 with a long max-age: still never stored.
    origin.route(
        "/bad",
        Canned::status(400, "no").header("cache-control", "max-age=600"),
    );
    let ttl = r#"{ ok = "1h", client_error = "1h" }"#;
    let edge = Edge::start(&config(&remote_origin(
        "r",
        "^/r(/.+)$",
        &origin.base(),
        ttl,
    )))
    .await;
    let many: String = (0..99).map(|i| format!("X-Pad-{i}: {i}\r\n")).collect();
    let heads: [(&str, String); 4] = [
        ("/r/q1", "Content-Length: 0, 0\r\n".to_string()),
        ("/r/q2", "Content-Length: 5\r\n".to_string()),
        ("/r/q3", many),
        ("/r/q4", "Transfer-Encoding: chunked\r\n".to_string()),
    ];
    for (path, extra) in &heads {
        let body = match path {
            p if p.ends_with("q2") => "hello",
            p if p.ends_with("q4") => "5\r\nhello\r\n0\r\n\r\n",
            _ => "",
        };
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n{body}");
        let r = raw_exchange(&edge, head.as_bytes()).await;
        // Either refused at the edge (never stored) or the object itself.
        if r.status == 200 {
            let want = format!("object {}", &path[2..]);
            assert_eq!(r.body, want.as_bytes(), "{path}");
        } else {
            assert!((400..500).contains(&r.status), "{path}: {}", r.status);
        }
    }
    // Every ordinary client gets the object.
    for (path, _) in &heads {
        let (r, body) = get(&edge.url(path), &[]).await;
        assert_eq!(
            r.status(),
            200,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(body, format!("object {}", &path[2..]).as_bytes());
    }
    let (r, _) = get(&edge.url("/r/bad"), &[]).await;
    assert_eq!(r.status(), 400);
    let (r, _) = get(&edge.url("/r/bad"), &[]).await;
    assert_eq!(r.status(), 400);
    assert_ne!(h(&r, "x-cache"), "HIT");
    assert_eq!(origin.hits("/bad"), 2, "a 400 is never stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_headers_and_odd_request_ids_stay_at_the_edge() {
    let origin = CountingOrigin::start().await;
    origin.route(
        "/i",
        Canned::ok(b"internal".to_vec()).header("cache-control", "max-age=600"),
    );
    let edge = edge_for(&origin).await;
    // A client cannot pose as the edge's own fill or external fetch (what reaches the
    // origin service is an allow-list: `edge::policy` unit tests).
    let (r, body) = get(
        &edge.url("/r/i"),
        &[
            ("x-media-edge-fill", "guess"),
            ("x-media-edge-external", "http://169.254.169.254/"),
            ("x-media-edge-avif-fallback", "png"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(body, b"internal");
    assert_eq!(h(&r, "x-cache"), "MISS");
    assert_eq!(origin.hits("/i"), 1);
    // Request ids: reflected only when short and printable.
    let long = "a".repeat(200);
    for (sent, reflected) in [("abc-123", true), (long.as_str(), false)] {
        let (r, _) = get(&edge.url("/r/i"), &[("x-request-id", sent)]).await;
        assert_eq!(h(&r, "x-request-id") == sent, reflected, "{sent:.20}");
        assert!(h(&r, "x-request-id").len() <= 128);
    }
    let r = raw_exchange(
        &edge,
        b"GET /r/i HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: a\x01b\r\n\r\n",
    )
    .await;
    assert_ne!(r.header("x-request-id"), "a\u{1}b");
}

#[tokio::test(flavor = "multi_thread")]
async fn revalidated_entries_keep_the_fast_path() {
    let origin = CountingOrigin::start().await;
    origin.route(
        "/rv",
        Canned::ok(b"revalidate me".to_vec())
            .header("cache-control", "max-age=1")
            .header("etag", "\"rv1\""),
    );
    let edge = edge_for(&origin).await;
    let url = edge.url("/r/rv");
    let (r, _) = get(&url, &[]).await;
    assert_eq!(h(&r, "x-cache"), "MISS");
    // The same object, now fresh for longer: the revalidation's 304 carries the new max-age.
    origin.route(
        "/rv",
        Canned::ok(b"revalidate me".to_vec())
            .header("cache-control", "max-age=600")
            .header("etag", "\"rv1\""),
    );
    let (r, _) = get_until_expired(&url, || {}).await;
    assert_eq!(h(&r, "x-cache"), "REVALIDATED");
    assert_eq!(origin.seen.lock().unwrap().conditionals, 1);
    // First hit after the revalidation decodes the entry; the next are fast hits.
    let (r, body) = get(&url, &[]).await;
    assert_eq!(h(&r, "x-cache"), "HIT");
    assert_eq!(body, b"revalidate me");
    let before = fast_hits(&edge).await;
    let (r, body) = get(&url, &[]).await;
    assert_eq!(h(&r, "x-cache"), "HIT");
    assert_eq!(body, b"revalidate me");
    assert_eq!(
        fast_hits(&edge).await,
        before + 1,
        "a revalidated entry is a fast hit"
    );
    let age: u64 = h(&r, "age").parse().unwrap();
    assert!(age <= 2, "age counts from the revalidation: {age}");
}

#[tokio::test(flavor = "multi_thread")]
async fn misses_reuse_origin_connections_and_a_normal_run_logs_no_error() {
    let origin = CountingOrigin::start().await;
    for i in 0..12 {
        origin.route(
            &format!("/m{i}"),
            Canned::ok(format!("miss {i}")).header("cache-control", "max-age=600"),
        );
    }
    let edge = edge_for(&origin).await;
    for i in 0..12 {
        let (r, body) = get(&edge.url(&format!("/r/m{i}")), &[]).await;
        assert_eq!((r.status().as_u16(), h(&r, "x-cache")), (200, "MISS"));
        assert_eq!(body, format!("miss {i}").as_bytes());
    }
    let m = metrics_text(&edge).await;
    let count = |reused: &str| -> u64 {
        let name = format!("media_edge_origin_connections_total{{reused=\"{reused}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    assert_eq!(count("false") + count("true"), 12, "{m}");
    // One new connection per edge worker thread at most; the rest come from the pool.
    assert!(
        count("false") <= 2,
        "new origin connections: {}",
        count("false")
    );
    let log = edge.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines in a normal run:\n{}",
        errors.join("\n")
    );
}

/// Reads until the peer closes (or `limit` passes): `true` when it closed.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_misses_bodies_and_idle_connections_at_the_front_door() {
    use tokio::io::AsyncWriteExt;
    let origin = CountingOrigin::start().await;
    for p in ["/p1", "/p2"] {
        origin.route(
            p,
            Canned::ok(format!("pipelined {p}")).header("cache-control", "max-age=600"),
        );
    }
    let edge = Edge::start(
        &config(&remote_origin(
            "r",
            "^/r(/.+)$",
            &origin.base(),
            "{ ok = \"1h\" }",
        ))
        .replace("threads = 2", "threads = 2\nkeepalive_timeout = \"1s\""),
    )
    .await;
    // [miss][hit] in one write: the miss goes to Pingora with the next request's bytes, which
    // come back to the front door and are answered in order on the same connection.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", edge.port))
        .await
        .unwrap();
    s.write_all(
        b"GET /r/p1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: m1\r\n\r\n\
          GET /r/p1 HTTP/1.1\r\nHost: x\r\nX-Request-ID: h1\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let first = read_response(&mut s, &mut buf, false).await;
    let second = read_response(&mut s, &mut buf, false).await;
    assert_eq!((first.status, first.header("x-request-id")), (200, "m1"));
    assert_eq!(first.header("x-cache"), "MISS");
    assert_eq!((second.status, second.header("x-request-id")), (200, "h1"));
    assert_eq!(second.header("x-cache"), "HIT");
    assert_eq!(first.body, second.body);
    assert_eq!(origin.hits("/p1"), 1);
    // A request with a body, then a pipelined one: the body is read (and dropped), the next
    // request is answered.
    s.write_all(
        b"GET /r/p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /r/p2 HTTP/1.1\r\nHost: x\r\nX-Request-ID: after-body\r\n\r\n",
    )
    .await
    .unwrap();
    let with_body = read_response(&mut s, &mut buf, false).await;
    let next = read_response(&mut s, &mut buf, false).await;
    assert_eq!(with_body.status, 200);
    assert_eq!(with_body.body, b"pipelined /p2");
    assert_eq!(
        (next.status, next.header("x-request-id")),
        (200, "after-body")
    );
    assert_eq!(next.body, b"pipelined /p2");
    // Idle past `keepalive_timeout`: the server closes the connection.
    assert!(buf.is_empty(), "nothing left over");
    assert!(
        closed_within(&mut s, Duration::from_secs(10)).await,
        "an idle keep-alive connection was not closed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_answers_idle_keep_alive_clients_then_stops() {
    use tokio::io::AsyncWriteExt;
    let origin = CountingOrigin::start().await;
    origin.route(
        "/s1",
        Canned::ok(b"before shutdown".to_vec()).header("cache-control", "max-age=600"),
    );
    let mut edge = shutdown_edge(&origin, "2s").await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", edge.port))
            .await
            .unwrap();
        s.write_all(b"GET /r/s1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_response(&mut s, &mut buf, false).await.status, 200);
        idle.push(s);
    }
    let pid = edge.pid() as i32;
    // SAFETY: a signal to the edge this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    // During the grace period an idle client's next request is answered, and the answer
    // closes its connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answer;
    loop {
        let s = &mut idle[0];
        s.write_all(b"GET /r/s1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        answer = read_response(s, &mut buf, false).await;
        if answer.header("connection") == "close" || Instant::now() > deadline {
            break;
        }
        // The signal may not have been handled yet.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("connection"),
        "close",
        "a draining answer closes"
    );
    assert!(closed_within(&mut idle[0], Duration::from_secs(5)).await);
    // The others, still idle, are closed when the grace period ends; the process exits.
    for s in &mut idle[1..] {
        assert!(
            closed_within(s, Duration::from_secs(15)).await,
            "idle connection left open"
        );
    }
    edge.stop();
}

/// Shutdown ends as soon as the last connection is done and nothing runs, not when the
/// grace period ends: a request in flight when SIGTERM comes is answered whole, then the
/// process exits long before its 60 s grace period (Pingora alone sleeps all of it, then
/// its runtime shutdown timeout).
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_when_the_last_connection_is_done() {
    let origin = CountingOrigin::start().await;
    origin.route(
        "/slow",
        Canned::ok(vec![7u8; 10_000]).delay(Duration::from_secs(2)),
    );
    let mut edge = shutdown_edge(&origin, "60s").await;
    let url = edge.url("/r/slow");
    let pending = tokio::spawn(async move {
        let r = client().get(url).send().await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().len())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.hits("/slow") == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SAFETY: a signal to the edge this test started.
    unsafe {
        libc::kill(edge.pid() as i32, libc::SIGTERM);
    }
    assert_eq!(
        pending.await.unwrap(),
        (200, 10_000),
        "the request in flight is answered"
    );
    assert!(
        edge.wait_exit(Duration::from_secs(30)),
        "still running 30 s after SIGTERM with nothing open (grace period 60 s)"
    );
    assert!(!edge.log().contains(" ERROR "), "{}", edge.log());
}

/// An edge in front of `origin` at `/r/` (an hour's TTL) with the given grace period.
async fn shutdown_edge(origin: &CountingOrigin, grace: &str) -> Edge {
    Edge::start(
        &config(&remote_origin(
            "r",
            "^/r(/.+)$",
            &origin.base(),
            "{ ok = \"1h\" }",
        ))
        .replace(
            "grace_period = \"1s\"",
            &format!("grace_period = \"{grace}\""),
        ),
    )
    .await
}
