//! The `transforms` table (what the object store holds under `_transformed/`: type, ETag,
//! length and the response headers of each finished transform) and `bust_versions` (a
//! number per origin or path that enters the store key, bumped by `/admin/cache/bust` for
//! sources that give no ETag).
//!
//! A row is written only after its object is whole in the object store, so a row always
//! names a complete object; a crash in between leaves an unreferenced object, never a torn
//! answer.

use super::db::{now_ms, Db, DbError};
use sqlx::Row;

/// What is recorded of a stored transform.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTransform {
    pub key: String,
    pub content_type: String,
    pub etag: String,
    pub len: u64,
    /// Response headers of the transform (`X-Resolved-*`, `Cache-Tag`...), name and value.
    pub headers: Vec<(String, String)>,
}

impl Db {
    pub async fn stored_transform(&self, key: &str) -> Result<Option<StoredTransform>, DbError> {
        let r = sqlx::query(
            "SELECT key, content_type, etag, len, headers FROM transforms WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(None) };
        let headers: String = r.try_get("headers")?;
        let len: i64 = r.try_get("len")?;
        Ok(Some(StoredTransform {
            key: r.try_get("key")?,
            content_type: r.try_get("content_type")?,
            etag: r.try_get("etag")?,
            len: len.max(0) as u64,
            headers: serde_json::from_str(&headers).unwrap_or_default(),
        }))
    }

    /// Records a transform whose object is in the store (the same key again replaces it).
    pub async fn record_transform(&self, t: &StoredTransform) -> Result<(), DbError> {
        let headers = serde_json::to_string(&t.headers).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO transforms (key, content_type, etag, len, headers, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO UPDATE SET \
             content_type = excluded.content_type, etag = excluded.etag, len = excluded.len, \
             headers = excluded.headers, created_at = excluded.created_at",
        )
        .bind(&t.key)
        .bind(&t.content_type)
        .bind(&t.etag)
        .bind(i64::try_from(t.len).unwrap_or(i64::MAX))
        .bind(headers)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn forget_transform(&self, key: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM transforms WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The bust versions of an origin and of one of its paths (0 when never bumped).
    pub async fn bust_versions(&self, origin: &str, path: &str) -> Result<(i64, i64), DbError> {
        let (o, p) = (format!("origin:{origin}"), format!("path:{path}"));
        let rows = sqlx::query("SELECT scope, version FROM bust_versions WHERE scope IN ($1, $2)")
            .bind(&o)
            .bind(&p)
            .fetch_all(&self.pool)
            .await?;
        let mut v = (0, 0);
        for r in rows {
            let scope: String = r.try_get("scope")?;
            let n: i64 = r.try_get("version")?;
            if scope == o {
                v.0 = n;
            } else {
                v.1 = n;
            }
        }
        Ok(v)
    }

    /// Bumps the version of `scope` (`origin:NAME` or `path:/p`); returns the new one.
    pub async fn bump_version(&self, scope: &str) -> Result<i64, DbError> {
        let now = now_ms();
        let v: i64 = sqlx::query_scalar(
            "INSERT INTO bust_versions (scope, version, updated_at) VALUES ($1, 1, $2) \
             ON CONFLICT (scope) DO UPDATE SET version = bust_versions.version + 1, \
             updated_at = excluded.updated_at RETURNING version",
        )
        .bind(scope)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(v)
    }
}
