//! The origin service's transform step: a fetched original plus a `TransformSpec` become a
//! response. Owns reading the source body within limits (images into memory up to
//! `max_input_bytes`, videos streamed into a temp file that is always removed), choosing the
//! engine from the bytes and the mode, running it on the bounded pool, and the headers of a
//! transformed answer (`ETag` = hash of the output, `X-Resolved-*`, `X-Processing-Time-Ms`,
//! `X-Transform-Source`, `Cache-Tag`). Failures are JSON errors marked `no-store`, so a failed
//! transform never poisons a cache.

use super::sources::Fetched;
use super::Body;
use crate::error::ApiError;
use crate::transform::{Output, Pool, TransformError};
use bytes::{Bytes, BytesMut};
use filters::{Mode, TransformSpec};
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, Full};
use sha2::Digest;
use std::path::PathBuf;
use std::time::Instant;

/// Limits and engine options of the transform step.
#[derive(Clone)]
pub struct TransformLimits {
    /// Largest original read into memory for an image transform.
    pub max_image_bytes: u64,
    /// Largest original streamed to disk for a video transform.
    pub max_video_bytes: u64,
    pub temp_dir: PathBuf,
    /// Where HLS packages are kept, and for how long.
    pub hls_dir: PathBuf,
    pub hls_retention: std::time::Duration,
}

pub struct Transformer {
    pub pool: Pool,
    pub limits: TransformLimits,
    /// One package build per HLS key at a time.
    pub hls_locks: parking_lot::Mutex<
        std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>,
    >,
    /// Background AVIF encodes for negotiated `format=auto`.
    pub avif: std::sync::Arc<AvifBackground>,
    #[cfg(feature = "image-engine")]
    pub image: crate::transform::image::ImageOptions,
    #[cfg(feature = "video-engine")]
    pub video: crate::transform::video::VideoOptions,
}

/// How the original reaches the transform.
pub enum SourceInput {
    /// A whole-object answer to read (images into memory, videos into a temp file).
    Stream(Fetched),
    /// A video as a 206 answer to a first-block range request: the rest is read by ranges.
    Ranged {
        fetched: Fetched,
        source: std::sync::Arc<dyn super::sources::Source>,
        path: String,
    },
    /// A video in a local folder, read in place (the answer to a HEAD gives the headers).
    Local(Fetched, PathBuf),
}

impl SourceInput {
    fn fetched(&self) -> &Fetched {
        match self {
            SourceInput::Stream(f) | SourceInput::Local(f, _) => f,
            SourceInput::Ranged { fetched, .. } => fetched,
        }
    }
}

/// A transform's result: bytes, or a finished file streamed out and removed after.
enum Produced {
    Memory(Output),
    File {
        path: PathBuf,
        /// Removes the file after the response when it was scratch output.
        guard: Option<TempFile>,
        len: u64,
        etag: String,
        meta: Output,
    },
}

/// What the request is about, for headers and tags.
pub struct Job<'a> {
    pub origin: &'a str,
    pub path: &'a str,
    pub spec: TransformSpec,
    /// Set when the edge negotiated AVIF: the format to answer with while it is encoded.
    pub avif_fallback: Option<filters::Format>,
}

/// Where an AVIF encoded in the background waits for the next request of its key.
enum AvifState {
    Pending,
    Ready(Output),
    Failed,
}

/// Background AVIF encodes (one per key at a time) and their results, bounded in bytes.
pub struct AvifBackground {
    inner: parking_lot::Mutex<AvifInner>,
    /// `max-age` of the stand-in answer.
    pub pending_max_age: std::time::Duration,
}

#[derive(Default)]
struct AvifInner {
    states: std::collections::HashMap<String, AvifState>,
    order: std::collections::VecDeque<String>,
    bytes: usize,
}

/// Bytes of finished AVIFs kept waiting for their next request.
const AVIF_READY_BUDGET: usize = 64 << 20;
/// Keys remembered (pending, ready or failed).
const AVIF_MAX_KEYS: usize = 10_000;

