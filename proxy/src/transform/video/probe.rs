//! `probe`: what a source file is (container, duration, streams, rotation, frame rate,
//! bitrate) without decoding a frame. The [`Probe`] value is also the `format=json` answer,
//! so its field names are part of the public HTTP contract. It must not decode frames.

use super::input::Media;

use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

use super::input::{self, Deadline};
use crate::transform::TransformError;

/// What a video (or audio) file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Seconds (0 when the container does not say).
    pub duration: f64,
    /// Coded size of the main video stream (0 for audio-only files).
    pub width: u32,
    pub height: u32,
    /// Clockwise rotation the player applies: 0, 90, 180 or 270.
    pub rotation: u32,
    /// Size as displayed (after `rotation`).
    pub display_width: u32,
    pub display_height: u32,
    /// Frames per second (0 when unknown).
    pub fps: f64,
    /// FFmpeg codec names (`h264`, `hevc`, `vp9`, `aac`, `opus`...).
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub audio_sample_rate: Option<u32>,
    pub audio_channels: Option<u32>,
    /// Overall bits per second (0 when unknown).
    pub bitrate: u64,
    pub has_video: bool,
    pub has_audio: bool,
    /// Demuxer name (`mov,mp4,m4a,3gp,3g2,mj2`, `matroska,webm`...).
    pub container: String,
    /// File size in bytes.
    pub size: u64,
}

fn codec_name(id: ffmpeg::codec::Id) -> String {
    id.name().to_string()
}

/// Reads the container and stream headers of `path`.
pub fn probe(path: &Media, deadline: Deadline) -> Result<Probe, TransformError> {
    let ictx = input::open(path, deadline)?;
    let video = input::video_stream(&ictx)?;
    let audio = input::audio_stream(&ictx).and_then(|i| ictx.stream(i));
    if video.is_none() && audio.is_none() {
        return Err(TransformError::Unsupported(format!(
            "{} has no video or audio stream ({} streams)",
            input::file_name(path),
            ictx.nb_streams()
        )));
    }
    let (audio_codec, audio_sample_rate, audio_channels) = match &audio {
        Some(st) => {
            // SAFETY: parameters pointer of a live stream.
            let par = unsafe { *st.parameters().as_ptr() };
            (
                Some(codec_name(st.parameters().id())),
                Some(par.sample_rate.max(0) as u32),
                Some(par.ch_layout.nb_channels.max(0) as u32),
            )
        }
        None => (None, None, None),
    };
    let (dw, dh) = video.map(|v| v.display_size()).unwrap_or((0, 0));
    let size = path.size().unwrap_or(0);
    let mut duration = input::duration_secs(&ictx);
    if duration == 0.0 {
        if let Some(v) = &video {
            if let Some(st) = ictx.stream(v.index) {
                if st.duration() > 0 {
                    duration = input::ts_to_secs(st.duration(), st.time_base());
                }
            }
        }
    }
    let bitrate = if ictx.bit_rate() > 0 {
        ictx.bit_rate() as u64
    } else if duration > 0.0 {
        (size as f64 * 8.0 / duration) as u64
    } else {
        0
    };
    Ok(Probe {
        duration: (duration * 1000.0).round() / 1000.0,
        width: video.map(|v| v.width).unwrap_or(0),
        height: video.map(|v| v.height).unwrap_or(0),
        rotation: video.map(|v| v.rotation).unwrap_or(0),
        display_width: dw,
        display_height: dh,
        fps: video
            .map(|v| (v.fps * 1000.0).round() / 1000.0)
            .unwrap_or(0.0),
        video_codec: video.map(|v| codec_name(v.codec)),
        audio_codec,
        audio_sample_rate,
        audio_channels,
        bitrate,
        has_video: video.is_some(),
        has_audio: audio.is_some(),
        container: ictx.format().name().to_string(),
        size,
    })
}
