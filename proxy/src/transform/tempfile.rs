//! The one scratch-file type of the transform path: [`TempFile`] owns a path and removes
//! the file there when dropped, unless it was kept. Sources streamed to disk, encoder
//! outputs and finished outputs on their way to the client all use it, so no failure path
//! (an error, a timeout, a panic on a pool thread, a client that hangs up mid-body) leaves a
//! partial file behind. It only removes files: it never creates, writes or names them
//! beyond [`TempFile::fresh`], and never removes directories.

use std::path::{Path, PathBuf};

/// A file removed when this value is dropped, unless [`TempFile::keep`] took it back.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Takes charge of `path` (which may not exist yet: the guard is set before the file is
    /// created, so a failure while writing it still removes it).
    pub fn new(path: impl Into<PathBuf>) -> TempFile {
        TempFile {
            path: path.into(),
            armed: true,
        }
    }

    /// A fresh, unused name in `dir`: `{prefix}-{uuid}`.
    pub fn fresh(dir: &Path, prefix: &str) -> TempFile {
        TempFile::new(dir.join(format!("{prefix}-{}", unique_suffix())))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file stays: the caller (or whoever it hands the path to) owns it now.
    pub fn keep(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// 32 random hex digits for a file name no other process or request picks.
pub fn unique_suffix() -> String {
    format!("{:032x}", rand::random::<u128>())
}
