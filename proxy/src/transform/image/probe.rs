//! Header-only probing: what an input is (from its first bytes, through
//! [`crate::transform::sniff`], never from a name or a `Content-Type`), its dimensions,
//! orientation, alpha and frame count, read without decoding pixels, so limits are enforced
//! before a decoder allocates anything. It must not decode image data.

use std::io::Cursor;

use super::{exif, sniff, ImageFormat, ImageOptions, Probe};
use crate::transform::TransformError;

/// Maps our format to the `image` crate's, for the formats it decodes.
pub(crate) fn image_crate_format(f: ImageFormat) -> Option<image::ImageFormat> {
    Some(match f {
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Gif => image::ImageFormat::Gif,
        ImageFormat::Webp => image::ImageFormat::WebP,
        ImageFormat::Bmp => image::ImageFormat::Bmp,
        ImageFormat::Tiff => image::ImageFormat::Tiff,
        ImageFormat::Avif | ImageFormat::Heic | ImageFormat::Svg => return None,
    })
}

/// `image` crate limits derived from our options: no single allocation past what a
/// `max_input_pixels` RGBA image with 16-bit channels needs.
pub(crate) fn limits(opts: &ImageOptions) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_alloc = Some(opts.max_input_pixels.saturating_mul(8).max(1 << 20));
    l.max_image_width = Some(u32::try_from(opts.max_input_pixels).unwrap_or(u32::MAX));
    l.max_image_height = Some(u32::try_from(opts.max_input_pixels).unwrap_or(u32::MAX));
    l
}

/// Converts an `image` crate error into ours.
pub(crate) fn image_err(e: image::ImageError) -> TransformError {
    use image::ImageError as E;
    match e {
        E::Limits(l) => TransformError::TooLarge(format!("image over the decoder limits: {l}")),
        E::Unsupported(u) => TransformError::Unsupported(format!("unsupported image: {u}")),
        E::Decoding(d) => TransformError::Invalid(format!("corrupt image: {d}")),
        E::Parameter(p) => TransformError::Invalid(format!("corrupt image: {p}")),
        E::IoError(io) => TransformError::Invalid(format!("truncated or unreadable image: {io}")),
        E::Encoding(en) => TransformError::Internal(format!("encoder failed: {en}")),
    }
}

/// Checks the byte limit.
pub(crate) fn check_bytes(bytes: &[u8], opts: &ImageOptions) -> Result<(), TransformError> {
    if bytes.len() as u64 > opts.max_input_bytes {
        return Err(TransformError::TooLarge(format!(
            "input of {} bytes over the limit of {} bytes",
            bytes.len(),
            opts.max_input_bytes
        )));
    }
    Ok(())
}

/// Checks the pixel limit on (stored) dimensions.
pub(crate) fn check_pixels(w: u32, h: u32, opts: &ImageOptions) -> Result<(), TransformError> {
    let px = u64::from(w) * u64::from(h);
    if px > opts.max_input_pixels {
        return Err(TransformError::TooLarge(format!(
            "image of {w}x{h} ({px} pixels) over the limit of {} pixels",
            opts.max_input_pixels
        )));
    }
    if w == 0 || h == 0 {
        return Err(TransformError::Invalid(format!(
            "image has an empty dimension ({w}x{h})"
        )));
    }
    Ok(())
}

/// What decoding a `w`×`h` image whose decoder buffer is `decoded` bytes costs in memory: that
/// buffer plus the 8-bit RGBA working raster. Refused (413) over `max_decode_bytes`, before
/// anything is decoded.
pub(crate) fn check_decode_memory(
    w: u32,
    h: u32,
    decoded: u64,
    opts: &ImageOptions,
) -> Result<(), TransformError> {
    let need = decoded.saturating_add(u64::from(w) * u64::from(h) * 4);
    if need > opts.max_decode_bytes {
        return Err(TransformError::TooLarge(format!(
            "decoding {w}x{h} needs about {} MiB, over the budget of {} MiB",
            need >> 20,
            opts.max_decode_bytes >> 20
        )));
    }
    Ok(())
}

