//! The sandbox's wire format between the node and a transform worker, one request and one
//! reply at a time over the worker's stdin and stdout:
//!
//! ```text
//! frame = magic "MEW1" · u32 head length · head (JSON) · u64 body length · body
//! ```
//!
//! The request's head says what to do ([`Request`]) and its body is the source; the reply's
//! head says how it went ([`Reply`]) and its body is the output. A worker parses attacker
//! media, so the node treats what a worker sends as untrusted: [`FrameReader`] refuses a
//! wrong magic, a head over [`MAX_HEAD`] or a body over the caller's bound before buffering
//! it, and a reply's content type must be one the engines make. Owns the format only; no
//! process or I/O policy (the caller hands in the reads and writes).

use crate::transform::image::ImageOptions;
use serde::{Deserialize, Serialize};

/// The first bytes of every frame.
pub const MAGIC: [u8; 4] = *b"MEW1";
/// The largest head either side accepts.
pub const MAX_HEAD: u32 = 64 * 1024;

/// What the node asks of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The memory the image transform of the body would hold ([`Reply::Need`]). The worker
    /// keeps the body and the spec for a [`Request::Proceed`] that may follow; any other
    /// request drops them.
    Estimate {
        spec: filters::TransformSpec,
        opts: ImageOptions,
    },
    /// The image transform the last [`Request::Estimate`] estimated ([`Reply::Output`] +
    /// the output as the body). No body.
    Proceed,
    /// Try what a sandboxed worker must not be able to do and report each outcome
    /// ([`Reply::SelfTest`]): open a TCP socket, read `path`, start a process.
    SelfTest { path: String },
    /// A video call, the one request of a worker started for it. The source is the
    /// descriptor the worker was started with, or read from the node by ranges
    /// ([`Reply::Read`], answered by [`Request::Data`]). Replies: [`Reply::Progress`] any
    /// number of times, then [`Reply::Probe`], [`Reply::Output`], [`Reply::Written`] or
    /// [`Reply::Error`]. No body.
    #[cfg(feature = "video-engine")]
    Video {
        call: crate::transform::video::VideoCall,
        source: VideoSource,
    },
    /// The bytes a [`Reply::Read`] asked for as the body (fewer only at the end of the
    /// source), or why they could not be read.
    Data { error: Option<String> },
}

/// The source of a video call, as the worker sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoSource {
    /// For messages (the object's path).
    pub name: String,
    pub size: u64,
    /// The source is the worker's descriptor 3 (a file the node opened); otherwise it is
    /// read from the node by ranges.
    pub fd: bool,
}

/// The most bytes one [`Reply::Read`] may ask for.
pub const MAX_READ: u32 = 4 << 20;

/// How a request went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Need {
        bytes: u64,
    },
    Output {
        content_type: String,
        width: u32,
        height: u32,
        headers: Vec<(String, String)>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// Source bytes wanted: `len` (at most [`MAX_READ`]) from `offset`.
    Read {
        offset: u64,
        len: u32,
    },
    /// How far a long video call is, 0..=1.
    Progress {
        done: f32,
    },
    #[cfg(feature = "video-engine")]
    Probe {
        probe: crate::transform::video::Probe,
    },
    /// A file output, written where the call said (or the HLS package in its directory).
    #[cfg(feature = "video-engine")]
    Written {
        written: crate::transform::video::Written,
    },
    SelfTest {
        /// What the worker runs under, as it found it (see [`Confinement`]).
        confinement: Confinement,
        /// `socket(AF_INET)`, `open(path)`, `fork()`: `refused: <errno>` or `ALLOWED`.
        socket: String,
        open: String,
        fork: String,
        /// A video worker's: creating a file beside its output directory (refused) and in
        /// it (allowed). Empty for an image worker.
        #[serde(default)]
        outside: String,
        #[serde(default)]
        inside: String,
    },
}

/// What confines a worker, as the worker itself reports it after locking down.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confinement {
    /// The seccomp filter is installed.
    pub seccomp: bool,
    /// Landlock: `full`, `partial` or `unsupported` (the kernel has none).
    pub landlock: String,
    /// `PR_SET_NO_NEW_PRIVS` is set.
    pub no_new_privs: bool,
    /// The worker's user id after dropping root (65534 when the node runs as root).
    pub uid: u32,
    /// `RLIMIT_AS` in bytes.
    pub address_space: u64,
}

