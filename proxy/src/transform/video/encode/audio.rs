//! The audio stream of the encode pipeline: stream copy when the container takes the
//! source's codec as it is (AAC in MP4/M4A/HLS, Opus or Vorbis in WebM, no speed change),
//! else decode → `atempo`/`aresample`/`aformat` → AAC or Opus, inside the clip window.
//! It must not touch the video stream or the container options.

use ffmpeg::{codec, encoder, format, frame, Packet, Rational, Rescale as _};
use ffmpeg_next as ffmpeg;

use super::super::graph::AudioGraph;
use super::super::input::{self, internal};
use super::mux::Mux;
use super::{Container, Setup, Window};
use crate::transform::TransformError;

/// The AAC sample rates an encoder accepts; others are resampled to 48 kHz.
const AAC_RATES: &[i32] = &[
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
];

/// The audio stream from demuxer (or decoder) to muxer.
pub(super) struct AudioPath {
    ist: usize,
    ist_tb: Rational,
    ost: usize,
    /// The clip in source stream units.
    window: Window,
    /// The clip's end was reached.
    pub done: bool,
    coding: Coding,
}

enum Coding {
    /// Packets go to the muxer as they are.
    Copy,
    Encode {
        dec: ffmpeg::decoder::Audio,
        graph: AudioGraph,
        enc: encoder::Audio,
    },
}

impl AudioPath {
    /// Sets up stream `ist` for `container`: a copy when it can be, else an encoder; adds
    /// the output stream to `octx`. `clip` is the source window in seconds.
    pub fn build(
        setup: &mut Setup,
        ist: usize,
        container: &Container,
        clip: (f64, Option<f64>),
    ) -> Result<AudioPath, TransformError> {
        let (ictx, speed) = (setup.ictx, setup.speed);
        let st = ictx
            .stream(ist)
            .ok_or_else(|| TransformError::Internal("audio stream vanished".into()))?;
        let id = st.parameters().id();
        let webm = matches!(container, Container::Webm);
        let copy = speed.is_none()
            && if webm {
                matches!(id, codec::Id::OPUS | codec::Id::VORBIS)
            } else {
                id == codec::Id::AAC
            };
        let ist_tb = st.time_base();
        let start = match st.start_time() {
            ffmpeg::ffi::AV_NOPTS_VALUE => 0,
            t => t,
        };
        let (ost, coding) = if copy {
            let mut o = setup
                .octx
                .add_stream(encoder::find(codec::Id::None))
                .map_err(|e| internal("add the audio stream", e))?;
            o.set_parameters(st.parameters());
            // SAFETY: resetting the codec tag so the muxer picks its own.
            unsafe {
                (*o.parameters().as_mut_ptr()).codec_tag = 0;
            }
            (o.index(), Coding::Copy)
        } else {
            encoder_for(setup, ist, ist_tb, webm)?
        };
        Ok(AudioPath {
            ist,
            ist_tb,
            ost,
            window: Window::new(clip, ist_tb, start),
            done: false,
            coding,
        })
    }

    /// The source stream index.
    pub fn index(&self) -> usize {
        self.ist
    }

    /// Takes a packet of this stream: copies it, or decodes it and encodes the samples
    /// inside the window; a packet the decoder refuses as invalid is counted in `invalid`.
    pub fn packet(
        &mut self,
        packet: &mut Packet,
        mux: &mut Mux,
        invalid: &mut u32,
    ) -> Result<(), TransformError> {
        let Coding::Encode { dec, .. } = &mut self.coding else {
            return self.copy(packet, mux);
        };
        match dec.send_packet(packet) {
            Ok(()) => {}
            Err(ffmpeg::Error::InvalidData) => *invalid += 1,
            Err(e) => return Err(input::invalid("decode the audio", e)),
        }
        self.feed(mux)
    }

    /// Drains the decoder (after end of file when `eof`), the graph and the encoder.
    pub fn flush(&mut self, eof: bool, mux: &mut Mux) -> Result<(), TransformError> {
        let done = self.done;
        if eof {
            if let Coding::Encode { dec, .. } = &mut self.coding {
                let _ = dec.send_eof();
            }
            self.feed(mux)?;
        }
        self.done = done;
        let ost = self.ost;
        if let Coding::Encode { graph, enc, .. } = &mut self.coding {
            graph.flush()?;
            drain(graph, enc, ost, mux)?;
            enc.send_eof()
                .map_err(|e| internal("flush the audio encoder", e))?;
            receive(enc, ost, mux)?;
        }
        Ok(())
    }

    /// A copied packet inside the window, moved to the window's start.
    fn copy(&mut self, packet: &mut Packet, mux: &mut Mux) -> Result<(), TransformError> {
        let start = self.window.start;
        let Some(pts) = packet.pts() else {
            return Ok(());
        };
        if pts + packet.duration().max(0) <= start {
            return Ok(());
        }
        if self.window.ended(pts) {
            self.done = true;
            return Ok(());
        }
        packet.set_pts(Some(pts - start));
        packet.set_dts(packet.dts().map(|d| d - start));
        mux.write(packet, self.ost, self.ist_tb)
    }

