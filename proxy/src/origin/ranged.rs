//! Ranged reads of a source object for the video engine.
//!
//! Owns turning FFmpeg's "read N bytes at offset X" into byte-range requests to a source
//! (S3/R2, a remote answering ranges), in aligned blocks kept in a small LRU so the
//! demuxer's back-and-forth (header, index, packets) costs few requests. Sequential reads
//! double the request size up to [`MAX_RUN_BLOCKS`] blocks, so a transcode streams at full
//! speed while a frame from the middle of a 2 GB object reads a few MB. Memory is bounded
//! by [`CACHE_BLOCKS`] blocks per transform whatever the object size. Its reads block: it
//! must be used from the transform pool's threads, never from the async reactor.

use super::sources::{FetchRequest, Source};
use crate::transform::RangeRead;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Block size: the unit of fetching and caching.
pub const BLOCK: u64 = 256 * 1024;
/// Largest request (in blocks) when the demuxer reads sequentially: 8 MiB.
const MAX_RUN_BLOCKS: u64 = 32;
/// Blocks kept per reader: 16 MiB.
const CACHE_BLOCKS: usize = 64;

struct State {
    blocks: HashMap<u64, Bytes>,
    lru: VecDeque<u64>,
    /// The block a sequential reader would miss next, and the current run length.
    next_seq: Option<u64>,
    run: u64,
}

/// A source object read by ranges from a blocking thread.
pub struct SourceReader {
    source: Arc<dyn Source>,
    path: String,
    size: u64,
    rt: tokio::runtime::Handle,
    timeout: Duration,
    state: Mutex<State>,
    fetched: AtomicU64,
    requests: AtomicU64,
}

/// The total size from a `Content-Range: bytes a-b/total` header.
pub fn content_range_total(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes ")?
        .rsplit_once('/')?
        .1
        .trim()
        .parse()
        .ok()
}

impl SourceReader {
    /// A reader over `path` of `size` bytes; `first` is what the probing request already
    /// fetched from offset 0 (kept as the first block when it is whole).
    pub fn new(
        source: Arc<dyn Source>,
        path: String,
        size: u64,
        first: Bytes,
        rt: tokio::runtime::Handle,
        timeout: Duration,
    ) -> SourceReader {
        let mut state = State {
            blocks: HashMap::new(),
            lru: VecDeque::new(),
            next_seq: None,
            run: 1,
        };
        let fetched = first.len() as u64;
        if first.len() as u64 == BLOCK.min(size) {
            state.blocks.insert(0, first);
            state.lru.push_back(0);
            state.next_seq = Some(1);
        }
        SourceReader {
            source,
            path,
            size,
            rt,
            timeout,
            state: Mutex::new(state),
            fetched: AtomicU64::new(fetched),
            requests: AtomicU64::new(1),
        }
    }

    /// Range requests made so far (the probing one included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Fetches blocks `first..first+count` in one range request.
    fn fetch(&self, first: u64, count: u64) -> io::Result<Vec<(u64, Bytes)>> {
        let start = first * BLOCK;
        let end = ((first + count) * BLOCK).min(self.size) - 1;
        let want = (end - start + 1) as usize;
        let req = FetchRequest {
            path: self.path.clone(),
            range: Some(format!("bytes={start}-{end}")),
            ..FetchRequest::default()
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let source = self.source.clone();
        let size = self.size;
        let fut = async move {
            let f = source
                .fetch(&req)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            let whole = f.status == 200 && start == 0 && end + 1 == size;
            if f.status != 206 && !whole {
                return Err(io::Error::other(format!(
                    "source answered {} to a range request",
                    f.status
                )));
            }
            let mut buf = BytesMut::with_capacity(want);
            if let Some(mut body) = f.body {
                while let Some(chunk) = body.next().await {
                    let chunk = chunk?;
                    if buf.len() + chunk.len() > want {
                        return Err(io::Error::other("source sent more than the range"));
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
            if buf.len() != want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("source sent {} of {want} bytes", buf.len()),
                ));
            }
            Ok(buf.freeze())
        };
        let data = self
            .rt
            .block_on(async { tokio::time::timeout(self.timeout, fut).await })
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "source range timed out"))??;
        self.fetched.fetch_add(data.len() as u64, Ordering::Relaxed);
        let mut out = Vec::with_capacity(count as usize);
        let mut off = 0usize;
        let mut b = first;
        while off < data.len() {
            let n = (BLOCK as usize).min(data.len() - off);
            out.push((b, data.slice(off..off + n)));
            off += n;
            b += 1;
        }
        Ok(out)
    }
}

