//! The cache storage behind pingora-cache: a memory tier in front of a disk tier.
//!
//! Owns where cached bytes live and when they leave. The memory tier is a TinyUFO
//! (admission + eviction by weight in KiB) holding whole small objects as `Bytes`, so a hit
//! is a refcount and a slice. The disk tier keeps every cacheable object in two files per key,
//! `{hash}.b` (a header with a write id, then the body) and `{hash}.m` (the serialized
//! `CacheMeta`, the body length and the same write id). Both are written to temp files,
//! synced and renamed, body first: a torn or mismatched pair is a miss, never a wrong body.
//! An LRU index bounded by bytes is rebuilt from the folder at start, so the disk tier
//! survives restarts. This module knows nothing of HTTP semantics (freshness, purge by tag).

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use pingora_cache::key::{CacheHashKey, CompactCacheKey};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::{Error, ErrorType, OrErr, Result};
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tinyufo::TinyUfo;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

const BODY_MAGIC: &[u8; 8] = b"MEDGEB01";
const META_MAGIC: &[u8; 8] = b"MEDGEM01";
/// Body file header: magic + write id.
const BODY_HEADER: u64 = 16;
const READ_CHUNK: usize = 64 * 1024;

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
}

struct MemObject {
    meta: (Vec<u8>, Vec<u8>),
    body: Bytes,
    /// The metadata decoded on the first hit (the header blob is zstd-compressed, and
    /// decoding it on every hit cost ~4 % of a small-object hit), rebuilt per hit from here.
    decoded: std::sync::OnceLock<DecodedMeta>,
    /// What the edge's fast path made of the decoded header, once (`None`: not eligible).
    prepared: std::sync::OnceLock<Option<Arc<Prepared>>>,
}

/// A response header prepared once per memory object by the caller of
/// [`TieredStorage::fresh_mem_hit`] (opaque here), with the entry's `Cache-Tag` value.
pub struct Prepared {
    pub header: pingora_http::ResponseHeader,
    /// `header` as HTTP/1.1 bytes: status line and header lines, without the blank line and
    /// without the headers named in `replaced`.
    pub wire: Bytes,
    /// Headers each hit sets itself (replacing stored ones of the same name).
    pub replaced: Vec<&'static str>,
    pub tags: Option<std::sync::Arc<str>>,
}

/// Bytes counted for a decoded [`DecodedMeta`] and a [`Prepared`] header in the memory budget.
const DECODED_META_ESTIMATE: usize = 4096;

/// What a hit needs of a [`CacheMeta`], kept decoded.
struct DecodedMeta {
    fresh_until: SystemTime,
    created: SystemTime,
    /// An explicit age reference (epoch override), if the entry had one.
    epoch: Option<SystemTime>,
    swr: u32,
    sie: u32,
    variance: Option<pingora_cache::key::HashBinary>,
    header: pingora_http::ResponseHeader,
}

impl DecodedMeta {
    /// `None` for an entry whose `updated` or `provenance` differ from `created` (a
    /// revalidated or refreshed entry): `CacheMeta::new` cannot express those, so such
    /// entries are decoded on every hit instead.
    fn from_meta(m: &CacheMeta) -> Option<DecodedMeta> {
        if m.updated() != m.created() || m.provenance() != m.created() {
            return None;
        }
        Some(DecodedMeta {
            fresh_until: m.fresh_until(),
            created: m.created(),
            epoch: m.epoch_override(),
            swr: m.stale_while_revalidate_sec(),
            sie: m.stale_if_error_sec(),
            variance: m.variance(),
            header: m.response_header_copy(),
        })
    }

    /// A `CacheMeta` equal for serving to the one decoded (freshness, age, stale windows,
    /// variance, header).
    fn to_meta(&self) -> CacheMeta {
        let mut m = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.swr,
            self.sie,
            self.header.clone(),
        );
        if let Some(e) = self.epoch {
            m.set_epoch_override(e);
        }
        if let Some(v) = self.variance {
            m.set_variance(v);
        }
        m
    }
}

/// A fresh whole object from the memory tier (see [`TieredStorage::fresh_mem_hit`]).
pub struct FreshHit {
    /// The prepared header (shared with the memory object).
    pub prepared: Arc<Prepared>,
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
    pub stats: TierStats,
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
        let stats = TierStats::default();
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

