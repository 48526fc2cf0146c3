//! Encoders: a finished [`Raster`] (or a sequence of animation frames) to WebP (libwebp,
//! lossy or lossless, animated through libwebp's `WebPAnimEncoder`), AVIF (ravif/rav1e),
//! JPEG (libjpeg-turbo: progressive unless baseline is asked, 4:2:0, optimised Huffman), PNG (zlib level from the
//! quality table) and GIF. Owns the quality table; it writes no metadata except the EXIF
//! block the caller passes for JPEG under an explicit metadata policy, and must not change
//! the raster's geometry.

use filters::{Compression, Quality, TransformSpec};

use super::{OutFormat, Raster};
use crate::transform::TransformError;

/// Encoder settings resolved from the spec and options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// 1..=100 for WebP/JPEG/AVIF.
    pub quality: u8,
    /// `quality=lossless`: lossless WebP, PNG stays PNG.
    pub lossless: bool,
    /// zlib level 0..=9 for PNG.
    pub png_level: u8,
    /// rav1e speed 1..=10.
    pub avif_speed: u8,
    /// Progressive JPEG (all but `format=baseline-jpeg`).
    pub progressive: bool,
}

use crate::transform::DEFAULT_QUALITY;

/// The quality table: low|medium-low|medium|medium-high|high|lossless →
/// 60/68/75/82/90/100 (WebP/JPEG/AVIF) and PNG compression 8/7/6/5/4/0; a number 1..=100 is
/// used as is (PNG: interpolated on the same table); `auto` is 85 (PNG 6). An explicit
/// `compression` (`fast` = 1, or 0..=9) wins for PNG.
pub fn settings(spec: &TransformSpec, avif_speed: u8) -> Settings {
    let q = spec.quality.unwrap_or(Quality::Auto);
    let quality = q.level().unwrap_or(DEFAULT_QUALITY).clamp(1, 100);
    let table_level = match q {
        Quality::Low => 8,
        Quality::MediumLow => 7,
        Quality::Medium | Quality::Auto => 6,
        Quality::MediumHigh => 5,
        Quality::High => 4,
        Quality::Lossless => 0,
        Quality::Value(v) => png_level_for(v),
    };
    let png_level = match spec.compression {
        Some(Compression::Fast) => 1,
        Some(Compression::Level(l)) => l.min(9),
        None => table_level,
    };
    Settings {
        quality,
        lossless: q == Quality::Lossless,
        png_level,
        avif_speed: avif_speed.clamp(1, 10),
        progressive: spec.format != Some(filters::Format::BaselineJpeg),
    }
}

/// Piecewise-linear through (60, 8), (75, 6), (90, 4), (100, 0); 9 below 60 down to 1.
fn png_level_for(q: u8) -> u8 {
    let q = f64::from(q.clamp(1, 100));
    let pts = [
        (1.0, 9.0),
        (60.0, 8.0),
        (75.0, 6.0),
        (90.0, 4.0),
        (100.0, 0.0),
    ];
    for win in pts.windows(2) {
        let ((q0, l0), (q1, l1)) = (win[0], win[1]);
        if q <= q1 {
            return (l0 + (l1 - l0) * (q - q0) / (q1 - q0)).round() as u8;
        }
    }
    0
}

fn enc_err(what: &str, e: impl std::fmt::Debug) -> TransformError {
    TransformError::Internal(format!("{what} encoder failed: {e:?}"))
}

/// Encodes one still image. `exif` (raw TIFF) is embedded for JPEG only.
pub fn encode_still(
    r: &Raster,
    fmt: OutFormat,
    s: &Settings,
    exif: Option<&[u8]>,
) -> Result<Vec<u8>, TransformError> {
    match fmt {
        OutFormat::Webp => {
            let out = webp_still(r, s)?;
            Ok(match exif {
                Some(e) => super::exif::webp_insert_exif(out, e, r.width, r.height, r.alpha),
                None => out,
            })
        }
        OutFormat::Avif => avif(r, s),
        OutFormat::Jpeg => {
            let out = jpeg(r, s.quality, s.progressive)?;
            Ok(match exif {
                Some(e) => super::exif::jpeg_insert_exif(out, e),
                None => out,
            })
        }
        OutFormat::Png => {
            let out = png(r, s.png_level)?;
            Ok(match exif {
                Some(e) => super::exif::png_insert_exif(out, e),
                None => out,
            })
        }
        OutFormat::Gif => {
            let frame = Frame {
                raster: r.clone().to_rgba(),
                delay_ms: 0,
            };
            encode_animation(std::slice::from_ref(&frame), OutFormat::Gif, s, None)
        }
    }
}

