//! Opening a source file with FFmpeg and everything shared by the readers: one-time library
//! init, the wall-clock [`Deadline`], classification of open failures (not a media file →
//! 415, a media file we cannot read → 422), the checks on the chosen video stream
//! (dimensions, rotation from the display matrix or the legacy `rotate` tag), decoder setup
//! and bytes-read accounting. It never writes files and never encodes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Once;
use std::time::{Duration, Instant};

use ffmpeg::{codec, decoder, format, media, Rational};
use ffmpeg_next as ffmpeg;

use crate::transform::{RangeRead, TransformError};

/// Largest accepted width or height of a source video.
pub const MAX_SOURCE_DIM: u32 = 8192;
/// Largest accepted pixel count of a source video (8K UHD).
pub const MAX_SOURCE_PIXELS: u64 = 7680 * 4320;

/// The demuxers a source may be read with. Anything else (playlists, concat lists, ANSI
/// art, image sequences, devices) is refused: they are not videos, and some would make
/// FFmpeg open other files or URLs.
pub const DEMUXERS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,\
    mpegvideo,ogg,wav,mp3,aac,flac,asf,h264,hevc,ivf,mxf,m4v,yuv4mpegpipe";

fn demuxer_allowed(name: &str) -> bool {
    name.split(',')
        .any(|n| DEMUXERS.split(',').any(|d| d.trim() == n))
}

static INIT: Once = Once::new();

/// Initialises FFmpeg once per process and keeps its logging to errors.
pub fn init() {
    INIT.call_once(|| {
        // `init` only registers devices and never fails on supported versions; a failure
        // would surface as an open error later anyway.
        let _ = ffmpeg::init();
        ffmpeg::log::set_level(ffmpeg::log::Level::Fatal);
    });
}

/// The per-transform wall-clock budget, checked in every decode/encode loop and by the
/// demuxer's interrupt callback. It also ends when the request the work is for goes away (the
/// pool's cancel token of the thread that makes it).
#[derive(Debug, Clone)]
pub struct Deadline {
    start: Instant,
    limit: Duration,
    cancel: Option<crate::transform::pool::CancelToken>,
}

impl Deadline {
    pub fn new(limit: Duration) -> Deadline {
        Deadline {
            start: Instant::now(),
            limit,
            cancel: crate::transform::pool::current_cancel(),
        }
    }

    pub fn expired(&self) -> bool {
        self.start.elapsed() > self.limit || self.cancel.as_ref().is_some_and(|c| c.is_cancelled())
    }

    pub fn check(&self, what: &str) -> Result<(), TransformError> {
        if self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(TransformError::Cancelled(format!(
                "video {what} stopped: the request went away"
            )));
        }
        if self.start.elapsed() > self.limit {
            return Err(TransformError::Timeout(format!(
                "video {what} took longer than the {:.1}s limit",
                self.limit.as_secs_f64()
            )));
        }
        Ok(())
    }
}

/// Maps an FFmpeg error met while reading/decoding the source.
pub fn invalid(what: &str, e: ffmpeg::Error) -> TransformError {
    TransformError::Invalid(format!("cannot {what}: {e}"))
}

/// Maps an FFmpeg error on our side (encoder, muxer, filter graph).
pub fn internal(what: &str, e: ffmpeg::Error) -> TransformError {
    TransformError::Internal(format!("{what}: {e}"))
}

/// Where a video comes from: a local file, or an object read by byte ranges.
#[derive(Clone)]
pub enum Media {
    File(PathBuf),
    Ranged(Arc<dyn RangeRead>),
}

