//! The origin service's transform step: a fetched original plus a `TransformSpec` become a
//! response. This file owns choosing the engine (from the mode, the name, the type and, when
//! those say nothing, the bytes), the order of the checks, and the headers of a transformed
//! answer (`ETag` = hash of the output, `X-Resolved-*`, `X-Processing-Time-Ms`,
//! `X-Transform-Source`, `Cache-Tag`). Its rooms: `body` (reading the source within limits:
//! images into memory up to `max_image_bytes`, videos into a temp file that is always
//! removed), `image` and `video` (running each engine on the bounded pool), `avif_background`
//! (negotiated AVIF encoded once, in the background), `hls` (packages made once, served part
//! by part). Failures are JSON errors the caller marks `no-store`, so a failed transform
//! never poisons a cache; nothing here caches or fetches beyond the source it was handed.

mod avif_background;
mod body;
#[cfg(feature = "video-engine")]
mod hls;
mod image;
mod keep;
mod video;

pub use avif_background::AvifBackground;
pub(crate) use body::source_version;
#[cfg(feature = "image-engine")]
pub(crate) use image::{image_options, sandbox_for};

use super::sources::Fetched;
use super::Body;
use crate::error::ApiError;
use crate::transform::tempfile::TempFile;
use crate::transform::{sniff, Output, Pool, TransformError};
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
    /// The worker processes image work runs in (`transform.isolate`); `None`: in-process.
    #[cfg(feature = "image-engine")]
    pub sandbox: Option<std::sync::Arc<crate::transform::sandbox::Sandbox>>,
    #[cfg(feature = "video-engine")]
    pub video: crate::transform::video::VideoOptions,
    /// Where finished transforms are kept (`Job::store_key` says under which key).
    pub store: Option<std::sync::Arc<crate::store::Store>>,
    /// Past these a video request becomes a job (when `Job::may_defer`).
    pub sync: SyncLimits,
}

/// The limits of synchronous video work (`[jobs]`).
#[derive(Clone, Debug)]
pub struct SyncLimits {
    pub max_bytes: u64,
    pub max_duration: std::time::Duration,
    pub slow_codec_max_duration: std::time::Duration,
    /// Encoded frame pixels of a video output (`video::work_pixels`).
    pub max_frame_pixels: u64,
}

/// What the transform step made of a request.
pub enum Outcome {
    Done(Response<Body>),
    /// Too big to do while the client waits: run it as a job (the reason says why).
    Defer(String),
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
    pub fn fetched(&self) -> &Fetched {
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
    /// Over the synchronous limits: the request becomes a job.
    Deferred(String),
}

/// What the request is about, for headers and tags.
pub struct Job<'a> {
    pub origin: &'a str,
    pub path: &'a str,
    pub spec: TransformSpec,
    /// Set when the edge negotiated AVIF: the format to answer with while it is encoded.
    pub avif_fallback: Option<filters::Format>,
    /// Who the work is for: the pool caps each client's share of the workers
    /// ([`crate::transform::pool::BACKGROUND`] for a job worker).
    pub client: String,
    /// The origin's own enlargement limit (`[[origins]] max_upscale_area`).
    pub max_upscale_area: Option<f64>,
    /// The key the result is kept under in the store (`None`: not kept).
    pub store_key: Option<String>,
    /// Keep the result before answering (a job worker), not in the background.
    pub keep_before_answer: bool,
    /// Whether a request over the synchronous limits may become a job (not inside one).
    pub may_defer: bool,
    /// Where the encoder's percent goes (a job's progress).
    pub progress: Option<std::sync::Arc<crate::jobs::Progress>>,
}

impl Job<'_> {
    /// The encoder's progress callback for this job.
    pub fn progress_fn(&self) -> impl Fn(f32) + Send + Sync + 'static {
        let p = self.progress.clone();
        move |pct| {
            if let Some(p) = &p {
                p.set(pct)
            }
        }
    }
}

