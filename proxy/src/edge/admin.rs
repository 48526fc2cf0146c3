//! The admin API on the edge listener: `/admin/*` behind the admin bearer token, and the
//! HTTP `PURGE` method from allowed networks.
//!
//! Owns authentication of admin calls and the purge endpoints' request/response shapes.
//! Purges are recorded in the purge log (O(1) per item); keys are also deleted from storage.

use super::purge::PurgeKind;
use super::{peer_ip, respond_error, respond_json, Ctx, Edge};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::METRICS;
use pingora_cache::storage::{PurgeTarget, PurgeType, Storage};
use pingora_cache::CacheKey;
use pingora_proxy::Session;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;

const MAX_ADMIN_BODY: usize = 1 << 20;
pub(super) const MAX_PURGE_ITEMS: usize = 10_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
}

/// Constant-time comparison of two secrets.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn bearer(session: &Session) -> Option<&str> {
    session
        .req_header()
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

pub(super) async fn read_body(session: &mut Session) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ADMIN_BODY {
                    return Err(ApiError::new(
                        413,
                        ErrorCode::PayloadTooLarge,
                        format!("admin body over {MAX_ADMIN_BODY} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(ApiError::bad_request("could not read request body")),
        }
    }
}

/// Cache key for a purge target: a key as shown in `X-Cache-Key`, or a URL/path with its
/// transform query (resolved exactly as a request would be, without client hints).
fn key_of(edge: &Edge, item: &str) -> String {
    if item.contains(':')
        && !item.starts_with('/')
        && !item.starts_with("http://")
        && !item.starts_with("https://")
    {
        return item.to_string();
    }
    let target = match item.find("://") {
        Some(i) => item[i + 3..]
            .find('/')
            .map(|j| &item[i + 3 + j..])
            .unwrap_or("/"),
        None => item,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    match edge.resolve(&edge.state.live(), path, query, &http::HeaderMap::new()) {
        Ok(r) => r.resolved.cache_key,
        Err(_) => Edge::original_key(path),
    }
}

async fn purge_keys(edge: &Edge, keys: &[String]) -> usize {
    let span = pingora_cache::trace::Span::inactive().handle();
    let mut removed = 0;
    for k in keys {
        let key = CacheKey::new(k.as_str(), "").to_compact();
        if let Ok(pingora_cache::storage::PurgeOutcome::Purged(_)) = edge
            .state
            .storage
            .purge(PurgeTarget::Active(&key), PurgeType::Invalidation, &span)
            .await
        {
            removed += 1;
        }
    }
    removed
}

/// Records a purge of tags, keys (as [`key_of`] reads them) and path prefixes, and removes
/// the keys from storage: the resolved keys, how many were in storage, whether the purge
/// log has it on disk.
pub(super) async fn apply_purge(
    edge: &Edge,
    tags: &[String],
    keys: &[String],
    prefixes: &[String],
) -> (Vec<String>, usize, bool) {
    let keys: Vec<String> = keys.iter().map(|k| key_of(edge, k)).collect();
    let persisted = record_purges(
        edge,
        vec![
            (PurgeKind::Tag, tags.to_vec()),
            (PurgeKind::Key, keys.clone()),
            (PurgeKind::Prefix, prefixes.to_vec()),
        ],
    )
    .await;
    let removed = purge_keys(edge, &keys).await;
    for (kind, n) in [
        ("tag", tags.len()),
        ("key", keys.len()),
        ("prefix", prefixes.len()),
    ] {
        METRICS.purges.with_label_values(&[kind]).inc_by(n as u64);
    }
    (keys, removed, persisted)
}

/// Whether `presented` is the admin token, or a tenant token with the `admin` scope.
pub fn is_admin_token(edge: &Edge, presented: &str) -> bool {
    let env_token = edge
        .state
        .admin_token
        .as_deref()
        .is_some_and(|t| secret_eq(t.as_bytes(), presented.as_bytes()));
    env_token
        || edge
            .state
            .live()
            .security
            .token_has_scope(presented, "admin")
}

/// Whether the request carries the admin bearer token, a tenant token with the `admin`
/// scope, or a dashboard session ([`super::dashboard`]).
pub fn is_admin(edge: &Edge, session: &Session) -> bool {
    match bearer(session) {
        Some(b) => is_admin_token(edge, b),
        None => super::dashboard::has_session(edge, session),
    }
}

/// `/admin/*`.
pub async fn handle(edge: &Edge, session: &mut Session, ctx: &mut Ctx) {
    let rid = ctx.request_id.clone();
    if session
        .req_header()
        .uri
        .path()
        .starts_with(super::cf_api::PREFIX)
    {
        return super::cf_api::handle(edge, session, &rid).await;
    }
    if edge.state.admin_token.is_none() && !edge.state.live().security.has_scope_tokens("admin") {
        let e = ApiError::not_found("admin API is disabled (set the admin token env var)");
        return respond_error(session, &rid, &e).await;
    }
    if super::dashboard::handle(edge, session, &rid).await {
        return;
    }
    if bearer(session).is_none() && !super::dashboard::has_session(edge, session) {
        return respond_error(
            session,
            &rid,
            &ApiError::unauthorized("admin bearer token required"),
        )
        .await;
    }
    if !is_admin(edge, session) {
        return respond_error(
            session,
            &rid,
            &ApiError::forbidden("admin token not accepted"),
        )
        .await;
    }
    let path = session.req_header().uri.path().to_string();
    let method = session.req_header().method.clone();
    match (method.as_str(), path.as_str()) {
        ("POST", "/admin/cache/purge") => {
            let body = match read_body(session).await {
                Ok(b) => b,
                Err(e) => return respond_error(session, &rid, &e).await,
            };
            let req: PurgeBody = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    let e = ApiError::bad_request(format!(
                        "purge body must be {{\"tags\"|\"keys\"|\"prefixes\": [..]}}: {e}"
                    ));
                    return respond_error(session, &rid, &e).await;
                }
            };
            let n = req.tags.len() + req.keys.len() + req.prefixes.len();
            if n == 0 || n > MAX_PURGE_ITEMS {
                let e = ApiError::bad_request(format!(
                    "purge needs 1..={MAX_PURGE_ITEMS} items, got {n}"
                ));
                return respond_error(session, &rid, &e).await;
            }
            if req.prefixes.iter().any(|p| !p.starts_with('/')) {
                return respond_error(
                    session,
                    &rid,
                    &ApiError::bad_request("prefixes must start with '/'"),
                )
                .await;
            }
            let (keys, removed, persisted) =
                apply_purge(edge, &req.tags, &req.keys, &req.prefixes).await;
            let v = json!({"purged": {"tags": req.tags, "keys": keys, "prefixes": req.prefixes}, "removed_from_storage": removed, "persisted": persisted});
            respond_json(session, &rid, 200, &v).await;
        }
        ("GET", "/admin/jobs") => super::jobs::admin_list(edge, session, &rid).await,
        ("GET", "/admin/config") => super::admin_config::get(edge, session, &rid).await,
        ("POST", "/admin/config/validate") => match read_body(session).await {
            Ok(b) => super::admin_config::validate(edge, session, &rid, &b).await,
            Err(e) => respond_error(session, &rid, &e).await,
        },
        ("POST", "/admin/config") => match read_body(session).await {
            Ok(b) => super::admin_config::apply(edge, session, &rid, &b).await,
            Err(e) => respond_error(session, &rid, &e).await,
        },
        ("GET", "/admin/analytics") => super::analytics::handle(edge, session, &rid, false).await,
        ("GET", "/admin/analytics/errors") => {
            super::analytics::handle(edge, session, &rid, true).await
        }
        ("POST", "/admin/jobs/retry") | ("POST", "/admin/cache/bust") => {
            let body = match read_body(session).await {
                Ok(b) => b,
                Err(e) => return respond_error(session, &rid, &e).await,
            };
            if path == "/admin/jobs/retry" {
                super::jobs::admin_retry(edge, session, &rid, &body).await;
            } else {
                super::jobs::admin_bust(edge, session, &rid, &body).await;
            }
        }
        ("GET", "/admin/cache/stats") => {
            let s = &edge.state.storage.stats;
            let (t, k, p) = edge.state.purge.counts();
            let v = json!({
                "memory_hits": s.mem_hits.load(Ordering::Relaxed),
                "disk_hits": s.disk_hits.load(Ordering::Relaxed),
                "misses": s.misses.load(Ordering::Relaxed),
                "disk_bytes": s.disk_bytes.load(Ordering::Relaxed),
                "disk_objects": s.disk_objects.load(Ordering::Relaxed),
                "disk_evictions": s.disk_evictions.load(Ordering::Relaxed),
                "purge_log": {"tags": t, "keys": k, "prefixes": p},
            });
            respond_json(session, &rid, 200, &v).await;
        }
        _ => {
            respond_error(
                session,
                &rid,
                &ApiError::not_found(format!("no admin endpoint {method} {path}")),
            )
            .await;
        }
    }
}

