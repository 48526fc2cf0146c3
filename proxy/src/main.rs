//! `media-edge`: the command line. Parses arguments and calls the library; no logic here.

use clap::{Parser, Subcommand};
use media_edge::config::Config;
use media_edge::server::{run, RunOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc: the cache-hit path is allocation-heavy (Pingora's header maps, per-request
/// buffers), and glibc's malloc/free were ~10 % of a small-object hit.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "media-edge",
    version,
    about = "A self-hosted media CDN node: edge cache + media transforms"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (the built-in default config when --config is not given).
    Run {
        /// Config file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen address; repeatable; replaces server.listen.
        #[arg(long)]
        listen: Vec<String>,
        /// Data directory (disk cache, purge log, sockets); replaces server.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Fork into the background (pid file in the data dir).
        #[arg(long, short)]
        daemon: bool,
        /// Take the listening sockets over from a running instance (graceful upgrade).
        #[arg(long, short)]
        upgrade: bool,
    },
    /// Graceful upgrade of a running instance: starts the new process, waits until it listens
    /// for the sockets, then tells the old one (SIGQUIT) to hand them over and drain.
    Reload {
        /// Config file of the new process.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory of the running instance.
        #[arg(long)]
        data_dir: PathBuf,
        /// The running process (systemd: `$MAINPID`); default: the pid file's.
        #[arg(long)]
        pid: Option<i32>,
    },
    /// A sandboxed transform worker (started by the node itself, never by hand).
    #[command(hide = true)]
    TransformWorker {
        /// The node's pid (the worker ends with it).
        #[arg(long)]
        parent: u32,
        /// RLIMIT_AS in bytes.
        #[arg(long)]
        address_space: u64,
        /// A worker for one video call.
        #[arg(long)]
        video: bool,
        /// Descriptor 3 is the video's source file.
        #[arg(long)]
        source_fd: bool,
        /// Descriptor 4 is the video's output directory.
        #[arg(long)]
        out_fd: bool,
    },
    /// Validate a config file: prints every problem with its key path; exit 1 on any.
    CheckConfig { file: PathBuf },
    /// Print a signed URL for PATH (path and query), with a key from `security.signing_keys`.
    SignUrl {
        /// Path and query, e.g. `/samples/photo.jpg?width=300`.
        path: String,
        /// Seconds from now until the URL expires.
        #[arg(long, default_value_t = 3600)]
        expires_in: u64,
        /// Key id (default: the first configured key whose secret is set).
        #[arg(long)]
        key: Option<String>,
        /// Config file (default: the built-in config).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn load(config: &Option<PathBuf>) -> Result<Config, ExitCode> {
    let cfg = match config {
        Some(f) => Config::load(f),
        None => Config::parse(media_edge::config::DEFAULT_CONFIG, Path::new("conf")),
    };
    cfg.map_err(|errs| {
        for p in &errs.0 {
            eprintln!("config error: {p}");
        }
        ExitCode::from(1)
    })
}

/// A sandboxed worker's life (`transform-worker`); returns its exit code.
fn transform_worker(parent: u32, space: u64, video: bool, source_fd: bool, out_fd: bool) -> u8 {
    use media_edge::transform::sandbox;
    #[cfg(feature = "video-engine")]
    if video {
        return sandbox::video_worker_main(parent, space, source_fd, out_fd) as u8;
    }
    let _ = (video, source_fd, out_fd);
    sandbox::worker_main(parent, space) as u8
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::TransformWorker {
            parent,
            address_space,
            video,
            source_fd,
            out_fd,
        } => ExitCode::from(transform_worker(
            parent,
            address_space,
            video,
            source_fd,
            out_fd,
        )),
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: ok ({} origins)",
                    file.display(),
                    c.configured_origins().len()
                );
                ExitCode::SUCCESS
            }
            Err(errs) => {
                for p in &errs.0 {
                    println!("{}: {p}", file.display());
                }
                ExitCode::from(1)
            }
        },
        Cmd::SignUrl {
            path,
            expires_in,
            key,
            config,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match media_edge::edge::security::sign_url(
                &cfg.security,
                &path,
                expires_in,
                key.as_deref(),
            ) {
                Ok(url) => {
                    println!("{url}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("media-edge: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Reload {
            config,
            data_dir,
            pid,
        } => {
            let opts = media_edge::reload::ReloadOptions {
                config,
                data_dir,
                pid,
            };
            match media_edge::reload::reload(&opts) {
                Ok(pid) => {
                    println!("media-edge: reloaded, new process {pid}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("media-edge: reload: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Run {
            config,
            listen,
            data_dir,
            daemon,
            upgrade,
        } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match run(
                cfg,
                RunOptions {
                    listen,
                    data_dir,
                    daemon,
                    upgrade,
                },
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("media-edge: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
