//! The transform module: turns a source's bytes and a `filters::TransformSpec` into output
//! bytes. `image` (decode, resize, encode, metadata) and `video` (FFmpeg in-process) own the
//! media work; what they share has a room of its own: `geometry` (the one fit/gravity
//! planner), `sniff` (what bytes are), `tempfile` (scratch files removed on drop). This file
//! owns the output type, the error type and its HTTP mapping, and the bounded blocking pool
//! every CPU-heavy transform runs on, so the async reactor never blocks and a burst of
//! requests queues instead of oversubscribing the cores. Transforms never cache and never
//! fetch: the origin service hands them bytes or a file.

pub mod geometry;
#[cfg(feature = "image-engine")]
pub mod image;
pub mod sniff;
pub mod tempfile;
#[cfg(feature = "video-engine")]
pub mod video;

use crate::error::{ApiError, ErrorCode};
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::Semaphore;

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
            TransformError::Timeout(m) => ApiError::timeout(m.clone()),
            TransformError::Internal(m) => {
                ApiError::new(500, ErrorCode::ProcessingFailed, m.clone())
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

/// A bounded pool for blocking, CPU-heavy work: at most `permits` jobs run at once.
#[derive(Clone)]
pub struct Pool {
    permits: Arc<Semaphore>,
}

impl Pool {
    pub fn new(permits: usize) -> Pool {
        Pool {
            permits: Arc::new(Semaphore::new(permits.max(1))),
        }
    }

    /// Sized from the machine's cores.
    pub fn for_cores() -> Pool {
        Pool::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
    }

    /// Runs `f` on a blocking thread once a permit is free. A panic in `f` is an internal error.
    pub async fn run<T, F>(&self, f: F) -> Result<T, TransformError>
    where
        F: FnOnce() -> Result<T, TransformError> + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| TransformError::Internal("transform pool closed".into()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| TransformError::Internal(format!("transform task failed: {e}")))?
    }

    /// Jobs currently waiting or running (for metrics).
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pool_bounds_concurrency_and_survives_panics() {
        let pool = Pool::new(2);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jobs = (0..8).map(|_| {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            async move {
                pool.run(move || {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                })
                .await
            }
        });
        for r in futures::future::join_all(jobs).await {
            assert!(r.is_ok());
        }
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= 2);
        let r: Result<(), _> = pool.run(|| panic!("boom")).await;
        assert!(matches!(r, Err(TransformError::Internal(_))));
        assert_eq!(TransformError::TooLarge("x".into()).to_api().status, 413);
    }
}
