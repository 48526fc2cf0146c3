//! The origin service's durable path for a transform: the store key (origin, path,
//! canonical query, the source's version and the bust versions), a store hit answered from
//! the object store (`X-Store: HIT`, without transforming), a request over the synchronous
//! limits turned into a job (`202` with the job's URLs; the row committed first), and the
//! job runner that makes a job's result through the very same path.
//!
//! It owns no storage (that is `crate::store`) and no queue policy (`crate::jobs`).

use super::sources::Fetched;
use super::transform::{self, Outcome, SourceInput};
use super::{error_response, transformed, uncacheable, Body, OriginService};
use crate::error::{ApiError, ErrorCode};
use crate::jobs::{JobError, Made, Progress, Runner};
use crate::metrics::METRICS;
use crate::store::jobs::{JobRow, NewJob};
use crate::store::StoredTransform;
use futures::TryStreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::sync::Arc;
use std::time::Instant;

/// Who the answer is for.
#[derive(Clone)]
pub enum Purpose {
    /// A client, through the edge.
    Client,
    /// A job worker: never deferred, kept before the answer, progress reported.
    Job(Arc<Progress>),
}

/// The store key of a transform answer, for the job runner (a response extension, never
/// sent).
#[derive(Clone)]
pub struct StoreKey(pub String);

/// One transform request as the origin service received it.
pub struct TransformRequest<'a> {
    pub origin: &'a str,
    pub path: &'a str,
    /// The canonical transform query.
    pub query: &'a str,
    pub spec: filters::TransformSpec,
    pub avif_fallback: Option<filters::Format>,
    pub kind: &'static str,
    /// Who the work is for (the pool's fairness key).
    pub client: String,
    /// The origin's enlargement limit, when it sets one.
    pub max_upscale_area: Option<f64>,
}

impl OriginService {
    /// A transform through the store and the queue.
    pub(super) async fn transform(
        &self,
        req: TransformRequest<'_>,
        input: SourceInput,
        purpose: &Purpose,
    ) -> Response<Body> {
        let started = Instant::now();
        let store = self.store.as_ref();
        // A negotiated AVIF may be answered by its stand-in while it encodes: not kept.
        let key = match store.filter(|_| req.avif_fallback.is_none()) {
            Some(store) => {
                let (o, p) = match store.db.bust_versions(req.origin, req.path).await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "bust versions; transform not kept");
                        return uncacheable(&ApiError::internal("the metadata store failed"));
                    }
                };
                let version = format!("{}|b{o}.{p}", transform::source_version(input.fetched()));
                Some(crate::store::transform_key(
                    req.origin, req.path, req.query, &version,
                ))
            }
            None => None,
        };
        if let (Some(store), Some(key)) = (store, &key) {
            match store.lookup(key, None).await {
                Ok(Some((t, f))) => {
                    METRICS.store.with_label_values(&["hit"]).inc();
                    let mut r = stored_response(&t, f, input.fetched(), req.kind, started);
                    r.extensions_mut().insert(StoreKey(key.clone()));
                    return r;
                }
                Ok(None) => METRICS.store.with_label_values(&["miss"]).inc(),
                Err(e) => tracing::warn!(key, error = %e, "transform store lookup"),
            }
        }
        let may_defer = matches!(purpose, Purpose::Client) && self.queue.is_some();
        let keep = store.is_some_and(|s| s.keep_transforms) || !may_defer;
        let job = transform::Job {
            origin: req.origin,
            path: req.path,
            spec: req.spec.clone(),
            avif_fallback: req.avif_fallback,
            client: match purpose {
                Purpose::Job(_) => crate::transform::pool::BACKGROUND.into(),
                Purpose::Client => req.client.clone(),
            },
            max_upscale_area: req.max_upscale_area,
            store_key: key.clone().filter(|_| keep),
            keep_before_answer: matches!(purpose, Purpose::Job(_)),
            may_defer,
            progress: match purpose {
                Purpose::Job(p) => Some(p.clone()),
                Purpose::Client => None,
            },
        };
        match self.transformer.run(job, input).await {
            Ok(Outcome::Done(mut r)) => {
                if let Some(k) = key {
                    r.extensions_mut().insert(StoreKey(k));
                }
                transformed(Ok(r), req.kind)
            }
            Ok(Outcome::Defer(reason)) => match (&self.queue, key) {
                (Some(queue), Some(key)) => self.defer(queue, &req, &key, &reason).await,
                _ => uncacheable(&ApiError::bad_request(format!(
                    "{reason}; this node runs no jobs"
                ))),
            },
            Err(e) => transformed(Err(e), req.kind),
        }
    }

    /// Queues the job (or finds the identical one) and answers 202.
    async fn defer(
        &self,
        queue: &crate::jobs::Queue,
        req: &TransformRequest<'_>,
        key: &str,
        reason: &str,
    ) -> Response<Body> {
        let new = NewJob {
            dedup_key: key,
            origin: req.origin,
            path: req.path,
            query: req.query,
            reason,
            max_attempts: queue.cfg.max_attempts,
        };
        // The row is committed before the 202 leaves.
        let row = match queue.submit(&new).await {
            Ok((row, _)) => row,
            Err(e) => {
                tracing::warn!(error = %e, "queueing a job");
                return uncacheable(&ApiError::internal("could not queue the job"));
            }
        };
        accepted(&row)
    }
}

/// `202 Accepted` with the job's URLs; never cached.
fn accepted(row: &JobRow) -> Response<Body> {
    let body = crate::jobs::api::accepted(row).to_string();
    Response::builder()
        .status(202)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .header("retry-after", "10")
        .header("location", crate::jobs::api::status_url(&row.id))
        .body(super::full(body))
        .unwrap_or_else(|e| error_response(&ApiError::internal(format!("202: {e}"))))
}

