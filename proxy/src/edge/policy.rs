//! Cache policy: what the edge stores and for how long, what a cache phase is called, which
//! request headers pick a variant, when stale content may be served.
//!
//! Pure functions of a response head, a few request facts and the configured limits, so each
//! rule is a row in a table test. Must not touch the storage, the session or the clock (the
//! caller passes `now`).

use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::filters::{calculate_fresh_until, calculate_serve_stale_durations};
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheMeta, CacheMetaDefaults, CachePhase, NoCacheReason, RespCacheable};
use pingora_error::{Error, ErrorSource};
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::{Duration, SystemTime};

/// The configured limits a cacheability decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Larger objects are not stored.
    pub max_object: u64,
    /// `stale-while-revalidate` when the response gives none.
    pub stale_while_revalidate: Duration,
    /// `stale-if-error` when the response gives none.
    pub stale_if_error: Duration,
    /// Longest freshness and longest stale window, whatever the response says.
    pub max_ttl: Duration,
}

/// What the request contributes to the decision. Its credentials do not: the edge checks
/// tokens and signatures on every request, hits included, and the origin service is never
/// sent them ([`ORIGIN_REQUEST_HEADERS`]), so its answer cannot depend on them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request {
    /// The TTL of the response's status class for its origin, when the response sets none.
    pub class_ttl: Option<Duration>,
}

/// Request headers the origin service is sent: what it reads (ranges and validators of
/// passthrough fetches) and what the edge sets itself (request id, AVIF fallback, external
/// URL). Everything else a client sent — `Content-Length`/`Transfer-Encoding` on a `GET`,
/// hop-by-hop headers, any number of others — stays at the edge, so the origin service's
/// answer depends only on the object and the edge's resolution.
pub const ORIGIN_REQUEST_HEADERS: [&str; 6] = [
    "range",
    "if-none-match",
    "if-modified-since",
    "x-request-id",
    crate::origin::HDR_AVIF_FALLBACK,
    crate::origin::HDR_EXTERNAL,
];

/// The names in `req` that are not sent to the origin service ([`ORIGIN_REQUEST_HEADERS`]).
pub fn not_for_origin(req: &RequestHeader) -> Vec<http::header::HeaderName> {
    let mut out: Vec<http::header::HeaderName> = req
        .headers
        .keys()
        .filter(|k| !ORIGIN_REQUEST_HEADERS.contains(&k.as_str()))
        .cloned()
        .collect();
    out.dedup();
    out
}

/// Turns the client's request head (as Pingora copied it for the upstream) into the origin
/// service's: only [`ORIGIN_REQUEST_HEADERS`] kept, the edge's internal headers dropped
/// (the edge sets its own afterwards), a fixed `Host`, this request's id.
pub fn origin_request(upstream: &mut RequestHeader, request_id: &str) -> pingora_error::Result<()> {
    for name in not_for_origin(upstream) {
        upstream.remove_header(&name);
    }
    upstream.remove_header(crate::origin::HDR_EXTERNAL);
    upstream.remove_header(crate::origin::HDR_AVIF_FALLBACK);
    upstream.insert_header(http::header::HOST, "media-edge-origin")?;
    upstream.insert_header("x-request-id", request_id)?;
    Ok(())
}

/// Freshness defaults when a response says nothing: none here (status-class TTLs apply).
fn no_ttl(_: http::StatusCode) -> Option<Duration> {
    None
}

/// Statuses that describe the client's request rather than the object (a malformed or
/// oversized request, a timeout, a failed precondition or range, a rate limit): never stored,
/// whatever their headers say, so one client's request cannot answer for everyone.
pub const CLIENT_DEPENDENT: [u16; 11] = [400, 408, 411, 412, 413, 414, 416, 417, 421, 429, 431];

