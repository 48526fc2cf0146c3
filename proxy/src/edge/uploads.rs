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

/// The record as the API answers it.
fn record(u: &Upload) -> serde_json::Value {
    json!({
        "id": u.id,
        "tenant": u.tenant,
        "sha256": u.sha256,
        "size": u.size,
        "content_type": u.content_type,
        "status": u.status,
        "deduplicated": u.deduplicated,
        "metadata": u.metadata,
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
        .security
        .tenant_with_scope(presented, scope)
        .map(str::to_string)
        .ok_or_else(|| ApiError::forbidden(format!("the token has no {scope} scope")))
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
            edge.state
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
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => ingest.write(&chunk).await?,
                Ok(None) => break,
                // The client closed before its Content-Length (or a chunk) was whole: the
                // temp file goes with `ingest`, nothing is recorded.
                Err(_) => return Err(ApiError::bad_request("the upload body is truncated")),
            }
        }
        let u = uploads.finish(ingest).await?;
        return Ok((201, record(&u)));
    }
    let id = path.trim_start_matches("/media/");
    if !crate::jobs::api::valid_id(id) {
        return Err(ApiError::not_found(format!("no media {id:?}")));
    }
    match method.as_str() {
        "GET" | "HEAD" => {
            let tenant =
                tenant(edge, session, "upload").or_else(|_| tenant(edge, session, "read"))?;
            Ok((200, record(&uploads.get(&tenant, id).await?)))
        }
        "DELETE" => {
            let tenant = tenant(edge, session, "upload")?;
            uploads.delete(&tenant, id).await?;
            Ok((200, json!({"deleted": id})))
        }
        m => Err(ApiError::new(
            405,
            ErrorCode::MethodNotAllowed,
            format!("method {m} not allowed on /media/{{id}} (GET, DELETE)"),
        )),
    }
}
