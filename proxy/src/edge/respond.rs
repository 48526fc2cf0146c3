//! Answers the edge writes itself: JSON errors and successes, the metrics page, the mapping
//! of a failed proxy attempt to an API error, and the request log line with its metrics.
//!
//! Owns the shape of those responses (`Content-Type`, `Cache-Control: no-store`,
//! `X-Request-ID`, `Retry-After`) for every path that answers, the front door included. Must
//! not decide what to answer: callers pass the status and the error.

use super::Ctx;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::METRICS;
use bytes::Bytes;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Writes a JSON error response. Never fails the request further: errors writing are logged.
pub async fn respond_error(session: &mut Session, request_id: &str, e: &ApiError) {
    let path = session.req_header().uri.path();
    let flat = ApiError::flat_for(path);
    // Cloudflare's resizing URLs say why a transform failed in `Cf-Resized`.
    let cf = path.starts_with("/cdn-cgi/image/") || path.starts_with("/cdn-cgi/media/");
    let media = path.starts_with("/cdn-cgi/media/");
    let code = cf
        .then(|| super::fast_hit::cf_resized_error(e.status, media))
        .flatten();
    if let Some((mut resp, body)) = error_response_shaped(request_id, e, flat) {
        if let Some(code) = code {
            let _ = resp.insert_header("cf-resized", format!("err={code}"));
        }
        respond(session, resp, body).await;
    }
}

/// The head of an uncacheable answer the edge writes itself: status, `Content-Type`,
/// `Content-Length`, `Cache-Control: no-store` and, when given, `X-Request-ID`.
pub(super) fn own_head(
    status: u16,
    content_type: &str,
    len: usize,
    request_id: Option<&str>,
) -> Option<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(6)).ok()?;
    let _ = resp.insert_header("content-type", content_type);
    let _ = resp.insert_header("content-length", len.to_string());
    let _ = resp.insert_header("cache-control", "no-store");
    if let Some(id) = request_id {
        let _ = resp.insert_header("x-request-id", id);
    }
    Some(resp)
}

/// The JSON error response for `e`: header and body.
pub fn error_response(request_id: &str, e: &ApiError) -> Option<(ResponseHeader, Bytes)> {
    error_response_shaped(request_id, e, false)
}

/// [`error_response`] in the nested or Fluxer's flat shape.
pub fn error_response_shaped(
    request_id: &str,
    e: &ApiError,
    flat: bool,
) -> Option<(ResponseHeader, Bytes)> {
    let body = Bytes::from(e.body_shaped(flat));
    let mut resp = own_head(e.status, "application/json", body.len(), Some(request_id))?;
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
    if let Some(resp) = own_head(status, "application/json", body.len(), Some(request_id)) {
        respond(session, resp, body).await;
    }
}

/// Writes the Prometheus text page.
pub async fn respond_metrics(
    session: &mut Session,
    stats: &super::storage::TierStats,
    pool: &crate::transform::Pool,
) {
    let body = Bytes::from(crate::metrics::render(stats, pool));
    if let Some(resp) = own_head(200, "text/plain; version=0.0.4", body.len(), None) {
        respond(session, resp, body).await;
    }
}

/// The API error a failed proxy attempt answers with (`None`: the client is gone, nothing to
/// write). A rate limit decided before going upstream wins over the error it caused.
pub fn proxy_failure(e: &Error, rate_limited: Option<ApiError>) -> Option<ApiError> {
    if rate_limited.is_some() {
        return rate_limited;
    }
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            Some(ApiError::timeout("origin service timed out"))
        }
        ErrorType::HTTPStatus(code) => Some(ApiError::new(
            *code,
            ErrorCode::BadRequest,
            "request refused",
        )),
        _ => match e.esource() {
            ErrorSource::Upstream => Some(ApiError::origin_error("origin service failed")),
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => None,
                _ => Some(ApiError::bad_request("malformed request")),
            },
            _ => Some(ApiError::internal("internal error")),
        },
    }
}

