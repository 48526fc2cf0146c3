//! End-to-end: signed URLs, bearer tokens, trusted client IPs, rate limits.

use e2e::*;
use std::time::{SystemTime, UNIX_EPOCH};

async fn status_of(edge: &Edge, path_and_query: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut rb = client().get(edge.url(path_and_query));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs with Python's own hmac module, as the README shows.
fn python_sign(path: &str, query: &str, expires: u64, secret: &str) -> String {
    let script = r#"
import base64, hashlib, hmac, sys
path, query, expires, secret = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
msg = path + ("?" + query if query else "") + "\n" + expires
sig = base64.urlsafe_b64encode(hmac.new(secret.encode(), msg.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
sep = "&" if query else ""
print(f"{path}?{query}{sep}expires={expires}&signature={sig}")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, path, query, &expires.to_string(), secret])
        .output()
        .expect("python3");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_urls() {
    let extra = r#"
[security]
signing_keys = [{ id = "old", secret_env = "TEST_KEY_OLD" }, { id = "new", secret_env = "TEST_KEY_NEW" }]
auth = { original = "signature" }
"#;
    let edge = Edge::start_with_env(
        &samples_config(extra),
        &[
            ("TEST_KEY_OLD", "old-secret"),
            ("TEST_KEY_NEW", "new-secret"),
        ],
    )
    .await;
    let exp = now() + 600;
    let good = python_sign("/samples/photo.jpg", "a=1&b=2", exp, "new-secret");
    assert_eq!(
        status_of(&edge, &good, &[]).await.0,
        200,
        "Python-signed URL"
    );
    let old_key = python_sign("/samples/photo.jpg", "a=1&b=2", exp, "old-secret");
    assert_eq!(
        status_of(&edge, &old_key, &[]).await.0,
        200,
        "rotated-out key still accepted"
    );
    let (s, body) = status_of(&edge, "/samples/photo.jpg", &[]).await;
    assert_eq!(s, 401, "missing: {body}");
    assert!(body.contains("UNAUTHORIZED"));
    let tampered_path = good.replace("photo.jpg", "alpha.png");
    assert_eq!(status_of(&edge, &tampered_path, &[]).await.0, 403);
    let tampered_param = good.replace("a=1", "a=9");
    assert_eq!(status_of(&edge, &tampered_param, &[]).await.0, 403);
    let reordered = good.replace("a=1&b=2", "b=2&a=1");
    assert_eq!(status_of(&edge, &reordered, &[]).await.0, 403);
    let wrong_key = python_sign("/samples/photo.jpg", "a=1&b=2", exp, "not-the-secret");
    assert_eq!(status_of(&edge, &wrong_key, &[]).await.0, 403);
    let expired = python_sign("/samples/photo.jpg", "", now() - 10, "new-secret");
    let (s, body) = status_of(&edge, &expired, &[]).await;
    assert_eq!(s, 403);
    assert!(body.contains("URL expired"), "{body}");
    // kid pins the key: the right key under the wrong id fails.
    let with_kid = format!("{good}&kid=old");
    assert_eq!(status_of(&edge, &with_kid, &[]).await.0, 403);
    // The CLI signs the same way.
    let out = std::process::Command::new(binary())
        .args([
            "sign-url",
            "/samples/alpha.png?x=1",
            "--key",
            "new",
            "--config",
        ])
        .arg(&edge.config)
        .env("TEST_KEY_NEW", "new-secret")
        .output()
        .unwrap();
    let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(url.contains("kid=new"), "{url}");
    assert_eq!(status_of(&edge, &url, &[]).await.0, 200, "{url}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens() {
    let extra = r#"
[security]
tokens = [
  { token_env = "TEST_TENANT_TOKEN", tenant = "acme", scopes = ["read"] },
  { token_env = "TEST_UPLOAD_TOKEN", tenant = "acme", scopes = ["upload"] },
  { token_env = "TEST_OPS_TOKEN", tenant = "ops", scopes = ["admin"] },
]
auth = { original = "token" }
"#;
    let env = [
        ("TEST_TENANT_TOKEN", "tok-123"),
        ("TEST_UPLOAD_TOKEN", "up-456"),
        ("TEST_OPS_TOKEN", "ops-789"),
    ];
    let edge = Edge::start_with_env(&samples_config(extra), &env).await;
    let with = |t: &'static str| [("authorization", t)];
    assert_eq!(status_of(&edge, "/samples/photo.jpg", &[]).await.0, 401);
    assert_eq!(
        status_of(&edge, "/samples/photo.jpg", &with("Bearer nope"))
            .await
            .0,
        403
    );
    assert_eq!(
        status_of(&edge, "/samples/photo.jpg", &with("Bearer tok-123"))
            .await
            .0,
        200
    );
    let (s, body) = status_of(&edge, "/samples/photo.jpg", &with("Bearer up-456")).await;
    assert_eq!(s, 403, "an upload-only token cannot read: {body}");
    // A token with the admin scope can use the admin API; a read token cannot.
    assert_eq!(
        status_of(&edge, "/admin/cache/stats", &with("Bearer ops-789"))
            .await
            .0,
        200
    );
    assert_eq!(
        status_of(&edge, "/admin/cache/stats", &with("Bearer tok-123"))
            .await
            .0,
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_refused() {
    let edge = Edge::start(&samples_config("")).await;
    let many: Vec<String> = (0..80).map(|i| format!("p{i}=1")).collect();
    let (s, body) = status_of(
        &edge,
        &format!("/samples/photo.jpg?{}", many.join("&")),
        &[],
    )
    .await;
    assert_eq!(s, 400, "{body}");
    let long = "a".repeat(9000);
    let (s, _) = status_of(&edge, &format!("/samples/photo.jpg?x={long}"), &[]).await;
    assert!(s == 414 || s == 400 || s == 431, "{s}");
    let big = "b".repeat(7000);
    let (s, _) = status_of(
        &edge,
        "/samples/photo.jpg",
        &[("x-a", &big), ("x-b", &big), ("x-c", &big)],
    )
    .await;
    assert!(s == 431 || s == 400, "{s}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_by_trusted_client_ip() {
    let extra = r#"
[security]
trusted_proxies = ["127.0.0.1/32"]
rate_limit_hits = true
[filters.ratelimit.per_minute]
original = 3
"#;
    let edge = Edge::start(&samples_config(extra)).await;
    let a = [("cf-connecting-ip", "198.51.100.7")];
    for _ in 0..3 {
        assert_eq!(status_of(&edge, "/samples/anim.gif", &a).await.0, 200);
    }
    let r = client()
        .get(edge.url("/samples/anim.gif"))
        .header("cf-connecting-ip", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "RATE_LIMITED");
    assert_eq!(v["error"]["retry_after"], retry);
    // Another client (through the trusted proxy) is unaffected.
    assert_eq!(
        status_of(
            &edge,
            "/samples/anim.gif",
            &[("cf-connecting-ip", "198.51.100.8")]
        )
        .await
        .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_client_ip_from_untrusted_peer_is_ignored() {
    let extra = r#"
[security]
rate_limit_hits = true
[filters.ratelimit.per_minute]
original = 2
"#;
    let edge = Edge::start(&samples_config(extra)).await;
    // Each request claims another client; the peer is not trusted, so they share one bucket.
    let mut statuses = Vec::new();
    for i in 0..3 {
        let ip = format!("203.0.113.{i}");
        statuses.push(
            status_of(
                &edge,
                "/samples/anim.gif",
                &[("cf-connecting-ip", &ip), ("x-forwarded-for", &ip)],
            )
            .await
            .0,
        );
    }
    assert_eq!(statuses, vec![200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn require_cloudflare_edge_refuses_other_peers() {
    let extra = "[security]\nrequire_cloudflare_edge = true\ntrusted_proxies_file = \"CF\"\n"
        .replace(
            "CF",
            &workspace()
                .join("conf/cloudflare-ips.txt")
                .to_string_lossy(),
        );
    let edge = Edge::start(&samples_config(&extra)).await;
    let (s, body) = status_of(&edge, "/samples/photo.jpg", &[]).await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("FORBIDDEN"));
    assert_eq!(
        status_of(&edge, "/health", &[]).await.0,
        200,
        "health from the admin network"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_hits_are_not_rate_limited_by_default() {
    let extra = "[filters.ratelimit.per_minute]\noriginal = 2\n";
    let edge = Edge::start(&samples_config(extra)).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(status_of(&edge, "/samples/alpha.png", &[]).await.0);
    }
    assert_eq!(statuses, vec![200; 6], "one miss, then hits");
    // Distinct misses do count.
    assert_eq!(status_of(&edge, "/samples/photo.jpg", &[]).await.0, 200);
    assert_eq!(status_of(&edge, "/samples/anim.gif", &[]).await.0, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn ranged_misses_of_protected_objects_are_filled_inside_the_node() {
    // The background fill after a ranged miss runs inside the node (a Pingora subrequest with
    // the client's admitted request), not through its own listener, so token-protected
    // objects are cached too; hits still need the token.
    let extra = r#"
[security]
tokens = [{ token_env = "TEST_FILL_TOKEN", tenant = "acme", scopes = ["read"] }]
auth = { original = "token" }
"#;
    let edge = Edge::start_with_env(&samples_config(extra), &[("TEST_FILL_TOKEN", "fill-1")]).await;
    let auth = [("authorization", "Bearer fill-1")];
    let ranged = |r: &'static str| [auth[0], ("range", r)];
    let r = client()
        .get(edge.url("/samples/clip.mp4"))
        .header("authorization", "Bearer fill-1")
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(r.bytes().await.unwrap().len(), 100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut x_cache = String::new();
    while std::time::Instant::now() < deadline {
        let mut rb = client().get(edge.url("/samples/clip.mp4"));
        for (k, v) in ranged("bytes=0-0") {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 206);
        x_cache = r.headers()["x-cache"].to_str().unwrap().to_string();
        if x_cache == "HIT" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        x_cache, "HIT",
        "the background fill cached the whole object"
    );
    assert_eq!(
        status_of(&edge, "/samples/clip.mp4", &[]).await.0,
        401,
        "hits keep their auth"
    );
    let (s, _) = status_of(&edge, "/samples/clip.mp4", &auth).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origins_own_rule_guards_every_route_to_it() {
    // Originals open by class, but the origin requires signatures: transforms, thumbnails
    // and metadata of its objects are refused unsigned too.
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:{{PORT}}\"]\nthreads = 2\n\
         [security]\nsigning_keys = [{{ id = \"k\", secret_env = \"TEST_ORIGIN_KEY\" }}]\n\
         [[origins]]\nname = \"guarded\"\nmatcher = \"^/samples/(.+)$\"\nauth = \"signature\"\n\
         [[origins.sources]]\nkind = \"local\"\nroot = \"{}\"\n",
        workspace().join("conf/samples").display()
    );
    let edge = Edge::start_with_env(&config, &[("TEST_ORIGIN_KEY", "origin-secret")]).await;
    for path in [
        "/samples/photo.jpg",
        "/samples/photo.jpg?width=100&format=webp",
        "/samples/photo.jpg?format=json",
        "/samples/clip.mp4?mode=frame&time=1s&width=64",
    ] {
        let (s, body) = status_of(&edge, path, &[]).await;
        assert!(s == 401 || s == 403, "{path} unsigned: {s} {body}");
    }
    let exp = now() + 600;
    let signed = python_sign(
        "/samples/photo.jpg",
        "width=100&format=webp",
        exp,
        "origin-secret",
    );
    let (s, body) = status_of(&edge, &signed, &[]).await;
    assert_eq!(s, 200, "{body}");
}