/// Header-only probe.
pub fn probe(bytes: &[u8], opts: &ImageOptions) -> Result<Probe, TransformError> {
    check_bytes(bytes, opts)?;
    let format = sniff(bytes).ok_or_else(|| {
        TransformError::Unsupported("input is not a recognised image format".to_string())
    })?;
    // Formats whose header gives only a size: no orientation to apply; alpha and frames are
    // known for SVG (a single frame, maybe transparent), not for HEIF.
    // Their decoder buffers: RGBA for a rendered SVG, up to 16 bits a channel for HEIF.
    let sized = |(w, h): (u32, u32), has_alpha, frame_count, bytes_per_px: u64| Probe {
        format,
        width: w,
        height: h,
        stored_width: w,
        stored_height: h,
        orientation: 1,
        has_alpha,
        frame_count,
        decoded_bytes: (u64::from(w) * u64::from(h)).saturating_mul(bytes_per_px),
    };
    let p = match format {
        ImageFormat::Svg => sized(super::svg::intrinsic_size(bytes)?, Some(true), Some(1), 4),
        ImageFormat::Avif | ImageFormat::Heic => {
            let size = isobmff_ispe(bytes).ok_or_else(|| {
                TransformError::Invalid(format!("{} has no readable image size", format.as_str()))
            })?;
            let p = sized(size, None, None, 8);
            check_pixels(p.stored_width, p.stored_height, opts)?;
            check_decode_memory(p.stored_width, p.stored_height, p.decoded_bytes, opts)?;
            p
        }
        _ => raster_probe(bytes, format, opts)?,
    };
    check_pixels(p.stored_width, p.stored_height, opts)?;
    Ok(p)
}

fn raster_probe(
    bytes: &[u8],
    format: ImageFormat,
    opts: &ImageOptions,
) -> Result<Probe, TransformError> {
    use image::ImageDecoder;
    let f = image_crate_format(format).ok_or_else(|| {
        TransformError::Unsupported(format!("{} is not decodable", format.as_str()))
    })?;
    // Fixed-position headers are checked before any decoder exists.
    if let Some((w, h)) = fixed_header_dims(bytes, format) {
        check_pixels(w, h, opts)?;
    }
    // Dimensions first, with no limits beyond the header parse, so an oversized header is a
    // clean 413 rather than a decoder limit error.
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), f);
    reader.no_limits();
    let mut dec = reader.into_decoder().map_err(image_err)?;
    let (w, h) = dec.dimensions();
    check_pixels(w, h, opts)?;
    let decoded_bytes = dec.total_bytes();
    check_decode_memory(w, h, decoded_bytes, opts)?;
    let has_alpha = dec.color_type().has_alpha();
    let orientation = match format {
        ImageFormat::Jpeg => exif::jpeg_exif(bytes).and_then(|e| exif::orientation(&e)),
        _ => dec
            .exif_metadata()
            .ok()
            .flatten()
            .and_then(|e| exif::orientation(&e)),
    }
    .unwrap_or(1);
    let frame_count = match format {
        ImageFormat::Gif => Some(gif_frame_count(bytes)?),
        ImageFormat::Webp => Some(webp_frame_count(bytes)?),
        _ => Some(1),
    };
    let (dw, dh) = if (5..=8).contains(&orientation) {
        (h, w)
    } else {
        (w, h)
    };
    Ok(Probe {
        format,
        width: dw,
        height: dh,
        stored_width: w,
        stored_height: h,
        orientation,
        has_alpha: Some(has_alpha),
        frame_count,
        decoded_bytes,
    })
}

/// Dimensions straight from the header bytes: PNG's IHDR, GIF's logical screen, JPEG's SOF.
fn fixed_header_dims(b: &[u8], f: ImageFormat) -> Option<(u32, u32)> {
    match f {
        ImageFormat::Png if b.get(12..16) == Some(b"IHDR") => Some((
            u32::from_be_bytes(b.get(16..20)?.try_into().ok()?),
            u32::from_be_bytes(b.get(20..24)?.try_into().ok()?),
        )),
        ImageFormat::Jpeg => {
            let mut dims = None;
            exif::jpeg_segments(b, |m, p| {
                let sof = matches!(m, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF);
                if sof && dims.is_none() && p.len() >= 5 {
                    let h = u32::from(u16::from_be_bytes([p[1], p[2]]));
                    let w = u32::from(u16::from_be_bytes([p[3], p[4]]));
                    dims = Some((w, h));
                }
            });
            dims
        }
        ImageFormat::Gif => Some((
            u32::from(u16::from_le_bytes(b.get(6..8)?.try_into().ok()?)),
            u32::from(u16::from_le_bytes(b.get(8..10)?.try_into().ok()?)),
        )),
        _ => None,
    }
}

