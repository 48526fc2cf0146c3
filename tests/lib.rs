//! End-to-end test harness: starts the real `media-edge` binary on a free port with a temp
//! config, a real S3-compatible server (`s3s-fs`), and counting HTTP origins written here.
//! Everything listens on 127.0.0.1 only.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `media-edge` binary: `$MEDIA_EDGE_BIN`, else next to this test binary's `deps` folder.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("MEDIA_EDGE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    // This crate does not depend on the binary, so make sure it is built and current
    // (a no-op when it is).
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "media-edge", "--bin", "media-edge"])
            .current_dir(workspace())
            .status()
            .expect("cargo build");
        assert!(st.success(), "building media-edge failed");
    });
    dir.join("media-edge")
}

/// A running media-edge.
pub struct Edge {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// A daemonized process that took over (`media-edge reload`): killed on drop.
    daemon: Option<i32>,
}

pub const ADMIN_TOKEN: &str = "test-admin-token";

impl Edge {
    /// Starts media-edge with `config` where `{PORT}` and `{DIR}` (the temp dir) are substituted.
    pub async fn start(config: &str) -> Edge {
        Self::start_with_env(config, &[]).await
    }

    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Edge {
        // The free port is released before the edge binds it: an outgoing connection may take
        // it in between, so a bind failure is retried on another port.
        for attempt in 1.. {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let text = config
                .replace("{PORT}", &port.to_string())
                .replace("{DIR}", &dir.path().to_string_lossy());
            let cfg = dir.path().join("media-edge.toml");
            std::fs::write(&cfg, text).expect("write config");
            let mut e = Edge {
                port,
                dir,
                config: cfg,
                child: None,
                daemon: None,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            match e.try_spawn().await {
                Ok(()) => return e,
                Err(log) if attempt < 3 && log.contains("Address already in use") => continue,
                Err(log) => panic!("media-edge did not come up:\n{log}"),
            }
        }
        unreachable!()
    }

    /// A command line run the way the edge runs: its environment, stderr into the edge log.
    pub fn command_like(&self, program: &Path) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("edge.log"))
            .expect("log file");
        let mut cmd = Command::new(program);
        cmd.env("MEDIA_EDGE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("MEDIA_EDGE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Waits (at most `limit`) for the started process to exit, e.g. after a reload handed
    /// its sockets over; then `pid` (the process that took over, daemonized) is the one to
    /// stop when the test ends.
    pub async fn hand_over_to(&mut self, pid: i32, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                self.daemon = Some(pid);
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The running process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Pingora's graceful upgrade, as `systemctl reload` does it: a new process started with
    /// `--upgrade` takes the listening sockets over when the old one gets SIGQUIT; the old
    /// one drains and exits. Returns how long the old process took to exit.
    pub async fn upgrade(&mut self) -> Duration {
        let u = self.begin_upgrade().await;
        self.finish_upgrade(u).await
    }

    /// The first half of [`Self::upgrade`]: the new process is started and waits for the
    /// sockets; the old one still serves everything.
    pub async fn begin_upgrade(&mut self) -> Upgrading {
        let new = self
            .command()
            .arg("--upgrade")
            .spawn()
            .expect("spawn upgrade");
        let u = Upgrading {
            old: self.child.take(),
            new: Some(new),
        };
        // The new process waits on the upgrade socket: wait until the kernel lists it as
        // listening (a probe connection would take the hand-over's place).
        let sock = self.dir.path().join("data/upgrade.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !unix_socket_listening(&sock) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !unix_socket_listening(&sock) {
            panic!(
                "the new process never listened for the sockets:\n{}",
                self.log()
            );
        }
        u
    }

    /// The second half of [`Self::upgrade`]: SIGQUIT to the old process, which hands the
    /// listeners over, drains and exits.
    pub async fn finish_upgrade(&mut self, mut u: Upgrading) -> Duration {
        let mut old = u.old.take().expect("running");
        let t0 = Instant::now();
        unsafe {
            libc::kill(old.id() as i32, libc::SIGQUIT);
        }
        self.child = u.new.take();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = old.try_wait() {
                return t0.elapsed();
            }
            if Instant::now() >= deadline {
                let _ = old.kill();
                panic!("old process never exited:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn command(&self) -> Command {
        let mut cmd = self.command_like(&binary());
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"));
        cmd
    }

    async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("media-edge did not come up:\n{log}");
        }
    }

    /// Starts the process and waits for `/health`; on failure, the log.
    async fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("edge.log"))
            .expect("log file");
        drop(log);
        let child = self.command().spawn().expect("spawn media-edge");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        loop {
            if let Ok(r) = client.get(self.url("/health")).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("exited early ({status}):\n{}", self.log()));
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!("no /health in 30 s:\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("edge.log")).unwrap_or_default()
    }

    /// Stops gracefully (SIGTERM), waits, then kills if needed.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts again with the same config and data dir.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Waits up to `limit` for the process to exit on its own; true when it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGKILL, as a crash: nothing gets to finish or clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again (after [`Self::kill`]) with the same config and data dir.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }
}

/// A throwaway PostgreSQL cluster from Debian's `postgresql` binaries: `initdb` in a temp
/// dir and `postgres` on a free port of 127.0.0.1. As root it runs as `nobody` (PostgreSQL
/// refuses to run as root). Stopped and removed on drop.
pub struct Postgres {
    pub url: String,
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/N/bin`, or the folder of `initdb` on PATH.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, p)) => p,
        None => PathBuf::new(),
    }
}

impl Postgres {
    pub async fn start() -> Postgres {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("pg");
        let as_root = unsafe { libc::geteuid() } == 0;
        // `nobody` must reach the folder: the temp dir's parents are world-searchable.
        let own = |p: &Path| {
            if as_root {
                std::os::unix::fs::chown(p, Some(65534), Some(65534)).expect("chown");
            }
        };
        own(dir.path());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let command = |program: &str| {
            let mut c = Command::new(bin.join(program));
            if as_root {
                c.uid(65534).gid(65534);
            }
            c.env("HOME", dir.path()).current_dir(dir.path());
            c
        };
        let out = command("initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb: install Debian's postgresql (scripts/setup.sh --with-test-tools)");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("log");
        own(&dir.path().join("postgres.log"));
        let child = command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres");
        let mut pg = Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            child,
            _dir: dir,
        };
        // Ready when pg_isready says so (a TCP connect succeeds before it accepts queries).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return pg;
            }
            if let Ok(Some(st)) = pg.child.try_wait() {
                let log = std::fs::read_to_string(pg._dir.path().join("postgres.log"));
                panic!("postgres exited ({st}): {}", log.unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "postgres did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both processes of a graceful upgrade in progress; killed if the test stops half-way.
pub struct Upgrading {
    old: Option<Child>,
    new: Option<Child>,
}

impl Drop for Upgrading {
    fn drop(&mut self) {
        for c in [self.old.take(), self.new.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.daemon.take() {
            // SAFETY: a signal to the daemon this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// One canned response of a counting origin.
#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
}

impl Canned {
    pub fn ok(body: impl Into<Bytes>) -> Canned {
        Canned {
            status: 200,
            headers: vec![],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
    pub fn status(status: u16, body: impl Into<Bytes>) -> Canned {
        Canned {
            status,
            headers: vec![],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Canned {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    pub fn delay(mut self, d: Duration) -> Canned {
        self.delay = d;
        self
    }
}

/// What a counting origin saw.
#[derive(Default)]
pub struct Seen {
    pub hits: HashMap<String, usize>,
    pub ranges: Vec<Option<String>>,
    pub conditionals: usize,
}

/// A tiny HTTP origin that counts requests per path and answers canned responses.
/// It honours single `Range` requests on 200 responses and `If-None-Match` against `etag`.
pub struct CountingOrigin {
    pub addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Canned>>>,
    pub seen: Arc<Mutex<Seen>>,
    pub connections: Arc<AtomicUsize>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl CountingOrigin {
    pub async fn start() -> CountingOrigin {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> CountingOrigin {
        Self::start_at("127.0.0.1", port).await
    }

    /// Listens on `ip` (any 127.0.0.0/8 address works on Linux).
    pub async fn start_at(ip: &str, port: u16) -> CountingOrigin {
        let listener = tokio::net::TcpListener::bind((ip, port))
            .await
            .expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let routes: Arc<Mutex<HashMap<String, Canned>>> = Arc::default();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let (r2, s2, c2) = (routes.clone(), seen.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = rx.changed() => break,
                    acc = listener.accept() => {
                        let Ok((stream, _)) = acc else { continue };
                        c2.fetch_add(1, Ordering::SeqCst);
                        let (r3, s3) = (r2.clone(), s2.clone());
                        let mut conn_stop = rx.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                                let (r4, s4) = (r3.clone(), s3.clone());
                                async move { Ok::<_, std::convert::Infallible>(answer(req, &r4, &s4).await) }
                            });
                            let conn = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc);
                            // Stopping the origin also drops its open connections, as a crash would.
                            tokio::select! {
                                _ = conn => {}
                                _ = conn_stop.changed() => {}
                            }
                        });
                    }
                }
            }
        });
        CountingOrigin {
            addr,
            routes,
            seen,
            connections,
            stop: Some(tx),
        }
    }

    pub fn route(&self, path: &str, c: Canned) {
        self.routes.lock().unwrap().insert(path.to_string(), c);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and drops every open connection.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
    }
}

impl Drop for CountingOrigin {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    req: hyper::Request<Incoming>,
    routes: &Mutex<HashMap<String, Canned>>,
    seen: &Mutex<Seen>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let range = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let inm = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let canned = {
        let mut s = seen.lock().unwrap();
        *s.hits.entry(path.clone()).or_default() += 1;
        s.ranges.push(range.clone());
        if inm.is_some() {
            s.conditionals += 1;
        }
        routes.lock().unwrap().get(&path).cloned()
    };
    let Some(c) = canned else {
        return hyper::Response::builder()
            .status(404)
            .body(Full::new(Bytes::from_static(b"nope")))
            .unwrap();
    };
    if !c.delay.is_zero() {
        tokio::time::sleep(c.delay).await;
    }
    let etag = c
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.clone());
    let mut b = hyper::Response::builder();
    for (k, v) in &c.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    if c.status == 200 && etag.is_some() && inm == etag {
        return b.status(304).body(Full::new(Bytes::new())).unwrap();
    }
    if c.status == 200 {
        if let Some((s, e)) = range
            .as_deref()
            .and_then(|r| parse_single(r, c.body.len() as u64))
        {
            return b
                .status(206)
                .header("content-range", format!("bytes {s}-{e}/{}", c.body.len()))
                .body(Full::new(c.body.slice(s as usize..=e as usize)))
                .unwrap();
        }
    }
    b.status(c.status).body(Full::new(c.body.clone())).unwrap()
}

fn parse_single(r: &str, size: u64) -> Option<(u64, u64)> {
    let spec = r.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        return Some((size.saturating_sub(n), size - 1));
    }
    let s: u64 = a.parse().ok()?;
    let e: u64 = if b.is_empty() {
        size - 1
    } else {
        b.parse::<u64>().ok()?.min(size - 1)
    };
    (s <= e).then_some((s, e))
}

/// A real S3-compatible server (`s3s-fs`) on 127.0.0.1 with one bucket.
pub struct S3Server {
    pub endpoint: String,
    pub root: tempfile::TempDir,
    child: Child,
}

pub const S3_ACCESS_KEY: &str = "AKIAMEDIAEDGETEST";
pub const S3_SECRET_KEY: &str = "media-edge-test-secret";
/// The environment an edge needs for [`S3Server::origin`].
pub const S3_ENV: &[(&str, &str)] = &[("TEST_S3_AK", S3_ACCESS_KEY), ("TEST_S3_SK", S3_SECRET_KEY)];

impl S3Server {
    /// Starts `s3s-fs` (from `$S3S_FS_BIN` or PATH or ~/.cargo/bin) with bucket `bucket`.
    pub async fn start(bucket: &str) -> S3Server {
        Self::start_attempt(bucket, 1).await
    }

    async fn start_attempt(bucket: &str, attempt: u32) -> S3Server {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join(bucket)).expect("bucket dir");
        let port = free_port();
        let bin = std::env::var("S3S_FS_BIN").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            let cargo_bin = format!("{home}/.cargo/bin/s3s-fs");
            if Path::new(&cargo_bin).exists() {
                cargo_bin
            } else {
                "s3s-fs".into()
            }
        });
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs must be installed (cargo install s3s-fs --version 0.14.1 --features binary --locked)");
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = child.try_wait() {
                // The port was taken between `free_port` and the bind: another one.
                assert!(attempt < 3, "s3s-fs exited ({status})");
                return Box::pin(Self::start_attempt(bucket, attempt + 1)).await;
            }
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
            child,
        }
    }

    /// An `[[origins]]` block named `s3` matching `^/s3/(.+)$`, reading `{prefix}$1` from
    /// `bucket` with the credentials of [`S3_ENV`].
    pub fn origin(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "[[origins]]\nname = \"s3\"\nmatcher = \"^/s3/(.+)$\"\n[[origins.sources]]\n\
             kind = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\n\
             endpoint = \"{}\"\npath_style = true\naccess_key_env = \"TEST_S3_AK\"\n\
             secret_key_env = \"TEST_S3_SK\"\npath = \"{prefix}$1\"\n",
            self.endpoint
        )
    }

    /// Puts an object by writing it into the served folder.
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let p = self.root.path().join(bucket).join(key);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("dirs");
        }
        std::fs::write(p, body).expect("write object");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic test bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + i / 256) % 251) as u8).collect()
}

/// A GET with the path sent exactly as given (no client-side normalisation of `..` or `%2e`).
pub async fn raw_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// An HTTP client that never uses a proxy (tests talk to 127.0.0.1 only).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// The `[[origins]]` block serving `conf/samples/` at `/samples/...`.
pub fn samples_origin() -> String {
    format!(
        "[[origins]]\nname = \"samples\"\nmatcher = \"^/samples/(.+)$\"\n[[origins.sources]]\nkind = \"local\"\nroot = \"{}\"\n",
        workspace().join("conf/samples").display()
    )
}

/// A whole config: a listener on `{PORT}`, `extra` sections, then the samples origin.
pub fn samples_config(extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{{PORT}}\"]\nthreads = 2\n{extra}\n{}",
        samples_origin()
    )
}

/// GET `path` from `edge` with extra headers: status, headers, body.
pub async fn get(
    edge: &Edge,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut rb = client().get(edge.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("request");
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.bytes().await.expect("body").to_vec())
}

/// Whether a unix socket bound at `path` is listening (the server's own check, one source).
pub fn unix_socket_listening(path: &std::path::Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else {
        return false;
    };
    unix_socket::listening(&path)
}

#[path = "../proxy/src/unix_socket.rs"]
mod unix_socket;

/// A self-signed certificate for `127.0.0.1` made with the `openssl` CLI in `dir`:
/// `(cert.pem, key.pem)`.
pub fn self_signed_cert(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl CLI");
    assert!(st.success());
    (cert, key)
}

/// One exchange made by the `curl` CLI (`args` choose the protocol, e.g. `--http2`).
pub struct Curl {
    /// `1.1`, `2`, ...
    pub version: String,
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Curl {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// Runs `curl` with `args` and `url`; panics when curl itself fails.
pub fn curl(args: &[&str], url: &str) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let (hdr, body) = (dir.path().join("h"), dir.path().join("b"));
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "30"])
        .args(args)
        .arg("-D")
        .arg(&hdr)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_version} %{http_code}"])
        .arg(url)
        .output()
        .expect("curl CLI");
    let w = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl {args:?} {url}: {w} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (version, status) = w.trim().split_once(' ').expect("curl -w output");
    let text = std::fs::read_to_string(&hdr).unwrap_or_default();
    let headers = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Curl {
        version: version.to_string(),
        status: status.parse().unwrap_or(0),
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// An edge on the samples with a TLS listener too (self-signed for `127.0.0.1`): the edge,
/// the TLS port and the certificate's path.
pub async fn start_tls_edge(extra: &str) -> (Edge, u16, PathBuf, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let tls_port = free_port();
    let edge = Edge::start(&samples_config(&format!(
        "{extra}[[server.tls]]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    )))
    .await;
    (edge, tls_port, cert, certs)
}

/// The edge's `/metrics` page.
pub async fn metrics_of(edge: &Edge) -> String {
    let (_, _, body) = get(edge, "/metrics", &[]).await;
    String::from_utf8(body).unwrap()
}

/// A `secs`-second h264/aac MP4 of `size` (`WxH`) made with the ffmpeg CLI.
pub fn make_test_video(path: &Path, secs: u32, size: &str) {
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=25:duration={secs}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={secs}"))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "50"])
        .args(["-c:a", "aac", "-shortest", "-movflags", "+faststart"])
        .arg(path)
        .status()
        .expect("ffmpeg CLI");
    assert!(st.success(), "ffmpeg failed");
}

/// Width and height of the first video stream of `path`, by `ffprobe`.
pub fn probe_size(path: &Path) -> (u32, u32) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.trim().split(',').map(|v| v.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}
