//! What is made of an upload, through the same transform path (and into the same transform
//! store) as any request for it: an image's metadata (dimensions, ThumbHash), its WebP
//! thumbnails and a blur placeholder, made before the upload is answered; a video's HLS
//! package (playlist, segments and a 1 s poster), made by a job while the record is
//! `processing` and settled into the record when the job ends.
//!
//! The targets are the origin service's: `/_uploads/{tenant}/{sha256}` with the canonical
//! query of the matching content-hash route, so `/proxy/thumbnail/{sha256}?width=320&
//! format=webp` asked by the tenant later is a store hit.

use crate::config::{Config, UPLOADS_ORIGIN, UPLOADS_PREFIX};
use crate::error::{ApiError, ErrorCode};
use crate::jobs::{JobError, Progress, Queue, Runner};
use crate::store::jobs::{NewJob, Status};
use crate::store::uploads::Upload;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest metadata answer read back.
const METADATA_MAX: usize = 64 * 1024;
/// Largest placeholder kept in a record.
const PLACEHOLDER_MAX: usize = 4 * 1024;

pub struct Deriver {
    pub cfg: Arc<Config>,
    pub runner: Arc<dyn Runner>,
    pub queue: Arc<Queue>,
}

/// The origin service's request target of a content-hash route on an upload.
pub fn target(
    cfg: &Config,
    tenant: &str,
    sha256: &str,
    route: &str,
    query: &str,
) -> Result<(String, String), ApiError> {
    let to_api = |e: filters::FilterError| ApiError::new(e.status(), e.code(), e.to_string());
    let client = format!("/proxy/{route}/{sha256}");
    let c = filters::content::rewrite(&client, Some(query), &cfg.content.prefix)
        .map_err(to_api)?
        .ok_or_else(|| ApiError::internal("not a content-hash route"))?;
    let path = format!("{UPLOADS_PREFIX}{tenant}/{sha256}");
    let headers = http::HeaderMap::new();
    let parts = filters::RequestParts {
        path: &path,
        query: Some(c.query.as_str()).filter(|q| !q.is_empty()),
        headers: &headers,
    };
    let r = filters::resolve(&parts, &cfg.filters, &filters::ResolveOptions::default())
        .map_err(to_api)?;
    Ok((path, r.spec.to_canonical_query()))
}

/// A failed derivative as the upload's answer: the bytes looked like media but are not
/// (422), or the node could not make it now (503, to be tried again).
fn unusable(e: JobError) -> ApiError {
    if e.retryable {
        let mut a = ApiError::new(
            503,
            ErrorCode::Overloaded,
            format!("the upload could not be processed now: {}", e.message),
        );
        a.retry_after = Some(5);
        return a;
    }
    ApiError::new(
        422,
        ErrorCode::UnsupportedMedia,
        format!("the upload could not be processed: {}", e.message),
    )
}

impl Deriver {
    async fn make(
        &self,
        u: &Upload,
        route: &str,
        query: &str,
        body_max: usize,
    ) -> Result<Option<bytes::Bytes>, ApiError> {
        let (path, q) = target(&self.cfg, &u.tenant, &u.sha256, route, query)?;
        let made = self
            .runner
            .produce(&path, &q, Arc::new(Progress::default()), body_max)
            .await
            .map_err(unusable)?;
        Ok(made.body)
    }

    /// An image's derivatives into `metadata`: `width`, `height`, `format`, `thumbhash`,
    /// `thumbnails` (widths) and `placeholder` (a `data:` URI).
    pub async fn image(&self, u: &Upload, metadata: &mut Value) -> Result<(), ApiError> {
        let info = self.make(u, "metadata", "", METADATA_MAX).await?;
        let info: Value = info
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        for (from, to) in [
            ("width", "width"),
            ("height", "height"),
            ("format", "format"),
            ("placeholder", "thumbhash"),
        ] {
            if let Some(v) = info.get(from).filter(|v| !v.is_null()) {
                metadata[to] = v.clone();
            }
        }
        let widths = &self.cfg.store.thumbnail_widths;
        for w in widths {
            self.make(u, "thumbnail", &format!("width={w}&format=webp"), 0)
                .await?;
        }
        metadata["thumbnails"] = json!(widths);
        let pw = self.cfg.store.placeholder_width;
        let q = format!("width={pw}&format=webp&quality=50");
        if let Some(b) = self.make(u, "thumbnail", &q, PLACEHOLDER_MAX).await? {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&b);
            metadata["placeholder"] = json!(format!("data:image/webp;base64,{b64}"));
        }
        Ok(())
    }

    /// Queues a video's HLS package (committed on return); its job id goes into `metadata`.
    pub async fn video(&self, u: &Upload, metadata: &mut Value) -> Result<(), ApiError> {
        let (path, query) = target(&self.cfg, &u.tenant, &u.sha256, "video", "mode=hls")?;
        let dedup = format!("upload:{path}?{query}");
        let new = NewJob {
            dedup_key: &dedup,
            origin: UPLOADS_ORIGIN,
            path: &path,
            query: &query,
            reason: "a video upload is packaged as HLS",
            max_attempts: self.queue.cfg.max_attempts,
        };
        let (row, _) = self.queue.submit(&new).await.map_err(|e| {
            tracing::warn!(error = %e, "queueing an upload's HLS job");
            ApiError::internal("could not queue the upload's processing")
        })?;
        metadata["job_id"] = json!(row.id);
        Ok(())
    }

    /// A `processing` record's next state from its job: `Some((status, metadata))` once the
    /// job has ended (or is gone), `None` while it runs.
    pub async fn settled(&self, u: &Upload) -> Option<(&'static str, Value)> {
        let id = u.metadata.get("job_id").and_then(Value::as_str)?;
        let job = match self.queue.store.db.job(id).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(job = id, error = %e, "settling an upload");
                return None;
            }
        };
        let mut metadata = u.metadata.clone();
        match job {
            Some(j) if j.status == Status::Complete => {
                metadata["hls"] = json!(true);
                Some(("complete", metadata))
            }
            Some(j) if j.status == Status::Failed => {
                metadata["error"] = json!(j.error.unwrap_or_else(|| "the job failed".into()));
                Some(("failed", metadata))
            }
            Some(_) => None,
            None => {
                metadata["error"] = json!("the processing job was deleted");
                Some(("failed", metadata))
            }
        }
    }
}
