//! `media-edge reload`: a graceful upgrade in the order that cannot fail — the new process is
//! started first and waits on `{data_dir}/upgrade.sock`; only once it listens there does the
//! old one get `SIGQUIT` and hand its listening sockets over (Pingora's old process retries
//! the hand-over for a few seconds only, so signalling first races a slow start).
//!
//! Owns the sequence and its deadlines; the server itself (`server::run`) is unchanged. What
//! systemd's `ExecReload=` runs (`systemd/media-edge.service`). Must not touch the data dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to reload.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// The config file both processes run with.
    pub config: Option<PathBuf>,
    /// The data dir (holds the pid file and the upgrade socket).
    pub data_dir: PathBuf,
    /// The running process (systemd's `$MAINPID`); default: the pid file's.
    pub pid: Option<i32>,
}

/// Why a reload did not complete. The old process keeps serving in every case but the last
/// two (it was told to hand over).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no running process: no --pid and no pid file {0}")]
    NoPid(PathBuf),
    #[error("process {0} is not running")]
    NotRunning(i32),
    #[error("starting the new process: {0}")]
    Spawn(std::io::Error),
    #[error("the new process exited ({0}) before it listened on {1}")]
    NewExited(std::process::ExitStatus, PathBuf),
    #[error("the new process did not listen on {0} within {1:?}")]
    NotListening(PathBuf, Duration),
    #[error("signalling process {0}: {1}")]
    Signal(i32, std::io::Error),
    #[error("the new process did not take over within {0:?}")]
    NoTakeover(Duration),
}

/// Waits for the new process to listen for the sockets.
const LISTEN_DEADLINE: Duration = Duration::from_secs(120);
/// Waits for the new process to have the sockets and run in the background.
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(60);

fn read_pid(pid_file: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Runs the reload (see the module doc); returns the new process's pid.
pub fn reload(opts: &ReloadOptions) -> Result<i32, ReloadError> {
    let data_dir = opts
        .data_dir
        .canonicalize()
        .unwrap_or_else(|_| opts.data_dir.clone());
    let pid_file = data_dir.join("media-edge.pid");
    let old = match opts.pid {
        Some(p) => p,
        None => read_pid(&pid_file).ok_or_else(|| ReloadError::NoPid(pid_file.clone()))?,
    };
    if !alive(old) {
        return Err(ReloadError::NotRunning(old));
    }
    let exe = std::env::current_exe().map_err(ReloadError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.args(["run", "--daemon", "--upgrade", "--data-dir"])
        .arg(&data_dir)
        .stdin(Stdio::null());
    if let Some(c) = &opts.config {
        cmd.arg("--config").arg(c);
    }
    let mut new: Child = cmd.spawn().map_err(ReloadError::Spawn)?;
    let sock = data_dir.join("upgrade.sock");
    let t0 = Instant::now();
    while !crate::unix_socket::listening(&sock) {
        if let Ok(Some(status)) = new.try_wait() {
            return Err(ReloadError::NewExited(status, sock));
        }
        if t0.elapsed() > LISTEN_DEADLINE {
            let _ = new.kill();
            let _ = new.wait();
            return Err(ReloadError::NotListening(sock, LISTEN_DEADLINE));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sending a signal to a pid we checked exists.
    if unsafe { libc::kill(old, libc::SIGQUIT) } != 0 {
        let e = std::io::Error::last_os_error();
        let _ = new.kill();
        let _ = new.wait();
        return Err(ReloadError::Signal(old, e));
    }
    // The new process takes the sockets, forks into the background (its foreground half
    // exits) and writes its pid file.
    let t1 = Instant::now();
    loop {
        let exited = matches!(new.try_wait(), Ok(Some(_)));
        if let Some(pid) = read_pid(&pid_file).filter(|p| *p != old && alive(*p)) {
            if exited {
                return Ok(pid);
            }
        }
        if t1.elapsed() > TAKEOVER_DEADLINE {
            return Err(ReloadError::NoTakeover(TAKEOVER_DEADLINE));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