/// The [`crate::transform::TransformError`] kinds, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadRequest,
    TooLarge,
    Unsupported,
    Invalid,
    Timeout,
    Internal,
    Overloaded,
    Cancelled,
}

impl ErrorKind {
    pub fn of(e: &crate::transform::TransformError) -> ErrorKind {
        use crate::transform::TransformError as T;
        match e {
            T::BadRequest(_) => ErrorKind::BadRequest,
            T::TooLarge(_) => ErrorKind::TooLarge,
            T::Unsupported(_) => ErrorKind::Unsupported,
            T::Invalid(_) => ErrorKind::Invalid,
            T::Timeout(_) => ErrorKind::Timeout,
            T::Internal(_) => ErrorKind::Internal,
            T::Overloaded(_) => ErrorKind::Overloaded,
            T::Cancelled(_) => ErrorKind::Cancelled,
        }
    }

    pub fn error(self, message: String) -> crate::transform::TransformError {
        use crate::transform::TransformError as T;
        match self {
            ErrorKind::BadRequest => T::BadRequest(message),
            ErrorKind::TooLarge => T::TooLarge(message),
            ErrorKind::Unsupported => T::Unsupported(message),
            ErrorKind::Invalid => T::Invalid(message),
            ErrorKind::Timeout => T::Timeout(message),
            ErrorKind::Internal => T::Internal(message),
            ErrorKind::Overloaded => T::Overloaded(message),
            ErrorKind::Cancelled => T::Cancelled(message),
        }
    }
}

impl Reply {
    /// An engine's output as a reply and its body.
    pub fn output(o: crate::transform::Output) -> (Reply, bytes::Bytes) {
        let reply = Reply::Output {
            content_type: o.content_type.to_string(),
            width: o.width,
            height: o.height,
            headers: o.headers,
        };
        (reply, o.body)
    }

    /// An output reply and its body back as an engine output, checked as untrusted: a
    /// known content type, plain headers only. `None` for any other reply.
    pub fn into_output(
        self,
        body: Vec<u8>,
    ) -> Option<Result<crate::transform::Output, crate::transform::TransformError>> {
        let Reply::Output {
            content_type,
            width,
            height,
            headers,
        } = self
        else {
            return None;
        };
        let Some(content_type) = self::content_type(&content_type) else {
            return Some(Err(crate::transform::TransformError::Internal(format!(
                "a transform worker answered content type {content_type:?}"
            ))));
        };
        Some(Ok(crate::transform::Output {
            body: bytes::Bytes::from(body),
            content_type,
            width,
            height,
            headers: headers
                .into_iter()
                .filter(|(k, v)| header_ok(k, v))
                .collect(),
        }))
    }
}

/// The content types an engine output may carry (a reply naming another is refused).
const CONTENT_TYPES: &[&str] = &[
    "image/webp",
    "image/avif",
    "image/jpeg",
    "image/png",
    "image/gif",
    "application/json",
    "video/mp4",
    "video/webm",
    "audio/mp4",
    "application/vnd.apple.mpegurl",
];

/// `name` as one of the engines' content types.
pub fn content_type(name: &str) -> Option<&'static str> {
    CONTENT_TYPES.iter().copied().find(|c| *c == name)
}

/// A reply header is kept only when its name and value are plain, short header text.
pub fn header_ok(name: &str, value: &str) -> bool {
    let token = |c: u8| c.is_ascii_alphanumeric() || b"-_".contains(&c);
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(token)
        && !name.to_ascii_lowercase().starts_with("x-media-edge")
        && value.len() <= 1024
        && value.bytes().all(|c| (0x20..0x7f).contains(&c))
}

/// The bytes of a frame before its body: magic, `head` serialized, the body's length.
pub fn head<T: Serialize>(head: &T, body_len: u64) -> Vec<u8> {
    // A head is a small struct of ours: serializing it cannot fail.
    let h = serde_json::to_vec(head).unwrap_or_default();
    let mut out = Vec::with_capacity(16 + h.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&body_len.to_be_bytes());
    out
}

