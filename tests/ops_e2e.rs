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
    let (edge, tls_port, cert, _certs) = start_tls_edge("").await;
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

/// One keep-alive exchange on `s`: `Ok(close)` with whether the answer closes the connection,
/// `Err` when the connection ended before a whole response (a lost request).
async fn keep_alive_get(
    s: &mut tokio::net::TcpStream,
    path: &str,
    want: &[u8],
) -> Result<bool, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {} bytes of the head", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(format!("status: {}", head.lines().next().unwrap_or("")));
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no content-length")?;
    while buf.len() < head_end + len {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed mid-body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if &buf[head_end..head_end + len] != want {
        return Err("wrong body".into());
    }
    Ok(head.contains("connection: close"))
}

/// Persistent HTTP/1.1 clients hammering one object: a connection is reused until the server
/// closes it; a request without a whole answer is counted as lost.
struct KeepAliveClients {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KeepAliveClients {
    fn start(n: usize, port: u16, path: &'static str, want: Vec<u8>) -> KeepAliveClients {
        let c = KeepAliveClients {
            stop: Arc::new(AtomicBool::new(false)),
            ok: Arc::new(AtomicUsize::new(0)),
            failed: Arc::new(AtomicUsize::new(0)),
            errors: Arc::new(std::sync::Mutex::new(Vec::new())),
            tasks: Vec::new(),
        };
        let tasks = (0..n)
            .map(|_| {
                let (stop, ok, failed, errors, want) = (
                    c.stop.clone(),
                    c.ok.clone(),
                    c.failed.clone(),
                    c.errors.clone(),
                    want.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                        else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.lock().unwrap().push("connect".into());
                            continue;
                        };
                        while !stop.load(Ordering::Relaxed) {
                            match keep_alive_get(&mut s, path, &want).await {
                                Ok(close) => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                    if close {
                                        break;
                                    }
                                }
                                Err(e) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                    errors.lock().unwrap().push(e);
                                    break;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        KeepAliveClients { tasks, ..c }
    }

    fn answered_now(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits (at most 30 s) until `n` requests have been answered in all.
    async fn answered(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered_now() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            self.answered_now() >= n,
            "only {} answered",
            self.answered_now()
        );
    }

    /// Stops the clients: (answered, lost, what went wrong).
    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_upgrade_loses_no_keep_alive_request() {
    let mut edge = Edge::start(&samples_config("grace_period = \"2s\"\n")).await;
    let (s, _, want) = get(&edge, "/samples/alpha.png", &[]).await;
    assert_eq!(s, 200);
    let clients = KeepAliveClients::start(8, edge.port, "/samples/alpha.png", want);
    clients.answered(200).await;
    // Returns once the old process has drained and exited.
    edge.upgrade().await;
    clients.answered(clients.answered_now() + 200).await;
    let (ok, failed, errors) = clients.finish().await;
    assert_eq!(
        failed,
        0,
        "keep-alive requests lost in the upgrade ({ok} ok): {errors:?}\n{}",
        edge.log()
    );
}

/// The unit's `ExecReload=` command lines, for this test's binary, config and data dir.
fn unit_reload_commands(edge: &Edge) -> Vec<Vec<String>> {
    let unit = std::fs::read_to_string(workspace().join("systemd/media-edge.service")).unwrap();
    let data = edge.dir.path().join("data");
    unit.lines()
        .filter_map(|l| l.strip_prefix("ExecReload="))
        .map(|l| {
            l.replace("/usr/local/bin/media-edge", &binary().to_string_lossy())
                .replace(
                    "/etc/media-edge/media-edge.toml",
                    &edge.config.to_string_lossy(),
                )
                .replace("/var/lib/media-edge", &data.to_string_lossy())
                .replace("$MAINPID", &edge.pid().to_string())
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_units_reload_command_upgrades_under_load_without_a_lost_request() {
    let mut edge = Edge::start(&samples_config("grace_period = \"1s\"\n")).await;
    let (s, _, want) = get(&edge, "/samples/alpha.png", &[]).await;
    assert_eq!(s, 200);
    let old_pid = edge.pid() as i32;
    let clients = KeepAliveClients::start(4, edge.port, "/samples/alpha.png", want);
    clients.answered(100).await;
    let commands = unit_reload_commands(&edge);
    assert_eq!(commands.len(), 1, "one ExecReload: {commands:?}");
    for argv in commands {
        let mut cmd = edge.command_like(std::path::Path::new(&argv[0]));
        cmd.args(&argv[1..]);
        let status = tokio::task::spawn_blocking(move || cmd.status().expect("run ExecReload"))
            .await
            .unwrap();
        assert!(
            status.success(),
            "ExecReload failed ({status}):\n{}",
            edge.log()
        );
    }
    let pid_file = edge.dir.path().join("data/media-edge.pid");
    let new_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(
        edge.hand_over_to(new_pid, Duration::from_secs(30)).await,
        "the old process never exited:\n{}",
        edge.log()
    );
    clients.answered(clients.answered_now() + 100).await;
    let (_, failed, errors) = clients.finish().await;
    assert_eq!(failed, 0, "requests lost in the reload: {errors:?}");
    let (s, _, _) = get(&edge, "/health", &[]).await;
    assert_eq!(s, 200, "the new process serves");
}
