//! Background fills: the whole object fetched into the cache after a ranged miss was answered
//! straight from the source (`cache.range_miss_passthrough`).
//!
//! Owns the set of fills in flight (one per key) and the fill request. Today a fill is a
//! request to this node's own plain listener marked with a per-process secret
//! ([`FILL_HEADER`]), so it takes the ordinary cache-fill path; it must never count against
//! rate limits or be answered by the fast path (see `Edge::admit`).

use super::Edge;

/// A per-process secret marking the edge's own background-fill requests.
pub const FILL_HEADER: &str = "x-media-edge-fill";

impl Edge {
    /// Starts a background fill of `path_and_query` (cache key `key`) unless one is running.
    pub(crate) fn spawn_fill(&self, path_and_query: String, key: String) {
        let Some(base) = self.state.fill_base.clone() else {
            return;
        };
        {
            let mut fills = self.state.fills.lock();
            if !fills.insert(key.clone()) {
                return;
            }
        }
        let state = self.state.clone();
        tokio::spawn(async move {
            let url = format!("{base}{path_and_query}");
            let max = state.cfg.cache.max_object.0;
            let res = state
                .http
                .get(&url)
                .header(FILL_HEADER, &state.fill_token)
                .send()
                .await;
            match res {
                Ok(mut r) => {
                    let too_big = r.content_length().is_some_and(|l| l > max);
                    if !too_big {
                        // Read to the end so the edge completes the cache fill.
                        while let Ok(Some(_)) = r.chunk().await {}
                    }
                }
                Err(e) => tracing::debug!(error = %e, "background fill failed"),
            }
            state.fills.lock().remove(&key);
        });
    }
}
