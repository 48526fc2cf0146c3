//! FFmpeg filter graphs for the video engine: a video graph (`buffer` → chain →
//! `buffersink`) and an audio graph (`abuffer` → chain → `abuffersink`), plus the chains
//! every mode shares: display rotation, the client's `crop` and `rotate`, and the fit
//! (`crop`/`scale`/`pad` written from the shared planner's [`Plan`]; this module writes
//! filters, it does not plan). Filter strings are built from validated numbers only, never
//! from client text.

use ffmpeg::{filter, format, frame, Rational};
use ffmpeg_next as ffmpeg;

use super::input::{internal, VideoStream};
use crate::transform::geometry::{self, OverMax, Plan, Rect, Request};
use crate::transform::TransformError;
use filters::TransformSpec;

/// A configured single-input, single-output video filter graph.
pub struct VideoGraph {
    graph: filter::Graph,
}

/// What comes out of a graph.
#[derive(Debug, Clone, Copy)]
pub struct VideoOut {
    pub width: u32,
    pub height: u32,
    pub time_base: Rational,
    pub frame_rate: Rational,
}

impl VideoGraph {
    /// `chain` is a comma-separated filter list (may be empty).
    pub fn new(
        width: u32,
        height: u32,
        pix: format::Pixel,
        time_base: Rational,
        sar: Rational,
        frame_rate: Rational,
        chain: &str,
    ) -> Result<VideoGraph, TransformError> {
        let mut graph = filter::Graph::new();
        let sar = if sar.numerator() > 0 && sar.denominator() > 0 {
            sar
        } else {
            Rational::new(1, 1)
        };
        let pix_id: ffmpeg::ffi::AVPixelFormat = pix.into();
        let mut args = format!(
            "video_size={width}x{height}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
            pix_id as i32,
            time_base.numerator(),
            time_base.denominator().max(1),
            sar.numerator(),
            sar.denominator()
        );
        if frame_rate.numerator() > 0 && frame_rate.denominator() > 0 {
            args.push_str(&format!(
                ":frame_rate={}/{}",
                frame_rate.numerator(),
                frame_rate.denominator()
            ));
        }
        configure(
            &mut graph,
            "video",
            ("buffer", "buffersink", "null"),
            &args,
            chain,
        )?;
        Ok(VideoGraph { graph })
    }

    /// Output properties (valid once configured).
    pub fn output(&mut self) -> Result<VideoOut, TransformError> {
        let mut ctx = self
            .graph
            .get("out")
            .ok_or_else(|| TransformError::Internal("video sink missing".into()))?;
        // SAFETY: `ctx` is the configured buffersink of this graph.
        unsafe {
            let p = ctx.as_mut_ptr();
            Ok(VideoOut {
                width: ffmpeg::ffi::av_buffersink_get_w(p).max(0) as u32,
                height: ffmpeg::ffi::av_buffersink_get_h(p).max(0) as u32,
                time_base: ffmpeg::ffi::av_buffersink_get_time_base(p).into(),
                frame_rate: ffmpeg::ffi::av_buffersink_get_frame_rate(p).into(),
            })
        }
    }

    pub fn push(&mut self, f: &frame::Video) -> Result<(), TransformError> {
        push_frame(&mut self.graph, "video", f)
    }

    pub fn flush(&mut self) -> Result<(), TransformError> {
        flush_graph(&mut self.graph, "video")
    }

    /// Next filtered frame, `None` when the graph needs more input (or is done).
    pub fn pull(&mut self, f: &mut frame::Video) -> Result<bool, TransformError> {
        pull_frame(&mut self.graph, "video", f)
    }
}

/// A configured audio filter graph.
pub struct AudioGraph {
    graph: filter::Graph,
}

impl AudioGraph {
    /// `frame_size`: fixed number of samples per output frame (0 = any).
    pub fn new(
        dec: &ffmpeg::decoder::Audio,
        time_base: Rational,
        chain: &str,
        frame_size: u32,
    ) -> Result<AudioGraph, TransformError> {
        let mut graph = filter::Graph::new();
        // SAFETY: reading fields of an open decoder context.
        let (rate, fmt, layout) = unsafe {
            let c = dec.as_ptr();
            let mut layout = (*c).ch_layout;
            let mut buf = [0 as std::os::raw::c_char; 128];
            if layout.order != ffmpeg::ffi::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE {
                let n = layout.nb_channels.max(1);
                ffmpeg::ffi::av_channel_layout_default(&mut layout, n);
            }
            ffmpeg::ffi::av_channel_layout_describe(&layout, buf.as_mut_ptr(), buf.len());
            let name = std::ffi::CStr::from_ptr(buf.as_ptr())
                .to_string_lossy()
                .into_owned();
            ((*c).sample_rate, (*c).sample_fmt as i32, name)
        };
        if rate <= 0 {
            return Err(TransformError::Invalid(format!(
                "audio stream has sample rate {rate}"
            )));
        }
        let args = format!(
            "time_base={}/{}:sample_rate={rate}:sample_fmt={fmt}:channel_layout={layout}",
            time_base.numerator(),
            time_base.denominator().max(1)
        );
        configure(
            &mut graph,
            "audio",
            ("abuffer", "abuffersink", "anull"),
            &args,
            chain,
        )?;
        if frame_size > 0 {
            if let Some(mut out) = graph.get("out") {
                out.sink().set_frame_size(frame_size);
            }
        }
        Ok(AudioGraph { graph })
    }