    fn mem_put(&self, hash: u128, meta: (Vec<u8>, Vec<u8>), body: Bytes) {
        if body.len() as u64 > self.mem_max_object {
            return;
        }
        // + the decoded and prepared headers kept after the first hits (up to ~2 KiB each).
        let weight = (body.len() + meta.0.len() + meta.1.len() + DECODED_META_ESTIMATE)
            .div_ceil(1024)
            .clamp(1, u16::MAX as usize) as u16;
        self.mem.put(
            hash,
            Arc::new(MemObject {
                meta,
                body,
                decoded: Default::default(),
                prepared: Default::default(),
            }),
            weight,
        );
    }

    /// The memory tier's entry for `key` when it can answer a plain request as is: decoded
    /// metadata at hand, fresh now (pingora-cache's `is_fresh`: `fresh_until >= now`), no
    /// variance, and `prepare` (run once per object on its stored header) accepted it; the
    /// hit carries a copy of the prepared header. Anything else (stale, varied, never decoded,
    /// on disk only, refused by `prepare`) is `None`, and the request takes pingora-cache's
    /// hit path. Not counted: see [`Self::count_fast_hit`].
    pub fn fresh_mem_hit(
        &self,
        key: &CacheKey,
        prepare: impl FnOnce(&pingora_http::ResponseHeader) -> Option<Prepared>,
    ) -> Option<FreshHit> {
        let obj = self.mem.get(&key_hash(key))?;
        let d = obj.decoded.get()?;
        let now = SystemTime::now();
        if d.variance.is_some() || d.fresh_until < now {
            return None;
        }
        let p = obj
            .prepared
            .get_or_init(|| prepare(&d.header).map(Arc::new))
            .as_ref()?;
        Some(FreshHit {
            prepared: p.clone(),
            body: obj.body.clone(),
            created: d.created,
            age: now
                .duration_since(d.epoch.unwrap_or(d.created))
                .unwrap_or_default(),
        })
    }

    /// Counts a [`Self::fresh_mem_hit`] the edge answered with.
    pub fn count_fast_hit(&self) {
        self.stats.mem_hits.fetch_add(1, Ordering::Relaxed);
        self.stats.fast_hits.fetch_add(1, Ordering::Relaxed);
    }

