//! The transform module: turns a source's bytes and a `filters::TransformSpec` into output
//! bytes. `image` (decode, resize, encode, metadata) and `video` (FFmpeg in-process) own the
//! media work; what they share has a room of its own: `geometry` (the one fit/gravity
//! planner), `sniff` (what bytes are), `tempfile` (scratch files removed on drop). This file
//! owns the output type and the error type with its HTTP mapping; `pool` owns the bounded,
//! fair blocking pool every CPU-heavy transform runs on (workers, queue, per-client caps,
//! the memory budget, cancellation), so the async reactor never blocks and a burst of
//! requests queues instead of oversubscribing the cores or the memory. Transforms never cache and never
//! fetch: the origin service hands them bytes or a file.

/// The encoder quality when the request names none (or `auto`): Cloudflare's documented
/// default.
pub const DEFAULT_QUALITY: u8 = 85;

pub mod geometry;
#[cfg(feature = "image-engine")]
pub mod image;
pub mod pool;
#[cfg(feature = "image-engine")]
pub mod sandbox;
pub mod sniff;
pub mod tempfile;
#[cfg(feature = "video-engine")]
pub mod video;

use crate::error::{ApiError, ErrorCode};
use bytes::Bytes;
pub use pool::{Pool, Turn};

/// A finished transform.
#[derive(Debug, Clone)]
pub struct Output {
    pub body: Bytes,
    pub content_type: &'static str,
    /// Output dimensions (0 for audio / JSON).
    pub width: u32,
    pub height: u32,
    /// Extra response headers (e.g. `Vary: Accept`, `Cache-Control` overrides).
    pub headers: Vec<(String, String)>,
}

impl Output {
    /// A body that is not a picture (JSON, a playlist, a file's metadata): no size, no
    /// extra headers.
    pub fn plain(body: Bytes, content_type: &'static str) -> Output {
        Output {
            body,
            content_type,
            width: 0,
            height: 0,
            headers: Vec::new(),
        }
    }
}

/// Random access to a source object that is not on local disk (an S3 object, a remote
/// file answering ranges): the video engine reads only the byte ranges the demuxer asks
/// for, so a frame from the middle of a 2 GB object never reads 2 GB. Called from the
/// blocking pool, never from the async reactor.
pub trait RangeRead: Send + Sync {
    /// Total size of the object in bytes.
    fn size(&self) -> u64;
    /// Reads up to `buf.len()` bytes at `offset`; `Ok(0)` only at or past the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
    /// A short name for error messages (the object path).
    fn name(&self) -> String;
    /// Bytes fetched from the source so far (what the transform cost the source).
    fn bytes_fetched(&self) -> u64;
}

/// Why a transform failed. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// Parameters that cannot apply to this input (400).
    #[error("{0}")]
    BadRequest(String),
    /// Input over a byte or pixel limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A format or codec we do not handle (415).
    #[error("{0}")]
    Unsupported(String),
    /// Corrupt, truncated or otherwise undecodable input (422).
    #[error("{0}")]
    Invalid(String),
    /// Over the per-transform time budget (504).
    #[error("{0}")]
    Timeout(String),
    /// A bug or an I/O failure on our side (500).
    #[error("{0}")]
    Internal(String),
    /// The pool's queue is full: try again shortly (503 + `Retry-After`).
    #[error("{0}")]
    Overloaded(String),
    /// The request the work was for went away; nobody reads the answer (504 if anyone does).
    #[error("{0}")]
    Cancelled(String),
}

impl TransformError {
    pub fn to_api(&self) -> ApiError {
        match self {
            TransformError::BadRequest(m) => ApiError::bad_request(m.clone()),
            TransformError::TooLarge(m) => {
                ApiError::new(413, ErrorCode::PayloadTooLarge, m.clone())
            }
            TransformError::Unsupported(m) => {
                ApiError::new(415, ErrorCode::UnsupportedMedia, m.clone())
            }
            TransformError::Invalid(m) => {
                ApiError::new(422, ErrorCode::ProcessingFailed, m.clone())
            }
            TransformError::Timeout(m) | TransformError::Cancelled(m) => {
                ApiError::timeout(m.clone())
            }
            TransformError::Internal(m) => {
                ApiError::new(500, ErrorCode::ProcessingFailed, m.clone())
            }
            TransformError::Overloaded(m) => {
                let mut e = ApiError::new(503, ErrorCode::Overloaded, m.clone());
                e.retry_after = Some(1);
                e
            }
        }
    }
}

impl From<geometry::GeometryError> for TransformError {
    /// A box that cannot be planned is the request's fault.
    fn from(e: geometry::GeometryError) -> TransformError {
        TransformError::BadRequest(e.to_string())
    }
}