/// One whole frame: [`head`] then `body`.
pub fn frame<T: Serialize>(h: &T, body: &[u8]) -> Vec<u8> {
    let mut out = head(h, body.len() as u64);
    out.extend_from_slice(body);
    out
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame magic {0:02x?} is not MEW1")]
    Magic([u8; 4]),
    #[error("frame head of {0} bytes is over {MAX_HEAD}")]
    HeadTooLarge(u32),
    #[error("frame body of {len} bytes is over {max}")]
    BodyTooLarge { len: u64, max: u64 },
    #[error("frame head does not parse: {0}")]
    Head(String),
    #[error("frame ends after {0} bytes")]
    Truncated(usize),
}

/// Reads one frame from `read_exact` (which fills the whole buffer or fails), with a body
/// of at most `max_body` bytes. The buffer for the body is allocated only once its length
/// is known to be within the bound.
pub fn read_frame<T, E>(
    read_exact: impl FnMut(&mut [u8]) -> Result<(), E>,
    max_body: u64,
) -> Result<Result<(T, Vec<u8>), FrameError>, E>
where
    T: for<'de> Deserialize<'de>,
{
    read_frame_by(read_exact, |_| max_body)
}

/// [`read_frame`] with the body's bound chosen by the head (a head that carries no body
/// gets 0).
pub fn read_frame_by<T, E>(
    mut read_exact: impl FnMut(&mut [u8]) -> Result<(), E>,
    max_body: impl Fn(&T) -> u64,
) -> Result<Result<(T, Vec<u8>), FrameError>, E>
where
    T: for<'de> Deserialize<'de>,
{
    let mut fixed = [0u8; 8];
    read_exact(&mut fixed)?;
    let magic: [u8; 4] = [fixed[0], fixed[1], fixed[2], fixed[3]];
    if magic != MAGIC {
        return Ok(Err(FrameError::Magic(magic)));
    }
    let head_len = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    if head_len > MAX_HEAD {
        return Ok(Err(FrameError::HeadTooLarge(head_len)));
    }
    let mut head = vec![0u8; head_len as usize];
    read_exact(&mut head)?;
    let head: T = match serde_json::from_slice(&head) {
        Ok(h) => h,
        Err(e) => return Ok(Err(FrameError::Head(e.to_string()))),
    };
    let mut len = [0u8; 8];
    read_exact(&mut len)?;
    let len = u64::from_be_bytes(len);
    let max_body = max_body(&head);
    if len > max_body {
        return Ok(Err(FrameError::BodyTooLarge { len, max: max_body }));
    }
    let mut body = vec![0u8; len as usize];
    read_exact(&mut body)?;
    Ok(Ok((head, body)))
}

