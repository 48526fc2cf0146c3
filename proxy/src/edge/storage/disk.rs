//! The disk tier: entries as file pairs under sharded folders, an LRU index bounded by bytes,
//! this process's temp folder for fills in progress, and hits streamed in chunks.
//!
//! Owns the files (creating, publishing by rename, evicting, removing, reading back) and the
//! index rebuilt from them at start. What the files contain is [`super::format`]'s. Must not
//! interpret HTTP or keep bodies in memory.

use super::format::{self, BODY_HEADER};
use super::miss::DiskWrite;
use super::TierStats;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use pingora_cache::storage::{HandleHit, Storage};
use pingora_cache::trace::SpanHandle;
use pingora_cache::CacheKey;
use pingora_error::{Error, ErrorType, OrErr, Result};
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Bytes read from a body file per `read_body`.
const READ_CHUNK: usize = 64 * 1024;

/// A hit streamed from the disk tier in chunks, seekable for ranges.
pub(super) struct DiskHit {
    file: tokio::fs::File,
    body_len: u64,
    pos: u64,
    end: u64,
    seeked: bool,
    buf: BytesMut,
}

impl DiskHit {
    /// A hit on the whole body of `file`, positioned at its start.
    pub(super) fn new(file: tokio::fs::File, body_len: u64) -> DiskHit {
        DiskHit {
            file,
            body_len,
            pos: 0,
            end: body_len,
            seeked: false,
            buf: BytesMut::new(),
        }
    }
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
        let (start, end) = super::seek_range(start, end, self.body_len)?;
        self.pos = start;
        self.end = end;
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

pub(super) struct DiskEntry {
    pub(super) meta: (Vec<u8>, Vec<u8>),
    pub(super) body_len: u64,
    /// Positioned at the start of the body.
    pub(super) file: tokio::fs::File,
}

#[derive(Default)]
pub(super) struct DiskIndex {
    entries: HashMap<u128, (u64, u64)>, // hash -> (bytes on disk, tick)
    order: BTreeMap<u64, u128>,         // tick -> hash, oldest first
    pub(super) total: u64,
    tick: u64,
}

impl DiskIndex {
    pub(super) fn touch(&mut self, hash: u128) {
        self.tick += 1;
        let t = self.tick;
        if let Some(e) = self.entries.get_mut(&hash) {
            self.order.remove(&e.1);
            e.1 = t;
            self.order.insert(t, hash);
        }
    }
    pub(super) fn insert(&mut self, hash: u128, size: u64) {
        self.remove(hash);
        self.tick += 1;
        self.entries.insert(hash, (size, self.tick));
        self.order.insert(self.tick, hash);
        self.total += size;
    }
    pub(super) fn remove(&mut self, hash: u128) -> bool {
        if let Some((size, tick)) = self.entries.remove(&hash) {
            self.order.remove(&tick);
            self.total -= size;
            true
        } else {
            false
        }
    }
    pub(super) fn pop_oldest(&mut self) -> Option<u128> {
        let (_, hash) = self.order.pop_first()?;
        if let Some((size, _)) = self.entries.remove(&hash) {
            self.total -= size;
        }
        Some(hash)
    }
}

pub(super) struct DiskTier {
    dir: PathBuf,
    stats: Arc<TierStats>,
    /// The start-up scan has been merged into `index`.
    indexed: Arc<AtomicBool>,
    /// This process's folder for fills in progress, under `tmp/`.
    tmp_dir: PathBuf,
    budget: u64,
    index: Arc<Mutex<DiskIndex>>,
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
pub(super) fn claim_tmp(tmp_root: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
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

/// The meta and body files of entry `hash` under `dir`.
fn entry_paths(dir: &Path, hash: u128) -> (PathBuf, PathBuf) {
    let hex = format!("{hash:032x}");
    let shard = dir.join(&hex[..2]);
    (
        shard.join(format!("{hex}.m")),
        shard.join(format!("{hex}.b")),
    )
}

/// Removes the files of evicted entries.
fn remove_entries(dir: &Path, victims: &[u128], stats: &TierStats) {
    for &h in victims {
        let (m, b) = entry_paths(dir, h);
        let _ = std::fs::remove_file(m);
        let _ = std::fs::remove_file(b);
        stats.disk_evictions.fetch_add(1, Ordering::Relaxed);
    }
}

/// Entries to evict for `budget`, taken out of the index (oldest first); counters updated.
fn over_budget(index: &Mutex<DiskIndex>, budget: u64, stats: &TierStats) -> Vec<u128> {
    let mut victims = Vec::new();
    let mut idx = index.lock();
    while idx.total > budget {
        match idx.pop_oldest() {
            Some(h) => victims.push(h),
            None => break,
        }
    }
    stats.disk_bytes.store(idx.total, Ordering::Relaxed);
    stats
        .disk_objects
        .store(idx.entries.len() as u64, Ordering::Relaxed);
    victims
}

/// What the start-up scan found of one entry: `(modified, hash, bytes on disk)`.
type Found = (std::time::SystemTime, u128, u64);

/// Bodies without a meta file younger than this may be another process's commit in progress
/// (body renamed, meta not yet): left alone.
const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// Every entry in the shard folders of `dir`, oldest first. Removes a meta without its body
/// and a body whose meta never came (a crash between the two renames) once it is old enough
/// not to be a commit in progress.
fn scan(dir: &Path) -> std::io::Result<Vec<Found>> {
    let mut found: Vec<Found> = Vec::new();
    for shard in std::fs::read_dir(dir)?.flatten() {
        if !shard.file_type().map(|t| t.is_dir()).unwrap_or(false) || shard.file_name() == "tmp" {
            continue;
        }
        for f in std::fs::read_dir(shard.path())?.flatten() {
            let name = f.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(hex) = name.strip_suffix(".b") {
                let meta = f.path().with_extension("m");
                let old = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_none_or(|age| age > ORPHAN_AGE);
                if u128::from_str_radix(hex, 16).is_ok() && !meta.exists() && old {
                    let _ = std::fs::remove_file(f.path());
                }
                continue;
            }
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
    Ok(found)
}

/// The folder's entries, oldest first, under what was indexed while the scan ran (commits of
/// this process since it started, which are newer).
fn merge_scanned(idx: &mut DiskIndex, found: Vec<Found>) {
    let live: Vec<(u128, u64)> = idx
        .order
        .values()
        .filter_map(|h| idx.entries.get(h).map(|(size, _)| (*h, *size)))
        .collect();
    let mut merged = DiskIndex::default();
    for (_, hash, size) in found {
        merged.insert(hash, size);
    }
    for (hash, size) in live {
        merged.insert(hash, size);
    }
    *idx = merged;
}

impl DiskTier {
    /// Opens the tier at once; the index is rebuilt from the folder by a background thread
    /// (a disk tier of 100,000 entries takes seconds to scan, and a graceful upgrade must not
    /// wait for it before taking the listeners). Until the scan is done, hits are served
    /// (they read the files, not the index) and the budget counts only new entries.
    pub(super) fn open(
        dir: &Path,
        budget: u64,
        stats: &Arc<TierStats>,
    ) -> std::io::Result<DiskTier> {
        let (tmp_dir, tmp_lock) = claim_tmp(&dir.join("tmp"))?;
        let tier = DiskTier {
            dir: dir.to_path_buf(),
            tmp_dir,
            budget,
            index: Arc::new(Mutex::new(DiskIndex::default())),
            stats: stats.clone(),
            indexed: Arc::new(AtomicBool::new(false)),
            _tmp_lock: tmp_lock,
        };
        let (dir, index, stats, indexed) = (
            tier.dir.clone(),
            tier.index.clone(),
            stats.clone(),
            tier.indexed.clone(),
        );
        std::thread::Builder::new()
            .name("disk-index".into())
            .spawn(move || {
                let t0 = std::time::Instant::now();
                match scan(&dir) {
                    Ok(found) => {
                        let n = found.len();
                        merge_scanned(&mut index.lock(), found);
                        let victims = over_budget(&index, budget, &stats);
                        remove_entries(&dir, &victims, &stats);
                        let ms = t0.elapsed().as_millis() as u64;
                        tracing::info!(entries = n, ms, "disk cache indexed");
                    }
                    Err(e) => tracing::warn!(error = %e, "disk cache scan"),
                }
                indexed.store(true, Ordering::Release);
            })?;
        Ok(tier)
    }

    /// The start-up scan has finished (tests wait for it).
    pub(super) fn is_indexed(&self) -> bool {
        self.indexed.load(Ordering::Acquire)
    }

    pub(super) fn paths(&self, hash: u128) -> (PathBuf, PathBuf) {
        entry_paths(&self.dir, hash)
    }

    pub(super) async fn start_write(&self, write_id: u64) -> std::io::Result<DiskWrite> {
        let tmp = self.tmp_dir.join(format!("{write_id:016x}.b"));
        let file = tokio::fs::File::create(&tmp).await?;
        let mut w = DiskWrite { file, tmp };
        w.file.write_all(&format::body_header(write_id)).await?;
        Ok(w)
    }

    /// A write to the tier failed with `e`: counted, and on a full disk the oldest entries
    /// are evicted to make room (the budget may be larger than the filesystem).
    pub(super) fn write_failed(&self, e: &std::io::Error) {
        self.stats.disk_write_errors.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.stats.last_disk_error.store(now, Ordering::Relaxed);
        tracing::warn!(error = %e, "disk cache write failed: the entry is kept in memory only");
        if e.raw_os_error() == Some(libc::ENOSPC) {
            self.make_room();
        }
    }

    /// Evicts the oldest entries worth a twentieth of what the tier holds (at least 16 MiB).
    fn make_room(&self) {
        let victims = {
            let mut idx = self.index.lock();
            let goal = (idx.total / 20).max(16 << 20);
            let target = idx.total.saturating_sub(goal);
            let mut victims = Vec::new();
            while idx.total > target {
                match idx.pop_oldest() {
                    Some(h) => victims.push(h),
                    None => break,
                }
            }
            self.stats.disk_bytes.store(idx.total, Ordering::Relaxed);
            self.stats
                .disk_objects
                .store(idx.entries.len() as u64, Ordering::Relaxed);
            victims
        };
        self.remove_off_reactor(victims);
    }

    pub(super) async fn write_atomic(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

    pub(super) async fn commit(
        &self,
        mut w: DiskWrite,
        hash: u128,
        write_id: u64,
        meta: &(Vec<u8>, Vec<u8>),
        body_len: u64,
    ) -> std::io::Result<()> {
        let (meta_path, body_path) = self.paths(hash);
        if let Some(shard) = body_path.parent() {
            tokio::fs::create_dir_all(shard).await?;
        }
        w.file.flush().await?;
        w.file.sync_data().await?;
        tokio::fs::rename(&w.tmp, &body_path).await?;
        let encoded = format::encode_meta(meta, body_len, write_id);
        self.write_atomic(&meta_path, &encoded).await?;
        {
            let mut idx = self.index.lock();
            idx.insert(hash, body_len + BODY_HEADER + encoded.len() as u64);
        }
        self.evict();
        Ok(())
    }

    /// Evicts what is over the budget; the files are removed on a blocking thread, never on
    /// the async reactor.
    pub(super) fn evict(&self) {
        let victims = over_budget(&self.index, self.budget, &self.stats);
        self.remove_off_reactor(victims);
    }

    /// Removes evicted entries' files on a blocking thread (inline outside a runtime).
    fn remove_off_reactor(&self, victims: Vec<u128>) {
        if victims.is_empty() {
            return;
        }
        let (dir, stats) = (self.dir.clone(), self.stats.clone());
        let remove = move || remove_entries(&dir, &victims, &stats);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }

    pub(super) fn remove(&self, hash: u128, stats: &TierStats) -> bool {
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

    pub(super) async fn open_entry(&self, hash: u128, stats: &TierStats) -> Option<DiskEntry> {
        let (meta_path, body_path) = self.paths(hash);
        let raw = tokio::fs::read(&meta_path).await.ok()?;
        let torn = || {
            stats.torn_entries.fetch_add(1, Ordering::Relaxed);
            None
        };
        let Some((write_id, body_len, meta)) = format::decode_meta(&raw) else {
            return torn();
        };
        let mut file = tokio::fs::File::open(&body_path).await.ok()?;
        let len = file.metadata().await.ok()?.len();
        let mut header = [0u8; BODY_HEADER as usize];
        if len != body_len + BODY_HEADER || file.read_exact(&mut header).await.is_err() {
            return torn();
        }
        if !format::body_header_matches(&header, write_id) {
            return torn();
        }
        self.index.lock().touch(hash);
        Some(DiskEntry {
            meta,
            body_len,
            file,
        })
    }

    pub(super) async fn rewrite_meta(&self, hash: u128, meta: &(Vec<u8>, Vec<u8>)) -> bool {
        let (meta_path, _) = self.paths(hash);
        let Ok(raw) = tokio::fs::read(&meta_path).await else {
            return false;
        };
        let Some((write_id, body_len, _)) = format::decode_meta(&raw) else {
            return false;
        };
        let encoded = format::encode_meta(meta, body_len, write_id);
        self.write_atomic(&meta_path, &encoded).await.is_ok()
    }
}
