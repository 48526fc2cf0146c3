//! The database connection: SQLite (a file, WAL, the embedded default) or PostgreSQL,
//! through sqlx's `Any` driver so that every query is written once, and the schema
//! migrations, applied at start in order, each in its own transaction (on PostgreSQL under
//! an advisory lock, so two nodes starting together migrate once).
//!
//! Queries use `$1`-style placeholders (both backends accept them), `BIGINT` times in
//! milliseconds since the epoch and `TEXT` ids, which both backends store the same way. The
//! one place the dialects differ is named by [`Backend`] (`FOR UPDATE SKIP LOCKED`).

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection};
use std::str::FromStr;
use std::time::Duration;

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration {version} ({name}): {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
}

/// The schema, one step a version; a step is never edited once released, only added.
const MIGRATIONS: &[(i64, &str, &[&str])] = &[(
    1,
    "jobs, transforms, bust versions",
    &[
        "CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            dedup_key TEXT NOT NULL,
            status TEXT NOT NULL,
            origin TEXT NOT NULL,
            path TEXT NOT NULL,
            query TEXT NOT NULL,
            reason TEXT NOT NULL,
            percent BIGINT NOT NULL,
            attempts BIGINT NOT NULL,
            max_attempts BIGINT NOT NULL,
            last_error TEXT,
            result_key TEXT,
            run_after BIGINT NOT NULL,
            lease_owner TEXT,
            lease_until BIGINT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
        // One queued or running job per result: identical requests share it.
        "CREATE UNIQUE INDEX jobs_active ON jobs (dedup_key) WHERE status IN ('queued', 'running')",
        "CREATE INDEX jobs_claim ON jobs (status, run_after)",
        "CREATE INDEX jobs_created ON jobs (created_at)",
        "CREATE TABLE transforms (
            key TEXT PRIMARY KEY,
            content_type TEXT NOT NULL,
            etag TEXT NOT NULL,
            len BIGINT NOT NULL,
            headers TEXT NOT NULL,
            created_at BIGINT NOT NULL
        )",
        "CREATE TABLE bust_versions (
            scope TEXT PRIMARY KEY,
            version BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
    ],
), (
    2,
    "uploads and their shared objects",
    &[
        "CREATE TABLE uploads (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            storage_key TEXT NOT NULL,
            size BIGINT NOT NULL,
            content_type TEXT NOT NULL,
            status TEXT NOT NULL,
            deduplicated BIGINT NOT NULL,
            metadata TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
        "CREATE INDEX uploads_hash ON uploads (tenant, sha256, status)",
        // How many records reference each stored object; `deleting` while the last
        // reference's delete removes the object (a new upload of those bytes waits).
        "CREATE TABLE upload_objects (
            storage_key TEXT PRIMARY KEY,
            refs BIGINT NOT NULL,
            state TEXT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
    ],
), (
    3,
    "processing uploads",
    &["CREATE INDEX uploads_status ON uploads (status, created_at)"],
), (
    4,
    "request log",
    &[
        "CREATE TABLE requests (
            at BIGINT NOT NULL,
            route TEXT NOT NULL,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            status BIGINT NOT NULL,
            cache TEXT NOT NULL,
            tier TEXT NOT NULL,
            origin TEXT NOT NULL,
            derivative TEXT NOT NULL,
            source TEXT NOT NULL,
            mode TEXT NOT NULL,
            bytes BIGINT NOT NULL,
            us BIGINT NOT NULL,
            lat BIGINT NOT NULL,
            client TEXT NOT NULL,
            error TEXT NOT NULL
        )",
        "CREATE INDEX requests_at ON requests (at)",
        // Rollups the writer keeps with every batch, so analytics read a few thousand rows
        // whatever the traffic: breakdown groups an hour, latency buckets an hour (the admin
        // API's own requests left out), and requests a minute for the series.
        "CREATE TABLE request_hours (
            hour BIGINT NOT NULL,
            route TEXT NOT NULL,
            status BIGINT NOT NULL,
            cache TEXT NOT NULL,
            tier TEXT NOT NULL,
            origin TEXT NOT NULL,
            derivative TEXT NOT NULL,
            source TEXT NOT NULL,
            mode TEXT NOT NULL,
            n BIGINT NOT NULL,
            bytes BIGINT NOT NULL,
            us BIGINT NOT NULL,
            PRIMARY KEY (hour, route, status, cache, tier, origin, derivative, source, mode)
        )",
        "CREATE TABLE request_latency_hours (
            hour BIGINT NOT NULL,
            lat BIGINT NOT NULL,
            n BIGINT NOT NULL,
            PRIMARY KEY (hour, lat)
        )",
        "CREATE TABLE request_minutes (
            minute BIGINT PRIMARY KEY,
            n BIGINT NOT NULL,
            hits BIGINT NOT NULL,
            errors BIGINT NOT NULL
        )",
    ],
)];

