//! End-to-end: the HTTPS listener and Pingora's graceful upgrade under load.

use e2e::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn hv<'a>(h: &'a reqwest::header::HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn https_listener_serves_and_caches() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let tls_port = free_port();
    let edge = Edge::start(&samples_config(&format!(
        "[[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )))
    .await;
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{tls_port}/samples/alpha.png");
    let r = https.get(&url).send().await.expect("TLS request");
    assert_eq!(r.status(), 200);
    assert_eq!(hv(r.headers(), "x-cache"), "MISS");
    let first = r.bytes().await.unwrap();
    let r = https.get(&url).send().await.unwrap();
    assert_eq!(hv(r.headers(), "x-cache"), "HIT");
    assert_eq!(r.bytes().await.unwrap(), first);
    // The same cache answers plain HTTP.
    let (s, h, body) = get(&edge, "/samples/alpha.png", &[]).await;
    assert_eq!((s, hv(&h, "x-cache")), (200, "HIT"));
    assert_eq!(body, first.to_vec());
    // A client that does not trust the certificate is refused by TLS, not served.
    let strict = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(strict.get(&url).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_drops_no_request() {
    let mut edge = Edge::start(&samples_config("grace_period = \"1s\"\n")).await;
    let (s, _, want) = get(&edge, "/samples/alpha.png", &[]).await;
    assert_eq!(s, 200);
    let old_pid = edge.pid();
    // Clients hammer the node through the whole upgrade.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url, want) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            edge.url("/samples/alpha.png"),
            want.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // A fresh connection per request, so requests meet both processes.
            while !stop.load(Ordering::Relaxed) {
                let c = client();
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => match r.bytes().await {
                        Ok(b) if b.as_ref() == want.as_slice() => {
                            ok.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    },
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // Traffic flows before, through and after the upgrade: wait for answered requests, not
    // for the clock.
    let answered = |n: usize| {
        let ok = ok.clone();
        let failed = failed.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while ok.load(Ordering::Relaxed) < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                ok.load(Ordering::Relaxed) >= n,
                "only {} requests answered ({} failed)",
                ok.load(Ordering::Relaxed),
                failed.load(Ordering::Relaxed)
            );
        }
    };
    answered(40).await;
    let took = edge.upgrade().await;
    let after = ok.load(Ordering::Relaxed);
    answered(after + 40).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("upgrade: old process gone in {took:?}; {ok} requests ok, {failed} failed");
    assert_eq!(
        failed,
        0,
        "requests failed during the upgrade:\n{}",
        edge.log()
    );
    assert!(ok > 20, "{ok}");
    assert_ne!(edge.pid(), old_pid);
    // The new process serves (and has the disk tier).
    let (s, _, body) = get(&edge, "/samples/alpha.png", &[]).await;
    assert_eq!((s, body), (200, want));
    let (s, _, body) = get(&edge, "/health", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
}

/// Until the old process hands its listeners over, it stays whole: its misses are served by
/// its own origin service (the new process binds the origin socket only once it has the
/// listeners), and a purge it accepts is honoured by the new process, which compacted the
/// purge log when it started. What the old process cached meanwhile is a hit in the new one.
#[tokio::test(flavor = "multi_thread")]
async fn upgrade_keeps_the_old_processs_misses_and_purges() {
    let mut edge = Edge::start(&samples_config("grace_period = \"1s\"\n")).await;
    for want in ["MISS", "HIT"] {
        let (s, h, _) = get(&edge, "/samples/alpha.png", &[]).await;
        assert_eq!((s, hv(&h, "x-cache")), (200, want));
    }
    let u = edge.begin_upgrade().await;
    // The new process is waiting for the listeners; the old one answers a miss at once.
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        get(&edge, "/samples/photo.jpg", &[]),
    )
    .await
    .unwrap_or_else(|_| panic!("a miss hung during the upgrade:\n{}", edge.log()));
    assert_eq!((r.0, hv(&r.1, "x-cache")), (200, "MISS"));
    let purged = client()
        .post(edge.url("/admin/cache/purge"))
        .bearer_auth(ADMIN_TOKEN)
        .body(r#"{"prefixes":["/samples/alpha"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    edge.finish_upgrade(u).await;

    // The new process: the old one's fill is a hit, its purge holds (read within a second).
    let (s, h, _) = get(&edge, "/samples/photo.jpg", &[]).await;
    assert_eq!((s, hv(&h, "x-cache")), (200, "HIT"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let last = loop {
        let (s, h, _) = get(&edge, "/samples/alpha.png", &[]).await;
        let x = hv(&h, "x-cache").to_string();
        if x != "HIT" || std::time::Instant::now() > deadline {
            break (s, x);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(last, (200, "MISS".to_string()), "{}", edge.log());
}
