//! The encode pipeline behind `transcode`, `audio` and `hls`: demux → decode → filter →
//! encode → mux, one pass, streaming from the source to the output file(s) with no
//! whole-file buffer. This file owns the job description and [`run`]'s stages: choosing
//! the streams, the clip window (`time`/`duration`), the demux loop with its wall-clock
//! deadline and corrupt-packet budget, the flush, and the guarantee that a failed run
//! leaves no output file behind (a [`TempFile`] until it succeeds). The stream work lives
//! beside it: `video_stream` (encoder selection and settings, frames through the graph),
//! `audio` (copy versus AAC/Opus), `mux` (container options, progress, trailer). It must
//! not decide geometry: the caller passes a filter chain.

mod audio;
mod mux;
mod video_stream;

use std::path::{Path, PathBuf};

use ffmpeg::{format, Packet, Rational};
use ffmpeg_next as ffmpeg;
use filters::Codec;

use super::input::{self, Deadline, Media, VideoStream};
use crate::transform::tempfile::TempFile;
use crate::transform::TransformError;
use audio::AudioPath;
use mux::Mux;
use video_stream::VideoPath;

pub use video_stream::video_encoder_for;

/// Output container.
pub enum Container {
    Mp4,
    Webm,
    M4a,
    /// VOD playlist at the output path; segments named by `segment_pattern` (a printf
    /// pattern with one `%03d`).
    Hls {
        segment_secs: u32,
        segment_pattern: PathBuf,
    },
}

/// Video encoder settings.
pub struct VideoSettings<'a> {
    pub codec: Codec,
    /// x264-scale CRF (0..=51); converted for the other encoders.
    pub crf: u32,
    /// x264 preset name (`veryfast`, `fast`, `medium`...).
    pub preset: &'static str,
    pub bitrate: Option<u64>,
    /// Builds the filter chain (after the decoder, before the encoder) for the source
    /// stream; must end in a yuv420p picture.
    pub chain: Box<dyn Fn(&VideoStream) -> Result<String, TransformError> + 'a>,
    /// Force a keyframe every this many seconds (HLS segment boundaries).
    pub keyframe_every: Option<f64>,
}

/// What to do.
pub struct Job<'a> {
    pub container: Container,
    /// Source offset in seconds.
    pub start: f64,
    /// Source seconds to take (None: to the end).
    pub duration: Option<f64>,
    /// `None`: no video in the output (audio-only).
    pub video: Option<VideoSettings<'a>>,
    pub audio: bool,
    /// Playback speed factor (video `setpts`, audio `atempo`).
    pub speed: Option<f32>,
    pub deadline: Deadline,
    pub progress: &'a dyn Fn(f32),
}

/// What came out.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub width: u32,
    pub height: u32,
    pub duration_secs: f64,
    pub bytes_read: u64,
}

/// A clip in source stream units: from `start` to `end` (exclusive; `None`: to the end).
#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    end: Option<i64>,
}

impl Window {
    /// The window of `clip` (offset and length in seconds) in a stream of time base `tb`
    /// starting at `stream_start`.
    fn new((offset, length): (f64, Option<f64>), tb: Rational, stream_start: i64) -> Window {
        let start = stream_start + input::secs_to_ts(offset, tb);
        Window {
            start,
            end: length.map(|d| start + input::secs_to_ts(d, tb)),
        }
    }

    /// Whether `pts` is at or past the end.
    fn ended(&self, pts: i64) -> bool {
        self.end.is_some_and(|e| pts >= e)
    }
}

/// What every output stream is set up against: the muxer it is added to, the input it
/// reads, and the job's settings that apply to all streams.
struct Setup<'a> {
    octx: &'a mut format::context::Output,
    ictx: &'a format::context::Input,
    /// Playback speed factor (video `setpts`, audio `atempo`).
    speed: Option<f32>,
    /// The muxer wants codec headers out of band.
    global_header: bool,
}

