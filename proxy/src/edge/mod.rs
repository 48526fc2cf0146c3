//! The edge: Pingora's `ProxyHttp` with pingora-cache in front of the origin service.
//!
//! Owns the state shared across requests ([`EdgeState`]), the per-request [`Ctx`] and the
//! `ProxyHttp` hooks, each a thin call into the room that owns the concern:
//! - [`admit`]: request id, peer and client IP, `Via` loop, built-in routes, hygiene,
//!   authorization, rate gate;
//! - [`resolve`]: spec, origin, cache key and the origin service's request target;
//! - [`policy`]: what is stored and for how long, `X-Cache`, variants, serve-stale (pure);
//! - [`fast_hit`]: response decoration and the memory tier's fast answers;
//! - [`fill`]: background fills after ranged misses;
//! - [`respond`]: the answers the edge writes itself and the request log;
//! - [`front`]: the HTTP/1 front door; [`storage`]: the cache tiers; [`purge`]: the purge
//!   log; [`security`]: tokens, signatures, rate limits; [`admin`]: the admin API.
//!
//! It never fetches from sources or transforms: misses go to the origin service over its
//! socket.

pub mod admin;
pub mod admin_config;
pub mod admit;
pub mod analytics;
pub mod cf_api;
pub mod conns;
pub mod dashboard;
pub mod drain;
pub mod fast_hit;
pub mod fill;
pub mod front;
pub mod jobs;
pub mod policy;
pub mod purge;
pub mod resolve;
pub mod respond;
pub mod security;
pub mod storage;
pub mod uploads;

pub use admit::{path_is_suspicious, peer_ip};
pub use resolve::Resolution;
pub use respond::{error_response, respond, respond_error, respond_json};

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::origin::HDR_EXTERNAL;
use admit::{header, Admit};
use async_trait::async_trait;
use pingora_cache::key::HashBinary;
use pingora_cache::lock::CacheKeyLockImpl;
use pingora_cache::{
    CacheKey, CacheMeta, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use purge::PurgeLog;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use storage::TieredStorage;

/// What a live config change replaces as one (`POST /admin/config`): the config and what is
/// built from it. A request works with the one it started with ([`Ctx::live`]).
pub struct Live {
    pub cfg: Arc<Config>,
    pub security: security::Security,
    pub purge_allowed: filters::CidrSet,
}

/// Everything the edge shares across requests.
pub struct EdgeState {
    live: arc_swap::ArcSwap<Live>,
    /// Our `Via` hop, `1.1 {via_token}`, built once.
    pub via: http::HeaderValue,
    pub storage: &'static TieredStorage,
    pub lock: &'static CacheKeyLockImpl,
    pub purge: PurgeLog,
    pub admin_token: Option<String>,
    pub started: Instant,
    /// Keys with a background fill in flight ([`fill`]).
    pub fills: parking_lot::Mutex<HashSet<String>>,
    pub origin_socket: String,
    /// The job queue (and through it the metadata store) for the job API.
    pub queue: Arc<crate::jobs::Queue>,
    /// Uploaded media (`POST /upload`, `/media/{id}`).
    pub uploads: Arc<crate::uploads::Uploads>,
    /// The origin service, told of a live config change with the edge.
    pub origin: Arc<crate::origin::OriginService>,
    /// What the command line set over the file (kept through a live config change).
    pub overrides: crate::server::RunOptions,
    /// One config change at a time.
    pub applying: tokio::sync::Mutex<()>,
    /// The key the dashboard's session cookies are signed with (random, per process).
    pub session_key: [u8; 32],
}

impl EdgeState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        live: Live,
        via: http::HeaderValue,
        storage: &'static TieredStorage,
        lock: &'static CacheKeyLockImpl,
        purge: PurgeLog,
        admin_token: Option<String>,
        origin_socket: String,
        queue: Arc<crate::jobs::Queue>,
        uploads: Arc<crate::uploads::Uploads>,
        origin: Arc<crate::origin::OriginService>,
        overrides: crate::server::RunOptions,
    ) -> EdgeState {
        EdgeState {
            live: arc_swap::ArcSwap::from_pointee(live),
            via,
            storage,
            lock,
            purge,
            admin_token,
            started: Instant::now(),
            fills: Default::default(),
            origin_socket,
            queue,
            uploads,
            origin,
            overrides,
            applying: tokio::sync::Mutex::new(()),
            session_key: rand::random(),
        }
    }

    /// The config (and what is built from it) as of now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Replaces the config for every request that starts from now on.
    pub fn set_live(&self, live: Live) {
        self.live.store(Arc::new(live));
    }
}

pub struct Edge {
    pub state: Arc<EdgeState>,
}

