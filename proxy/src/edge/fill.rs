//! Background fills: the whole object fetched into the cache after a ranged miss was answered
//! straight from the source (`cache.range_miss_passthrough`).
//!
//! Owns the set of fills in flight (one per key) and the fill itself: a Pingora subrequest of
//! the ranged request without its `Range`, run inside this process through the ordinary
//! cache-fill path (cache lock, storage, purge tags). It never goes out through a listener,
//! so the node's own peer checks, tokens and TLS-only listeners cannot refuse it. A fill is
//! never rate-limited, never answered by the fast path and never itself passed through (see
//! [`super::Ctx`]'s `is_fill`); one too big to cache stops at its response header.

use super::{Ctx, Edge};
use pingora_proxy::subrequest::Ctx as SubrequestCtx;
use pingora_proxy::Session;

/// Marks a subrequest as the background fill of a ranged miss.
struct RangeFill;

impl Edge {
    /// Starts a background fill of the object of `session`'s ranged request (cache key
    /// `key`) unless one is running.
    pub(crate) fn spawn_fill(&self, session: &Session, key: String) {
        let Some(spawner) = session.subrequest_spawner.as_ref() else {
            return;
        };
        if !self.state.fills.lock().insert(key.clone()) {
            return;
        }
        // The subrequest replays this request's head; it drops `Range` itself when it starts
        // (`Edge::start_fill`), as its head is read only then.
        let ctx = SubrequestCtx::builder()
            .user_ctx(Box::new(RangeFill))
            .build();
        let (fill, handle) = spawner.create_subrequest(&session.downstream_session, ctx);
        // Nobody reads the fill's response: its body is dropped as it comes.
        handle.drain_tasks();
        let state = self.state.clone();
        tokio::spawn(async move {
            fill.run().await;
            state.fills.lock().remove(&key);
        });
    }

    /// At the start of a subrequest: marks it as a fill (see [`super::Ctx`]'s `is_fill`) and,
    /// for a range fill, makes it ask for the whole object.
    pub(crate) fn start_fill(&self, session: &mut Session, ctx: &mut Ctx) {
        let Some(sub) = session.subrequest_ctx.as_ref() else {
            return;
        };
        ctx.is_fill = true;
        if sub.user_ctx().is_some_and(|u| u.is::<RangeFill>()) {
            let req = session.req_header_mut();
            req.remove_header(&http::header::RANGE);
            req.remove_header(&http::header::IF_RANGE);
        }
    }

    /// A fill whose object is too big to cache: stopped at its header, not read to the end.
    pub(crate) fn fill_too_big(&self, ctx: &Ctx, content_length: Option<u64>) -> bool {
        ctx.is_fill && content_length.is_some_and(|l| l > ctx.live.cfg.cache.max_object.0)
    }
}
