//! Still images out of a video: `mode=frame` (one frame at `time`) and `mode=spritesheet`
//! (N evenly spaced frames tiled into one JPEG). Owns frame-accurate positioning (seek to
//! the keyframe before the target, decode forward, skipping non-reference frames while far
//! from it, and decode on instead of seeking when the next target shares the GOP) and the
//! in-process image encoders (FFmpeg's mjpeg, png and libwebp). Results are small and
//! returned in memory. It must not plan geometry (the shared planner does, through
//! `graph::push_fit`) and never writes files.

use super::input::Media;

use bytes::Bytes;
use ffmpeg::{codec, format, frame, Packet, Rational};
use ffmpeg_next as ffmpeg;
use filters::{Format, Mode, Quality, TransformSpec};

use super::graph::{self, VideoGraph};
use super::input::{self, Deadline, VideoStream};
use super::VideoOptions;
use crate::transform::{Output, TransformError};

/// Largest thumbnail box (landscape; swapped for portrait sources): the same box as the
/// `/proxy/thumbnail` route's limits.
pub const THUMB_MAX: (u32, u32) = (
    filters::content::THUMB_MAX_WIDTH,
    filters::content::THUMB_MAX_HEIGHT,
);
/// Default spritesheet tile width.
pub const SPRITE_TILE_WIDTH: u32 = 160;
/// Default number of spritesheet frames.
pub const SPRITE_COUNT: u32 = 20;
/// Largest spritesheet side.
pub const SPRITE_MAX_SIDE: u32 = 8192;

/// Reads frames of one video stream at increasing times.
pub struct Cursor {
    pub ictx: input::Opened,
    pub vs: VideoStream,
    decoder: ffmpeg::decoder::Video,
    /// Timestamp of the last frame the decoder produced.
    pos: Option<i64>,
    /// The last decoded frame, held back until we know the next one is past the target.
    last: Option<(i64, frame::Video)>,
    eof: bool,
    deadline: Deadline,
    has_index: bool,
    pub duration: f64,
}

impl Cursor {
    pub fn open(path: &Media, deadline: Deadline) -> Result<Cursor, TransformError> {
        let mut ictx = input::open(path, deadline.clone())?;
        let vs = input::video_stream(&ictx)?.ok_or_else(|| {
            TransformError::Unsupported(format!(
                "{} has no video stream to take a frame from",
                input::file_name(path)
            ))
        })?;
        // Only the video stream is demuxed.
        // SAFETY: adjusting `discard` on the streams of a live input context.
        let has_index = unsafe {
            let ctx = ictx.as_mut_ptr();
            for i in 0..(*ctx).nb_streams as usize {
                let st = *(*ctx).streams.add(i);
                if i != vs.index {
                    (*st).discard = ffmpeg::ffi::AVDiscard::AVDISCARD_ALL;
                }
            }
            let st = *(*ctx).streams.add(vs.index);
            ffmpeg::ffi::avformat_index_get_entries_count(st) > 1
        };
        let decoder = input::video_decoder(&ictx, vs.index)?;
        let mut duration = input::duration_secs(&ictx);
        if duration <= 0.0 {
            if let Some(st) = ictx.stream(vs.index) {
                duration = input::ts_to_secs(st.duration().max(0), st.time_base());
            }
        }
        Ok(Cursor {
            ictx,
            vs,
            decoder,
            pos: None,
            last: None,
            eof: false,
            deadline,
            has_index,
            duration,
        })
    }

    /// Is there a keyframe in `(after, target]`? (Then seeking beats decoding on.)
    fn keyframe_between(&self, after: i64, target: i64) -> bool {
        if !self.has_index {
            return input::ts_to_secs(target - after, self.vs.time_base) > 2.0;
        }
        // SAFETY: index lookups on a live stream; the entry pointer is null-checked.
        unsafe {
            let ctx = self.ictx.as_ptr();
            let st = *(*ctx).streams.add(self.vs.index);
            let i = ffmpeg::ffi::av_index_search_timestamp(
                st,
                target,
                ffmpeg::ffi::AVSEEK_FLAG_BACKWARD as i32,
            );
            if i < 0 {
                return false;
            }
            let e = ffmpeg::ffi::avformat_index_get_entry(st, i);
            !e.is_null() && (*e).timestamp > after
        }
    }

