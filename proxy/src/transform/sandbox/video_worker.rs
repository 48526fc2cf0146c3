//! A video worker's side (`media-edge transform-worker --video`): started for one call,
//! with the source file as its descriptor 3 (`--source-fd`) and its output directory as
//! descriptor 4 (`--out-fd`) when the call has them. It locks down in two steps around
//! reading its request ([`lockdown::prepare`], then [`lockdown::confine`] with the output
//! directory as the only place it may write), works in that directory (relative paths: it
//! cannot even name another), reads a remote source from the node by ranges over its pipes,
//! reports progress, and answers once. A crash or an abort ends it; the node answers for it.

use super::lockdown::{self, Role};
use super::wire::{self, ErrorKind, Reply, Request, VideoSource};
use crate::transform::video::{self, Media, VideoDone};
use crate::transform::{RangeRead, TransformError};
use std::io::{Read, Write};
use std::os::fd::{BorrowedFd, FromRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The descriptors the node hands over.
const SOURCE_FD: i32 = 3;
const OUT_FD: i32 = 4;

/// Runs the worker; returns the process's exit code.
pub fn main(parent: u32, address_space: u64, source_fd: bool, out_fd: bool) -> i32 {
    video::init();
    let mut confinement = lockdown::prepare(parent, address_space, OUT_FD as u32 + 1);
    // SAFETY: closing descriptors the node did not hand over (inherited by accident).
    unsafe {
        if !source_fd {
            libc::close(SOURCE_FD);
        }
        if !out_fd {
            libc::close(OUT_FD);
        }
    }
    let chan = Arc::new(Mutex::new(Channel {
        input: std::io::stdin(),
        output: std::io::stdout(),
    }));
    let first = {
        let mut c = chan.lock().unwrap_or_else(|e| e.into_inner());
        wire::read_frame::<Request, std::io::Error>(|buf| c.input.read_exact(buf), 0)
    };
    let request = match first {
        Ok(Ok((r @ (Request::Video { .. } | Request::SelfTest { .. }), _))) => r,
        Ok(Ok(_)) | Ok(Err(_)) => {
            let e =
                TransformError::Internal("video worker: the first request is not a call".into());
            send(&chan, &failed(e), &[]);
            return 2;
        }
        Err(_) => return 0,
    };
    // SAFETY: fchdir on the descriptor the node handed over.
    if out_fd && unsafe { libc::fchdir(OUT_FD) } != 0 {
        let e = TransformError::Internal(format!(
            "video worker: cannot enter its output directory: {}",
            std::io::Error::last_os_error()
        ));
        send(&chan, &failed(e), &[]);
        return 2;
    }
    // SAFETY: descriptor 4 stays open for the worker's life.
    let writable = out_fd.then(|| unsafe { BorrowedFd::borrow_raw(OUT_FD) });
    lockdown::confine(&mut confinement, Role::Video { writable });
    // Its file calls are confined by Landlock alone: without it, no call.
    if !matches!(confinement.landlock.as_str(), "full" | "partial") {
        let e = TransformError::Unsupported(format!(
            "video work cannot be isolated here: Landlock is {} (the kernel has none, or it \
             is not enabled); set transform.isolate = false to run it in the node",
            confinement.landlock
        ));
        send(&chan, &failed(e), &[]);
        return 2;
    }
    let (mut call, source) = match request {
        Request::Video { call, source } => (call, source),
        Request::SelfTest { path } => {
            let (socket, open, fork) = lockdown::try_forbidden(&path);
            let reply = Reply::SelfTest {
                confinement,
                socket,
                open,
                fork,
                outside: lockdown::try_create("../.media-edge-self-test"),
                inside: lockdown::try_create(".media-edge-self-test"),
            };
            send(&chan, &reply, &[]);
            return 0;
        }
        _ => return 2,
    };
    if out_fd {
        // Relative to the output directory: the only place it may write.
        call.out = call.out.as_ref().map(|p| match p.file_name() {
            Some(name) if call.op != video::VideoOp::Hls => name.into(),
            _ => ".".into(),
        });
        call.opts.temp_dir = ".".into();
    }
    let media = if source_fd {
        // SAFETY: descriptor 3 is the source the node opened for this worker, owned here.
        let file = unsafe { std::fs::File::from_raw_fd(SOURCE_FD) };
        match super::video::FileRange::new(file, source.name.clone()) {
            Ok(f) => Media::Ranged(Arc::new(f)),
            Err(e) => {
                send(&chan, &failed(e), &[]);
                return 2;
            }
        }
    } else {
        Media::Ranged(Arc::new(NodeSource {
            chan: chan.clone(),
            source,
            read: AtomicU64::new(0),
        }))
    };
    let (reply, body) = run(&call, &media, &chan);
    send(&chan, &reply, &body);
    // Alive until the node has read its memory figures (a zombie has none) and closes the
    // pipe.
    let mut c = chan.lock().unwrap_or_else(|e| e.into_inner());
    let _ = c.input.read(&mut [0u8; 1]);
    0
}

/// A call that writes no file, in a pooled (image) worker: its source is read from the
/// node by ranges. Returns the last reply and its body.
pub fn pooled(call: video::VideoCall, source: VideoSource) -> (Reply, bytes::Bytes) {
    use video::VideoOp;
    let files = !matches!(
        call.op,
        VideoOp::Probe | VideoOp::Json | VideoOp::Frame | VideoOp::Spritesheet
    );
    if files || call.out.is_some() || source.fd {
        let e = TransformError::Internal("a pooled worker writes no file and opens none".into());
        return (failed(e), bytes::Bytes::new());
    }
    let chan = Arc::new(Mutex::new(Channel {
        input: std::io::stdin(),
        output: std::io::stdout(),
    }));
    let media = Media::Ranged(Arc::new(NodeSource {
        chan: chan.clone(),
        source,
        read: AtomicU64::new(0),
    }));
    run(&call, &media, &chan)
}

/// Runs `call`, reporting progress to the node; the last reply and its body.
fn run(call: &video::VideoCall, media: &Media, chan: &Mutex<Channel>) -> (Reply, bytes::Bytes) {
    let last = Mutex::new(-1.0f32);
    let progress = |done: f32| {
        let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
        // About a hundred reports a call at most.
        if done >= 1.0 || done - *l >= 0.01 {
            *l = done;
            send(chan, &Reply::Progress { done }, &[]);
        }
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        video::execute(call, media, &progress)
    }));
    match result {
        Ok(Ok(VideoDone::Probe(probe))) => (Reply::Probe { probe }, bytes::Bytes::new()),
        Ok(Ok(VideoDone::Memory(o))) => Reply::output(o),
        Ok(Ok(VideoDone::File(written))) | Ok(Ok(VideoDone::Hls(written))) => {
            (Reply::Written { written }, bytes::Bytes::new())
        }
        Ok(Err(e)) => (failed(e), bytes::Bytes::new()),
        Err(_) => (
            failed(TransformError::Internal(
                "the video transform panicked".into(),
            )),
            bytes::Bytes::new(),
        ),
    }
}

