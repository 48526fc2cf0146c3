//! Uploads: a body streamed to a temp file while it is hashed (SHA-256; never whole in
//! memory), classified by its bytes (an image or a video, else 415), deduplicated per
//! tenant (the tenant's complete record of the same bytes → a new record sharing its
//! object, no second write), stored at `{tenant}/{sha256}` in the uploads folder or bucket,
//! and recorded with what the bytes say (EXIF camera, time and position of a JPEG; the
//! EXIF never reaches an output, whose metadata policy is the transform's). Deletes remove
//! the object only with the last record that shares it (`store::uploads` has the rules).
//!
//! It speaks no HTTP: the edge reads the body and writes the answers.

pub mod derive;

use crate::error::{ApiError, ErrorCode};
use crate::store::objects::ObjectStore;
use crate::store::uploads::{Reserved, Upload};
use crate::store::{Store, StoreError};
use crate::transform::tempfile::TempFile;
use serde_json::{json, Value};
use sha2::Digest;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Bytes kept from the start of a body for classification and EXIF.
const HEAD: usize = 256 * 1024;
/// How long an upload waits for the removal of the same bytes' object to finish.
const BUSY_WAIT: Duration = Duration::from_secs(30);

pub struct Uploads {
    pub store: Arc<Store>,
    pub objects: ObjectStore,
    temp_dir: PathBuf,
    pub max_bytes: u64,
    pub derive: derive::Deriver,
}

/// An upload being received.
pub struct Ingest {
    tenant: String,
    file: tokio::fs::File,
    tmp: TempFile,
    hasher: sha2::Sha256,
    size: u64,
    head: Vec<u8>,
    max: u64,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "upload");
    ApiError::internal("the upload could not be stored")
}

impl Ingest {
    /// Takes the next part of the body.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(ApiError::new(
                413,
                ErrorCode::PayloadTooLarge,
                format!("upload over store.max_upload_bytes ({} bytes)", self.max),
            ));
        }
        self.hasher.update(chunk);
        let room = HEAD.saturating_sub(self.head.len());
        self.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        self.file.write_all(chunk).await.map_err(internal)
    }
}

impl Uploads {
    pub async fn open(
        cfg: Arc<crate::config::Config>,
        store: Arc<Store>,
        runner: Arc<dyn crate::jobs::Runner>,
        queue: Arc<crate::jobs::Queue>,
    ) -> Result<Self, StoreError> {
        let objects = ObjectStore::open(
            cfg.store.uploads.as_ref(),
            &cfg.server.data_dir.join("uploads"),
        )
        .await?;
        let temp_dir = cfg.server.data_dir.join("tmp");
        let _ = std::fs::create_dir_all(&temp_dir);
        Ok(Uploads {
            store,
            objects,
            temp_dir,
            max_bytes: cfg.store.max_upload_bytes.0,
            derive: derive::Deriver { cfg, runner, queue },
        })
    }

    pub async fn begin(&self, tenant: &str) -> Result<Ingest, ApiError> {
        let tmp = TempFile::fresh(&self.temp_dir, "upload");
        let file = tokio::fs::File::create(tmp.path())
            .await
            .map_err(internal)?;
        Ok(Ingest {
            tenant: tenant.to_string(),
            file,
            tmp,
            hasher: sha2::Sha256::new(),
            size: 0,
            head: Vec::new(),
            max: self.max_bytes,
        })
    }

    /// Stores and records a whole body.
    pub async fn finish(&self, mut ingest: Ingest) -> Result<Upload, ApiError> {
        ingest.file.flush().await.map_err(internal)?;
        if ingest.size == 0 {
            return Err(ApiError::bad_request("the upload is empty"));
        }
        let Some(kind) = crate::transform::sniff::sniff(&ingest.head) else {
            return Err(ApiError::new(
                415,
                ErrorCode::UnsupportedMedia,
                "the upload is not an image or a video",
            ));
        };
        let sha256 = hex::encode(ingest.hasher.finalize_reset());
        let key = format!("{}/{sha256}", ingest.tenant);
        let db = &self.store.db;
        let deadline = Instant::now() + BUSY_WAIT;
        let reserved = loop {
            match db.reserve_object(&key).await.map_err(internal)? {
                Reserved::Busy if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Reserved::Busy => {
                    let mut e = ApiError::new(
                        503,
                        ErrorCode::Overloaded,
                        "the same bytes are being deleted; try again",
                    );
                    e.retry_after = Some(1);
                    return Err(e);
                }
                r => break r,
            }
        };
        // The tenant's complete record of these bytes, whose object (and derivatives) a
        // deduplicated record shares.
        let existing = match reserved {
            Reserved::Existing => db
                .upload_by_hash(&ingest.tenant, &sha256)
                .await
                .map_err(internal)?,
            _ => None,
        };
        let deduplicated = existing.is_some();
        let mut record = Upload {
            id: crate::store::jobs::new_id(),
            tenant: ingest.tenant.clone(),
            sha256,
            storage_key: key.clone(),
            size: ingest.size as i64,
            content_type: kind.mime().to_string(),
            status: "complete".into(),
            deduplicated,
            metadata: metadata(kind, &ingest.head),
            created_at: crate::store::db::now_ms(),
        };
        if let Some(e) = existing {
            record.metadata = e.metadata;
            record.content_type = e.content_type;
        } else {
            // Also when another upload of these bytes is still in flight: the same bytes
            // under the same key, written whole or not at all.
            if let Err(e) = self
                .objects
                .put_file(&key, ingest.tmp.path(), kind.mime())
                .await
            {
                self.release(&key).await;
                return Err(internal(e));
            }
            if let Err(e) = self.derive_new(&mut record, kind).await {
                self.release(&key).await;
                return Err(e);
            }
        }
        if let Err(e) = db.insert_upload(&record).await {
            self.release(&key).await;
            return Err(internal(e));
        }
        crate::metrics::METRICS
            .uploads
            .with_label_values(&[if deduplicated {
                "deduplicated"
            } else {
                "stored"
            }])
            .inc();
        Ok(record)
    }

