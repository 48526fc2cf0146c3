//! The origin service: the HTTP upstream the edge cache sits in front of.
//!
//! Owns turning a request path into bytes: it matches the path to an origin, tries that
//! origin's sources in order (404, 5xx and timeouts fall through), and answers with the
//! headers a cache needs (`Content-Length`, `ETag`, `Last-Modified`, `Cache-Control` when the
//! source gave one, `Cache-Tag`, `X-Source-Type`). Bodies stream from the source to the socket.
//! It listens on a unix socket for the in-process edge (a Pingora background service).
//! It holds no caching policy (TTLs, purge and ranges on hits are the edge's) and does no
//! media work itself (that is `transform`, through [`transform::Transformer`]).

pub mod durable;
pub mod ranged;
pub mod sources;
pub mod transform;

use crate::config::{substitute, Config};
use crate::error::{ApiError, ErrorCode};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use sources::{FetchRequest, Source, SourceError};
use std::sync::Arc;
use tokio::sync::watch;

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Headers the edge must not forward from a client to the origin service and back.
pub const HDR_SOURCE_TYPE: &str = "x-source-type";
pub const HDR_ORIGIN: &str = "x-origin";
/// The external URL of an `/__external` request (set only by the edge).
pub const HDR_EXTERNAL: &str = "x-media-edge-external";
/// Set by the edge when it negotiated AVIF from `Accept`: the client's next-best format,
/// answered at once while the AVIF is encoded in the background.
pub const HDR_AVIF_FALLBACK: &str = "x-media-edge-avif-fallback";
/// Who a transform is for (the client IP the edge resolved): the transform pool caps each
/// client's share of the workers. Set by the edge only; a client's own copy is dropped.
pub const HDR_CLIENT: &str = "x-media-edge-client";
/// The origin service's path for external fetches.
pub const EXTERNAL_PATH: &str = "/__external";

/// Why the origin service could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("origins[{origin}].sources[{index}]: {error}")]
    Source {
        origin: usize,
        index: usize,
        #[source]
        error: sources::BuildError,
    },
    #[error(transparent)]
    External(#[from] sources::external::ExternalConfigError),
}

/// One origin with its built sources.
struct BuiltOrigin {
    sources: Vec<Arc<dyn Source>>,
}

/// The config and what is built from it (the origins' sources, the external fetcher): what a
/// live config change replaces as one. A request works with the one it started with.
pub struct Routing {
    pub cfg: Arc<Config>,
    origins: Vec<BuiltOrigin>,
    external: Option<sources::external::ExternalFetcher>,
}

impl Routing {
    /// Builds every origin's sources and the external fetcher of `cfg`.
    pub async fn build(cfg: Arc<Config>) -> Result<Routing, OriginError> {
        let mut origins = Vec::new();
        for (i, o) in cfg.origins.iter().enumerate() {
            let mut built = Vec::new();
            for (j, s) in o.sources.iter().enumerate() {
                built.push(Arc::from(sources::build(s).await.map_err(|error| {
                    OriginError::Source {
                        origin: i,
                        index: j,
                        error,
                    }
                })?));
            }
            origins.push(BuiltOrigin { sources: built });
        }
        let external = if cfg.external.enabled {
            Some(sources::external::ExternalFetcher::new(&cfg.external)?)
        } else {
            None
        };
        Ok(Routing {
            cfg,
            origins,
            external,
        })
    }
}

