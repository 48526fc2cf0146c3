//! The durable side of a node: the metadata database ([`db`]: SQLite by default, PostgreSQL
//! for a fleet; tables in [`jobs`] and [`transforms`]) and the object store ([`objects`]: a
//! folder or an S3/R2 bucket) that keeps finished transforms under `_transformed/`.
//!
//! Owns where things persist and the rule that an object is whole before a row names it.
//! It does not decide what to transform or when (the origin service and `crate::jobs` do)
//! and speaks no HTTP.

pub mod db;
pub mod jobs;
pub mod objects;
pub mod requests;
pub mod transforms;
pub mod uploads;

pub use db::{Backend, Db, DbError};
pub use transforms::StoredTransform;

use crate::config::Config;
use crate::origin::sources::{BuildError, Fetched, SourceError};
use bytes::Bytes;
use objects::ObjectStore;
use sha2::Digest;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("store.database_url_env: env var {0} is not set")]
    UrlEnv(String),
    #[error("store.objects: {0}")]
    Objects(#[from] BuildError),
    #[error("object store: {0}")]
    Object(#[from] SourceError),
}

pub struct Store {
    pub db: Db,
    pub objects: ObjectStore,
    /// Keep every finished transform (`store.transforms`).
    pub keep_transforms: bool,
}

/// The database URL the config names (the env var first), or the embedded default.
pub fn database_url(cfg: &Config) -> Result<String, StoreError> {
    if let Some(var) = &cfg.store.database_url_env {
        return std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| StoreError::UrlEnv(var.clone()));
    }
    Ok(match cfg.store.database_url.as_str() {
        "" => format!(
            "sqlite://{}?mode=rwc",
            cfg.server.data_dir.join("media-edge.db").display()
        ),
        url => url.to_string(),
    })
}

/// The object key of a transform: a digest of what decides its bytes — the origin, the
/// source path, the canonical transform query and the source's version (its ETag, or
/// Last-Modified and length, plus the bust versions of the origin and the path).
pub fn transform_key(origin: &str, path: &str, query: &str, version: &str) -> String {
    let mut h = sha2::Sha256::new();
    for part in [origin, path, query, version] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let hex = hex::encode(h.finalize());
    format!("_transformed/{}/{}", &hex[..2], &hex[2..])
}

impl Store {
    pub async fn open(cfg: &Config) -> Result<Store, StoreError> {
        let url = database_url(cfg)?;
        let db = Db::open(&url, cfg.store.max_connections).await?;
        let objects = ObjectStore::open(
            cfg.store.objects.as_ref(),
            &cfg.server.data_dir.join("store"),
        )
        .await?;
        tracing::info!(database = %db::redact(&url), objects = objects.kind(), "store open");
        Ok(Store {
            db,
            objects,
            keep_transforms: cfg.store.transforms,
        })
    }

    /// A stored transform and its object (a range of it when asked). A row whose object has
    /// gone is forgotten, so the transform is made again.
    pub async fn lookup(
        &self,
        key: &str,
        range: Option<String>,
    ) -> Result<Option<(StoredTransform, Fetched)>, StoreError> {
        let Some(t) = self.db.stored_transform(key).await? else {
            return Ok(None);
        };
        match self.objects.get(key, range).await {
            Ok(f) => Ok(Some((t, f))),
            Err(SourceError::NotFound(_)) => {
                tracing::warn!(key, "stored transform without its object; made again");
                self.db.forget_transform(key).await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps a finished transform held in memory.
    pub async fn keep_bytes(&self, t: &StoredTransform, body: Bytes) -> Result<(), StoreError> {
        self.objects
            .put_bytes(&t.key, body, &t.content_type)
            .await?;
        self.db.record_transform(t).await?;
        Ok(())
    }

    /// Keeps a finished transform written to a file (streamed from it).
    pub async fn keep_file(&self, t: &StoredTransform, file: &Path) -> Result<(), StoreError> {
        self.objects.put_file(&t.key, file, &t.content_type).await?;
        self.db.record_transform(t).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_keys_depend_on_every_part() {
        let k = transform_key("o", "/a.mp4", "mode=video", "\"e1\"");
        assert!(k.starts_with("_transformed/"));
        assert_eq!(k.len(), "_transformed/".len() + 65);
        assert_eq!(k, transform_key("o", "/a.mp4", "mode=video", "\"e1\""));
        for other in [
            transform_key("p", "/a.mp4", "mode=video", "\"e1\""),
            transform_key("o", "/b.mp4", "mode=video", "\"e1\""),
            transform_key("o", "/a.mp4", "mode=audio", "\"e1\""),
            transform_key("o", "/a.mp4", "mode=video", "\"e2\""),
            // No ambiguity between parts.
            transform_key("o", "/a.mp4m", "ode=video", "\"e1\""),
        ] {
            assert_ne!(k, other);
        }
    }
}
