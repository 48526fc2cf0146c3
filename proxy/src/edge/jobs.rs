//! The job API on the edge listener: `GET /jobs/{id}` (open: a job id is 128 random bits),
//! `GET /sse/job/{id}` (Server-Sent Events until the job is done), and the admin calls
//! `GET /admin/jobs?status=&q=&hours=&limit=`, `POST /admin/jobs/retry` and
//! `POST /admin/cache/bust`.
//!
//! Owns the HTTP framing of those answers; the rows and the event stream are
//! `crate::store` and `crate::jobs::api`. Nothing here is cached.

use super::purge::PurgeKind;
use super::{respond_error, respond_json, Ctx, Edge};
use crate::error::{ApiError, ErrorCode};
use crate::jobs::api;
use crate::store::jobs::{ListFilter, Status};
use futures::StreamExt;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use serde::Deserialize;
use serde_json::json;

/// Whether the path is one of the public job routes.
pub fn is_job_route(path: &str) -> bool {
    path.starts_with("/jobs/") || path.starts_with("/sse/job/")
}

/// `GET /jobs/{id}` and `GET /sse/job/{id}`.
pub async fn handle(edge: &Edge, session: &mut Session, ctx: &mut Ctx) {
    let rid = ctx.request_id.clone();
    let path = session.req_header().uri.path().to_string();
    let method = session.req_header().method.clone();
    if method != http::Method::GET && method != http::Method::HEAD {
        let e = ApiError::new(
            405,
            ErrorCode::MethodNotAllowed,
            format!("method {method} not allowed"),
        );
        return respond_error(session, &rid, &e).await;
    }
    let (sse, id) = match (path.strip_prefix("/sse/job/"), path.strip_prefix("/jobs/")) {
        (Some(id), _) => (true, id.to_string()),
        (_, Some(id)) => (false, id.to_string()),
        _ => return respond_error(session, &rid, &ApiError::not_found("no such route")).await,
    };
    if !api::valid_id(&id) {
        let e = ApiError::not_found(format!("no job {id:?}"));
        return respond_error(session, &rid, &e).await;
    }
    let store = edge.state.queue.store.clone();
    let row = match store.db.job(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return respond_error(session, &rid, &ApiError::not_found(format!("no job {id}"))).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading a job");
            let e = ApiError::internal("the metadata store failed");
            return respond_error(session, &rid, &e).await;
        }
    };
    if !sse {
        return respond_json(session, &rid, 200, &api::job(&row)).await;
    }
    let Ok(mut head) = ResponseHeader::build(200, Some(5)) else {
        return;
    };
    let _ = head.insert_header("content-type", "text/event-stream");
    let _ = head.insert_header("cache-control", "no-store");
    let _ = head.insert_header("x-request-id", rid.as_str());
    // HTTP/1.1 frames an open-ended stream in chunks; HTTP/2 frames it itself.
    if !session.is_http2() {
        let _ = head.insert_header("transfer-encoding", "chunked");
    }
    if session
        .write_response_header(Box::new(head), false)
        .await
        .is_err()
    {
        return;
    }
    let events = api::events(store, id);
    futures::pin_mut!(events);
    while let Some(chunk) = events.next().await {
        if session
            .write_response_body(Some(chunk), false)
            .await
            .is_err()
        {
            // The client left.
            return;
        }
    }
    let _ = session.write_response_body(None, true).await;
    let _ = session.finish_body().await;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    job_id: Option<String>,
    stale_minutes: Option<i64>,
    #[serde(default)]
    delete: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BustBody {
    path: Option<String>,
    origin: Option<String>,
}

pub(super) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// `GET /admin/jobs`.
pub async fn admin_list(edge: &Edge, session: &mut Session, rid: &str) {
    let query = session.req_header().uri.query().map(str::to_string);
    let q = query.as_deref();
    let status = match query_param(q, "status") {
        None => None,
        Some(s) => match Status::parse(&s) {
            Some(st) => Some(st),
            None => {
                let e = ApiError::bad_request(format!(
                    "status {s:?} is not one of queued, running, complete, failed"
                ));
                return respond_error(session, rid, &e).await;
            }
        },
    };
    let number = |name: &str, max: i64| -> Result<Option<i64>, ApiError> {
        match query_param(q, name) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ApiError::bad_request(format!(
                    "{name} must be a number in 1..={max}, got {v:?}"
                ))),
            },
        }
    };
    let (hours, limit) = match (number("hours", 24 * 365), number("limit", 1000)) {
        (Ok(h), Ok(l)) => (h, l),
        (Err(e), _) | (_, Err(e)) => return respond_error(session, rid, &e).await,
    };
    let filter = ListFilter {
        status,
        q: query_param(q, "q"),
        hours,
        limit: limit.unwrap_or(100),
    };
    let db = &edge.state.queue.store.db;
    match (db.list_jobs(&filter).await, db.job_counts().await) {
        (Ok(rows), Ok(counts)) => {
            let jobs: Vec<_> = rows.iter().map(api::job).collect();
            let counts: serde_json::Map<_, _> =
                counts.into_iter().map(|(s, n)| (s, json!(n))).collect();
            respond_json(session, rid, 200, &json!({"jobs": jobs, "counts": counts})).await;
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "listing jobs");
            respond_error(
                session,
                rid,
                &ApiError::internal("the metadata store failed"),
            )
            .await;
        }
    }
}

