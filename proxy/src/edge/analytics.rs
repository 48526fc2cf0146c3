//! The analytics endpoints of the admin API: `GET /admin/analytics?hours=24` (totals, hit
//! rate by tier, latency percentiles, breakdowns, the series) and `GET
//! /admin/analytics/errors?hours=24&limit=50[&admin=1]` (recent errors; the admin API's own
//! are hidden unless asked for). Read from the request log in the metadata store.

use super::jobs::query_param;
use super::{respond_error, respond_json, Edge};
use crate::error::ApiError;
use pingora_proxy::Session;
use serde_json::json;

/// A bounded number parameter (`default` when absent).
fn number(q: Option<&str>, name: &str, default: i64, max: i64) -> Result<i64, ApiError> {
    match query_param(q, name) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "{name} must be a number in 1..={max}, got {v:?}"
            ))),
        },
    }
}

fn failed(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "analytics query");
    ApiError::internal("the analytics query failed")
}

pub async fn handle(edge: &Edge, session: &mut Session, rid: &str, errors: bool) {
    match answer(edge, session, errors).await {
        Ok(v) => respond_json(session, rid, 200, &v).await,
        Err(e) => respond_error(session, rid, &e).await,
    }
}

async fn answer(
    edge: &Edge,
    session: &Session,
    errors: bool,
) -> Result<serde_json::Value, ApiError> {
    if !crate::analytics::enabled() {
        return Err(ApiError::not_found(
            "the request log is off (analytics.enabled = false)",
        ));
    }
    let query = session.req_header().uri.query().map(str::to_string);
    let q = query.as_deref();
    let hours = number(q, "hours", 24, 24 * 90)?;
    // The last `hours` clock hours, this one included (the rollups are by the hour).
    use crate::store::requests::{floor, HOUR};
    let since = floor(crate::store::db::now_ms(), HOUR) - (hours - 1) * HOUR;
    let db = &edge.state.queue.store.db;
    if errors {
        let limit = number(q, "limit", 50, 1000)?;
        let with_admin = query_param(q, "admin").is_some_and(|v| v == "1" || v == "true");
        let rows = db
            .request_errors(since, limit, with_admin)
            .await
            .map_err(failed)?;
        return Ok(json!({"hours": hours, "errors": rows}));
    }
    // About 60 points whatever the window, on whole minutes.
    let bucket_ms = ((hours * 3_600_000 / 60) / 60_000).max(1) * 60_000;
    let groups = db.request_groups(since).await.map_err(failed)?;
    let latencies = db.request_latencies(since).await.map_err(failed)?;
    let series = db.request_series(since, bucket_ms).await.map_err(failed)?;
    Ok(crate::analytics::report(
        hours, &groups, &latencies, &series, bucket_ms,
    ))
}