impl Media {
    /// A short name for messages.
    pub fn name(&self) -> String {
        match self {
            Media::File(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            Media::Ranged(r) => r.name(),
        }
    }

    pub fn size(&self) -> Result<u64, TransformError> {
        match self {
            Media::File(p) => std::fs::metadata(p).map(|m| m.len()).map_err(|e| {
                TransformError::Internal(format!("cannot stat source {}: {e}", p.display()))
            }),
            Media::Ranged(r) => Ok(r.size()),
        }
    }

    /// The first bytes, for content sniffing.
    fn head(&self, buf: &mut [u8]) -> usize {
        use std::io::Read;
        match self {
            Media::File(p) => std::fs::File::open(p)
                .and_then(|mut f| f.read(buf))
                .unwrap_or(0),
            Media::Ranged(r) => {
                let mut n = 0;
                while n < buf.len() {
                    match r.read_at(n as u64, &mut buf[n..]) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
                n
            }
        }
    }
}

impl From<&Path> for Media {
    fn from(p: &Path) -> Media {
        Media::File(p.to_path_buf())
    }
}

impl From<&PathBuf> for Media {
    fn from(p: &PathBuf) -> Media {
        Media::File(p.clone())
    }
}

impl From<&Media> for Media {
    fn from(m: &Media) -> Media {
        m.clone()
    }
}

impl From<PathBuf> for Media {
    fn from(p: PathBuf) -> Media {
        Media::File(p)
    }
}

/// `Read + Seek` over a [`RangeRead`], for FFmpeg's custom I/O.
struct RangeCursor {
    reader: Arc<dyn RangeRead>,
    pos: u64,
}

impl std::io::Read for RangeCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.reader.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for RangeCursor {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let size = self.reader.size() as i128;
        let target = match pos {
            std::io::SeekFrom::Start(o) => o as i128,
            std::io::SeekFrom::Current(d) => self.pos as i128 + d as i128,
            std::io::SeekFrom::End(d) => size + d as i128,
        };
        if target < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.pos = target as u64;
        Ok(self.pos)
    }
}

/// Buffer of FFmpeg's custom I/O context: one demuxer read asks for this much.
const IO_BUFFER: usize = 64 * 1024;

/// An open input and what it reads from.
pub struct Opened {
    ictx: format::context::Input,
    media: Media,
}

impl std::ops::Deref for Opened {
    type Target = format::context::Input;
    fn deref(&self) -> &format::context::Input {
        &self.ictx
    }
}

impl std::ops::DerefMut for Opened {
    fn deref_mut(&mut self) -> &mut format::context::Input {
        &mut self.ictx
    }
}

impl Opened {
    /// Bytes taken from the source so far: what the demuxer read from a file, or what the
    /// ranged reader fetched (whole blocks) from a remote object.
    pub fn bytes_read(&self) -> u64 {
        match &self.media {
            Media::Ranged(r) => r.bytes_fetched(),
            Media::File(_) => bytes_read(&self.ictx),
        }
    }
}

/// Does FFmpeg recognise the first bytes of the source as some container?
fn looks_like_media(media: &Media) -> bool {
    let mut buf = vec![0u8; 8192 + ffmpeg::ffi::AVPROBE_PADDING_SIZE as usize];
    let n = media.head(&mut buf[..8192]);
    if n == 0 {
        return false;
    }
    let empty = c"";
    let pd = ffmpeg::ffi::AVProbeData {
        filename: empty.as_ptr(),
        buf: buf.as_mut_ptr(),
        buf_size: n as i32,
        mime_type: std::ptr::null(),
    };
    let mut score = 0;
    // SAFETY: `pd` points at a live buffer padded with AVPROBE_PADDING_SIZE zero bytes.
    let fmt = unsafe { ffmpeg::ffi::av_probe_input_format3(&pd, 1, &mut score) };
    if fmt.is_null() || score <= ffmpeg::ffi::AVPROBE_SCORE_MAX as i32 / 4 {
        return false;
    }
    // SAFETY: `fmt` is a static demuxer description with a C string name.
    let name = unsafe { std::ffi::CStr::from_ptr((*fmt).name) };
    demuxer_allowed(&name.to_string_lossy())
}

/// Opens a source: 415 when it is not a media file, 422 when it is one we cannot read.
pub fn open(media: &Media, deadline: Deadline) -> Result<Opened, TransformError> {
    init();
    let size = media.size()?;
    if size == 0 {
        return Err(TransformError::Unsupported(format!(
            "source {} is empty",
            media.name()
        )));
    }
    let mut opts = ffmpeg::Dictionary::new();
    opts.set(
        "format_whitelist",
        &DEMUXERS.replace(char::is_whitespace, ""),
    );
    let watch = deadline.clone();
    let interrupt = move || watch.expired();
    let opened = match media {
        Media::File(path) => {
            opts.set("protocol_whitelist", "file");
            format::input_with_interrupt_and_dictionary(path, interrupt, opts)
        }
        Media::Ranged(reader) => {
            let io = format::context::StreamIo::from_read_seek_with_capacity(
                RangeCursor {
                    reader: reader.clone(),
                    pos: 0,
                },
                IO_BUFFER,
            )
            .map_err(|e| internal("custom I/O", e))?;
            format::input_from_stream_with_interrupt(io, None, Some(opts), interrupt)
        }
    };
    let e = match opened {
        Ok(ictx) => {
            // An interrupted stream-info pass can still "succeed" half-way.
            deadline.check("open")?;
            return Ok(Opened {
                ictx,
                media: media.clone(),
            });
        }
        Err(e) => e,
    };
    deadline.check("open")?;
    if looks_like_media(media) {
        Err(TransformError::Invalid(format!(
            "cannot read {} ({size} bytes): {e}",
            media.name(),
        )))
    } else {
        Err(TransformError::Unsupported(format!(
            "{} ({size} bytes) is not a video or audio file FFmpeg recognises",
            media.name(),
        )))
    }
}

pub fn file_name(media: &Media) -> String {
    media.name()
}

/// Bytes the demuxer has read from its I/O context so far.
fn bytes_read(ictx: &format::context::Input) -> u64 {
    // SAFETY: the context is live; `pb` is null-checked.
    unsafe {
        let pb = (*ictx.as_ptr()).pb;
        if pb.is_null() {
            0
        } else {
            (*pb).bytes_read.max(0) as u64
        }
    }
}

/// The chosen video stream, checked.
#[derive(Debug, Clone, Copy)]
pub struct VideoStream {
    pub index: usize,
    pub time_base: Rational,
    /// Stream start in `time_base` units (0 when unknown).
    pub start_pts: i64,
    /// Coded size.
    pub width: u32,
    pub height: u32,
    /// Clockwise rotation to apply for display: 0, 90, 180 or 270.
    pub rotation: u32,
    pub fps: f64,
    pub codec: codec::Id,
}

impl VideoStream {
    /// Size after the display rotation.
    pub fn display_size(&self) -> (u32, u32) {
        if self.rotation % 180 == 90 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }

