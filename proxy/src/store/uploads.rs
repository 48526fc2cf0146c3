//! The `uploads` table (one record per upload, per tenant) and `upload_objects` (how many
//! records share each stored object). Every step is one atomic statement, so the rules hold
//! on SQLite and PostgreSQL alike under any interleaving:
//!
//! - an upload first *reserves* its object: a reference on a `live` row, or a new row;
//!   a row in `deleting` (its last record is being deleted) makes it wait;
//! - a delete removes its record, then takes its reference away; the one that takes the
//!   last turns the row `deleting`, removes the object, then the row;
//! - so an object is removed only when no committed record references it, and a new upload
//!   of the same bytes writes its object only after that removal.
//!
//! A crash between two steps can leave a reference too many (an object kept that nothing
//! uses), never a record whose object is gone.

use super::db::{now_ms, Db, DbError};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// One upload record.
#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    pub id: String,
    pub tenant: String,
    pub sha256: String,
    #[serde(skip)]
    pub storage_key: String,
    pub size: i64,
    pub content_type: String,
    pub status: String,
    pub deduplicated: bool,
    /// What was learnt from the bytes (dimensions, EXIF), as JSON.
    pub metadata: serde_json::Value,
    pub created_at: i64,
}

/// What reserving an object found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// The object is stored and now has one more reference.
    Existing,
    /// No object yet: this upload writes it (the row holds its reference).
    New,
    /// The object is being removed by the delete of its last record: ask again.
    Busy,
}

const COLUMNS: &str = "id, tenant, sha256, storage_key, size, content_type, status, \
     deduplicated, metadata, created_at";

fn row(r: &AnyRow) -> Result<Upload, sqlx::Error> {
    let metadata: String = r.try_get("metadata")?;
    let dedup: i64 = r.try_get("deduplicated")?;
    Ok(Upload {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        sha256: r.try_get("sha256")?,
        storage_key: r.try_get("storage_key")?,
        size: r.try_get("size")?,
        content_type: r.try_get("content_type")?,
        status: r.try_get("status")?,
        deduplicated: dedup != 0,
        metadata: serde_json::from_str(&metadata).unwrap_or_default(),
        created_at: r.try_get("created_at")?,
    })
}

impl Db {
    pub async fn reserve_object(&self, key: &str) -> Result<Reserved, DbError> {
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE upload_objects SET refs = refs + 1, updated_at = $2 \
             WHERE storage_key = $1 AND state = 'live'",
        )
        .bind(key)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 1 {
            return Ok(Reserved::Existing);
        }
        let n = sqlx::query(
            "INSERT INTO upload_objects (storage_key, refs, state, updated_at) \
             VALUES ($1, 1, 'live', $2) ON CONFLICT DO NOTHING",
        )
        .bind(key)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(if n == 1 {
            Reserved::New
        } else {
            Reserved::Busy
        })
    }

    /// Takes one reference away; true when it was the last (the row is now `deleting`: the
    /// caller removes the object, then [`Db::forget_object`]).
    pub async fn release_object(&self, key: &str) -> Result<bool, DbError> {
        let r = sqlx::query(
            "UPDATE upload_objects SET refs = refs - 1, updated_at = $2, \
             state = CASE WHEN refs - 1 <= 0 THEN 'deleting' ELSE state END \
             WHERE storage_key = $1 AND state = 'live' RETURNING state",
        )
        .bind(key)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else { return Ok(false) };
        let state: String = r.try_get("state")?;
        Ok(state == "deleting")
    }

    pub async fn forget_object(&self, key: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM upload_objects WHERE storage_key = $1 AND state = 'deleting'")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Objects left `deleting` by a crash (their removal is finished at start).
    pub async fn deleting_objects(&self) -> Result<Vec<String>, DbError> {
        Ok(
            sqlx::query_scalar("SELECT storage_key FROM upload_objects WHERE state = 'deleting'")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn insert_upload(&self, u: &Upload) -> Result<(), DbError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO uploads (id, tenant, sha256, storage_key, size, content_type, status, \
             deduplicated, metadata, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(&u.id)
        .bind(&u.tenant)
        .bind(&u.sha256)
        .bind(&u.storage_key)
        .bind(u.size)
        .bind(&u.content_type)
        .bind(&u.status)
        .bind(i64::from(u.deduplicated))
        .bind(u.metadata.to_string())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn upload(&self, tenant: &str, id: &str) -> Result<Option<Upload>, DbError> {
        let q = format!("SELECT {COLUMNS} FROM uploads WHERE id = $1 AND tenant = $2");
        let r = sqlx::query(&q)
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(row).transpose()?)
    }

    /// The newest complete record of these bytes for the tenant (content-hash routes).
    pub async fn upload_by_hash(
        &self,
        tenant: &str,
        sha256: &str,
    ) -> Result<Option<Upload>, DbError> {
        let q = format!(
            "SELECT {COLUMNS} FROM uploads WHERE tenant = $1 AND sha256 = $2 \
             AND status = 'complete' ORDER BY created_at DESC LIMIT 1"
        );
        let r = sqlx::query(&q)
            .bind(tenant)
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(row).transpose()?)
    }

    /// The oldest `processing` records, at most `limit`.
    pub async fn processing_uploads(&self, limit: i64) -> Result<Vec<Upload>, DbError> {
        let q = format!(
            "SELECT {COLUMNS} FROM uploads WHERE status = 'processing' \
             ORDER BY created_at LIMIT $1"
        );
        let rows = sqlx::query(&q).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row).collect::<Result<_, _>>()?)
    }

    /// Moves a `processing` record on (to `complete` or `failed`, with its derivatives in
    /// `metadata`); false when it was not `processing` any more.
    pub async fn finish_upload(
        &self,
        id: &str,
        status: &str,
        metadata: &serde_json::Value,
    ) -> Result<bool, DbError> {
        let n = sqlx::query(
            "UPDATE uploads SET status = $1, metadata = $2, updated_at = $3 \
             WHERE id = $4 AND status = 'processing'",
        )
        .bind(status)
        .bind(metadata.to_string())
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Removes the record; its storage key when there was one.
    pub async fn delete_upload(&self, tenant: &str, id: &str) -> Result<Option<String>, DbError> {
        let key: Option<String> = sqlx::query_scalar(
            "DELETE FROM uploads WHERE id = $1 AND tenant = $2 RETURNING storage_key",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        Ok(key)
    }
}
