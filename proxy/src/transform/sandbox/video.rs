//! Video calls in the sandbox, the node's side. A call that writes files (audio,
//! transcode, HLS) gets a worker of its own (`transform-worker --video`), started with the
//! source file opened by the node as its descriptor 3, or fed by ranges over the pipe from
//! the node's reader (an object in S3 or behind HTTP), and with a fresh private directory
//! as descriptor 4, the only place it may write. A call that writes none (probe, JSON,
//! frame, spritesheet) goes to a pooled image worker, fed by ranges. The node relays progress, answers reads within [`wire::MAX_READ`], and moves
//! the output where the caller asked once the worker says it is written. Everything the
//! worker sends is checked as untrusted: a read past the source's end gets nothing, an
//! output type must be one the engine makes, a reply of the wrong kind ends it.

use super::*;
use crate::transform::video::{Media, VideoCall, VideoDone, VideoOp};
use crate::transform::RangeRead;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use wire::VideoSource;

/// The user a worker runs as when the node runs as root (it owns the output directory).
const NOBODY: u32 = 65534;

impl Sandbox {
    /// Runs `call` against `media` in a worker, relaying `progress` (0..=1). The call's
    /// `out` (a file for audio and transcode, a directory for HLS) is where the output is
    /// once this returns `Ok`. Calls that write no file (probe, JSON, frame, spritesheet)
    /// go to a pooled worker under the image workers' confinement, their source read by
    /// ranges from the node; the others get a worker of their own.
    pub fn video(
        &self,
        call: VideoCall,
        media: &Media,
        progress: &dyn Fn(f32),
    ) -> Result<VideoDone, TransformError> {
        let internal = |what: &str, e: std::io::Error| {
            TransformError::Internal(format!("video worker {what}: {e}"))
        };
        let pooled = matches!(
            call.op,
            VideoOp::Probe | VideoOp::Json | VideoOp::Frame | VideoOp::Spritesheet
        );
        // Where the worker writes: a private directory beside a file output, or the HLS
        // package's own (fresh) directory.
        let work = match (call.op, &call.out) {
            (VideoOp::Audio | VideoOp::Transcode, Some(out)) => {
                let parent = out.parent().unwrap_or(Path::new("."));
                let dir = parent.join(format!(
                    ".video-{}",
                    crate::transform::tempfile::unique_suffix()
                ));
                Some(WorkDir::create(dir, true).map_err(|e| internal("directory", e))?)
            }
            (VideoOp::Hls, Some(dir)) => {
                Some(WorkDir::create(dir.clone(), false).map_err(|e| internal("directory", e))?)
            }
            _ => None,
        };
        let (source_fd, reader): (_, Option<Arc<dyn RangeRead>>) = match media {
            Media::File(p) => {
                let f = std::fs::File::open(p).map_err(|e| internal("source", e))?;
                if pooled {
                    (None, Some(Arc::new(FileRange::new(f, media.name())?)))
                } else {
                    (Some(OwnedFd::from(f)), None)
                }
            }
            Media::Ranged(r) => (None, Some(r.clone())),
        };
        let source = VideoSource {
            name: media.name(),
            size: media.size()?,
            fd: source_fd.is_some(),
        };
        // The engine checks its own limit in every loop; what comes after the last check
        // (an MP4's fast-start rewrite, the HLS poster) gets a quarter more.
        let deadline = Instant::now() + call.opts.timeout * 5 / 4 + GRACE;
        let (op, out) = (call.op, call.out.clone());
        let w = if pooled {
            self.take()?
        } else {
            let out_dir = match &work {
                Some(w) => Some(OwnedFd::from(
                    std::fs::File::open(&w.dir).map_err(|e| internal("directory", e))?,
                )),
                None => None,
            };
            self.spawn(SpawnKind::Video {
                source: source_fd,
                out_dir,
            })?
        };
        let req = Request::Video { call, source };
        let (reply, body, mut w) = self.relay(w, &req, reader.as_deref(), progress, deadline)?;
        let answered = matches!(
            (&reply, pooled),
            (Reply::Error { .. }, _)
                | (Reply::Probe { .. }, true)
                | (Reply::Output { .. }, true)
                | (Reply::Written { .. }, false)
        );
        if matches!(reply, Reply::Error { .. }) && self.reached_limit(w.child.id()) {
            OUT_OF_MEMORY.fetch_add(1, Ordering::Relaxed);
            let message = match reply {
                Reply::Error { message, .. } => message,
                _ => String::new(),
            };
            return Err(TransformError::TooLarge(format!(
                "the video transform ran out of memory in its worker (it reached \
                 transform.worker_memory, {} MiB): {message}",
                self.opts.address_space >> 20
            )));
        }
        if pooled && answered {
            w.jobs += 1;
            self.give_back(w);
        } else if pooled {
            CRASHED.fetch_add(1, Ordering::Relaxed);
            drop(w);
        } else {
            FINISHED.fetch_add(1, Ordering::Relaxed);
            drop(w);
        }
        let fetched = |n: u64| reader.as_ref().map_or(n, |r| r.bytes_fetched());
        match (op, reply) {
            (_, Reply::Error { kind, message }) => Err(kind.error(message)),
            (VideoOp::Probe, Reply::Probe { probe }) => Ok(VideoDone::Probe(probe)),
            (VideoOp::Json | VideoOp::Frame | VideoOp::Spritesheet, r @ Reply::Output { .. }) => {
                match r.into_output(body) {
                    Some(o) => o.map(VideoDone::Memory),
                    None => Err(TransformError::Internal("not an output".into())),
                }
            }
            (VideoOp::Audio | VideoOp::Transcode, Reply::Written { mut written }) => {
                checked_type(&written.content_type)?;
                let (Some(work), Some(out)) = (work, out) else {
                    return Err(TransformError::Internal(
                        "a file output without a path".into(),
                    ));
                };
                let name = out.file_name().unwrap_or_default();
                let made = work.dir.join(name);
                adopt(&work.dir, &[name.to_string_lossy().as_ref()], &[])?;
                std::fs::rename(&made, &out).map_err(|e| internal("output", e))?;
                written.bytes_read = fetched(written.bytes_read);
                Ok(VideoDone::File(written))
            }
            (VideoOp::Hls, Reply::Written { mut written }) => {
                if let Some(w) = &work {
                    adopt(&w.dir, &["index.m3u8", "poster.jpg"], &["segment_"])?;
                    check_playlist(&w.dir.join("index.m3u8"))?;
                }
                written.bytes_read = fetched(written.bytes_read);
                Ok(VideoDone::Hls(written))
            }
            (_, other) => Err(unexpected(other)),
        }
    }