/// Whether and how long `resp` is stored. Client-dependent statuses ([`CLIENT_DEPENDENT`]),
/// partial and not-modified answers, `Vary: *`,
/// `Set-Cookie`, objects over the size limit and `no-store`/`private` are not; freshness comes from `Cache-Control`/`Expires`,
/// else the status-class TTL, else the response is not stored.
pub fn cacheability(
    resp: &ResponseHeader,
    req: Request,
    limits: &Limits,
    now: SystemTime,
) -> RespCacheable {
    use RespCacheable::Uncacheable;
    let status = resp.status.as_u16();
    if CLIENT_DEPENDENT.contains(&status) {
        return Uncacheable(NoCacheReason::Custom("depends on the request"));
    }
    if status == 206 || status == 304 {
        return Uncacheable(NoCacheReason::Custom("partial or not-modified"));
    }
    let vary_star = resp.headers.get_all("vary").iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|x| x.trim() == "*"))
            .unwrap_or(true)
    });
    if vary_star || resp.headers.contains_key("set-cookie") {
        return Uncacheable(NoCacheReason::OriginNotCache);
    }
    let too_big = header_u64(resp, "content-length").is_some_and(|l| l > limits.max_object);
    if too_big {
        return Uncacheable(NoCacheReason::ResponseTooLarge);
    }
    let cc = CacheControl::from_resp_headers(resp);
    if cc
        .as_ref()
        .is_some_and(|c| c.is_cacheable() == Cacheable::No)
    {
        return Uncacheable(NoCacheReason::OriginNotCache);
    }
    let defaults = CacheMetaDefaults::new(
        no_ttl,
        limits.stale_while_revalidate.as_secs() as u32,
        limits.stale_if_error.as_secs() as u32,
    );
    let class_ttl = req.class_ttl.and_then(|d| now.checked_add(d));
    let Some(fresh_until) =
        calculate_fresh_until(now, cc.as_ref(), resp, false, &defaults).or(class_ttl)
    else {
        return Uncacheable(NoCacheReason::OriginNotCache);
    };
    let fresh_until = now
        .checked_add(limits.max_ttl)
        .map_or(fresh_until, |cap| fresh_until.min(cap));
    let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &defaults);
    let cap = limits.max_ttl.as_secs().min(u64::from(u32::MAX)) as u32;
    let (swr, sie) = (swr.min(cap), sie.min(cap));
    let mut header = resp.clone();
    if let Some(c) = &cc {
        c.strip_private_headers(&mut header);
    }
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, now, swr, sie, header))
}

/// The `X-Cache` value of a response given its cache phase, the origin's status (if the
/// origin was asked) and whether a ranged miss went straight to the source.
pub fn x_cache(phase: CachePhase, upstream_status: Option<u16>, passthrough: bool) -> &'static str {
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
        // An expired entry answered from cache because the origin failed: stale-if-error.
        CachePhase::Expired if upstream_status.is_none_or(|s| s >= 500) => "STALE",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        _ if passthrough => "MISS",
        CachePhase::Disabled(_) | CachePhase::Bypass => "BYPASS",
        _ => "MISS",
    }
}

/// Whether a response in `phase` is answered from a stored entry (and so carries `Age`).
pub fn from_storage(phase: CachePhase) -> bool {
    matches!(
        phase,
        CachePhase::Hit
            | CachePhase::Stale
            | CachePhase::StaleUpdating
            | CachePhase::Revalidated
            | CachePhase::RevalidatedNoCache(_)
    )
}

/// The variant of a stored entry a request selects: the request's values of the names in the
/// entry's `Vary` (lower-cased, sorted, deduplicated); `None` when the entry does not vary.
pub fn variance(stored: &http::HeaderMap, req: &RequestHeader) -> Option<HashBinary> {
    let mut names: Vec<String> = stored
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
    let mut vb = pingora_cache::VarianceBuilder::new();
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

/// Whether a stale entry may be served: always while revalidating (`None`), and on an error
/// only when the origin failed (stale-if-error), never for a client's own failure.
pub fn serves_stale(error: Option<&Error>) -> bool {
    error.is_none_or(|e| e.esource() == &ErrorSource::Upstream)
}

fn header_u64(resp: &ResponseHeader, name: &str) -> Option<u64> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests;