    /// Whether an indexed keyframe has `lo <= timestamp < hi` (index timestamps are decode
    /// times, a few frames off presentation times: close enough to choose a seek point).
    fn keyframe_in(&self, lo: i64, hi: i64) -> bool {
        if !self.has_index || hi <= lo {
            return false;
        }
        // SAFETY: index lookups on a live stream; the entry pointer is null-checked.
        unsafe {
            let ctx = self.ictx.as_ptr();
            let st = *(*ctx).streams.add(self.vs.index);
            let i = ffmpeg::ffi::av_index_search_timestamp(st, lo, 0);
            if i < 0 {
                return false;
            }
            let e = ffmpeg::ffi::avformat_index_get_entry(st, i);
            !e.is_null() && (*e).timestamp >= lo && (*e).timestamp < hi
        }
    }

    /// The frame on screen at `secs` (from the stream start); the last frame when `secs`
    /// is past the end. With `tolerance` > 0 the first frame at or after
    /// `secs - tolerance` will do (spritesheets: any frame within the tile's slot).
    pub fn frame_at(&mut self, secs: f64, tolerance: f64) -> Result<frame::Video, TransformError> {
        let exact = tolerance <= 0.0;
        let window_end_secs = secs + tolerance.max(0.0);
        let secs = if exact {
            secs
        } else {
            (secs - tolerance).max(0.0)
        };
        let target = self.vs.ts(secs.max(0.0));
        // Any frame of the window will do: when a keyframe lies inside it and decoding is not
        // already there, seek (backward) from the window's end, which lands on that keyframe,
        // and take it: one frame decoded instead of all from the keyframe before the window.
        let window_end = self.vs.ts(window_end_secs);
        let jump = !exact
            && self.pos.is_none_or(|p| p < target || p >= window_end)
            && self.keyframe_in(target, window_end);
        let seek_secs = if jump { window_end_secs } else { secs };
        let seek = jump
            || match self.pos {
                None => true,
                Some(p) => target < p || self.keyframe_between(p, target),
            };
        if let Some((lp, _)) = &self.last {
            if *lp == target {
                if let Some((_, f)) = self.last.take() {
                    return Ok(f);
                }
            }
        }
        if seek {
            input::seek(&mut self.ictx, seek_secs)?;
            self.decoder.flush();
            self.pos = None;
            self.last = None;
            self.eof = false;
        }
        // Skip non-reference frames until ~0.25 s before the target.
        let margin = input::secs_to_ts(0.25, self.vs.time_base);
        let mut skipping = false;
        self.decoder.skip_frame(codec::discard::Discard::Default);
        let mut invalid_packets = 0u32;
        let mut decoded = frame::Video::empty();
        loop {
            self.deadline.check("frame extraction")?;
            while self.decoder.receive_frame(&mut decoded).is_ok() {
                let pts = decoded
                    .timestamp()
                    .or_else(|| self.pos.map(|p| p + 1))
                    .unwrap_or(0);
                self.pos = Some(pts);
                let f = std::mem::replace(&mut decoded, frame::Video::empty());
                if pts >= target {
                    return Ok(match self.last.take() {
                        Some((lp, prev)) if exact && pts > target && lp <= target => {
                            self.last = Some((pts, f));
                            prev
                        }
                        _ => f,
                    });
                }
                self.last = Some((pts, f));
            }
            if self.eof {
                return self.last.take().map(|(_, f)| f).ok_or_else(|| {
                    TransformError::Invalid(format!(
                        "no decodable video frame at or before {secs:.3}s"
                    ))
                });
            }
            let mut packet = Packet::empty();
            match packet.read(&mut self.ictx) {
                Ok(()) => {
                    if packet.stream() != self.vs.index {
                        continue;
                    }
                    let far = packet.pts().is_some_and(|p| p < target - margin);
                    if far != skipping {
                        skipping = far;
                        self.decoder.skip_frame(if far {
                            codec::discard::Discard::NonReference
                        } else {
                            codec::discard::Discard::Default
                        });
                    }
                    match self.decoder.send_packet(&packet) {
                        Ok(()) => {}
                        Err(ffmpeg::Error::InvalidData) => invalid_packets += 1,
                        Err(e) => return Err(input::invalid("decode the video", e)),
                    }
                }
                Err(ffmpeg::Error::InvalidData) => invalid_packets += 1,
                // End of file, or a truncated/unreadable tail: decode what we have.
                Err(_) => {
                    self.deadline.check("frame extraction")?;
                    self.eof = true;
                    self.decoder.skip_frame(codec::discard::Discard::Default);
                    let _ = self.decoder.send_eof();
                }
            }
            if invalid_packets > 1000 {
                return Err(TransformError::Invalid(
                    "video stream is corrupt: over 1000 undecodable packets".into(),
                ));
            }
        }
    }