/// What to do with a negotiated AVIF request.
enum AvifDecision {
    /// The AVIF is ready: serve it.
    Ready(Output),
    /// Encoding failed before: serve the fallback with normal caching.
    Failed,
    /// Serve the stand-in; `start` says whether this request starts the encode.
    Wait { start: bool },
}

impl AvifBackground {
    pub fn new(pending_max_age: std::time::Duration) -> AvifBackground {
        AvifBackground {
            inner: Default::default(),
            pending_max_age,
        }
    }

    fn decide(&self, key: &str) -> AvifDecision {
        let mut g = self.inner.lock();
        match g.states.get(key) {
            Some(AvifState::Pending) => AvifDecision::Wait { start: false },
            Some(AvifState::Failed) => AvifDecision::Failed,
            Some(AvifState::Ready(_)) => match g.states.remove(key) {
                Some(AvifState::Ready(out)) => {
                    g.bytes -= out.body.len();
                    g.order.retain(|k| k != key);
                    AvifDecision::Ready(out)
                }
                _ => AvifDecision::Wait { start: false },
            },
            None => {
                g.states.insert(key.to_string(), AvifState::Pending);
                g.order.push_back(key.to_string());
                AvifDecision::Wait { start: true }
            }
        }
    }

    fn finish(&self, key: String, result: Result<Output, TransformError>) {
        let mut g = self.inner.lock();
        let state = match result {
            Ok(out) => {
                g.bytes += out.body.len();
                AvifState::Ready(out)
            }
            Err(e) => {
                tracing::info!(key = %key, error = %e, "background AVIF failed");
                AvifState::Failed
            }
        };
        if !g.states.contains_key(&key) {
            g.order.push_back(key.clone());
        }
        g.states.insert(key, state);
        while g.bytes > AVIF_READY_BUDGET || g.order.len() > AVIF_MAX_KEYS {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if let Some(AvifState::Ready(out)) = g.states.remove(&old) {
                g.bytes -= out.body.len();
            }
        }
    }
}

const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mov", "webm", "mkv", "avi", "ts", "mpg", "mpeg", "3gp", "ogv",
];

/// Whether the request is for the video engine before anything is fetched (mode or file
/// extension), so the original can be read by ranges or in place.
pub fn video_intent(path: &str, spec: &TransformSpec) -> bool {
    is_video(path, None, spec)
}

fn is_video(path: &str, content_type: Option<&str>, spec: &TransformSpec) -> bool {
    if matches!(
        spec.mode,
        Mode::Video | Mode::Frame | Mode::Spritesheet | Mode::Audio | Mode::Hls
    ) {
        return true;
    }
    if content_type.is_some_and(|c| c.starts_with("video/") || c.starts_with("audio/")) {
        return true;
    }
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    VIDEO_EXTENSIONS.contains(&ext.as_str())
}

/// Bytes read from the start of a body to tell what it is (an MPEG-TS needs 189).
const SNIFF_BYTES: usize = 512;

/// Whether a body's first bytes are an audio/video container (the video engine's input) and
/// not an image: ISO BMFF with a non-image brand, QuickTime without `ftyp`, Matroska/WebM,
/// AVI, WAVE, Ogg, FLV, FLAC, MP3 with ID3, MPEG-PS and MPEG-TS.
fn sniff_av(b: &[u8]) -> bool {
    let at = |i: usize, m: &[u8]| b.len() >= i + m.len() && &b[i..i + m.len()] == m;
    if at(4, b"ftyp") {
        let brand = b.get(8..12).unwrap_or(b"");
        let image_brands: [&[u8]; 10] = [
            b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1",
            b"msf1",
        ];
        return !image_brands.contains(&brand);
    }
    let riff = |kind: &[u8]| at(0, b"RIFF") && at(8, kind);
    [b"moov".as_slice(), b"mdat", b"wide", b"free"]
        .iter()
        .any(|m| at(4, m))
        || at(0, &[0x1A, 0x45, 0xDF, 0xA3])
        || riff(b"AVI ")
        || riff(b"WAVE")
        || at(0, b"OggS")
        || at(0, b"FLV\x01")
        || at(0, b"fLaC")
        || at(0, b"ID3")
        || at(0, &[0x00, 0x00, 0x01, 0xBA])
        || (b.len() > 376 && b[0] == 0x47 && b[188] == 0x47 && b[376] == 0x47)
}