pub struct OriginService {
    routing: arc_swap::ArcSwap<Routing>,
    transformer: transform::Transformer,
    /// Finished transforms and job rows (absent only in tests of the bare service).
    store: Option<Arc<crate::store::Store>>,
    /// Where requests over the synchronous limits go.
    queue: Option<Arc<crate::jobs::Queue>>,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

tokio::task_local! {
    /// Errors of this request are answered in Fluxer's flat shape (the edge asked, for a
    /// `/proxy/*` route, with [`HDR_FLAT_ERRORS`]).
    static FLAT_ERRORS: bool;
}

/// The edge asks for Fluxer's flat error shape with this header.
pub const HDR_FLAT_ERRORS: &str = "x-media-edge-flat-errors";

/// A JSON error response; 5xx are marked `no-store` so no cache keeps them.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let flat = FLAT_ERRORS.try_with(|f| *f).unwrap_or(false);
    let body = e.body_shaped(flat);
    let mut b = Response::builder()
        .status(StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("content-length", body.len());
    // A flat error is not stored either: the object's key is shared with routes that
    // answer the nested shape.
    if e.status >= 500 || flat {
        b = b.header("cache-control", "no-store");
    }
    if let Some(r) = e.retry_after {
        b = b.header("retry-after", r);
    }
    b.body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

impl OriginService {
    pub async fn new(
        cfg: Arc<Config>,
        store: Option<Arc<crate::store::Store>>,
        queue: Option<Arc<crate::jobs::Queue>>,
    ) -> Result<Self, OriginError> {
        let routing = Routing::build(cfg.clone()).await?;
        let t = &cfg.transform;
        let limits = transform::TransformLimits {
            max_image_bytes: t.max_image_bytes.0,
            max_video_bytes: t.max_video_bytes.0,
            temp_dir: cfg.server.data_dir.join("tmp"),
            hls_dir: cfg.server.data_dir.join("hls"),
            hls_retention: t.hls_retention.0,
        };
        let _ = std::fs::create_dir_all(&limits.hls_dir);
        let _ = std::fs::create_dir_all(&limits.temp_dir);
        let pool = transform_pool(t);
        let transformer = transform::Transformer {
            pool,
            limits,
            hls_locks: Default::default(),
            avif: Arc::new(transform::AvifBackground::new(t.avif_pending_max_age.0)),
            #[cfg(feature = "image-engine")]
            image: transform::image_options(t),
            #[cfg(feature = "image-engine")]
            sandbox: transform::sandbox_for(&cfg),
            #[cfg(feature = "video-engine")]
            video: video_options(&cfg),
            store: store.clone(),
            sync: transform::SyncLimits {
                max_bytes: cfg.jobs.sync_max_bytes.0,
                max_duration: cfg.jobs.sync_max_duration.0,
                slow_codec_max_duration: cfg.jobs.sync_slow_codec_max_duration.0,
                max_frame_pixels: cfg.jobs.sync_max_frame_pixels,
            },
        };
        Ok(OriginService {
            routing: arc_swap::ArcSwap::from_pointee(routing),
            transformer,
            store,
            queue,
        })
    }

    /// The config (and the sources built from it) as of now.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// Serves every request that starts from now on with `routing`.
    pub fn set_routing(&self, routing: Routing) {
        self.routing.store(Arc::new(routing));
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let flat = req.headers().contains_key(HDR_FLAT_ERRORS);
        FLAT_ERRORS
            .scope(flat, async {
                match self.handle_inner(req).await {
                    Ok(r) => r,
                    Err(e) => error_response(&e),
                }
            })
            .await
    }

    async fn handle_inner(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let head = match *req.method() {
            http::Method::GET => false,
            http::Method::HEAD => true,
            ref m => {
                return Err(ApiError::new(
                    405,
                    ErrorCode::MethodNotAllowed,
                    format!("method {m} not allowed"),
                ))
            }
        };
        let path = req.uri().path().to_string();
        if path == EXTERNAL_PATH {
            return self.handle_external(&req).await;
        }
        self.serve(
            head,
            &path,
            req.uri().query(),
            req.headers(),
            &durable::Purpose::Client,
        )
        .await
    }

    /// Answers `path` (an original, or a transform when `query` holds one) for a client or
    /// a job worker. A tenant's upload path (`/_uploads/{tenant}/{sha256}`) the tenant does
    /// not have falls back to the same hash under the content prefix.
    pub(crate) async fn serve(
        &self,
        head: bool,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
        purpose: &durable::Purpose,
    ) -> Result<Response<Body>, ApiError> {
        let r = self.serve_path(head, path, query, headers, purpose).await;
        let upload_hash = path
            .strip_prefix(crate::config::UPLOADS_PREFIX)
            .and_then(|rest| rest.rsplit_once('/'))
            .map(|(_, hash)| hash);
        match (r, upload_hash) {
            (Err(e), Some(hash)) if e.status == 404 => {
                let public = format!("{}{hash}", self.routing().cfg.content.prefix);
                self.serve_path(head, &public, query, headers, purpose)
                    .await
            }
            (r, _) => r,
        }
    }

    async fn serve_path(
        &self,
        head: bool,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
        purpose: &durable::Purpose,
    ) -> Result<Response<Body>, ApiError> {
        let path = path.to_string();
        let routing = self.routing();
        let Some((idx, groups)) = routing.cfg.match_origin(&path) else {
            return Err(ApiError::no_matching_origin(&path));
        };
        let origin = &routing.cfg.origins[idx];
        let spec = parse_spec(query)?;
        // A transform reads the original itself: no client range, no conditional. A video
        // transform reads it by ranges when the source allows (first block now, the rest on
        // demand), or in place when it is a local file.
        let passthrough = spec.is_none();
        let video = spec
            .as_ref()
            .is_some_and(|s| transform::video_intent(&path, s));
        let hv = |n: &str| {
            passthrough
                .then(|| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                })
                .flatten()
        };
        let mut last_err: Option<SourceError> = None;
        for (j, source) in routing.origins[idx].sources.iter().enumerate() {
            let template = match &origin.sources[j] {
                crate::config::SourceConfig::Local { path, .. }
                | crate::config::SourceConfig::S3 { path, .. }
                | crate::config::SourceConfig::Remote { path, .. } => path,
            };
            let mut fetch = FetchRequest {
                path: substitute(template, &groups),
                range: hv("range"),
                if_none_match: hv("if-none-match"),
                if_modified_since: hv("if-modified-since"),
                head,
            };
            let local = match video {
                true => source.local_file(&fetch.path).await,
                false => None,
            };
            if local.is_some() {
                fetch.head = true;
            } else if video {
                fetch.range = Some(format!("bytes=0-{}", ranged::BLOCK - 1));
            }
            match source.fetch(&fetch).await {
                Ok(f) => match spec {
                    None => return Ok(self.respond(&origin.name, &path, source.kind(), f).await),
                    Some(spec) if f.status == 200 || (video && f.status == 206) => {
                        let treq = durable::TransformRequest {
                            origin: &origin.name,
                            path: &path,
                            query: query.unwrap_or(""),
                            spec,
                            avif_fallback: avif_fallback(headers),
                            kind: source.kind(),
                            client: pool_client(headers),
                            max_upscale_area: origin.max_upscale_area,
                        };
                        let input = match local {
                            Some(file) => transform::SourceInput::Local(f, file),
                            None if f.status == 206 => transform::SourceInput::Ranged {
                                fetched: f,
                                source: source.clone(),
                                path: fetch.path.clone(),
                            },
                            None => transform::SourceInput::Stream(f),
                        };
                        return Ok(self.transform(treq, input, purpose).await);
                    }
                    Some(_) => {
                        return Ok(self.respond(&origin.name, &path, source.kind(), f).await)
                    }
                },
                Err(e) if e.falls_through() => {
                    tracing::debug!(origin = %origin.name, source = j, error = %e, "source fell through");
                    // A real failure outranks a 404 when choosing what to report.
                    if !matches!(
                        (&last_err, &e),
                        (
                            Some(SourceError::Upstream(_) | SourceError::Timeout(_)),
                            SourceError::NotFound(_)
                        )
                    ) {
                        last_err = Some(e);
                    }
                }
                Err(e) => {
                    last_err = Some(e);
                    break;
                }
            }
        }
        Err(match last_err {
            // The messages name no path or origin: a client may have asked through a route
            // that maps onto internal ones (content hashes, uploads). The log has them.
            Some(SourceError::NotFound(_)) | None => {
                ApiError::not_found("the requested object was not found")
            }
            Some(SourceError::Refused(_)) => {
                tracing::info!(origin = %origin.name, path, "source path refused");
                ApiError::bad_request("the requested path is not allowed")
            }
            Some(SourceError::Upstream(m)) => {
                tracing::warn!(origin = %origin.name, error = %m, "all sources failed");
                ApiError::origin_error("the origin failed")
            }
            Some(SourceError::Timeout(_)) => {
                tracing::warn!(origin = %origin.name, "the origin timed out");
                ApiError::timeout("the origin timed out")
            }
            Some(SourceError::RangeNotSatisfiable(0)) if video => {
                // A failed transform, like any other: never cached.
                return Ok(uncacheable(&ApiError::new(
                    415,
                    ErrorCode::UnsupportedMedia,
                    "the source is empty: not a video",
                )));
            }
            Some(SourceError::RangeNotSatisfiable(size)) => {
                let e = ApiError::new(
                    416,
                    ErrorCode::RangeNotSatisfiable,
                    format!("range not satisfiable for size {size}"),
                );
                let mut r = error_response(&e);
                if let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{size}")) {
                    r.headers_mut().insert("content-range", v);
                }
                return Ok(r);
            }
        })
    }