    /// Feeds decoded samples inside the window to the graph.
    fn feed(&mut self, mux: &mut Mux) -> Result<(), TransformError> {
        let (start, ist_tb, ost) = (self.window.start, self.ist_tb, self.ost);
        let Coding::Encode { dec, graph, enc } = &mut self.coding else {
            return Ok(());
        };
        let mut f = frame::Audio::empty();
        while dec.receive_frame(&mut f).is_ok() {
            let Some(pts) = f.timestamp() else { continue };
            let dur =
                (f.samples() as i64).rescale(Rational::new(1, f.rate().max(1) as i32), ist_tb);
            if pts + dur <= start {
                continue;
            }
            if self.window.ended(pts) {
                self.done = true;
                continue;
            }
            f.set_pts(Some(pts - start));
            graph.push(&f)?;
            drain(graph, enc, ost, mux)?;
        }
        Ok(())
    }
}

/// Encodes what the graph has.
fn drain(
    graph: &mut AudioGraph,
    enc: &mut encoder::Audio,
    ost: usize,
    mux: &mut Mux,
) -> Result<(), TransformError> {
    let mut f = frame::Audio::empty();
    let gtb = graph.time_base()?;
    let etb = enc.time_base();
    while graph.pull(&mut f)? {
        if let Some(pts) = f.pts() {
            f.set_pts(Some(pts.rescale(gtb, etb)));
        }
        enc.send_frame(&f)
            .map_err(|e| internal("encode audio", e))?;
        receive(enc, ost, mux)?;
    }
    Ok(())
}

/// Writes the packets the encoder has ready.
fn receive(enc: &mut encoder::Audio, ost: usize, mux: &mut Mux) -> Result<(), TransformError> {
    let mut p = Packet::empty();
    let etb = enc.time_base();
    while enc.receive_packet(&mut p).is_ok() {
        mux.write(&mut p, ost, etb)?;
    }
    Ok(())
}

fn atempo_chain(speed: f32) -> Vec<String> {
    let mut s = f64::from(speed);
    let mut f = Vec::new();
    while s < 0.5 {
        f.push("atempo=0.5".to_string());
        s /= 0.5;
    }
    while s > 2.0 {
        f.push("atempo=2.0".to_string());
        s /= 2.0;
    }
    if (s - 1.0).abs() > 1e-6 {
        f.push(format!("atempo={s:.6}"));
    }
    f
}

fn set_channels(ctx: *mut ffmpeg::ffi::AVCodecContext, n: i32) {
    // SAFETY: `ctx` is an unopened encoder context we own.
    unsafe {
        ffmpeg::ffi::av_channel_layout_uninit(&mut (*ctx).ch_layout);
        ffmpeg::ffi::av_channel_layout_default(&mut (*ctx).ch_layout, n);
    }
}

/// Decoder, graph and encoder (Opus for WebM, else AAC) for stream `ist`, and its output
/// stream.
fn encoder_for(
    setup: &mut Setup,
    ist: usize,
    ist_tb: Rational,
    opus: bool,
) -> Result<(usize, Coding), TransformError> {
    let dec = input::audio_decoder(setup.ictx, ist)?;
    let (src_rate, src_ch) = {
        // SAFETY: reading fields of an open decoder.
        unsafe {
            (
                (*dec.as_ptr()).sample_rate,
                (*dec.as_ptr()).ch_layout.nb_channels,
            )
        }
    };
    let channels = if src_ch >= 2 { 2 } else { 1 };
    let (codec, rate, sample_fmt, fmt_name) = if opus {
        let c = encoder::find_by_name("libopus").ok_or_else(|| {
            TransformError::Unsupported("this FFmpeg build has no Opus encoder".into())
        })?;
        (
            c,
            48000,
            format::Sample::F32(format::sample::Type::Packed),
            "flt",
        )
    } else {
        let c = encoder::find(codec::Id::AAC).ok_or_else(|| {
            TransformError::Unsupported("this FFmpeg build has no AAC encoder".into())
        })?;
        let rate = if AAC_RATES.contains(&src_rate) {
            src_rate
        } else {
            48000
        };
        (
            c,
            rate,
            format::Sample::F32(format::sample::Type::Planar),
            "fltp",
        )
    };
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(|e| internal("audio encoder", e))?;
    enc.set_rate(rate);
    enc.set_format(sample_fmt);
    // SAFETY: the encoder context is live and unopened.
    set_channels(unsafe { enc.as_mut_ptr() }, channels);
    enc.set_time_base(Rational::new(1, rate));
    enc.set_bit_rate(if channels == 2 { 128_000 } else { 64_000 });
    if setup.global_header {
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let enc = enc
        .open_with(ffmpeg::Dictionary::new())
        .map_err(|e| internal("open the audio encoder", e))?;
    let frame_size = enc.frame_size();
    let layout = if channels == 2 { "stereo" } else { "mono" };
    let mut chain = setup.speed.map(atempo_chain).unwrap_or_default();
    chain.push(format!("aresample={rate}"));
    chain.push(format!(
        "aformat=sample_fmts={fmt_name}:sample_rates={rate}:channel_layouts={layout}"
    ));
    let graph = AudioGraph::new(&dec, ist_tb, &chain.join(","), frame_size)?;
    let mut ost = setup
        .octx
        .add_stream(codec)
        .map_err(|e| internal("add the audio stream", e))?;
    ost.set_parameters(&enc);
    ost.set_time_base(Rational::new(1, rate));
    Ok((ost.index(), Coding::Encode { dec, graph, enc }))
}
