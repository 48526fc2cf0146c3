//! Wiring: builds the storage, the cache lock, the purge log, the origin service and the
//! edge, and hands them to a Pingora `Server` (listeners, threads, graceful upgrade).
//!
//! Owns process-level concerns only (data dir layout, logging setup, pid/upgrade sockets);
//! no request logic lives here.

use crate::config::Config;
use crate::edge::purge::PurgeLog;
use crate::edge::storage::{StorageLimits, TieredStorage};
use crate::edge::{Edge, EdgeState};
use crate::origin::{OriginBackground, OriginService};
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the server did not start, with the path or key concerned.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Setup {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("tls listener {listen}: {message}")]
    Tls { listen: String, message: String },
    #[error("{key}: {message}")]
    Config { key: &'static str, message: String },
    #[error(transparent)]
    Security(#[from] crate::edge::security::SecurityError),
    #[error(transparent)]
    Origin(#[from] crate::origin::OriginError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn io_at(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StartError {
    let path = path.to_path_buf();
    move |source| StartError::Io { what, path, source }
}

/// How to run, from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub listen: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub daemon: bool,
    pub upgrade: bool,
}

pub fn init_logging(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("MEDIA_EDGE_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,pingora_core=warn,pingora_proxy=warn,pingora_cache=warn",
            )
        });
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Points `link` (`origin.sock`) at `socket` (`origin.sock.<pid>`, same folder) by a relative
/// symlink made aside and renamed over it.
fn publish_socket_link(socket: &std::path::Path, link: &std::path::Path) -> std::io::Result<()> {
    let target = socket.file_name().ok_or(std::io::ErrorKind::InvalidInput)?;
    let aside = socket.with_extension(format!("{}.link", std::process::id()));
    let _ = std::fs::remove_file(&aside);
    std::os::unix::fs::symlink(target, &aside)?;
    std::fs::rename(&aside, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&aside);
    })
}

