//! The encode pipeline behind `transcode`, `audio` and `hls`: demux → decode → filter →
//! encode → mux, one pass, streaming from the source file to the output file(s) with no
//! whole-file buffer. Owns clipping (`time`/`duration`), audio stream copy versus AAC/Opus
//! encoding, encoder selection and settings (CRF presets, bitrate, hvc1 tag, forced
//! keyframes for HLS), muxer options (MP4 fast start, HLS segmenting), progress from output
//! timestamps and the wall-clock deadline. It must not decide geometry (the caller passes a
//! filter chain) and never leaves a partial output behind (see [`FileGuard`]).

use std::ffi::CString;
use std::path::{Path, PathBuf};

use ffmpeg::{codec, encoder, format, frame, Packet, Rational};
use ffmpeg_next as ffmpeg;
use filters::Codec;

use super::graph::{AudioGraph, VideoGraph};
use super::input::{self, internal, Deadline, VideoStream};
use crate::transform::TransformError;

/// Removes a file (or the files a pattern produced) on drop unless disarmed.
pub struct FileGuard {
    paths: Vec<PathBuf>,
    armed: bool,
}

impl FileGuard {
    pub fn new(paths: Vec<PathBuf>) -> FileGuard {
        FileGuard { paths, armed: true }
    }
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        if self.armed {
            for p in &self.paths {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

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

impl Container {
    fn muxer(&self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Webm => "webm",
            Container::M4a => "ipod",
            Container::Hls { .. } => "hls",
        }
    }
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

fn open_output(path: &Path, muxer: &str) -> Result<format::context::Output, TransformError> {
    let c_path = CString::new(path.to_string_lossy().as_bytes())
        .map_err(|_| TransformError::Internal(format!("bad output path {}", path.display())))?;
    let c_fmt = CString::new(muxer)
        .map_err(|_| TransformError::Internal(format!("bad muxer name {muxer}")))?;
    // SAFETY: plain FFmpeg allocation; every failure path frees what was allocated.
    unsafe {
        let mut ps = std::ptr::null_mut();
        let r = ffmpeg::ffi::avformat_alloc_output_context2(
            &mut ps,
            std::ptr::null_mut(),
            c_fmt.as_ptr(),
            c_path.as_ptr(),
        );
        if r < 0 || ps.is_null() {
            return Err(internal(
                &format!("create the {muxer} muxer"),
                ffmpeg::Error::from(r),
            ));
        }
        let flags = (*(*ps).oformat).flags;
        if flags & ffmpeg::ffi::AVFMT_NOFILE as i32 == 0 {
            let r = ffmpeg::ffi::avio_open(
                &mut (*ps).pb,
                c_path.as_ptr(),
                ffmpeg::ffi::AVIO_FLAG_WRITE as i32,
            );
            if r < 0 {
                ffmpeg::ffi::avformat_free_context(ps);
                return Err(internal(
                    &format!("create {}", path.display()),
                    ffmpeg::Error::from(r),
                ));
            }
        }
        Ok(format::context::Output::wrap(ps))
    }
}

/// Audio handling decided from the source and the container.
enum AudioPath {
    Copy {
        ist: usize,
        ist_tb: Rational,
        ost: usize,
    },
    Encode {
        ist: usize,
        ist_tb: Rational,
        ost: usize,
        dec: ffmpeg::decoder::Audio,
        graph: AudioGraph,
        enc: encoder::Audio,
    },
}

struct VideoPath {
    vs: VideoStream,
    ost: usize,
    dec: ffmpeg::decoder::Video,
    graph: VideoGraph,
    enc: encoder::Video,
    enc_tb: Rational,
    /// One frame's duration in `enc_tb` (for packets the encoder leaves without one).
    frame_dur: i64,
    keyframe_every: Option<f64>,
    next_keyframe: f64,
}

/// The AAC sample rates an encoder accepts; others are resampled to 48 kHz.
const AAC_RATES: &[i32] = &[
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
];

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

fn build_audio_encoder(
    octx: &mut format::context::Output,
    ictx: &format::context::Input,
    ist: usize,
    opus: bool,
    speed: Option<f32>,
    global_header: bool,
) -> Result<AudioPath, TransformError> {
    let dec = input::audio_decoder(ictx, ist)?;
    let ist_tb = ictx
        .stream(ist)
        .map(|s| s.time_base())
        .unwrap_or(Rational::new(1, 48000));
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
    if global_header {
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let enc = enc
        .open_with(ffmpeg::Dictionary::new())
        .map_err(|e| internal("open the audio encoder", e))?;
    let frame_size = enc.frame_size();
    let layout = if channels == 2 { "stereo" } else { "mono" };
    let mut chain = speed.map(atempo_chain).unwrap_or_default();
    chain.push(format!("aresample={rate}"));
    chain.push(format!(
        "aformat=sample_fmts={fmt_name}:sample_rates={rate}:channel_layouts={layout}"
    ));
    let graph = AudioGraph::new(&dec, ist_tb, &chain.join(","), frame_size)?;
    let mut ost = octx
        .add_stream(codec)
        .map_err(|e| internal("add the audio stream", e))?;
    ost.set_parameters(&enc);
    ost.set_time_base(Rational::new(1, rate));
    Ok(AudioPath::Encode {
        ist,
        ist_tb,
        ost: ost.index(),
        dec,
        graph,
        enc,
    })
}

fn build_video(
    octx: &mut format::context::Output,
    ictx: &format::context::Input,
    vs: VideoStream,
    v: &VideoSettings,
    speed: Option<f32>,
    global_header: bool,
) -> Result<VideoPath, TransformError> {
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
    let mut opts = ffmpeg::Dictionary::new();
    let name = codec.name().to_string();
    let crf = v.crf.min(51);
    match name.as_str() {
        "libx264" | "libx265" => {
            opts.set("preset", v.preset);
            if v.bitrate.is_none() {
                let crf = if name == "libx265" {
                    (crf + 5).min(51)
                } else {
                    crf
                };
                opts.set("crf", &crf.to_string());
            }
            if name == "libx265" {
                opts.set("x265-params", "log-level=error");
            }
            if v.keyframe_every.is_some() {
                // Forced keyframes (HLS segment starts) must be IDR: a segment then starts
                // with a closed GOP, and the TS muxer repeats SPS/PPS before it.
                opts.set("forced-idr", "1");
            }
        }
        "libvpx-vp9" => {
            if v.bitrate.is_none() {
                opts.set("crf", &(crf * 63 / 51).to_string());
                opts.set("b", "0");
            }
            opts.set("deadline", "good");
            let cpu = match v.preset {
                "ultrafast" | "superfast" | "veryfast" | "faster" | "fast" => "5",
                "medium" => "4",
                _ => "2",
            };
            opts.set("cpu-used", cpu);
            opts.set("row-mt", "1");
        }
        "libsvtav1" => {
            opts.set("crf", &(crf * 63 / 51).to_string());
            opts.set("preset", "8");
        }
        "libaom-av1" => {
            if v.bitrate.is_none() {
                opts.set("crf", &(crf * 63 / 51).to_string());
            }
            opts.set("cpu-used", "8");
            opts.set("row-mt", "1");
            opts.set("usage", "realtime");
        }
        _ => {
            opts.set("speed", "10");
        }
    }
    let enc = enc
        .open_with(opts)
        .map_err(|e| internal(&format!("open the {name} encoder"), e))?;
    let mut ost = octx
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
    })
}

/// Output time bases, known after the header is written.
struct Mux {
    octx: format::context::Output,
    tbs: Vec<Rational>,
    max_secs: f64,
    expected: f64,
    last_pct: f32,
}

impl Mux {
    fn write(
        &mut self,
        p: &mut Packet,
        ost: usize,
        src_tb: Rational,
        progress: &dyn Fn(f32),
    ) -> Result<(), TransformError> {
        let tb = self.tbs.get(ost).copied().unwrap_or(src_tb);
        p.set_stream(ost);
        p.set_position(-1);
        p.rescale_ts(src_tb, tb);
        if let Some(pts) = p.pts() {
            let secs = input::ts_to_secs(pts + p.duration().max(0), tb);
            if secs > self.max_secs {
                self.max_secs = secs;
            }
            if self.expected > 0.0 {
                let pct = ((self.max_secs / self.expected) * 100.0).clamp(0.0, 99.0) as f32;
                if pct >= self.last_pct + 1.0 {
                    self.last_pct = pct;
                    progress(pct);
                }
            }
        }
        p.write_interleaved(&mut self.octx)
            .map_err(|e| internal("write the output", e))
    }
}

fn drain_video(
    v: &mut VideoPath,
    mux: &mut Mux,
    progress: &dyn Fn(f32),
) -> Result<(), TransformError> {
    let mut f = frame::Video::empty();
    while v.graph.pull(&mut f)? {
        if let Some(every) = v.keyframe_every {
            let secs = f
                .pts()
                .map(|p| input::ts_to_secs(p, v.enc_tb))
                .unwrap_or(0.0);
            if secs + 1e-3 >= v.next_keyframe {
                f.set_kind(ffmpeg::picture::Type::I);
                while v.next_keyframe <= secs + 1e-3 {
                    v.next_keyframe += every;
                }
            } else {
                f.set_kind(ffmpeg::picture::Type::None);
            }
        } else {
            f.set_kind(ffmpeg::picture::Type::None);
        }
        v.enc
            .send_frame(&f)
            .map_err(|e| internal("encode video", e))?;
        recv_video(v, mux, progress)?;
    }
    Ok(())
}

fn recv_video(
    v: &mut VideoPath,
    mux: &mut Mux,
    progress: &dyn Fn(f32),
) -> Result<(), TransformError> {
    let mut p = Packet::empty();
    while v.enc.receive_packet(&mut p).is_ok() {
        if p.duration() <= 0 && v.frame_dur > 0 {
            p.set_duration(v.frame_dur);
        }
        mux.write(&mut p, v.ost, v.enc_tb, progress)?;
    }
    Ok(())
}

fn drain_audio(
    graph: &mut AudioGraph,
    enc: &mut encoder::Audio,
    ost: usize,
    mux: &mut Mux,
    progress: &dyn Fn(f32),
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
        recv_audio(enc, ost, mux, progress)?;
    }
    Ok(())
}

fn recv_audio(
    enc: &mut encoder::Audio,
    ost: usize,
    mux: &mut Mux,
    progress: &dyn Fn(f32),
) -> Result<(), TransformError> {
    let mut p = Packet::empty();
    let etb = enc.time_base();
    while enc.receive_packet(&mut p).is_ok() {
        mux.write(&mut p, ost, etb, progress)?;
    }
    Ok(())
}

use ffmpeg::Rescale as _;

/// Runs one job from `path` to `out` (for HLS: the playlist path).
pub fn run(path: &super::input::Media, out: &Path, job: Job) -> Result<Done, TransformError> {
    let deadline = job.deadline;
    let mut ictx = input::open(path, deadline)?;
    let vs = input::video_stream(&ictx)?;
    let ast = if job.audio {
        input::audio_stream(&ictx)
    } else {
        None
    };
    let vs = match (&job.video, vs) {
        (Some(_), Some(vs)) => Some(vs),
        (Some(_), None) => {
            return Err(TransformError::Unsupported(format!(
                "{} has no video stream",
                input::file_name(path)
            )))
        }
        (None, _) => None,
    };
    if vs.is_none() && ast.is_none() {
        return Err(TransformError::Unsupported(format!(
            "{} has no {} stream",
            input::file_name(path),
            if job.video.is_some() {
                "video"
            } else {
                "audio"
            }
        )));
    }
    let src_duration = input::duration_secs(&ictx);
    if src_duration > 0.0 && job.start >= src_duration {
        return Err(TransformError::BadRequest(format!(
            "time {}s is past the end of the {src_duration:.3}s source",
            job.start
        )));
    }
    // Only the streams we use are demuxed.
    // SAFETY: adjusting `discard` on the streams of a live input context.
    unsafe {
        let ctx = ictx.as_mut_ptr();
        for i in 0..(*ctx).nb_streams as usize {
            if Some(i) != vs.map(|v| v.index) && Some(i) != ast {
                (*(*(*ctx).streams.add(i))).discard = ffmpeg::ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
    }

    let mut guard = FileGuard::new(vec![out.to_path_buf()]);
    let mut octx = open_output(out, job.container.muxer())?;
    let global_header = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);

    let mut video = match (&job.video, vs) {
        (Some(v), Some(vs)) => Some(build_video(
            &mut octx,
            &ictx,
            vs,
            v,
            job.speed,
            global_header,
        )?),
        _ => None,
    };
    let mut audio = match ast {
        None => None,
        Some(ist) => {
            let st = ictx
                .stream(ist)
                .ok_or_else(|| TransformError::Internal("audio stream vanished".into()))?;
            let id = st.parameters().id();
            let webm = matches!(job.container, Container::Webm);
            let copy = job.speed.is_none()
                && if webm {
                    matches!(id, codec::Id::OPUS | codec::Id::VORBIS)
                } else {
                    id == codec::Id::AAC
                };
            if copy {
                let mut o = octx
                    .add_stream(encoder::find(codec::Id::None))
                    .map_err(|e| internal("add the audio stream", e))?;
                o.set_parameters(st.parameters());
                // SAFETY: resetting the codec tag so the muxer picks its own.
                unsafe {
                    (*o.parameters().as_mut_ptr()).codec_tag = 0;
                }
                Some(AudioPath::Copy {
                    ist,
                    ist_tb: st.time_base(),
                    ost: o.index(),
                })
            } else {
                Some(build_audio_encoder(
                    &mut octx,
                    &ictx,
                    ist,
                    webm,
                    job.speed,
                    global_header,
                )?)
            }
        }
    };

    let mut opts = ffmpeg::Dictionary::new();
    match &job.container {
        Container::Mp4 | Container::M4a => opts.set("movflags", "+faststart"),
        Container::Webm => {}
        Container::Hls {
            segment_secs,
            segment_pattern,
        } => {
            opts.set("hls_time", &segment_secs.to_string());
            opts.set("hls_playlist_type", "vod");
            opts.set("hls_list_size", "0");
            opts.set("hls_segment_filename", &segment_pattern.to_string_lossy());
        }
    }
    octx.write_header_with(opts)
        .map_err(|e| internal("write the output header", e))?;
    let tbs = octx.streams().map(|s| s.time_base()).collect();
    let speed = f64::from(job.speed.unwrap_or(1.0));
    let src_left = (src_duration - job.start).max(0.0);
    let expected = match job.duration {
        Some(d) if src_duration > 0.0 => d.min(src_left),
        Some(d) => d,
        None => src_left,
    } / speed;
    let mut mux = Mux {
        octx,
        tbs,
        max_secs: 0.0,
        expected,
        last_pct: 0.0,
    };

    if job.start > 0.0 {
        input::seek(&mut ictx, job.start)?;
    }
    // Per-stream clip window in source stream units.
    let window = |tb: Rational, start_pts: i64| -> (i64, Option<i64>) {
        let s = start_pts + input::secs_to_ts(job.start, tb);
        (s, job.duration.map(|d| s + input::secs_to_ts(d, tb)))
    };
    let vwin = video
        .as_ref()
        .map(|v| window(v.vs.time_base, v.vs.start_pts));
    let awin = audio.as_ref().map(|a| {
        let (ist, tb) = match a {
            AudioPath::Copy { ist, ist_tb, .. } | AudioPath::Encode { ist, ist_tb, .. } => {
                (*ist, *ist_tb)
            }
        };
        let st = ictx.stream(ist).map(|s| s.start_time()).unwrap_or(0);
        let st = if st == ffmpeg::ffi::AV_NOPTS_VALUE {
            0
        } else {
            st
        };
        window(tb, st)
    });
    let mut video_done = video.is_none();
    let mut audio_done = audio.is_none();
    let progress = job.progress;
    let mut vframe = frame::Video::empty();
    let mut aframe = frame::Audio::empty();
    let mut invalid_packets = 0u32;

    // Feeds decoded video frames inside the window to the graph.
    let feed_video = |v: &mut VideoPath,
                      f: &mut frame::Video,
                      mux: &mut Mux,
                      done: &mut bool|
     -> Result<(), TransformError> {
        let (s, e) = vwin.unwrap_or((0, None));
        while v.dec.receive_frame(f).is_ok() {
            let Some(pts) = f.timestamp() else { continue };
            if pts < s {
                continue;
            }
            if e.is_some_and(|e| pts >= e) {
                *done = true;
                continue;
            }
            f.set_pts(Some(pts - s));
            v.graph.push(f)?;
            drain_video(v, mux, progress)?;
        }
        Ok(())
    };
    let feed_audio = |a: &mut AudioPath,
                      f: &mut frame::Audio,
                      mux: &mut Mux,
                      done: &mut bool|
     -> Result<(), TransformError> {
        let (s, e) = awin.unwrap_or((0, None));
        if let AudioPath::Encode {
            dec,
            graph,
            enc,
            ost,
            ist_tb,
            ..
        } = a
        {
            while dec.receive_frame(f).is_ok() {
                let Some(pts) = f.timestamp() else { continue };
                let dur =
                    (f.samples() as i64).rescale(Rational::new(1, f.rate().max(1) as i32), *ist_tb);
                if pts + dur <= s {
                    continue;
                }
                if e.is_some_and(|e| pts >= e) {
                    *done = true;
                    continue;
                }
                f.set_pts(Some(pts - s));
                graph.push(f)?;
                drain_audio(graph, enc, *ost, mux, progress)?;
            }
        }
        Ok(())
    };

    let mut eof = false;
    while !(video_done && audio_done) {
        deadline.check("transcode")?;
        let mut packet = Packet::empty();
        match packet.read(&mut ictx) {
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
            Err(_) => {
                eof = true;
                break;
            }
        }
        let idx = packet.stream();
        if let Some(v) = video.as_mut().filter(|v| v.vs.index == idx && !video_done) {
            match v.dec.send_packet(&packet) {
                Ok(()) => {}
                Err(ffmpeg::Error::InvalidData) => invalid_packets += 1,
                Err(e) => return Err(input::invalid("decode the video", e)),
            }
            feed_video(v, &mut vframe, &mut mux, &mut video_done)?;
            continue;
        }
        match audio.as_mut() {
            Some(AudioPath::Copy { ist, ist_tb, ost }) if *ist == idx && !audio_done => {
                let (s, e) = awin.unwrap_or((0, None));
                let Some(pts) = packet.pts() else { continue };
                if pts + packet.duration().max(0) <= s {
                    continue;
                }
                if e.is_some_and(|e| pts >= e) {
                    audio_done = true;
                    continue;
                }
                packet.set_pts(Some(pts - s));
                packet.set_dts(packet.dts().map(|d| d - s));
                let (ost, tb) = (*ost, *ist_tb);
                mux.write(&mut packet, ost, tb, progress)?;
            }
            Some(a @ AudioPath::Encode { .. }) if !audio_done => {
                if let AudioPath::Encode { ist, dec, .. } = a {
                    if *ist != idx {
                        continue;
                    }
                    match dec.send_packet(&packet) {
                        Ok(()) => {}
                        Err(ffmpeg::Error::InvalidData) => invalid_packets += 1,
                        Err(e) => return Err(input::invalid("decode the audio", e)),
                    }
                }
                feed_audio(a, &mut aframe, &mut mux, &mut audio_done)?;
            }
            _ => {}
        }
    }
    // Flush: decoders (at end of file), filter graphs, encoders.
    if let Some(v) = video.as_mut() {
        if eof {
            let _ = v.dec.send_eof();
            let mut done = false;
            feed_video(v, &mut vframe, &mut mux, &mut done)?;
        }
        v.graph.flush()?;
        drain_video(v, &mut mux, progress)?;
        v.enc
            .send_eof()
            .map_err(|e| internal("flush the video encoder", e))?;
        recv_video(v, &mut mux, progress)?;
    }
    if let Some(a) = audio.as_mut() {
        if eof {
            if let AudioPath::Encode { dec, .. } = a {
                let _ = dec.send_eof();
            }
            let mut done = false;
            feed_audio(a, &mut aframe, &mut mux, &mut done)?;
        }
        if let AudioPath::Encode {
            graph, enc, ost, ..
        } = a
        {
            graph.flush()?;
            drain_audio(graph, enc, *ost, &mut mux, progress)?;
            enc.send_eof()
                .map_err(|e| internal("flush the audio encoder", e))?;
            recv_audio(enc, *ost, &mut mux, progress)?;
        }
    }
    if mux.max_secs <= 0.0 {
        return Err(TransformError::Invalid(format!(
            "nothing decodable in {} from {}s",
            input::file_name(path),
            job.start
        )));
    }
    mux.octx
        .write_trailer()
        .map_err(|e| internal("finish the output", e))?;
    progress(100.0);
    let (width, height) = video
        .as_ref()
        .map(|v| (v.enc.width(), v.enc.height()))
        .unwrap_or((0, 0));
    let done = Done {
        width,
        height,
        duration_secs: mux.max_secs,
        bytes_read: ictx.bytes_read(),
    };
    if let Container::Hls { .. } = job.container {
        // The caller's guard owns HLS files.
        guard.paths.clear();
    }
    guard.disarm();
    Ok(done)
}
