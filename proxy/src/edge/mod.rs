//! The edge: Pingora's `ProxyHttp` with pingora-cache in front of the origin service.
//!
//! Owns the request path through the cache: loop prevention (`Via`), routing of built-in
//! endpoints (health, metrics, admin, `PURGE`), the cache key, cacheability and TTLs by status
//! class, `Vary`, purge checks on hits, serve-stale decisions, ranged misses, and the response
//! headers clients see (`X-Cache`, `X-Cache-Key`, `X-Request-ID`, `Age`, `Via`). It never
//! fetches from sources or transforms: misses go to the origin service over its socket.

pub mod admin;
pub mod front;
pub mod purge;
pub mod security;
pub mod storage;

use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::origin::{EXTERNAL_PATH, HDR_EXTERNAL};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::filters::{calculate_fresh_until, calculate_serve_stale_durations};
use pingora_cache::key::HashBinary;
use pingora_cache::lock::CacheKeyLockImpl;
use pingora_cache::{
    CacheKey, CacheMeta, CacheMetaDefaults, CachePhase, ForcedFreshness, HitHandler, NoCacheReason,
    RespCacheable, VarianceBuilder,
};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use purge::PurgeLog;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use storage::TieredStorage;

/// A per-process secret marking the edge's own background-fill requests.
pub const FILL_HEADER: &str = "x-media-edge-fill";

/// Everything the edge shares across requests.
pub struct EdgeState {
    pub cfg: Arc<Config>,
    /// Our `Via` hop, `1.1 {via_token}`, built once.
    pub via: http::HeaderValue,
    pub storage: &'static TieredStorage,
    pub lock: &'static CacheKeyLockImpl,
    pub purge: PurgeLog,
    pub admin_token: Option<String>,
    pub purge_allowed: filters::CidrSet,
    pub security: security::Security,
    pub started: Instant,
    pub fill_token: String,
    /// `http://127.0.0.1:PORT` of a plain listener, for background fills.
    pub fill_base: Option<String>,
    pub fills: parking_lot::Mutex<HashSet<String>>,
    pub http: reqwest::Client,
    pub origin_socket: String,
}

pub struct Edge {
    pub state: Arc<EdgeState>,
}

/// Per-request state.
pub struct Ctx {
    pub request_id: String,
    pub key: Option<String>,
    pub path: String,
    pub origin: Option<usize>,
    single_range: bool,
    pub passthrough: bool,
    /// Answered from the memory tier by [`Edge::fast_hit`].
    fast_hit: bool,
    is_fill: bool,
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
}

/// A request resolved to a spec, an origin and the origin service's request target.
pub struct Resolution {
    pub resolved: filters::Resolved,
    pub origin: Option<usize>,
    pub upstream_path: String,
    /// The client-supplied URL of an external fetch.
    pub external: Option<String>,
    /// The response depends on `Accept` (`format=auto`).
    pub vary_accept: bool,
}

/// What the edge makes of a request head ([`Edge::admit`]).
pub(crate) enum Admit {
    /// Answer with this error.
    Refuse(ApiError),
    Health,
    Metrics,
    Admin,
    Purge,
    /// `debug=view`: shown after the admin check, which needs the session.
    Debug(Box<Resolution>),
    /// A cache request, `ctx` filled; its rate limit is still to be checked
    /// ([`Edge::rate_gate`]).
    Proceed(filters::OperationClass),
}

/// Writes a JSON error response. Never fails the request further: errors writing are logged.
pub async fn respond_error(session: &mut Session, request_id: &str, e: &ApiError) {
    if let Some((resp, body)) = error_response(request_id, e) {
        respond(session, resp, body).await;
    }
}

/// The JSON error response for `e`: header and body.
pub fn error_response(request_id: &str, e: &ApiError) -> Option<(ResponseHeader, Bytes)> {
    let body = Bytes::from(e.body());
    let mut resp = ResponseHeader::build(e.status, Some(6)).ok()?;
    let _ = resp.insert_header("content-type", "application/json");
    let _ = resp.insert_header("content-length", body.len().to_string());
    let _ = resp.insert_header("cache-control", "no-store");
    let _ = resp.insert_header("x-request-id", request_id);
    if let Some(r) = e.retry_after {
        let _ = resp.insert_header("retry-after", r.to_string());
    }
    Some((resp, body))
}

