//! Reading a source's body for the transform step, within limits: the first bytes without
//! consuming them (for sniffing), the whole body into memory up to a byte limit, the whole
//! body into a temp file (removed on failure and after use), the whole original of a still
//! image whatever way it arrived, and the hash of a finished output file. Every failure is
//! a [`BodyError`] with the offending size or cause; it owns no HTTP beyond mapping those
//! to statuses, and never decides what the bytes are for.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::Digest;

use super::SourceInput;
use crate::error::{ApiError, ErrorCode};
use crate::origin::sources::external::OverLimit;
use crate::origin::sources::{Fetched, SourceError};
use crate::transform::sniff::{self, SNIFF_BYTES};
use crate::transform::tempfile::TempFile;
use crate::transform::TransformError;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the byte limit (413).
    #[error("source of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    /// The source's stream failed mid-body (its timeout, its own cap, or a broken read).
    #[error("{0}")]
    Stream(std::io::Error),
    /// The scratch directory or file could not be written.
    #[error("{what}: {source}")]
    Scratch {
        what: &'static str,
        source: std::io::Error,
    },
    /// A local original could not be read.
    #[error("reading the source: {0}")]
    ReadLocal(std::io::Error),
    /// The whole original could not be fetched again.
    #[error("reading the source: {0}")]
    Refetch(SourceError),
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        match &e {
            BodyError::TooLarge { .. } => {
                ApiError::new(413, ErrorCode::PayloadTooLarge, e.to_string())
            }
            BodyError::Stream(io) => stream_error(io),
            BodyError::Scratch { .. } | BodyError::ReadLocal(_) => {
                ApiError::internal(e.to_string())
            }
            BodyError::Refetch(_) => ApiError::origin_error(e.to_string()),
        }
    }
}

/// A failed body stream: the source's deadline (504), an external body over its cap (413),
/// anything else (502).
fn stream_error(e: &std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        ApiError::timeout("external fetch timed out")
    } else if e.get_ref().is_some_and(|inner| inner.is::<OverLimit>()) {
        ApiError::new(413, ErrorCode::PayloadTooLarge, e.to_string())
    } else {
        ApiError::origin_error(format!("external body: {e}"))
    }
}

/// Whether the first bytes are an image the image engine of this build decodes.
fn image_engine_reads(head: &[u8]) -> bool {
    cfg!(feature = "image-engine") && sniff::image_format(head).is_some()
}

/// Reads the first bytes of a body without consuming them: the body is given back whole.
pub(super) async fn peek(mut f: Fetched) -> Result<(Fetched, Bytes), BodyError> {
    let Some(mut body) = f.body.take() else {
        return Ok((f, Bytes::new()));
    };
    let mut head = BytesMut::new();
    let mut chunks = Vec::new();
    while head.len() < SNIFF_BYTES {
        match body.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(BodyError::Stream)?;
                head.extend_from_slice(&chunk);
                chunks.push(Ok(chunk));
            }
            None => break,
        }
    }
    f.body = Some(Box::pin(futures::stream::iter(chunks).chain(body)));
    Ok((f, head.freeze()))
}

/// The whole body in memory, refused over `max` bytes (by `Content-Length` before reading).
pub(super) async fn read_to_memory(fetched: Fetched, max: u64) -> Result<Bytes, BodyError> {
    if let Some(len) = fetched
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        if len > max {
            return Err(BodyError::TooLarge { len, max });
        }
    }
    let Some(mut body) = fetched.body else {
        return Ok(Bytes::new());
    };
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(BodyError::Stream)?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(BodyError::TooLarge {
                len: buf.len() as u64 + chunk.len() as u64,
                max,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The whole body streamed into a fresh temp file in `dir`, refused over `max` bytes; the
/// file is removed on any failure, and when the returned guard goes.
#[cfg_attr(not(feature = "video-engine"), allow(dead_code))]
pub(super) async fn stream_to_file(
    fetched: Fetched,
    max: u64,
    dir: &Path,
) -> Result<TempFile, BodyError> {
    use tokio::io::AsyncWriteExt;
    let scratch = |what| move |source| BodyError::Scratch { what, source };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(scratch("temp dir"))?;
    let tmp = TempFile::fresh(dir, "src");
    let mut file = tokio::fs::File::create(tmp.path())
        .await
        .map_err(scratch("temp file"))?;
    let mut written = 0u64;
    if let Some(mut body) = fetched.body {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(BodyError::Stream)?;
            written += chunk.len() as u64;
            if written > max {
                return Err(BodyError::TooLarge { len: written, max });
            }
            file.write_all(&chunk).await.map_err(scratch("temp file"))?;
        }
    }
    file.flush().await.map_err(scratch("temp file"))?;
    Ok(tmp)
}

/// Which version of a source object an answer came from (validators and size), for keys
/// of work derived from it (background AVIF, HLS packages).
pub(crate) fn source_version(f: &Fetched) -> String {
    let size = f
        .header("content-range")
        .and_then(crate::origin::ranged::content_range_total)
        .map(|n| n.to_string());
    let size = size.as_deref().or(f.header("content-length"));
    [f.header("etag"), f.header("last-modified"), size]
        .map(|v| v.unwrap_or("-"))
        .join("|")
}

/// Length and `ETag` (SHA-256 prefix, as for in-memory outputs) of a finished output file.
#[cfg_attr(not(feature = "video-engine"), allow(dead_code))]
pub(super) fn hash_file(path: &Path) -> Result<(u64, String), TransformError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| TransformError::Internal(format!("reading output: {e}")))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)
            .map_err(|e| TransformError::Internal(format!("reading output: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, format!("\"{}\"", hex::encode(&h.finalize()[..16]))))
}

