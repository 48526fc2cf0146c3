//! A cache fill in progress: the body as it arrives, kept for the memory tier while it fits
//! and streamed to the disk tier's temp file, landed in both on `finish`.
//!
//! Owns the order of publication (disk first, then memory), what an abandoned fill leaves
//! (nothing), and what a failing disk means for a fill: the disk copy is given up (and, when
//! the disk is full, room is made for the next ones) while the memory copy is still stored.
//! Must not decide what is cacheable: pingora-cache asked for this fill.

use super::TieredStorage;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::storage::{HandleMiss, MissFinishType};
use pingora_error::Result;
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
        length: Option<u64>,
    ) -> TieredMiss {
        // Sized once when the length is known: a buffer grown by doubling would be frozen
        // with up to twice the memory the tier counts.
        let capacity = length.filter(|l| *l <= storage.mem_max_object).unwrap_or(0);
        TieredMiss {
            storage,
            hash,
            meta,
            write_id,
            mem_buf: Some(BytesMut::with_capacity(capacity as usize)),
            disk,
            written: 0,
        }
    }

    /// The disk copy of this fill is given up after `e`; a full disk makes room for the next.
    fn disk_failed(&mut self, e: &std::io::Error) {
        self.disk = None;
        if let Some(disk) = &self.storage.disk {
            disk.write_failed(e);
        }
    }
}

/// `buf` as `Bytes` holding no more memory than its length (within 1/8): what the memory
/// tier counts is what it holds.
pub(super) fn exact(buf: BytesMut) -> Bytes {
    if buf.capacity() - buf.len() > buf.len() / 8 {
        Bytes::copy_from_slice(&buf)
    } else {
        buf.freeze()
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
            if let Err(e) = w.file.write_all(&data).await {
                self.disk_failed(&e);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if let Some(w) = self.disk.take() {
            if let Some(disk) = &self.storage.disk {
                let committed = disk
                    .commit(w, self.hash, self.write_id, &self.meta, self.written)
                    .await;
                if let Err(e) = committed {
                    self.disk_failed(&e);
                }
            }
        }
        match self.mem_buf.take() {
            Some(buf) => {
                self.storage
                    .mem_put(self.hash, std::mem::take(&mut self.meta), exact(buf));
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
