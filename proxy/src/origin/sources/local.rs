//! The local-folder source: files under one root, nothing outside it.
//!
//! Traversal is refused twice: lexically (`clean_path`) and physically (the canonical path
//! must stay under the canonical root, so a symlink pointing out is refused).

use super::{clean_path, single_range, BuildError, FetchRequest, Fetched, Source, SourceError};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

pub struct LocalSource {
    root: PathBuf,
}

impl LocalSource {
    pub fn new(root: &Path) -> Result<Self, BuildError> {
        let root = root.canonicalize().map_err(|source| BuildError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(LocalSource { root })
    }
}

/// The strong validator of a file: size and modification time.
pub fn file_etag(len: u64, mtime_nanos: u128) -> String {
    format!("\"{len:x}-{mtime_nanos:x}\"")
}

#[async_trait]
impl Source for LocalSource {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn local_file(&self, path: &str) -> Option<PathBuf> {
        let rel = clean_path(path).ok()?;
        let real = tokio::fs::canonicalize(self.root.join(&rel)).await.ok()?;
        let meta = tokio::fs::metadata(&real).await.ok()?;
        (real.starts_with(&self.root) && meta.is_file()).then_some(real)
    }

    async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, SourceError> {
        let rel = clean_path(&req.path)?;
        let candidate = self.root.join(&rel);
        let real = match tokio::fs::canonicalize(&candidate).await {
            Ok(p) => p,
            Err(_) => return Err(SourceError::NotFound(req.path.clone())),
        };
        if !real.starts_with(&self.root) {
            return Err(SourceError::Refused(req.path.clone()));
        }
        let meta = tokio::fs::metadata(&real)
            .await
            .map_err(|_| SourceError::NotFound(req.path.clone()))?;
        if !meta.is_file() {
            return Err(SourceError::NotFound(req.path.clone()));
        }
        let size = meta.len();
        let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
        let nanos = mtime
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let etag = file_etag(size, nanos);
        let last_modified = httpdate::fmt_http_date(mtime);
        let content_type = mime_guess::from_path(&real)
            .first_or_octet_stream()
            .essence_str()
            .to_string();
        let mut headers = vec![
            ("etag".to_string(), etag.clone()),
            ("last-modified".to_string(), last_modified),
            ("content-type".to_string(), content_type),
            ("accept-ranges".to_string(), "bytes".to_string()),
        ];
        if let Some(inm) = &req.if_none_match {
            if inm.split(',').any(|t| {
                t.trim() == etag || t.trim() == "*" || t.trim().trim_start_matches("W/") == etag
            }) {
                return Ok(Fetched {
                    status: 304,
                    headers,
                    body: None,
                });
            }
        } else if let Some(ims) = req
            .if_modified_since
            .as_deref()
            .and_then(|v| httpdate::parse_http_date(v).ok())
        {
            let secs = |t: std::time::SystemTime| {
                t.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            };
            if secs(mtime) <= secs(ims) {
                return Ok(Fetched {
                    status: 304,
                    headers,
                    body: None,
                });
            }
        }
        let range = single_range(req.range.as_deref(), size)?;
        let (status, start, len) = match range {
            Some((s, e)) => {
                headers.push(("content-range".into(), format!("bytes {s}-{e}/{size}")));
                (206, s, e - s + 1)
            }
            None => (200, 0, size),
        };
        headers.push(("content-length".into(), len.to_string()));
        if req.head {
            return Ok(Fetched {
                status,
                headers,
                body: None,
            });
        }
        let mut file = tokio::fs::File::open(&real)
            .await
            .map_err(|_| SourceError::NotFound(req.path.clone()))?;
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| SourceError::Upstream(e.to_string()))?;
        }
        let stream = ReaderStream::with_capacity(file.take(len), 64 * 1024);
        Ok(Fetched {
            status,
            headers,
            body: Some(Box::pin(stream)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn body(f: Fetched) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = f.body.unwrap();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn serves_files_ranges_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.txt"), b"0123456789").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
        let src = LocalSource::new(&root).unwrap();

        let f = src
            .fetch(&FetchRequest {
                path: "a.txt".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(f.status, 200);
        assert_eq!(f.header("content-type"), Some("text/plain"));
        let etag = f.header("etag").unwrap().to_string();
        assert_eq!(body(f).await, b"0123456789");

        let f = src
            .fetch(&FetchRequest {
                path: "a.txt".into(),
                range: Some("bytes=2-4".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(f.status, 206);
        assert_eq!(f.header("content-range"), Some("bytes 2-4/10"));
        assert_eq!(body(f).await, b"234");

        let f = src
            .fetch(&FetchRequest {
                path: "a.txt".into(),
                if_none_match: Some(etag),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(f.status, 304);

        for bad in ["link.txt", "../secret.txt", "%2e%2e/secret.txt"] {
            let r = src
                .fetch(&FetchRequest {
                    path: bad.into(),
                    ..Default::default()
                })
                .await;
            assert!(matches!(r, Err(SourceError::Refused(_))), "{bad}");
        }
        let r = src
            .fetch(&FetchRequest {
                path: "missing.txt".into(),
                ..Default::default()
            })
            .await;
        assert!(matches!(r, Err(SourceError::NotFound(_))));
    }
}