/// The answer of a store hit: the transform's own headers, the source's freshness headers.
fn stored_response(
    t: &StoredTransform,
    f: Fetched,
    source: &Fetched,
    kind: &'static str,
    started: Instant,
) -> Response<Body> {
    let mut b = Response::builder()
        .status(f.status)
        .header("content-type", t.content_type.as_str())
        .header("x-store", "HIT")
        .header(super::HDR_SOURCE_TYPE, kind)
        .header(
            "x-processing-time-ms",
            started.elapsed().as_millis().to_string(),
        );
    for (k, v) in &t.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    for (k, v) in &f.headers {
        if matches!(
            k.as_str(),
            "content-length" | "content-range" | "accept-ranges"
        ) {
            b = b.header(k.as_str(), v.as_str());
        }
    }
    let own_cc = t.headers.iter().any(|(k, _)| k == "cache-control");
    for name in ["cache-control", "last-modified"] {
        if let Some(v) = source
            .header(name)
            .filter(|_| name != "cache-control" || !own_cc)
        {
            b = b.header(name, v);
        }
    }
    let body = match f.body {
        Some(s) => StreamBody::new(s.map_ok(Frame::data)).boxed(),
        None => super::full(bytes::Bytes::new()),
    };
    b.body(body)
        .unwrap_or_else(|e| error_response(&ApiError::internal(format!("stored answer: {e}"))))
}

/// Whether a canonical query asks for an HLS playlist (not one of its parts).
fn hls_playlist(query: &str) -> bool {
    let pairs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
    pairs.iter().any(|(k, v)| k == "mode" && v == "hls")
        && !pairs.iter().any(|(k, _)| k == "segment")
}

impl OriginService {
    /// `query` as the edge would pass it on for `path` (the canonical transform query).
    fn canonical_query(&self, path: &str, query: &str) -> Result<String, ApiError> {
        let headers = http::HeaderMap::new();
        let parts = filters::RequestParts {
            path,
            query: Some(query),
            headers: &headers,
        };
        let cfg = self.routing().cfg.clone();
        let opts = cfg
            .origin_index(path)
            .map(|i| cfg.origins[i].options.clone())
            .unwrap_or_default();
        filters::resolve(&parts, &cfg.filters, &opts)
            .map(|r| r.spec.to_canonical_query())
            .map_err(|e| ApiError::new(e.status(), e.code(), e.to_string()))
    }
}

/// What the job's answer says went wrong (its JSON error message, or its status).
async fn failure(r: Response<Body>) -> JobError {
    let status = r.status().as_u16();
    let mut body = Vec::new();
    let mut stream = r.into_body().into_data_stream();
    while let Ok(Some(chunk)) = stream.try_next().await {
        body.extend_from_slice(&chunk);
        if body.len() > 64 * 1024 {
            break;
        }
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("status {status}"));
    JobError {
        message: format!("{status}: {message}"),
        // The request itself is wrong, or the source is gone: no try can fix that.
        retryable: status >= 500 || status == 408 || status == 429,
    }
}

#[async_trait::async_trait]
impl Runner for OriginService {
    async fn produce(
        &self,
        path: &str,
        query: &str,
        progress: Arc<Progress>,
        body_max: usize,
    ) -> Result<Made, JobError> {
        let purpose = Purpose::Job(progress);
        let r = self
            .serve(false, path, Some(query), &http::HeaderMap::new(), &purpose)
            .await;
        match r {
            Ok(r) if r.status() == 200 => {
                // The result is in the store by now.
                let key = r.extensions().get::<StoreKey>().map(|k| k.0.clone());
                let key = key.ok_or_else(|| JobError {
                    message: "the result was not kept (no store)".into(),
                    retryable: false,
                })?;
                let content_type = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/octet-stream")
                    .to_string();
                let body = match body_max {
                    0 => None,
                    max => {
                        let mut out = Vec::new();
                        let mut stream = r.into_body().into_data_stream();
                        loop {
                            match stream.try_next().await {
                                Ok(Some(chunk)) => {
                                    out.extend_from_slice(&chunk);
                                    if out.len() > max {
                                        break;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    return Err(JobError {
                                        message: format!("reading the result: {e}"),
                                        retryable: true,
                                    })
                                }
                            }
                        }
                        (out.len() <= max).then(|| bytes::Bytes::from(out))
                    }
                };
                Ok(Made {
                    key,
                    content_type,
                    body,
                })
            }
            Ok(r) => Err(failure(r).await),
            Err(e) => Err(JobError {
                message: format!("{}: {}", e.status, e.message),
                retryable: e.status >= 500 || e.code == ErrorCode::Timeout,
            }),
        }
    }

    /// Runs a job; an HLS playlist's job also keeps every part of its package (segments and
    /// poster) in the store, so any node serves them without packaging again.
    async fn run(&self, job: &JobRow, progress: Arc<Progress>) -> Result<String, JobError> {
        let playlist = hls_playlist(&job.query);
        let body_max = if playlist { 1 << 20 } else { 0 };
        let made = self
            .produce(&job.path, &job.query, progress, body_max)
            .await?;
        if playlist {
            let text = made.body.as_deref().unwrap_or_default();
            let text = String::from_utf8_lossy(text);
            let parts = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('?').map(|(_, q)| q.to_string()))
                .chain(std::iter::once("mode=hls&segment=poster".to_string()));
            for q in parts {
                let q = self.canonical_query(&job.path, &q).map_err(|e| JobError {
                    message: e.message,
                    retryable: false,
                })?;
                let p = Arc::new(Progress::default());
                self.produce(&job.path, &q, p, 0).await?;
            }
        }
        Ok(made.key)
    }
}
