//! Negotiated AVIF (`format=auto` that chose AVIF from `Accept`): AVIF is slow to encode, so
//! the first request of a key gets the client's next-best format marked short-lived
//! (`X-Avif: pending`) while the AVIF is encoded once in the background; a later request
//! of the key gets the AVIF. Owns the per-key state (pending, ready, failed), bounded in
//! keys and in bytes of finished AVIFs waiting for their request. It must not decide when
//! AVIF is negotiated (the edge does) nor cache (the edge caches the answers).

use bytes::Bytes;

use super::Transformer;
use crate::error::ApiError;
use crate::transform::{Output, TransformError};

/// Where an AVIF encoded in the background waits for the next request of its key.
enum AvifState {
    Pending,
    Ready(Output),
    Failed,
}

/// Background AVIF encodes (one per key at a time) and their results, bounded in bytes.
pub struct AvifBackground {
    inner: parking_lot::Mutex<AvifInner>,
    /// `max-age` of the stand-in answer.
    pub pending_max_age: std::time::Duration,
}

#[derive(Default)]
struct AvifInner {
    states: std::collections::HashMap<String, AvifState>,
    order: std::collections::VecDeque<String>,
    bytes: usize,
}

/// Bytes of finished AVIFs kept waiting for their next request.
const AVIF_READY_BUDGET: usize = 64 << 20;
/// Keys remembered (pending, ready or failed).
const AVIF_MAX_KEYS: usize = 10_000;

/// What to do with a negotiated AVIF request.
enum AvifDecision {
    /// The AVIF is ready: serve it.
    Ready(Output),
    /// Encoding failed before: serve the fallback with normal caching.
    Failed,
    /// Serve the stand-in; `start` says whether this request starts the encode.
    Wait { start: bool },
}

impl AvifBackground {
    pub fn new(pending_max_age: std::time::Duration) -> AvifBackground {
        AvifBackground {
            inner: Default::default(),
            pending_max_age,
        }
    }

    fn decide(&self, key: &str) -> AvifDecision {
        let mut g = self.inner.lock();
        match g.states.get(key) {
            Some(AvifState::Pending) => AvifDecision::Wait { start: false },
            Some(AvifState::Failed) => AvifDecision::Failed,
            Some(AvifState::Ready(_)) => match g.states.remove(key) {
                Some(AvifState::Ready(out)) => {
                    g.bytes -= out.body.len();
                    g.order.retain(|k| k != key);
                    AvifDecision::Ready(out)
                }
                _ => AvifDecision::Wait { start: false },
            },
            None => {
                g.states.insert(key.to_string(), AvifState::Pending);
                g.order.push_back(key.to_string());
                AvifDecision::Wait { start: true }
            }
        }
    }

    fn finish(&self, key: String, result: Result<Output, TransformError>) {
        let mut g = self.inner.lock();
        let state = match result {
            Ok(out) => {
                g.bytes += out.body.len();
                AvifState::Ready(out)
            }
            Err(e) => {
                tracing::info!(key = %key, error = %e, "background AVIF failed");
                AvifState::Failed
            }
        };
        if !g.states.contains_key(&key) {
            g.order.push_back(key.clone());
        }
        g.states.insert(key, state);
        while g.bytes > AVIF_READY_BUDGET || g.order.len() > AVIF_MAX_KEYS {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if let Some(AvifState::Ready(out)) = g.states.remove(&old) {
                g.bytes -= out.body.len();
            }
        }
    }
}

impl Transformer {
    /// A negotiated AVIF: the finished one when a background encode made it, else the
    /// client's next-best format marked short-lived while the AVIF is encoded once.
    pub(super) async fn avif_or_stand_in(
        &self,
        key: String,
        job: &super::Job<'_>,
        fallback: filters::Format,
        bytes: Bytes,
    ) -> Result<Output, ApiError> {
        let spec = &job.spec;
        let mut stand_in = spec.clone();
        stand_in.format = Some(fallback);
        match self.avif.decide(&key) {
            AvifDecision::Ready(out) => return Ok(out),
            AvifDecision::Failed => return self.image_bytes(job, &stand_in, bytes).await,
            AvifDecision::Wait { start: false } => {}
            AvifDecision::Wait { start: true } => self.start_avif(key, job, bytes.clone()),
        }
        let mut out = self.image_bytes(job, &stand_in, bytes).await?;
        out.headers.push((
            "cache-control".into(),
            format!("public, max-age={}", self.avif.pending_max_age.as_secs()),
        ));
        out.headers.push(("x-avif".into(), "pending".into()));
        Ok(out)
    }

    /// The AVIF encoded once in the background, as the pool's background client (with the
    /// job workers: background work never holds every worker), within the memory budget.
    fn start_avif(&self, key: String, job: &super::Job<'_>, bytes: Bytes) {
        let (pool, opts, avif, spec, sandbox) = (
            self.pool.clone(),
            self.engine_options(job),
            self.avif.clone(),
            job.spec.clone(),
            self.isolation(),
        );
        tokio::spawn(async move {
            let r = match pool.turn(crate::transform::pool::BACKGROUND).await {
                Ok(turn) => super::image::on_turn(turn, spec, bytes, opts, sandbox).await,
                Err(e) => Err(e),
            };
            avif.finish(key, r);
        });
    }
}