/// `PURGE /path`: purge one URL's key, from allowed networks only.
pub async fn purge_one(edge: &Edge, session: &mut Session, ctx: &mut Ctx) {
    let rid = ctx.request_id.clone();
    let allowed = peer_ip(session).is_some_and(|ip| edge.state.live().purge_allowed.contains(ip));
    if !allowed && !is_admin(edge, session) {
        respond_error(
            session,
            &rid,
            &ApiError::forbidden("PURGE is not allowed from this address"),
        )
        .await;
        return;
    }
    let target = session
        .req_header()
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let key = key_of(edge, &target);
    let persisted = record_purges(edge, vec![(PurgeKind::Key, vec![key.clone()])]).await;
    let removed = purge_keys(edge, std::slice::from_ref(&key)).await;
    METRICS.purges.with_label_values(&["key"]).inc();
    respond_json(
        session,
        &rid,
        200,
        &json!({"purged": key, "removed_from_storage": removed == 1, "persisted": persisted}),
    )
    .await;
}

/// Records purges in the purge log off the async reactor (file lock and sync). They hold in
/// memory at once; the answer is whether they are on disk yet (a full disk: written later).
pub(super) async fn record_purges(edge: &Edge, batch: Vec<(PurgeKind, Vec<String>)>) -> bool {
    let state = edge.state.clone();
    let recorded = tokio::task::spawn_blocking(move || {
        let refs: Vec<(PurgeKind, &[String])> =
            batch.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        state.purge.record_all(&refs).persisted
    })
    .await;
    recorded.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_in_constant_time() {
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"abc", b"ab"));
    }
}
