//! The request log in the metadata store: three rollups every request is counted into
//! (breakdown groups an hour, latency buckets an hour, requests a minute; counted in memory
//! on the request side by `crate::analytics` and added here about once a second), so a 24 h
//! report reads a few thousand rows whatever the traffic; and the `requests` table of raw
//! rows (every error and a sample of the rest, written in batches) the recent-errors list
//! reads (the `at` index bounds it). Rollups are upserts (`ON CONFLICT … DO UPDATE`), so several nodes can
//! write one PostgreSQL database. The same SQL runs on SQLite and PostgreSQL.

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
    /// Inserts raw rows in one transaction (one prepared single-row statement, run per row:
    /// faster on both databases than one statement with thousands of parameters). The
    /// rollups are not touched: they are counted apart ([`Db::add_rollup`]).
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

    /// Adds counts to the rollups in one transaction, in key order (every writer locks
    /// rollup rows in the same order, so two nodes' writes never deadlock on PostgreSQL).
    pub async fn add_rollup(&self, r: &Rollup) -> Result<(), DbError> {
        if r.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (k, v) in &r.hours {
            sqlx::query(
                "INSERT INTO request_hours (hour, route, status, cache, tier, origin, \
                 derivative, source, mode, n, bytes, us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (hour, route, status, cache, tier, origin, derivative, source, mode) \
                 DO UPDATE SET n = request_hours.n + excluded.n, \
                 bytes = request_hours.bytes + excluded.bytes, us = request_hours.us + excluded.us",
            )
            .bind(k.hour)
            .bind(k.route)
            .bind(i64::from(k.status))
            .bind(k.cache.as_str())
            .bind(k.tier)
            .bind(k.origin.as_str())
            .bind(k.derivative.as_str())
            .bind(k.source.as_str())
            .bind(k.mode.as_str())
            .bind(v.n)
            .bind(v.bytes)
            .bind(v.us)
            .execute(&mut *tx)
            .await?;
        }
        for ((hour, lat), n) in &r.latencies {
            sqlx::query(
                "INSERT INTO request_latency_hours (hour, lat, n) VALUES ($1, $2, $3) \
                 ON CONFLICT (hour, lat) DO UPDATE SET n = request_latency_hours.n + excluded.n",
            )
            .bind(*hour)
            .bind(*lat)
            .bind(*n)
            .execute(&mut *tx)
            .await?;
        }
        for (minute, (n, hits, errors)) in &r.minutes {
            sqlx::query(
                "INSERT INTO request_minutes (minute, n, hits, errors) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (minute) DO UPDATE SET n = request_minutes.n + excluded.n, \
                 hits = request_minutes.hits + excluded.hits, \
                 errors = request_minutes.errors + excluded.errors",
            )
            .bind(*minute)
            .bind(*n)
            .bind(*hits)
            .bind(*errors)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes the rows (and rollups) older than `before` (ms since the epoch); how many
    /// request rows.
    pub async fn prune_requests(&self, before: i64) -> Result<u64, DbError> {
        // Ten minutes of rows a statement, oldest first: a long-due prune never holds
        // SQLite's write lock (which job claims and uploads also need) for long.
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(at) FROM requests")
            .fetch_one(&self.pool)
            .await?;
        let mut removed = 0;
        let mut upto = oldest.unwrap_or(before);
        while upto < before {
            upto = (upto + 10 * MINUTE).min(before);
            let r = sqlx::query("DELETE FROM requests WHERE at < $1")
                .bind(upto)
                .execute(&self.pool)
                .await?;
            removed += r.rows_affected();
        }
        for q in [
            "DELETE FROM request_hours WHERE hour < $1",
            "DELETE FROM request_latency_hours WHERE hour < $1",
            "DELETE FROM request_minutes WHERE minute < $1",
        ] {
            sqlx::query(q)
                .bind(floor(before, HOUR))
                .execute(&self.pool)
                .await?;
        }
        Ok(removed)
    }
}

pub const HOUR: i64 = 3_600_000;
pub const MINUTE: i64 = 60_000;

/// `t` rounded down to a multiple of `unit`.
pub fn floor(t: i64, unit: i64) -> i64 {
    t.div_euclid(unit) * unit
}

/// The columns a request is counted by in `request_hours` (its hour and the breakdowns').
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub hour: i64,
    pub route: &'static str,
    pub status: u16,
    pub cache: String,
    pub tier: &'static str,
    pub origin: String,
    pub derivative: String,
    pub source: String,
    pub mode: String,
}

/// A group's sums: requests, bytes, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub n: i64,
    pub bytes: i64,
    pub us: i64,
}

impl Sums {
    pub fn add(&mut self, o: Sums) {
        self.n += o.n;
        self.bytes += o.bytes;
        self.us += o.us;
    }
}

/// Counts for the rollups, in key order: groups an hour, latency buckets an hour
/// (`(hour, bucket)`; the admin API's own requests are not in them), and `(requests, hits,
/// errors)` a minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollup {
    pub hours: std::collections::BTreeMap<GroupKey, Sums>,
    pub latencies: std::collections::BTreeMap<(i64, i64), i64>,
    pub minutes: std::collections::BTreeMap<i64, (i64, i64, i64)>,
}

