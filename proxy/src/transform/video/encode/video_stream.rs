//! The video stream of the encode pipeline: encoder selection and settings (CRF presets,
//! bitrate, the `hvc1` tag, forced IDR keyframes for HLS), and the decode → filter →
//! encode path of its frames inside the clip window. It must not decide geometry: the
//! filter chain comes from the caller's [`VideoSettings::chain`].

use ffmpeg::{codec, encoder, format, frame, Packet, Rational, Rescale as _};
use ffmpeg_next as ffmpeg;
use filters::Codec;

use super::super::graph::VideoGraph;
use super::super::input::{self, internal, VideoStream};
use super::mux::Mux;
use super::{Setup, VideoSettings, Window};
use crate::transform::TransformError;

/// Picks the encoder for a codec: the first one this FFmpeg build has.
pub fn video_encoder_for(c: Codec) -> Result<ffmpeg::Codec, TransformError> {
    let names: &[&str] = match c {
        Codec::H264 => &["libx264"],
        Codec::H265 => &["libx265"],
        Codec::Vp9 => &["libvpx-vp9"],
        Codec::Av1 => &["libsvtav1", "libaom-av1", "librav1e"],
    };
    names
        .iter()
        .find_map(|n| encoder::find_by_name(n))
        .ok_or_else(|| {
            TransformError::Unsupported(format!(
                "codec {c} is not available: this FFmpeg build has none of the encoders {}",
                names.join(", ")
            ))
        })
}

/// The private options of encoder `name` for the settings (CRF on the x264 scale mapped to
/// each encoder's, speed from the preset).
fn encoder_options(name: &str, v: &VideoSettings) -> ffmpeg::Dictionary<'static> {
    let crf = v.crf.min(51);
    // VP9 and AV1 encoders take CRF on a 0..=63 scale.
    let crf63 = (crf * 63 / 51).to_string();
    // Constant quality unless a bitrate was asked for.
    let by_quality = v.bitrate.is_none();
    let mut o: Vec<(&str, String)> = Vec::new();
    match name {
        "libx264" | "libx265" => {
            let x265 = name == "libx265";
            o.push(("preset", v.preset.into()));
            if by_quality {
                let crf = if x265 { (crf + 5).min(51) } else { crf };
                o.push(("crf", crf.to_string()));
            }
            if x265 {
                o.push(("x265-params", "log-level=error".into()));
            }
            if v.keyframe_every.is_some() {
                // Forced keyframes (HLS segment starts) must be IDR: a segment then starts
                // with a closed GOP, and the TS muxer repeats SPS/PPS before it.
                o.push(("forced-idr", "1".into()));
            }
        }
        "libvpx-vp9" => {
            if by_quality {
                o.extend([("crf", crf63), ("b", "0".into())]);
            }
            let cpu = match v.preset {
                "ultrafast" | "superfast" | "veryfast" | "faster" | "fast" => "5",
                "medium" => "4",
                _ => "2",
            };
            o.extend([("deadline", "good"), ("cpu-used", cpu), ("row-mt", "1")].map(owned));
        }
        "libsvtav1" => o.extend([("crf", crf63), ("preset", "8".into())]),
        "libaom-av1" => {
            if by_quality {
                o.push(("crf", crf63));
            }
            o.extend([("cpu-used", "8"), ("row-mt", "1"), ("usage", "realtime")].map(owned));
        }
        _ => o.push(("speed", "10".into())),
    }
    let mut opts = ffmpeg::Dictionary::new();
    for (k, v) in &o {
        opts.set(k, v);
    }
    opts
}

fn owned<'a>((k, v): (&'a str, &str)) -> (&'a str, String) {
    (k, v.to_string())
}

/// The video stream from decoder to muxer.
pub(super) struct VideoPath {
    pub vs: VideoStream,
    ost: usize,
    dec: ffmpeg::decoder::Video,
    graph: VideoGraph,
    enc: encoder::Video,
    enc_tb: Rational,
    /// One frame's duration in `enc_tb` (for packets the encoder leaves without one).
    frame_dur: i64,
    keyframe_every: Option<f64>,
    next_keyframe: f64,
    /// The clip in source stream units.
    window: Window,
    /// The clip's end was reached.
    pub done: bool,
}