    pub fn bytes_read(&self) -> u64 {
        self.ictx.bytes_read()
    }
}

/// Scales frames (one graph reused while the input format stays the same).
struct Scaler {
    key: (u32, u32, i32),
    graph: VideoGraph,
}

fn scale_frame(
    scaler: &mut Option<Scaler>,
    f: &frame::Video,
    time_base: Rational,
    chain: &str,
) -> Result<frame::Video, TransformError> {
    let pix_id: ffmpeg::ffi::AVPixelFormat = f.format().into();
    let key = (f.width(), f.height(), pix_id as i32);
    if scaler.as_ref().map(|s| s.key) != Some(key) {
        *scaler = Some(Scaler {
            key,
            graph: VideoGraph::new(
                f.width(),
                f.height(),
                f.format(),
                time_base,
                f.aspect_ratio(),
                Rational::new(0, 1),
                chain,
            )?,
        });
    }
    let s = scaler
        .as_mut()
        .ok_or_else(|| TransformError::Internal("scaler missing".into()))?;
    s.graph.push(f)?;
    let mut out = frame::Video::empty();
    if s.graph.pull(&mut out)? {
        Ok(out)
    } else {
        Err(TransformError::Internal(
            "video filters produced no frame".into(),
        ))
    }
}

/// JPEG quality (1..=100) → mjpeg qscale (2 best ..=31).
fn jpeg_qscale(q: u8) -> i32 {
    let q = f32::from(q.clamp(1, 100));
    (2.0 + (100.0 - q) * 14.0 / 100.0).round().clamp(2.0, 31.0) as i32
}

/// Which image format a still is written as.
fn still_format(spec: &TransformSpec) -> Result<Format, TransformError> {
    match spec.format {
        // FFmpeg's MJPEG encoder writes baseline JPEG either way.
        None | Some(Format::Auto | Format::Jpeg | Format::BaselineJpeg) => Ok(Format::Jpeg),
        Some(Format::Png) => Ok(Format::Png),
        Some(Format::Webp) if spec.mode == Mode::Frame => Ok(Format::Webp),
        Some(other) => Err(TransformError::Unsupported(format!(
            "format {other} is not available for mode={}: use jpeg{}",
            spec.mode,
            if spec.mode == Mode::Frame {
                ", png or webp"
            } else {
                ""
            }
        ))),
    }
}

fn pix_for(fmt: Format) -> (format::Pixel, &'static str) {
    match fmt {
        Format::Png => (format::Pixel::RGB24, "rgb24"),
        Format::Webp => (format::Pixel::YUV420P, "yuv420p"),
        _ => (format::Pixel::YUVJ420P, "yuvj420p"),
    }
}

/// Encodes one picture (already in the encoder's pixel format).
pub fn encode_still(
    f: &frame::Video,
    fmt: Format,
    quality: Option<Quality>,
    compression: Option<filters::Compression>,
) -> Result<Vec<u8>, TransformError> {
    let codec = match fmt {
        Format::Png => ffmpeg::encoder::find(codec::Id::PNG),
        Format::Webp => ffmpeg::encoder::find_by_name("libwebp"),
        _ => ffmpeg::encoder::find(codec::Id::MJPEG),
    }
    .ok_or_else(|| {
        TransformError::Unsupported(format!("this FFmpeg build has no {fmt} encoder"))
    })?;
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| input::internal("image encoder", e))?;
    enc.set_width(f.width());
    enc.set_height(f.height());
    enc.set_format(f.format());
    enc.set_time_base(Rational::new(1, 25));
    let mut opts = ffmpeg::Dictionary::new();
    let level = quality.and_then(Quality::level);
    let mut frame = f.clone();
    frame.set_pts(Some(0));
    match fmt {
        Format::Png => {
            let lvl = match compression {
                Some(filters::Compression::Level(l)) => i32::from(l),
                Some(filters::Compression::Fast) => 1,
                None => 6,
            };
            opts.set("compression_level", &lvl.to_string());
        }
        Format::Webp => {
            if quality == Some(Quality::Lossless) {
                opts.set("lossless", "1");
            }
            opts.set("quality", &level.unwrap_or(75).to_string());
        }
        _ => {
            let lambda = jpeg_qscale(level.unwrap_or(80)) * ffmpeg::ffi::FF_QP2LAMBDA as i32;
            enc.set_flags(codec::Flags::QSCALE);
            enc.set_global_quality(lambda);
            // SAFETY: plain field writes on a frame and an unopened context we own.
            unsafe {
                (*frame.as_mut_ptr()).quality = lambda;
                (*enc.as_mut_ptr()).color_range = ffmpeg::ffi::AVColorRange::AVCOL_RANGE_JPEG;
            }
        }
    }
    let mut enc = enc
        .open_with(opts)
        .map_err(|e| input::internal(&format!("open the {fmt} encoder"), e))?;
    enc.send_frame(&frame)
        .map_err(|e| input::internal(&format!("{fmt} encode"), e))?;
    enc.send_eof()
        .map_err(|e| input::internal(&format!("{fmt} encode"), e))?;
    let mut out = Vec::new();
    let mut packet = Packet::empty();
    while enc.receive_packet(&mut packet).is_ok() {
        if let Some(d) = packet.data() {
            out.extend_from_slice(d);
        }
    }
    if out.is_empty() {
        return Err(TransformError::Internal(format!(
            "{fmt} encoder produced no data"
        )));
    }
    Ok(out)
}

