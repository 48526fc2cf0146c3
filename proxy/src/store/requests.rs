//! The `requests` table: one row a request (written in batches by `crate::analytics`), and
//! the analytics read from it. Every query is one pass over the window (the `at` index
//! bounds it) with a `GROUP BY` whose groups are few; percentiles are exact, computed from
//! the per-millisecond counts. The same SQL runs on SQLite and PostgreSQL.

use super::db::{Db, DbError};
use serde::Serialize;
use sqlx::Row;

/// One request as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRow {
    /// Ms since the epoch.
    pub at: i64,
    /// `transform`, `original`, `admin`, `upload`, `jobs`, `purge`, `health`, `metrics`,
    /// `refused`.
    pub route: &'static str,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The cache result (`HIT`, `MISS`, …; empty when the cache was not asked).
    pub cache: String,
    /// `memory`, `disk` or empty.
    pub tier: &'static str,
    pub origin: String,
    pub derivative: String,
    /// The origin's source kind (`local`, `s3`, `remote`, `external`).
    pub source: String,
    /// The transform mode (`image`, `video`, `frame`, …) or empty.
    pub mode: String,
    pub bytes: u64,
    /// Time to answer, in microseconds.
    pub us: u64,
    /// The client IP (or its hash).
    pub client: String,
    pub error: String,
}

/// Rows written in one transaction at most.
pub const BATCH: usize = 500;

impl Db {
    /// Inserts a batch in one transaction (one prepared single-row statement, run per row:
    /// faster on both databases than one statement with thousands of parameters).
    pub async fn insert_requests(&self, rows: &[RequestRow]) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO requests (at, route, method, path, status, cache, tier, origin, \
                 derivative, source, mode, bytes, us, lat, client, error) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(r.at)
            .bind(r.route)
            .bind(r.method.as_str())
            .bind(r.path.as_str())
            .bind(i64::from(r.status))
            .bind(r.cache.as_str())
            .bind(r.tier)
            .bind(r.origin.as_str())
            .bind(r.derivative.as_str())
            .bind(r.source.as_str())
            .bind(r.mode.as_str())
            .bind(r.bytes as i64)
            .bind(r.us as i64)
            .bind(latency_bucket(r.us) as i64)
            .bind(r.client.as_str())
            .bind(r.error.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes the rows older than `before` (ms since the epoch); how many.
    pub async fn prune_requests(&self, before: i64) -> Result<u64, DbError> {
        let r = sqlx::query("DELETE FROM requests WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

/// A latency rounded down to two significant digits (1,234 µs → 1,200 µs): what the
/// percentiles are computed from (within 10 %), a few hundred distinct values at most.
pub fn latency_bucket(us: u64) -> u64 {
    let mut p = 1;
    while us / p >= 100 {
        p *= 10;
    }
    us / p * p
}

/// One group of the window: the columns breakdowns are made of, with its counts.
#[derive(Debug, Clone)]
pub struct Group {
    pub route: String,
    pub status: i64,
    pub cache: String,
    pub tier: String,
    pub origin: String,
    pub derivative: String,
    pub source: String,
    pub mode: String,
    pub count: i64,
    pub bytes: i64,
    /// Sum of the times to answer, µs.
    pub us: i64,
}

/// A recent error.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRow {
    pub at: i64,
    pub route: String,
    pub method: String,
    pub path: String,
    pub status: i64,
    pub origin: String,
    pub error: String,
    pub ms: f64,
}

impl Db {
    /// The window's groups (every combination of the breakdown columns that occurred).
    pub async fn request_groups(&self, since: i64) -> Result<Vec<Group>, DbError> {
        let rows = sqlx::query(
            "SELECT route, status, cache, tier, origin, derivative, source, mode, \
             COUNT(*) AS n, CAST(SUM(bytes) AS BIGINT) AS b, CAST(SUM(us) AS BIGINT) AS t \
             FROM requests WHERE at >= $1 \
             GROUP BY route, status, cache, tier, origin, derivative, source, mode",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Group {
                    route: r.try_get("route")?,
                    status: r.try_get("status")?,
                    cache: r.try_get("cache")?,
                    tier: r.try_get("tier")?,
                    origin: r.try_get("origin")?,
                    derivative: r.try_get("derivative")?,
                    source: r.try_get("source")?,
                    mode: r.try_get("mode")?,
                    count: r.try_get("n")?,
                    bytes: sum(r, "b")?,
                    us: sum(r, "t")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// `(latency bucket in µs, count)` of the window's requests other than
    /// `exclude_route`, by latency.
    pub async fn request_latencies(
        &self,
        since: i64,
        exclude_route: &str,
    ) -> Result<Vec<(i64, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT lat, COUNT(*) AS n FROM requests WHERE at >= $1 AND route <> $2 \
             GROUP BY lat ORDER BY lat",
        )
        .bind(since)
        .bind(exclude_route)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("lat")?, r.try_get("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// `(bucket start, requests, hits, errors)` over time, `bucket_ms` wide.
    pub async fn request_series(
        &self,
        since: i64,
        bucket_ms: i64,
    ) -> Result<Vec<(i64, i64, i64, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT (at / $2) * $2 AS bucket, COUNT(*) AS n, \
             CAST(SUM(CASE WHEN cache = 'HIT' THEN 1 ELSE 0 END) AS BIGINT) AS hits, \
             CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT) AS errors \
             FROM requests WHERE at >= $1 GROUP BY 1 ORDER BY 1",
        )
        .bind(since)
        .bind(bucket_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("bucket")?,
                    r.try_get("n")?,
                    sum(r, "hits")?,
                    sum(r, "errors")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// The newest errors (status ≥ 400) of the window, without the admin routes' unless
    /// `with_admin`.
    pub async fn request_errors(
        &self,
        since: i64,
        limit: i64,
        with_admin: bool,
    ) -> Result<Vec<ErrorRow>, DbError> {
        let rows = sqlx::query(
            "SELECT at, route, method, path, status, origin, error, us FROM requests \
             WHERE at >= $1 AND status >= 400 AND (route <> 'admin' OR $2 = 1) \
             ORDER BY at DESC LIMIT $3",
        )
        .bind(since)
        .bind(i64::from(with_admin))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ErrorRow {
                    at: r.try_get("at")?,
                    route: r.try_get("route")?,
                    method: r.try_get("method")?,
                    path: r.try_get("path")?,
                    status: r.try_get("status")?,
                    origin: r.try_get("origin")?,
                    error: r.try_get("error")?,
                    ms: r.try_get::<i64, _>("us")? as f64 / 1000.0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}

/// A `SUM` column (cast to `BIGINT` in the SQL, so both databases answer an integer).
fn sum(r: &sqlx::any::AnyRow, col: &str) -> Result<i64, sqlx::Error> {
    r.try_get::<Option<i64>, _>(col).map(|v| v.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn latency_buckets_keep_two_digits() {
        use super::latency_bucket as b;
        assert_eq!(
            [b(0), b(7), b(99), b(100), b(1234), b(98_765)],
            [0, 7, 99, 100, 1200, 98_000]
        );
    }
}
