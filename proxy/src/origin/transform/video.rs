//! The video engine's part of the transform step: the original as the engine reads it (a
//! local file in place, an object read by ranges from its first block, or a stream into a
//! temp file), then probe, frame, spritesheet, audio or transcode on the bounded pool (in a
//! sandboxed worker of its own when `transform.isolate`: [`run_call`]), the
//! file outputs hashed for their `ETag` and streamed out by the caller; `mode=hls` goes on
//! to `hls`. Every scratch file is a [`TempFile`]. It must not read a body itself beyond
//! [`super::body`], nor build response headers (the step's `respond` does).

#[cfg(feature = "video-engine")]
use bytes::Bytes;
#[cfg(feature = "video-engine")]
use filters::Mode;

#[cfg(feature = "video-engine")]
use super::body::{self, BodyError};
use super::{err, Job, Produced, SourceInput, Transformer};
use crate::error::ApiError;
#[cfg(feature = "video-engine")]
use crate::origin::ranged;
#[cfg(feature = "video-engine")]
use crate::transform::tempfile::TempFile;
#[cfg(feature = "video-engine")]
use crate::transform::video::{VideoCall, VideoDone, VideoOp};
#[cfg(feature = "video-engine")]
use crate::transform::Output;
use crate::transform::TransformError;