/// Counts and logs one answered request (metrics by status and cache result, bytes, latency;
/// one `tracing` line), whichever path answered it.
pub(crate) fn log_request(
    method: &http::Method,
    path: &str,
    status: u16,
    result: &str,
    sent: u64,
    error: Option<&str>,
    ctx: &Ctx,
) {
    crate::metrics::count_request(status);
    METRICS.bytes_out.inc_by(sent);
    let ms = ctx.started.elapsed().as_secs_f64();
    if crate::analytics::enabled() {
        analyze(
            &ctx.live.cfg,
            method,
            path,
            status,
            result,
            sent,
            error,
            ctx,
            ms,
        );
    }
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

/// Counts an answered request into the analytics, and hands its row to the request log
/// when it is an error or sampled.
#[allow(clippy::too_many_arguments)]
fn analyze(
    cfg: &crate::config::Config,
    method: &http::Method,
    path: &str,
    status: u16,
    result: &str,
    sent: u64,
    error: Option<&str>,
    ctx: &Ctx,
    secs: f64,
) {
    let spec = ctx.resolved.as_ref().map(|r| &r.spec);
    let route = if path.starts_with("/admin") || path.starts_with("/client/v4/") {
        "admin"
    } else if path == "/health" {
        "health"
    } else if path == "/metrics" {
        "metrics"
    } else if super::uploads::is_upload_route(path) {
        "upload"
    } else if super::jobs::is_job_route(path) {
        "jobs"
    } else if method.as_str() == "PURGE" {
        "purge"
    } else {
        match spec {
            Some(s) if s.is_passthrough() => "original",
            Some(_) => "transform",
            None => "refused",
        }
    };
    let cache = cache_label(result);
    let origin = ctx.origin.and_then(|i| cfg.origins.get(i));
    let source = match (origin.and_then(|o| o.sources.first()), &ctx.external_url) {
        (_, Some(_)) => "external",
        (Some(crate::config::SourceConfig::Local { .. }), _) => "local",
        (Some(crate::config::SourceConfig::S3 { .. }), _) => "s3",
        (Some(crate::config::SourceConfig::Remote { .. }), _) => "remote",
        (None, None) => "",
    };
    let seen = crate::analytics::counts::Seen {
        at: crate::store::db::now_ms(),
        route,
        status,
        cache: &cache,
        tier: if result == "hit" || result == "stale" {
            ctx.tier
        } else {
            ""
        },
        origin: origin.map_or("", |o| o.name.as_str()),
        derivative: ctx
            .resolved
            .as_ref()
            .and_then(|r| r.derivative.as_deref())
            .unwrap_or(""),
        source,
        mode: spec
            .filter(|s| !s.is_passthrough())
            .map_or("", |s| s.mode.as_str()),
        bytes: sent,
        us: (secs * 1_000_000.0) as u64,
    };
    crate::analytics::count(&seen);
    if !crate::analytics::keep_row(status) {
        return;
    }
    let mut path_logged: String = path.chars().take(512).collect();
    if path_logged.len() < path.len() {
        path_logged.push('…');
    }
    crate::analytics::record(crate::store::requests::RequestRow {
        at: seen.at,
        route,
        method: method.as_str().chars().take(16).collect(),
        path: path_logged,
        status,
        cache: seen.cache.to_string(),
        tier: seen.tier,
        origin: seen.origin.to_string(),
        derivative: seen.derivative.to_string(),
        source: source.to_string(),
        mode: seen.mode.to_string(),
        bytes: sent,
        us: seen.us,
        client: crate::analytics::client_label(ctx.client_ip, cfg.analytics.hash_client_ip),
        error: error.unwrap_or("").to_string(),
    });
}

/// The cache result as the log names it (`HIT`, `STALE_UPDATING`, …; empty when the cache
/// was not asked).
fn cache_label(result: &str) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    Cow::Borrowed(match result {
        "" | "uninitialized" | "disabled" => "",
        "hit" => "HIT",
        "miss" => "MISS",
        "stale" => "STALE",
        "stale-updating" => "STALE_UPDATING",
        "expired" => "EXPIRED",
        "revalidated" => "REVALIDATED",
        "revalidated-nocache" => "REVALIDATED_NOCACHE",
        "bypass" => "BYPASS",
        other => return Cow::Owned(other.to_ascii_uppercase().replace('-', "_")),
    })
}