/// Runs one job from `media` to `out` (for HLS: the playlist path; the caller owns the
/// segments).
pub fn run(media: &Media, out: &Path, job: Job) -> Result<Done, TransformError> {
    let mut ictx = input::open(media, job.deadline.clone())?;
    let (vs, ast) = streams(&ictx, media, &job)?;
    let src_duration = input::duration_secs(&ictx);
    if src_duration > 0.0 && job.start >= src_duration {
        return Err(TransformError::BadRequest(format!(
            "time {}s is past the end of the {src_duration:.3}s source",
            job.start
        )));
    }
    discard_others(&mut ictx, &[vs.map(|v| v.index), ast]);

    // Declared before the muxer, so on failure the output is closed before it is removed.
    let guard = TempFile::new(out);
    let mut octx = mux::open_output(out, job.container.muxer())?;
    let global_header = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);
    let clip = (job.start, job.duration);
    let mut setup = Setup {
        octx: &mut octx,
        ictx: &ictx,
        speed: job.speed,
        global_header,
    };
    let mut video = match (&job.video, vs) {
        (Some(v), Some(vs)) => {
            let window = Window::new(clip, vs.time_base, vs.start_pts);
            Some(VideoPath::build(&mut setup, vs, v, window)?)
        }
        _ => None,
    };
    let mut audio = match ast {
        Some(ist) => Some(AudioPath::build(&mut setup, ist, &job.container, clip)?),
        None => None,
    };
    let mut mux = Mux::start(
        octx,
        &job.container,
        expected_secs(&job, src_duration),
        job.progress,
    )?;

    if job.start > 0.0 {
        input::seek(&mut ictx, job.start)?;
    }
    let eof = demux(&mut ictx, &job, video.as_mut(), audio.as_mut(), &mut mux)?;
    // Flush: decoders (at end of file), filter graphs, encoders.
    if let Some(v) = video.as_mut() {
        v.flush(eof, &mut mux)?;
    }
    if let Some(a) = audio.as_mut() {
        a.flush(eof, &mut mux)?;
    }
    if mux.max_secs <= 0.0 {
        return Err(TransformError::Invalid(format!(
            "nothing decodable in {} from {}s",
            input::file_name(media),
            job.start
        )));
    }
    let duration_secs = mux.max_secs;
    mux.finish()?;
    let (width, height) = video.as_ref().map(VideoPath::size).unwrap_or((0, 0));
    guard.keep();
    Ok(Done {
        width,
        height,
        duration_secs,
        bytes_read: ictx.bytes_read(),
    })
}

/// The video stream (when the job wants video) and the audio stream (when it wants audio
/// and the source has one); refuses a source without what the job needs.
fn streams(
    ictx: &format::context::Input,
    media: &Media,
    job: &Job,
) -> Result<(Option<VideoStream>, Option<usize>), TransformError> {
    let vs = input::video_stream(ictx)?;
    let ast = if job.audio {
        input::audio_stream(ictx)
    } else {
        None
    };
    let vs = match (&job.video, vs) {
        (Some(_), Some(vs)) => Some(vs),
        (Some(_), None) => {
            return Err(TransformError::Unsupported(format!(
                "{} has no video stream",
                input::file_name(media)
            )))
        }
        (None, _) => None,
    };
    if vs.is_none() && ast.is_none() {
        return Err(TransformError::Unsupported(format!(
            "{} has no {} stream",
            input::file_name(media),
            if job.video.is_some() {
                "video"
            } else {
                "audio"
            }
        )));
    }
    Ok((vs, ast))
}

/// Only the streams we use are demuxed.
fn discard_others(ictx: &mut format::context::Input, used: &[Option<usize>]) {
    // SAFETY: adjusting `discard` on the streams of a live input context.
    unsafe {
        let ctx = ictx.as_mut_ptr();
        for i in 0..(*ctx).nb_streams as usize {
            if !used.contains(&Some(i)) {
                (*(*(*ctx).streams.add(i))).discard = ffmpeg::ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
    }
}

/// Output seconds the job should produce (for progress): the clip, at the job's speed.
fn expected_secs(job: &Job, src_duration: f64) -> f64 {
    let speed = f64::from(job.speed.unwrap_or(1.0));
    let src_left = (src_duration - job.start).max(0.0);
    (match job.duration {
        Some(d) if src_duration > 0.0 => d.min(src_left),
        Some(d) => d,
        None => src_left,
    }) / speed
}

/// Reads packets until both streams have their clip (or the file ends: then `Ok(true)`),
/// handing each to its stream; checks the deadline on every packet and gives up after
/// 1000 unreadable ones.
fn demux(
    ictx: &mut format::context::Input,
    job: &Job,
    mut video: Option<&mut VideoPath>,
    mut audio: Option<&mut AudioPath>,
    mux: &mut Mux,
) -> Result<bool, TransformError> {
    let mut invalid_packets = 0u32;
    loop {
        let video_done = video.as_ref().is_none_or(|v| v.done);
        let audio_done = audio.as_ref().is_none_or(|a| a.done);
        if video_done && audio_done {
            return Ok(false);
        }
        job.deadline.check("transcode")?;
        let mut packet = Packet::empty();
        match packet.read(ictx) {
            Ok(()) => {}
            Err(ffmpeg::Error::InvalidData) => {
                invalid_packets += 1;
                if invalid_packets > 1000 {
                    return Err(TransformError::Invalid(
                        "source is corrupt: over 1000 unreadable packets".into(),
                    ));
                }
                continue;
            }
            // End of file — unless the read was interrupted because the time is up or the
            // request went away: that is an error, never a truncated output.
            Err(_) => {
                job.deadline.check("transcode")?;
                return Ok(true);
            }
        }
        let idx = packet.stream();
        if let Some(v) = video
            .as_deref_mut()
            .filter(|v| v.vs.index == idx && !v.done)
        {
            v.packet(&packet, mux, &mut invalid_packets)?;
        } else if let Some(a) = audio.as_deref_mut().filter(|a| a.index() == idx && !a.done) {
            a.packet(&mut packet, mux, &mut invalid_packets)?;
        }
    }
}