/// Whether a body's first bytes are an image the image engine decodes.
fn sniff_image(b: &[u8]) -> bool {
    #[cfg(feature = "image-engine")]
    return crate::transform::image::sniff(b).is_some();
    #[cfg(not(feature = "image-engine"))]
    return {
        let _ = b;
        false
    };
}

/// Reads the first bytes of a body without consuming them: the body is given back whole.
async fn peek(mut f: Fetched) -> Result<(Fetched, Bytes), ApiError> {
    let Some(mut body) = f.body.take() else {
        return Ok((f, Bytes::new()));
    };
    let mut head = BytesMut::new();
    let mut chunks = Vec::new();
    while head.len() < SNIFF_BYTES {
        match body.next().await {
            Some(chunk) => {
                let chunk = chunk.map_err(|e| super::sources::external::stream_error(&e))?;
                head.extend_from_slice(&chunk);
                chunks.push(Ok(chunk));
            }
            None => break,
        }
    }
    f.body = Some(Box::pin(futures::stream::iter(chunks).chain(body)));
    Ok((f, head.freeze()))
}

/// The image spec for a frame of a still image: the image itself, held to the thumbnail box
/// like a video frame (1920×1080, never upscaled when no size is given).
fn still_frame_spec(frame: &TransformSpec) -> TransformSpec {
    use filters::content::{THUMB_MAX_HEIGHT as BH, THUMB_MAX_WIDTH as BW};
    use filters::Fit;
    let mut spec = frame.clone();
    spec.mode = Mode::Image;
    spec.time_ms = None;
    spec.width = spec.width.map(|w| w.min(BW));
    spec.height = spec.height.map(|h| h.min(BH));
    let bounding = matches!(spec.fit, None | Some(Fit::ScaleDown) | Some(Fit::Contain));
    // No size: the whole box. One side given (a bounding fit): the other bounded by the box.
    if (spec.width.is_none() && spec.height.is_none())
        || (bounding && (spec.width.is_none() || spec.height.is_none()))
    {
        spec.fit = Some(spec.fit.unwrap_or(Fit::ScaleDown));
        spec.width = spec.width.or(Some(BW));
        spec.height = spec.height.or(Some(BH));
    }
    spec
}

/// A temp file removed when dropped.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn read_to_memory(fetched: Fetched, max: u64) -> Result<Bytes, ApiError> {
    if let Some(len) = fetched
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        if len > max {
            return Err(too_large(len, max));
        }
    }
    let Some(mut body) = fetched.body else {
        return Ok(Bytes::new());
    };
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| super::sources::external::stream_error(&e))?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(too_large(buf.len() as u64 + chunk.len() as u64, max));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg_attr(not(feature = "video-engine"), allow(dead_code))]
async fn stream_to_file(
    fetched: Fetched,
    max: u64,
    dir: &std::path::Path,
) -> Result<TempFile, ApiError> {
    use tokio::io::AsyncWriteExt;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ApiError::internal(format!("temp dir: {e}")))?;
    let tmp = TempFile(dir.join(format!("src-{}", uuid::Uuid::new_v4().simple())));
    let mut file = tokio::fs::File::create(&tmp.0)
        .await
        .map_err(|e| ApiError::internal(format!("temp file: {e}")))?;
    let mut written = 0u64;
    if let Some(mut body) = fetched.body {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| super::sources::external::stream_error(&e))?;
            written += chunk.len() as u64;
            if written > max {
                return Err(too_large(written, max));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| ApiError::internal(format!("temp file: {e}")))?;
        }
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal(format!("temp file: {e}")))?;
    Ok(tmp)
}

/// Which version of a source object an answer came from (validators and size), for keys
/// of work derived from it (background AVIF, HLS packages).
fn source_version(f: &Fetched) -> String {
    let size = f
        .header("content-range")
        .and_then(super::ranged::content_range_total)
        .map(|n| n.to_string());
    let size = size.as_deref().or(f.header("content-length"));
    [f.header("etag"), f.header("last-modified"), size]
        .map(|v| v.unwrap_or("-"))
        .join("|")
}