/// Writes a complete response (header + body).
pub async fn respond(session: &mut Session, resp: ResponseHeader, body: Bytes) {
    let head_only = session.req_header().method == http::Method::HEAD;
    if let Err(e) = session
        .write_response_header(Box::new(resp), head_only)
        .await
    {
        tracing::debug!(error = %e, "writing response header");
        return;
    }
    if !head_only {
        if let Err(e) = session.write_response_body(Some(body), true).await {
            tracing::debug!(error = %e, "writing response body");
        }
    }
}

/// Writes a JSON success response.
pub async fn respond_json(
    session: &mut Session,
    request_id: &str,
    status: u16,
    value: &serde_json::Value,
) {
    let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
    let Ok(mut resp) = ResponseHeader::build(status, Some(5)) else {
        return;
    };
    let _ = resp.insert_header("content-type", "application/json");
    let _ = resp.insert_header("content-length", body.len().to_string());
    let _ = resp.insert_header("cache-control", "no-store");
    let _ = resp.insert_header("x-request-id", request_id);
    respond(session, resp, body).await;
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a request path could climb out of a folder or prefix (checked before routing).
pub fn path_is_suspicious(path: &str) -> bool {
    crate::origin::sources::check_path(path)
        .is_err_and(|e| matches!(e, crate::origin::sources::SourceError::Refused(_)))
}

/// The client's address as the TCP peer gave it.
pub fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

impl Edge {
    /// Cache key of an original (no transform): `orig:{path}`.
    pub fn original_key(path: &str) -> String {
        filters::cache_key(
            &filters::TransformSpec::new(filters::Mode::Original),
            &filters::Source::Path(path.to_string()),
        )
    }

    /// Resolves a request into a spec (filters crate), its origin, its cache key and the
    /// origin service's request target. `format=auto` is negotiated here from `Accept`, so
    /// the negotiated format (not the raw header) enters the key.
    pub fn resolve(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> std::result::Result<Resolution, ApiError> {
        let cfg = &self.state.cfg;
        let to_api = |e: filters::FilterError| ApiError::new(e.status(), e.code(), e.to_string());
        // `/proxy/external?url=..&<params>`: the same as the cdn-cgi form with an absolute URL.
        let rewritten;
        let content =
            filters::content::rewrite(path, query, &cfg.content.prefix).map_err(to_api)?;
        let (path, query) = if let Some(c) = &content {
            // `/proxy/{image,thumbnail,metadata}/{sha256}`: a path under the content prefix.
            (
                c.path.as_str(),
                Some(c.query.as_str()).filter(|q| !q.is_empty()),
            )
        } else if path == "/proxy/external" {
            let mut url = None;
            let mut opts = Vec::new();
            for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                if k == "url" {
                    url = Some(v.into_owned());
                } else if !matches!(k.as_ref(), "signature" | "expires" | "kid") {
                    opts.push(format!("{k}={v}"));
                }
            }
            let url = url
                .ok_or_else(|| ApiError::bad_request("/proxy/external needs url=<http(s) URL>"))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ApiError::bad_request(
                    "url must be an http:// or https:// URL",
                ));
            }
            if opts.is_empty() {
                let spec = filters::TransformSpec::new(filters::Mode::Original);
                return self.finish_external(spec, url, None);
            }
            rewritten = format!("/cdn-cgi/image/{}/{url}", opts.join(","));
            (rewritten.as_str(), None)
        } else {
            (path, query)
        };
        let parts = filters::RequestParts {
            path,
            query,
            headers,
        };
        let mut resolved =
            filters::resolve(&parts, &cfg.filters, &filters::ResolveOptions::default())
                .map_err(to_api)?;
        let (origin, source_path) = match &resolved.source {
            filters::Source::Path(p) => {
                let Some(origin) = cfg.origin_index(p) else {
                    if content.is_some() {
                        return Err(ApiError::not_found(format!(
                            "no origin serves content-hash objects (paths under {}): see [content] in the README",
                            cfg.content.prefix
                        )));
                    }
                    return Err(ApiError::no_matching_origin(p));
                };
                let opts = &cfg.origins[origin].options;
                let p = p.clone();
                if *opts != filters::ResolveOptions::default() {
                    resolved = filters::resolve(&parts, &cfg.filters, opts).map_err(to_api)?;
                }
                (Some(origin), p)
            }
            filters::Source::External(_) => (None, EXTERNAL_PATH.to_string()),
        };
        let vary_accept = resolved.spec.format == Some(filters::Format::Auto);
        if vary_accept {
            let accept = headers.get("accept").and_then(|v| v.to_str().ok());
            let negotiated =
                filters::negotiate_format(accept, false, self.state.cfg.transform.avif);
            if matches!(negotiated, filters::Format::Avif | filters::Format::Webp) {
                resolved.spec.format = Some(negotiated);
            }
            resolved.cache_key = filters::cache_key(&resolved.spec, &resolved.source);
        }
        if let filters::Source::External(url) = &resolved.source {
            let url = url.clone();
            return self.finish_external(resolved.spec.clone(), url, Some((resolved, vary_accept)));
        }
        let upstream_path = if resolved.spec.is_passthrough() {
            source_path
        } else {
            format!("{source_path}?{}", resolved.spec.to_canonical_query())
        };
        Ok(Resolution {
            resolved,
            origin,
            upstream_path,
            vary_accept,
            external: None,
        })
    }

    /// An external URL request: allowed only when `external.enabled`.
    fn finish_external(
        &self,
        spec: filters::TransformSpec,
        url: String,
        resolved: Option<(filters::Resolved, bool)>,
    ) -> std::result::Result<Resolution, ApiError> {
        if !self.state.cfg.external.enabled {
            return Err(ApiError::forbidden(
                "external fetches are not enabled on this node",
            ));
        }
        let source = filters::Source::External(url.clone());
        let (resolved, vary_accept) = match resolved {
            Some(r) => r,
            None => {
                let cache_key = filters::cache_key(&spec, &source);
                let r = filters::Resolved {
                    spec: spec.clone(),
                    source,
                    cache_key,
                    vary: vec![],
                    accept_ch: false,
                    derivative: None,
                    debug: false,
                    needs_async: false,
                    form: filters::RequestForm::Query,
                    akamai: false,
                    diagnostics: None,
                };
                (r, false)
            }
        };
        let upstream_path = if spec.is_passthrough() {
            EXTERNAL_PATH.to_string()
        } else {
            format!("{EXTERNAL_PATH}?{}", spec.to_canonical_query())
        };
        Ok(Resolution {
            resolved,
            origin: None,
            upstream_path,
            vary_accept,
            external: Some(url),
        })
    }

    fn spawn_fill(&self, path_and_query: String, key: String) {
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

/// Freshness defaults when a response says nothing: none here (status-class TTLs apply).
fn no_ttl(_: http::StatusCode) -> Option<Duration> {
    None
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            request_id: String::new(),
            key: None,
            path: String::new(),
            origin: None,
            single_range: false,
            passthrough: false,
            fast_hit: false,
            is_fill: false,
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
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let resolution = match self.admit(session.req_header(), peer_ip(session), ctx) {
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
                    "version": env!("CARGO_PKG_VERSION"),
                });
                respond_json(session, &ctx.request_id, 200, &v).await;
                return Ok(true);
            }
            Admit::Metrics => {
                let body = Bytes::from(crate::metrics::render(&self.state.storage.stats));
                let Ok(mut resp) = ResponseHeader::build(200, Some(3)) else {
                    return Ok(true);
                };
                let _ = resp.insert_header("content-type", "text/plain; version=0.0.4");
                let _ = resp.insert_header("content-length", body.len().to_string());
                let _ = resp.insert_header("cache-control", "no-store");
                respond(session, resp, body).await;
                return Ok(true);
            }
            Admit::Admin => {
                admin::handle(self, session, ctx).await;
                return Ok(true);
            }
            Admit::Purge => {
                admin::purge_one(self, session, ctx).await;
                return Ok(true);
            }
            Admit::Debug(resolution) => resolution,
        };
        let Resolution {
            resolved,
            origin,
            upstream_path,
            external,
            ..
        } = *resolution;
        let allowed = self.state.cfg.server.debug_view || admin::is_admin(self, session);
        if !allowed {
            let e =
                ApiError::forbidden("debug=view needs the admin token or server.debug_view = true");
            respond_error(session, &ctx.request_id, &e).await;
            return Ok(true);
        }
        let mut v = serde_json::to_value(&resolved.diagnostics).unwrap_or_default();
        v["origin"] = match origin.map(|o| &self.state.cfg.origins[o]) {
            Some(o) => serde_json::json!({ "name": o.name, "matcher": o.matcher,
                "sources": o.sources.iter().map(|s| s.kind()).collect::<Vec<_>>() }),
            None => serde_json::json!({ "name": "external", "url": external }),
        };
        v["cache_key"] = serde_json::json!(resolved.cache_key);
        v["upstream"] = serde_json::json!(upstream_path);
        respond_json(session, &ctx.request_id, 200, &v).await;
        Ok(true)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if !self.state.cfg.cache.enabled || ctx.key.is_none() {
            return Ok(());
        }
        session
            .cache
            .enable(self.state.storage, None, None, Some(self.state.lock), None);
        session
            .cache
            .set_max_file_size_bytes(self.state.cfg.cache.max_object.0 as usize);
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let key = ctx.key.as_deref().unwrap_or("");
        Ok(CacheKey::new(key, ""))
    }

    fn cache_miss(&self, session: &mut Session, ctx: &mut Ctx) {
        if ctx.single_range && self.state.cfg.cache.range_miss_passthrough && !ctx.is_fill {
            // Answer the range from the source and fill the whole object in the background,
            // instead of making this client wait for (and the edge read) the whole object.
            session
                .cache
                .disable(NoCacheReason::Custom("range miss passthrough"));
            ctx.passthrough = true;
            let pq = session
                .req_header()
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| ctx.path.clone());
            if let Some(key) = ctx.key.clone() {
                self.spawn_fill(pq, key);
            }
            return;
        }
        session.cache.cache_miss();
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
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
            if let Err(e) = self.state.security.rate_check(class, ip) {
                ctx.rate_limited = Some(e);
                return Error::e_explain(ErrorType::HTTPStatus(429), "rate limited");
            }
        }
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new_uds(&self.state.origin_socket, false, String::new())?;
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = Some(self.state.cfg.server.origin_timeout.0);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream.insert_header("x-request-id", &ctx.request_id)?;
        upstream.remove_header(FILL_HEADER);
        upstream.remove_header(HDR_EXTERNAL);
        upstream.remove_header(crate::origin::HDR_AVIF_FALLBACK);
        // A negotiated AVIF may be answered at once in the client's next-best format while
        // the AVIF is encoded in the background (`transform.avif_background`).
        let negotiated_avif = ctx.vary_accept
            && ctx
                .resolved
                .as_ref()
                .is_some_and(|r| r.spec.format == Some(filters::Format::Avif));
        if negotiated_avif && self.state.cfg.transform.avif_background {
            let accept = header(session.req_header(), "accept");
            let fallback = filters::negotiate_format(accept, false, false);
            upstream.insert_header(crate::origin::HDR_AVIF_FALLBACK, fallback.as_str())?;
        }
        if let Some(url) = &ctx.external_url {
            upstream.insert_header(HDR_EXTERNAL, url.as_str())?;
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

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        if let (Some(t), Some(o)) = (ctx.upstream_started, ctx.origin) {
            let name = &self.state.cfg.origins[o].name;
            METRICS
                .origin_latency
                .with_label_values(&[name.as_str()])
                .observe(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        use RespCacheable::Uncacheable;
        let status = resp.status.as_u16();
        if status == 206 || status == 304 {
            return Ok(Uncacheable(NoCacheReason::Custom(
                "partial or not-modified",
            )));
        }
        let vary_star = resp.headers.get_all("vary").iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|x| x.trim() == "*"))
                .unwrap_or(true)
        });
        if vary_star || resp.headers.contains_key("set-cookie") {
            return Ok(Uncacheable(NoCacheReason::OriginNotCache));
        }
        let too_big = header_u64(resp, "content-length")
            .is_some_and(|l| l > self.state.cfg.cache.max_object.0);
        if too_big {
            return Ok(Uncacheable(NoCacheReason::ResponseTooLarge));
        }
        let cc = CacheControl::from_resp_headers(resp);
        if cc
            .as_ref()
            .is_some_and(|c| c.is_cacheable() == Cacheable::No)
        {
            return Ok(Uncacheable(NoCacheReason::OriginNotCache));
        }
        let authorized = session.req_header().headers.contains_key("authorization");
        if authorized
            && !cc
                .as_ref()
                .is_some_and(|c| c.allow_caching_authorized_req())
        {
            return Ok(Uncacheable(NoCacheReason::OriginNotCache));
        }
        let cache = &self.state.cfg.cache;
        let defaults = CacheMetaDefaults::new(
            no_ttl,
            cache.stale_while_revalidate.0.as_secs() as u32,
            cache.stale_if_error.0.as_secs() as u32,
        );
        let now = SystemTime::now();
        let class_ttl = match ctx.origin {
            Some(o) => self.state.cfg.origins[o].ttl.for_status(status),
            None if ctx.external_url.is_some() && (200..300).contains(&status) => {
                Some(self.state.cfg.external.ttl.0).filter(|d| !d.is_zero())
            }
            None => None,
        }
        .and_then(|d| now.checked_add(d));
        let Some(fresh_until) =
            calculate_fresh_until(now, cc.as_ref(), resp, authorized, &defaults).or(class_ttl)
        else {
            return Ok(Uncacheable(NoCacheReason::OriginNotCache));
        };
        let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &defaults);
        let mut header = resp.clone();
        if let Some(c) = &cc {
            c.strip_private_headers(&mut header);
        }
        Ok(RespCacheable::Cacheable(CacheMeta::new(
            fresh_until,
            now,
            swr,
            sie,
            header,
        )))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        let mut names: Vec<String> = meta
            .headers()
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return None;
        }
        names.sort();
        names.dedup();
        let mut vb = VarianceBuilder::new();
        for n in names {
            let v = req
                .headers
                .get(n.as_str())
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            vb.add_owned_name_value(n, v);
        }
        vb.finalize()
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        // None: stale-while-revalidate; Some: stale-if-error, for upstream failures only.
        error.is_none_or(|e| e.esource() == &ErrorSource::Upstream)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let phase = session.cache.phase();
        let x_cache = match phase {
            CachePhase::Hit => "HIT",
            CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
            // An expired entry answered from cache because the origin failed: stale-if-error.
            CachePhase::Expired if ctx.upstream_status.is_none_or(|s| s >= 500) => "STALE",
            CachePhase::Expired => "EXPIRED",
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
            _ if ctx.passthrough => "MISS",
            CachePhase::Disabled(_) | CachePhase::Bypass => "BYPASS",
            _ => "MISS",
        };
        if matches!(
            phase,
            CachePhase::Hit
                | CachePhase::Stale
                | CachePhase::StaleUpdating
                | CachePhase::Revalidated
                | CachePhase::RevalidatedNoCache(_)
        ) {
            if let Some(meta) = session.cache.maybe_cache_meta() {
                resp.insert_header("age", http::HeaderValue::from(meta.age().as_secs()))?;
            }
        }
        self.decorate(resp, ctx, x_cache)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let api = match e.etype() {
            _ if ctx.rate_limited.is_some() => ctx.rate_limited.take(),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                Some(ApiError::timeout("origin service timed out"))
            }
            ErrorType::HTTPStatus(code) => {
                Some(ApiError::new(*code, "BAD_REQUEST", "request refused"))
            }
            _ => match e.esource() {
                ErrorSource::Upstream => Some(ApiError::origin_error("origin service failed")),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        None
                    }
                    _ => Some(ApiError::bad_request("malformed request")),
                },
                _ => Some(ApiError::internal("internal error")),
            },
        };
        let code = match api {
            Some(api) => {
                ctx.error_code = Some(api.code);
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
        log_request(
            &session.req_header().method,
            status,
            result,
            sent,
            error,
            ctx,
        );
    }
}