fn webp_still(r: &Raster, s: &Settings) -> Result<Vec<u8>, TransformError> {
    use libwebp_sys as w;
    let channels = if r.alpha { 4 } else { 3 };
    let row = r.width as usize * channels;
    let stride = i32::try_from(row)
        .map_err(|_| TransformError::TooLarge(format!("image {} px wide", r.width)))?;
    if r.data.len() < row * r.height as usize {
        return Err(enc_err("webp", "raster shorter than its size"));
    }
    let mut config = w::WebPConfig::new().map_err(|_| enc_err("webp", "config init"))?;
    config.lossless = i32::from(s.lossless);
    config.alpha_compression = i32::from(!s.lossless);
    config.quality = f32::from(s.quality);
    // SAFETY: the picture and the writer are initialised here and freed by their guards; the
    // pixel buffer holds `row * height` bytes (checked above) and outlives the import, which
    // copies it; the writer outlives the encode that appends to it.
    unsafe {
        if w::WebPValidateConfig(&config) == 0 {
            return Err(enc_err("webp", "invalid config"));
        }
        let mut pic = Picture(w::WebPPicture::new().map_err(|_| enc_err("webp", "picture init"))?);
        pic.0.use_argb = 1;
        pic.0.width = r.width as i32;
        pic.0.height = r.height as i32;
        let imported = if r.alpha {
            w::WebPPictureImportRGBA(&mut pic.0, r.data.as_ptr(), stride)
        } else {
            w::WebPPictureImportRGB(&mut pic.0, r.data.as_ptr(), stride)
        };
        if imported == 0 {
            return Err(enc_err("webp", "picture import"));
        }
        let mut out = MemoryWriter(std::mem::zeroed());
        w::WebPMemoryWriterInit(&mut out.0);
        pic.0.writer = Some(w::WebPMemoryWrite);
        pic.0.custom_ptr = (&mut out.0 as *mut w::WebPMemoryWriter).cast();
        if w::WebPEncode(&config, &mut pic.0) == 0 {
            return Err(enc_err("webp", pic.0.error_code));
        }
        if out.0.mem.is_null() {
            return Err(enc_err("webp", "empty output"));
        }
        Ok(std::slice::from_raw_parts(out.0.mem, out.0.size).to_vec())
    }
}

/// Owns a `WebPMemoryWriter`'s buffer.
struct MemoryWriter(libwebp_sys::WebPMemoryWriter);

impl Drop for MemoryWriter {
    fn drop(&mut self) {
        // SAFETY: initialised by WebPMemoryWriterInit; clearing frees what was written.
        unsafe { libwebp_sys::WebPMemoryWriterClear(&mut self.0) }
    }
}

fn avif(r: &Raster, s: &Settings) -> Result<Vec<u8>, TransformError> {
    use rgb::FromSlice;
    let enc = ravif::Encoder::new()
        .with_quality(f32::from(s.quality))
        .with_alpha_quality(f32::from(s.quality))
        .with_speed(s.avif_speed);
    let (w, h) = (r.width as usize, r.height as usize);
    let out = if r.alpha {
        enc.encode_rgba(ravif::Img::new(r.data.as_rgba(), w, h))
    } else {
        enc.encode_rgb(ravif::Img::new(r.data.as_rgb(), w, h))
    }
    .map_err(|e| enc_err("avif", e))?;
    Ok(out.avif_file)
}

