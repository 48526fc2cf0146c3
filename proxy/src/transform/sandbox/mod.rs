//! The decoder sandbox: image and video transforms run in worker processes (`media-edge
//! transform-worker`) that hold no secret, no config and no socket, under a seccomp filter,
//! Landlock, `no_new_privs`, an address-space limit and (when the node runs as root) the
//! `nobody` user ([`lockdown`]). The node keeps the sources, the keys and the network: it
//! hands a worker the source bytes (or, for video, its reads by ranges or the file as a
//! descriptor: [`video`]) and the spec over a pipe ([`wire`], [`pipe`]) and reads back the
//! output, which it treats as untrusted bytes.
//!
//! This file owns the workers' lives: one is taken per call (started when none is idle),
//! given back afterwards, and ended when it crashed, broke the protocol, ran past the call's
//! deadline, lost its caller ([`crate::transform::pool::current_cancel`]: killed within
//! 100 ms), grew past `recycle_rss` or served `max_jobs` calls. A worker that dies answers
//! its one request with a clean error — 413 when it ran out of memory (an abort or the OOM
//! killer's SIGKILL), 422 for any other crash — and nothing for anyone else. Calls are
//! blocking: they run on the transform pool's threads, which bound how many run at once.
//! It must not decide what is transformed or how; that is the engine's, inside the worker.

mod lockdown;
mod pipe;
#[cfg(feature = "video-engine")]
mod video;
#[cfg(feature = "video-engine")]
mod video_worker;
pub mod wire;
mod worker;

#[cfg(feature = "video-engine")]
pub use video_worker::main as video_worker_main;
pub use worker::main as worker_main;

use crate::transform::image::ImageOptions;
use crate::transform::pool::current_cancel;
use crate::transform::{Output, TransformError};
use pipe::{read_exact, resident_bytes, status_kb, write_all};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::{Reply, Request};

/// Workers started, and workers ended by why, for `/metrics`.
pub static STARTED: AtomicU64 = AtomicU64::new(0);
pub static CRASHED: AtomicU64 = AtomicU64::new(0);
pub static OUT_OF_MEMORY: AtomicU64 = AtomicU64::new(0);
pub static STOPPED: AtomicU64 = AtomicU64::new(0);
pub static RECYCLED: AtomicU64 = AtomicU64::new(0);
/// Video workers that ended after their one call.
pub static FINISHED: AtomicU64 = AtomicU64::new(0);

/// How long a worker's answer may run past the engine's own time limit (which the engine
/// checks between stages) before the worker is killed.
const GRACE: Duration = Duration::from_secs(2);
/// The largest reply head's body: an output is never larger than this.
const MAX_OUTPUT: u64 = 512 << 20;

/// The sandbox's settings (`[transform]` `isolate`, `worker_memory`, ...).
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// Workers kept idle at most (the pool's permits bound how many are busy).
    pub workers: usize,
    /// `RLIMIT_AS` of a worker, in bytes.
    pub address_space: u64,
    /// A worker whose resident memory is past this after a call is ended (its memory goes
    /// back to the system) rather than kept.
    pub recycle_rss: u64,
    /// Calls one worker serves before it is replaced.
    pub max_jobs: u64,
    /// The program to start (`/proc/self/exe`: this very binary, even after an upgrade
    /// replaced the file).
    pub program: std::path::PathBuf,
}

/// The set of workers. Shared (`Arc`) by the transform step.
pub struct Sandbox {
    opts: SandboxOptions,
    idle: parking_lot::Mutex<Vec<Worker>>,
    /// What the last self-test found (`/health`).
    report: parking_lot::Mutex<serde_json::Value>,
    /// The thread that starts workers.
    spawner: parking_lot::Mutex<Option<std::sync::mpsc::Sender<(SpawnKind, SpawnReply)>>>,
}

/// Where the spawner thread sends a new worker.
type SpawnReply = std::sync::mpsc::SyncSender<Result<Worker, TransformError>>;

/// What kind of worker to start.
enum SpawnKind {
    /// An image worker, kept for call after call.
    Image,
    /// A video worker for one call: the source file it reads (its descriptor 3) and the
    /// directory it may write (its descriptor 4), when the call has them.
    Video {
        source: Option<std::os::fd::OwnedFd>,
        out_dir: Option<std::os::fd::OwnedFd>,
    },
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    jobs: u64,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing stdin would end it too; SIGKILL also ends one that is stuck.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A source handed to a worker with its estimate made ([`Sandbox::plan`]). Dropped without
/// [`Planned::transform`] (the memory was refused, the request went away), its worker goes
/// back idle and drops the source at its next request.
pub struct Planned {
    sandbox: Arc<Sandbox>,
    worker: Option<Worker>,
    need: u64,
    timeout: Duration,
}

impl Planned {
    /// The memory the transform will hold, in bytes.
    pub fn need(&self) -> u64 {
        self.need
    }