impl VideoPath {
    /// Opens the decoder, the filter graph and the encoder of `vs`, and adds the output
    /// stream to `octx`.
    pub fn build(
        setup: &mut Setup,
        vs: VideoStream,
        v: &VideoSettings,
        window: Window,
    ) -> Result<VideoPath, TransformError> {
        let (ictx, speed, global_header) = (setup.ictx, setup.speed, setup.global_header);
        let codec = video_encoder_for(v.codec)?;
        let dec = input::video_decoder(ictx, vs.index)?;
        if dec.format() == format::Pixel::None {
            return Err(TransformError::Invalid(
                "video stream has an unknown pixel format".into(),
            ));
        }
        let mut chain = (v.chain)(&vs)?;
        if let Some(s) = speed {
            chain = format!("setpts=PTS/{s:.6},{chain}");
        }
        let st = ictx
            .stream(vs.index)
            .ok_or_else(|| TransformError::Internal("video stream vanished".into()))?;
        let mut graph = VideoGraph::new(
            dec.width(),
            dec.height(),
            dec.format(),
            vs.time_base,
            dec.aspect_ratio(),
            st.avg_frame_rate(),
            &chain,
        )?;
        let out = graph.output()?;
        let mut enc = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| internal("video encoder", e))?;
        enc.set_width(out.width);
        enc.set_height(out.height);
        // Every video chain ends in `format=yuv420p`.
        enc.set_format(format::Pixel::YUV420P);
        enc.set_time_base(out.time_base);
        let rate = if out.frame_rate.numerator() > 0 && out.frame_rate.denominator() > 0 {
            out.frame_rate
        } else {
            st.avg_frame_rate()
        };
        if rate.numerator() > 0 && rate.denominator() > 0 {
            enc.set_frame_rate(Some(rate));
        }
        enc.set_aspect_ratio(Rational::new(1, 1));
        // AVCodecContext defaults to one thread; let the encoder pick (as the CLI does).
        // SAFETY: field write on an unopened context.
        unsafe {
            (*enc.as_mut_ptr()).thread_count = 0;
        }
        if global_header {
            enc.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        if let Some(b) = v.bitrate {
            enc.set_bit_rate(b as usize);
            enc.set_max_bit_rate(b as usize * 3 / 2);
            // SAFETY: field write on an unopened context.
            unsafe {
                (*enc.as_mut_ptr()).rc_buffer_size = (b * 2).min(i32::MAX as u64) as i32;
            }
        }
        let name = codec.name().to_string();
        let enc = enc
            .open_with(encoder_options(&name, v))
            .map_err(|e| internal(&format!("open the {name} encoder"), e))?;
        let mut ost = setup
            .octx
            .add_stream(codec)
            .map_err(|e| internal("add the video stream", e))?;
        ost.set_parameters(&enc);
        ost.set_time_base(out.time_base);
        if v.codec == Codec::H265 {
            // Apple players want `hvc1`, not the default `hev1`.
            // SAFETY: writing the codec tag of a stream before the header is written.
            unsafe {
                (*ost.parameters().as_mut_ptr()).codec_tag = u32::from_le_bytes(*b"hvc1");
            }
        }
        Ok(VideoPath {
            vs,
            ost: ost.index(),
            dec,
            graph,
            enc,
            enc_tb: out.time_base,
            frame_dur: if rate.numerator() > 0 {
                1i64.rescale(rate.invert(), out.time_base).max(1)
            } else {
                0
            },
            keyframe_every: v.keyframe_every,
            next_keyframe: 0.0,
            window,
            done: false,
        })
    }

    /// The encoded size.
    pub fn size(&self) -> (u32, u32) {
        (self.enc.width(), self.enc.height())
    }

    /// Decodes a packet of this stream and encodes the frames inside the window; a packet
    /// the decoder refuses as invalid is counted in `invalid`.
    pub fn packet(
        &mut self,
        packet: &Packet,
        mux: &mut Mux,
        invalid: &mut u32,
    ) -> Result<(), TransformError> {
        match self.dec.send_packet(packet) {
            Ok(()) => {}
            Err(ffmpeg::Error::InvalidData) => *invalid += 1,
            Err(e) => return Err(input::invalid("decode the video", e)),
        }
        self.feed(mux)
    }

    /// Drains the decoder (after end of file when `eof`), the graph and the encoder.
    pub fn flush(&mut self, eof: bool, mux: &mut Mux) -> Result<(), TransformError> {
        if eof {
            let _ = self.dec.send_eof();
            let done = self.done;
            self.feed(mux)?;
            self.done = done;
        }
        self.graph.flush()?;
        self.drain(mux)?;
        self.enc
            .send_eof()
            .map_err(|e| internal("flush the video encoder", e))?;
        self.receive(mux)
    }

    /// Feeds decoded frames inside the window to the graph.
    fn feed(&mut self, mux: &mut Mux) -> Result<(), TransformError> {
        let start = self.window.start;
        let mut f = frame::Video::empty();
        while self.dec.receive_frame(&mut f).is_ok() {
            let Some(pts) = f.timestamp() else { continue };
            if pts < start {
                continue;
            }
            if self.window.ended(pts) {
                self.done = true;
                continue;
            }
            f.set_pts(Some(pts - start));
            self.graph.push(&f)?;
            self.drain(mux)?;
        }
        Ok(())
    }

    /// Encodes what the graph has, forcing keyframes on the HLS segment grid.
    fn drain(&mut self, mux: &mut Mux) -> Result<(), TransformError> {
        let mut f = frame::Video::empty();
        while self.graph.pull(&mut f)? {
            let kind = match self.keyframe_every {
                Some(every) => {
                    let secs = f
                        .pts()
                        .map(|p| input::ts_to_secs(p, self.enc_tb))
                        .unwrap_or(0.0);
                    if secs + 1e-3 >= self.next_keyframe {
                        while self.next_keyframe <= secs + 1e-3 {
                            self.next_keyframe += every;
                        }
                        ffmpeg::picture::Type::I
                    } else {
                        ffmpeg::picture::Type::None
                    }
                }
                None => ffmpeg::picture::Type::None,
            };
            f.set_kind(kind);
            self.enc
                .send_frame(&f)
                .map_err(|e| internal("encode video", e))?;
            self.receive(mux)?;
        }
        Ok(())
    }

    /// Writes the packets the encoder has ready.
    fn receive(&mut self, mux: &mut Mux) -> Result<(), TransformError> {
        let mut p = Packet::empty();
        while self.enc.receive_packet(&mut p).is_ok() {
            if p.duration() <= 0 && self.frame_dur > 0 {
                p.set_duration(self.frame_dur);
            }
            mux.write(&mut p, self.ost, self.enc_tb)?;
        }
        Ok(())
    }
}