impl Rollup {
    /// The rollups of these rows.
    pub fn of(rows: &[RequestRow]) -> Rollup {
        let mut r = Rollup::default();
        for row in rows {
            let key = GroupKey {
                hour: floor(row.at, HOUR),
                route: row.route,
                status: row.status,
                cache: row.cache.clone(),
                tier: row.tier,
                origin: row.origin.clone(),
                derivative: row.derivative.clone(),
                source: row.source.clone(),
                mode: row.mode.clone(),
            };
            r.count(
                key,
                row.at,
                Sums {
                    n: 1,
                    bytes: row.bytes as i64,
                    us: row.us as i64,
                },
            );
        }
        r
    }

    /// Counts one request of group `key` answered at `at` (ms since the epoch).
    pub fn count(&mut self, key: GroupKey, at: i64, s: Sums) {
        self.count_times(&key, at, s);
        self.hours.entry(key).or_default().add(s);
    }

    /// Counts a request of group `key` in the latency buckets and the minutes only.
    pub fn count_times(&mut self, key: &GroupKey, at: i64, s: Sums) {
        if key.route != "admin" {
            *self
                .latencies
                .entry((key.hour, latency_bucket(s.us as u64) as i64))
                .or_default() += s.n;
        }
        let m = self.minutes.entry(floor(at, MINUTE)).or_default();
        m.0 += s.n;
        m.1 += s.n * i64::from(key.cache == "HIT");
        m.2 += s.n * i64::from(key.status >= 400);
    }

    /// Adds `o`'s counts to these.
    pub fn merge(&mut self, o: Rollup) {
        for (k, v) in o.hours {
            self.hours.entry(k).or_default().add(v);
        }
        for (k, v) in o.latencies {
            *self.latencies.entry(k).or_default() += v;
        }
        for (k, v) in o.minutes {
            let m = self.minutes.entry(k).or_default();
            m.0 += v.0;
            m.1 += v.1;
            m.2 += v.2;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hours.is_empty() && self.latencies.is_empty() && self.minutes.is_empty()
    }

    /// The requests counted.
    pub fn requests(&self) -> i64 {
        self.minutes.values().map(|m| m.0).sum()
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
             CAST(SUM(n) AS BIGINT) AS n, CAST(SUM(bytes) AS BIGINT) AS b, \
             CAST(SUM(us) AS BIGINT) AS t FROM request_hours WHERE hour >= $1 \
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
                    count: sum(r, "n")?,
                    bytes: sum(r, "b")?,
                    us: sum(r, "t")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// `(latency bucket in µs, count)` of the window's requests (the admin API's own are
    /// not counted), by latency.
    pub async fn request_latencies(&self, since: i64) -> Result<Vec<(i64, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT lat, CAST(SUM(n) AS BIGINT) AS n FROM request_latency_hours \
             WHERE hour >= $1 GROUP BY lat ORDER BY lat",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("lat")?, sum(r, "n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// `(bucket start, requests, hits, errors)` over time, `bucket_ms` wide (a multiple of a
    /// minute).
    pub async fn request_series(
        &self,
        since: i64,
        bucket_ms: i64,
    ) -> Result<Vec<(i64, i64, i64, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT (minute / $2) * $2 AS bucket, CAST(SUM(n) AS BIGINT) AS n, \
             CAST(SUM(hits) AS BIGINT) AS hits, CAST(SUM(errors) AS BIGINT) AS errors \
             FROM request_minutes WHERE minute >= $1 GROUP BY 1 ORDER BY 1",
        )
        .bind(since)
        .bind(bucket_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("bucket")?,
                    sum(r, "n")?,
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
    fn row(at: i64, route: &'static str, cache: &str, status: u16, us: u64) -> super::RequestRow {
        super::RequestRow {
            at,
            route,
            method: "GET".into(),
            path: "/p".into(),
            status,
            cache: cache.into(),
            tier: "",
            origin: "o".into(),
            derivative: String::new(),
            source: "local".into(),
            mode: String::new(),
            bytes: 10,
            us,
            client: String::new(),
            error: String::new(),
        }
    }

    #[test]
    fn rollups_add_up_by_hour_and_minute() {
        use super::{Rollup, HOUR, MINUTE};
        let t = 10 * HOUR + 5 * MINUTE;
        let rows = [
            row(t, "original", "HIT", 200, 120),
            row(t + 1000, "original", "HIT", 200, 180),
            row(t + MINUTE, "original", "MISS", 502, 40_000),
            row(t + HOUR, "admin", "", 401, 90),
        ];
        let r = Rollup::of(&rows);
        assert_eq!(r.hours.len(), 3, "two groups in hour 10, one in hour 11");
        let hits: i64 = r
            .hours
            .iter()
            .filter(|(k, _)| k.cache == "HIT")
            .map(|(_, v)| v.n)
            .sum();
        assert_eq!(hits, 2);
        assert_eq!(r.minutes[&(10 * HOUR + 5 * MINUTE)], (2, 2, 0));
        assert_eq!(r.minutes[&(10 * HOUR + 6 * MINUTE)], (1, 0, 1));
        // The admin API's own request is in the groups, not in the latencies.
        assert_eq!(r.latencies.values().sum::<i64>(), 3);
        assert_eq!(r.latencies[&(10 * HOUR, 40_000)], 1);
    }

    #[test]
    fn latency_buckets_keep_two_digits() {
        use super::latency_bucket as b;
        assert_eq!(
            [b(0), b(7), b(99), b(100), b(1234), b(98_765)],
            [0, 7, 99, 100, 1200, 98_000]
        );
    }
}