    /// Runs the planned transform in its worker.
    pub fn transform(mut self) -> Result<Output, TransformError> {
        let w = self
            .worker
            .take()
            .ok_or_else(|| TransformError::Internal("a planned transform ran twice".into()))?;
        let deadline = Instant::now() + self.timeout + GRACE;
        let sb = &self.sandbox;
        let (reply, body, w) = sb.exchange(w, &Request::Proceed, &[], deadline, MAX_OUTPUT)?;
        sb.give_back(w);
        match reply.into_output(body) {
            Some(output) => output,
            None => Err(TransformError::Internal(
                "a transform worker answered a transform with another reply".into(),
            )),
        }
    }
}

impl Drop for Planned {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            self.sandbox.give_back(w);
        }
    }
}

/// Why a call stopped waiting for its worker.
enum Stop {
    Deadline,
    Cancelled,
    /// The worker closed its end (it died) or the pipe failed.
    Closed(String),
}

impl Sandbox {
    pub fn new(opts: SandboxOptions) -> Sandbox {
        // Workers are started by one thread that lives as long as the node: a worker's
        // `PR_SET_PDEATHSIG` fires when the *thread* that started it ends, and the pool's
        // blocking threads come and go.
        let (tx, rx) = std::sync::mpsc::channel::<(SpawnKind, SpawnReply)>();
        let for_spawner = opts.clone();
        let started = std::thread::Builder::new()
            .name("transform-spawner".into())
            .spawn(move || {
                while let Ok((kind, reply)) = rx.recv() {
                    let _ = reply.send(spawn(&for_spawner, kind));
                }
            });
        Sandbox {
            opts,
            idle: parking_lot::Mutex::new(Vec::new()),
            report: parking_lot::Mutex::new(serde_json::json!({"state": "not tested yet"})),
            spawner: parking_lot::Mutex::new(started.ok().map(|_| tx)),
        }
    }

    /// Hands `bytes` to a worker and has it estimate the memory the image transform will
    /// hold (the estimate parses the header: AVIF and HEIF headers go through libheif). The
    /// worker keeps the source: [`Planned::transform`] runs the transform on it, once the
    /// caller has reserved that memory, without sending the source again.
    pub fn plan(
        self: &Arc<Self>,
        spec: &filters::TransformSpec,
        opts: &ImageOptions,
        bytes: &[u8],
    ) -> Result<Planned, TransformError> {
        let req = Request::Estimate {
            spec: spec.clone(),
            opts: opts.clone(),
        };
        let w = self.take()?;
        let deadline = Instant::now() + opts.timeout + GRACE;
        match self.exchange(w, &req, bytes, deadline, 0)? {
            (Reply::Need { bytes }, _, w) => Ok(Planned {
                sandbox: self.clone(),
                worker: Some(w),
                need: bytes,
                timeout: opts.timeout,
            }),
            (other, _, w) => {
                self.give_back(w);
                Err(unexpected(other))
            }
        }
    }

    /// Has a worker try to open a socket, read `path` and start a process, and keeps what
    /// it found for [`Self::report`] (each should read `refused: ...`). A video worker
    /// given a directory in `scratch` tries the same and to create a file beside that
    /// directory (refused) and in it (allowed): the report's `video`.
    pub fn self_test(
        &self,
        path: &str,
        scratch: &std::path::Path,
    ) -> Result<serde_json::Value, TransformError> {
        let req = Request::SelfTest { path: path.into() };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut v = match self.call(&req, &[], deadline, 0)? {
            (
                Reply::SelfTest {
                    confinement,
                    socket,
                    open,
                    fork,
                    ..
                },
                _,
            ) => serde_json::json!({
                "state": "isolated",
                "seccomp": confinement.seccomp,
                "landlock": confinement.landlock,
                "no_new_privs": confinement.no_new_privs,
                "uid": confinement.uid,
                "address_space": confinement.address_space,
                "tried": {"socket": socket, "open": open, "fork": fork},
            }),
            (other, _) => return Err(unexpected(other)),
        };
        #[cfg(feature = "video-engine")]
        {
            v["video"] = self
                .video_self_test(&req, scratch, deadline)
                .unwrap_or_else(|e| serde_json::json!({"state": "failed", "error": e.to_string()}));
        }
        let _ = scratch;
        *self.report.lock() = v.clone();
        Ok(v)
    }

    /// The sandbox's state for `/health`.
    pub fn report(&self) -> serde_json::Value {
        let mut v = self.report.lock().clone();
        if let Some(o) = v.as_object_mut() {
            o.insert("idle_workers".into(), self.idle.lock().len().into());
        }
        v
    }