    async fn handle_external(&self, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let routing = self.routing();
        let Some(fetcher) = &routing.external else {
            return Err(ApiError::forbidden(
                "external fetches are not enabled on this node",
            ));
        };
        let url = req
            .headers()
            .get(HDR_EXTERNAL)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::bad_request("no external URL"))?
            .to_string();
        let spec = parse_spec(req.uri().query())?;
        let fetched = fetcher.fetch(&url).await?;
        match spec {
            None => Ok(self.respond("external", &url, "external", fetched).await),
            Some(spec) => {
                // External sources are not kept in the store (their URLs are the client's).
                let job = transform::Job {
                    origin: "external",
                    path: &url,
                    spec,
                    avif_fallback: avif_fallback(req.headers()),
                    client: pool_client(req.headers()),
                    max_upscale_area: None,
                    store_key: None,
                    keep_before_answer: false,
                    may_defer: false,
                    progress: None,
                };
                let input = transform::SourceInput::Stream(fetched);
                let result = match self.transformer.run(job, input).await {
                    Ok(transform::Outcome::Done(r)) => Ok(r),
                    Ok(transform::Outcome::Defer(reason)) => Err(ApiError::bad_request(reason)),
                    Err(e) => Err(e),
                };
                Ok(transformed(result, "external"))
            }
        }
    }

    async fn respond(
        &self,
        origin: &str,
        path: &str,
        kind: &'static str,
        f: sources::Fetched,
    ) -> Response<Body> {
        let f = sniff_content_type(f).await;
        let mut b =
            Response::builder().status(StatusCode::from_u16(f.status).unwrap_or(StatusCode::OK));
        let mut tags = vec![
            format!("origin:{origin}"),
            "mode:orig".to_string(),
            format!("path:{path}"),
        ];
        for (k, v) in &f.headers {
            if k == "cache-tag" {
                tags.extend(
                    v.split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty()),
                );
                continue;
            }
            b = b.header(k.as_str(), v.as_str());
        }
        if f.status == 200 && f.header("accept-ranges").is_none() {
            b = b.header("accept-ranges", "bytes");
        }
        b = b
            .header("cache-tag", tags.join(","))
            .header(HDR_SOURCE_TYPE, kind)
            .header(HDR_ORIGIN, origin);
        let body = match f.body {
            Some(s) => BodyExt::boxed(StreamBody::new(s.map_ok(Frame::data))),
            None => full(Bytes::new()),
        };
        b.body(body).unwrap_or_else(|e| {
            error_response(&ApiError::internal(format!("bad source header: {e}")))
        })
    }

    /// The image sandbox's state (`/health`): what its self-test found, idle workers.
    pub fn sandbox_report(&self) -> serde_json::Value {
        #[cfg(feature = "image-engine")]
        if let Some(s) = &self.transformer.sandbox {
            return s.report();
        }
        serde_json::json!({"state": "off"})
    }

    /// The transform pool (for its gauges on `/metrics`).
    pub fn transform_pool(&self) -> &crate::transform::Pool {
        &self.transformer.pool
    }

    /// Serves HTTP/1.1 on a unix socket until `shutdown` turns true.
    pub async fn serve_unix(
        self: Arc<Self>,
        listener: std::os::unix::net::UnixListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if let Err(e) = listener.set_nonblocking(true) {
            tracing::error!(error = %e, "origin socket");
            return;
        }
        let listener = match tokio::net::UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "origin socket");
                return;
            }
        };
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => self.clone().spawn_conn(stream),
                    Err(e) => tracing::warn!(error = %e, "origin accept"),
                },
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break; }
                }
            }
        }
    }

    fn spawn_conn<S>(self: Arc<Self>, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let me = self.clone();
                async move { Ok::<_, std::convert::Infallible>(me.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "origin connection ended");
            }
        });
    }
}

