//! The `jobs` table: inserting a job once per result, claiming one atomically with a lease,
//! progress that renews the lease, completion, retry with backoff and the dead-letter state,
//! and the admin queries (list, retry, requeue stale, delete).
//!
//! Only the worker holding a job's lease (`lease_owner`) may move it; every write checks it,
//! so a worker that lost its lease to another node cannot overwrite that node's result.

use super::db::{now_ms, Db, DbError};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Complete,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Complete => "complete",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "complete" => Status::Complete,
            "failed" => Status::Failed,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, Status::Complete | Status::Failed)
    }
}

/// One row.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    #[serde(skip)]
    pub dedup_key: String,
    pub status: Status,
    pub origin: String,
    pub path: String,
    pub query: String,
    /// Why the request became a job.
    pub reason: String,
    pub percent: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    pub error: Option<String>,
    #[serde(skip)]
    pub result_key: Option<String>,
    /// When a queued job may run next (ms since the epoch).
    pub run_after: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, dedup_key, status, origin, path, query, reason, percent, attempts, \
     max_attempts, last_error, result_key, run_after, created_at, updated_at";

fn row(r: &AnyRow) -> Result<JobRow, sqlx::Error> {
    let status: String = r.try_get("status")?;
    Ok(JobRow {
        id: r.try_get("id")?,
        dedup_key: r.try_get("dedup_key")?,
        status: Status::parse(&status).unwrap_or(Status::Failed),
        origin: r.try_get("origin")?,
        path: r.try_get("path")?,
        query: r.try_get("query")?,
        reason: r.try_get("reason")?,
        percent: r.try_get("percent")?,
        attempts: r.try_get("attempts")?,
        max_attempts: r.try_get("max_attempts")?,
        error: r.try_get("last_error")?,
        result_key: r.try_get("result_key")?,
        run_after: r.try_get("run_after")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// What a new job is.
pub struct NewJob<'a> {
    pub dedup_key: &'a str,
    pub origin: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub reason: &'a str,
    pub max_attempts: u32,
}

/// Filters of the admin list.
#[derive(Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    /// A substring of the path or the query.
    pub q: Option<String>,
    /// Created within the last this many hours.
    pub hours: Option<i64>,
    pub limit: i64,
}

/// A 128-bit random id in hex.
pub fn new_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Db {
    /// The queued or running job for `dedup_key`, inserting one when there is none. The
    /// second value is true when this call inserted it. The row is committed on return.
    pub async fn enqueue(&self, job: &NewJob<'_>) -> Result<(JobRow, bool), DbError> {
        let now = now_ms();
        let id = new_id();
        // A concurrent identical request may win the unique index: then its row is ours.
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, dedup_key, status, origin, path, query, reason, percent, \
             attempts, max_attempts, run_after, created_at, updated_at) \
             VALUES ($1, $2, 'queued', $3, $4, $5, $6, 0, 0, $7, $8, $8, $8) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(job.dedup_key)
        .bind(job.origin)
        .bind(job.path)
        .bind(job.query)
        .bind(job.reason)
        .bind(i64::from(job.max_attempts))
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let q = format!(
            "SELECT {COLUMNS} FROM jobs WHERE dedup_key = $1 AND status IN ('queued', 'running')"
        );
        match sqlx::query(&q)
            .bind(job.dedup_key)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(r) => Ok((row(&r)?, inserted)),
            // Finished between the two statements: the caller looks in the store again.
            None => Err(DbError::Query(sqlx::Error::RowNotFound)),
        }
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>, DbError> {
        let q = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        let r = sqlx::query(&q).bind(id).fetch_optional(&self.pool).await?;
        Ok(r.as_ref().map(row).transpose()?)
    }

    /// Takes the next runnable job for `owner`: a queued one whose time has come, or a
    /// running one whose lease ran out (its worker died). Counts an attempt.
    pub async fn claim(&self, owner: &str, lease_ms: i64) -> Result<Option<JobRow>, DbError> {
        let now = now_ms();
        let q = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $1, \
             lease_until = $2, updated_at = $3 \
             WHERE id = (SELECT id FROM jobs WHERE (status = 'queued' AND run_after <= $3) \
             OR (status = 'running' AND lease_until < $3) ORDER BY run_after LIMIT 1{}) \
             RETURNING {COLUMNS}",
            self.skip_locked()
        );
        let r = sqlx::query(&q)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(row).transpose()?)
    }

    /// Records progress and renews the lease; false when `owner` no longer holds the job.
    pub async fn progress(
        &self,
        id: &str,
        owner: &str,
        percent: i64,
        lease_ms: i64,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE jobs SET percent = $1, lease_until = $2, updated_at = $3 \
             WHERE id = $4 AND lease_owner = $5 AND status = 'running'",
        )
        .bind(percent.clamp(0, 100))
        .bind(now + lease_ms)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn complete(&self, id: &str, owner: &str, result_key: &str) -> Result<bool, DbError> {
        let n = sqlx::query(
            "UPDATE jobs SET status = 'complete', percent = 100, result_key = $1, \
             last_error = NULL, lease_owner = NULL, lease_until = NULL, updated_at = $2 \
             WHERE id = $3 AND lease_owner = $4 AND status = 'running'",
        )
        .bind(result_key)
        .bind(now_ms())
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// A failed try: queued again after `retry_in_ms`, or `failed` for good when `retry_in_ms`
    /// is `None` (tries exhausted, or an error no retry can fix).
    pub async fn fail(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        retry_in_ms: Option<i64>,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let (status, run_after) = match retry_in_ms {
            Some(ms) => ("queued", now + ms),
            None => ("failed", now),
        };
        let n = sqlx::query(
            "UPDATE jobs SET status = $1, last_error = $2, run_after = $3, lease_owner = NULL, \
             lease_until = NULL, updated_at = $4 \
             WHERE id = $5 AND lease_owner = $6 AND status = 'running'",
        )
        .bind(status)
        .bind(error)
        .bind(run_after)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// A running job handed back by its stopping worker: queued again at once, the try
    /// not counted.
    pub async fn release(&self, id: &str, owner: &str) -> Result<bool, DbError> {
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_after = $1, \
             lease_owner = NULL, lease_until = NULL, updated_at = $1 \
             WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
        )
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn list_jobs(&self, f: &ListFilter) -> Result<Vec<JobRow>, DbError> {
        let since = f.hours.map(|h| now_ms() - h.saturating_mul(3_600_000));
        let pattern = f.q.as_ref().map(|q| {
            let escaped = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let q = format!(
            "SELECT {COLUMNS} FROM jobs WHERE ($1 = '' OR status = $1) \
             AND ($2 = '' OR path LIKE $2 ESCAPE '\\' OR query LIKE $2 ESCAPE '\\') \
             AND created_at >= $3 ORDER BY created_at DESC LIMIT $4"
        );
        let rows = sqlx::query(&q)
            .bind(f.status.map(Status::as_str).unwrap_or(""))
            .bind(pattern.unwrap_or_default())
            .bind(since.unwrap_or(0))
            .bind(f.limit.clamp(1, 1000))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(row(r)?)).collect()
    }

    /// A failed job queued again now with fresh tries. False when it is not failed (or an
    /// identical job is already queued or running).
    pub async fn retry_job(&self, id: &str) -> Result<bool, DbError> {
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_after = $1, percent = 0, \
             updated_at = $1 WHERE id = $2 AND status = 'failed'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await;
        match r {
            Ok(done) => Ok(done.rows_affected() == 1),
            // The unique index: an identical job is active.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Running jobs with no news for `minutes` queued again at once (their lease dropped);
    /// how many.
    pub async fn requeue_stale(&self, minutes: i64) -> Result<u64, DbError> {
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE jobs SET status = 'queued', run_after = $1, lease_owner = NULL, \
             lease_until = NULL, updated_at = $1 \
             WHERE status = 'running' AND updated_at < $2",
        )
        .bind(now)
        .bind(now - minutes.saturating_mul(60_000))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    pub async fn delete_job(&self, id: &str) -> Result<bool, DbError> {
        let n = sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Jobs by state, for metrics and the admin API.
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}