    /// One request to a worker and its reply (whose body is at most `max_body` bytes).
    fn call(
        &self,
        req: &Request,
        body: &[u8],
        deadline: Instant,
        max_body: u64,
    ) -> Result<(Reply, Vec<u8>), TransformError> {
        let w = self.take()?;
        let (reply, out, w) = self.exchange(w, req, body, deadline, max_body)?;
        self.give_back(w);
        Ok((reply, out))
    }

    /// An idle worker that is still alive, or a new one.
    fn take(&self) -> Result<Worker, TransformError> {
        loop {
            let Some(mut w) = self.idle.lock().pop() else {
                return self.spawn(SpawnKind::Image);
            };
            // One that died while idle (killed from outside) is replaced, not used.
            if matches!(w.child.try_wait(), Ok(None)) {
                return Ok(w);
            }
            CRASHED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends one request to `w` and reads its reply. A good reply comes back with the
    /// worker; an error reply gives the worker back (or ends it, when it reached its memory
    /// limit); any other failure ends it and says what the request gets.
    fn exchange(
        &self,
        mut w: Worker,
        req: &Request,
        body: &[u8],
        deadline: Instant,
        max_body: u64,
    ) -> Result<(Reply, Vec<u8>, Worker), TransformError> {
        let cancel = current_cancel();
        let sent = write_all(
            &w.stdin,
            &wire::head(req, body.len() as u64),
            deadline,
            &cancel,
        )
        .and_then(|_| write_all(&w.stdin, body, deadline, &cancel));
        let got = sent.and_then(|_| {
            wire::read_frame::<Reply, Stop>(
                |buf| read_exact(&w.stdout, buf, deadline, &cancel),
                max_body,
            )
        });
        match got {
            Ok(Ok((Reply::Error { kind, message }, _))) => {
                // A C library whose allocation failed at the address-space limit reports
                // some error of its own ("picture import"): the worker's peak says why.
                if self.reached_limit(w.child.id()) {
                    OUT_OF_MEMORY.fetch_add(1, Ordering::Relaxed);
                    drop(w);
                    return Err(TransformError::TooLarge(format!(
                        "the transform ran out of memory in its worker (it reached \
                         transform.worker_memory, {} MiB): {message}",
                        self.opts.address_space >> 20
                    )));
                }
                w.jobs += 1;
                self.give_back(w);
                Err(kind.error(message))
            }
            Ok(Ok((reply, out))) => {
                if matches!(reply, Reply::Output { .. }) {
                    w.jobs += 1;
                }
                Ok((reply, out, w))
            }
            Ok(Err(e)) => {
                CRASHED.fetch_add(1, Ordering::Relaxed);
                drop(w);
                Err(TransformError::Internal(format!(
                    "a transform worker broke the protocol: {e}"
                )))
            }
            Err(stop) => Err(self.end(w, stop)),
        }
    }

    /// A new worker, started by the spawner thread.
    fn spawn(&self, kind: SpawnKind) -> Result<Worker, TransformError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let sent = self
            .spawner
            .lock()
            .as_ref()
            .map(|s| s.send((kind, tx)).is_ok());
        if sent != Some(true) {
            return Err(TransformError::Internal(
                "the transform worker spawner is gone".into(),
            ));
        }
        rx.recv().unwrap_or_else(|_| {
            Err(TransformError::Internal(
                "the transform worker spawner is gone".into(),
            ))
        })
    }

    /// Whether worker `pid`'s address space came within [`LIMIT_MARGIN`] of its limit.
    fn reached_limit(&self, pid: u32) -> bool {
        self.opts.address_space > 0
            && status_kb(pid, "VmPeak").is_some_and(|kb| {
                (kb << 10).saturating_add(LIMIT_MARGIN) >= self.opts.address_space
            })
    }

    /// Keeps a worker for the next call, unless it has grown or served long enough.
    fn give_back(&self, w: Worker) {
        let rss = resident_bytes(w.child.id()).unwrap_or(0);
        if rss > self.opts.recycle_rss || w.jobs >= self.opts.max_jobs {
            RECYCLED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < self.opts.workers {
            idle.push(w);
        }
    }

    /// Ends a worker a call stopped waiting for, and says what the request gets.
    fn end(&self, mut w: Worker, stop: Stop) -> TransformError {
        match stop {
            Stop::Deadline => {
                STOPPED.fetch_add(1, Ordering::Relaxed);
                drop(w);
                TransformError::Timeout(
                    "the transform ran past its time limit (transform.image_timeout, or the \
                     video timeout) and its worker was stopped"
                        .into(),
                )
            }
            Stop::Cancelled => {
                STOPPED.fetch_add(1, Ordering::Relaxed);
                drop(w);
                TransformError::Cancelled("the transform was stopped: the request went away".into())
            }
            Stop::Closed(why) => {
                // It closed its pipes: it is dying or dead. Its status says how.
                let t0 = Instant::now();
                let status = loop {
                    match w.child.try_wait() {
                        Ok(Some(s)) => break Some(s),
                        Ok(None) if t0.elapsed() < Duration::from_secs(1) => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        _ => break None,
                    }
                };
                drop(w);
                died(status, &why)
            }
        }
    }
}

/// Starts a worker (on the spawner thread only: see [`Sandbox::new`]).
fn spawn(opts: &SandboxOptions, kind: SpawnKind) -> Result<Worker, TransformError> {
    let mut cmd = Command::new(&opts.program);
    cmd.arg("transform-worker")
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--address-space")
        .arg(opts.address_space.to_string());
    // Held until the worker is started: its copies are its descriptors 3 and 4.
    let mut handed = Vec::new();
    if let SpawnKind::Video { source, out_dir } = kind {
        cmd.arg("--video");
        for (fd, at, flag) in [(source, 3, "--source-fd"), (out_dir, 4, "--out-fd")] {
            if let Some(fd) = fd {
                cmd.arg(flag);
                handed.push(hand_over(&mut cmd, fd, at)?);
            }
        }
    }
    let mut child = cmd
        .env_clear()
        // Allocators that reserve address space by the gigabyte would spend the worker's
        // `RLIMIT_AS` on reservations: mimalloc's arenas in 32 MiB steps, glibc's malloc
        // (the C codecs') in two arenas.
        .env("MIMALLOC_ARENA_RESERVE", "32M")
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            TransformError::Internal(format!(
                "cannot start a transform worker ({}): {e}",
                opts.program.display()
            ))
        })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(TransformError::Internal(
            "a transform worker has no pipes".into(),
        ));
    };
    for fd in [stdin.as_raw_fd(), stdout.as_raw_fd()] {
        // SAFETY: fcntl on descriptors this process owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    drop(handed);
    STARTED.fetch_add(1, Ordering::Relaxed);
    Ok(Worker {
        child,
        stdin,
        stdout,
        jobs: 0,
    })
}

