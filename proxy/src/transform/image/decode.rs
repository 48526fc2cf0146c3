//! Decoding, under limits: stills to an oriented 8-bit [`Raster`] (JPEG through
//! libjpeg-turbo with DCT shrink-on-load at 1/2, 1/4 or 1/8; CMYK JPEG and every other raster
//! format through the `image` crate with `image::Limits` set; HEIC/AVIF through libheif when
//! the `heic` feature is on), and animations frame by frame with their timing and loop
//! count. The caller has already checked dimensions against the pixel limit from the header;
//! this module must never allocate for a size it has not checked.

use std::io::Cursor;

use image::{AnimationDecoder, ImageDecoder};

use super::probe::{image_crate_format, image_err, limits};
use super::{ImageFormat, ImageOptions, Probe, Raster};
use crate::transform::TransformError;

/// A decoded still: pixels with EXIF orientation applied, and the ICC profile they are in
/// (converted to sRGB later, on the smaller output).
pub struct Decoded {
    pub raster: Raster,
    pub icc: Option<Vec<u8>>,
}

/// Decodes the first frame at 1/`shrink` scale (JPEG only; other formats ignore `shrink`),
/// with EXIF orientation applied.
pub fn still(
    bytes: &[u8],
    probe: &Probe,
    opts: &ImageOptions,
    shrink: u32,
) -> Result<Decoded, TransformError> {
    let (raster, icc) = match probe.format {
        ImageFormat::Jpeg => jpeg(bytes, probe, opts, shrink)?,
        ImageFormat::Avif | ImageFormat::Heic => super::heif::decode(bytes, probe, opts)?,
        ImageFormat::Svg => {
            return Err(TransformError::Internal(
                "svg is rasterised, not decoded".into(),
            ))
        }
        f => generic(bytes, f, opts)?,
    };
    Ok(Decoded {
        raster: super::ops::orient(raster, probe.orientation)?,
        icc,
    })
}

fn generic(
    bytes: &[u8],
    f: ImageFormat,
    opts: &ImageOptions,
) -> Result<(Raster, Option<Vec<u8>>), TransformError> {
    let fmt = image_crate_format(f)
        .ok_or_else(|| TransformError::Unsupported(format!("{} is not decodable", f.as_str())))?;
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), fmt);
    reader.limits(limits(opts));
    let mut dec = reader.into_decoder().map_err(image_err)?;
    let icc = dec.icc_profile().ok().flatten();
    let img = image::DynamicImage::from_decoder(dec).map_err(image_err)?;
    Ok((Raster::from_dynamic(img), icc))
}

fn jpeg(
    bytes: &[u8],
    probe: &Probe,
    opts: &ImageOptions,
    shrink: u32,
) -> Result<(Raster, Option<Vec<u8>>), TransformError> {
    let icc = super::exif::jpeg_icc(bytes);
    let tj_err = |e: turbojpeg::Error| TransformError::Invalid(format!("corrupt jpeg: {e}"));
    let mut d = turbojpeg::Decompressor::new()
        .map_err(|e| TransformError::Internal(format!("jpeg decoder init: {e}")))?;
    let header = d.read_header(bytes).map_err(tj_err)?;
    if matches!(
        header.colorspace,
        turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
    ) {
        // libjpeg-turbo cannot convert CMYK to RGB; the image crate (zune-jpeg) can. A CMYK
        // ICC profile does not describe the converted RGB, so it is dropped.
        let (r, _) = generic(bytes, ImageFormat::Jpeg, opts)?;
        return Ok((r, None));
    }
    if (header.width, header.height) != (probe.stored_width as usize, probe.stored_height as usize)
    {
        return Err(TransformError::Invalid(format!(
            "jpeg header disagrees with itself: {}x{} vs {}x{}",
            header.width, header.height, probe.stored_width, probe.stored_height
        )));
    }
    let factor = match shrink {
        8 => turbojpeg::ScalingFactor::ONE_EIGHTH,
        4 => turbojpeg::ScalingFactor::ONE_QUARTER,
        2 => turbojpeg::ScalingFactor::ONE_HALF,
        _ => turbojpeg::ScalingFactor::ONE,
    };
    d.set_scaling_factor(factor).map_err(tj_err)?;
    let scaled = header.scaled(factor);
    let (w, h) = (scaled.width, scaled.height);
    let mut pixels = vec![0u8; w * h * 3];
    let img = turbojpeg::Image {
        pixels: &mut pixels[..],
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    d.decompress(bytes, img).map_err(tj_err)?;
    Ok((
        Raster {
            width: w as u32,
            height: h as u32,
            alpha: false,
            data: pixels,
        },
        icc,
    ))
}

/// One decoded animation frame (full canvas, RGBA, straight alpha).
pub struct AnimFrame {
    pub raster: Raster,
    pub delay_ms: u32,
}

/// An animation's frames, decoded lazily, and its loop count (`None` = forever).
pub struct Animation<'a> {
    pub frames: Box<dyn Iterator<Item = Result<AnimFrame, TransformError>> + 'a>,
    pub loops: Option<u32>,
}

/// Opens an animated GIF or WebP.
pub fn animation<'a>(
    bytes: &'a [u8],
    f: ImageFormat,
    opts: &ImageOptions,
) -> Result<Animation<'a>, TransformError> {
    let (frames, loop_count) = match f {
        ImageFormat::Gif => {
            let mut d =
                image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).map_err(image_err)?;
            d.set_limits(limits(opts)).map_err(image_err)?;
            let lc = d.loop_count();
            (d.into_frames(), lc)
        }
        ImageFormat::Webp => {
            let mut d =
                image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).map_err(image_err)?;
            d.set_limits(limits(opts)).map_err(image_err)?;
            let lc = d.loop_count();
            (d.into_frames(), lc)
        }
        other => {
            return Err(TransformError::Unsupported(format!(
                "{} is not an animation format",
                other.as_str()
            )))
        }
    };
    let loops = match loop_count {
        image::metadata::LoopCount::Infinite => None,
        image::metadata::LoopCount::Finite(n) => Some(n.get()),
    };
    let frames = frames.map(|fr| {
        let fr = fr.map_err(image_err)?;
        let (n, d) = fr.delay().numer_denom_ms();
        let delay_ms = if d == 0 { 0 } else { n / d };
        let buf = fr.into_buffer();
        Ok(AnimFrame {
            raster: Raster {
                width: buf.width(),
                height: buf.height(),
                alpha: true,
                data: buf.into_raw(),
            },
            delay_ms,
        })
    });
    Ok(Animation {
        frames: Box::new(frames),
        loops,
    })
}
