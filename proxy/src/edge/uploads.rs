//! The upload routes on the edge listener: `POST /upload` (the raw body; a bearer token
//! with the `upload` scope names the tenant), `GET /media/{id}` and `DELETE /media/{id}`
//! (the tenant's own records only). Owns reading the body into the ingest and the answers'
//! shape; storing, dedup and reference counts are `crate::uploads`'s. Nothing is cached.

use super::{respond_error, respond_json, Ctx, Edge};
use crate::error::{ApiError, ErrorCode};
use crate::store::uploads::Upload;
use pingora_proxy::Session;
use serde_json::json;

pub fn is_upload_route(path: &str) -> bool {
    path == "/upload" || path.starts_with("/media/")
}

/// The record as the API answers it, with the URLs of its original and derivatives: the
/// content-hash routes, signed for the tenant (`tenant=`, 24 h) when a signing key is set,
/// else asked with the tenant's bearer token.
fn record(edge: &Edge, u: &Upload) -> serde_json::Value {
    let live = edge.state.live();
    let cfg = &live.cfg.security;
    let url = |path_and_query: String| -> String {
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let with_tenant = format!("{path_and_query}{sep}tenant={}", u.tenant);
        crate::edge::security::sign_url(cfg, &with_tenant, 86_400, None).unwrap_or(path_and_query)
    };
    let h = &u.sha256;
    let m = &u.metadata;
    let mut urls = serde_json::Map::new();
    if m.get("kind").and_then(|k| k.as_str()) == Some("video") {
        if u.status == "complete" {
            urls.insert("hls".into(), json!(url(format!("/proxy/video/{h}"))));
            urls.insert(
                "poster".into(),
                json!(url(format!("/proxy/video/{h}?mode=hls&segment=poster"))),
            );
        }
    } else {
        urls.insert("original".into(), json!(url(format!("/proxy/image/{h}"))));
        let thumbs: Vec<_> = m
            .get("thumbnails")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_u64())
            .map(|w| {
                json!({"width": w, "url": url(format!("/proxy/thumbnail/{h}?width={w}&format=webp"))})
            })
            .collect();
        urls.insert("thumbnails".into(), json!(thumbs));
    }
    json!({
        "id": u.id,
        "tenant": u.tenant,
        "sha256": u.sha256,
        "size": u.size,
        "content_type": u.content_type,
        "status": u.status,
        "deduplicated": u.deduplicated,
        "metadata": u.metadata,
        "urls": urls,
        "created_at": u.created_at,
        "url": format!("/media/{}", u.id),
    })
}

/// The tenant of the request's bearer token, which must carry `scope`.
fn tenant(edge: &Edge, session: &Session, scope: &str) -> Result<String, ApiError> {
    let presented = session
        .req_header()
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::unauthorized(format!("a bearer token with the {scope} scope is required"))
        })?;
    edge.state
        .live()
        .security
        .tenant_with_scope(presented, scope)
        .map(str::to_string)
        .ok_or_else(|| ApiError::forbidden(format!("the token has no {scope} scope")))
}

/// Bytes of a multipart body the parser may hold at once beyond what it has handed out
/// (a boundary and a part's headers, with the read that brought them).
const MULTIPART_HELD: u64 = 256 * 1024;

/// The boundary of a `multipart/form-data` body.
fn multipart_boundary(session: &Session) -> Option<String> {
    let ct = session
        .req_header()
        .headers
        .get("content-type")?
        .to_str()
        .ok()?;
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/")
    {
        return None;
    }
    multer::parse_boundary(ct).ok()
}