fn jpeg(r: &Raster, quality: u8, progressive: bool) -> Result<Vec<u8>, TransformError> {
    let (pixels, format) = if r.alpha {
        (&r.data[..], turbojpeg::PixelFormat::RGBA)
    } else {
        (&r.data[..], turbojpeg::PixelFormat::RGB)
    };
    let mut c = turbojpeg::Compressor::new().map_err(|e| enc_err("jpeg", e))?;
    c.set_quality(i32::from(quality))
        .map_err(|e| enc_err("jpeg", e))?;
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2)
        .map_err(|e| enc_err("jpeg", e))?;
    c.set_progressive(progressive)
        .map_err(|e| enc_err("jpeg", e))?;
    c.set_optimize(true).map_err(|e| enc_err("jpeg", e))?;
    let img = turbojpeg::Image {
        pixels,
        width: r.width as usize,
        pitch: r.width as usize * format.size(),
        height: r.height as usize,
        format,
    };
    c.compress_to_vec(img).map_err(|e| enc_err("jpeg", e))
}

fn png(r: &Raster, level: u8) -> Result<Vec<u8>, TransformError> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let mut out = Vec::new();
    let compression = match level {
        0 => CompressionType::Uncompressed,
        l => CompressionType::Level(l.min(9)),
    };
    let enc = PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive);
    let ct = if r.alpha {
        image::ExtendedColorType::Rgba8
    } else {
        image::ExtendedColorType::Rgb8
    };
    enc.write_image(&r.data, r.width, r.height, ct)
        .map_err(|e| enc_err("png", e))?;
    Ok(out)
}

/// One animation frame: full-canvas RGBA and how long it shows.
#[derive(Clone)]
pub struct Frame {
    pub raster: Raster,
    pub delay_ms: u32,
}

/// An animation encoder fed one frame at a time: frames are encoded as they arrive and not
/// kept, so memory is one frame plus the encoded output, whatever the frame count.
/// `loops`: `None` = forever, `Some(n)` = the source container's count.
pub enum AnimSink {
    Webp(WebpAnim),
    Gif(GifAnim),
}

impl AnimSink {
    /// An encoder for `width`×`height` frames; `frames` is the expected count when known
    /// (a single-frame GIF gets no loop extension).
    pub fn new(
        fmt: OutFormat,
        s: &Settings,
        loops: Option<u32>,
        (width, height): (u32, u32),
        frames: Option<u32>,
    ) -> Result<AnimSink, TransformError> {
        match fmt {
            OutFormat::Webp => WebpAnim::new(s, loops, width, height).map(AnimSink::Webp),
            OutFormat::Gif => GifAnim::new(loops, width, height, frames).map(AnimSink::Gif),
            other => Err(TransformError::BadRequest(format!(
                "animated output is webp or gif, not {}",
                other.as_str()
            ))),
        }
    }

    pub fn add(&mut self, f: &Frame) -> Result<(), TransformError> {
        let (w, h) = match self {
            AnimSink::Webp(a) => (a.width, a.height),
            AnimSink::Gif(a) => (a.width, a.height),
        };
        let r = &f.raster;
        if (r.width, r.height) != (w, h) || !r.alpha || r.data.len() != w as usize * h as usize * 4
        {
            return Err(TransformError::Internal(
                "animation frames differ in size".into(),
            ));
        }
        match self {
            AnimSink::Webp(a) => a.add(f),
            AnimSink::Gif(a) => a.add(f),
        }
    }

    pub fn finish(self) -> Result<Vec<u8>, TransformError> {
        match self {
            AnimSink::Webp(a) => a.finish(),
            AnimSink::Gif(a) => a.finish(),
        }
    }
}

/// Encodes a whole animation held in memory (RGBA frames of one size).
pub fn encode_animation(
    frames: &[Frame],
    fmt: OutFormat,
    s: &Settings,
    loops: Option<u32>,
) -> Result<Vec<u8>, TransformError> {
    let first = frames
        .first()
        .ok_or_else(|| TransformError::Internal("animation with no frames".into()))?;
    let size = (first.raster.width, first.raster.height);
    let mut sink = AnimSink::new(fmt, s, loops, size, u32::try_from(frames.len()).ok())?;
    for f in frames {
        sink.add(f)?;
    }
    sink.finish()
}