/// The whole original when a video-looking request (`mode=frame`) names a still image,
/// else the input given back untouched.
pub(super) async fn still_image(
    input: SourceInput,
    max: u64,
) -> Result<Result<Bytes, SourceInput>, BodyError> {
    match input {
        SourceInput::Stream(f) => {
            let (f, head) = peek(f).await?;
            if !image_engine_reads(&head) {
                return Ok(Err(SourceInput::Stream(f)));
            }
            read_to_memory(f, max).await.map(Ok)
        }
        SourceInput::Local(f, path) => {
            use tokio::io::AsyncReadExt;
            let mut head = vec![0u8; SNIFF_BYTES];
            let n = match tokio::fs::File::open(&path).await {
                Ok(mut file) => file.read(&mut head).await.unwrap_or(0),
                Err(_) => 0,
            };
            if !image_engine_reads(&head[..n]) {
                return Ok(Err(SourceInput::Local(f, path)));
            }
            let len = tokio::fs::metadata(&path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if len > max {
                return Err(BodyError::TooLarge { len, max });
            }
            let bytes = tokio::fs::read(&path).await.map_err(BodyError::ReadLocal)?;
            Ok(Ok(Bytes::from(bytes)))
        }
        SourceInput::Ranged {
            fetched,
            source,
            path,
        } => {
            let (fetched, head) = peek(fetched).await?;
            if !image_engine_reads(&head) {
                return Ok(Err(SourceInput::Ranged {
                    fetched,
                    source,
                    path,
                }));
            }
            let size = fetched
                .header("content-range")
                .and_then(crate::origin::ranged::content_range_total)
                .unwrap_or(u64::MAX);
            if size > max {
                return Err(BodyError::TooLarge { len: size, max });
            }
            if size <= crate::origin::ranged::BLOCK {
                return read_to_memory(fetched, max).await.map(Ok);
            }
            drop(fetched);
            let whole = source
                .fetch(&crate::origin::sources::FetchRequest {
                    path,
                    range: None,
                    if_none_match: None,
                    if_modified_since: None,
                    head: false,
                })
                .await
                .map_err(BodyError::Refetch)?;
            read_to_memory(whole, max).await.map(Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn peek_gives_the_body_back_whole() {
        let chunks: Vec<std::io::Result<Bytes>> =
            (0..100u8).map(|i| Ok(Bytes::from(vec![i; 10]))).collect();
        let f = Fetched {
            status: 200,
            headers: vec![],
            body: Some(Box::pin(futures::stream::iter(chunks))),
        };
        let (f, head) = peek(f).await.unwrap();
        assert!(head.len() >= SNIFF_BYTES && head.len() < SNIFF_BYTES + 10);
        assert_eq!(&head[..10], &[0u8; 10]);
        let all = read_to_memory(f, 1 << 20).await.unwrap();
        assert_eq!(all.len(), 1000);
        assert_eq!(all[999], 99);
    }

    #[tokio::test]
    async fn failed_streams_map_to_their_status() {
        let failing = |e: std::io::Error| Fetched {
            status: 200,
            headers: vec![],
            body: Some(Box::pin(futures::stream::iter(vec![
                Ok(Bytes::from_static(b"abc")),
                Err(e),
            ]))),
        };
        let over = std::io::Error::other(OverLimit { max: 3 });
        let e = ApiError::from(read_to_memory(failing(over), 1 << 20).await.unwrap_err());
        assert_eq!(
            (e.status, e.message.as_str()),
            (413, "external body over 3 bytes")
        );
        let slow = std::io::Error::new(std::io::ErrorKind::TimedOut, "late");
        let e = ApiError::from(read_to_memory(failing(slow), 1 << 20).await.unwrap_err());
        assert_eq!(e.status, 504);
        // A message that merely says "over" is not the cap.
        let broken = std::io::Error::other("connection over and out");
        let e = ApiError::from(read_to_memory(failing(broken), 1 << 20).await.unwrap_err());
        assert_eq!(e.status, 502);
        // Over the limit before the stream fails: the limit is the answer.
        let unread = std::io::Error::other("never read");
        let e = ApiError::from(read_to_memory(failing(unread), 2).await.unwrap_err());
        assert_eq!(
            (e.status, e.message.as_str()),
            (413, "source of 3 bytes is over the limit of 2 bytes")
        );
    }
}
