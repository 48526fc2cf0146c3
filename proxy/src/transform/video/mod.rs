//! The video engine: FFmpeg (through `ffmpeg-next`) in-process, on the caller's blocking
//! pool thread. It owns probing, still frames and spritesheets, audio extraction (m4a),
//! transcoding (mp4/webm with h264, h265, vp9, av1) and HLS packaging of a *local file*;
//! it never fetches, never caches and never reads a whole video into memory. Every entry
//! point is synchronous, bounded by [`VideoOptions::timeout`] (checked in each
//! decode/encode loop), leaves no partial output behind on failure, and maps bad input to
//! 415 (not media, no usable stream, absurd size) or 422 (media we cannot decode) instead
//! of panicking.
//!
//! Submodules: `input` (open, classify, streams, rotation, deadline), `graph` (filter graphs
//! and chains; the fit is planned by [`crate::transform::geometry`], with even sizes),
//! `still` (frame, spritesheet, image encoders), `encode` (the decode → filter → encode →
//! mux pipeline), `probe`, `call` (one call as a value, run here or in a sandboxed worker).

mod call;
mod encode;
mod graph;
mod input;
mod probe;
mod still;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use filters::{Codec, Compression, Fit, Format, Mode, Quality, TransformSpec};

use crate::transform::TransformError;
use encode::{Container, Job, VideoSettings};
use input::Deadline;

pub use call::{execute, VideoCall, VideoDone, VideoOp, Written};
pub use input::{init, Media};
pub use probe::Probe;
pub use still::{frame, spritesheet};

/// Limits and defaults for the video engine.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VideoOptions {
    /// Wall-clock budget of one transform.
    pub timeout: Duration,
    /// Largest output width/height.
    pub max_width: u32,
    pub max_height: u32,
    /// HLS segment length in seconds.
    pub hls_segment_secs: u32,
    /// Height of the HLS rendition (its width for portrait video); never upscaled.
    pub hls_height: u32,
    /// Where scratch files go.
    pub temp_dir: PathBuf,
}

impl Default for VideoOptions {
    fn default() -> Self {
        VideoOptions {
            timeout: Duration::from_secs(120),
            max_width: filters::params::MAX_VIDEO_DIM,
            max_height: filters::params::MAX_VIDEO_DIM,
            hls_segment_secs: 6,
            hls_height: 720,
            temp_dir: std::env::temp_dir(),
        }
    }
}

/// A finished transform written to a file (stream it, then delete it).
#[derive(Debug, Clone)]
pub struct OutputFile {
    pub path: PathBuf,
    pub content_type: &'static str,
    /// 0 for audio.
    pub width: u32,
    pub height: u32,
    pub duration_secs: f64,
    /// Bytes read from the source.
    pub bytes_read: u64,
}

/// An HLS package: `index.m3u8`, `segment_NNN.ts` and `poster.jpg` in one directory.
#[derive(Debug, Clone)]
pub struct HlsOutput {
    pub playlist: PathBuf,
    pub segments: Vec<PathBuf>,
    pub poster: PathBuf,
    pub width: u32,
    pub height: u32,
    pub duration_secs: f64,
    pub bytes_read: u64,
}

/// Container, duration, streams, rotation, fps and bitrate of a file (the `format=json`
/// answer).
pub fn probe(path: impl Into<Media>) -> Result<Probe, TransformError> {
    probe_with(path, &VideoOptions::default())
}

/// [`probe`] with a time budget.
pub fn probe_with(path: impl Into<Media>, opts: &VideoOptions) -> Result<Probe, TransformError> {
    probe::probe(&path.into(), Deadline::new(opts.timeout))
}

/// `mode=audio`: AAC in MP4 (m4a) from `time` for `duration`; the source's AAC is copied,
/// anything else is encoded.
pub fn audio(
    path: impl Into<Media>,
    spec: &TransformSpec,
    opts: &VideoOptions,
    out: &Path,
    progress: &dyn Fn(f32),
) -> Result<OutputFile, TransformError> {
    let path: Media = path.into();
    if let Some(f) = spec
        .format
        .filter(|f| !matches!(f, Format::M4a | Format::Auto))
    {
        return Err(TransformError::BadRequest(format!(
            "format {f} is not available for mode=audio: use m4a"
        )));
    }
    let job = clip_job(spec, opts, Container::M4a, None, true, progress);
    let done = encode::run(&path, out, job)?;
    Ok(OutputFile::written(out, "audio/mp4", done))
}

/// The job of a clip (`time`, `duration`, `speed`) of the source.
fn clip_job<'a>(
    spec: &TransformSpec,
    opts: &VideoOptions,
    container: Container,
    video: Option<VideoSettings<'a>>,
    audio: bool,
    progress: &'a dyn Fn(f32),
) -> Job<'a> {
    Job {
        container,
        start: ms_to_secs(spec.time_ms),
        duration: spec.duration_ms.map(|d| d as f64 / 1000.0),
        video,
        audio,
        speed: spec.speed.filter(|s| (*s - 1.0).abs() > 1e-6),
        deadline: Deadline::new(opts.timeout),
        progress,
    }
}

