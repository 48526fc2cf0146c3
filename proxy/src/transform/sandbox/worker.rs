//! The transform worker's side (`media-edge transform-worker`, started by the node with an
//! empty environment): warm up what loads lazily (libheif's plugins), lock down, then answer
//! one request after another on stdin/stdout until the node closes stdin. It holds no
//! config, no secret and no socket; it knows only the bytes and the spec it is handed. A
//! panic is an internal-error reply; a crash or an abort ends the worker, and the node
//! answers for it.

use super::lockdown;
use super::wire::{self, ErrorKind, Reply, Request};
use std::io::{Read, Write};

/// The largest source a worker reads (the node bounds it far lower: `max_image_bytes`).
const MAX_SOURCE: u64 = 4 << 30;

/// Runs the worker; returns the process's exit code.
pub fn main(parent: u32, address_space: u64) -> i32 {
    warm_up();
    let confinement = lockdown::lock_down(parent, address_space);
    // Not locked for good: a video call reads its source over the same pipes.
    let mut input = std::io::stdin();
    let mut output = std::io::stdout();
    // What the last estimate was for: a `Proceed` transforms it.
    let mut planned: Option<Planned> = None;
    loop {
        let frame =
            wire::read_frame::<Request, std::io::Error>(|buf| input.read_exact(buf), MAX_SOURCE);
        let (request, body) = match frame {
            Ok(Ok(f)) => f,
            // The node closed the pipe (or went away): done.
            Err(_) => return 0,
            Ok(Err(e)) => {
                let reply = Reply::Error {
                    kind: ErrorKind::Internal,
                    message: format!("transform worker: {e}"),
                };
                let _ = output.write_all(&wire::frame(&reply, &[]));
                return 2;
            }
        };
        let (reply, out) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            answer(request, body, &mut planned, &confinement)
        })) {
            Ok(r) => r,
            Err(_) => (
                Reply::Error {
                    kind: ErrorKind::Internal,
                    message: "the transform panicked".into(),
                },
                bytes::Bytes::new(),
            ),
        };
        if output
            .write_all(&wire::head(&reply, out.len() as u64))
            .and_then(|_| output.write_all(&out))
            .and_then(|_| output.flush())
            .is_err()
        {
            return 0;
        }
    }
}

/// Loads what would otherwise be opened on first use, which the lockdown then forbids.
fn warm_up() {
    #[cfg(feature = "heic")]
    crate::transform::image::warm_up_heif();
    #[cfg(feature = "video-engine")]
    crate::transform::video::init();
}

/// A source with its spec, estimated and waiting for `Proceed`.
struct Planned {
    spec: filters::TransformSpec,
    opts: crate::transform::image::ImageOptions,
    source: Vec<u8>,
}

fn answer(
    request: Request,
    body: Vec<u8>,
    planned: &mut Option<Planned>,
    confinement: &wire::Confinement,
) -> (Reply, bytes::Bytes) {
    use crate::transform::image;
    let none = bytes::Bytes::new;
    let failed = |e: crate::transform::TransformError| Reply::Error {
        kind: ErrorKind::of(&e),
        message: e.to_string(),
    };
    let waiting = planned.take();
    match request {
        Request::Estimate { spec, opts } => match image::memory_need(&body, &spec, &opts) {
            Ok(bytes) => {
                *planned = Some(Planned {
                    spec,
                    opts,
                    source: body,
                });
                (Reply::Need { bytes }, none())
            }
            Err(e) => (failed(e), none()),
        },
        Request::Proceed => {
            let Some(p) = waiting else {
                let e = crate::transform::TransformError::Internal(
                    "transform worker: proceed without an estimate".into(),
                );
                return (failed(e), none());
            };
            match image::transform(&p.source, &p.spec, &p.opts) {
                Ok(o) => Reply::output(o),
                Err(e) => (failed(e), none()),
            }
        }
        #[cfg(feature = "video-engine")]
        Request::Video { call, source } => super::video_worker::pooled(call, source),
        // Data nobody asked for: the two sides are out of step, and the next caller would
        // get this caller's answer. End instead.
        Request::Data { .. } => std::process::exit(2),
        Request::SelfTest { path } => {
            let (socket, open, fork) = lockdown::try_forbidden(&path);
            (
                Reply::SelfTest {
                    confinement: confinement.clone(),
                    socket,
                    open,
                    fork,
                    outside: String::new(),
                    inside: String::new(),
                },
                none(),
            )
        }
    }
}
