//! A cache fill in progress: the body as it arrives, kept for the memory tier while it fits
//! and streamed to the disk tier's temp file, landed in both on `finish`.
//!
//! Owns the order of publication (disk first, then memory) and what an abandoned fill leaves
//! (nothing). Must not decide what is cacheable: pingora-cache asked for this fill.

use super::TieredStorage;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::storage::{HandleMiss, MissFinishType};
use pingora_error::{ErrorType, OrErr, Result};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// Receives a response body being fetched and lands it in both tiers on `finish`.
pub(super) struct TieredMiss {
    storage: &'static TieredStorage,
    hash: u128,
    meta: (Vec<u8>, Vec<u8>),
    write_id: u64,
    /// Kept while the body still fits the memory tier's object limit.
    mem_buf: Option<BytesMut>,
    disk: Option<DiskWrite>,
    written: u64,
}

impl TieredMiss {
    pub(super) fn new(
        storage: &'static TieredStorage,
        hash: u128,
        meta: (Vec<u8>, Vec<u8>),
        write_id: u64,
        disk: Option<DiskWrite>,
    ) -> TieredMiss {
        TieredMiss {
            storage,
            hash,
            meta,
            write_id,
            mem_buf: Some(BytesMut::new()),
            disk,
            written: 0,
        }
    }
}

#[async_trait]
impl HandleMiss for TieredMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.written += data.len() as u64;
        if let Some(buf) = &mut self.mem_buf {
            if self.written <= self.storage.mem_max_object {
                buf.extend_from_slice(&data);
            } else {
                self.mem_buf = None;
            }
        }
        if let Some(w) = &mut self.disk {
            w.file
                .write_all(&data)
                .await
                .or_err(ErrorType::FileWriteError, "writing cache body")?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if let Some(w) = self.disk.take() {
            if let Some(disk) = &self.storage.disk {
                disk.commit(
                    w,
                    self.hash,
                    self.write_id,
                    &self.meta,
                    self.written,
                    &self.storage.stats,
                )
                .await?;
            }
        }
        match self.mem_buf.take() {
            Some(buf) => {
                self.storage
                    .mem_put(self.hash, std::mem::take(&mut self.meta), buf.freeze());
            }
            // Too big for memory now: an older copy there must not hide the new one on disk.
            None => {
                self.storage.mem.remove(&self.hash);
            }
        }
        Ok(MissFinishType::Created(self.written as usize))
    }
}

pub(super) struct DiskWrite {
    pub(super) file: tokio::fs::File,
    pub(super) tmp: PathBuf,
}

impl Drop for DiskWrite {
    fn drop(&mut self) {
        // An abandoned fill leaves nothing behind; after commit the temp path no longer exists.
        let _ = std::fs::remove_file(&self.tmp);
    }
}