    /// Seconds → stream timestamp.
    pub fn ts(&self, secs: f64) -> i64 {
        self.start_pts + secs_to_ts(secs, self.time_base)
    }
}

pub fn secs_to_ts(secs: f64, tb: Rational) -> i64 {
    if tb.numerator() <= 0 {
        return 0;
    }
    (secs * f64::from(tb.denominator()) / f64::from(tb.numerator())).round() as i64
}

pub fn ts_to_secs(ts: i64, tb: Rational) -> f64 {
    if tb.denominator() == 0 {
        return 0.0;
    }
    ts as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator())
}

/// Clockwise display rotation of a stream, from its display matrix or `rotate` tag.
pub fn rotation_of(stream: &format::stream::Stream) -> u32 {
    for sd in stream.side_data() {
        if sd.kind() == codec::packet::side_data::Type::DisplayMatrix && sd.data().len() >= 36 {
            let mut m = [0i32; 9];
            for (i, c) in sd.data().chunks_exact(4).take(9).enumerate() {
                m[i] = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
            // SAFETY: `m` is a 3x3 display matrix as FFmpeg lays it out.
            let ccw = unsafe { ffmpeg::ffi::av_display_rotation_get(m.as_ptr()) };
            if ccw.is_finite() {
                return quarter_turns(-ccw);
            }
        }
    }
    stream
        .metadata()
        .get("rotate")
        .and_then(|r| r.trim().parse::<f64>().ok())
        .map(quarter_turns)
        .unwrap_or(0)
}

/// Rounds degrees (clockwise) to 0/90/180/270.
fn quarter_turns(deg: f64) -> u32 {
    ((deg / 90.0).round() as i64).rem_euclid(4) as u32 * 90
}

/// Finds and checks the best video stream; `None` when the file has none.
pub fn video_stream(ictx: &format::context::Input) -> Result<Option<VideoStream>, TransformError> {
    let Some(st) = ictx
        .streams()
        .filter(|s| s.parameters().medium() == media::Type::Video)
        .filter(|s| {
            !s.disposition()
                .contains(format::stream::Disposition::ATTACHED_PIC)
        })
        .max_by_key(|s| {
            // SAFETY: parameters pointer of a live stream.
            let p = unsafe { *s.parameters().as_ptr() };
            i64::from(p.width) * i64::from(p.height)
        })
    else {
        return Ok(None);
    };
    // SAFETY: parameters pointer of a live stream.
    let par = unsafe { *st.parameters().as_ptr() };
    let (w, h) = (par.width, par.height);
    if w <= 0 || h <= 0 {
        return Err(TransformError::Invalid(format!(
            "video stream {} has no usable dimensions ({w}x{h})",
            st.index()
        )));
    }
    let (w, h) = (w as u32, h as u32);
    if w > MAX_SOURCE_DIM || h > MAX_SOURCE_DIM || u64::from(w) * u64::from(h) > MAX_SOURCE_PIXELS {
        return Err(TransformError::Unsupported(format!(
            "video dimensions {w}x{h} exceed the {MAX_SOURCE_DIM}x{MAX_SOURCE_DIM} (7680x4320 pixels) limit"
        )));
    }
    let rate = st.avg_frame_rate();
    let rate = if rate.numerator() > 0 && rate.denominator() > 0 {
        rate
    } else {
        st.rate()
    };
    let fps = if rate.denominator() > 0 {
        f64::from(rate.numerator()) / f64::from(rate.denominator())
    } else {
        0.0
    };
    let start = st.start_time();
    Ok(Some(VideoStream {
        index: st.index(),
        time_base: st.time_base(),
        start_pts: if start == ffmpeg::ffi::AV_NOPTS_VALUE {
            0
        } else {
            start
        },
        width: w,
        height: h,
        rotation: rotation_of(&st),
        fps: if fps.is_finite() && fps < 1000.0 {
            fps
        } else {
            0.0
        },
        codec: par.codec_id.into(),
    }))
}

/// The best audio stream's index, if any.
pub fn audio_stream(ictx: &format::context::Input) -> Option<usize> {
    ictx.streams().best(media::Type::Audio).map(|s| s.index())
}

/// Opens a threaded video decoder for stream `index`.
pub fn video_decoder(
    ictx: &format::context::Input,
    index: usize,
) -> Result<decoder::Video, TransformError> {
    let (mut ctx, id) = decoder_context(ictx, index, "video")?;
    ctx.set_threading(codec::threading::Config {
        kind: codec::threading::Type::Frame,
        count: 0,
        safe: false,
    });
    ctx.decoder()
        .video()
        .map_err(|e| no_decoder("video", id, e))
}

/// Opens an audio decoder for stream `index`.
pub fn audio_decoder(
    ictx: &format::context::Input,
    index: usize,
) -> Result<decoder::Audio, TransformError> {
    let (ctx, id) = decoder_context(ictx, index, "audio")?;
    ctx.decoder()
        .audio()
        .map_err(|e| no_decoder("audio", id, e))
}

/// An unopened decoder context for stream `index` (parameters and packet time base set),
/// and its codec.
fn decoder_context(
    ictx: &format::context::Input,
    index: usize,
    kind: &str,
) -> Result<(codec::context::Context, codec::Id), TransformError> {
    let st = ictx
        .stream(index)
        .ok_or_else(|| TransformError::Internal(format!("no stream {index}")))?;
    let mut ctx = codec::context::Context::from_parameters(st.parameters())
        .map_err(|e| invalid(&format!("read the {kind} codec parameters"), e))?;
    // SAFETY: setting the packet time base on an unopened context.
    unsafe {
        (*ctx.as_mut_ptr()).pkt_timebase = st.time_base().into();
    }
    Ok((ctx, st.parameters().id()))
}

fn no_decoder(kind: &str, id: codec::Id, e: ffmpeg::Error) -> TransformError {
    TransformError::Unsupported(format!("no decoder for {kind} codec {id:?}: {e}"))
}

/// Seeks so that the next packets start at the keyframe at or before `secs` (from the
/// file start, in seconds).
pub fn seek(ictx: &mut format::context::Input, secs: f64) -> Result<(), TransformError> {
    let ts = (secs.max(0.0) * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
    // SAFETY: reading a field of a live input context.
    let start = unsafe { (*ictx.as_ptr()).start_time };
    let ts = if start == ffmpeg::ffi::AV_NOPTS_VALUE {
        ts
    } else {
        ts + start
    };
    ictx.seek(ts, ..ts)
        .or_else(|_| ictx.seek(ts, ..))
        .map_err(|e| invalid(&format!("seek to {secs:.3}s"), e))
}

/// Container duration in seconds (0 when unknown).
pub fn duration_secs(ictx: &format::context::Input) -> f64 {
    let d = ictx.duration();
    if d <= 0 || d == ffmpeg::ffi::AV_NOPTS_VALUE {
        0.0
    } else {
        d as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarter_turn_rounding() {
        assert_eq!(quarter_turns(90.0), 90);
        assert_eq!(quarter_turns(-90.0), 270);
        assert_eq!(quarter_turns(180.0), 180);
        assert_eq!(quarter_turns(-180.0), 180);
        assert_eq!(quarter_turns(359.0), 0);
        assert_eq!(quarter_turns(0.0), 0);
    }

    #[test]
    fn timestamps_round_trip() {
        let tb = Rational::new(1, 12800);
        assert_eq!(secs_to_ts(2.5, tb), 32000);
        assert!((ts_to_secs(32000, tb) - 2.5).abs() < 1e-9);
        assert_eq!(secs_to_ts(1.0, Rational::new(0, 1)), 0);
    }
}
