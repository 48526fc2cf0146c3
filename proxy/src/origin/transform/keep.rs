//! Keeping a finished transform in the store (`store.transforms`): the output's bytes or
//! its file go to the object store under the job's key, then its row is written, so a row
//! always names a whole object. A client's transform is kept in the background (the answer
//! does not wait; a file output is hard-linked first, so removing the scratch file after the
//! response cannot take it away); a job's is kept before the job is done. A failed write
//! costs a transform next time, never a wrong answer.

use super::{Job, Transformer};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::store::StoredTransform;
use crate::transform::tempfile::TempFile;
use crate::transform::Output;
use std::path::Path;

impl Transformer {
    /// Keeps `out` (or the file it was written to) under `job.store_key`; the `X-Store`
    /// value to answer with, `None` when nothing is kept.
    pub(super) async fn keep(
        &self,
        job: &Job<'_>,
        out: &Output,
        headers: &[(String, String)],
        len: u64,
        file: Option<&Path>,
    ) -> Result<Option<&'static str>, ApiError> {
        let (Some(store), Some(key)) = (&self.store, &job.store_key) else {
            return Ok(None);
        };
        let etag = headers
            .iter()
            .find(|(k, _)| k == "etag")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let t = StoredTransform {
            key: key.clone(),
            content_type: out.content_type.to_string(),
            etag,
            len,
            headers: headers.to_vec(),
        };
        if job.keep_before_answer {
            let kept = match file {
                Some(p) => store.keep_file(&t, p).await,
                None => store.keep_bytes(&t, out.body.clone()).await,
            };
            return match kept {
                Ok(()) => {
                    METRICS.store.with_label_values(&["write"]).inc();
                    Ok(Some("MISS"))
                }
                Err(e) => {
                    METRICS.store.with_label_values(&["write_error"]).inc();
                    Err(ApiError::internal(format!("keeping the result: {e}")))
                }
            };
        }
        let store = store.clone();
        match file {
            Some(p) => {
                let link = TempFile::fresh(&self.limits.temp_dir, "keep");
                let linked = std::fs::hard_link(p, link.path())
                    .or_else(|_| std::fs::copy(p, link.path()).map(|_| ()));
                if let Err(e) = linked {
                    tracing::warn!(key = %t.key, error = %e, "transform not kept");
                    METRICS.store.with_label_values(&["write_error"]).inc();
                    return Ok(Some("MISS"));
                }
                tokio::spawn(async move {
                    let r = store.keep_file(&t, link.path()).await;
                    report(&t.key, r);
                });
            }
            None => {
                let body = out.body.clone();
                tokio::spawn(async move {
                    let r = store.keep_bytes(&t, body).await;
                    report(&t.key, r);
                });
            }
        }
        Ok(Some("MISS"))
    }
}

fn report(key: &str, r: Result<(), crate::store::StoreError>) {
    match r {
        Ok(()) => METRICS.store.with_label_values(&["write"]).inc(),
        Err(e) => {
            METRICS.store.with_label_values(&["write_error"]).inc();
            tracing::warn!(key, error = %e, "transform not kept");
        }
    }
}