/// What the answer keeps of the source's answer, and when the work started.
struct Source {
    started: Instant,
    cache_control: Option<String>,
    last_modified: Option<String>,
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

fn err(e: TransformError) -> ApiError {
    e.to_api()
}

impl Transformer {
    /// Runs the transform for `job` on the fetched original.
    pub async fn run(&self, job: Job<'_>, input: SourceInput) -> Result<Outcome, ApiError> {
        let started = Instant::now();
        let fetched = input.fetched();
        let source = Source {
            started,
            cache_control: fetched.header("cache-control").map(str::to_string),
            last_modified: fetched.header("last-modified").map(str::to_string),
        };
        let mut video = is_video(job.path, fetched.header("content-type"), &job.spec);
        // The bytes decide when the name and type do not (content-addressed objects have
        // neither): a video behind an image-looking request goes to the video engine, and a
        // frame of a still image is the image itself.
        let input = match input {
            SourceInput::Stream(f) if !video => {
                let (f, head) = body::peek(f).await?;
                video = sniff::is_audio_video(&head);
                SourceInput::Stream(f)
            }
            input if job.spec.mode == Mode::Frame => {
                match body::still_image(input, self.limits.max_image_bytes).await? {
                    Ok(bytes) => {
                        let spec = still_frame_spec(&job.spec);
                        let out = self.image_bytes(&job, &spec, bytes).await?;
                        return self
                            .respond(&job, &source, Produced::Memory(out), "image")
                            .await
                            .map(Outcome::Done);
                    }
                    Err(input) => input,
                }
            }
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
        if let Produced::Deferred(reason) = produced {
            return Ok(Outcome::Defer(reason));
        }
        self.respond(&job, &source, produced, engine)
            .await
            .map(Outcome::Done)
    }

    /// The response of a finished transform: output headers, tags and the body (bytes, or
    /// a file streamed out).
    async fn respond(
        &self,
        job: &Job<'_>,
        source: &Source,
        produced: Produced,
        engine: &'static str,
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
            Produced::Deferred(reason) => {
                return Err(ApiError::internal(format!(
                    "deferred work answered: {reason}"
                )))
            }
        };
        let mut tags = vec![
            format!("origin:{}", job.origin),
            format!("mode:{}", job.spec.mode.as_str()),
            format!("path:{}", job.path),
        ];
        if let Some(d) = &job.spec.derivative {
            tags.push(format!("derivative:{d}"));
        }
        // The headers that belong to the output, kept with it in the store.
        let mut kept: Vec<(String, String)> = vec![
            ("etag".into(), etag.clone()),
            ("cache-tag".into(), tags.join(",")),
            ("x-transform-source".into(), engine.into()),
            (super::HDR_ORIGIN.into(), job.origin.into()),
        ];
        if out.width > 0 {
            kept.push(("x-resolved-width".into(), out.width.to_string()));
            kept.push(("x-resolved-height".into(), out.height.to_string()));
        }
        kept.push((
            "cf-resized".into(),
            cf_resized(&job.spec, source.started.elapsed()),
        ));
        for (k, v) in &out.headers {
            kept.push((k.to_ascii_lowercase(), v.clone()));
        }
        let own_cc = out
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("cache-control"));
        let store_state = self
            .keep(
                job,
                &out,
                &kept,
                len,
                file.as_ref().map(|(p, _)| p.as_path()),
            )
            .await?;
        let mut b = Response::builder()
            .status(200)
            .header("content-type", out.content_type)
            .header("content-length", len)
            .header(
                "x-processing-time-ms",
                source.started.elapsed().as_millis().to_string(),
            );
        for (k, v) in &kept {
            b = b.header(k.as_str(), v.as_str());
        }
        if let Some(state) = store_state {
            b = b.header("x-store", state);
        }
        if let Some(cc) = source.cache_control.as_deref().filter(|_| !own_cc) {
            b = b.header("cache-control", cc);
        }
        if let Some(lm) = source.last_modified.as_deref() {
            b = b.header("last-modified", lm);
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
}

/// Cloudflare's `Cf-Resized` on a transform that succeeded: `internal=ok/-`, the quality the
/// encoder was given (`q=`, 0 for outputs without one) and the milliseconds it took (`n=`).
fn cf_resized(spec: &filters::TransformSpec, took: std::time::Duration) -> String {
    let lossy = matches!(
        spec.mode,
        filters::Mode::Image | filters::Mode::Frame | filters::Mode::Spritesheet
    ) && !matches!(
        spec.format,
        Some(filters::Format::Png | filters::Format::Gif | filters::Format::Json)
    );
    let q = if lossy {
        spec.quality
            .and_then(filters::Quality::level)
            .unwrap_or(crate::transform::DEFAULT_QUALITY)
    } else {
        0
    };
    format!("internal=ok/- q={q} n={}", took.as_millis())
}