/// [`read_frame`] over a byte slice: the frame and what follows it.
pub fn decode<T>(data: &[u8], max_body: u64) -> Result<(T, Vec<u8>, usize), FrameError>
where
    T: for<'de> Deserialize<'de>,
{
    let mut at = 0usize;
    let r = read_frame(
        |buf: &mut [u8]| {
            let end = at.checked_add(buf.len()).filter(|&e| e <= data.len());
            match end {
                Some(end) => {
                    buf.copy_from_slice(&data[at..end]);
                    at = end;
                    Ok(())
                }
                None => Err(FrameError::Truncated(data.len())),
            }
        },
        max_body,
    );
    match r {
        Ok(Ok((h, b))) => Ok((h, b, at)),
        Ok(Err(e)) | Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_ok() -> Reply {
        Reply::Output {
            content_type: "image/webp".into(),
            width: 800,
            height: 600,
            headers: vec![("vary".into(), "Accept".into())],
        }
    }

    #[test]
    fn a_frame_decodes_to_what_was_written() {
        let f = frame(&reply_ok(), b"RIFF....WEBP");
        let (h, body, used): (Reply, _, _) = decode(&f, 1 << 20).expect("decodes");
        assert_eq!(h, reply_ok());
        assert_eq!(body, b"RIFF....WEBP");
        assert_eq!(used, f.len());
    }

    #[test]
    fn bad_frames_are_refused_before_their_body_is_buffered() {
        let good = frame(&reply_ok(), &[7u8; 100]);
        // Wrong magic.
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            decode::<Reply>(&bad, 1 << 20),
            Err(FrameError::Magic(_))
        ));
        // A head over the limit.
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&(MAX_HEAD + 1).to_be_bytes());
        assert_eq!(
            decode::<Reply>(&bad, 1 << 20).err(),
            Some(FrameError::HeadTooLarge(MAX_HEAD + 1))
        );
        // A body over the caller's bound (claimed 2^60 bytes: refused, not allocated).
        let head_len = u32::from_be_bytes([good[4], good[5], good[6], good[7]]) as usize;
        let mut bad = good.clone();
        bad[8 + head_len..16 + head_len].copy_from_slice(&(1u64 << 60).to_be_bytes());
        assert_eq!(
            decode::<Reply>(&bad, 1 << 20).err(),
            Some(FrameError::BodyTooLarge {
                len: 1 << 60,
                max: 1 << 20
            })
        );
        // Cut anywhere: truncated, never a panic.
        for cut in 0..good.len() {
            assert!(decode::<Reply>(&good[..cut], 1 << 20).is_err(), "cut {cut}");
        }
        // A head of another shape.
        let f = frame(
            &serde_json::json!({"reply": "output", "width": "wide"}),
            b"",
        );
        assert!(matches!(
            decode::<Reply>(&f, 1 << 20),
            Err(FrameError::Head(_))
        ));
    }

    #[test]
    fn only_engine_content_types_and_plain_headers_pass() {
        assert_eq!(content_type("image/avif"), Some("image/avif"));
        assert_eq!(content_type("text/html"), None);
        assert!(header_ok("vary", "Accept"));
        assert!(!header_ok("set-cookie\r\n", "x"));
        assert!(!header_ok("X-Media-Edge-Client", "1.2.3.4"));
        assert!(!header_ok("x-a", "line\nbreak"));
        assert!(!header_ok("", "x"));
    }

    #[test]
    fn requests_round_trip_with_a_spec() {
        let mut spec = filters::TransformSpec::new(filters::Mode::Image);
        spec.width = Some(320);
        spec.format = Some(filters::Format::Avif);
        let r = Request::Estimate {
            spec,
            opts: ImageOptions {
                max_upscale_area: 2.5,
                timeout: std::time::Duration::from_millis(1500),
                ..ImageOptions::default()
            },
        };
        let f = frame(&r, b"source");
        let (back, body, _): (Request, _, _) = decode(&f, 64).expect("decodes");
        assert_eq!(back, r);
        assert_eq!(body, b"source");
    }

    #[cfg(feature = "video-engine")]
    #[test]
    fn a_video_call_and_its_replies_round_trip() {
        use crate::transform::video::{VideoCall, VideoOp, VideoOptions, Written};
        let mut spec = filters::TransformSpec::new(filters::Mode::Video);
        spec.width = Some(640);
        let r = Request::Video {
            call: VideoCall {
                op: VideoOp::Transcode,
                spec,
                opts: VideoOptions::default(),
                out: Some("/tmp/x/out".into()),
            },
            source: VideoSource {
                name: "clip.mp4".into(),
                size: 1 << 40,
                fd: false,
            },
        };
        let (back, _, _): (Request, _, _) = decode(&frame(&r, b""), 0).expect("decodes");
        assert_eq!(back, r);
        let replies = [
            Reply::Read {
                offset: 1 << 33,
                len: MAX_READ,
            },
            Reply::Progress { done: 0.25 },
            Reply::Written {
                written: Written {
                    content_type: "video/mp4".into(),
                    width: 640,
                    height: 360,
                    duration_secs: 4.0,
                    bytes_read: 9,
                },
            },
        ];
        for reply in replies {
            let (back, _, _): (Reply, _, _) = decode(&frame(&reply, b""), 0).expect("decodes");
            assert_eq!(back, reply);
        }
        // The answer to a read carries its bytes, bounded by what was asked.
        let data = frame(&Request::Data { error: None }, &[1u8; 10]);
        assert!(decode::<Request>(&data, 9).is_err());
        assert!(decode::<Request>(&data, 10).is_ok());
        assert_eq!(content_type("video/webm"), Some("video/webm"));
    }
}
