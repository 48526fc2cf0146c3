//! End-to-end: Cloudflare's purge API, driven by the official `cloudflare` Python SDK
//! (PyPI, pinned in scripts/setup.sh) pointed at the node by `base_url`: tags, files (as
//! strings and as `{url, headers}`, with Cloudflare's host in them), prefixes with a host,
//! `purge_everything`; a wrong token is refused the way the SDK expects (403 →
//! `PermissionDeniedError`), and the next request after each purge is a MISS while the
//! others stay HITs. Raw-HTTP checks of the envelope on bad bodies.

use e2e::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

const SDK_SCRIPT: &str = r#"
import json, os, sys
import cloudflare
from cloudflare import Cloudflare

c = Cloudflare(api_token=os.environ["CF_TOKEN"], base_url=os.environ["CF_BASE"], max_retries=0)
zone = os.environ["CF_ZONE"]
op = sys.argv[1]
try:
    if op == "tags":
        r = c.cache.purge(zone_id=zone, tags=["team-a"])
    elif op == "files":
        r = c.cache.purge(zone_id=zone, files=[
            "https://www.example.com/r/p/b",
            {"url": "https://www.example.com/r/q/c", "headers": {"Origin": "https://www.example.com"}},
        ])
    elif op == "prefixes":
        r = c.cache.purge(zone_id=zone, prefixes=["www.example.com/r/q/"])
    elif op == "everything":
        r = c.cache.purge(zone_id=zone, purge_everything=True)
    else:
        sys.exit("unknown op " + op)
    print(json.dumps({"id": r.id}))
except cloudflare.PermissionDeniedError as e:
    print(json.dumps({"denied": e.status_code}))
except cloudflare.AuthenticationError as e:
    print(json.dumps({"unauthenticated": e.status_code}))
"#;

fn sdk(edge: &Edge, dir: &std::path::Path, token: &str, op: &str) -> Value {
    let script = dir.join("cf_purge.py");
    std::fs::write(&script, SDK_SCRIPT).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(op)
        .env("CF_TOKEN", token)
        .env("CF_BASE", edge.url("/client/v4"))
        .env("CF_ZONE", ZONE)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the SDK failed ({op}): {}\n(install it: scripts/setup.sh --with-test-tools)",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}

async fn cache_status(edge: &Edge, path: &str) -> String {
    let (s, h, _) = get(edge, path, &[]).await;
    assert_eq!(s, 200, "{path}");
    h.get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Asks until the path is a HIT (the first answer's cache write may finish after it).
async fn warm(edge: &Edge, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache_status(edge, path).await != "HIT" {
        assert!(Instant::now() < deadline, "{path} never became a HIT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const PATHS: [&str; 4] = ["/r/p/a", "/r/p/b", "/r/q/c", "/r/q/d"];

async fn warm_all(edge: &Edge) {
    for p in PATHS {
        warm(edge, p).await;
    }
}

/// The cache status of each path, in order.
async fn statuses(edge: &Edge) -> Vec<String> {
    let mut out = Vec::new();
    for p in PATHS {
        out.push(cache_status(edge, p).await);
    }
    out
}

#[tokio::test]
async fn cloudflare_sdk_purges_the_node() {
    let origin = CountingOrigin::start().await;
    let cc = "max-age=3600";
    origin.route(
        "/p/a",
        Canned::ok("a")
            .header("cache-control", cc)
            .header("cache-tag", "team-a"),
    );
    for p in ["/p/b", "/q/c", "/q/d"] {
        origin.route(p, Canned::ok(p.to_string()).header("cache-control", cc));
    }
    let edge = Edge::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:{{PORT}}\"]\nthreads = 2\n\
         [[origins]]\nname = \"r\"\nmatcher = \"^/r(/.+)$\"\n\
         [[origins.sources]]\nkind = \"remote\"\nurl = \"{}\"\npath = \"$1\"\n",
        origin.base()
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (miss, hit) = ("MISS", "HIT");

    warm_all(&edge).await;
    let v = sdk(&edge, dir.path(), "wrong-token", "tags");
    assert_eq!(v["denied"], 403, "{v}");
    assert_eq!(statuses(&edge).await, [hit, hit, hit, hit]);

    let v = sdk(&edge, dir.path(), ADMIN_TOKEN, "tags");
    assert_eq!(v["id"], ZONE, "{v}\n{}", edge.log());
    assert_eq!(statuses(&edge).await, [miss, hit, hit, hit]);

    warm_all(&edge).await;
    let v = sdk(&edge, dir.path(), ADMIN_TOKEN, "files");
    assert_eq!(v["id"], ZONE, "{v}");
    assert_eq!(statuses(&edge).await, [hit, miss, miss, hit]);

    warm_all(&edge).await;
    let v = sdk(&edge, dir.path(), ADMIN_TOKEN, "prefixes");
    assert_eq!(v["id"], ZONE, "{v}");
    assert_eq!(statuses(&edge).await, [hit, hit, miss, miss]);

    warm_all(&edge).await;
    let v = sdk(&edge, dir.path(), ADMIN_TOKEN, "everything");
    assert_eq!(v["id"], ZONE, "{v}");
    assert_eq!(statuses(&edge).await, [miss, miss, miss, miss]);

    // The envelope on bad requests, over raw HTTP.
    let post = |path: &str, token: Option<&str>, body: &'static str| {
        let mut rb = client().post(edge.url(path)).body(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    let purge = format!("/client/v4/zones/{ZONE}/purge_cache");
    for (token, body, status) in [
        (None, r#"{"tags":["x"]}"#, 401),
        (Some(ADMIN_TOKEN), r#"{}"#, 400),
        (Some(ADMIN_TOKEN), r#"{"tags":"#, 400),
    ] {
        let r = post(&purge, token, body).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v["success"], false, "{v}");
        assert!(v["errors"][0]["code"].is_u64(), "{v}");
        assert!(v["errors"][0]["message"].is_string(), "{v}");
    }
    let r = post("/client/v4/zones/x/settings", Some(ADMIN_TOKEN), "{}")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