/// Budget of one range request of a video source.
#[cfg_attr(not(feature = "video-engine"), allow(dead_code))]
const RANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Length and `ETag` (SHA-256 prefix, as for in-memory outputs) of a finished output file.
#[cfg_attr(not(feature = "video-engine"), allow(dead_code))]
fn hash_file(path: &std::path::Path) -> Result<(u64, String), TransformError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| TransformError::Internal(format!("reading output: {e}")))?;
    let mut h = sha2::Sha256::new();
    let len = std::io::copy(&mut f, &mut h)
        .map_err(|e| TransformError::Internal(format!("reading output: {e}")))?;
    Ok((len, format!("\"{}\"", hex::encode(&h.finalize()[..16]))))
}

/// The package's playlist with each segment file name replaced by its URL on the source's
/// path (relative, so it works behind any prefix): `clip.mp4?mode=hls&segment=3`.
fn rewrite_playlist(text: &str, base: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let l = line.trim();
        let seg = l
            .strip_prefix("segment_")
            .and_then(|r| r.strip_suffix(".ts"))
            .and_then(|n| n.parse::<u32>().ok());
        match seg {
            Some(n) if !l.starts_with('#') => {
                out.push_str(&format!("{base}?mode=hls&segment={n}"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Removes HLS packages (and abandoned scratch directories) older than `retention`.
#[cfg_attr(not(feature = "video-engine"), allow(dead_code))]
fn sweep_hls(root: &std::path::Path, retention: std::time::Duration) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > retention);
        if old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn too_large(len: u64, max: u64) -> ApiError {
    ApiError::new(
        413,
        "PAYLOAD_TOO_LARGE",
        format!("source of {len} bytes is over the limit of {max} bytes"),
    )
}

fn err(e: TransformError) -> ApiError {
    e.to_api()
}

impl Transformer {
    /// Runs the transform for `job` on the fetched original.
    pub async fn run(&self, job: Job<'_>, input: SourceInput) -> Result<Response<Body>, ApiError> {
        let started = Instant::now();
        if job.spec.needs_async() {
            return Err(ApiError::bad_request(
                "this clip is over the synchronous limit (duration over 60s or a slow codec); shorten it",
            ));
        }
        let fetched = input.fetched();
        let source_cc = fetched.header("cache-control").map(str::to_string);
        let source_lm = fetched.header("last-modified").map(str::to_string);
        let mut video = is_video(job.path, fetched.header("content-type"), &job.spec);
        // The bytes decide when the name and type do not (content-addressed objects have
        // neither): a video behind an image-looking request goes to the video engine, and a
        // frame of a still image is the image itself.
        let input = match input {
            SourceInput::Stream(f) if !video => {
                let (f, head) = peek(f).await?;
                video = !sniff_image(&head) && sniff_av(&head);
                SourceInput::Stream(f)
            }
            input if job.spec.mode == Mode::Frame => match self.still_image(input).await? {
                Ok(bytes) => {
                    let spec = still_frame_spec(&job.spec);
                    let out = self.image_bytes(&spec, bytes).await?;
                    return self
                        .respond(
                            &job,
                            started,
                            Produced::Memory(out),
                            "image",
                            source_cc,
                            source_lm,
                        )
                        .await;
                }
                Err(input) => input,
            },
            input => input,
        };
        // An image transform of a video is refused before any of the video is read.
        if video && job.spec.mode == Mode::Image && job.spec.format != Some(filters::Format::Json) {
            return Err(ApiError::bad_request(
                "the source is a video: ask for mode=frame, spritesheet, video, audio or hls",
            ));
        }
        let (produced, engine) = match input {
            SourceInput::Stream(fetched) if !video => (
                Produced::Memory(self.run_image(&job, fetched).await?),
                "image",
            ),
            input => (self.run_video(&job, input).await?, "video"),
        };
        self.respond(&job, started, produced, engine, source_cc, source_lm)
            .await
    }

    /// The response of a finished transform: output headers, tags and the body (bytes, or
    /// a file streamed out).
    async fn respond(
        &self,
        job: &Job<'_>,
        started: Instant,
        produced: Produced,
        engine: &'static str,
        source_cc: Option<String>,
        source_lm: Option<String>,
    ) -> Result<Response<Body>, ApiError> {
        let (out, len, etag, file) = match produced {
            Produced::Memory(out) => {
                let digest = sha2::Sha256::digest(&out.body);
                let etag = format!("\"{}\"", hex::encode(&digest[..16]));
                let len = out.body.len() as u64;
                (out, len, etag, None)
            }
            Produced::File {
                path,
                guard,
                len,
                etag,
                meta,
            } => (meta, len, etag, Some((path, guard))),
        };
        let mut tags = vec![
            format!("origin:{}", job.origin),
            format!("mode:{}", job.spec.mode.as_str()),
            format!("path:{}", job.path),
        ];
        if let Some(d) = &job.spec.derivative {
            tags.push(format!("derivative:{d}"));
        }
        let mut b = Response::builder()
            .status(200)
            .header("content-type", out.content_type)
            .header("content-length", len)
            .header("etag", etag)
            .header("cache-tag", tags.join(","))
            .header("x-transform-source", engine)
            .header(
                "x-processing-time-ms",
                started.elapsed().as_millis().to_string(),
            )
            .header(super::HDR_ORIGIN, job.origin);
        if out.width > 0 {
            b = b
                .header("x-resolved-width", out.width.to_string())
                .header("x-resolved-height", out.height.to_string());
        }
        let own_cc = out
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("cache-control"));
        if let Some(cc) = source_cc.filter(|_| !own_cc) {
            b = b.header("cache-control", cc);
        }
        if let Some(lm) = source_lm {
            b = b.header("last-modified", lm);
        }
        for (k, v) in &out.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let body = match file {
            None => Full::new(out.body).map_err(|never| match never {}).boxed(),
            Some((path, guard)) => {
                let f = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| ApiError::internal(format!("transform output: {e}")))?;
                // The guard lives as long as the stream: the file goes when the body is done.
                let stream =
                    tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).map(move |chunk| {
                        let _keep = &guard;
                        chunk.map(hyper::body::Frame::data)
                    });
                BodyExt::boxed(http_body_util::StreamBody::new(stream))
            }
        };
        b.body(body)
            .map_err(|e| ApiError::internal(format!("response: {e}")))
    }

    /// The whole original when a video-looking request (`mode=frame`) names a still image,
    /// else the input given back untouched.
    async fn still_image(
        &self,
        input: SourceInput,
    ) -> Result<Result<Bytes, SourceInput>, ApiError> {
        let max = self.limits.max_image_bytes;
        match input {
            SourceInput::Stream(f) => {
                let (f, head) = peek(f).await?;
                if !sniff_image(&head) {
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
                if !sniff_image(&head[..n]) {
                    return Ok(Err(SourceInput::Local(f, path)));
                }
                let len = tokio::fs::metadata(&path)
                    .await
                    .map(|m| m.len())
                    .unwrap_or(0);
                if len > max {
                    return Err(too_large(len, max));
                }
                let bytes = tokio::fs::read(&path)
                    .await
                    .map_err(|e| ApiError::internal(format!("reading the source: {e}")))?;
                Ok(Ok(Bytes::from(bytes)))
            }
            SourceInput::Ranged {
                fetched,
                source,
                path,
            } => {
                let (fetched, head) = peek(fetched).await?;
                if !sniff_image(&head) {
                    return Ok(Err(SourceInput::Ranged {
                        fetched,
                        source,
                        path,
                    }));
                }
                let size = fetched
                    .header("content-range")
                    .and_then(super::ranged::content_range_total)
                    .unwrap_or(u64::MAX);
                if size > max {
                    return Err(too_large(size, max));
                }
                if size <= super::ranged::BLOCK {
                    return read_to_memory(fetched, max).await.map(Ok);
                }
                drop(fetched);
                let whole = source
                    .fetch(&super::sources::FetchRequest {
                        path,
                        range: None,
                        if_none_match: None,
                        if_modified_since: None,
                        head: false,
                    })
                    .await
                    .map_err(|e| ApiError::origin_error(format!("reading the source: {e}")))?;
                read_to_memory(whole, max).await.map(Ok)
            }
        }
    }

    async fn run_image(&self, job: &Job<'_>, fetched: Fetched) -> Result<Output, ApiError> {
        let version = source_version(&fetched);
        let bytes = read_to_memory(fetched, self.limits.max_image_bytes).await?;
        match (job.avif_fallback, job.spec.format) {
            (Some(fallback), Some(filters::Format::Avif)) => {
                let key = format!(
                    "{}\n{}\n{}\n{version}",
                    job.origin,
                    job.path,
                    job.spec.to_canonical_query()
                );
                self.avif_or_stand_in(key, &job.spec, fallback, bytes).await
            }
            _ => self.image_bytes(&job.spec, bytes).await,
        }
    }

    /// A negotiated AVIF: the finished one when a background encode made it, else the
    /// client's next-best format marked short-lived while the AVIF is encoded once.
    async fn avif_or_stand_in(
        &self,
        key: String,
        spec: &TransformSpec,
        fallback: filters::Format,
        bytes: Bytes,
    ) -> Result<Output, ApiError> {
        let mut stand_in = spec.clone();
        stand_in.format = Some(fallback);
        match self.avif.decide(&key) {
            AvifDecision::Ready(out) => return Ok(out),
            AvifDecision::Failed => return self.image_bytes(&stand_in, bytes).await,
            AvifDecision::Wait { start: false } => {}
            AvifDecision::Wait { start: true } => self.start_avif(key, spec, bytes.clone()),
        }
        let mut out = self.image_bytes(&stand_in, bytes).await?;
        out.headers.push((
            "cache-control".into(),
            format!("public, max-age={}", self.avif.pending_max_age.as_secs()),
        ));
        out.headers.push(("x-avif".into(), "pending".into()));
        Ok(out)
    }

    #[cfg(feature = "image-engine")]
    fn start_avif(&self, key: String, spec: &TransformSpec, bytes: Bytes) {
        let (pool, opts, avif, spec) = (
            self.pool.clone(),
            self.image.clone(),
            self.avif.clone(),
            spec.clone(),
        );
        tokio::spawn(async move {
            let r = pool
                .run(move || crate::transform::image::transform(&bytes, &spec, &opts))
                .await;
            avif.finish(key, r);
        });
    }

    #[cfg(not(feature = "image-engine"))]
    fn start_avif(&self, key: String, _spec: &TransformSpec, _bytes: Bytes) {
        self.avif.finish(
            key,
            Err(TransformError::Unsupported(
                "this build has no image engine".into(),
            )),
        );
    }

    #[cfg(feature = "image-engine")]
    async fn image_bytes(&self, spec: &TransformSpec, bytes: Bytes) -> Result<Output, ApiError> {
        use crate::transform::image;
        let opts = self.image.clone();
        let spec = spec.clone();
        self.pool
            .run(move || {
                if spec.format == Some(filters::Format::Json) {
                    let v = image::metadata_json(&bytes, &opts)?;
                    let body = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
                    return Ok(Output {
                        body,
                        content_type: "application/json",
                        width: 0,
                        height: 0,
                        headers: vec![],
                    });
                }
                image::transform(&bytes, &spec, &opts)
            })
            .await
            .map_err(err)
    }

    #[cfg(not(feature = "image-engine"))]
    async fn image_bytes(&self, _spec: &TransformSpec, _bytes: Bytes) -> Result<Output, ApiError> {
        Err(err(TransformError::Unsupported(
            "this build has no image engine".into(),
        )))
    }

    #[cfg(feature = "video-engine")]
    async fn run_video(&self, job: &Job<'_>, input: SourceInput) -> Result<Produced, ApiError> {
        use crate::transform::video::{self, Media};
        let version = source_version(input.fetched());
        let (media, src_guard) = match input {
            SourceInput::Local(_, path) => (Media::File(path), None),
            SourceInput::Ranged {
                fetched,
                source,
                path,
            } => {
                let size = fetched
                    .header("content-range")
                    .and_then(super::ranged::content_range_total)
                    .ok_or_else(|| {
                        ApiError::origin_error("the source gave no object size for a range")
                    })?;
                if size > self.limits.max_video_bytes {
                    return Err(too_large(size, self.limits.max_video_bytes));
                }
                let first = read_to_memory(fetched, super::ranged::BLOCK).await?;
                let reader = super::ranged::SourceReader::new(
                    source,
                    path,
                    size,
                    first,
                    tokio::runtime::Handle::current(),
                    RANGE_TIMEOUT,
                );
                (Media::Ranged(std::sync::Arc::new(reader)), None)
            }
            SourceInput::Stream(fetched) => {
                let tmp =
                    stream_to_file(fetched, self.limits.max_video_bytes, &self.limits.temp_dir)
                        .await?;
                (Media::File(tmp.0.clone()), Some(tmp))
            }
        };
        if job.spec.mode == Mode::Hls {
            return self.run_hls(job, media, src_guard, version).await;
        }
        let opts = self.video.clone();
        let spec = job.spec.clone();
        let out_path = self
            .limits
            .temp_dir
            .join(format!("out-{}", uuid::Uuid::new_v4().simple()));
        self.pool
            .run(move || {
                let _src = src_guard;
                let json = spec.format == Some(filters::Format::Json);
                let output = match spec.mode {
                    _ if json => {
                        let p = video::probe(&media)?;
                        let body = Bytes::from(serde_json::to_vec(&p).unwrap_or_default());
                        Produced::Memory(Output {
                            body,
                            content_type: "application/json",
                            width: 0,
                            height: 0,
                            headers: vec![],
                        })
                    }
                    Mode::Frame => Produced::Memory(video::frame(&media, &spec, &opts)?),
                    Mode::Spritesheet => {
                        Produced::Memory(video::spritesheet(&media, &spec, &opts)?)
                    }
                    Mode::Audio | Mode::Video => {
                        let guard = TempFile(out_path);
                        let f = if spec.mode == Mode::Audio {
                            video::audio(&media, &spec, &opts, &guard.0, &|_| {})?
                        } else {
                            video::transcode(&media, &spec, &opts, &guard.0, &|_| {})?
                        };
                        let guard = if f.path == guard.0 {
                            guard
                        } else {
                            TempFile(f.path.clone())
                        };
                        let (len, etag) = hash_file(&guard.0)?;
                        Produced::File {
                            path: guard.0.clone(),
                            guard: Some(guard),
                            len,
                            etag,
                            meta: Output {
                                body: Bytes::new(),
                                content_type: f.content_type,
                                width: f.width,
                                height: f.height,
                                headers: vec![(
                                    "X-Source-Bytes-Read".to_string(),
                                    f.bytes_read.to_string(),
                                )],
                            },
                        }
                    }
                    other => {
                        return Err(TransformError::BadRequest(format!(
                            "mode {} does not apply to a video source",
                            other.as_str()
                        )))
                    }
                };
                Ok(output)
            })
            .await
            .map_err(err)
    }

    /// `mode=hls`: the package is made once per source version (coalesced, written to a
    /// scratch directory and renamed into place, so a crash never leaves half a package),
    /// kept under `{data_dir}/hls` for `hls_retention`, and served part by part: the
    /// playlist (segment URIs rewritten to `?mode=hls&segment=N` on the same path), a
    /// segment, or the poster.
    #[cfg(feature = "video-engine")]
    async fn run_hls(
        &self,
        job: &Job<'_>,
        media: crate::transform::video::Media,
        src_guard: Option<TempFile>,
        version: String,
    ) -> Result<Produced, ApiError> {
        use crate::transform::video;
        let key = {
            let mut h = sha2::Sha256::new();
            h.update(job.origin.as_bytes());
            h.update([0]);
            h.update(job.path.as_bytes());
            h.update([0]);
            h.update(version.as_bytes());
            hex::encode(&h.finalize()[..16])
        };
        let root = self.limits.hls_dir.clone();
        let dir = root.join(&key);
        let lock = {
            let mut locks = self.hls_locks.lock();
            locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
            locks.entry(key.clone()).or_default().clone()
        };
        let _held = lock.lock().await;
        if !dir.join("index.m3u8").is_file() {
            let opts = self.video.clone();
            let scratch = root.join(format!(".{key}-{}", uuid::Uuid::new_v4().simple()));
            let retention = self.limits.hls_retention;
            self.pool
                .run(move || {
                    let _src = src_guard;
                    sweep_hls(&root, retention);
                    let made = video::hls(&media, &opts, &scratch, &|_| {});
                    let made = made.and_then(|_| {
                        std::fs::rename(&scratch, &dir).map_err(|e| {
                            TransformError::Internal(format!("storing the HLS package: {e}"))
                        })
                    });
                    if made.is_err() {
                        let _ = std::fs::remove_dir_all(&scratch);
                    }
                    made
                })
                .await
                .map_err(err)?;
        } else {
            drop(src_guard);
        }
        drop(_held);
        let dir = self.limits.hls_dir.join(&key);
        let (path, content_type) = match job.spec.segment.as_deref() {
            None => {
                let text = tokio::fs::read_to_string(dir.join("index.m3u8"))
                    .await
                    .map_err(|e| ApiError::internal(format!("HLS playlist: {e}")))?;
                let base = job.path.rsplit('/').next().unwrap_or("");
                let body = Bytes::from(rewrite_playlist(&text, base));
                return Ok(Produced::Memory(Output {
                    body,
                    content_type: "application/vnd.apple.mpegurl",
                    width: 0,
                    height: 0,
                    headers: vec![],
                }));
            }
            Some("poster") => (dir.join("poster.jpg"), "image/jpeg"),
            Some(n) => {
                let n: u32 = n
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("bad segment {n:?}")))?;
                (dir.join(format!("segment_{n:03}.ts")), "video/mp2t")
            }
        };
        if !path.is_file() {
            return Err(ApiError::not_found(format!(
                "{} has no HLS segment {}",
                job.path,
                job.spec.segment.as_deref().unwrap_or("")
            )));
        }
        let hashed = path.clone();
        let (len, etag) = self
            .pool
            .run(move || hash_file(&hashed))
            .await
            .map_err(err)?;
        Ok(Produced::File {
            path,
            guard: None,
            len,
            etag,
            meta: Output {
                body: Bytes::new(),
                content_type,
                width: 0,
                height: 0,
                headers: vec![],
            },
        })
    }

    #[cfg(not(feature = "video-engine"))]
    async fn run_video(&self, _job: &Job<'_>, _input: SourceInput) -> Result<Produced, ApiError> {
        Err(err(TransformError::Unsupported(
            "this build has no video engine".into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_detection() {
        let spec = TransformSpec::new(Mode::Image);
        assert!(is_video("/a/b.MP4", None, &spec));
        assert!(is_video("/a/b", Some("video/webm"), &spec));
        assert!(!is_video("/a/b.jpg", Some("image/jpeg"), &spec));
        assert!(is_video("/a/b.jpg", None, &TransformSpec::new(Mode::Frame)));
    }

    #[test]
    fn containers_are_told_from_images_by_bytes() {
        let ftyp = |brand: &[u8]| [&[0, 0, 0, 0x20][..], b"ftyp", brand, &[0; 8]].concat();
        assert!(sniff_av(&ftyp(b"isom")));
        assert!(sniff_av(&ftyp(b"qt  ")));
        assert!(!sniff_av(&ftyp(b"avif")));
        assert!(!sniff_av(&ftyp(b"heic")));
        assert!(sniff_av(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F]));
        assert!(sniff_av(b"RIFF\0\0\0\0AVI LIST"));
        assert!(!sniff_av(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(sniff_av(b"OggS\0\x02"));
        let mut ts = vec![0u8; 400];
        ts[0] = 0x47;
        ts[188] = 0x47;
        ts[376] = 0x47;
        assert!(sniff_av(&ts));
        // A GIF starts with 0x47 too, and may have it at 188: not a transport stream.
        let mut gif = b"GIF89a".to_vec();
        gif.resize(400, 0);
        gif[188] = 0x47;
        assert!(!sniff_av(&gif));
        assert!(!sniff_av(&[0xFF, 0xD8, 0xFF, 0xE0]));
        assert!(!sniff_av(b"\x89PNG\r\n\x1a\n"));
        assert!(!sniff_av(b""));
    }

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
}
