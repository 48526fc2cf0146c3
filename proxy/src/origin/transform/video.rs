//! The video engine's part of the transform step: the original as the engine reads it (a
//! local file in place, an object read by ranges from its first block, or a stream into a
//! temp file), then probe, frame, spritesheet, audio or transcode on the bounded pool, the
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
        use crate::transform::video::{self, Media};
        let version = body::source_version(input.fetched());
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
        if job.spec.mode == Mode::Hls {
            return self.run_hls(job, media, src_guard, version).await;
        }
        let opts = self.video.clone();
        let spec = job.spec.clone();
        let out = TempFile::fresh(&self.limits.temp_dir, "out");
        self.pool
            .run(move || {
                let _src = src_guard;
                let json = spec.format == Some(filters::Format::Json);
                let output = match spec.mode {
                    _ if json => {
                        let p = video::probe(&media)?;
                        let body = Bytes::from(serde_json::to_vec(&p).unwrap_or_default());
                        Produced::Memory(Output::plain(body, "application/json"))
                    }
                    Mode::Frame => Produced::Memory(video::frame(&media, &spec, &opts)?),
                    Mode::Spritesheet => {
                        Produced::Memory(video::spritesheet(&media, &spec, &opts)?)
                    }
                    Mode::Audio | Mode::Video => {
                        let f = if spec.mode == Mode::Audio {
                            video::audio(&media, &spec, &opts, out.path(), &|_| {})?
                        } else {
                            video::transcode(&media, &spec, &opts, out.path(), &|_| {})?
                        };
                        let guard = if f.path == out.path() {
                            out
                        } else {
                            TempFile::new(f.path.clone())
                        };
                        let (len, etag) = body::hash_file(guard.path())?;
                        Produced::File {
                            path: guard.path().to_path_buf(),
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