/// The thumbnail box for a picture of `w`×`h`, within the options' limits.
fn thumb_box(w: u32, h: u32, opts: &VideoOptions) -> (u32, u32) {
    let (mw, mh) = if h > w {
        (THUMB_MAX.1, THUMB_MAX.0)
    } else {
        THUMB_MAX
    };
    (
        mw.min(opts.max_width.max(2)),
        mh.min(opts.max_height.max(2)),
    )
}

/// Opens `path` for stills of `spec`: the output format and a cursor, refusing a `time`
/// past the end (at the end too, when `end_is_past`).
fn open_still(
    path: impl Into<Media>,
    spec: &TransformSpec,
    opts: &VideoOptions,
    end_is_past: bool,
) -> Result<(Format, Cursor, f64), TransformError> {
    let fmt = still_format(spec)?;
    let cur = Cursor::open(&path.into(), Deadline::new(opts.timeout))?;
    let secs = spec.time_ms.unwrap_or(0) as f64 / 1000.0;
    let past = if end_is_past {
        secs >= cur.duration
    } else {
        secs > cur.duration
    };
    if cur.duration > 0.0 && past {
        return Err(TransformError::BadRequest(format!(
            "time {secs}s is past the end of the {:.3}s video",
            cur.duration
        )));
    }
    Ok((fmt, cur, secs))
}

/// `mode=frame`: the frame on screen at `time`, fitted, as jpeg (default), png or webp.
pub fn frame(
    path: impl Into<Media>,
    spec: &TransformSpec,
    opts: &VideoOptions,
) -> Result<Output, TransformError> {
    let (fmt, mut cur, secs) = open_still(path, spec, opts, false)?;
    let (mut chain, (w, h)) = graph::source_chain(&cur.vs, spec)?;
    let req = graph::fit_request(spec, thumb_box(w, h, opts), false);
    graph::push_fit(&mut chain, (w, h), spec, &req)?;
    let (_, pix) = pix_for(fmt);
    chain.push(format!("format={pix}"));
    let decoded = cur.frame_at(secs, 0.0)?;
    let tb = cur.vs.time_base;
    let mut scaler = None;
    let pic = scale_frame(&mut scaler, &decoded, tb, &chain.join(","))?;
    let body = encode_still(&pic, fmt, spec.quality, spec.compression)?;
    Ok(Output {
        body: Bytes::from(body),
        content_type: fmt.mime().unwrap_or("image/jpeg"),
        width: pic.width(),
        height: pic.height(),
        headers: vec![(
            "X-Source-Bytes-Read".to_string(),
            cur.bytes_read().to_string(),
        )],
    })
}

