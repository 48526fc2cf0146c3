//! Unit tests of the tiered storage: tiers, reopen, torn entries, fast-hit preparation,
//! decoded metadata, temp folders, purge.

use super::disk::{claim_tmp, DiskIndex};
use super::memory::DecodedMeta;
use super::*;
use pingora_http::ResponseHeader;
use std::time::{Duration, SystemTime};

/// What a caller might prepare from a stored header (opaque to the storage).
struct Prepared {
    header: ResponseHeader,
    tags: Option<Arc<str>>,
}

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
    let again = s
        .fresh_mem_hit(&key, |_| None::<Prepared>)
        .expect("still prepared");
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
        s.fresh_mem_hit(&refused, |_| None::<Prepared>).is_none(),
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
    let rebuilt = DecodedMeta::from_meta(&decoded).to_meta().unwrap();
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
    let rebuilt = DecodedMeta::from_meta(&later).to_meta().unwrap();
    assert_eq!(rebuilt.epoch(), created + Duration::from_secs(20));
    // Two clock reads: they may straddle a second.
    assert!(rebuilt.age().as_secs().abs_diff(later.age().as_secs()) <= 1);
    // A revalidated entry (`updated` moved on) is not rebuilt: decoded every hit by
    // pingora-cache; its age for fast hits counts from the revalidation, as pingora's does.
    let mut revalidated = CacheMeta::deserialize(&internal, &header).unwrap();
    revalidated.update_freshness(SystemTime::now() + Duration::from_secs(60), 0, 0);
    let d = DecodedMeta::from_meta(&revalidated);
    assert!(d.to_meta().is_none());
    assert_eq!(d.epoch(), revalidated.epoch());
}

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

fn wait_indexed(s: &TieredStorage) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !s.disk_indexed() {
        assert!(
            std::time::Instant::now() < deadline,
            "index scan never finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test]
async fn the_index_is_rebuilt_in_the_background_and_crash_leftovers_go() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<CacheKey> = (0..20)
        .map(|i| CacheKey::new(format!("orig:/{i}"), ""))
        .collect();
    {
        let s = leak(dir.path(), 1 << 20, 1024);
        for k in &keys {
            put(s, k, &[7u8; 5000]).await;
        }
        wait_indexed(s);
        assert_eq!(s.stats.disk_objects.load(Ordering::Relaxed), 20);
    }
    // A crash between the body rename and the meta write leaves a body alone: an old one
    // is removed at start, a young one (perhaps another process's commit) is kept.
    let shard = dir.path().join("ab");
    std::fs::create_dir_all(&shard).unwrap();
    let old = shard.join(format!("{:032x}.b", 0xab_u128 << 120));
    let young = shard.join(format!("{:032x}.b", (0xab_u128 << 120) | 1));
    std::fs::write(&old, b"orphan").unwrap();
    std::fs::write(&young, b"orphan").unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let s = leak(dir.path(), 1 << 20, 1024);
    // Served before the scan is done: hits read the files, not the index.
    let span = pingora_cache::trace::Span::inactive().handle();
    let (_, mut h) = s.lookup(&keys[3], &span).await.unwrap().expect("hit");
    assert_eq!(read_all(&mut h).await, vec![7u8; 5000]);
    wait_indexed(s);
    assert_eq!(
        s.stats.disk_objects.load(Ordering::Relaxed),
        20,
        "all counted again"
    );
    assert!(!old.exists(), "an old orphan body is removed");
    assert!(young.exists(), "a young one may be a commit in progress");
}

#[tokio::test]
async fn a_failing_disk_leaves_the_fill_to_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = leak(dir.path(), 1 << 20, 1 << 16);
    wait_indexed(s);
    // The tier's temp folder gone: every disk write fails.
    std::fs::remove_dir_all(dir.path().join("tmp")).unwrap();
    let key = CacheKey::new("orig:/mem-only", "");
    put(s, &key, b"kept in memory").await;
    let span = pingora_cache::trace::Span::inactive().handle();
    let (_, mut h) = s.lookup(&key, &span).await.unwrap().expect("memory hit");
    assert_eq!(read_all(&mut h).await, b"kept in memory");
    assert_eq!(s.stats.disk_write_errors.load(Ordering::Relaxed), 1);
    assert!(s.disk_degraded());
    assert_eq!(s.stats.disk_objects.load(Ordering::Relaxed), 0);
}

#[test]
fn memory_copies_hold_no_more_than_their_length() {
    let mut grown = bytes::BytesMut::new();
    for _ in 0..100 {
        grown.extend_from_slice(&[1u8; 1000]);
    }
    assert!(grown.capacity() > 100_000);
    let held = super::miss::exact(grown);
    assert_eq!(held.len(), 100_000);
    let back = held.try_into_mut().expect("unique");
    assert!(
        back.capacity() <= 100_000 + 100_000 / 8,
        "{}",
        back.capacity()
    );
    // No slack: no copy.
    let mut sized = bytes::BytesMut::with_capacity(5000);
    sized.extend_from_slice(&[2u8; 5000]);
    let ptr = sized.as_ptr();
    assert_eq!(super::miss::exact(sized).as_ptr(), ptr);
}
