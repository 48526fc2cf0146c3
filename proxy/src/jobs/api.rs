//! The job API's shapes: a job as JSON (`GET /jobs/{id}`, the 202 answer, the admin list)
//! and the Server-Sent Events stream of `GET /sse/job/{id}` (a `progress` event whenever
//! the state or percent changes, a comment every 15 s to keep proxies from closing an idle
//! stream, then the final `complete` or `failed` event, and the end).
//!
//! The stream reads the job's row from the store, so a client gets the same events whichever
//! node runs the job. The HTTP framing is the edge's.

use crate::store::jobs::{JobRow, Status};
use crate::store::Store;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn status_url(id: &str) -> String {
    format!("/jobs/{id}")
}

pub fn sse_url(id: &str) -> String {
    format!("/sse/job/{id}")
}

/// The URL that serves the job's result once it is complete (the transform's own URL).
pub fn result_url(job: &JobRow) -> String {
    format!("{}?{}", job.path, job.query)
}

/// The answer to the request that queued (or found) the job.
pub fn accepted(job: &JobRow) -> Value {
    json!({
        "job_id": job.id,
        "status": job.status,
        "status_url": status_url(&job.id),
        "sse_url": sse_url(&job.id),
        "reason": job.reason,
    })
}

/// A job as `GET /jobs/{id}` and the admin list show it.
pub fn job(job: &JobRow) -> Value {
    json!({
        "job_id": job.id,
        "status": job.status,
        "percent": job.percent,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": job.error,
        "reason": job.reason,
        "origin": job.origin,
        "path": job.path,
        "result_url": (job.status == Status::Complete).then(|| result_url(job)),
        "status_url": status_url(&job.id),
        "sse_url": sse_url(&job.id),
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "next_try_at": (job.status == Status::Queued).then_some(job.run_after),
    })
}

/// Whether `id` looks like a job id (32 hex digits), checked before any query.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// How often the stream looks at the row, and how often it sends a keep-alive comment.
const POLL: Duration = Duration::from_millis(250);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The events of one job until it is done. Ends after the final event, or with an `error`
/// event when the job is gone or the store fails.
pub fn events(store: Arc<Store>, id: String) -> impl futures::Stream<Item = Bytes> + Send {
    struct State {
        store: Arc<Store>,
        id: String,
        last: Option<(Status, i64)>,
        last_sent: Instant,
        done: bool,
    }
    let state = State {
        store,
        id,
        last: None,
        last_sent: Instant::now(),
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let row = s.store.db.job(&s.id).await;
            let out = match row {
                Ok(Some(j)) if j.status.is_final() => {
                    s.done = true;
                    Some(event(j.status.as_str(), &job(&j)))
                }
                Ok(Some(j)) if s.last != Some((j.status, j.percent)) => {
                    s.last = Some((j.status, j.percent));
                    Some(event("progress", &job(&j)))
                }
                Ok(Some(_)) => None,
                Ok(None) => {
                    s.done = true;
                    Some(event("error", &json!({"error": "job not found"})))
                }
                Err(e) => {
                    s.done = true;
                    Some(event("error", &json!({"error": e.to_string()})))
                }
            };
            if let Some(b) = out {
                s.last_sent = Instant::now();
                return Some((b, s));
            }
            if s.last_sent.elapsed() >= KEEP_ALIVE {
                s.last_sent = Instant::now();
                return Some((Bytes::from_static(b": keep-alive\n\n"), s));
            }
            tokio::time::sleep(POLL).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_queries() {
        assert!(valid_id("0123456789abcdef0123456789ABCDEF"));
        assert!(!valid_id("0123"));
        assert!(!valid_id("0123456789abcdef0123456789abcdeg"));
        assert!(!valid_id("../../../../etc/passwd/0123456789"));
    }
}