/// Makes the started program's descriptor `at` a copy of `fd` (without close-on-exec).
/// Returns the copy the child's is made from, to keep open until the spawn returns: it is
/// numbered 10 or higher, so one hand-over never overwrites another's source.
fn hand_over(
    cmd: &mut Command,
    fd: std::os::fd::OwnedFd,
    at: i32,
) -> Result<std::os::fd::OwnedFd, TransformError> {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;
    // SAFETY: duplicates a descriptor this process owns; the copy is owned below.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if high < 0 {
        return Err(TransformError::Internal(format!(
            "cannot hand a descriptor to a transform worker: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `high` is a fresh descriptor nothing else owns.
    let high = unsafe { std::os::fd::OwnedFd::from_raw_fd(high) };
    let raw = high.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and makes one async-signal-safe call
    // (dup2) on a descriptor that stays open until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, at) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(high)
}

/// What a request gets when its worker died on its own with `status`.
fn died(status: Option<std::process::ExitStatus>, why: &str) -> TransformError {
    let signal = status.and_then(|s| s.signal());
    match signal {
        Some(libc::SIGABRT) | Some(libc::SIGKILL) => {
            OUT_OF_MEMORY.fetch_add(1, Ordering::Relaxed);
            TransformError::TooLarge(format!(
                "the transform ran out of memory in its worker (signal {}; \
                 transform.worker_memory)",
                signal.unwrap_or(0)
            ))
        }
        Some(sig) => {
            CRASHED.fetch_add(1, Ordering::Relaxed);
            TransformError::Invalid(format!(
                "the decoder crashed on this input (signal {sig}); nothing else was affected"
            ))
        }
        None => {
            CRASHED.fetch_add(1, Ordering::Relaxed);
            let code = status
                .and_then(|s| s.code())
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| why.to_string());
            TransformError::Invalid(format!(
                "the transform worker ended without an answer ({code})"
            ))
        }
    }
}

fn unexpected(r: Reply) -> TransformError {
    let name = match r {
        Reply::Need { .. } => "need",
        Reply::Output { .. } => "output",
        Reply::Error { .. } => "error",
        Reply::SelfTest { .. } => "self_test",
        Reply::Read { .. } => "read",
        Reply::Progress { .. } => "progress",
        #[cfg(feature = "video-engine")]
        Reply::Probe { .. } => "probe",
        #[cfg(feature = "video-engine")]
        Reply::Written { .. } => "written",
    };
    TransformError::Internal(format!(
        "a transform worker answered {name} to another request"
    ))
}

/// A worker whose peak address space came this close to its limit had an allocation
/// refused (allocations that fail are the large ones).
const LIMIT_MARGIN: u64 = 64 << 20;
