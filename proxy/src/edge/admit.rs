//! Admission: everything the edge decides from a request head before any cache work.
//!
//! Owns the request id, the peer check and client IP, the `Via` loop check, the built-in
//! routes (health, metrics, admin, `PURGE`), the method, size caps and path hygiene, the
//! resolution into a cache request ([`super::resolve`]), authorization and the rate gate.
//! [`Edge::admit`] has no side effects beyond filling the request's `Ctx`, so the front door
//! can ask it and still hand the request to Pingora untouched; [`Edge::rate_gate`] counts.
//! Must not answer requests itself: the caller writes what `Admit` says.

use super::resolve::Resolution;
use super::{Ctx, Edge};
use crate::error::{ApiError, ErrorCode};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// What the edge makes of a request head ([`Edge::admit`]).
pub(crate) enum Admit {
    /// Answer with this error.
    Refuse(ApiError),
    Health,
    Metrics,
    Admin,
    /// `/jobs/{id}`, `/sse/job/{id}`.
    Jobs,
    /// `POST /upload`, `GET|DELETE /media/{id}`.
    Uploads,
    Purge,
    /// `debug=view`: shown after the admin check, which needs the session.
    Debug(Box<Resolution>),
    /// A cache request, `ctx` filled; its rate limit is still to be checked
    /// ([`Edge::rate_gate`]).
    Proceed(filters::OperationClass),
}

pub(crate) fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
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
            ctx.error_code = Some(e.code.as_str());
            Admit::Refuse(e)
        };
        if let Some(peer) = peer {
            let sec = &ctx.live.security;
            if let Err(e) = sec.check_peer(peer, req.uri.path()) {
                return refuse(ctx, e);
            }
            ctx.client_ip = Some(sec.client_ip(peer, &req.headers));
        }
        let live = ctx.live.clone();
        let token = &live.cfg.server.via_token;
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
                ErrorCode::LoopDetected,
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
        if path == "/admin" || path.starts_with("/admin/") || path.starts_with("/client/v4/") {
            return Admit::Admin;
        }
        if super::jobs::is_job_route(path) {
            return Admit::Jobs;
        }
        if super::uploads::is_upload_route(path) {
            return Admit::Uploads;
        }
        if method.as_str() == "PURGE" {
            return Admit::Purge;
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            let e = ApiError::new(
                405,
                ErrorCode::MethodNotAllowed,
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
        let resolution = match self.resolve(&live, path, req.uri.query(), &req.headers) {
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
        if let Err(e) = live.security.authorize(
            class,
            pq,
            header(req, "authorization"),
            origin.and_then(|o| live.cfg.origins[o].auth),
        ) {
            return refuse(ctx, e);
        }
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
        let sec = &ctx.live.security;
        if !sec.limit_hits() {
            ctx.rate_class = Some(class);
            return Ok(());
        }
        match ctx.client_ip {
            Some(ip) => sec
                .rate_check(class, ip)
                .inspect_err(|e| ctx.error_code = Some(e.code.as_str())),
            None => Ok(()),
        }
    }
}

/// A fresh request id: 32 hex digits, a random per-process prefix and a counter (unique
/// without a random-number syscall per request).
pub(crate) fn new_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
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
            ErrorCode::BadRequest,
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
            ErrorCode::BadRequest,
            format!("{count} headers / {bytes} bytes is over {MAX_HEADERS} / {MAX_HEADER_BYTES}"),
        ));
    }
    Ok(())
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
