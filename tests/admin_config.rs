//! End-to-end: `POST /admin/config` swaps the config of a running node under load (no failed
//! request, the cache still warm, a new origin and a new TTL in effect, the file rewritten),
//! refuses what it cannot apply (401/403 without the admin token, 400 with key paths, 409
//! naming a restart-only key, nothing applied), and the dashboard in headless Chromium.

use e2e::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(ttl: &str, extra_origin: bool) -> String {
    let root = workspace().join("conf/samples");
    let mut c = format!(
        "[server]\nlisten = [\"127.0.0.1:{{PORT}}\"]\nthreads = 2\n\
         [[origins]]\nname = \"samples\"\nmatcher = \"^/samples/(.+)$\"\nttl = {{ ok = \"{ttl}\" }}\n\
         [[origins.sources]]\nkind = \"local\"\nroot = \"{}\"\n",
        root.display()
    );
    if extra_origin {
        c += &format!(
            "[[origins]]\nname = \"more\"\nmatcher = \"^/more/(.+)$\"\n\
             [[origins.sources]]\nkind = \"local\"\nroot = \"{}\"\n",
            root.display()
        );
    }
    c
}

async fn post(edge: &Edge, path: &str, token: Option<&str>, body: String) -> (u16, Value) {
    let mut rb = client().post(edge.url(path)).body(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.expect("request");
    let s = r.status().as_u16();
    let b = r.bytes().await.unwrap_or_default();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn x_cache(h: &reqwest::header::HeaderMap) -> String {
    h.get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn config_applies_live_under_load() {
    let edge = Edge::start(&config("1h", false)).await;
    let port = edge.port.to_string();
    let text = |ttl: &str, extra: bool| config(ttl, extra).replace("{PORT}", &port);
    // Warm: a hit before the change.
    assert_eq!(get(&edge, "/samples/photo.jpg", &[]).await.0, 200);
    assert_eq!(
        x_cache(&get(&edge, "/samples/photo.jpg", &[]).await.1),
        "HIT"
    );

    // Load on keep-alive connections through the change.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            edge.url("/samples/photo.jpg"),
        );
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let good = match c.get(&url).send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                match good {
                    true => ok.fetch_add(1, Ordering::Relaxed),
                    false => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok.load(Ordering::Relaxed) < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Refusals first: nothing of them is applied.
    let new = text("2s", true);
    assert_eq!(post(&edge, "/admin/config", None, new.clone()).await.0, 401);
    assert_eq!(
        post(&edge, "/admin/config", Some("wrong"), new.clone())
            .await
            .0,
        403
    );
    let (s, v) = post(
        &edge,
        "/admin/config",
        Some(ADMIN_TOKEN),
        new.replace("ok = \"2s\"", "ok = \"banana\""),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["problems"].to_string().contains("origins[0].ttl"), "{v}");
    let moved = new.replace(&format!("127.0.0.1:{port}"), "127.0.0.1:1");
    let (s, v) = post(&edge, "/admin/config", Some(ADMIN_TOKEN), moved).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        v["restart_required"],
        serde_json::json!(["server.listen"]),
        "{v}"
    );
    assert_eq!(
        get(&edge, "/more/photo.jpg", &[]).await.0,
        404,
        "a refused change applied nothing"
    );
    let before = std::fs::read_to_string(&edge.config).unwrap();
    assert!(before.contains("ok = \"1h\""));

    // The change: a new origin and a shorter TTL.
    let (s, v) = post(&edge, "/admin/config", Some(ADMIN_TOKEN), new.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["applied"], true);
    assert_eq!(v["written"], edge.config.display().to_string());
    assert_eq!(
        std::fs::read_to_string(&edge.config).unwrap(),
        new,
        "written back"
    );
    let seen = ok.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok.load(Ordering::Relaxed) < seen + 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed across the change"
    );
    assert!(
        ok.load(Ordering::Relaxed) >= seen + 50,
        "load kept going after the change"
    );

    // The cache is still warm; the new origin serves; the new TTL applies to new entries.
    assert_eq!(
        x_cache(&get(&edge, "/samples/photo.jpg", &[]).await.1),
        "HIT"
    );
    assert_eq!(get(&edge, "/more/photo.jpg", &[]).await.0, 200);
    assert_eq!(
        x_cache(&get(&edge, "/samples/alpha.png", &[]).await.1),
        "MISS"
    );
    assert_eq!(
        x_cache(&get(&edge, "/samples/alpha.png", &[]).await.1),
        "HIT"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let c = x_cache(&get(&edge, "/samples/alpha.png", &[]).await.1);
        if c != "HIT" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the 2 s TTL never expired the entry"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The running config shows the change.
    let r = client()
        .get(edge.url("/admin/config"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(
        v["toml"].as_str().unwrap().contains("name = \"more\""),
        "{v}"
    );
}

/// The dashboard, driven by Playwright in Debian's Chromium (`tests/browser/dashboard.mjs`):
/// login, analytics after traffic, a tag purged from the UI (the next request misses), a
/// config change applied from the UI (in effect: a new origin), the Debug tab's cache key.
/// Screenshots in `target/screenshots/dashboard/`.
#[tokio::test]
async fn dashboard_in_headless_chromium() {
    let browser_dir = workspace().join("tests/browser");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists() && browser_dir.join("node_modules/playwright-core").exists(),
        "the dashboard test needs Debian's chromium and `npm ci` in tests/browser (scripts/setup.sh --with-test-tools)"
    );
    let edge = Edge::start(&(config("1h", false) + "[analytics]\nenabled = true\n")).await;
    for _ in 0..3 {
        assert_eq!(get(&edge, "/samples/photo.jpg", &[]).await.0, 200);
        assert_eq!(get(&edge, "/samples/photo.jpg?width=100", &[]).await.0, 200);
    }
    assert_eq!(
        x_cache(&get(&edge, "/samples/photo.jpg", &[]).await.1),
        "HIT"
    );
    // The request log is written off the request path: wait until it has rows.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client()
            .get(edge.url("/admin/analytics?hours=1"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let v: Value =
            serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
        if v["totals"]["requests"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no analytics rows: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shots = workspace().join("target/screenshots/dashboard");
    let out = tokio::process::Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .env("ME_BASE", edge.url(""))
        .env("ME_TOKEN", ADMIN_TOKEN)
        .env("ME_SCREENSHOTS", &shots)
        .env("ME_PURGE_TAG", "path:/samples/photo.jpg")
        .env("ME_DEBUG_URL", "/samples/photo.jpg?width=100")
        .env("ME_EXPECT_KEY", "image:/samples/photo.jpg:w=100")
        .env("ME_CONFIG_FIND", "[[origins]]\nname = \"samples\"")
        .env(
            "ME_CONFIG_REPLACE",
            format!(
                "[[origins]]\nname = \"more\"\nmatcher = \"^/more/(.+)$\"\n[[origins.sources]]\nkind = \"local\"\nroot = \"{}\"\n[[origins]]\nname = \"samples\"",
                workspace().join("conf/samples").display()
            ),
        )
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), out)
        .await
        .expect("the browser test finished within 240 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dashboard.mjs failed:\n{stdout}\n{}\n--- edge log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        edge.log()
    );
    assert!(stdout.contains("ok 7"), "{stdout}");
    // What the UI did took effect: the purged original misses, the new origin serves.
    assert_eq!(
        x_cache(&get(&edge, "/samples/photo.jpg", &[]).await.1),
        "MISS"
    );
    assert_eq!(get(&edge, "/more/photo.jpg", &[]).await.0, 200);
    assert!(shots.join("01-login.png").exists());
}
