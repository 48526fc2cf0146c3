//! End-to-end: external fetches are SSRF-safe. Every refused URL is checked against a
//! listener we own: it must see no connection at all.

use e2e::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn config(external: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{{PORT}}"]
threads = 2
{external}
"#
    )
}

async fn fetch(edge: &Edge, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let r = client().get(edge.url(path)).send().await.unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, r.text().await.unwrap_or_default(), h)
}

fn enc(u: &str) -> String {
    url_escape(u)
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn private_and_loopback_targets_are_refused_without_a_connection() {
    let target = CountingOrigin::start().await;
    target.route(
        "/x.png",
        Canned::ok(std::fs::read(workspace().join("conf/samples/alpha.png")).unwrap()),
    );
    let p = target.addr.port();
    let edge = Edge::start(&config(
        "[external]\nenabled = true\ntimeout = \"3s\"\nconnect_timeout = \"5s\"\n",
    ))
    .await;
    let urls = [
        format!("http://127.0.0.1:{p}/x.png"),
        format!("http://[::1]:{p}/x.png"),
        format!("http://0.0.0.0:{p}/x.png"),
        format!("http://[::ffff:127.0.0.1]:{p}/x.png"),
        format!("http://[::ffff:7f00:1]:{p}/x.png"),
        format!("http://2130706433:{p}/x.png"),
        format!("http://0x7f.1:{p}/x.png"),
        format!("http://0177.0.0.1:{p}/x.png"),
        format!("http://127.1:{p}/x.png"),
        format!("http://localhost:{p}/x.png"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/x.png".to_string(),
        "http://192.168.1.1/x.png".to_string(),
        "http://100.64.0.1/x.png".to_string(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_string(),
    ];
    for u in &urls {
        let (s, body, _) = fetch(&edge, &format!("/proxy/external?url={}", enc(u))).await;
        assert_eq!(s, 403, "{u}: {body}");
        assert!(body.contains("FORBIDDEN"), "{u}: {body}");
        let (s, body, _) = fetch(&edge, &format!("/cdn-cgi/image/width=100/{u}")).await;
        assert!(s == 403 || s == 400, "cdn-cgi {u}: {s} {body}");
    }
    for u in [
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "ftp://example.com/a.png",
    ] {
        let (s, body, _) = fetch(&edge, &format!("/proxy/external?url={}", enc(u))).await;
        assert_eq!(s, 400, "{u}: {body}");
    }
    assert_eq!(
        target.connections.load(Ordering::SeqCst),
        0,
        "no refused URL reached the target"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_sizes_timeouts_and_content_are_checked() {
    // The allowed host lives on 127.0.0.2, explicitly allowed; the forbidden one on 127.0.0.1.
    let allowed = CountingOrigin::start_at("127.0.0.2", 0).await;
    let forbidden = CountingOrigin::start().await;
    let png = std::fs::read(workspace().join("conf/samples/alpha.png")).unwrap();
    allowed.route("/img.png", Canned::ok(png.clone()));
    allowed.route(
        "/redir",
        Canned::status(302, "").header(
            "location",
            &format!("http://127.0.0.1:{}/x.png", forbidden.addr.port()),
        ),
    );
    allowed.route(
        "/hop",
        Canned::status(301, "").header("location", "/img.png"),
    );
    let mut big = b"\x89PNG\r\n\x1a\n".to_vec();
    big.resize(2 << 20, 0);
    allowed.route("/big.png", Canned::ok(big));
    allowed.route(
        "/slow.png",
        Canned::ok(png.clone()).delay(Duration::from_secs(4)),
    );
    allowed.route(
        "/page.png",
        Canned::ok("<!DOCTYPE html><html><body>hi</body></html>"),
    );
    forbidden.route("/x.png", Canned::ok(png.clone()));
    let ext = "[external]\nenabled = true\nallowed_networks = [\"127.0.0.2/32\"]\nmax_bytes = \"1MiB\"\ntimeout = \"2s\"\n";
    let edge = Edge::start(&config(ext)).await;
    let base = format!("http://127.0.0.2:{}", allowed.addr.port());

    let (s, body, h) = fetch(
        &edge,
        &format!("/proxy/external?url={}", enc(&format!("{base}/img.png"))),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-source-type"], "external");
    assert_eq!(body.len(), String::from_utf8_lossy(&png).len());
    let (s, hit_body, h) = fetch(
        &edge,
        &format!("/proxy/external?url={}", enc(&format!("{base}/img.png"))),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["x-cache"], "HIT", "external answers are cached");
    assert_eq!(hit_body, body, "the hit is the same object");
    assert_eq!(h["content-type"], "image/png");
    assert!(h.contains_key("age"), "a hit says how old it is");

    let (s, _, _) = fetch(
        &edge,
        &format!("/proxy/external?url={}", enc(&format!("{base}/hop"))),
    )
    .await;
    assert_eq!(s, 200, "a redirect to an allowed place is followed");
    let (s, body, _) = fetch(
        &edge,
        &format!("/proxy/external?url={}", enc(&format!("{base}/redir"))),
    )
    .await;
    assert_eq!(s, 403, "redirect to loopback: {body}");
    let (s, body, _) = fetch(
        &edge,
        &format!("/proxy/external?url={}", enc(&format!("{base}/big.png"))),
    )
    .await;
    assert_eq!(s, 413, "{body}");
    let (s, body, _) = fetch(
        &edge,
        &format!("/proxy/external?url={}", enc(&format!("{base}/slow.png"))),
    )
    .await;
    assert_eq!(s, 504, "{body}");
    let (s, body, _) = fetch(
        &edge,
        &format!("/proxy/external?url={}", enc(&format!("{base}/page.png"))),
    )
    .await;
    assert_eq!(s, 415, "{body}");
    assert_eq!(
        forbidden.connections.load(Ordering::SeqCst),
        0,
        "the redirect target was never contacted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn external_fetches_are_off_by_default() {
    let edge = Edge::start(&config("")).await;
    let (s, body, _) = fetch(
        &edge,
        "/proxy/external?url=https%3A%2F%2Fexample.com%2Fa.png",
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let (s, _, _) = fetch(&edge, "/cdn-cgi/image/width=100/https://example.com/a.png").await;
    assert_eq!(s, 403);
}