    fn mem_hit(obj: Arc<MemObject>) -> Result<(CacheMeta, HitHandler)> {
        let meta = match obj.decoded.get() {
            Some(d) => d.to_meta(),
            None => {
                let meta = CacheMeta::deserialize(&obj.meta.0, &obj.meta.1)?;
                if let Some(d) = DecodedMeta::from_meta(&meta) {
                    let _ = obj.decoded.set(d);
                }
                meta
            }
        };
        let len = obj.body.len();
        Ok((
            meta,
            Box::new(MemHit {
                body: obj.body.clone(),
                start: 0,
                end: len,
                done: false,
            }),
        ))
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
                        let len = body.len();
                        return Ok(Some((
                            meta,
                            Box::new(MemHit {
                                body,
                                start: 0,
                                end: len,
                                done: false,
                            }),
                        )));
                    }
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    return Ok(None);
                }
                let meta = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1)?;
                Ok(Some((
                    meta,
                    Box::new(DiskHit {
                        file: entry.file,
                        body_len: entry.body_len,
                        pos: 0,
                        end: entry.body_len,
                        seeked: false,
                        buf: BytesMut::new(),
                    }),
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
        let meta = meta.serialize()?;
        let write_id: u64 = rand::random();
        let disk = match &self.disk {
            Some(d) => Some(d.start_write(write_id).await?),
            None => None,
        };
        Ok(Box::new(TieredMiss {
            storage: self,
            hash,
            meta,
            write_id,
            mem_buf: Some(BytesMut::new()),
            disk,
            written: 0,
        }))
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

/// A hit served from memory: slices of one shared buffer.
struct MemHit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for MemHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek {start} past {}", self.body.len()),
            );
        }
        self.start = start;
        self.end = end
            .map(|e| e.min(self.body.len()))
            .unwrap_or(self.body.len());
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A hit streamed from the disk tier in chunks, seekable for ranges.
struct DiskHit {
    file: tokio::fs::File,
    body_len: u64,
    pos: u64,
    end: u64,
    seeked: bool,
    buf: BytesMut,
}

#[async_trait]
impl HandleHit for DiskHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        if self.seeked {
            self.file
                .seek(SeekFrom::Start(BODY_HEADER + self.pos))
                .await
                .or_err(ErrorType::FileReadError, "seeking cached body")?;
            self.seeked = false;
        }
        let want = (self.end - self.pos).min(READ_CHUNK as u64) as usize;
        self.buf.resize(want, 0);
        let n = self
            .file
            .read(&mut self.buf[..want])
            .await
            .or_err(ErrorType::FileReadError, "reading cached body")?;
        if n == 0 {
            return Error::e_explain(
                ErrorType::FileReadError,
                "cached body shorter than recorded",
            );
        }
        self.pos += n as u64;
        Ok(Some(self.buf.split_to(n).freeze()))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start as u64 >= self.body_len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek {start} past {}", self.body_len),
            );
        }
        self.pos = start as u64;
        self.end = end
            .map(|e| (e as u64).min(self.body_len))
            .unwrap_or(self.body_len);
        self.seeked = true;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body_len as usize
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Receives a response body being fetched and lands it in both tiers on `finish`.
struct TieredMiss {
    storage: &'static TieredStorage,
    hash: u128,
    meta: (Vec<u8>, Vec<u8>),
    write_id: u64,
    /// Kept while the body still fits the memory tier's object limit.
    mem_buf: Option<BytesMut>,
    disk: Option<DiskWrite>,
    written: u64,
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

struct DiskWrite {
    file: tokio::fs::File,
    tmp: PathBuf,
}

impl Drop for DiskWrite {
    fn drop(&mut self) {
        // An abandoned fill leaves nothing behind; after commit the temp path no longer exists.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

struct DiskEntry {
    meta: (Vec<u8>, Vec<u8>),
    body_len: u64,
    /// Positioned at the start of the body.
    file: tokio::fs::File,
}

#[derive(Default)]
struct DiskIndex {
    entries: HashMap<u128, (u64, u64)>, // hash -> (bytes on disk, tick)
    order: BTreeMap<u64, u128>,         // tick -> hash, oldest first
    total: u64,
    tick: u64,
}

impl DiskIndex {
    fn touch(&mut self, hash: u128) {
        self.tick += 1;
        let t = self.tick;
        if let Some(e) = self.entries.get_mut(&hash) {
            self.order.remove(&e.1);
            e.1 = t;
            self.order.insert(t, hash);
        }
    }
    fn insert(&mut self, hash: u128, size: u64) {
        self.remove(hash);
        self.tick += 1;
        self.entries.insert(hash, (size, self.tick));
        self.order.insert(self.tick, hash);
        self.total += size;
    }
    fn remove(&mut self, hash: u128) -> bool {
        if let Some((size, tick)) = self.entries.remove(&hash) {
            self.order.remove(&tick);
            self.total -= size;
            true
        } else {
            false
        }
    }
    fn pop_oldest(&mut self) -> Option<u128> {
        let (_, hash) = self.order.pop_first()?;
        if let Some((size, _)) = self.entries.remove(&hash) {
            self.total -= size;
        }
        Some(hash)
    }
}

struct DiskTier {
    dir: PathBuf,
    /// This process's folder for fills in progress, under `tmp/`.
    tmp_dir: PathBuf,
    budget: u64,
    index: Mutex<DiskIndex>,
    /// Holds the `flock` on `tmp_dir/.lock` while the process lives (a forked daemon
    /// inherits it): the folder is not another process's leftover.
    _tmp_lock: std::fs::File,
}

/// `flock(LOCK_EX | LOCK_NB)`: whether the lock was taken.
fn try_flock(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes what crashed or exited processes left in `tmp/` (fills they never finished), but
/// not the folders of a process still running: during a graceful upgrade the old process
/// keeps filling while the new one starts. Returns this process's own folder and its lock.
fn claim_tmp(tmp_root: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    std::fs::create_dir_all(tmp_root)?;
    for e in std::fs::read_dir(tmp_root)?.flatten() {
        let path = e.path();
        if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            // Loose files are fills of a build that filled in `tmp/` itself: an old process
            // in an upgrade may still be writing a recent one.
            let age = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if age.is_none_or(|a| a > std::time::Duration::from_secs(600)) {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let owner_gone = std::fs::File::open(path.join(".lock"))
            .map(|f| try_flock(&f))
            .unwrap_or(true);
        if owner_gone {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    let own = tmp_root.join(format!("{:016x}", rand::random::<u64>()));
    std::fs::create_dir(&own)?;
    let lock = std::fs::File::create(own.join(".lock"))?;
    if !try_flock(&lock) {
        // A filesystem without `flock`: fills work; a later process may take the folder for
        // a leftover.
        tracing::warn!(dir = %own.display(), "no flock on the cache temp folder");
    }
    Ok((own, lock))
}

impl DiskTier {
    fn open(dir: &Path, budget: u64, stats: &TierStats) -> std::io::Result<DiskTier> {
        let (tmp_dir, tmp_lock) = claim_tmp(&dir.join("tmp"))?;
        let mut found: Vec<(std::time::SystemTime, u128, u64)> = Vec::new();
        for shard in std::fs::read_dir(dir)?.flatten() {
            if !shard.file_type().map(|t| t.is_dir()).unwrap_or(false) || shard.file_name() == "tmp"
            {
                continue;
            }
            for f in std::fs::read_dir(shard.path())?.flatten() {
                let name = f.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some(hex) = name.strip_suffix(".m") else {
                    continue;
                };
                let Ok(hash) = u128::from_str_radix(hex, 16) else {
                    continue;
                };
                let body = f.path().with_extension("b");
                match (f.metadata(), std::fs::metadata(&body)) {
                    (Ok(m), Ok(b)) => {
                        let t = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                        found.push((t, hash, m.len() + b.len()));
                    }
                    _ => {
                        // A meta without its body: torn, drop it.
                        let _ = std::fs::remove_file(f.path());
                    }
                }
            }
        }
        found.sort();
        let mut index = DiskIndex::default();
        for (_, hash, size) in found {
            index.insert(hash, size);
        }
        stats.disk_bytes.store(index.total, Ordering::Relaxed);
        stats
            .disk_objects
            .store(index.entries.len() as u64, Ordering::Relaxed);
        let tier = DiskTier {
            dir: dir.to_path_buf(),
            tmp_dir,
            budget,
            index: Mutex::new(index),
            _tmp_lock: tmp_lock,
        };
        tier.evict(stats);
        Ok(tier)
    }

    fn paths(&self, hash: u128) -> (PathBuf, PathBuf) {
        let hex = format!("{hash:032x}");
        let shard = self.dir.join(&hex[..2]);
        (
            shard.join(format!("{hex}.m")),
            shard.join(format!("{hex}.b")),
        )
    }

    async fn start_write(&self, write_id: u64) -> Result<DiskWrite> {
        let tmp = self.tmp_dir.join(format!("{write_id:016x}.b"));
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .or_err(ErrorType::FileCreateError, "creating cache temp file")?;
        let mut header = [0u8; BODY_HEADER as usize];
        header[..8].copy_from_slice(BODY_MAGIC);
        header[8..].copy_from_slice(&write_id.to_be_bytes());
        file.write_all(&header)
            .await
            .or_err(ErrorType::FileWriteError, "writing cache header")?;
        Ok(DiskWrite { file, tmp })
    }

    fn encode_meta(meta: &(Vec<u8>, Vec<u8>), body_len: u64, write_id: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + meta.0.len() + meta.1.len());
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&write_id.to_be_bytes());
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&(meta.0.len() as u32).to_be_bytes());
        out.extend_from_slice(&(meta.1.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta.0);
        out.extend_from_slice(&meta.1);
        out
    }

    fn decode_meta(raw: &[u8]) -> Option<(u64, u64, (Vec<u8>, Vec<u8>))> {
        if raw.len() < 32 || &raw[..8] != META_MAGIC {
            return None;
        }
        let write_id = u64::from_be_bytes(raw[8..16].try_into().ok()?);
        let body_len = u64::from_be_bytes(raw[16..24].try_into().ok()?);
        let l0 = u32::from_be_bytes(raw[24..28].try_into().ok()?) as usize;
        let l1 = u32::from_be_bytes(raw[28..32].try_into().ok()?) as usize;
        if raw.len() != 32 + l0 + l1 {
            return None;
        }
        Some((
            write_id,
            body_len,
            (raw[32..32 + l0].to_vec(), raw[32 + l0..].to_vec()),
        ))
    }

    async fn write_atomic(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self
            .tmp_dir
            .join(format!("{:016x}.m", rand::random::<u64>()));
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(bytes).await?;
        f.sync_data().await?;
        drop(f);
        if let Err(e) = tokio::fs::rename(&tmp, path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        Ok(())
    }

    async fn commit(
        &self,
        mut w: DiskWrite,
        hash: u128,
        write_id: u64,
        meta: &(Vec<u8>, Vec<u8>),
        body_len: u64,
        stats: &TierStats,
    ) -> Result<()> {
        let (meta_path, body_path) = self.paths(hash);
        if let Some(shard) = body_path.parent() {
            tokio::fs::create_dir_all(shard)
                .await
                .or_err(ErrorType::FileCreateError, "cache shard")?;
        }
        w.file
            .flush()
            .await
            .or_err(ErrorType::FileWriteError, "flushing cache body")?;
        w.file
            .sync_data()
            .await
            .or_err(ErrorType::FileWriteError, "syncing cache body")?;
        tokio::fs::rename(&w.tmp, &body_path)
            .await
            .or_err(ErrorType::FileWriteError, "publishing cache body")?;
        let encoded = Self::encode_meta(meta, body_len, write_id);
        self.write_atomic(&meta_path, &encoded)
            .await
            .or_err(ErrorType::FileWriteError, "publishing cache meta")?;
        {
            let mut idx = self.index.lock();
            idx.insert(hash, body_len + BODY_HEADER + encoded.len() as u64);
        }
        self.evict(stats);
        Ok(())
    }

    fn evict(&self, stats: &TierStats) {
        let mut victims = Vec::new();
        {
            let mut idx = self.index.lock();
            while idx.total > self.budget {
                match idx.pop_oldest() {
                    Some(h) => victims.push(h),
                    None => break,
                }
            }
            stats.disk_bytes.store(idx.total, Ordering::Relaxed);
            stats
                .disk_objects
                .store(idx.entries.len() as u64, Ordering::Relaxed);
        }
        for h in victims {
            let (m, b) = self.paths(h);
            let _ = std::fs::remove_file(m);
            let _ = std::fs::remove_file(b);
            stats.disk_evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&self, hash: u128, stats: &TierStats) -> bool {
        let (m, b) = self.paths(hash);
        let known = {
            let mut idx = self.index.lock();
            let r = idx.remove(hash);
            stats.disk_bytes.store(idx.total, Ordering::Relaxed);
            stats
                .disk_objects
                .store(idx.entries.len() as u64, Ordering::Relaxed);
            r
        };
        let removed = std::fs::remove_file(m).is_ok();
        let _ = std::fs::remove_file(b);
        known || removed
    }

    async fn open_entry(&self, hash: u128, stats: &TierStats) -> Option<DiskEntry> {
        let (meta_path, body_path) = self.paths(hash);
        let raw = tokio::fs::read(&meta_path).await.ok()?;
        let torn = || {
            stats.torn_entries.fetch_add(1, Ordering::Relaxed);
            None
        };
        let Some((write_id, body_len, meta)) = Self::decode_meta(&raw) else {
            return torn();
        };
        let mut file = tokio::fs::File::open(&body_path).await.ok()?;
        let len = file.metadata().await.ok()?.len();
        let mut header = [0u8; BODY_HEADER as usize];
        if len != body_len + BODY_HEADER || file.read_exact(&mut header).await.is_err() {
            return torn();
        }
        if &header[..8] != BODY_MAGIC || header[8..] != write_id.to_be_bytes() {
            return torn();
        }
        self.index.lock().touch(hash);
        Some(DiskEntry {
            meta,
            body_len,
            file,
        })
    }

    async fn rewrite_meta(&self, hash: u128, meta: &(Vec<u8>, Vec<u8>)) -> bool {
        let (meta_path, _) = self.paths(hash);
        let Ok(raw) = tokio::fs::read(&meta_path).await else {
            return false;
        };
        let Some((write_id, body_len, _)) = Self::decode_meta(&raw) else {
            return false;
        };
        let encoded = Self::encode_meta(meta, body_len, write_id);
        self.write_atomic(&meta_path, &encoded).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    fn meta() -> CacheMeta {
        let h = ResponseHeader::build(200, None).unwrap();
        CacheMeta::new(
            SystemTime::now() + Duration::from_secs(60),
            SystemTime::now(),
            0,
            0,
            h,
        )
    }

    fn leak(dir: &Path, mem: u64, mem_max: u64) -> &'static TieredStorage {
        let limits = StorageLimits {
            memory_bytes: mem,
            memory_max_object: mem_max,
            disk_bytes: 1 << 30,
        };
        Box::leak(Box::new(TieredStorage::open(dir, &limits).unwrap()))
    }

    async fn put(s: &'static TieredStorage, key: &CacheKey, body: &[u8]) {
        put_meta(s, key, &meta(), body).await
    }

    async fn put_meta(s: &'static TieredStorage, key: &CacheKey, m: &CacheMeta, body: &[u8]) {
        let span = pingora_cache::trace::Span::inactive().handle();
        let mut mh = s.get_miss_handler(key, m, &span).await.unwrap();
        for c in body.chunks(1000) {
            mh.write_body(Bytes::copy_from_slice(c), false)
                .await
                .unwrap();
        }
        mh.finish().await.unwrap();
    }

    async fn read_all(h: &mut HitHandler) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = h.read_body().await.unwrap() {
            out.extend_from_slice(&b);
        }
        out
    }

    #[tokio::test]
    async fn disk_tier_survives_reopen_and_seeks() {
        let dir = tempfile::tempdir().unwrap();
        let key = CacheKey::new("orig:/a", "");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        {
            let s = leak(dir.path(), 1 << 20, 1024);
            put(s, &key, &body).await;
        }
        let s = leak(dir.path(), 1 << 20, 1024);
        let span = pingora_cache::trace::Span::inactive().handle();
        let (_, mut h) = s
            .lookup(&key, &span)
            .await
            .unwrap()
            .expect("hit after reopen");
        assert_eq!(read_all(&mut h).await, body);
        let (_, mut h) = s.lookup(&key, &span).await.unwrap().unwrap();
        h.seek(1000, Some(2000)).unwrap();
        assert_eq!(read_all(&mut h).await, &body[1000..2000]);
        assert_eq!(s.stats.disk_hits.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn torn_body_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let key = CacheKey::new("orig:/torn", "");
        let s = leak(dir.path(), 1 << 20, 16);
        put(s, &key, &[7u8; 5000]).await;
        let hash = key_hash(&key);
        let (_, body_path) = s.disk.as_ref().unwrap().paths(hash);
        // Simulate a torn write: the body file is cut short.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&body_path)
            .unwrap();
        f.set_len(100).unwrap();
        s.mem.remove(&hash);
        let span = pingora_cache::trace::Span::inactive().handle();
        assert!(s.lookup(&key, &span).await.unwrap().is_none());
        assert_eq!(s.stats.torn_entries.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn small_objects_are_served_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let key = CacheKey::new("orig:/small", "");
        let s = leak(dir.path(), 1 << 20, 1 << 16);
        put(s, &key, b"hello world").await;
        let span = pingora_cache::trace::Span::inactive().handle();
        let (_, mut h) = s.lookup(&key, &span).await.unwrap().unwrap();
        assert_eq!(read_all(&mut h).await, b"hello world");
        assert_eq!(s.stats.mem_hits.load(Ordering::Relaxed), 1);
        let target = key.to_compact();
        let out = s
            .purge(PurgeTarget::Active(&target), PurgeType::Invalidation, &span)
            .await
            .unwrap();
        assert!(matches!(out, PurgeOutcome::Purged(_)));
        assert!(s.lookup(&key, &span).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn fresh_memory_hits_skip_the_lookup_only_once_decoded_and_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let s = leak(dir.path(), 1 << 20, 1 << 16);
        let span = pingora_cache::trace::Span::inactive().handle();
        let key = CacheKey::new("orig:/fast", "");
        put(s, &key, b"fast body").await;
        let prep = |h: &ResponseHeader| {
            let mut header = h.clone();
            header.insert_header("x-prepared", "1").unwrap();
            Some(Prepared {
                header,
                wire: Bytes::from_static(b"HTTP/1.1 200 OK"),
                replaced: Vec::new(),
                tags: Some("t".into()),
            })
        };
        assert!(
            s.fresh_mem_hit(&key, prep).is_none(),
            "not decoded before a first hit"
        );
        let (m, mut h) = s.lookup(&key, &span).await.unwrap().unwrap();
        assert_eq!(read_all(&mut h).await, b"fast body");
        let hit = s.fresh_mem_hit(&key, prep).expect("decoded and fresh");
        assert_eq!(hit.prepared.header.headers["x-prepared"], "1");
        assert_eq!(hit.prepared.tags.as_deref(), Some("t"));
        // Prepared once per object: a later `prepare` is not consulted.
        let again = s.fresh_mem_hit(&key, |_| None).expect("still prepared");
        assert_eq!(again.prepared.header.headers["x-prepared"], "1");
        assert_eq!(&hit.body[..], b"fast body");
        assert_eq!(hit.created, m.created());
        assert_eq!(hit.prepared.header.status, 200);
        assert!(hit.age < Duration::from_secs(2));
        assert_eq!(
            s.stats.mem_hits.load(Ordering::Relaxed),
            1,
            "counted by the caller"
        );
        s.count_fast_hit();
        assert_eq!(s.stats.mem_hits.load(Ordering::Relaxed), 2);
        assert_eq!(s.stats.fast_hits.load(Ordering::Relaxed), 1);
        let refused = CacheKey::new("orig:/refused", "");
        put(s, &refused, b"no").await;
        assert!(s.lookup(&refused, &span).await.unwrap().is_some());
        assert!(
            s.fresh_mem_hit(&refused, |_| None).is_none(),
            "refused by prepare"
        );

        // Expired: the ordinary path decides (stale-while-revalidate, stale-if-error...).
        let h = ResponseHeader::build(200, None).unwrap();
        let past = SystemTime::now() - Duration::from_secs(10);
        let expired = CacheMeta::new(past, past - Duration::from_secs(60), 30, 30, h);
        // Varied entries: pingora-cache picks the variant.
        let mut varied = meta();
        varied.set_variance([7u8; 16]);
        for (name, m, why) in [
            ("orig:/old", expired, "expired entries are not fast hits"),
            ("orig:/varied", varied, "varied entries are not fast hits"),
        ] {
            let k = CacheKey::new(name, "");
            put_meta(s, &k, &m, b"x").await;
            assert!(s.lookup(&k, &span).await.unwrap().is_some());
            assert!(s.fresh_mem_hit(&k, prep).is_none(), "{why}");
        }
    }

    #[tokio::test]
    async fn a_refill_too_big_for_memory_replaces_the_memory_copy() {
        let dir = tempfile::tempdir().unwrap();
        let s = leak(dir.path(), 1 << 20, 1 << 16);
        let span = pingora_cache::trace::Span::inactive().handle();
        let key = CacheKey::new("orig:/grows", "");
        put(s, &key, b"small v1").await;
        let big = vec![9u8; 100_000];
        put(s, &key, &big).await;
        let (_, mut h) = s.lookup(&key, &span).await.unwrap().expect("hit");
        assert_eq!(read_all(&mut h).await, big, "the new body, from disk");
        assert_eq!(s.stats.disk_hits.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn disk_budget_evicts_oldest() {
        let stats = TierStats::default();
        let mut idx = DiskIndex::default();
        idx.insert(1, 10);
        idx.insert(2, 10);
        idx.touch(1);
        assert_eq!(idx.pop_oldest(), Some(2));
        assert_eq!(idx.total, 10);
        drop(stats);
    }

    /// The fills of a process still running (the old one, during a graceful upgrade) are left
    /// alone; those of a process that is gone, and stale loose files, are removed.
    #[test]
    fn temp_folders_of_live_processes_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tmp");
        let (running, lock) = claim_tmp(&root).unwrap();
        std::fs::write(running.join("fill.b"), b"in flight").unwrap();
        let (gone, gone_lock) = claim_tmp(&root).unwrap();
        std::fs::write(gone.join("fill.b"), b"torn").unwrap();
        drop(gone_lock); // its process exited
        std::fs::write(root.join("recent-old-layout.b"), b"in flight").unwrap();
        let stale = std::fs::File::create(root.join("stale-old-layout.b")).unwrap();
        stale
            .set_modified(SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
        let (own, _own_lock) = claim_tmp(&root).unwrap();
        assert!(running.join("fill.b").exists(), "a live process's fill");
        assert!(!gone.exists(), "a dead process's folder");
        assert!(
            root.join("recent-old-layout.b").exists(),
            "maybe an old build's fill"
        );
        assert!(!root.join("stale-old-layout.b").exists());
        assert!(own.is_dir() && own != running);
        drop(lock);
    }
}

#[cfg(test)]
mod decoded_meta {
    use super::*;
    use pingora_http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    #[test]
    fn rebuilt_meta_serves_like_the_decoded_one() {
        let created = SystemTime::now() - Duration::from_secs(30);
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "image/webp").unwrap();
        h.insert_header("cache-tag", "a,b").unwrap();
        let mut m = CacheMeta::new(created + Duration::from_secs(90), created, 15, 600, h);
        m.set_variance([7u8; 16]);
        let (internal, header) = m.serialize().unwrap();
        let decoded = CacheMeta::deserialize(&internal, &header).unwrap();
        let rebuilt = DecodedMeta::from_meta(&decoded).unwrap().to_meta();
        assert_eq!(rebuilt.provenance(), decoded.provenance());
        assert_eq!(rebuilt.updated(), decoded.updated());
        assert_eq!(rebuilt.fresh_until(), decoded.fresh_until());
        assert_eq!(rebuilt.created(), decoded.created());
        assert_eq!(rebuilt.epoch(), decoded.epoch());
        // Two clock reads: they may straddle a second.
        assert!(rebuilt.age().as_secs().abs_diff(decoded.age().as_secs()) <= 1);
        assert_eq!(rebuilt.stale_while_revalidate_sec(), 15);
        assert_eq!(rebuilt.stale_if_error_sec(), 600);
        assert_eq!(rebuilt.variance(), Some([7u8; 16]));
        assert_eq!(rebuilt.headers().get("cache-tag").unwrap(), "a,b");
        assert_eq!(rebuilt.response_header().status, 200);
        // An age reference other than `created` (a revalidated entry) is kept.
        let mut later = CacheMeta::deserialize(&internal, &header).unwrap();
        later.set_epoch_override(created + Duration::from_secs(20));
        let rebuilt = DecodedMeta::from_meta(&later).unwrap().to_meta();
        assert_eq!(rebuilt.epoch(), created + Duration::from_secs(20));
        // Two clock reads: they may straddle a second.
        assert!(rebuilt.age().as_secs().abs_diff(later.age().as_secs()) <= 1);
        // A revalidated entry (`updated` moved on) is not rebuilt: decoded every hit.
        let mut revalidated = CacheMeta::deserialize(&internal, &header).unwrap();
        revalidated.update_freshness(SystemTime::now() + Duration::from_secs(60), 0, 0);
        assert!(DecodedMeta::from_meta(&revalidated).is_none());
    }
}

#[cfg(test)]
mod purge_cycle {
    use super::*;
    use pingora_http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    #[tokio::test]
    async fn put_purge_put_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StorageLimits {
            memory_bytes: 1 << 20,
            memory_max_object: 1 << 16,
            disk_bytes: 1 << 30,
        };
        let s: &'static TieredStorage =
            Box::leak(Box::new(TieredStorage::open(dir.path(), &limits).unwrap()));
        let key = CacheKey::new("k", "");
        let span = pingora_cache::trace::Span::inactive().handle();
        for round in 0..2 {
            let h = ResponseHeader::build(200, None).unwrap();
            let meta = CacheMeta::new(
                SystemTime::now() + Duration::from_secs(60),
                SystemTime::now(),
                0,
                0,
                h,
            );
            let mut mh = s.get_miss_handler(&key, &meta, &span).await.unwrap();
            mh.write_body(Bytes::from_static(b"abc"), true)
                .await
                .unwrap();
            mh.finish().await.unwrap();
            assert!(
                s.lookup(&key, &span).await.unwrap().is_some(),
                "round {round}"
            );
            let c = key.to_compact();
            s.purge(PurgeTarget::Active(&c), PurgeType::Invalidation, &span)
                .await
                .unwrap();
            assert!(s.lookup(&key, &span).await.unwrap().is_none());
        }
    }
}