/// Counts and logs one answered request (metrics by status and cache result, bytes, latency;
/// one `tracing` line), whichever path answered it.
pub(crate) fn log_request(
    method: &http::Method,
    status: u16,
    result: &str,
    sent: u64,
    error: Option<&str>,
    ctx: &Ctx,
) {
    crate::metrics::count_request(status);
    METRICS.bytes_out.inc_by(sent);
    let ms = ctx.started.elapsed().as_secs_f64();
    crate::metrics::observe_request(result, ms);
    tracing::info!(
        request_id = %ctx.request_id,
        client_ip = %ctx.client_ip.map(|i| i.to_string()).unwrap_or_default(),
        method = %method,
        path = %ctx.path,
        status,
        cache = result,
        cache_key = ctx.key.as_deref().unwrap_or(""),
        bytes = sent,
        ms = (ms * 1000.0) as u64,
        error = error.unwrap_or(""),
        "request"
    );
}

impl Edge {
    /// Everything `request_filter` decides from the request head alone, in order: request id,
    /// peer and client IP, `Via` loop, built-in routes, method, size caps, traversal, resolution
    /// (spec, origin, key), `debug=view`, authorization. No side effects beyond filling `ctx`:
    /// the rate limit, which counts, is [`Self::rate_gate`]'s, so the front door can ask this
    /// and still hand the request to Pingora untouched.
    pub(crate) fn admit(
        &self,
        req: &RequestHeader,
        peer: Option<std::net::IpAddr>,
        ctx: &mut Ctx,
    ) -> Admit {
        ctx.request_id = header(req, "x-request-id")
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string)
            .unwrap_or_else(new_request_id);
        let refuse = |ctx: &mut Ctx, e: ApiError| {
            ctx.error_code = Some(e.code);
            Admit::Refuse(e)
        };
        if let Some(peer) = peer {
            let sec = &self.state.security;
            if let Err(e) = sec.check_peer(peer, req.uri.path()) {
                return refuse(ctx, e);
            }
            ctx.client_ip = Some(sec.client_ip(peer, &req.headers));
        }
        let token = &self.state.cfg.server.via_token;
        let looped = req
            .headers
            .get_all("via")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|hop| hop.split_whitespace().nth(1) == Some(token.as_str()))
            });
        if looped {
            let e = ApiError::new(
                508,
                "LOOP_DETECTED",
                format!("request already passed through {token}"),
            );
            return refuse(ctx, e);
        }
        let path = req.uri.path();
        let method = &req.method;
        if path == "/health" && (method == http::Method::GET || method == http::Method::HEAD) {
            return Admit::Health;
        }
        if path == "/metrics" && method == http::Method::GET {
            return Admit::Metrics;
        }
        if path == "/admin" || path.starts_with("/admin/") {
            return Admit::Admin;
        }
        if method.as_str() == "PURGE" {
            return Admit::Purge;
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            let e = ApiError::new(
                405,
                "METHOD_NOT_ALLOWED",
                format!("method {method} not allowed"),
            );
            return refuse(ctx, e);
        }
        if let Err(e) = check_hygiene(req) {
            return refuse(ctx, e);
        }
        if path_is_suspicious(path) {
            return refuse(
                ctx,
                ApiError::bad_request(format!("path {path:?} is not allowed")),
            );
        }
        let resolution = match self.resolve(path, req.uri.query(), &req.headers) {
            Ok(r) => r,
            Err(e) => return refuse(ctx, e),
        };
        if resolution.resolved.debug {
            return Admit::Debug(Box::new(resolution));
        }
        let Resolution {
            resolved,
            origin,
            upstream_path,
            vary_accept,
            external,
        } = resolution;
        let class = filters::ratelimit::classify_resolved(path, &resolved);
        let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if let Err(e) = self
            .state
            .security
            .authorize(class, pq, header(req, "authorization"))
        {
            return refuse(ctx, e);
        }
        ctx.is_fill = header(req, FILL_HEADER) == Some(self.state.fill_token.as_str());
        ctx.origin = origin;
        ctx.external_url = external;
        ctx.key = Some(resolved.cache_key.clone());
        ctx.single_range = resolved.spec.is_passthrough()
            && header(req, "range")
                .is_some_and(|r| r.trim_start().starts_with("bytes=") && !r.contains(','));
        ctx.upstream_path = Some(upstream_path);
        ctx.vary_accept = vary_accept;
        ctx.resolved = Some(resolved);
        ctx.path = path.to_string();
        Admit::Proceed(class)
    }

    /// The rate limit of an admitted request: checked (and counted) now when hits count,
    /// else remembered for `proxy_upstream_filter` (misses only). The edge's own background
    /// fills are never limited.
    pub(crate) fn rate_gate(
        &self,
        class: filters::OperationClass,
        ctx: &mut Ctx,
    ) -> std::result::Result<(), ApiError> {
        if ctx.is_fill {
            return Ok(());
        }
        let sec = &self.state.security;
        if !sec.limit_hits() {
            ctx.rate_class = Some(class);
            return Ok(());
        }
        match ctx.client_ip {
            Some(ip) => sec
                .rate_check(class, ip)
                .inspect_err(|e| ctx.error_code = Some(e.code)),
            None => Ok(()),
        }
    }

    /// Answers a plain `GET`/`HEAD` of a fresh, whole object held by the memory tier without
    /// pingora-cache's lookup machinery: the same header pingora-cache would send (stored
    /// header, `Age`, HTTP/1.1) decorated as every response is, then the body. Only when no
    /// cache semantics beyond "fresh hit" are involved: no `Range`, no conditional request,
    /// no `Vary`, status 200 with a length, not purged. Everything else returns `false` and
    /// takes the ordinary path (which also decodes an entry's metadata for later fast hits).
    async fn fast_hit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let head = req.method == http::Method::HEAD;
        let Some(hit) = self.fresh_hit(req, ctx) else {
            return Ok(false);
        };
        let mut resp = hit.prepared.header.clone();
        if resp
            .insert_header(http::header::AGE, hit.age.as_secs())
            .and_then(|_| self.decorate_request(&mut resp, ctx))
            .is_err()
        {
            return Ok(false);
        }
        self.count_fast_hit(ctx);
        // A write error goes back to Pingora (logged, connection not reused), as on any hit.
        session.write_response_header(Box::new(resp), head).await?;
        if !head {
            session.write_response_body(Some(hit.body), true).await?;
        }
        Ok(true)
    }

    /// The memory tier's answer to an admitted request, when it can be given without
    /// pingora-cache: a plain `GET`/`HEAD` (no `Range`, no conditional header, not a fill)
    /// whose key is held whole, fresh, without `Vary`, status 200 with a length, not purged.
    /// The object's part of the response header is prepared once per memory object, as a
    /// [`ResponseHeader`] and as HTTP/1.1 bytes ([`storage::Prepared`]). Not counted: see
    /// [`Self::count_fast_hit`].
    pub(crate) fn fresh_hit(&self, req: &RequestHeader, ctx: &Ctx) -> Option<storage::FreshHit> {
        const CONDITIONAL: [http::header::HeaderName; 6] = [
            http::header::RANGE,
            http::header::IF_NONE_MATCH,
            http::header::IF_MODIFIED_SINCE,
            http::header::IF_RANGE,
            http::header::IF_MATCH,
            http::header::IF_UNMODIFIED_SINCE,
        ];
        let st = &self.state;
        if !st.cfg.cache.enabled || ctx.is_fill {
            return None;
        }
        if !(req.method == http::Method::HEAD || req.method == http::Method::GET)
            || CONDITIONAL.iter().any(|h| req.headers.contains_key(h))
        {
            return None;
        }
        let key = ctx.key.as_deref()?;
        // Prepared once per memory object: the stored header as pingora-cache would send it
        // (HTTP/1.1) with everything that depends only on the object, its key and the config.
        let prepare = |h: &ResponseHeader| {
            let eligible = h.status == http::StatusCode::OK
                && !h.headers.contains_key(http::header::VARY)
                && h.headers.contains_key(http::header::CONTENT_LENGTH)
                && !h.headers.contains_key(http::header::TRANSFER_ENCODING);
            if !eligible {
                return None;
            }
            let tags = h.headers.get("cache-tag").and_then(|v| v.to_str().ok());
            let tags = tags.map(Into::into);
            let mut header = h.clone();
            header.set_version(http::Version::HTTP_11);
            self.decorate_object(&mut header, Some(key), "HIT").ok()?;
            // What every hit of this key sets itself (names fixed by the key's spec).
            let replaced: Vec<&'static str> = request_headers(ctx, None)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let wire = front::head_bytes(&header, &replaced);
            Some(storage::Prepared {
                header,
                wire,
                replaced,
                tags,
            })
        };
        let hit = st.storage.fresh_mem_hit(&CacheKey::new(key, ""), prepare)?;
        let purged = st
            .purge
            .is_purged(key, &ctx.path, hit.prepared.tags.as_deref(), hit.created);
        (!purged).then_some(hit)
    }

    /// Counts a fast hit (cache result, memory-tier hit) and marks the request as one.
    pub(crate) fn count_fast_hit(&self, ctx: &mut Ctx) {
        crate::metrics::count_cache_result("HIT");
        ctx.fast_hit = true;
        self.state.storage.count_fast_hit();
    }

    /// The headers every response to a cacheable request gets, whichever path answered it
    /// ([`Self::decorate_object`] then [`Self::decorate_request`]), counted by `X-Cache`.
    fn decorate(&self, resp: &mut ResponseHeader, ctx: &Ctx, x_cache: &'static str) -> Result<()> {
        self.decorate_object(resp, ctx.key.as_deref(), x_cache)?;
        self.decorate_request(resp, ctx)?;
        crate::metrics::count_cache_result(x_cache);
        Ok(())
    }

    /// What depends only on the object, its key and the config: `X-Cache`, `X-Cache-Key`,
    /// our `Via` hop, `Accept-Ranges`; `Cache-Tag` (unless kept) and internal headers removed.
    fn decorate_object(
        &self,
        resp: &mut ResponseHeader,
        key: Option<&str>,
        x_cache: &'static str,
    ) -> Result<()> {
        resp.insert_header("x-cache", http::HeaderValue::from_static(x_cache))?;
        if let Some(k) = key {
            resp.insert_header("x-cache-key", k)?;
        }
        let token = &self.state.cfg.server.via_token;
        let joined = match resp.headers.get("via").and_then(|v| v.to_str().ok()) {
            Some(existing) if !existing.is_empty() => Some(format!("{existing}, 1.1 {token}")),
            _ => None,
        };
        match joined {
            Some(v) => resp.insert_header("via", v)?,
            None => resp.insert_header("via", self.state.via.clone())?,
        }
        if !self.state.cfg.server.keep_cache_tag {
            resp.remove_header("cache-tag");
        }
        resp.remove_header(crate::origin::HDR_ORIGIN);
        // As pingora-cache's range filter does on a hit: a 200 with a length accepts ranges.
        if resp.status.as_u16() == 200
            && (resp.headers.contains_key(http::header::CONTENT_LENGTH)
                || !resp.headers.contains_key("accept-ranges"))
        {
            resp.insert_header("accept-ranges", "bytes")?;
        }
        Ok(())
    }

    /// What depends on this request: `X-Request-ID`, the spec's headers, `Vary`, `Accept-CH`.
    fn decorate_request(&self, resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
        let stored_vary = resp.headers.get("vary").and_then(|v| v.to_str().ok());
        for (k, v) in request_headers(ctx, stored_vary) {
            resp.insert_header(k, v)?;
        }
        Ok(())
    }
}

