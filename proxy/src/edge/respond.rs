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
    if let Some((resp, body)) = error_response(request_id, e) {
        respond(session, resp, body).await;
    }
}

/// The head of an uncacheable answer the edge writes itself: status, `Content-Type`,
/// `Content-Length`, `Cache-Control: no-store` and, when given, `X-Request-ID`.
fn own_head(
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
    let body = Bytes::from(e.body());
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
pub async fn respond_metrics(session: &mut Session, stats: &super::storage::TierStats) {
    let body = Bytes::from(crate::metrics::render(stats));
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