    /// A video worker's self-test ([`Sandbox::self_test`]) in a fresh directory in
    /// `scratch`.
    pub(super) fn video_self_test(
        &self,
        req: &Request,
        scratch: &Path,
        deadline: Instant,
    ) -> Result<serde_json::Value, TransformError> {
        let internal = |e: std::io::Error| {
            TransformError::Internal(format!("video worker self-test directory: {e}"))
        };
        std::fs::create_dir_all(scratch).map_err(internal)?;
        let dir = scratch.join(format!(
            ".video-{}",
            crate::transform::tempfile::unique_suffix()
        ));
        let work = WorkDir::create(dir, true).map_err(internal)?;
        let fd = OwnedFd::from(std::fs::File::open(&work.dir).map_err(internal)?);
        let w = self.spawn(SpawnKind::Video {
            source: None,
            out_dir: Some(fd),
        })?;
        let (reply, _, w) = self.relay(w, req, None, &|_| {}, deadline)?;
        drop(w);
        FINISHED.fetch_add(1, Ordering::Relaxed);
        match reply {
            Reply::SelfTest {
                confinement: c,
                socket,
                open,
                fork,
                outside,
                inside,
            } => Ok(serde_json::json!({
                "seccomp": c.seccomp,
                "landlock": c.landlock,
                "no_new_privs": c.no_new_privs,
                "uid": c.uid,
                "tried": {"socket": socket, "open": open, "fork": fork, "write_outside": outside},
                "write_inside": inside,
            })),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `req` and serves the worker's reads and progress until its last reply.
    fn relay(
        &self,
        w: Worker,
        req: &Request,
        reader: Option<&dyn RangeRead>,
        progress: &dyn Fn(f32),
        deadline: Instant,
    ) -> Result<(Reply, Vec<u8>, Worker), TransformError> {
        let cancel = current_cancel();
        let mut sent = write_all(&w.stdin, &wire::head(req, 0), deadline, &cancel);
        // What the node fetches for the worker: the source a few times over at most.
        let mut budget = reader.map_or(0, |r| r.size().saturating_mul(4) + (64 << 20));
        loop {
            if let Err(stop) = sent {
                return Err(self.end(w, stop));
            }
            // Only an output has a body.
            let got = wire::read_frame_by::<Reply, Stop>(
                |buf| read_exact(&w.stdout, buf, deadline, &cancel),
                |r| match r {
                    Reply::Output { .. } => MAX_OUTPUT,
                    _ => 0,
                },
            );
            match got {
                Err(stop) => return Err(self.end(w, stop)),
                Ok(Err(e)) => {
                    CRASHED.fetch_add(1, Ordering::Relaxed);
                    return Err(TransformError::Internal(format!(
                        "a video worker broke the protocol: {e}"
                    )));
                }
                Ok(Ok((Reply::Read { offset, len }, _))) => {
                    let (head, data) = if u64::from(len) > budget {
                        let error = Some("the worker read the source too many times over".into());
                        (Request::Data { error }, Vec::new())
                    } else {
                        read_for(reader, offset, len)
                    };
                    budget = budget.saturating_sub(data.len() as u64);
                    let head = wire::head(&head, data.len() as u64);
                    sent = write_all(&w.stdin, &head, deadline, &cancel)
                        .and_then(|_| write_all(&w.stdin, &data, deadline, &cancel));
                }
                Ok(Ok((Reply::Progress { done }, _))) => {
                    if done.is_finite() {
                        progress(done.clamp(0.0, 1.0));
                    }
                }
                Ok(Ok((last, body))) => return Ok((last, body, w)),
            }
        }
    }
}

/// A source file read at offsets: the node's for a pooled worker, a video worker's own
/// (its descriptor 3).
pub(super) struct FileRange {
    file: std::fs::File,
    size: u64,
    name: String,
    read: std::sync::atomic::AtomicU64,
}

impl FileRange {
    pub(super) fn new(file: std::fs::File, name: String) -> Result<FileRange, TransformError> {
        let size = file
            .metadata()
            .map_err(|e| TransformError::Internal(format!("cannot stat source {name}: {e}")))?
            .len();
        Ok(FileRange {
            file,
            size,
            name,
            read: Default::default(),
        })
    }
}

impl RangeRead for FileRange {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, offset)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn bytes_fetched(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// The answer to a worker's read: the bytes, or why there are none.
fn read_for(reader: Option<&dyn RangeRead>, offset: u64, len: u32) -> (Request, Vec<u8>) {
    let Some(r) = reader else {
        let error = Some("this source is a descriptor, not read by ranges".to_string());
        return (Request::Data { error }, Vec::new());
    };
    let want = u64::from(len.min(wire::MAX_READ)).min(r.size().saturating_sub(offset)) as usize;
    let mut buf = vec![0u8; want];
    let mut at = 0;
    while at < want {
        match r.read_at(offset + at as u64, &mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) => {
                let error = Some(e.to_string());
                return (Request::Data { error }, Vec::new());
            }
        }
    }
    buf.truncate(at);
    (Request::Data { error: None }, buf)
}

/// Takes over what a worker wrote in `dir`: each entry must be a regular file named in
/// `names` or starting with one of `prefixes` (and a plain name); each is made the node's
/// (owner, mode 0644), so nothing a worker chose about it outlives the call.
fn adopt(dir: &Path, names: &[&str], prefixes: &[&str]) -> Result<(), TransformError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |what: String| {
        TransformError::Internal(format!("a video worker's output directory holds {what}"))
    };
    let rd = std::fs::read_dir(dir).map_err(|e| bad(format!("nothing readable ({e})")))?;
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    for e in rd {
        let e = e.map_err(|e| bad(format!("an unreadable entry ({e})")))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let plain = name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
        let known = names.contains(&name.as_str()) || prefixes.iter().any(|p| name.starts_with(p));
        let meta = std::fs::symlink_metadata(e.path()).map_err(|e| bad(e.to_string()))?;
        if !plain || !known || !meta.file_type().is_file() {
            return Err(bad(format!("{name:?}, which it should not have made")));
        }
        let path = e.path();
        if uid == 0 {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(|e| bad(e.to_string()))?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| bad(e.to_string()))?;
    }
    if uid == 0 {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// An HLS playlist as the engine writes it: small, only `#EXT` tags without a `URI`, and
/// segment file names.
fn check_playlist(path: &Path) -> Result<(), TransformError> {
    let bad = |why: &str| TransformError::Internal(format!("a video worker's HLS playlist {why}"));
    let len = std::fs::metadata(path)
        .map_err(|_| bad("is missing"))?
        .len();
    if len > 1 << 20 {
        return Err(bad("is over 1 MiB"));
    }
    let text = std::fs::read_to_string(path).map_err(|_| bad("is not text"))?;
    let ok = text.lines().map(str::trim).all(|l| {
        l.is_empty()
            || (l.starts_with("#EXT") && !l.contains("URI"))
            || (l.starts_with("segment_")
                && l.ends_with(".ts")
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"._".contains(&c)))
    });
    if !ok {
        return Err(bad("holds a line the engine does not write"));
    }
    Ok(())
}

fn checked_type(name: &str) -> Result<&'static str, TransformError> {
    wire::content_type(name).ok_or_else(|| {
        TransformError::Internal(format!("a video worker answered content type {name:?}"))
    })
}

/// The directory a video worker writes in, owned by the worker's user; a fresh one is
/// removed on drop (an HLS package's directory is its caller's).
struct WorkDir {
    dir: PathBuf,
    remove: bool,
}

impl WorkDir {
    /// Creates `dir` (a fresh name: an existing one is refused when `fresh`) for the worker.
    fn create(dir: PathBuf, fresh: bool) -> std::io::Result<WorkDir> {
        if fresh {
            std::fs::create_dir(&dir)?;
        } else {
            std::fs::create_dir_all(&dir)?;
        }
        let w = WorkDir { dir, remove: fresh };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&w.dir, Some(NOBODY), Some(NOBODY))?;
        }
        Ok(w)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