/// Per-request state.
pub struct Ctx {
    /// The config this request started with.
    pub live: Arc<Live>,
    pub request_id: String,
    pub key: Option<String>,
    pub path: String,
    pub origin: Option<usize>,
    single_range: bool,
    pub passthrough: bool,
    /// Answered from the memory tier by [`Edge::fast_hit`].
    fast_hit: bool,
    /// A subrequest of this process (a background fill or revalidation): not rate-limited,
    /// not a fast hit, never passed through.
    is_fill: bool,
    /// A fill stopped at its header: its object is too big to cache.
    fill_stopped: bool,
    started: Instant,
    upstream_started: Option<Instant>,
    upstream_status: Option<u16>,
    error_code: Option<&'static str>,
    /// The resolved request (spec, key, hints used).
    pub resolved: Option<filters::Resolved>,
    /// Path and canonical query sent to the origin service.
    upstream_path: Option<String>,
    /// `format=auto` was negotiated from `Accept`.
    vary_accept: bool,
    /// The client as resolved from trusted forwarding headers.
    pub client_ip: Option<std::net::IpAddr>,
    /// Rate-limit class, checked before going upstream when hits are exempt.
    rate_class: Option<filters::OperationClass>,
    /// A 429 decided in `proxy_upstream_filter`.
    rate_limited: Option<ApiError>,
    /// The client-supplied URL of an external fetch.
    external_url: Option<String>,
    /// The cache tier a hit came from (`memory`, `disk`; empty otherwise).
    pub tier: &'static str,
}

