//! The cache storage behind pingora-cache: a memory tier in front of a disk tier.
//!
//! Owns where cached bytes live and when they leave: [`TieredStorage`] routes lookups, misses,
//! purges and meta updates to the two tiers. The memory tier ([`memory`]) is a TinyUFO
//! (admission + eviction by weight in KiB) holding whole small objects as `Bytes`, so a hit is
//! a refcount and a slice. The disk tier ([`disk`]) keeps every cacheable object in two files
//! per key in the on-disk format of [`format`], written by a miss handler ([`miss`]) to temp
//! files, synced and renamed, body first: a torn or mismatched pair is a miss, never a wrong
//! body. An LRU index bounded by bytes is rebuilt from the folder at start, so the disk tier
//! survives restarts.
//!
//! It must not know HTTP semantics (freshness rules, purge by tag, response decoration) nor
//! any wire format: what a caller prepares from a stored header is kept opaque
//! ([`TieredStorage::fresh_mem_hit`]).

mod disk;
pub mod format;
mod memory;
mod miss;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use bytes::Bytes;
use disk::{DiskHit, DiskTier};
use memory::{MemHit, MemObject};
use miss::TieredMiss;
use pingora_cache::key::{CacheHashKey, CompactCacheKey};
use pingora_cache::storage::{
    HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::Result;
use std::any::Any;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tinyufo::TinyUfo;
use tokio::io::AsyncReadExt;

/// Counters exported as metrics.
#[derive(Default)]
pub struct TierStats {
    pub mem_hits: AtomicU64,
    /// Memory hits answered by the edge's fast path (a subset of `mem_hits`).
    pub fast_hits: AtomicU64,
    pub disk_hits: AtomicU64,
    pub misses: AtomicU64,
    pub disk_bytes: AtomicU64,
    pub disk_objects: AtomicU64,
    pub disk_evictions: AtomicU64,
    pub torn_entries: AtomicU64,
    /// Disk tier writes that failed (the entries stayed in memory only).
    pub disk_write_errors: AtomicU64,
    /// Unix seconds of the last failed disk write (0: none).
    pub last_disk_error: AtomicU64,
}

/// A fresh whole object from the memory tier (see [`TieredStorage::fresh_mem_hit`]), with what
/// the caller prepared from its stored header (`P`, opaque here).
pub struct FreshHit<P> {
    /// The prepared value (shared with the memory object).
    pub prepared: Arc<P>,
    pub body: Bytes,
    pub created: SystemTime,
    pub age: std::time::Duration,
}

/// Budgets of the two tiers.
#[derive(Debug, Clone)]
pub struct StorageLimits {
    pub memory_bytes: u64,
    pub memory_max_object: u64,
    pub disk_bytes: u64,
}

/// Memory + disk storage. Create once and leak (`&'static`), as pingora-cache requires.
pub struct TieredStorage {
    mem: TinyUfo<u128, Arc<MemObject>>,
    mem_max_object: u64,
    disk: Option<DiskTier>,
    pub stats: Arc<TierStats>,
}

/// The body range a hit handler's `seek(start, end)` selects in a body of `len` bytes:
/// `start..end` with `end` clamped to the body; a start past the end is an error.
fn seek_range(start: usize, end: Option<usize>, len: u64) -> Result<(u64, u64)> {
    if start as u64 >= len {
        return pingora_error::Error::e_explain(
            pingora_error::ErrorType::InternalError,
            format!("seek {start} past {len}"),
        );
    }
    Ok((start as u64, end.map_or(len, |e| (e as u64).min(len))))
}

fn key_hash(key: &CacheKey) -> u128 {
    u128::from_be_bytes(key.combined_bin())
}

fn compact_hash(key: &CompactCacheKey) -> u128 {
    u128::from_be_bytes(key.combined_bin())
}

impl TieredStorage {
    /// Opens the storage; the disk tier lives in `dir` (created if missing) unless its budget is 0.
    pub fn open(dir: &Path, limits: &StorageLimits) -> std::io::Result<TieredStorage> {
        let kib = (limits.memory_bytes / 1024).max(1) as usize;
        let estimated = (limits.memory_bytes / (32 * 1024)).clamp(64, 1 << 20) as usize;
        let stats = Arc::new(TierStats::default());
        let disk = if limits.disk_bytes > 0 {
            Some(DiskTier::open(dir, limits.disk_bytes, &stats)?)
        } else {
            None
        };
        Ok(TieredStorage {
            mem: TinyUfo::new(kib, estimated),
            mem_max_object: limits.memory_max_object.min(64 << 20),
            disk,
            stats,
        })
    }

    /// Whether a disk write failed within the last minute (a full or failing disk: the node
    /// caches in memory only meanwhile).
    pub fn disk_degraded(&self) -> bool {
        let last = self.stats.last_disk_error.load(Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        last != 0 && now.saturating_sub(last) < 60
    }

    /// The disk tier's start-up scan is done (or there is no disk tier).
    pub fn disk_indexed(&self) -> bool {
        self.disk.as_ref().is_none_or(DiskTier::is_indexed)
    }

    /// Which tier a hit is served from (`memory` or `disk`).
    pub fn tier_of(handler: &HitHandler) -> &'static str {
        if handler.as_any().is::<DiskHit>() {
            "disk"
        } else {
            "memory"
        }
    }

    /// Counts a [`Self::fresh_mem_hit`] the edge answered with.
    pub fn count_fast_hit(&self) {
        self.stats.mem_hits.fetch_add(1, Ordering::Relaxed);
        self.stats.fast_hits.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl Storage for TieredStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key_hash(key);
        if let Some(obj) = self.mem.get(&hash) {
            self.stats.mem_hits.fetch_add(1, Ordering::Relaxed);
            return Self::mem_hit(obj).map(Some);
        }
        let Some(disk) = &self.disk else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        match disk.open_entry(hash, &self.stats).await {
            Some(entry) => {
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                // Promote small objects into memory so the next hit does no I/O.
                if entry.body_len <= self.mem_max_object {
                    let mut file = entry.file;
                    let mut body = vec![0u8; entry.body_len as usize];
                    if file.read_exact(&mut body).await.is_ok() {
                        let body = Bytes::from(body);
                        self.mem_put(hash, entry.meta.clone(), body.clone());
                        let meta = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1)?;
                        return Ok(Some((meta, Box::new(MemHit::whole(body)))));
                    }
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    return Ok(None);
                }
                let meta = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1)?;
                Ok(Some((
                    meta,
                    Box::new(DiskHit::new(entry.file, entry.body_len)),
                )))
            }
            None => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let hash = key_hash(key);
        let length = meta
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let meta = meta.serialize()?;
        let write_id: u64 = rand::random();
        // A disk that cannot take the fill leaves it to the memory tier.
        let disk = match &self.disk {
            Some(d) => d
                .start_write(write_id)
                .await
                .inspect_err(|e| d.write_failed(e))
                .ok(),
            None => None,
        };
        Ok(Box::new(TieredMiss::new(
            self, hash, meta, write_id, disk, length,
        )))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = compact_hash(target.key());
        let in_mem = self.mem.remove(&hash).is_some();
        let on_disk = match &self.disk {
            Some(d) => d.remove(hash, &self.stats),
            None => false,
        };
        Ok(if in_mem || on_disk {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key_hash(key);
        let meta = meta.serialize()?;
        let mut updated = false;
        if let Some(obj) = self.mem.get(&hash) {
            self.mem_put(hash, meta.clone(), obj.body.clone());
            updated = true;
        }
        if let Some(d) = &self.disk {
            updated |= d.rewrite_meta(hash, &meta).await;
        }
        Ok(updated)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}