impl OutputFile {
    fn written(out: &Path, content_type: &'static str, done: encode::Done) -> OutputFile {
        OutputFile {
            path: out.to_path_buf(),
            content_type,
            width: done.width,
            height: done.height,
            duration_secs: done.duration_secs,
            bytes_read: done.bytes_read,
        }
    }
}

fn ms_to_secs(ms: Option<u64>) -> f64 {
    ms.unwrap_or(0) as f64 / 1000.0
}

/// `quality` / `compression` → (x264 CRF, x264 preset).
pub fn crf_preset(
    quality: Option<Quality>,
    compression: Option<Compression>,
) -> (u32, &'static str) {
    let (crf, preset) = match quality {
        Some(Quality::Low) => (28, "fast"),
        Some(Quality::MediumLow) => (25, "medium"),
        Some(Quality::MediumHigh) => (21, "medium"),
        Some(Quality::High) => (18, "medium"),
        Some(Quality::Lossless) => (12, "medium"),
        Some(Quality::Value(v)) => (
            (51.0 - f32::from(v) * 0.37).round().clamp(0.0, 51.0) as u32,
            "medium",
        ),
        Some(Quality::Medium) | Some(Quality::Auto) | None => (23, "medium"),
    };
    let preset = match compression {
        Some(Compression::Fast) => "veryfast",
        Some(Compression::Level(l)) if l <= 2 => "veryfast",
        Some(Compression::Level(l)) if l <= 5 => "fast",
        Some(Compression::Level(l)) if l >= 8 => "slow",
        _ => preset,
    };
    (crf, preset)
}

/// The container for a codec and requested format.
fn container_for(
    codec: Codec,
    format: Option<Format>,
) -> Result<(Container, &'static str), TransformError> {
    let webm = match format {
        Some(Format::Mp4) => false,
        Some(Format::Webm) => true,
        None | Some(Format::Auto) => codec == Codec::Vp9,
        Some(other) => {
            return Err(TransformError::BadRequest(format!(
                "format {other} is not available for mode=video: use mp4 or webm"
            )))
        }
    };
    if webm && matches!(codec, Codec::H264 | Codec::H265) {
        return Err(TransformError::BadRequest(format!(
            "codec {codec} cannot go in webm: use vp9 or av1, or format=mp4"
        )));
    }
    Ok(if webm {
        (Container::Webm, "video/webm")
    } else {
        (Container::Mp4, "video/mp4")
    })
}

/// The work of a video output of `seconds`, in encoded frame pixels: frames (the asked
/// `fps`, else the source's rate; 30 when the source does not say) × the output's
/// pixels (the planned fit inside `max_width`×`max_height`), × 4 for h265, vp9 and av1 (each
/// frame costs several times an h264 frame). What the synchronous limit and the budget of a
/// request compare; it reads only the probe.
pub fn work_pixels(p: &Probe, spec: &TransformSpec, opts: &VideoOptions, seconds: f64) -> u64 {
    if !p.has_video {
        return 0;
    }
    let src_fps = if p.fps > 0.0 { p.fps } else { 30.0 };
    // An asked rate is what is encoded (the `fps` filter drops or repeats frames to it).
    let fps = spec.fps.map_or(src_fps, f64::from);
    let max = (opts.max_width, opts.max_height);
    let canvas = geometry_plan(p, spec, max);
    let heavy = if spec.codec.is_some_and(filters::Codec::is_heavy) {
        4.0
    } else {
        1.0
    };
    (seconds.max(0.0) * fps * canvas as f64 * heavy) as u64
}

/// Output pixels of the planned fit (the displayed size when the plan fails: the request is
/// then refused by the transform itself).
fn geometry_plan(p: &Probe, spec: &TransformSpec, max: (u32, u32)) -> u64 {
    let (w, h) = (p.display_width.max(1), p.display_height.max(1));
    let canvas = crate::transform::geometry::plan(w, h, &graph::fit_request(spec, max, true))
        .map(|plan| plan.canvas)
        .unwrap_or((w.min(max.0), h.min(max.1)));
    u64::from(canvas.0) * u64::from(canvas.1)
}

/// The filter chain for a video output: source chain (rotation, crop, rotate), fps, fit,
/// even dimensions, yuv420p.
fn video_chain(
    vs: &input::VideoStream,
    spec: &TransformSpec,
    max: (u32, u32),
) -> Result<String, TransformError> {
    let (mut chain, size) = graph::source_chain(vs, spec)?;
    if let Some(fps) = spec.fps {
        chain.push(format!("fps={fps}"));
    }
    graph::push_fit(&mut chain, size, spec, &graph::fit_request(spec, max, true))?;
    chain.push("format=yuv420p".into());
    Ok(chain.join(","))
}

