//! The object store: whole objects by key, in a folder (the embedded default,
//! `{data_dir}/store`) or an S3/R2 bucket. Read like a source (ranges and all, by the same
//! local and S3 code); written by streaming a finished file or a buffer, so an object is
//! whole or absent: a folder write goes to a scratch name and is renamed into place, an S3
//! PUT is atomic.
//!
//! It knows nothing of what the objects are (the `transforms` rows say that).

use crate::config::SourceConfig;
use crate::origin::sources::{
    self, clean_path, local::LocalSource, s3::S3Source, BuildError, FetchRequest, Fetched, Source,
    SourceError,
};
use bytes::Bytes;
use std::path::{Path, PathBuf};

pub enum ObjectStore {
    Folder { root: PathBuf, read: LocalSource },
    S3(S3Source),
}

impl ObjectStore {
    /// The configured store; `None` = a folder at `default_root`.
    pub async fn open(cfg: Option<&SourceConfig>, default_root: &Path) -> Result<Self, BuildError> {
        let folder = |root: &Path| -> Result<ObjectStore, BuildError> {
            std::fs::create_dir_all(root).map_err(|source| BuildError::Root {
                path: root.to_path_buf(),
                source,
            })?;
            let read = LocalSource::new(root)?;
            let root = root.canonicalize().map_err(|source| BuildError::Root {
                path: root.to_path_buf(),
                source,
            })?;
            Ok(ObjectStore::Folder { root, read })
        };
        match cfg {
            None => folder(default_root),
            Some(SourceConfig::Local { root, .. }) => folder(root),
            Some(c @ SourceConfig::S3 { .. }) => Ok(ObjectStore::S3(S3Source::new(c).await?)),
            Some(SourceConfig::Remote { .. }) => Err(BuildError::WrongKind("a folder or a bucket")),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ObjectStore::Folder { .. } => "folder",
            ObjectStore::S3(_) => "s3",
        }
    }

    /// The object, whole or the single range asked.
    pub async fn get(&self, key: &str, range: Option<String>) -> Result<Fetched, SourceError> {
        let req = FetchRequest {
            path: key.to_string(),
            range,
            ..Default::default()
        };
        match self {
            ObjectStore::Folder { read, .. } => read.fetch(&req).await,
            ObjectStore::S3(s3) => s3.fetch(&req).await,
        }
    }

    /// Stores the file at `path` under `key`, streamed.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
    ) -> Result<(), SourceError> {
        match self {
            ObjectStore::Folder { root, .. } => {
                let (src, dst) = (path.to_path_buf(), self.folder_path(root, key)?);
                blocking(move || {
                    let scratch = scratch_of(&dst)?;
                    // A hard link when the file is on the same file system, else a copy.
                    if std::fs::hard_link(&src, &scratch).is_err() {
                        std::fs::copy(&src, &scratch)?;
                    }
                    finish(&scratch, &dst)
                })
                .await
            }
            ObjectStore::S3(s3) => {
                let body = aws_sdk_s3::primitives::ByteStream::from_path(path)
                    .await
                    .map_err(|e| {
                        SourceError::Upstream(format!("reading {}: {e}", path.display()))
                    })?;
                s3.put(&clean_path(key)?, body, content_type).await
            }
        }
    }

    /// Stores `bytes` under `key`.
    pub async fn put_bytes(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<(), SourceError> {
        match self {
            ObjectStore::Folder { root, .. } => {
                let dst = self.folder_path(root, key)?;
                blocking(move || {
                    let scratch = scratch_of(&dst)?;
                    std::fs::write(&scratch, &bytes)?;
                    finish(&scratch, &dst)
                })
                .await
            }
            ObjectStore::S3(s3) => s3.put(&clean_path(key)?, bytes.into(), content_type).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), SourceError> {
        match self {
            ObjectStore::Folder { root, .. } => {
                let p = self.folder_path(root, key)?;
                match tokio::fs::remove_file(&p).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(SourceError::Upstream(format!(
                        "removing {}: {e}",
                        p.display()
                    ))),
                }
            }
            ObjectStore::S3(s3) => s3.delete(&clean_path(key)?).await,
        }
    }

    fn folder_path(&self, root: &Path, key: &str) -> Result<PathBuf, SourceError> {
        Ok(root.join(sources::clean_path(key)?))
    }
}

/// A scratch name beside `dst` (its folder made first), removed again if the write fails.
fn scratch_of(dst: &Path) -> std::io::Result<PathBuf> {
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let name = dst.file_name().and_then(|n| n.to_str()).unwrap_or("object");
    let scratch = dst.with_file_name(format!(
        ".{name}.{}.part",
        crate::transform::tempfile::unique_suffix()
    ));
    Ok(scratch)
}

/// Makes the scratch file durable and renames it into place.
fn finish(scratch: &Path, dst: &Path) -> std::io::Result<()> {
    let done = std::fs::File::open(scratch)
        .and_then(|f| f.sync_all())
        .and_then(|_| std::fs::rename(scratch, dst));
    if done.is_err() {
        let _ = std::fs::remove_file(scratch);
    }
    done
}

async fn blocking(
    f: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), SourceError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SourceError::Upstream(format!("object store: {e}"))),
        Err(e) => Err(SourceError::Upstream(format!("object store: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn body(f: Fetched) -> Vec<u8> {
        let chunks: Vec<Bytes> = f.body.unwrap().try_collect().await.unwrap();
        chunks.concat()
    }

    #[tokio::test]
    async fn folder_round_trip_with_ranges_and_no_scratch_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(None, &dir.path().join("s"))
            .await
            .unwrap();
        store
            .put_bytes(
                "_transformed/ab/cd",
                Bytes::from_static(b"0123456789"),
                "x/y",
            )
            .await
            .unwrap();
        let f = store.get("_transformed/ab/cd", None).await.unwrap();
        assert_eq!(body(f).await, b"0123456789");
        let f = store
            .get("_transformed/ab/cd", Some("bytes=2-4".into()))
            .await
            .unwrap();
        assert_eq!(f.status, 206);
        assert_eq!(body(f).await, b"234");
        let src = dir.path().join("out.bin");
        std::fs::write(&src, b"file body").unwrap();
        store.put_file("_transformed/f", &src, "x/y").await.unwrap();
        std::fs::remove_file(&src).unwrap();
        assert_eq!(
            body(store.get("_transformed/f", None).await.unwrap()).await,
            b"file body"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path().join("s/_transformed"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .collect();
        assert!(left.is_empty());
        store.delete("_transformed/f").await.unwrap();
        assert!(store.get("_transformed/f", None).await.is_err());
        assert!(store.put_bytes("../x", Bytes::new(), "x/y").await.is_err());
    }
}