/// The worker's pipes, shared by the call's source reads and its progress reports.
struct Channel {
    input: std::io::Stdin,
    output: std::io::Stdout,
}

fn failed(e: TransformError) -> Reply {
    Reply::Error {
        kind: ErrorKind::of(&e),
        message: e.to_string(),
    }
}

/// Writes one frame to the node; a node that is gone ends the worker.
fn send(chan: &Mutex<Channel>, reply: &Reply, body: &[u8]) {
    let mut c = chan.lock().unwrap_or_else(|e| e.into_inner());
    let head = wire::head(reply, body.len() as u64);
    let sent = c
        .output
        .write_all(&head)
        .and_then(|_| c.output.write_all(body))
        .and_then(|_| c.output.flush());
    if sent.is_err() {
        std::process::exit(0);
    }
}

/// A source the node reads for the worker (an object read by ranges): each read is a
/// [`Reply::Read`] answered by a [`Request::Data`].
struct NodeSource {
    chan: Arc<Mutex<Channel>>,
    source: VideoSource,
    read: AtomicU64,
}

impl RangeRead for NodeSource {
    fn size(&self) -> u64 {
        self.source.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        if offset >= self.source.size || buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len().min(wire::MAX_READ as usize);
        let mut c = self.chan.lock().unwrap_or_else(|e| e.into_inner());
        let head = wire::head(
            &Reply::Read {
                offset,
                len: len as u32,
            },
            0,
        );
        if c.output
            .write_all(&head)
            .and_then(|_| c.output.flush())
            .is_err()
        {
            std::process::exit(0);
        }
        let frame =
            wire::read_frame::<Request, std::io::Error>(|b| c.input.read_exact(b), len as u64)?;
        match frame {
            Ok((Request::Data { error: None }, body)) => {
                buf[..body.len()].copy_from_slice(&body);
                self.read.fetch_add(body.len() as u64, Ordering::Relaxed);
                Ok(body.len())
            }
            Ok((Request::Data { error: Some(e) }, _)) => Err(std::io::Error::other(e)),
            Ok(_) => Err(std::io::Error::other(
                "the node answered a read with another request",
            )),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    fn name(&self) -> String {
        self.source.name.clone()
    }

    fn bytes_fetched(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}