/// `mode=video`: resize, clip, re-encode to mp4 (h264 default, h265 tagged `hvc1`, av1)
/// or webm (vp9, av1); MP4 is written fast-start (moov before mdat).
pub fn transcode(
    path: impl Into<Media>,
    spec: &TransformSpec,
    opts: &VideoOptions,
    out: &Path,
    progress: &dyn Fn(f32),
) -> Result<OutputFile, TransformError> {
    let path: Media = path.into();
    let codec = spec.codec.unwrap_or(Codec::H264);
    let (container, content_type) = container_for(codec, spec.format)?;
    // Fail fast on a missing encoder, before any decoding.
    input::init();
    encode::video_encoder_for(codec)?;
    let (crf, preset) = crf_preset(spec.quality, spec.compression);
    let max = (opts.max_width, opts.max_height);
    let video = VideoSettings {
        codec,
        crf,
        preset,
        bitrate: spec.bitrate,
        chain: Box::new(move |vs| video_chain(vs, spec, max)),
        keyframe_every: None,
    };
    let audio = spec.audio.unwrap_or(true);
    let job = clip_job(spec, opts, container, Some(video), audio, progress);
    let done = encode::run(&path, out, job)?;
    Ok(OutputFile::written(out, content_type, done))
}

/// Removes what an unfinished HLS run left in its directory.
struct HlsGuard {
    dir: PathBuf,
    armed: bool,
}

impl Drop for HlsGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "index.m3u8"
                    || name == "poster.jpg"
                    || (name.starts_with("segment_") && name.ends_with(".ts"))
                    || name.ends_with(".m3u8.tmp")
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// HLS VOD package of one 720p (never upscaled) h264/AAC rendition in
/// `hls_segment_secs` segments, plus a poster JPEG at 1 s, in `out_dir`.
pub fn hls(
    path: impl Into<Media>,
    opts: &VideoOptions,
    out_dir: &Path,
    progress: &dyn Fn(f32),
) -> Result<HlsOutput, TransformError> {
    let path: Media = path.into();
    // (A sandboxed worker is handed its directory and may not create one.)
    if !out_dir.is_dir() {
        std::fs::create_dir_all(out_dir).map_err(|e| {
            TransformError::Internal(format!("cannot create {}: {e}", out_dir.display()))
        })?;
    }
    let mut guard = HlsGuard {
        dir: out_dir.to_path_buf(),
        armed: true,
    };
    let playlist = out_dir.join("index.m3u8");
    let seg = opts.hls_segment_secs.clamp(1, 60);
    let max = (opts.max_width, opts.max_height);
    let side = opts.hls_height.clamp(filters::params::MIN_DIM, 2160);
    let long = (side * 16 / 9 + 1) & !1;
    let chain = move |vs: &input::VideoStream| {
        let (w, h) = vs.display_size();
        let (bw, bh) = if h > w { (side, long) } else { (long, side) };
        let mut spec = TransformSpec::new(Mode::Video);
        spec.width = Some(bw);
        spec.height = Some(bh);
        spec.fit = Some(Fit::ScaleDown);
        video_chain(vs, &spec, max)
    };
    let done = encode::run(
        &path,
        &playlist,
        Job {
            container: Container::Hls {
                segment_secs: seg,
                segment_pattern: out_dir.join("segment_%03d.ts"),
            },
            start: 0.0,
            duration: None,
            video: Some(VideoSettings {
                codec: Codec::H264,
                crf: 23,
                preset: "veryfast",
                bitrate: None,
                chain: Box::new(chain),
                keyframe_every: Some(f64::from(seg)),
            }),
            audio: true,
            speed: None,
            deadline: Deadline::new(opts.timeout),
            progress,
        },
    )?;
    let text = std::fs::read_to_string(&playlist).map_err(|e| {
        TransformError::Internal(format!("cannot read {}: {e}", playlist.display()))
    })?;
    let segments: Vec<PathBuf> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| out_dir.join(l.trim()))
        .collect();
    // Poster at 1 s (or the middle of a shorter video), the rendition's size.
    let mut spec = TransformSpec::new(Mode::Frame);
    spec.time_ms = Some(if done.duration_secs >= 2.0 {
        1000
    } else {
        (done.duration_secs * 500.0) as u64
    });
    spec.width = Some(done.width.max(filters::params::MIN_DIM));
    let poster_img = still::frame(&path, &spec, opts)?;
    let poster = out_dir.join("poster.jpg");
    std::fs::write(&poster, &poster_img.body)
        .map_err(|e| TransformError::Internal(format!("cannot write {}: {e}", poster.display())))?;
    guard.armed = false;
    Ok(HlsOutput {
        playlist,
        segments,
        poster,
        width: done.width,
        height: done.height,
        duration_secs: done.duration_secs,
        bytes_read: done.bytes_read,
    })
}

/// A fresh scratch path in `temp_dir` for [`transcode`]/[`audio`] outputs.
pub fn temp_output(opts: &VideoOptions, ext: &str) -> PathBuf {
    opts.temp_dir.join(format!(
        "media-edge-video-{}.{ext}",
        crate::transform::tempfile::unique_suffix()
    ))
}
