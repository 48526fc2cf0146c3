//! The transform module: turns a source's bytes and a `filters::TransformSpec` into output
//! bytes. `image` (decode, resize, encode, metadata) and `video` (FFmpeg in-process) own the
//! media work; what they share has a room of its own: `geometry` (the one fit/gravity
//! planner), `sniff` (what bytes are), `tempfile` (scratch files removed on drop). This file
//! owns the output type, the error type and its HTTP mapping, and the bounded blocking pool
//! every CPU-heavy transform runs on, so the async reactor never blocks and a burst of
//! requests queues instead of oversubscribing the cores. Transforms never cache and never
//! fetch: the origin service hands them bytes or a file.

/// The encoder quality when the request names none (or `auto`): Cloudflare's documented
/// default.
pub const DEFAULT_QUALITY: u8 = 85;

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
    /// The pool's queue is full: try again shortly (503 + `Retry-After`).
    #[error("{0}")]
    Overloaded(String),
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

/// A bounded pool for blocking, CPU-heavy work: at most `permits` jobs run at once, and at
/// most `max_waiting` wait for a turn (past that a job is refused: [`TransformError::Overloaded`]).
#[derive(Clone)]
pub struct Pool {
    permits: Arc<Semaphore>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    max_waiting: usize,
}

/// A turn on the pool: held while the job's input is read and while it runs, so a waiting
/// job holds no input in memory.
pub struct Turn {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Turn {
    /// Runs `f` on a blocking thread with this turn. A panic in `f` is an internal error.
    pub async fn run<T, F>(self, f: F) -> Result<T, TransformError>
    where
        F: FnOnce() -> Result<T, TransformError> + Send + 'static,
        T: Send + 'static,
    {
        let turn = self;
        let r = tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| TransformError::Internal(format!("transform task failed: {e}")))?;
        drop(turn);
        r
    }
}

impl Pool {
    /// `permits` jobs at once, 16 waiting per permit.
    pub fn new(permits: usize) -> Pool {
        let permits = permits.max(1);
        Pool::with_queue(permits, permits * 16)
    }

    /// `permits` jobs at once, at most `max_waiting` waiting.
    pub fn with_queue(permits: usize, max_waiting: usize) -> Pool {
        Pool {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            waiting: Arc::default(),
            max_waiting,
        }
    }

    /// Waits for a turn, or refuses at once when `max_waiting` jobs already wait.
    pub async fn turn(&self) -> Result<Turn, TransformError> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(Turn { _permit: p });
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        // Released on every path, cancellation included.
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        if queued >= self.max_waiting {
            return Err(TransformError::Overloaded(format!(
                "{queued} transforms already waiting: try again shortly"
            )));
        }
        let p = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| TransformError::Internal("transform pool closed".into()))?;
        Ok(Turn { _permit: p })
    }

    /// Sized from the machine's cores.
    pub fn for_cores() -> Pool {
        Pool::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
    }

    /// Runs `f` on a blocking thread once a turn is free ([`Self::turn`]).
    pub async fn run<T, F>(&self, f: F) -> Result<T, TransformError>
    where
        F: FnOnce() -> Result<T, TransformError> + Send + 'static,
        T: Send + 'static,
    {
        self.turn().await?.run(f).await
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
                    use std::sync::atomic::Ordering::SeqCst;
                    let now = running.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    // Until two jobs have run at once (a serial pool never gets there: the
                    // test then fails on the peak, after at most a few seconds).
                    let t0 = std::time::Instant::now();
                    while peak.load(SeqCst) < 2 && t0.elapsed() < std::time::Duration::from_secs(3)
                    {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    running.fetch_sub(1, SeqCst);
                    Ok(())
                })
                .await
            }
        });
        for r in futures::future::join_all(jobs).await {
            assert!(r.is_ok());
        }
        assert_eq!(
            peak.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "two at once, never more"
        );
        let r: Result<(), _> = pool.run(|| panic!("boom")).await;
        assert!(matches!(r, Err(TransformError::Internal(_))));
        assert_eq!(TransformError::TooLarge("x".into()).to_api().status, 413);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_frees_its_places() {
        let pool = Pool::with_queue(1, 2);
        let held = pool.turn().await.unwrap();
        // Two may wait; the third is refused with 503 + Retry-After.
        let w1 = tokio::spawn({
            let pool = pool.clone();
            async move { pool.turn().await.map(|_| ()) }
        });
        let w2 = tokio::spawn({
            let pool = pool.clone();
            async move { pool.turn().await.map(|_| ()) }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pool.waiting.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "waiters never queued");
            tokio::task::yield_now().await;
        }
        let e = match pool.turn().await {
            Err(e) => e,
            Ok(_) => panic!("a third waiter was queued"),
        };
        let api = e.to_api();
        assert_eq!((api.status, api.retry_after), (503, Some(1)));
        drop(held);
        w1.await.unwrap().unwrap();
        w2.await.unwrap().unwrap();
        assert_eq!(pool.waiting.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert!(pool.turn().await.is_ok(), "room again");
    }
}
