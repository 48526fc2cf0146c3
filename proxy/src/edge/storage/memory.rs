//! The memory tier: whole small objects as shared `Bytes` in a TinyUFO, with their metadata
//! decoded once and, for the edge's fast path, whatever it prepared from the stored header.
//!
//! Owns admission weight, the decoded-meta cache and memory hits (slices of one buffer). Must
//! not do I/O or interpret HTTP beyond pingora-cache's `CacheMeta`.

use super::{key_hash, FreshHit, TieredStorage};
use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::storage::{HandleHit, HitHandler, Storage};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::Result;
use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;

pub(super) struct MemObject {
    pub(super) meta: (Vec<u8>, Vec<u8>),
    pub(super) body: Bytes,
    /// The metadata decoded on the first hit (the header blob is zstd-compressed, and
    /// decoding it on every hit cost ~4 % of a small-object hit), rebuilt per hit from here.
    decoded: std::sync::OnceLock<DecodedMeta>,
    /// What the caller of [`TieredStorage::fresh_mem_hit`] made of the decoded header, once
    /// (`None`: not eligible); opaque here.
    prepared: std::sync::OnceLock<Option<Arc<dyn Any + Send + Sync>>>,
}

/// Bytes counted for a decoded [`DecodedMeta`] and a prepared header in the memory budget.
const DECODED_META_ESTIMATE: usize = 4096;

/// What a hit needs of a [`CacheMeta`], kept decoded.
pub(super) struct DecodedMeta {
    fresh_until: SystemTime,
    created: SystemTime,
    /// When the entry was last admitted or revalidated (the default age reference).
    updated: SystemTime,
    /// An explicit age reference (epoch override), if the entry had one.
    epoch: Option<SystemTime>,
    swr: u32,
    sie: u32,
    variance: Option<pingora_cache::key::HashBinary>,
    header: pingora_http::ResponseHeader,
    /// [`Self::to_meta`] can rebuild the entry's `CacheMeta`: false for a revalidated or
    /// refreshed entry (`updated` or `provenance` differ from `created`, which
    /// `CacheMeta::new` cannot express), whose pingora-cache hits decode it every time. Its
    /// fast hits need only the fields above, so they are unaffected.
    rebuildable: bool,
}

impl DecodedMeta {
    pub(super) fn from_meta(m: &CacheMeta) -> DecodedMeta {
        DecodedMeta {
            fresh_until: m.fresh_until(),
            created: m.created(),
            updated: m.updated(),
            epoch: m.epoch_override(),
            swr: m.stale_while_revalidate_sec(),
            sie: m.stale_if_error_sec(),
            variance: m.variance(),
            header: m.response_header_copy(),
            rebuildable: m.updated() == m.created() && m.provenance() == m.created(),
        }
    }

    /// The reference an age is counted from (pingora-cache's `CacheMeta::epoch`).
    pub(super) fn epoch(&self) -> SystemTime {
        self.epoch.unwrap_or(self.updated)
    }

    /// A `CacheMeta` equal for serving to the one decoded (freshness, age, stale windows,
    /// variance, header); `None` when it cannot be rebuilt (see `rebuildable`).
    pub(super) fn to_meta(&self) -> Option<CacheMeta> {
        if !self.rebuildable {
            return None;
        }
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
        Some(m)
    }
}

impl TieredStorage {
    pub(super) fn mem_put(&self, hash: u128, meta: (Vec<u8>, Vec<u8>), body: Bytes) {
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
    /// hit shares the prepared value. Anything else (stale, varied, never decoded,
    /// on disk only, refused by `prepare`) is `None`, and the request takes pingora-cache's
    /// hit path. Not counted: see [`Self::count_fast_hit`].
    pub fn fresh_mem_hit<P: Send + Sync + 'static>(
        &self,
        key: &CacheKey,
        prepare: impl FnOnce(&pingora_http::ResponseHeader) -> Option<P>,
    ) -> Option<FreshHit<P>> {
        let obj = self.mem.get(&key_hash(key))?;
        let d = obj.decoded.get()?;
        let now = SystemTime::now();
        if d.variance.is_some() || d.fresh_until < now {
            return None;
        }
        let p = obj
            .prepared
            .get_or_init(|| prepare(&d.header).map(|p| Arc::new(p) as Arc<dyn Any + Send + Sync>))
            .as_ref()?;
        Some(FreshHit {
            // A key is prepared by one caller type; another type is "not prepared".
            prepared: p.clone().downcast::<P>().ok()?,
            body: obj.body.clone(),
            created: d.created,
            age: now.duration_since(d.epoch()).unwrap_or_default(),
        })
    }

    pub(super) fn mem_hit(obj: Arc<MemObject>) -> Result<(CacheMeta, HitHandler)> {
        let meta = match obj.decoded.get().and_then(DecodedMeta::to_meta) {
            Some(m) => m,
            None => {
                let meta = CacheMeta::deserialize(&obj.meta.0, &obj.meta.1)?;
                if obj.decoded.get().is_none() {
                    let _ = obj.decoded.set(DecodedMeta::from_meta(&meta));
                }
                meta
            }
        };
        Ok((meta, Box::new(MemHit::whole(obj.body.clone()))))
    }
}

/// A hit served from memory: slices of one shared buffer.
pub(super) struct MemHit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

impl MemHit {
    /// A hit on the whole of `body`.
    pub(super) fn whole(body: Bytes) -> MemHit {
        let end = body.len();
        MemHit {
            body,
            start: 0,
            end,
            done: false,
        }
    }
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
        let (start, end) = super::seek_range(start, end, self.body.len() as u64)?;
        self.start = start as usize;
        self.end = end as usize;
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