    /// Makes a new object's derivatives: an image's at once, a video's by a job (the record
    /// is `processing` until it ends).
    async fn derive_new(
        &self,
        record: &mut Upload,
        kind: crate::transform::sniff::Sniffed,
    ) -> Result<(), ApiError> {
        let mut m = std::mem::take(&mut record.metadata);
        let r = match kind {
            crate::transform::sniff::Sniffed::AudioVideo(_) => {
                record.status = "processing".into();
                self.derive.video(record, &mut m).await
            }
            _ => self.derive.image(record, &mut m).await,
        };
        record.metadata = m;
        r
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<Upload, ApiError> {
        let db = &self.store.db;
        let u = db
            .upload(tenant, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError::not_found(format!("no media {id}")))?;
        if u.status == "processing" && self.settle(&u).await {
            return db
                .upload(tenant, id)
                .await
                .map_err(internal)?
                .ok_or_else(|| ApiError::not_found(format!("no media {id}")));
        }
        Ok(u)
    }

    /// Moves a `processing` record on when its job has ended; true when it moved.
    async fn settle(&self, u: &Upload) -> bool {
        let Some((status, metadata)) = self.derive.settled(u).await else {
            return false;
        };
        match self.store.db.finish_upload(&u.id, status, &metadata).await {
            Ok(moved) => {
                if moved {
                    tracing::info!(upload = %u.id, status, "upload processed");
                }
                moved
            }
            Err(e) => {
                tracing::warn!(upload = %u.id, error = %e, "settling an upload");
                false
            }
        }
    }

    /// Settles every `processing` record whose job has ended (run by the job workers).
    pub async fn settle_all(&self) {
        match self.store.db.processing_uploads(500).await {
            Ok(list) => {
                for u in list {
                    self.settle(&u).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing processing uploads"),
        }
    }

    /// Deletes the record, and its object when no other record shares it: the object's
    /// key when it went (what was cached of it is to be purged).
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<Option<String>, ApiError> {
        let key = self
            .store
            .db
            .delete_upload(tenant, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ApiError::not_found(format!("no media {id}")))?;
        Ok(self.release(&key).await.then_some(key))
    }

    /// Takes one reference to `key` away; with the last, the object goes (true).
    async fn release(&self, key: &str) -> bool {
        match self.store.db.release_object(key).await {
            Ok(true) => {
                self.remove_object(key).await;
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(key, error = %e, "releasing an upload object");
                false
            }
        }
    }

    async fn remove_object(&self, key: &str) {
        match self.objects.delete(key).await {
            Ok(()) => {
                if let Err(e) = self.store.db.forget_object(key).await {
                    tracing::warn!(key, error = %e, "forgetting an upload object");
                }
            }
            // Left `deleting`: finished at the next start.
            Err(e) => tracing::warn!(key, error = %e, "removing an upload object"),
        }
    }

    /// Finishes removals a crash interrupted.
    pub async fn sweep(&self) {
        match self.store.db.deleting_objects().await {
            Ok(keys) => {
                for k in keys {
                    self.remove_object(&k).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "upload sweep"),
        }
    }
}

/// What the record keeps of the bytes: the kind, and a JPEG's EXIF camera, time and place.
fn metadata(kind: crate::transform::sniff::Sniffed, head: &[u8]) -> Value {
    use crate::transform::sniff::Sniffed;
    let mut m = json!({
        "kind": match kind {
            Sniffed::AudioVideo(_) => "video",
            _ => "image",
        },
    });
    #[cfg(feature = "image-engine")]
    if let Some(raw) = crate::transform::image::exif::jpeg_exif(head) {
        let all = crate::transform::image::exif::to_json(&raw);
        let mut exif = serde_json::Map::new();
        for k in ["Make", "Model", "DateTimeOriginal", "latitude", "longitude"] {
            if let Some(v) = all.get(k) {
                exif.insert(k.to_string(), v.clone());
            }
        }
        m["exif"] = Value::Object(exif);
    }
    #[cfg(not(feature = "image-engine"))]
    let _ = head;
    m
}
