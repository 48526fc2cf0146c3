//! The output side of the encode pipeline: opening the muxer for a container (MP4 and M4A
//! fast start, WebM, HLS segmenting), writing packets in the output stream's time base,
//! progress from the output timestamps, and the trailer. It must not decode or encode; it
//! takes finished packets.

use std::ffi::CString;
use std::path::Path;

use ffmpeg::{format, Packet, Rational};
use ffmpeg_next as ffmpeg;

use super::super::input::{self, internal};
use super::Container;
use crate::transform::TransformError;

impl Container {
    pub(super) fn muxer(&self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Webm => "webm",
            Container::M4a => "ipod",
            Container::Hls { .. } => "hls",
        }
    }

    /// Muxer options for the header.
    fn options(&self) -> ffmpeg::Dictionary<'static> {
        let mut opts = ffmpeg::Dictionary::new();
        match self {
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
        opts
    }
}

/// Opens the `muxer` output at `path` (streams are added before [`Mux::start`]).
pub(super) fn open_output(
    path: &Path,
    muxer: &str,
) -> Result<format::context::Output, TransformError> {
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

/// The muxer once its header is written (output time bases known), with the progress of
/// the output.
pub(super) struct Mux<'a> {
    octx: format::context::Output,
    tbs: Vec<Rational>,
    /// Furthest output time written, in seconds.
    pub max_secs: f64,
    /// Output seconds expected (0: unknown, no progress reported).
    expected: f64,
    last_pct: f32,
    progress: &'a dyn Fn(f32),
}

impl<'a> Mux<'a> {
    /// Writes the header with the container's options.
    pub fn start(
        mut octx: format::context::Output,
        container: &Container,
        expected: f64,
        progress: &'a dyn Fn(f32),
    ) -> Result<Mux<'a>, TransformError> {
        octx.write_header_with(container.options())
            .map_err(|e| internal("write the output header", e))?;
        let tbs = octx.streams().map(|s| s.time_base()).collect();
        Ok(Mux {
            octx,
            tbs,
            max_secs: 0.0,
            expected,
            last_pct: 0.0,
            progress,
        })
    }

    /// Writes a packet timed in `src_tb` to output stream `ost`, reporting whole percents.
    pub fn write(
        &mut self,
        p: &mut Packet,
        ost: usize,
        src_tb: Rational,
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
                    (self.progress)(pct);
                }
            }
        }
        p.write_interleaved(&mut self.octx)
            .map_err(|e| internal("write the output", e))
    }

    /// Writes the trailer and reports 100 %.
    pub fn finish(mut self) -> Result<(), TransformError> {
        self.octx
            .write_trailer()
            .map_err(|e| internal("finish the output", e))?;
        (self.progress)(100.0);
        Ok(())
    }
}