impl Edge {
    /// Answers what [`Edge::admit`] routed to the edge itself (built-in routes, refusals,
    /// `debug=view`); `Ok(false)` for a cache request, which goes on (fast hit or Pingora).
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx, admit: Admit) -> Result<bool> {
        let resolution = match admit {
            Admit::Proceed(class) => {
                if let Err(e) = self.rate_gate(class, ctx) {
                    respond_error(session, &ctx.request_id, &e).await;
                    return Ok(true);
                }
                return self.fast_hit(session, ctx).await;
            }
            Admit::Refuse(e) => {
                respond_error(session, &ctx.request_id, &e).await;
                return Ok(true);
            }
            Admit::Health => {
                let v = serde_json::json!({
                    "status": "healthy",
                    "uptime": self.state.started.elapsed().as_secs(),
                    "disk": {
                        "indexed": self.state.storage.disk_indexed(),
                        "degraded": self.state.storage.disk_degraded(),
                    },
                    "sandbox": self.state.origin.sandbox_report(),
                    "version": env!("CARGO_PKG_VERSION"),
                });
                respond_json(session, &ctx.request_id, 200, &v).await;
                return Ok(true);
            }
            Admit::Metrics => {
                respond::respond_metrics(
                    session,
                    &self.state.storage.stats,
                    self.state.origin.transform_pool(),
                )
                .await;
                return Ok(true);
            }
            Admit::Admin => {
                admin::handle(self, session, ctx).await;
                return Ok(true);
            }
            Admit::Jobs => {
                jobs::handle(self, session, ctx).await;
                return Ok(true);
            }
            Admit::Uploads => {
                uploads::handle(self, session, ctx).await;
                return Ok(true);
            }
            Admit::Purge => {
                admin::purge_one(self, session, ctx).await;
                return Ok(true);
            }
            Admit::Debug(resolution) => resolution,
        };
        self.debug_view(session, ctx, *resolution).await;
        Ok(true)
    }

    /// `debug=view`: the resolution as JSON, for the admin or when `server.debug_view`.
    async fn debug_view(&self, session: &mut Session, ctx: &mut Ctx, resolution: Resolution) {
        let Resolution {
            resolved,
            origin,
            upstream_path,
            external,
            ..
        } = resolution;
        let allowed = ctx.live.cfg.server.debug_view || admin::is_admin(self, session);
        if !allowed {
            let e =
                ApiError::forbidden("debug=view needs the admin token or server.debug_view = true");
            respond_error(session, &ctx.request_id, &e).await;
            return;
        }
        let mut v = serde_json::to_value(&resolved.diagnostics).unwrap_or_default();
        v["origin"] = match origin.map(|o| &ctx.live.cfg.origins[o]) {
            Some(o) => serde_json::json!({ "name": o.name, "matcher": o.matcher,
                "sources": o.sources.iter().map(|s| s.kind()).collect::<Vec<_>>() }),
            None => serde_json::json!({ "name": "external", "url": external }),
        };
        v["cache_key"] = serde_json::json!(resolved.cache_key);
        v["upstream"] = serde_json::json!(upstream_path);
        respond_json(session, &ctx.request_id, 200, &v).await;
    }

    /// The status-class TTL of this request's origin (or of external fetches) for `status`.
    fn class_ttl(&self, ctx: &Ctx, status: u16) -> Option<Duration> {
        match ctx.origin {
            Some(o) => ctx.live.cfg.origins[o].ttl.for_status(status),
            None if ctx.external_url.is_some() && (200..300).contains(&status) => {
                Some(ctx.live.cfg.external.ttl.0).filter(|d| !d.is_zero())
            }
            None => None,
        }
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            live: self.state.live(),
            request_id: String::new(),
            key: None,
            path: String::new(),
            origin: None,
            single_range: false,
            passthrough: false,
            fast_hit: false,
            is_fill: false,
            fill_stopped: false,
            started: Instant::now(),
            upstream_started: None,
            upstream_status: None,
            error_code: None,
            resolved: None,
            upstream_path: None,
            vary_accept: false,
            client_ip: None,
            rate_class: None,
            rate_limited: None,
            external_url: None,
            tier: "",
        }
    }

    fn allow_spawning_subrequest(&self, session: &Session, ctx: &Ctx) -> bool {
        // Only a ranged miss may start a background fill.
        ctx.live.cfg.cache.range_miss_passthrough
            && session
                .req_header()
                .headers
                .contains_key(http::header::RANGE)
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        self.start_fill(session, ctx);
        let admit = self.admit(session.req_header(), peer_ip(session), ctx);
        self.answer(session, ctx, admit).await
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if !ctx.live.cfg.cache.enabled || ctx.key.is_none() {
            return Ok(());
        }
        session
            .cache
            .enable(self.state.storage, None, None, Some(self.state.lock), None);
        session
            .cache
            .set_max_file_size_bytes(ctx.live.cfg.cache.max_object.0 as usize);
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let key = ctx.key.as_deref().unwrap_or("");
        Ok(CacheKey::new(key, ""))
    }

    fn cache_miss(&self, session: &mut Session, ctx: &mut Ctx) {
        if ctx.single_range && ctx.live.cfg.cache.range_miss_passthrough && !ctx.is_fill {
            // Answer the range from the source and fill the whole object in the background,
            // instead of making this client wait for (and the edge read) the whole object.
            session
                .cache
                .disable(NoCacheReason::Custom("range miss passthrough"));
            ctx.passthrough = true;
            if let Some(key) = ctx.key.clone() {
                self.spawn_fill(session, key);
            }
            return;
        }
        session.cache.cache_miss();
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        ctx.tier = TieredStorage::tier_of(hit_handler);
        let tags = meta
            .headers()
            .get("cache-tag")
            .and_then(|v| v.to_str().ok());
        let key = ctx.key.as_deref().unwrap_or("");
        if self
            .state
            .purge
            .is_purged(key, &ctx.path, tags, meta.created())
        {
            return Ok(Some(ForcedFreshness::ForceMiss));
        }
        Ok(None)
    }

    async fn proxy_upstream_filter(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Only requests that reach the origin count against rate limits (hits are exempt).
        if let (Some(class), Some(ip)) = (ctx.rate_class, ctx.client_ip) {
            if let Err(e) = ctx.live.security.rate_check(class, ip) {
                ctx.rate_limited = Some(e);
                return Error::e_explain(ErrorType::HTTPStatus(429), "rate limited");
            }
        }
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new_uds(&self.state.origin_socket, false, String::new())?;
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = Some(ctx.live.cfg.server.origin_timeout.0);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        crate::metrics::count_origin_connection(reused);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Built from an allow-list: nothing else of the client's head reaches the origin
        // service (its answer is cached for everyone).
        policy::origin_request(upstream, &ctx.request_id)?;
        // A negotiated AVIF may be answered at once in the client's next-best format while
        // the AVIF is encoded in the background (`transform.avif_background`).
        let negotiated_avif = ctx.vary_accept
            && ctx
                .resolved
                .as_ref()
                .is_some_and(|r| r.spec.format == Some(filters::Format::Avif));
        if negotiated_avif && ctx.live.cfg.transform.avif_background {
            let accept = header(session.req_header(), "accept");
            let fallback = filters::negotiate_format(accept, false, false);
            upstream.insert_header(crate::origin::HDR_AVIF_FALLBACK, fallback.as_str())?;
        }
        if let Some(url) = &ctx.external_url {
            upstream.insert_header(HDR_EXTERNAL, url.as_str())?;
        }
        if ApiError::flat_for(&ctx.path) {
            upstream.insert_header(crate::origin::HDR_FLAT_ERRORS, "1")?;
        }
        // Whose turn a transform takes on the pool (each client's share is capped).
        if let Some(ip) = ctx.client_ip {
            upstream.insert_header(crate::origin::HDR_CLIENT, pool_client(ip))?;
        }
        if let Some(target) = &ctx.upstream_path {
            let uri: http::Uri = target
                .parse()
                .map_err(|_| Error::explain(ErrorType::InternalError, "bad upstream target"))?;
            upstream.set_uri(uri);
        }
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        // Only GET and HEAD reach the origin service, and it is sent no body length: a body
        // a client attached to one is read and dropped here.
        let m = &session.req_header().method;
        if *m == http::Method::GET || *m == http::Method::HEAD {
            *body = None;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        let length = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if self.fill_too_big(ctx, length) {
            ctx.fill_stopped = true;
            return Error::e_explain(ErrorType::Custom("fill too big"), "object over max_object");
        }
        if let (Some(t), Some(o)) = (ctx.upstream_started, ctx.origin) {
            let name = &ctx.live.cfg.origins[o].name;
            METRICS
                .origin_latency
                .with_label_values(&[name.as_str()])
                .observe(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        let cache = &ctx.live.cfg.cache;
        let limits = policy::Limits {
            max_object: cache.max_object.0,
            stale_while_revalidate: cache.stale_while_revalidate.0,
            stale_if_error: cache.stale_if_error.0,
            max_ttl: cache.max_ttl.0,
        };
        let req = policy::Request {
            class_ttl: self.class_ttl(ctx, resp.status.as_u16()),
        };
        Ok(policy::cacheability(resp, req, &limits, SystemTime::now()))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        policy::variance(meta.headers(), req)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        policy::serves_stale(error)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let phase = session.cache.phase();
        let x_cache = policy::x_cache(phase, ctx.upstream_status, ctx.passthrough);
        if policy::from_storage(phase) {
            if let Some(meta) = session.cache.maybe_cache_meta() {
                resp.insert_header("age", http::HeaderValue::from(meta.age().as_secs()))?;
            }
        }
        self.decorate(resp, ctx, x_cache)?;
        if let Some(location) = redirect_on_error(ctx, resp.status.as_u16()) {
            resp.set_status(302)?;
            resp.insert_header("location", location)?;
            resp.insert_header("cache-control", "no-store")?;
        }
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        // Decided by the edge, and logged by it (`respond::log_request`): a rate limit, a fill
        // stopped because its object is too big to cache.
        ctx.fill_stopped || ctx.error_code == Some(crate::error::ErrorCode::RateLimited.as_str())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let api = if ctx.fill_stopped {
            None
        } else {
            respond::proxy_failure(e, ctx.rate_limited.take())
        };
        let code = match api {
            Some(api) => {
                ctx.error_code = Some(api.code.as_str());
                if session.response_written().is_none() {
                    respond_error(session, &ctx.request_id, &api).await;
                }
                api.status
            }
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let result = if ctx.fast_hit {
            "hit"
        } else {
            session.cache.phase().as_str()
        };
        let sent = session.body_bytes_sent() as u64;
        let error = e.map(|e| e.etype().as_str()).or(ctx.error_code);
        respond::log_request(
            &session.req_header().method,
            session.req_header().uri.path(),
            status,
            result,
            sent,
            error,
            ctx,
        );
    }
}

/// Cloudflare's `onerror=redirect`: a transform of a source on this host that failed (the
/// source could not be read as media, was too large, or the origin failed) answers `302` to
/// the source itself. A missing source (404), a refusal (401, 403, 429) and an external
/// source do not redirect.
fn redirect_on_error(ctx: &Ctx, status: u16) -> Option<String> {
    let r = ctx.resolved.as_ref()?;
    if r.spec.onerror != Some(filters::OnError::Redirect) || r.spec.is_passthrough() {
        return None;
    }
    if !matches!(status, 400 | 413 | 415 | 422 | 500 | 502 | 503 | 504) {
        return None;
    }
    match &r.source {
        filters::Source::Path(p) => {
            const UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
                .add(b' ')
                .add(b'"')
                .add(b'<')
                .add(b'>')
                .add(b'`')
                .add(b'?')
                .add(b'#');
            Some(percent_encoding::utf8_percent_encode(p, UNSAFE).to_string())
        }
        filters::Source::External(_) => None,
    }
}

/// A client's name on the transform pool: its IPv4 address, or its IPv6 /64 (one host
/// usually holds a whole /64, so a finer key would give it as many shares as it likes).
fn pool_client(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod pool_client_tests {
    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let key = |s: &str| super::pool_client(s.parse().unwrap());
        assert_eq!(key("203.0.113.9"), "203.0.113.9");
        assert_eq!(key("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