/// A transform's answer tagged with the source type, or its error marked `no-store`.
fn transformed(result: Result<Response<Body>, ApiError>, kind: &str) -> Response<Body> {
    match result {
        Ok(mut r) => {
            if let Ok(v) = http::HeaderValue::from_str(kind) {
                r.headers_mut().insert(HDR_SOURCE_TYPE, v);
            }
            r
        }
        Err(e) => uncacheable(&e),
    }
}

/// An error response no cache keeps (a failed transform is never cached as a success).
fn uncacheable(e: &ApiError) -> Response<Body> {
    let mut r = error_response(e);
    r.headers_mut()
        .insert("cache-control", http::HeaderValue::from_static("no-store"));
    r
}

/// An original the source gave no type for (no `Content-Type`, or
/// `application/octet-stream`: an object stored without an extension, such as an upload by
/// its hash) gets the type its first bytes show, when they show a media type.
async fn sniff_content_type(mut f: sources::Fetched) -> sources::Fetched {
    let untyped = match f.header("content-type") {
        None => true,
        Some(t) => t
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream")),
    };
    if f.status != 200 || !untyped {
        return f;
    }
    let Some(mut body) = f.body.take() else {
        return f;
    };
    let first = body.next().await;
    if let Some(Ok(chunk)) = &first {
        if let Some(m) = crate::transform::sniff::sniff(chunk) {
            f.headers.retain(|(k, _)| k != "content-type");
            f.headers.push(("content-type".into(), m.mime().into()));
        }
    }
    f.body = Some(match first {
        Some(item) => Box::pin(futures::stream::once(async { item }).chain(body)),
        None => body,
    });
    f
}