    pub fn time_base(&mut self) -> Result<Rational, TransformError> {
        let ctx = self
            .graph
            .get("out")
            .ok_or_else(|| TransformError::Internal("audio sink missing".into()))?;
        // SAFETY: configured abuffersink.
        Ok(unsafe { ffmpeg::ffi::av_buffersink_get_time_base(ctx.as_ptr()) }.into())
    }

    pub fn push(&mut self, f: &frame::Audio) -> Result<(), TransformError> {
        push_frame(&mut self.graph, "audio", f)
    }

    pub fn flush(&mut self) -> Result<(), TransformError> {
        flush_graph(&mut self.graph, "audio")
    }

    pub fn pull(&mut self, f: &mut frame::Audio) -> Result<bool, TransformError> {
        pull_frame(&mut self.graph, "audio", f)
    }
}

/// Wires `graph` as `in` (source filter with `args`) → `chain` (the pass-through filter
/// when empty) → `out` (sink filter) and validates it. `filters` names the source, sink
/// and pass-through filters of the `kind` ("video", "audio").
fn configure(
    graph: &mut filter::Graph,
    kind: &str,
    (source, sink, pass): (&str, &str, &str),
    args: &str,
    chain: &str,
) -> Result<(), TransformError> {
    let find = |name: &str| {
        filter::find(name)
            .ok_or_else(|| TransformError::Internal(format!("FFmpeg has no {name} filter")))
    };
    let (source, sink) = (find(source)?, find(sink)?);
    graph
        .add(&source, "in", args)
        .map_err(|e| internal(&format!("{kind} source {args}"), e))?;
    graph
        .add(&sink, "out", "")
        .map_err(|e| internal(&format!("{kind} sink"), e))?;
    let chain = if chain.is_empty() { pass } else { chain };
    graph
        .output("in", 0)
        .and_then(|p| p.input("out", 0))
        .and_then(|p| p.parse(chain))
        .map_err(|e| internal(&format!("{kind} filters {chain:?}"), e))?;
    graph
        .validate()
        .map_err(|e| internal(&format!("{kind} filters {chain:?}"), e))
}

/// Feeds one frame into a graph's `in` buffer source.
fn push_frame(
    graph: &mut filter::Graph,
    kind: &str,
    f: &ffmpeg::Frame,
) -> Result<(), TransformError> {
    let mut src = graph
        .get("in")
        .ok_or_else(|| TransformError::Internal(format!("{kind} source missing")))?;
    src.source()
        .add(f)
        .map_err(|e| internal(&format!("feed the {kind} filters"), e))
}

/// Signals end of input to a graph's `in` buffer source.
fn flush_graph(graph: &mut filter::Graph, kind: &str) -> Result<(), TransformError> {
    let mut src = graph
        .get("in")
        .ok_or_else(|| TransformError::Internal(format!("{kind} source missing")))?;
    src.source()
        .flush()
        .map_err(|e| internal(&format!("flush the {kind} filters"), e))
}

/// The next filtered frame from a graph's `out` sink; `false` when it needs more input or is done.
fn pull_frame(
    graph: &mut filter::Graph,
    kind: &str,
    f: &mut ffmpeg::Frame,
) -> Result<bool, TransformError> {
    let mut sink = graph
        .get("out")
        .ok_or_else(|| TransformError::Internal(format!("{kind} sink missing")))?;
    match sink.sink().frame(f) {
        Ok(()) => Ok(true),
        Err(ffmpeg::Error::Eof)
        | Err(ffmpeg::Error::Other {
            errno: ffmpeg::error::EAGAIN,
        }) => Ok(false),
        Err(e) => Err(internal(&format!("read the {kind} filters"), e)),
    }
}

/// Filters that turn a `rotation`° (clockwise) coded picture upright.
pub fn rotation_filters(rotation: u32) -> Vec<String> {
    match rotation {
        90 => vec!["transpose=clock".into()],
        180 => vec!["hflip".into(), "vflip".into()],
        270 => vec!["transpose=cclock".into()],
        _ => Vec::new(),
    }
}