impl RangeRead for SourceReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let b = offset / BLOCK;
        let mut st = self.state.lock();
        if !st.blocks.contains_key(&b) {
            let count = if st.next_seq == Some(b) {
                (st.run * 2).min(MAX_RUN_BLOCKS)
            } else {
                1
            };
            let last = (self.size - 1) / BLOCK;
            let count = count.min(last - b + 1);
            st.run = count;
            for (i, data) in self.fetch(b, count)? {
                if st.blocks.insert(i, data).is_none() {
                    st.lru.push_back(i);
                }
            }
            st.next_seq = Some(b + count);
            while st.lru.len() > CACHE_BLOCKS {
                if let Some(old) = st.lru.pop_front() {
                    st.blocks.remove(&old);
                }
            }
        } else if let Some(pos) = st.lru.iter().position(|&x| x == b) {
            st.lru.remove(pos);
            st.lru.push_back(b);
        }
        let data = st
            .blocks
            .get(&b)
            .ok_or_else(|| io::Error::other("block evicted while reading"))?;
        let at = (offset - b * BLOCK) as usize;
        if at >= data.len() {
            return Ok(0);
        }
        let n = buf.len().min(data.len() - at);
        buf[..n].copy_from_slice(&data[at..at + n]);
        Ok(n)
    }

    fn name(&self) -> String {
        self.path
            .rsplit('/')
            .next()
            .unwrap_or(&self.path)
            .to_string()
    }

    fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::sources::local::LocalSource;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn content_range() {
        assert_eq!(content_range_total("bytes 0-9/100"), Some(100));
        assert_eq!(content_range_total("bytes */100"), Some(100));
        assert_eq!(content_range_total("bytes 0-9/*"), None);
    }

    #[test]
    fn reads_match_the_file_and_fetch_little() {
        let dir = tempfile::tempdir().unwrap();
        let size = (BLOCK * 40 + 1234) as usize;
        let data = pattern(size);
        std::fs::write(dir.path().join("big.bin"), &data).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let src: Arc<dyn Source> = Arc::new(LocalSource::new(dir.path()).unwrap());
        let r = SourceReader::new(
            src,
            "/big.bin".into(),
            size as u64,
            Bytes::new(),
            rt.handle().clone(),
            Duration::from_secs(5),
        );
        // Random reads across block edges.
        for &(off, len) in &[
            (0u64, 10usize),
            (BLOCK - 5, 10),
            (BLOCK * 20 + 7, 70_000),
            (size as u64 - 10, 100),
        ] {
            let mut buf = vec![0u8; len];
            let mut got = 0;
            while got < len {
                let n = r.read_at(off + got as u64, &mut buf[got..]).unwrap();
                if n == 0 {
                    break;
                }
                got += n;
            }
            let end = (off as usize + len).min(size);
            assert_eq!(&buf[..got], &data[off as usize..end], "at {off}");
        }
        assert!(r.bytes_fetched() < BLOCK * 6, "{}", r.bytes_fetched());
        let mut buf = [0u8; 4];
        assert_eq!(r.read_at(size as u64, &mut buf).unwrap(), 0);
        // A sequential pass reads everything once, in growing requests.
        let before = r.requests();
        let mut off = 0u64;
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n) = r.read_at(off, &mut chunk) {
            if n == 0 {
                break;
            }
            assert_eq!(&chunk[..n], &data[off as usize..off as usize + n]);
            off += n as u64;
        }
        assert_eq!(off, size as u64);
        assert!(r.requests() - before < 12, "{}", r.requests() - before);
    }
}