/// A multipart body's file (its first part with a file name, or the part named `file`) into
/// the ingest; the other parts are read and dropped (the whole body counts against the upload limit).
async fn read_multipart(
    session: &mut Session,
    boundary: String,
    ingest: &mut crate::uploads::Ingest,
    max_bytes: u64,
) -> Result<(), ApiError> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let truncated = || ApiError::bad_request("the upload body is truncated");
    // Bytes read from the client and bytes handed out as part contents: what lies between
    // is what the parser holds (boundaries, part headers). It may not grow past
    // MULTIPART_HELD, or a part header without an end would be kept whole in memory.
    let (received, yielded, overflow) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (r, y, o) = (received.clone(), yielded.clone(), overflow.clone());
    let body = futures::stream::unfold(session, move |s| {
        let (r, y, o) = (r.clone(), y.clone(), o.clone());
        async move {
            if r.load(Relaxed).saturating_sub(y.load(Relaxed)) > MULTIPART_HELD {
                o.store(true, Relaxed);
                return Some((Err(std::io::Error::other("multipart headers too large")), s));
            }
            match s.read_request_body().await {
                Ok(Some(chunk)) => {
                    r.fetch_add(chunk.len() as u64, Relaxed);
                    Some((Ok::<_, std::io::Error>(chunk), s))
                }
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), s)),
            }
        }
    });
    // The whole body counts against the upload limit (parts, headers and boundaries).
    let limit = multer::SizeLimit::new().whole_stream(max_bytes.saturating_add(64 * 1024));
    let mut mp = multer::Multipart::with_constraints(
        body,
        boundary,
        multer::Constraints::new().size_limit(limit),
    );
    let bad = |e: multer::Error| {
        match e {
        _ if overflow.load(Relaxed) => ApiError::bad_request(format!(
            "a malformed multipart body: over {MULTIPART_HELD} bytes of boundaries and part headers at once"
        )),
        multer::Error::StreamReadFailed(_) | multer::Error::IncompleteStream => truncated(),
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            ApiError::new(
                413,
                ErrorCode::PayloadTooLarge,
                format!("upload over store.max_upload_bytes ({max_bytes} bytes)"),
            )
        }
        e => ApiError::bad_request(format!("a malformed multipart body: {e}")),
    }
    };
    let mut taken = false;
    while let Some(mut field) = mp.next_field().await.map_err(bad)? {
        let take = !taken && (field.file_name().is_some() || field.name() == Some("file"));
        taken |= take;
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            yielded.fetch_add(chunk.len() as u64, Relaxed);
            if take {
                ingest.write(&chunk).await?;
            }
        }
    }
    if !taken {
        return Err(ApiError::bad_request(
            "a multipart upload needs a file part (one with a filename, or named \"file\")",
        ));
    }
    Ok(())
}

pub async fn handle(edge: &Edge, session: &mut Session, ctx: &mut Ctx) {
    let rid = ctx.request_id.clone();
    match answer(edge, session, ctx).await {
        Ok((status, v)) => respond_json(session, &rid, status, &v).await,
        Err(e) => {
            // A refused upload's unread body must not be taken for the next request.
            session.set_keepalive(None);
            respond_error(session, &rid, &e).await
        }
    }
}

async fn answer(
    edge: &Edge,
    session: &mut Session,
    ctx: &Ctx,
) -> Result<(u16, serde_json::Value), ApiError> {
    let path = session.req_header().uri.path().to_string();
    let method = session.req_header().method.clone();
    let uploads = edge.state.uploads.clone();
    if path == "/upload" {
        if method != http::Method::POST {
            return Err(ApiError::new(
                405,
                ErrorCode::MethodNotAllowed,
                format!("method {method} not allowed on /upload (POST)"),
            ));
        }
        let tenant = tenant(edge, session, "upload")?;
        if let Some(ip) = ctx.client_ip {
            ctx.live
                .security
                .rate_check(filters::OperationClass::Upload, ip)?;
        }
        let declared = session
            .req_header()
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > uploads.max_bytes) {
            return Err(ApiError::new(
                413,
                ErrorCode::PayloadTooLarge,
                format!(
                    "upload over store.max_upload_bytes ({} bytes)",
                    uploads.max_bytes
                ),
            ));
        }
        let mut ingest = uploads.begin(&tenant).await?;
        match multipart_boundary(session) {
            Some(boundary) => {
                read_multipart(session, boundary, &mut ingest, uploads.max_bytes).await?
            }
            None => loop {
                match session.read_request_body().await {
                    Ok(Some(chunk)) => ingest.write(&chunk).await?,
                    Ok(None) => break,
                    // The client closed before its Content-Length (or a chunk) was whole:
                    // the temp file goes with `ingest`, nothing is recorded.
                    Err(_) => return Err(ApiError::bad_request("the upload body is truncated")),
                }
            },
        }
        let u = uploads.finish(ingest).await?;
        return Ok((201, record(edge, &u)));
    }
    let id = path.trim_start_matches("/media/");
    if !crate::jobs::api::valid_id(id) {
        return Err(ApiError::not_found(format!("no media {id:?}")));
    }
    match method.as_str() {
        "GET" | "HEAD" => {
            let tenant =
                tenant(edge, session, "upload").or_else(|_| tenant(edge, session, "read"))?;
            Ok((200, record(edge, &uploads.get(&tenant, id).await?)))
        }
        "DELETE" => {
            let tenant = tenant(edge, session, "upload")?;
            if let Some(key) = uploads.delete(&tenant, id).await? {
                // The object is gone: so is everything the edge cached of it (the original
                // and every transform carry its path tag).
                let tag = format!("path:{}{key}", crate::config::UPLOADS_PREFIX);
                super::admin::record_purges(edge, vec![(super::purge::PurgeKind::Tag, vec![tag])])
                    .await;
            }
            Ok((200, json!({"deleted": id})))
        }
        m => Err(ApiError::new(
            405,
            ErrorCode::MethodNotAllowed,
            format!("method {m} not allowed on /media/{{id}} (GET, DELETE)"),
        )),
    }
}
