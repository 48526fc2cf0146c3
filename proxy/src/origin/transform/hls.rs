//! `mode=hls` in the transform step: one package per source version, made once (coalesced
//! per key, written to a scratch directory and renamed into place, so a crash never leaves
//! half a package), kept under `{data_dir}/hls` for `hls_retention` (older packages and
//! abandoned scratch directories are swept), and served part by part: the playlist (segment
//! URIs rewritten onto the source's path), a segment, or the poster. The package itself is
//! the video engine's ([`crate::transform::video::hls`]); caching the parts is the edge's.

use bytes::Bytes;
use sha2::Digest;

use super::{body, err, Job, Produced, Transformer};
use crate::error::ApiError;
use crate::transform::tempfile::TempFile;
use crate::transform::{Output, TransformError};

/// The package's folder name: one per origin, path and source version.
fn package_key(job: &Job<'_>, version: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(job.origin.as_bytes());
    h.update([0]);
    h.update(job.path.as_bytes());
    h.update([0]);
    h.update(version.as_bytes());
    hex::encode(&h.finalize()[..16])
}

impl Transformer {
    /// Whether the package of this source version is made (its parts are served at once).
    pub(super) fn hls_package_ready(&self, job: &Job<'_>, version: &str) -> bool {
        self.limits
            .hls_dir
            .join(package_key(job, version))
            .join("index.m3u8")
            .is_file()
    }

    /// `mode=hls`: the package is made once per source version (coalesced, written to a
    /// scratch directory and renamed into place, so a crash never leaves half a package),
    /// kept under `{data_dir}/hls` for `hls_retention`, and served part by part: the
    /// playlist (segment URIs rewritten to `?mode=hls&segment=N.ts` on the same path), a
    /// segment, or the poster.
    pub(super) async fn run_hls(
        &self,
        job: &Job<'_>,
        media: crate::transform::video::Media,
        src_guard: Option<TempFile>,
        version: String,
    ) -> Result<Produced, ApiError> {
        use crate::transform::video;
        let key = package_key(job, &version);
        let root = self.limits.hls_dir.clone();
        let dir = root.join(&key);
        let lock = {
            let mut locks = self.hls_locks.lock();
            locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
            locks.entry(key.clone()).or_default().clone()
        };
        let _held = lock.lock().await;
        if !dir.join("index.m3u8").is_file() {
            let call = video::VideoCall {
                op: video::VideoOp::Hls,
                spec: job.spec.clone(),
                opts: self.video.clone(),
                out: None,
            };
            let sandbox = self.isolation();
            let progress = job.progress_fn();
            let scratch = root.join(format!(
                ".{key}-{}",
                crate::transform::tempfile::unique_suffix()
            ));
            let retention = self.limits.hls_retention;
            self.pool
                .run(&job.client, move || {
                    let _src = src_guard;
                    sweep_hls(&root, retention);
                    let call = video::VideoCall {
                        out: Some(scratch.clone()),
                        ..call
                    };
                    let made = super::video::run_call(&sandbox, call, &media, &progress);
                    let made = made.and_then(|_| {
                        std::fs::rename(&scratch, &dir).map_err(|e| {
                            TransformError::Internal(format!("storing the HLS package: {e}"))
                        })
                    });
                    if made.is_err() {
                        let _ = std::fs::remove_dir_all(&scratch);
                    }
                    made
                })
                .await
                .map_err(err)?;
        } else {
            drop(src_guard);
        }
        drop(_held);
        let dir = self.limits.hls_dir.join(&key);
        let (path, content_type) = match job.spec.segment.as_deref() {
            None => {
                let text = tokio::fs::read_to_string(dir.join("index.m3u8"))
                    .await
                    .map_err(|e| ApiError::internal(format!("HLS playlist: {e}")))?;
                let base = job.path.rsplit('/').next().unwrap_or("");
                let body = Bytes::from(rewrite_playlist(&text, base));
                return Ok(Produced::Memory(Output::plain(
                    body,
                    "application/vnd.apple.mpegurl",
                )));
            }
            Some("poster") => (dir.join("poster.jpg"), "image/jpeg"),
            Some(n) => {
                let n: u32 = n
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("bad segment {n:?}")))?;
                (dir.join(format!("segment_{n:03}.ts")), "video/mp2t")
            }
        };
        if !path.is_file() {
            return Err(ApiError::not_found(format!(
                "{} has no HLS segment {}",
                job.path,
                job.spec.segment.as_deref().unwrap_or("")
            )));
        }
        let hashed = path.clone();
        let (len, etag) = self
            .pool
            .run(&job.client, move || body::hash_file(&hashed))
            .await
            .map_err(err)?;
        Ok(Produced::File {
            path,
            guard: None,
            len,
            etag,
            meta: Output::plain(Bytes::new(), content_type),
        })
    }
}

/// The package's playlist with each segment file name replaced by its URL on the source's
/// path (relative, so it works behind any prefix): `clip.mp4?mode=hls&segment=3.ts` (the
/// extension is for players that check one).
fn rewrite_playlist(text: &str, base: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let l = line.trim();
        let seg = l
            .strip_prefix("segment_")
            .and_then(|r| r.strip_suffix(".ts"))
            .and_then(|n| n.parse::<u32>().ok());
        match seg {
            Some(n) if !l.starts_with('#') => {
                out.push_str(&format!("{base}?mode=hls&segment={n}.ts"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Removes HLS packages (and abandoned scratch directories) older than `retention`.
fn sweep_hls(root: &std::path::Path, retention: std::time::Duration) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > retention);
        if old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