/// The format to answer with while AVIF is encoded in the background, when the edge asked.
/// The transform pool's name for the client of a request: the edge's resolved client IP, or
/// `unknown` (a request that did not come through the edge's proxy path).
fn pool_client(h: &http::HeaderMap) -> String {
    h.get(HDR_CLIENT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .unwrap_or("unknown")
        .to_string()
}

fn avif_fallback(h: &http::HeaderMap) -> Option<filters::Format> {
    let v = h.get(HDR_AVIF_FALLBACK)?.to_str().ok()?;
    filters::Format::parse_str(v).filter(|f| {
        matches!(
            f,
            filters::Format::Webp | filters::Format::Jpeg | filters::Format::Png
        )
    })
}

/// The canonical spec the edge sent, `None` for a passthrough of the original.
fn parse_spec(query: Option<&str>) -> Result<Option<filters::TransformSpec>, ApiError> {
    let spec = match query {
        Some(q) if !q.is_empty() => Some(
            filters::TransformSpec::from_canonical_query(q)
                .map_err(|e| ApiError::new(e.status(), e.code(), e.to_string()))?,
        ),
        _ => None,
    };
    Ok(spec.filter(|s| !s.is_passthrough()))
}

/// The transform pool the config asks for (`transform.workers`, `max_per_client`,
/// `memory_budget`).
fn transform_pool(t: &crate::config::TransformConfig) -> crate::transform::Pool {
    use crate::transform::pool;
    let workers = match t.workers {
        0 => pool::cores(),
        n => n,
    };
    let mut limits = pool::Limits::new(workers);
    if t.max_per_client > 0 {
        limits.per_client = t.max_per_client;
    }
    limits.memory_bytes = t.memory_budget.0;
    crate::transform::Pool::with_limits(limits)
}

#[cfg(feature = "video-engine")]
fn video_options(cfg: &Config) -> crate::transform::video::VideoOptions {
    crate::transform::video::VideoOptions {
        timeout: cfg.transform.video_timeout.0,
        temp_dir: cfg.server.data_dir.join("tmp"),
        hls_height: cfg.transform.hls_height,
        hls_segment_secs: cfg.transform.hls_segment_secs,
        ..crate::transform::video::VideoOptions::default()
    }
}

/// Runs the origin service inside Pingora as a background service (its own runtime threads).
pub struct OriginBackground {
    pub service: Arc<OriginService>,
    pub listener: parking_lot::Mutex<Option<std::os::unix::net::UnixListener>>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for OriginBackground {
    async fn start(&self, shutdown: pingora_core::server::ShutdownWatch) {
        let listener = self.listener.lock().take();
        if let Some(l) = listener {
            self.service.clone().serve_unix(l, shutdown).await;
        }
    }
}