/// The headers [`Edge::decorate_request`] sets, given the stored `Vary` value: the request id,
/// the spec's headers, `Vary` (stored plus what the resolution varies on), `Accept-CH`.
pub(crate) fn request_headers(ctx: &Ctx, stored_vary: Option<&str>) -> Vec<(&'static str, String)> {
    let mut out = vec![("x-request-id", ctx.request_id.clone())];
    let Some(r) = &ctx.resolved else {
        return out;
    };
    out.extend(filters::response_headers(&r.spec));
    let mut vary: Vec<&str> = r.vary.clone();
    if ctx.vary_accept {
        vary.push("Accept");
    }
    if !vary.is_empty() {
        let mut all: Vec<String> = stored_vary
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for v in vary {
            if !all.iter().any(|a| a.eq_ignore_ascii_case(v)) {
                all.push(v.to_string());
            }
        }
        out.push(("vary", all.join(", ")));
    }
    if r.accept_ch {
        out.push(("accept-ch", filters::ACCEPT_CH.to_string()));
    }
    out
}

/// A fresh request id: 32 hex digits, a random per-process prefix and a counter (unique
/// without a random-number syscall per request).
fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let v = (u128::from(prefix) << 64) | u128::from(n);
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((v >> (124 - 4 * i)) & 0xf) as usize];
    }
    out.iter().map(|&b| b as char).collect()
}