/// A `Vec<u8>` shared between the GIF encoder that writes it and the sink that returns it.
#[derive(Clone, Default)]
struct SharedBuf(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct GifAnim {
    enc: Option<image::codecs::gif::GifEncoder<SharedBuf>>,
    out: SharedBuf,
    width: u32,
    height: u32,
}

impl GifAnim {
    fn new(
        loops: Option<u32>,
        width: u32,
        height: u32,
        frames: Option<u32>,
    ) -> Result<GifAnim, TransformError> {
        use image::codecs::gif::{GifEncoder, Repeat};
        let out = SharedBuf::default();
        let mut enc = GifEncoder::new_with_speed(out.clone(), 10);
        if frames != Some(1) {
            let repeat = match loops {
                None => Repeat::Infinite,
                Some(n) => Repeat::Finite(u16::try_from(n).unwrap_or(u16::MAX)),
            };
            enc.set_repeat(repeat).map_err(|e| enc_err("gif", e))?;
        }
        Ok(GifAnim {
            enc: Some(enc),
            out,
            width,
            height,
        })
    }

    fn add(&mut self, f: &Frame) -> Result<(), TransformError> {
        let enc = self
            .enc
            .as_mut()
            .ok_or_else(|| TransformError::Internal("gif encoder finished".into()))?;
        let buf =
            image::RgbaImage::from_raw(f.raster.width, f.raster.height, f.raster.data.clone())
                .ok_or_else(|| TransformError::Internal("gif frame size mismatch".into()))?;
        let delay = image::Delay::from_numer_denom_ms(f.delay_ms, 1);
        enc.encode_frame(image::Frame::from_parts(buf, 0, 0, delay))
            .map_err(|e| enc_err("gif", e))
    }

    fn finish(mut self) -> Result<Vec<u8>, TransformError> {
        // Dropping the encoder writes the trailer.
        drop(self.enc.take());
        Ok(std::mem::take(&mut *self.out.0.borrow_mut()))
    }
}

/// Owns a `WebPAnimEncoder` so every exit path frees it.
struct AnimEncoder(*mut libwebp_sys::WebPAnimEncoder);

impl Drop for AnimEncoder {
    fn drop(&mut self) {
        // SAFETY: the pointer came from WebPAnimEncoderNewInternal and is deleted once.
        unsafe { libwebp_sys::WebPAnimEncoderDelete(self.0) }
    }
}

/// Owns a `WebPPicture`'s buffers.
struct Picture(libwebp_sys::WebPPicture);

impl Drop for Picture {
    fn drop(&mut self) {
        // SAFETY: the picture was initialised by WebPPictureInit; freeing is idempotent.
        unsafe { libwebp_sys::WebPPictureFree(&mut self.0) }
    }
}

pub struct WebpAnim {
    enc: AnimEncoder,
    config: libwebp_sys::WebPConfig,
    /// Start of the next frame, ms.
    ts: i64,
    width: u32,
    height: u32,
}

impl WebpAnim {
    fn new(
        s: &Settings,
        loops: Option<u32>,
        width: u32,
        height: u32,
    ) -> Result<WebpAnim, TransformError> {
        use libwebp_sys as w;
        let mut config = w::WebPConfig::new().map_err(|_| enc_err("webp", "config init"))?;
        config.lossless = i32::from(s.lossless);
        config.quality = f32::from(s.quality);
        // SAFETY: the pointers passed point to live, initialised values owned here.
        unsafe {
            if w::WebPValidateConfig(&config) == 0 {
                return Err(enc_err("webp", "invalid config"));
            }
            let mut eo = std::mem::MaybeUninit::<w::WebPAnimEncoderOptions>::uninit();
            let abi = w::WebPGetMuxABIVersion();
            if w::WebPAnimEncoderOptionsInitInternal(eo.as_mut_ptr(), abi) == 0 {
                return Err(enc_err("webp", "anim options init"));
            }
            let mut eo = eo.assume_init();
            eo.anim_params.loop_count = match loops {
                None => 0,
                Some(n) => i32::try_from(n.clamp(1, 65535)).unwrap_or(65535),
            };
            let enc = w::WebPAnimEncoderNewInternal(width as i32, height as i32, &eo, abi);
            if enc.is_null() {
                return Err(enc_err("webp", "anim encoder init"));
            }
            Ok(WebpAnim {
                enc: AnimEncoder(enc),
                config,
                ts: 0,
                width,
                height,
            })
        }
    }

    fn add(&mut self, f: &Frame) -> Result<(), TransformError> {
        use libwebp_sys as w;
        let (width, r) = (self.width, &f.raster);
        let stride = i32::try_from(width as usize * 4)
            .map_err(|_| TransformError::TooLarge(format!("animation {width} px wide")))?;
        let t = i32::try_from(self.ts)
            .map_err(|_| TransformError::TooLarge("animation too long".into()))?;
        // SAFETY: the picture is initialised here and freed by its guard; the pixel buffer
        // is width*height*4 bytes (checked by the sink) and outlives the import, which copies.
        unsafe {
            let mut pic =
                Picture(w::WebPPicture::new().map_err(|_| enc_err("webp", "picture init"))?);
            pic.0.use_argb = 1;
            pic.0.width = width as i32;
            pic.0.height = self.height as i32;
            if w::WebPPictureImportRGBA(&mut pic.0, r.data.as_ptr(), stride) == 0 {
                return Err(enc_err("webp", "picture import"));
            }
            if w::WebPAnimEncoderAdd(self.enc.0, &mut pic.0, t, &self.config) == 0 {
                return Err(enc_err("webp", anim_error(self.enc.0)));
            }
        }
        self.ts += i64::from(f.delay_ms.max(1));
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, TransformError> {
        use libwebp_sys as w;
        let t = i32::try_from(self.ts)
            .map_err(|_| TransformError::TooLarge("animation too long".into()))?;
        // SAFETY: the encoder is live (owned by self); `data` is cleared after copying.
        unsafe {
            if w::WebPAnimEncoderAdd(self.enc.0, std::ptr::null_mut(), t, std::ptr::null()) == 0 {
                return Err(enc_err("webp", anim_error(self.enc.0)));
            }
            let mut data = w::WebPData::default();
            if w::WebPAnimEncoderAssemble(self.enc.0, &mut data) == 0 {
                return Err(enc_err("webp", anim_error(self.enc.0)));
            }
            let out = if data.bytes.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(data.bytes, data.size).to_vec()
            };
            w::WebPDataClear(&mut data);
            Ok(out)
        }
    }
}

unsafe fn anim_error(enc: *mut libwebp_sys::WebPAnimEncoder) -> String {
    let p = libwebp_sys::WebPAnimEncoderGetError(enc);
    if p.is_null() {
        "unknown error".into()
    } else {
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_table() {
        let mut spec = TransformSpec::new(filters::Mode::Image);
        let cases = [
            (Some(Quality::Low), 60, 8, false),
            (Some(Quality::MediumLow), 68, 7, false),
            (Some(Quality::Medium), 75, 6, false),
            (Some(Quality::MediumHigh), 82, 5, false),
            (None, 85, 6, false),
            (Some(Quality::High), 90, 4, false),
            (Some(Quality::Lossless), 100, 0, true),
            (Some(Quality::Value(82)), 82, 5, false),
            (Some(Quality::Value(1)), 1, 9, false),
        ];
        for (q, want_q, want_png, lossless) in cases {
            spec.quality = q;
            let s = settings(&spec, 8);
            assert_eq!(
                (s.quality, s.png_level, s.lossless),
                (want_q, want_png, lossless),
                "{q:?}"
            );
        }
        spec.quality = Some(Quality::High);
        spec.compression = Some(Compression::Level(9));
        assert_eq!(settings(&spec, 8).png_level, 9);
        spec.compression = Some(Compression::Fast);
        assert_eq!(settings(&spec, 8).png_level, 1);
        assert_eq!(settings(&spec, 99).avif_speed, 10);
    }
}
