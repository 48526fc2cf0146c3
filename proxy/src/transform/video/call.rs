//! One call into the video engine as a value: what to do ([`VideoOp`]), with which spec and
//! options, and where a file output goes. The transform step runs a call here, on its own
//! thread ([`execute`]), or hands it to a sandboxed worker process that runs the same
//! [`execute`] there (`crate::transform::sandbox`); both give the same [`VideoDone`]. Owns
//! the dispatch only: the engine's entry points do the work.

use std::path::PathBuf;

use bytes::Bytes;
use filters::TransformSpec;
use serde::{Deserialize, Serialize};

use super::{Media, Probe, VideoOptions};
use crate::transform::{Output, TransformError};

/// Which entry point of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoOp {
    /// Container and streams ([`super::probe`]).
    Probe,
    /// `format=json`: the probe as the answer's body.
    Json,
    Frame,
    Spritesheet,
    Audio,
    Transcode,
    /// The HLS package, written into the directory `out`.
    Hls,
}

/// A call: the op, its spec and options, and where a file output goes (`audio` and
/// `transcode`: the file; `hls`: the directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoCall {
    pub op: VideoOp,
    pub spec: TransformSpec,
    pub opts: VideoOptions,
    pub out: Option<PathBuf>,
}

/// What a call made.
#[derive(Debug)]
pub enum VideoDone {
    Probe(Probe),
    /// A small output (a frame, a spritesheet, the JSON probe).
    Memory(Output),
    /// A file written at the call's `out` (audio, transcode).
    File(Written),
    /// The HLS package, in the call's `out` directory.
    Hls(Written),
}

/// What a file output is, besides its bytes on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Written {
    pub content_type: String,
    /// 0 for audio.
    pub width: u32,
    pub height: u32,
    pub duration_secs: f64,
    /// Bytes read from the source.
    pub bytes_read: u64,
}

impl Written {
    /// The content type as one of the engine's (`application/octet-stream` for any other).
    pub fn content_type(&self) -> &'static str {
        [
            "video/mp4",
            "video/webm",
            "audio/mp4",
            "application/vnd.apple.mpegurl",
        ]
        .into_iter()
        .find(|t| *t == self.content_type)
        .unwrap_or("application/octet-stream")
    }
}

impl VideoCall {
    /// The file or directory the call must write, or an internal error.
    fn out(&self) -> Result<&std::path::Path, TransformError> {
        self.out
            .as_deref()
            .ok_or_else(|| TransformError::Internal(format!("{:?} needs an output path", self.op)))
    }
}

/// Runs `call` on this thread against `media`, reporting progress (0..=1) of the long ops.
pub fn execute(
    call: &VideoCall,
    media: &Media,
    progress: &dyn Fn(f32),
) -> Result<VideoDone, TransformError> {
    let (spec, opts) = (&call.spec, &call.opts);
    Ok(match call.op {
        VideoOp::Probe => VideoDone::Probe(super::probe_with(media, opts)?),
        VideoOp::Json => {
            let p = super::probe_with(media, opts)?;
            let body = Bytes::from(serde_json::to_vec(&p).unwrap_or_default());
            VideoDone::Memory(Output::plain(body, "application/json"))
        }
        VideoOp::Frame => VideoDone::Memory(super::frame(media, spec, opts)?),
        VideoOp::Spritesheet => VideoDone::Memory(super::spritesheet(media, spec, opts)?),
        VideoOp::Audio | VideoOp::Transcode => {
            let out = call.out()?;
            let f = if call.op == VideoOp::Audio {
                super::audio(media, spec, opts, out, progress)?
            } else {
                super::transcode(media, spec, opts, out, progress)?
            };
            VideoDone::File(Written {
                content_type: f.content_type.to_string(),
                width: f.width,
                height: f.height,
                duration_secs: f.duration_secs,
                bytes_read: f.bytes_read,
            })
        }
        VideoOp::Hls => {
            let h = super::hls(media, opts, call.out()?, progress)?;
            VideoDone::Hls(Written {
                content_type: "application/vnd.apple.mpegurl".into(),
                width: h.width,
                height: h.height,
                duration_secs: h.duration_secs,
                bytes_read: h.bytes_read,
            })
        }
    })
}