/// Counts GIF frames without decompressing them.
pub(crate) fn gif_frame_count(bytes: &[u8]) -> Result<u32, TransformError> {
    let mut opts = gif::DecodeOptions::new();
    opts.skip_frame_decoding(true);
    opts.set_color_output(gif::ColorOutput::Indexed);
    let mut dec = opts
        .read_info(Cursor::new(bytes))
        .map_err(|e| TransformError::Invalid(format!("corrupt gif: {e}")))?;
    let mut n = 0u32;
    loop {
        match dec.read_next_frame() {
            Ok(Some(_)) => n = n.saturating_add(1),
            Ok(None) => break,
            Err(e) if n > 0 => {
                // A damaged trailer after complete frames: count what is there.
                let _ = e;
                break;
            }
            Err(e) => return Err(TransformError::Invalid(format!("corrupt gif: {e}"))),
        }
    }
    Ok(n.max(1))
}

pub(crate) fn webp_frame_count(bytes: &[u8]) -> Result<u32, TransformError> {
    let dec = image_webp::WebPDecoder::new(Cursor::new(bytes))
        .map_err(|e| TransformError::Invalid(format!("corrupt webp: {e}")))?;
    Ok(if dec.is_animated() {
        dec.num_frames().max(1)
    } else {
        1
    })
}

/// The largest `ispe` (image spatial extents) property of an AVIF/HEIF file: the primary
/// image's size in all but exotic files (thumbnails are smaller).
pub(crate) fn isobmff_ispe(b: &[u8]) -> Option<(u32, u32)> {
    fn boxes(mut b: &[u8]) -> impl Iterator<Item = (&[u8; 4], &[u8])> {
        std::iter::from_fn(move || {
            if b.len() < 8 {
                return None;
            }
            let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64;
            let kind: &[u8; 4] = b[4..8].try_into().ok()?;
            let (hdr, size) = match size {
                0 => (8usize, b.len() as u64),
                1 => {
                    let big = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
                    (16usize, big)
                }
                s => (8usize, s),
            };
            let size = usize::try_from(size).ok()?;
            if size < hdr || size > b.len() {
                return None;
            }
            let body = &b[hdr..size];
            b = &b[size..];
            Some((kind, body))
        })
    }
    let meta = boxes(b).find(|(k, _)| *k == b"meta")?.1;
    let iprp = boxes(meta.get(4..)?).find(|(k, _)| *k == b"iprp")?.1;
    let ipco = boxes(iprp).find(|(k, _)| *k == b"ipco")?.1;
    boxes(ipco)
        .filter(|(k, _)| *k == b"ispe")
        .filter_map(|(_, body)| {
            let w = u32::from_be_bytes(body.get(4..8)?.try_into().ok()?);
            let h = u32::from_be_bytes(body.get(8..12)?.try_into().ok()?);
            Some((w, h))
        })
        .max_by_key(|&(w, h)| u64::from(w) * u64::from(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ispe_is_found_in_nested_boxes() {
        fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
            let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            v.extend_from_slice(kind);
            v.extend_from_slice(body);
            v
        }
        let ispe = |w: u32, h: u32| {
            let mut body = vec![0u8; 4];
            body.extend_from_slice(&w.to_be_bytes());
            body.extend_from_slice(&h.to_be_bytes());
            bx(b"ispe", &body)
        };
        let ipco = bx(b"ipco", &[ispe(160, 120), ispe(4032, 3024)].concat());
        let iprp = bx(b"iprp", &ipco);
        let meta = bx(
            b"meta",
            &[vec![0u8; 4], bx(b"hdlr", &[0u8; 20]), iprp].concat(),
        );
        let file = [bx(b"ftyp", b"avif\0\0\0\0avifmif1"), meta].concat();
        assert_eq!(sniff(&file), Some(ImageFormat::Avif));
        assert_eq!(isobmff_ispe(&file), Some((4032, 3024)));
        assert_eq!(isobmff_ispe(&file[..30]), None);
    }
}