/// `mode=spritesheet`: `imageCount` (default 20) frames from `time` over `duration`
/// (default: to the end), tiled `ceil(sqrt(N))` columns wide, as one JPEG.
pub fn spritesheet(
    path: impl Into<Media>,
    spec: &TransformSpec,
    opts: &VideoOptions,
) -> Result<Output, TransformError> {
    let (fmt, mut cur, start) = open_still(path, spec, opts, true)?;
    let n = spec.image_count.unwrap_or(SPRITE_COUNT).clamp(1, 100);
    let end = match spec.duration_ms {
        Some(d) => start + d as f64 / 1000.0,
        None => cur.duration,
    };
    let end = if cur.duration > 0.0 {
        end.min(cur.duration)
    } else {
        end
    };
    let span = (end - start).max(0.0);
    let cols = (f64::from(n).sqrt().ceil() as u32).max(1);
    let rows = n.div_ceil(cols);
    let (mut chain, (w, h)) = graph::source_chain(&cur.vs, spec)?;
    // Tile size: the requested box, else SPRITE_TILE_WIDTH wide; even for yuv420p.
    let (mw, mh) = thumb_box(w, h, opts);
    let mut req = graph::fit_request(
        spec,
        (
            mw.min(SPRITE_MAX_SIDE / cols),
            mh.min(SPRITE_MAX_SIDE / rows),
        ),
        true,
    );
    if req.width.is_none() && req.height.is_none() {
        req.width = Some(SPRITE_TILE_WIDTH);
    }
    let (tw, th) = graph::push_fit(&mut chain, (w, h), spec, &req)?;
    let (pix, pix_name) = pix_for(fmt);
    chain.push(format!("format={pix_name}"));
    let chain = chain.join(",");

    let mut sheet = frame::Video::new(pix, tw * cols, th * rows);
    fill_black(&mut sheet, fmt);
    let mut scaler = None;
    let tb = cur.vs.time_base;
    for i in 0..n {
        // Tile i stands for the slot [start + i*span/n, start + (i+1)*span/n): aim at its
        // middle, and take any frame from the slot's start on (saves decoding).
        let slot = span / f64::from(n);
        let t = start + slot * (f64::from(i) + 0.5);
        let decoded = cur.frame_at(t, (slot / 2.0).min(2.0))?;
        let tile = scale_frame(&mut scaler, &decoded, tb, &chain)?;
        blit(&mut sheet, &tile, (i % cols) * tw, (i / cols) * th, fmt);
    }
    let body = encode_still(&sheet, fmt, spec.quality, spec.compression)?;
    Ok(Output {
        body: Bytes::from(body),
        content_type: fmt.mime().unwrap_or("image/jpeg"),
        width: sheet.width(),
        height: sheet.height(),
        headers: vec![
            (
                "X-Source-Bytes-Read".to_string(),
                cur.bytes_read().to_string(),
            ),
            ("X-Sprite-Grid".to_string(), format!("{cols}x{rows}")),
            ("X-Sprite-Tile".to_string(), format!("{tw}x{th}")),
        ],
    })
}

/// Paints a fresh picture black.
fn fill_black(f: &mut frame::Video, fmt: Format) {
    let planes = f.planes();
    for p in 0..planes {
        let v = if fmt == Format::Png || p == 0 { 0 } else { 128 };
        f.data_mut(p).fill(v);
    }
}

/// Copies `tile` into `dst` at (`x`, `y`) (even for 4:2:0 planes).
fn blit(dst: &mut frame::Video, tile: &frame::Video, x: u32, y: u32, fmt: Format) {
    let planes = if fmt == Format::Png { 1 } else { 3 };
    for p in 0..planes.min(tile.planes()).min(dst.planes()) {
        let (bpp, sub) = match (fmt, p) {
            (Format::Png, _) => (3usize, 0u32),
            (_, 0) => (1, 0),
            _ => (1, 1),
        };
        let (px, py) = ((x >> sub) as usize * bpp, (y >> sub) as usize);
        let row_bytes = (tile.plane_width(p) as usize * bpp).min(tile.stride(p));
        let rows = tile.plane_height(p) as usize;
        let (ds, ts) = (dst.stride(p), tile.stride(p));
        let src = tile.data(p);
        let out = dst.data_mut(p);
        for r in 0..rows {
            let (so, doff) = (r * ts, (py + r) * ds + px);
            if so + row_bytes <= src.len() && doff + row_bytes <= out.len() {
                out[doff..doff + row_bytes].copy_from_slice(&src[so..so + row_bytes]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_quality_maps_to_qscale() {
        assert_eq!(jpeg_qscale(100), 2);
        assert_eq!(jpeg_qscale(90), 3);
        assert_eq!(jpeg_qscale(60), 8);
        assert_eq!(jpeg_qscale(1), 16);
    }
}