/// The pool and what is behind it.
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

/// Milliseconds since the epoch, the time unit of every table.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Db {
    /// Opens the database and brings its schema up to date, then returns a pool that
    /// holds no connection yet: the server daemonizes (forks) after start-up, and a
    /// connection made before the fork would not survive it. Connections are made by the
    /// first queries, on the runtime that runs them.
    pub async fn open(url: &str, max_connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let connect_err = |source| DbError::Connect {
            url: redact(url),
            source,
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let options = AnyConnectOptions::from_str(url).map_err(connect_err)?;
        let pool_options = || {
            AnyPoolOptions::new()
                .max_connections(max_connections)
                .min_connections(0)
                // No maintenance task: it would be spawned on the start-up runtime.
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // Writers wait for each other (and for another process during
                            // an upgrade) instead of failing at once.
                            for pragma in [
                                "PRAGMA busy_timeout = 10000",
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = NORMAL",
                            ] {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                        }
                        Ok(())
                    })
                })
        };
        let setup = pool_options()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(connect_err)?;
        let migrated = Db {
            pool: setup.clone(),
            backend,
        }
        .migrate()
        .await;
        setup.close().await;
        migrated?;
        Ok(Db {
            pool: pool_options().connect_lazy_with(options),
            backend,
        })
    }

    /// `FOR UPDATE SKIP LOCKED` where the backend has row locks (PostgreSQL); SQLite runs one
    /// writer at a time, so a single `UPDATE ... RETURNING` is already atomic there.
    pub fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    async fn migrate(&self) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock(727274)")
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version BIGINT PRIMARY KEY,
                    name TEXT NOT NULL,
                    applied_at BIGINT NOT NULL
                )",
            )
            .execute(&mut *conn)
            .await?;
            let done: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
                .fetch_all(&mut *conn)
                .await?;
            for (version, name, steps) in MIGRATIONS {
                if done.contains(version) {
                    continue;
                }
                let fail = |source| DbError::Migration {
                    version: *version,
                    name,
                    source,
                };
                let mut tx = conn.begin().await.map_err(fail)?;
                for step in *steps {
                    sqlx::query(step).execute(&mut *tx).await.map_err(fail)?;
                }
                sqlx::query(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                )
                .bind(*version)
                .bind(*name)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
                tx.commit().await.map_err(fail)?;
                tracing::info!(version, name, "database migrated");
            }
            Ok::<(), DbError>(())
        }
        .await;
        if self.backend == Backend::Postgres {
            let _ = sqlx::query("SELECT pg_advisory_unlock(727274)")
                .execute(&mut *conn)
                .await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://me:secret@127.0.0.1:5432/db"),
            "postgres://me:***@127.0.0.1:5432/db"
        );
        assert_eq!(redact("postgres://me@h/db"), "postgres://me@h/db");
        assert_eq!(redact("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }

    #[tokio::test]
    async fn sqlite_migrates_once_and_numbered_placeholders_bind() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        let db = Db::open(&url, 2).await.unwrap();
        let again = Db::open(&url, 2).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(&again.pool)
            .await
            .unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);
        let v: i64 = sqlx::query_scalar("SELECT $2 + $1")
            .bind(40i64)
            .bind(2i64)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(v, 42);
    }
}