/// Removes `{socket}.{pid}` sockets of processes that are gone (each process leaves its own
/// behind when it exits; the next start clears them).
fn remove_stale_sockets(socket: &std::path::Path) {
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return;
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name();
        let Some(pid) = n
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The plain and TLS listeners of the edge service. TLS listeners offer HTTP/2 and HTTP/1.1
/// by ALPN.
fn add_listeners<A>(
    svc: &mut pingora_core::services::listening::Service<A>,
    cfg: &Config,
    buffers: pingora_core::protocols::l4::stream::L4BufferSettings,
) -> Result<(), StartError> {
    for l in &cfg.server.listen {
        svc.add_listener(pingora_core::listeners::ListenerConfig::tcp(l).l4_buffer(buffers));
    }
    for t in &cfg.server.tls {
        let mut tls = pingora_core::listeners::tls::TlsSettings::intermediate(
            &t.cert.to_string_lossy(),
            &t.key.to_string_lossy(),
        )
        .map_err(|e| StartError::Tls {
            listen: t.listen.clone(),
            message: e.to_string(),
        })?;
        tls.enable_h2();
        svc.add_listener(
            pingora_core::listeners::ListenerConfig::tcp(&t.listen)
                .tls(tls)
                .l4_buffer(buffers),
        );
    }
    Ok(())
}

/// Runs the server until it is told to stop. Returns an error message on a startup failure.
pub fn run(mut cfg: Config, opts: RunOptions) -> Result<(), StartError> {
    if !opts.listen.is_empty() {
        cfg.server.listen = opts.listen.clone();
    }
    if let Some(d) = &opts.data_dir {
        cfg.server.data_dir = d.clone();
    }
    init_logging(cfg.server.json_logs);
    let data_dir = cfg.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(io_at("data dir", &data_dir))?;
    let data_dir = data_dir
        .canonicalize()
        .map_err(io_at("data dir", &data_dir))?;
    cfg.server.data_dir = data_dir.clone();
    // The built-in uploads origin reads `{data_dir}/uploads` unless a bucket is configured.
    let uploads_dir = data_dir.join("uploads");
    std::fs::create_dir_all(&uploads_dir).map_err(io_at("uploads folder", &uploads_dir))?;
    cfg.refresh_uploads_origin();

    let limits = StorageLimits {
        memory_bytes: cfg.cache.memory_bytes.0,
        memory_max_object: cfg.cache.memory_max_object.0,
        disk_bytes: cfg.cache.disk_bytes.0,
    };
    let storage: &'static TieredStorage = Box::leak(Box::new(
        TieredStorage::open(&data_dir.join("cache"), &limits)
            .map_err(io_at("disk cache", &data_dir.join("cache")))?,
    ));
    let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(cfg.cache.lock_timeout.0));
    let purge = PurgeLog::open(&data_dir.join("purge.log"), !opts.upgrade)
        .map_err(io_at("purge log", &data_dir.join("purge.log")))?;
    purge.set_retention(cfg.cache.max_ttl.0.saturating_mul(3));

    // Each process's edge talks to its own origin service, on a socket named for the process
    // (`origin.sock.<pid>`): bound now, so a failure stops the start before any takeover, and
    // dialled by that exact path, which is what the kernel reports as the peer of every
    // connection (Pingora's pool reuses a connection only when the two agree). During a
    // graceful upgrade the old process keeps serving its draining connections' misses from
    // its own socket. `origin.sock` is a symlink to the live one, for operators (below).
    let origin_socket = cfg.origin_socket();
    let own_socket = PathBuf::from(format!(
        "{}.{}",
        origin_socket.display(),
        std::process::id()
    ));
    remove_stale_sockets(&origin_socket);
    let _ = std::fs::remove_file(&own_socket);
    let uds = std::os::unix::net::UnixListener::bind(&own_socket)
        .map_err(io_at("origin socket", &own_socket))?;

    let cfg = Arc::new(cfg);
    // Sources are built on a short-lived runtime (the S3 SDK loads its config asynchronously);
    // they hold no runtime-bound state and are used from the origin service's runtime.
    let boot = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| StartError::Setup {
            what: "runtime",
            source,
        })?;
    // The metadata store is checked and migrated now (a bad URL stops the start); its pool
    // connects on first use, after the fork of `--daemon`.
    let store = Arc::new(boot.block_on(crate::store::Store::open(&cfg))?);
    let queue = crate::jobs::Queue::new(store.clone(), cfg.jobs.clone());
    // The request log's channel opens now; its writer runs as a background service.
    let request_log = crate::analytics::Writer::new(store.clone(), &cfg.analytics);
    let origin = Arc::new(boot.block_on(OriginService::new(
        cfg.clone(),
        Some(store.clone()),
        Some(queue.clone()),
    ))?);
    let uploads = Arc::new(boot.block_on(crate::uploads::Uploads::open(
        cfg.clone(),
        store.clone(),
        origin.clone(),
        queue.clone(),
    ))?);
    drop(boot);

    let admin_token = std::env::var(&cfg.server.admin_token_env)
        .ok()
        .filter(|t| !t.is_empty());
    let via =
        http::HeaderValue::from_str(&format!("1.1 {}", cfg.server.via_token)).map_err(|_| {
            StartError::Config {
                key: "server.via_token",
                message: "not a valid header value".into(),
            }
        })?;
    let live = crate::edge::Live {
        purge_allowed: filters::CidrSet::parse(&cfg.server.purge_allowed).map_err(|e| {
            StartError::Config {
                key: "server.purge_allowed",
                message: format!("{e:?}"),
            }
        })?,
        security: crate::edge::security::Security::new(
            &cfg.security,
            &cfg.filters.ratelimit,
            &cfg.base,
        )?,
        cfg: cfg.clone(),
    };
    let trusted = live.security.trusted.clone();
    let state = Arc::new(EdgeState::new(
        live,
        via,
        storage,
        lock,
        purge,
        admin_token,
        own_socket.to_string_lossy().into_owned(),
        queue.clone(),
        uploads.clone(),
        origin.clone(),
        opts.clone(),
    ));

    let open_files = crate::edge::conns::raise_open_files_limit();
    // Three quarters of the descriptors for client connections, the rest for origin
    // connections, cache files and sockets.
    let max_connections = match cfg.server.max_connections {
        0 => (open_files as usize / 4 * 3).max(64),
        n => n,
    };
    let threads = if cfg.server.threads == 0 {
        cores()
    } else {
        cfg.server.threads
    };
    let mut conf = ServerConf::default();
    conf.threads = threads;
    conf.daemon = opts.daemon;
    conf.pid_file = data_dir
        .join("media-edge.pid")
        .to_string_lossy()
        .into_owned();
    conf.upgrade_sock = data_dir.join("upgrade.sock").to_string_lossy().into_owned();
    conf.grace_period_seconds = Some(cfg.server.grace_period.0.as_secs());
    conf.graceful_shutdown_timeout_seconds = Some(10);
    conf.work_stealing = cfg.server.work_stealing;
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // On a graceful upgrade this waits for the old process to hand its listeners over.
    server.bootstrap();
    // `origin.sock` points at this process's socket only now, once it has the listeners (a
    // failed upgrade leaves the old link). Replaced by rename: the path never goes missing.
    publish_socket_link(&own_socket, &origin_socket)
        .map_err(io_at("origin socket", &origin_socket))?;

    // Pingora's HttpProxy for the edge, behind the front door (edge/front.rs: answers fast
    // hits on HTTP/1 connections itself) unless `server.front_door = false`.
    let mut edge_proxy = pingora_proxy::http_proxy(
        &server.configuration,
        Edge {
            state: state.clone(),
        },
    );
    if cfg.server.h2c {
        let mut options = pingora_core::apps::HttpServerOptions::default();
        options.h2c = true;
        edge_proxy.server_options = Some(options);
    }
    let buffers = pingora_core::protocols::l4::stream::L4BufferSettings::default()
        .write(cfg.server.write_buffer.0.clamp(1460, 1 << 20) as usize)
        .read(cfg.server.read_buffer.0.min(1 << 20) as usize);
    let mut drain_conns = None;
    let proxy: Box<dyn pingora_core::services::ServiceWithDependents> = if cfg.server.front_door {
        let conns = Arc::new(crate::edge::conns::Connections::new(
            max_connections,
            cfg.server.max_connections_per_ip,
            trusted,
        ));
        drain_conns = Some(conns.clone());
        let front = crate::edge::front::FrontDoor::new(
            edge_proxy,
            Edge { state },
            conns,
            cfg.server.head_timeout.0,
            cfg.server.keepalive_timeout.0,
            cfg.server.grace_period.0,
        );
        let mut svc = pingora_core::services::listening::Service::new("edge".to_string(), front);
        add_listeners(&mut svc, &cfg, buffers)?;
        Box::new(svc)
    } else {
        let mut svc =
            pingora_core::services::listening::Service::new("edge".to_string(), edge_proxy);
        add_listeners(&mut svc, &cfg, buffers)?;
        Box::new(svc)
    };
    let drain_origin = origin.clone();
    let mut workers = pingora_core::services::background::background_service(
        "jobs",
        crate::jobs::Workers {
            queue,
            runner: origin.clone(),
            uploads: Some(uploads),
        },
    );
    workers.threads = Some(1);
    let mut bg = pingora_core::services::background::background_service(
        "origin",
        OriginBackground {
            service: origin,
            listener: parking_lot::Mutex::new(Some(uds)),
        },
    );
    bg.threads = Some(threads);
    server.add_boxed_service(proxy);
    server.add_service(pingora_core::services::background::background_service(
        "drain",
        crate::edge::drain::DrainWatch {
            conns: drain_conns,
            origin: drain_origin,
        },
    ));
    server.add_service(bg);
    server.add_service(workers);
    if let Some(w) = request_log {
        let mut svc = pingora_core::services::background::background_service("request-log", w);
        svc.threads = Some(1);
        server.add_service(svc);
    }
    tracing::info!(listen = ?cfg.server.listen, data_dir = %data_dir.display(), threads, max_connections, open_files, "media-edge starting");
    server.run_forever();
}