/// Request size caps: URL length, query parameter count, header count and bytes.
pub const MAX_URL_BYTES: usize = 8192;
pub const MAX_QUERY_PARAMS: usize = 64;
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

fn check_hygiene(req: &RequestHeader) -> std::result::Result<(), ApiError> {
    let url_len = req
        .uri
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    if url_len > MAX_URL_BYTES {
        return Err(ApiError::new(
            414,
            "BAD_REQUEST",
            format!("URL of {url_len} bytes is over {MAX_URL_BYTES}"),
        ));
    }
    let params = req
        .uri
        .query()
        .map(|q| q.split('&').filter(|p| !p.is_empty()).count())
        .unwrap_or(0);
    if params > MAX_QUERY_PARAMS {
        return Err(ApiError::bad_request(format!(
            "{params} query parameters is over the limit of {MAX_QUERY_PARAMS}"
        )));
    }
    let count = req.headers.len();
    let bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if count > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            431,
            "BAD_REQUEST",
            format!("{count} headers / {bytes} bytes is over {MAX_HEADERS} / {MAX_HEADER_BYTES}"),
        ));
    }
    Ok(())
}

fn header_u64(resp: &ResponseHeader, name: &str) -> Option<u64> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicious_paths_fast_check_agrees_with_clean_path() {
        let slow = |p: &str| {
            crate::origin::sources::clean_path(p)
                .is_err_and(|e| matches!(e, crate::origin::sources::SourceError::Refused(_)))
        };
        for p in [
            "/samples/photo.jpg",
            "/a/../b",
            "/a/./b",
            "/..",
            "/.",
            "/a/..b/c",
            "/a/b..",
            "/a//b",
            "/",
            "/a/%2e%2e/b",
            "/a/%252e%252e/b",
            "/a\\b",
            "/a/%5c/b",
            "/a/%00",
            "/caf%C3%A9.jpg",
            "/a/.hidden",
        ] {
            assert_eq!(path_is_suspicious(p), slow(p), "{p}");
        }
        assert!(path_is_suspicious("/a/../b"));
        assert!(path_is_suspicious("/a/%2e%2e/b"));
        assert!(!path_is_suspicious("/a/..b/c"));
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_unique() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert_eq!(a[..16], b[..16], "one per-process prefix");
        let (na, nb) = (
            u64::from_str_radix(&a[16..], 16).unwrap(),
            u64::from_str_radix(&b[16..], 16).unwrap(),
        );
        assert_eq!(nb, na + 1);
    }
}
