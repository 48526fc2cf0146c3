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
}

pub struct Transformer {
    pub pool: Pool,
    pub limits: TransformLimits,
    #[cfg(feature = "image-engine")]
    pub image: crate::transform::image::ImageOptions,
    #[cfg(feature = "video-engine")]
    pub video: crate::transform::video::VideoOptions,
}

/// What the request is about, for headers and tags.
pub struct Job<'a> {
    pub origin: &'a str,
    pub path: &'a str,
    pub spec: TransformSpec,
}

const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mov", "webm", "mkv", "avi", "ts", "mpg", "mpeg", "3gp", "ogv",
];

fn is_video(path: &str, content_type: Option<&str>, spec: &TransformSpec) -> bool {
    if matches!(
        spec.mode,
        Mode::Video | Mode::Frame | Mode::Spritesheet | Mode::Audio
    ) {
        return true;
    }
    if content_type.is_some_and(|c| c.starts_with("video/") || c.starts_with("audio/")) {
        return true;
    }
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    VIDEO_EXTENSIONS.contains(&ext.as_str())
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
    pub async fn run(&self, job: Job<'_>, fetched: Fetched) -> Result<Response<Body>, ApiError> {
        let started = Instant::now();
        if job.spec.needs_async() {
            return Err(ApiError::bad_request(
                "this clip is over the synchronous limit (duration over 60s or a slow codec); shorten it",
            ));
        }
        let source_cc = fetched.header("cache-control").map(str::to_string);
        let source_lm = fetched.header("last-modified").map(str::to_string);
        let video = is_video(job.path, fetched.header("content-type"), &job.spec);
        let (out, engine) = if video {
            (self.run_video(&job, fetched).await?, "video")
        } else {
            (self.run_image(&job, fetched).await?, "image")
        };
        let etag = {
            let digest = sha2::Sha256::digest(&out.body);
            format!("\"{}\"", hex::encode(&digest[..16]))
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
            .header("content-length", out.body.len())
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
        if let Some(cc) = source_cc {
            b = b.header("cache-control", cc);
        }
        if let Some(lm) = source_lm {
            b = b.header("last-modified", lm);
        }
        for (k, v) in &out.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(out.body).map_err(|never| match never {}).boxed())
            .map_err(|e| ApiError::internal(format!("response: {e}")))
    }

    async fn run_image(&self, job: &Job<'_>, fetched: Fetched) -> Result<Output, ApiError> {
        let bytes = read_to_memory(fetched, self.limits.max_image_bytes).await?;
        self.image_bytes(&job.spec, bytes).await
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
    async fn run_video(&self, job: &Job<'_>, fetched: Fetched) -> Result<Output, ApiError> {
        use crate::transform::video;
        let src =
            stream_to_file(fetched, self.limits.max_video_bytes, &self.limits.temp_dir).await?;
        let opts = self.video.clone();
        let spec = job.spec.clone();
        let out_path = self
            .limits
            .temp_dir
            .join(format!("out-{}", uuid::Uuid::new_v4().simple()));
        self.pool
            .run(move || {
                let src = src;
                let out_guard = TempFile(out_path.clone());
                let json = spec.format == Some(filters::Format::Json);
                let output = match spec.mode {
                    _ if json => {
                        let p = video::probe(&src.0)?;
                        let body = Bytes::from(serde_json::to_vec(&p).unwrap_or_default());
                        Output {
                            body,
                            content_type: "application/json",
                            width: 0,
                            height: 0,
                            headers: vec![],
                        }
                    }
                    Mode::Frame => video::frame(&src.0, &spec, &opts)?,
                    Mode::Spritesheet => video::spritesheet(&src.0, &spec, &opts)?,
                    Mode::Audio | Mode::Video => {
                        let f = if spec.mode == Mode::Audio {
                            video::audio(&src.0, &spec, &opts, &out_guard.0, &|_| {})?
                        } else {
                            video::transcode(&src.0, &spec, &opts, &out_guard.0, &|_| {})?
                        };
                        let body = std::fs::read(&f.path).map_err(|e| {
                            TransformError::Internal(format!("reading output: {e}"))
                        })?;
                        if f.path != out_guard.0 {
                            let _ = std::fs::remove_file(&f.path);
                        }
                        Output {
                            body: Bytes::from(body),
                            content_type: f.content_type,
                            width: f.width,
                            height: f.height,
                            headers: vec![],
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

    #[cfg(not(feature = "video-engine"))]
    async fn run_video(&self, _job: &Job<'_>, _fetched: Fetched) -> Result<Output, ApiError> {
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
}