/// Budget of one range request of a video source.
#[cfg(feature = "video-engine")]
const RANGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Transformer {
    #[cfg(feature = "video-engine")]
    pub(super) async fn run_video(
        &self,
        job: &Job<'_>,
        input: SourceInput,
    ) -> Result<Produced, ApiError> {
        use crate::transform::video::Media;
        let version = body::source_version(input.fetched());
        let size = source_size(&input).await;
        let (media, src_guard) = match input {
            SourceInput::Local(_, path) => (Media::File(path), None),
            SourceInput::Ranged {
                fetched,
                source,
                path,
            } => {
                let size = fetched
                    .header("content-range")
                    .and_then(ranged::content_range_total)
                    .ok_or_else(|| {
                        ApiError::origin_error("the source gave no object size for a range")
                    })?;
                let max = self.limits.max_video_bytes;
                if size > max {
                    return Err(BodyError::TooLarge { len: size, max }.into());
                }
                let first = body::read_to_memory(fetched, ranged::BLOCK).await?;
                let reader = ranged::SourceReader::new(
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
                let (max, dir) = (self.limits.max_video_bytes, &self.limits.temp_dir);
                let tmp = body::stream_to_file(fetched, max, dir).await?;
                (Media::File(tmp.path().to_path_buf()), Some(tmp))
            }
        };
        let made = job.spec.mode == Mode::Hls && self.hls_package_ready(job, &version);
        if job.may_defer && !made {
            if let Some(reason) = self.defer_reason(job, &media, size).await? {
                return Ok(Produced::Deferred(reason));
            }
        }
        if job.spec.mode == Mode::Hls {
            return self.run_hls(job, media, src_guard, version).await;
        }
        let opts = self.video.clone();
        let spec = job.spec.clone();
        let out = TempFile::fresh(&self.limits.temp_dir, "out");
        let progress = job.progress_fn();
        let sandbox = self.isolation();
        self.pool
            .run(&job.client, move || {
                let _src = src_guard;
                let op = match spec.mode {
                    _ if spec.format == Some(filters::Format::Json) => VideoOp::Json,
                    Mode::Frame => VideoOp::Frame,
                    Mode::Spritesheet => VideoOp::Spritesheet,
                    Mode::Audio => VideoOp::Audio,
                    Mode::Video => VideoOp::Transcode,
                    other => {
                        return Err(TransformError::BadRequest(format!(
                            "mode {} does not apply to a video source",
                            other.as_str()
                        )))
                    }
                };
                let file = matches!(op, VideoOp::Audio | VideoOp::Transcode);
                let call = VideoCall {
                    op,
                    spec,
                    opts,
                    out: file.then(|| out.path().to_path_buf()),
                };
                Ok(match run_call(&sandbox, call, &media, &progress)? {
                    VideoDone::File(f) => {
                        let (len, etag) = body::hash_file(out.path())?;
                        Produced::File {
                            path: out.path().to_path_buf(),
                            guard: Some(out),
                            len,
                            etag,
                            meta: Output {
                                body: Bytes::new(),
                                content_type: f.content_type(),
                                width: f.width,
                                height: f.height,
                                headers: vec![(
                                    "X-Source-Bytes-Read".to_string(),
                                    f.bytes_read.to_string(),
                                )],
                            },
                        }
                    }
                    VideoDone::Memory(o) => Produced::Memory(o),
                    VideoDone::Probe(_) | VideoDone::Hls(_) => {
                        return Err(TransformError::Internal(
                            "the video engine answered another call".into(),
                        ))
                    }
                })
            })
            .await
            .map_err(err)
    }

    /// Why this request is over the synchronous limits (`[jobs]`), if it is: a source over
    /// `sync_max_bytes`; an output longer than `sync_max_duration`, or than
    /// `sync_slow_codec_max_duration` in h265/vp9/av1; an HLS package of a source longer than
    /// that. The duration is the source's (probed: for a local file or a ranged object only
    /// the header is read) less the start time, or the asked `duration` when shorter.
    #[cfg(feature = "video-engine")]
    async fn defer_reason(
        &self,
        job: &Job<'_>,
        media: &crate::transform::video::Media,
        size: Option<u64>,
    ) -> Result<Option<String>, ApiError> {
        let (spec, limits) = (&job.spec, &self.sync);
        if !matches!(
            spec.mode,
            Mode::Video | Mode::Audio | Mode::Spritesheet | Mode::Hls
        ) || spec.format == Some(filters::Format::Json)
        {
            return Ok(None);
        }
        if let Some(n) = size.filter(|n| *n > limits.max_bytes) {
            return Ok(Some(format!(
                "the source is {n} bytes, over jobs.sync_max_bytes ({})",
                limits.max_bytes
            )));
        }
        let m = media.clone();
        let call = VideoCall {
            op: VideoOp::Probe,
            spec: spec.clone(),
            opts: self.video.clone(),
            out: None,
        };
        let sandbox = self.isolation();
        let probe = self
            .pool
            .run(&job.client, move || {
                match run_call(&sandbox, call, &m, &|_| {})? {
                    VideoDone::Probe(p) => Ok(p),
                    _ => Err(TransformError::Internal(
                        "the video engine answered another call".into(),
                    )),
                }
            })
            .await
            .map_err(err)?;
        let start = spec.time_ms.unwrap_or(0) as f64 / 1000.0;
        let left = (probe.duration - start).max(0.0);
        let out = spec
            .duration_ms
            .map(|d| (d as f64 / 1000.0).min(left))
            .unwrap_or(left);
        let slow = limits.slow_codec_max_duration.as_secs_f64();
        let heavy = spec.codec.is_some_and(filters::Codec::is_heavy);
        let work = crate::transform::video::work_pixels(&probe, spec, &self.video, out);
        Ok(if spec.mode == Mode::Hls && probe.duration > slow {
            Some(format!(
                "HLS of a {:.1}s source is over jobs.sync_slow_codec_max_duration ({slow}s)",
                probe.duration
            ))
        } else if spec.mode != Mode::Hls && out > limits.max_duration.as_secs_f64() {
            Some(format!(
                "a {out:.1}s output is over jobs.sync_max_duration ({}s)",
                limits.max_duration.as_secs_f64()
            ))
        } else if spec.mode == Mode::Video && heavy && out > slow {
            Some(format!(
                "a {out:.1}s {} output is over jobs.sync_slow_codec_max_duration ({slow}s)",
                spec.codec.map(|c| c.as_str()).unwrap_or("")
            ))
        } else if spec.mode == Mode::Video && work > limits.max_frame_pixels {
            Some(format!(
                "a {out:.1}s output of {}x{} at {:.0} fps is {} M frame pixels, over \
                 jobs.sync_max_frame_pixels ({} M)",
                probe.display_width,
                probe.display_height,
                probe.fps,
                work / 1_000_000,
                limits.max_frame_pixels / 1_000_000
            ))
        } else {
            None
        })
    }

    #[cfg(not(feature = "video-engine"))]
    pub(super) async fn run_video(
        &self,
        _job: &Job<'_>,
        _input: SourceInput,
    ) -> Result<Produced, ApiError> {
        Err(err(TransformError::Unsupported(
            "this build has no video engine".into(),
        )))
    }
}

/// Runs a video call where transforms run: in a sandboxed worker of its own
/// (`transform.isolate`), or on this thread.
#[cfg(feature = "video-engine")]
pub(super) fn run_call(
    sandbox: &super::image::Isolation,
    call: VideoCall,
    media: &crate::transform::video::Media,
    progress: &dyn Fn(f32),
) -> Result<VideoDone, TransformError> {
    #[cfg(feature = "image-engine")]
    if let Some(sb) = sandbox {
        return sb.video(call, media, progress);
    }
    crate::transform::video::execute(&call, media, progress)
}

/// The source's size in bytes when it says (a ranged answer's total, a length, a file's).
#[cfg(feature = "video-engine")]
async fn source_size(input: &SourceInput) -> Option<u64> {
    if let SourceInput::Local(_, path) = input {
        if let Ok(m) = tokio::fs::metadata(path).await {
            return Some(m.len());
        }
    }
    let f = input.fetched();
    f.header("content-range")
        .and_then(ranged::content_range_total)
        .or_else(|| f.header("content-length").and_then(|v| v.parse().ok()))
}