/// The chain shared by every visual mode, before scaling: display rotation, the client's
/// `crop` (source pixels, upright picture) and `rotate` (degrees clockwise). Returns the
/// filters and the picture size they produce.
pub fn source_chain(
    vs: &VideoStream,
    spec: &TransformSpec,
) -> Result<(Vec<String>, (u32, u32)), TransformError> {
    let mut f = rotation_filters(vs.rotation);
    let (mut w, mut h) = vs.display_size();
    if let Some(c) = spec.crop {
        if u64::from(c.x) + u64::from(c.w) > u64::from(w)
            || u64::from(c.y) + u64::from(c.h) > u64::from(h)
        {
            return Err(TransformError::BadRequest(format!(
                "crop {}:{}:{}:{} falls outside the {w}x{h} video",
                c.w, c.h, c.x, c.y
            )));
        }
        f.push(format!("crop={}:{}:{}:{}", c.w, c.h, c.x, c.y));
        (w, h) = (c.w, c.h);
    }
    if let Some(deg) = spec.rotate.filter(|d| *d % 360 != 0) {
        match deg {
            90 | 270 => {
                f.push(
                    if deg == 90 {
                        "transpose=clock"
                    } else {
                        "transpose=cclock"
                    }
                    .into(),
                );
                (w, h) = (h, w);
            }
            180 => f.extend(["hflip".to_string(), "vflip".to_string()]),
            _ => {
                let a = f64::from(deg).to_radians();
                let (s, c) = (a.sin().abs(), a.cos().abs());
                let nw = ((f64::from(w) * c + f64::from(h) * s).ceil() as u32 + 1) & !1;
                let nh = ((f64::from(w) * s + f64::from(h) * c).ceil() as u32 + 1) & !1;
                f.push(format!("rotate={a:.6}:ow={nw}:oh={nh}:c=black"));
                (w, h) = (nw, nh);
            }
        }
    }
    Ok((f, (w, h)))
}

/// The planner's request for fitting a video picture: the spec's box, fit and gravity inside
/// `max` (shrunk into it, never refused); `even` for pictures a yuv420p encoder takes.
pub fn fit_request(spec: &TransformSpec, max: (u32, u32), even: bool) -> Request {
    Request {
        max,
        over_max: OverMax::Shrink,
        even,
        ..Request::from_spec(spec, 0)
    }
}

/// Plans the fit of a `w`×`h` picture and appends its filters to `chain`; returns the
/// output size.
pub fn push_fit(
    chain: &mut Vec<String>,
    (w, h): (u32, u32),
    spec: &TransformSpec,
    req: &Request,
) -> Result<(u32, u32), TransformError> {
    let plan = geometry::plan(w, h, req)?;
    chain.extend(fit_filters(
        &plan,
        w,
        h,
        &ffmpeg_color(spec.background.as_deref()),
    ));
    Ok(plan.canvas)
}

/// The filters (`[crop=…,][scale=…,][pad=…]`) that carry out `plan` on a `w`×`h` picture.
/// `background` is an FFmpeg colour (`black`, `0xRRGGBB`).
pub fn fit_filters(plan: &Plan, w: u32, h: u32, background: &str) -> Vec<String> {
    let mut f = Vec::new();
    let Rect { x, y, w: cw, h: ch } = plan.src;
    if plan.src != Rect::full(w, h) {
        f.push(format!("crop={cw}:{ch}:{x}:{y}"));
    }
    if plan.resize != (cw, ch) {
        f.push(format!(
            "scale={}:{}:flags=bicubic",
            plan.resize.0, plan.resize.1
        ));
    }
    if plan.canvas != plan.resize {
        let ((pw, ph), (px, py)) = (plan.canvas, plan.offset);
        f.push(format!("pad={pw}:{ph}:{px}:{py}:color={background}"));
    }
    f
}

/// `#rrggbb[aa]` (the spec's normalised form) → FFmpeg's `0xRRGGBB[AA]`; black otherwise.
pub fn ffmpeg_color(bg: Option<&str>) -> String {
    match bg.and_then(|s| s.strip_prefix('#')) {
        Some(hex)
            if (hex.len() == 6 || hex.len() == 8) && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            format!("0x{hex}")
        }
        _ => "black".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filters::{Fit, Mode};

    #[test]
    fn filter_strings() {
        let plan = |w, h, fit| {
            let mut spec = TransformSpec::new(Mode::Frame);
            (spec.width, spec.height, spec.fit) = (w, h, Some(fit));
            geometry::plan(1280, 720, &fit_request(&spec, (1920, 1080), false)).unwrap()
        };
        assert_eq!(
            fit_filters(&plan(Some(400), Some(400), Fit::Pad), 1280, 720, "black"),
            vec![
                "scale=400:225:flags=bicubic".to_string(),
                "pad=400:400:0:88:color=black".to_string()
            ]
        );
        assert_eq!(
            fit_filters(&plan(Some(400), Some(400), Fit::Cover), 1280, 720, "black"),
            vec![
                "crop=720:720:280:0".to_string(),
                "scale=400:400:flags=bicubic".to_string(),
            ]
        );
        assert!(fit_filters(&plan(None, None, Fit::Contain), 1280, 720, "black").is_empty());
        assert_eq!(ffmpeg_color(Some("#ff0000")), "0xff0000");
        assert_eq!(ffmpeg_color(None), "black");
    }
}