/// `POST /admin/jobs/retry`: `{job_id}` (a failed job, tries reset), `{stale_minutes}`
/// (running jobs silent that long, queued again) or `{job_id, delete: true}`.
pub async fn admin_retry(edge: &Edge, session: &mut Session, rid: &str, body: &[u8]) {
    let req: RetryBody = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let e = ApiError::bad_request(format!(
                "body must be {{\"job_id\"}}, {{\"stale_minutes\"}} or {{\"job_id\", \"delete\": true}}: {e}"
            ));
            return respond_error(session, rid, &e).await;
        }
    };
    let db = &edge.state.queue.store.db;
    let answer = match (req.job_id, req.stale_minutes, req.delete) {
        (Some(id), None, delete) if api::valid_id(&id) => {
            let r = if delete {
                db.delete_job(&id).await
            } else {
                db.retry_job(&id).await
            };
            match r {
                Ok(true) if delete => Ok(json!({"deleted": id})),
                Ok(true) => {
                    edge.state.queue.wake();
                    Ok(json!({"retried": id}))
                }
                Ok(false) if delete => Err(ApiError::not_found(format!("no job {id}"))),
                Ok(false) => Err(ApiError::new(
                    409,
                    ErrorCode::BadRequest,
                    format!("job {id} is not failed (or an identical job is active)"),
                )),
                Err(e) => {
                    tracing::warn!(error = %e, "retrying a job");
                    Err(ApiError::internal("the metadata store failed"))
                }
            }
        }
        (None, Some(m), false) if (1..=100_000).contains(&m) => match db.requeue_stale(m).await {
            Ok(n) => {
                edge.state.queue.wake();
                Ok(json!({"requeued": n}))
            }
            Err(e) => {
                tracing::warn!(error = %e, "requeueing stale jobs");
                Err(ApiError::internal("the metadata store failed"))
            }
        },
        _ => Err(ApiError::bad_request(
            "give a valid job_id (optionally with delete: true) or stale_minutes in 1..=100000",
        )),
    };
    match answer {
        Ok(v) => respond_json(session, rid, 200, &v).await,
        Err(e) => respond_error(session, rid, &e).await,
    }
}

/// `POST /admin/cache/bust {path}|{origin}`: a new version for the transforms of a path or
/// of a whole origin (their store keys change) and a purge of the same tag at the edge.
pub async fn admin_bust(edge: &Edge, session: &mut Session, rid: &str, body: &[u8]) {
    let req: BustBody = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let e = ApiError::bad_request(format!(
                "body must be {{\"path\": \"/...\"}} or {{\"origin\": \"name\"}}: {e}"
            ));
            return respond_error(session, rid, &e).await;
        }
    };
    let scope = match (&req.path, &req.origin) {
        (Some(p), None) if p.starts_with('/') => format!("path:{p}"),
        (None, Some(o)) if edge.state.live().cfg.origins.iter().any(|c| &c.name == o) => {
            format!("origin:{o}")
        }
        (None, Some(o)) => {
            let e = ApiError::not_found(format!("no origin named {o:?}"));
            return respond_error(session, rid, &e).await;
        }
        _ => {
            let e = ApiError::bad_request("give one of path (starting with '/') or origin");
            return respond_error(session, rid, &e).await;
        }
    };
    let version = match edge.state.queue.store.db.bump_version(&scope).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "bumping a bust version");
            let e = ApiError::internal("the metadata store failed");
            return respond_error(session, rid, &e).await;
        }
    };
    // The edge's copies carry the same tag (`path:` / `origin:`).
    let persisted =
        super::admin::record_purges(edge, vec![(PurgeKind::Tag, vec![scope.clone()])]).await;
    respond_json(
        session,
        rid,
        200,
        &json!({"busted": scope, "version": version, "purge_persisted": persisted}),
    )
    .await;
}
