//! Pixel operations on a decoded [`Raster`] (8-bit RGB or RGBA, straight alpha): EXIF
//! orientation, crop + Lanczos3 resize (fast_image_resize, alpha-aware), quarter-turn
//! rotation, blur, unsharp-mask sharpening, colour adjustments, flips, padding onto a canvas,
//! alpha flattening, and the
//! cheap saliency search behind `gravity=auto`. It owns no policy: the plan comes from
//! `geometry`, the colours and strengths from the caller.

use fast_image_resize as fr;
use image::{ImageBuffer, Rgb, Rgba};

use super::Raster;
use crate::transform::geometry::Rect;
use crate::transform::TransformError;

fn internal(what: &str, e: impl std::fmt::Display) -> TransformError {
    TransformError::Internal(format!("{what}: {e}"))
}

impl Raster {
    pub fn channels(&self) -> usize {
        if self.alpha {
            4
        } else {
            3
        }
    }

    /// From any decoded image: 8-bit, RGB or RGBA (16-bit and grey inputs are converted).
    pub fn from_dynamic(img: image::DynamicImage) -> Raster {
        let (width, height) = (img.width(), img.height());
        if img.color().has_alpha() {
            Raster {
                width,
                height,
                alpha: true,
                data: img.into_rgba8().into_raw(),
            }
        } else {
            Raster {
                width,
                height,
                alpha: false,
                data: img.into_rgb8().into_raw(),
            }
        }
    }

    pub fn into_dynamic(self) -> Result<image::DynamicImage, TransformError> {
        let (w, h) = (self.width, self.height);
        let bad = || TransformError::Internal(format!("raster buffer does not match {w}x{h}"));
        Ok(if self.alpha {
            image::DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, self.data).ok_or_else(bad)?)
        } else {
            image::DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, self.data).ok_or_else(bad)?)
        })
    }

    /// Does any pixel have alpha below 255?
    pub fn uses_alpha(&self) -> bool {
        self.alpha && self.data.chunks_exact(4).any(|p| p[3] != 255)
    }

    pub fn to_rgba(self) -> Raster {
        if self.alpha {
            return self;
        }
        let mut data = Vec::with_capacity(self.data.len() / 3 * 4);
        for p in self.data.chunks_exact(3) {
            data.extend_from_slice(&[p[0], p[1], p[2], 255]);
        }
        Raster {
            width: self.width,
            height: self.height,
            alpha: true,
            data,
        }
    }
}

/// Applies an EXIF orientation (1..=8).
pub fn orient(r: Raster, orientation: u8) -> Result<Raster, TransformError> {
    match image::metadata::Orientation::from_exif(orientation) {
        Some(o) if orientation != 1 => {
            let mut img = r.into_dynamic()?;
            img.apply_orientation(o);
            Ok(Raster::from_dynamic(img))
        }
        _ => Ok(r),
    }
}

/// Copies an integer rectangle out of the raster.
pub fn crop(r: &Raster, rect: Rect) -> Raster {
    let c = r.channels();
    let x = rect.x.min(r.width.saturating_sub(1));
    let y = rect.y.min(r.height.saturating_sub(1));
    let w = rect.w.min(r.width - x).max(1);
    let h = rect.h.min(r.height - y).max(1);
    let stride = r.width as usize * c;
    let mut data = Vec::with_capacity(w as usize * h as usize * c);
    for row in y..y + h {
        let start = row as usize * stride + x as usize * c;
        data.extend_from_slice(&r.data[start..start + w as usize * c]);
    }
    Raster {
        width: w,
        height: h,
        alpha: r.alpha,
        data,
    }
}

/// Resizes the region `(x, y, w, h)` (sub-pixel, in this raster's pixels) to `out`.
pub fn resize(
    r: &Raster,
    region: (f64, f64, f64, f64),
    out: (u32, u32),
) -> Result<Raster, TransformError> {
    let (x, y, w, h) = region;
    let integral = [x, y, w, h].iter().all(|v| v.fract() == 0.0);
    if integral && (w as u32, h as u32) == out {
        if (x, y, w as u32, h as u32) == (0.0, 0.0, r.width, r.height) {
            return Ok(r.clone());
        }
        return Ok(crop(
            r,
            Rect {
                x: x as u32,
                y: y as u32,
                w: out.0,
                h: out.1,
            },
        ));
    }
    let pt = if r.alpha {
        fr::PixelType::U8x4
    } else {
        fr::PixelType::U8x3
    };
    let src = fr::images::ImageRef::new(r.width, r.height, &r.data, pt)
        .map_err(|e| internal("resize source", e))?;
    let mut dst = fr::images::Image::new(out.0.max(1), out.1.max(1), pt);
    let opts = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3))
        .crop(x, y, w.max(1e-3), h.max(1e-3));
    fr::Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| internal("resize", e))?;
    Ok(Raster {
        width: dst.width(),
        height: dst.height(),
        alpha: r.alpha,
        data: dst.into_vec(),
    })
}

/// Rotates clockwise by 90, 180 or 270 degrees (others: unchanged).
pub fn rotate(r: Raster, deg: u16) -> Result<Raster, TransformError> {
    if deg % 360 == 0 || deg % 90 != 0 {
        return Ok(r);
    }
    let img = r.into_dynamic()?;
    let out = match deg % 360 {
        90 => img.rotate90(),
        180 => img.rotate180(),
        _ => img.rotate270(),
    };
    Ok(Raster::from_dynamic(out))
}

fn with_buffers(
    r: Raster,
    rgb: impl FnOnce(ImageBuffer<Rgb<u8>, Vec<u8>>) -> ImageBuffer<Rgb<u8>, Vec<u8>>,
    rgba: impl FnOnce(ImageBuffer<Rgba<u8>, Vec<u8>>) -> ImageBuffer<Rgba<u8>, Vec<u8>>,
) -> Result<Raster, TransformError> {
    let (w, h, alpha) = (r.width, r.height, r.alpha);
    let bad = || TransformError::Internal(format!("raster buffer does not match {w}x{h}"));
    let data = if alpha {
        rgba(ImageBuffer::from_raw(w, h, r.data).ok_or_else(bad)?).into_raw()
    } else {
        rgb(ImageBuffer::from_raw(w, h, r.data).ok_or_else(bad)?).into_raw()
    };
    Ok(Raster {
        width: w,
        height: h,
        alpha,
        data,
    })
}

/// Gaussian-like blur; `radius` 1..=250 as in Cloudflare's `blur` (sigma = radius / 2).
pub fn blur(r: Raster, radius: u32) -> Result<Raster, TransformError> {
    let sigma = (radius.clamp(1, 250) as f32) / 2.0;
    with_buffers(
        r,
        |b| image::imageops::fast_blur(&b, sigma),
        |b| image::imageops::fast_blur(&b, sigma),
    )
}

/// Unsharp mask: `out = src + amount * (src - blur(src))` with sigma 1 and
/// `amount = strength / 2` (`sharpen` 0..=10; 1 is a gentle post-downscale sharpen).
pub fn sharpen(r: Raster, strength: f32) -> Result<Raster, TransformError> {
    if strength.is_nan() || strength <= 0.0 {
        return Ok(r);
    }
    let amount = strength.min(10.0) / 2.0;
    let c = r.channels();
    let blurred = with_buffers(
        r.clone(),
        |b| image::imageops::fast_blur(&b, 1.0),
        |b| image::imageops::fast_blur(&b, 1.0),
    )?;
    let mut out = r;
    for (i, (p, b)) in out.data.iter_mut().zip(blurred.data.iter()).enumerate() {
        if c == 4 && i % 4 == 3 {
            continue;
        }
        let v = f32::from(*p) + amount * (f32::from(*p) - f32::from(*b));
        *p = v.round().clamp(0.0, 255.0) as u8;
    }
    Ok(out)
}

/// Cloudflare's colour factors (1 = no change each; 0 for brightness, contrast and gamma
/// means "not asked", and the caller passes 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adjust {
    /// Multiplies every channel: 0.5 half as bright, 2 twice.
    pub brightness: f32,
    /// Scales the distance from mid-grey: 0.5 flatter, 2 harder.
    pub contrast: f32,
    /// Exposure: `out = in^(1/gamma)`, so above 1 lightens and below 1 darkens.
    pub gamma: f32,
    /// Scales the distance from the pixel's luma (Rec. 601): 0 grey, 2 twice as vivid.
    pub saturation: f32,
}

/// Applies brightness, contrast and gamma through one 256-entry table per call, then
/// saturation per pixel; alpha is untouched. A no-op when every factor is 1.
pub fn adjust(mut r: Raster, a: Adjust) -> Raster {
    let valid = |f: f32, default: f32| {
        if f.is_finite() && f >= 0.0 {
            f
        } else {
            default
        }
    };
    let (b, c, g, s) = (
        valid(a.brightness, 1.0),
        valid(a.contrast, 1.0),
        valid(a.gamma, 1.0).max(0.01),
        valid(a.saturation, 1.0),
    );
    let ch = r.channels();
    if b != 1.0 || c != 1.0 || g != 1.0 {
        let mut lut = [0u8; 256];
        for (i, v) in lut.iter_mut().enumerate() {
            let x = i as f32 / 255.0 * b;
            let x = (x - 0.5) * c + 0.5;
            let x = x.clamp(0.0, 1.0).powf(1.0 / g);
            *v = (x * 255.0).round() as u8;
        }
        for px in r.data.chunks_exact_mut(ch) {
            for v in &mut px[..3] {
                *v = lut[usize::from(*v)];
            }
        }
    }
    if s != 1.0 {
        for px in r.data.chunks_exact_mut(ch) {
            let y = 0.299 * f32::from(px[0]) + 0.587 * f32::from(px[1]) + 0.114 * f32::from(px[2]);
            for v in &mut px[..3] {
                *v = (y + (f32::from(*v) - y) * s).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    r
}

/// Mirrors the raster horizontally, vertically or both.
pub fn flip(mut r: Raster, f: filters::Flip) -> Raster {
    let ch = r.channels();
    let (w, h) = (r.width as usize, r.height as usize);
    let row = w * ch;
    if matches!(f, filters::Flip::H | filters::Flip::Hv) {
        for line in r.data.chunks_exact_mut(row) {
            for x in 0..w / 2 {
                let (a, b) = (x * ch, (w - 1 - x) * ch);
                for k in 0..ch {
                    line.swap(a + k, b + k);
                }
            }
        }
    }
    if matches!(f, filters::Flip::V | filters::Flip::Hv) {
        for y in 0..h / 2 {
            let (top, bottom) = r.data.split_at_mut((h - 1 - y) * row);
            top[y * row..(y + 1) * row].swap_with_slice(&mut bottom[..row]);
        }
    }
    r
}

/// Parses a normalised `#rrggbb` / `#rrggbbaa` colour.
pub fn parse_rgba(s: &str) -> Option<[u8; 4]> {
    let hex = s.strip_prefix('#').unwrap_or(s);
    let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
    match hex.len() {
        6 => Some([byte(0)?, byte(2)?, byte(4)?, 255]),
        8 => Some([byte(0)?, byte(2)?, byte(4)?, byte(6)?]),
        _ => None,
    }
}

/// Composites onto an opaque background and drops the alpha channel.
pub fn flatten(r: Raster, bg: [u8; 4]) -> Raster {
    if !r.alpha {
        return r;
    }
    let mut data = Vec::with_capacity(r.data.len() / 4 * 3);
    for p in r.data.chunks_exact(4) {
        let a = u32::from(p[3]);
        for i in 0..3 {
            let v = (u32::from(p[i]) * a + u32::from(bg[i]) * (255 - a) + 127) / 255;
            data.push(v as u8);
        }
    }
    Raster {
        width: r.width,
        height: r.height,
        alpha: false,
        data,
    }
}

/// Places `r` at `offset` on a `canvas` filled with `bg`. The canvas has alpha when the
/// background is not opaque or `r` has alpha.
pub fn pad(r: Raster, canvas: (u32, u32), offset: (u32, u32), bg: [u8; 4]) -> Raster {
    if canvas == (r.width, r.height) {
        return r;
    }
    let alpha = bg[3] != 255 || r.alpha;
    let r = if alpha { r.to_rgba() } else { r };
    let c = if alpha { 4 } else { 3 };
    let (cw, ch) = (canvas.0 as usize, canvas.1 as usize);
    let mut data = Vec::with_capacity(cw * ch * c);
    for _ in 0..cw * ch {
        data.extend_from_slice(&bg[..c]);
    }
    let (ox, oy) = (offset.0 as usize, offset.1 as usize);
    let w = (r.width as usize).min(cw.saturating_sub(ox));
    for row in 0..(r.height as usize).min(ch.saturating_sub(oy)) {
        let src = row * r.width as usize * c;
        let dst = ((oy + row) * cw + ox) * c;
        data[dst..dst + w * c].copy_from_slice(&r.data[src..src + w * c]);
    }
    Raster {
        width: canvas.0,
        height: canvas.1,
        alpha,
        data,
    }
}

/// `gravity=auto`: the anchor (0..=1 on each axis) of the window of `frac` (fraction of the
/// image on each axis) holding the most detail. Detail is gradient energy plus saturation,
/// measured on a ≤64 px thumbnail, with a slight pull to the centre so flat images crop
/// centred.
pub fn auto_anchor(r: &Raster, frac: (f64, f64)) -> Result<(f64, f64), TransformError> {
    let scale = 64.0 / f64::from(r.width.max(r.height));
    let (tw, th) = if scale < 1.0 {
        (
            ((f64::from(r.width) * scale).round() as u32).max(1),
            ((f64::from(r.height) * scale).round() as u32).max(1),
        )
    } else {
        (r.width, r.height)
    };
    let small = resize(
        r,
        (0.0, 0.0, f64::from(r.width), f64::from(r.height)),
        (tw, th),
    )?;
    let (w, h, c) = (tw as usize, th as usize, small.channels());
    let luma: Vec<f64> = small
        .data
        .chunks_exact(c)
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect();
    let mut energy = vec![0f64; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let gx = if x + 1 < w {
                (luma[i + 1] - luma[i]).abs()
            } else {
                0.0
            };
            let gy = if y + 1 < h {
                (luma[i + w] - luma[i]).abs()
            } else {
                0.0
            };
            let p = &small.data[i * c..i * c + 3];
            let sat = f64::from(
                p.iter().max().copied().unwrap_or(0) - p.iter().min().copied().unwrap_or(0),
            );
            energy[i] = gx + gy + sat * 0.25;
        }
    }
    // Summed-area table.
    let mut sat = vec![0f64; (w + 1) * (h + 1)];
    for y in 0..h {
        for x in 0..w {
            sat[(y + 1) * (w + 1) + x + 1] =
                energy[y * w + x] + sat[y * (w + 1) + x + 1] + sat[(y + 1) * (w + 1) + x]
                    - sat[y * (w + 1) + x];
        }
    }
    let ww = ((frac.0.clamp(0.0, 1.0) * w as f64).round() as usize).clamp(1, w);
    let wh = ((frac.1.clamp(0.0, 1.0) * h as f64).round() as usize).clamp(1, h);
    let total = sat[h * (w + 1) + w].max(1e-9);
    let mut best = (f64::MIN, 0usize, 0usize);
    for y in 0..=h - wh {
        for x in 0..=w - ww {
            let s = sat[(y + wh) * (w + 1) + x + ww]
                - sat[y * (w + 1) + x + ww]
                - sat[(y + wh) * (w + 1) + x]
                + sat[y * (w + 1) + x];
            // Centre pull: up to 2% of the total energy.
            let cx = (x as f64 + ww as f64 / 2.0) / w as f64 - 0.5;
            let cy = (y as f64 + wh as f64 / 2.0) / h as f64 - 0.5;
            let score = s / total - 0.02 * (cx.abs() + cy.abs());
            if score > best.0 {
                best = (score, x, y);
            }
        }
    }
    Ok((
        (best.1 as f64 + ww as f64 / 2.0) / w as f64,
        (best.2 as f64 + wh as f64 / 2.0) / h as f64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, px: [u8; 3]) -> Raster {
        Raster {
            width: w,
            height: h,
            alpha: false,
            data: px
                .iter()
                .copied()
                .cycle()
                .take((w * h * 3) as usize)
                .collect(),
        }
    }

    #[test]
    fn colour_adjustments() {
        let one = Adjust {
            brightness: 1.0,
            contrast: 1.0,
            gamma: 1.0,
            saturation: 1.0,
        };
        let px = |r: &Raster| [r.data[0], r.data[1], r.data[2]];
        let r = solid(4, 2, [100, 150, 200]);
        assert_eq!(adjust(r.clone(), one).data, r.data, "1s are a no-op");
        let half = adjust(
            r.clone(),
            Adjust {
                brightness: 0.5,
                ..one
            },
        );
        assert_eq!(px(&half), [50, 75, 100]);
        let flat = adjust(
            r.clone(),
            Adjust {
                contrast: 0.0,
                ..one
            },
        );
        assert_eq!(px(&flat), [128, 128, 128], "contrast 0 is mid-grey");
        let light = adjust(r.clone(), Adjust { gamma: 2.0, ..one });
        assert!(
            px(&light).iter().zip(px(&r)).all(|(a, b)| *a > b),
            "gamma 2 lightens"
        );
        let dark = adjust(r.clone(), Adjust { gamma: 0.5, ..one });
        assert!(
            px(&dark).iter().zip(px(&r)).all(|(a, b)| *a < b),
            "gamma 0.5 darkens"
        );
        let grey = adjust(
            r.clone(),
            Adjust {
                saturation: 0.0,
                ..one
            },
        );
        let g = px(&grey);
        assert!(g[0] == g[1] && g[1] == g[2], "saturation 0 is grey: {g:?}");
        let vivid = adjust(
            r,
            Adjust {
                saturation: 2.0,
                ..one
            },
        );
        assert!(px(&vivid)[0] < 100 && px(&vivid)[2] > 200);
    }

    #[test]
    fn flips_mirror() {
        // 3×2: pixel value = 10·y + x in every channel.
        let mut r = solid(3, 2, [0, 0, 0]);
        for (i, p) in r.data.chunks_exact_mut(3).enumerate() {
            p.fill((i / 3 * 10 + i % 3) as u8);
        }
        let at = |r: &Raster, x: usize, y: usize| r.data[(y * 3 + x) * 3];
        let h = flip(r.clone(), filters::Flip::H);
        assert_eq!([at(&h, 0, 0), at(&h, 2, 0), at(&h, 0, 1)], [2, 0, 12]);
        let v = flip(r.clone(), filters::Flip::V);
        assert_eq!([at(&v, 0, 0), at(&v, 2, 1)], [10, 2]);
        let hv = flip(r, filters::Flip::Hv);
        assert_eq!([at(&hv, 0, 0), at(&hv, 2, 1)], [12, 0]);
    }

    #[test]
    fn resize_crop_rotate_pad() {
        let r = solid(100, 50, [10, 20, 30]);
        let out = resize(&r, (0.0, 0.0, 100.0, 50.0), (40, 20)).unwrap();
        assert_eq!(
            (out.width, out.height, out.data.len()),
            (40, 20, 40 * 20 * 3)
        );
        assert!(out.data.chunks_exact(3).all(|p| p == [10, 20, 30]));
        let c = resize(&r, (10.0, 10.0, 20.0, 20.0), (20, 20)).unwrap();
        assert_eq!((c.width, c.height), (20, 20));
        let rot = rotate(out, 90).unwrap();
        assert_eq!((rot.width, rot.height), (20, 40));
        let p = pad(rot, (40, 40), (10, 0), [255, 255, 255, 255]);
        assert_eq!((p.width, p.height, p.alpha), (40, 40, false));
        assert_eq!(&p.data[..3], &[255, 255, 255]);
        assert_eq!(&p.data[30..33], &[10, 20, 30]);
    }

    #[test]
    fn flatten_blends_on_background() {
        let r = Raster {
            width: 2,
            height: 1,
            alpha: true,
            data: vec![255, 0, 0, 0, 255, 0, 0, 255],
        };
        let f = flatten(r, [0, 0, 255, 255]);
        assert_eq!(f.data, vec![0, 0, 255, 255, 0, 0]);
        assert_eq!(parse_rgba("#ff000080"), Some([255, 0, 0, 128]));
        assert_eq!(parse_rgba("#fff"), None);
    }

    #[test]
    fn auto_anchor_finds_the_detail() {
        // Flat grey with a noisy block on the right third.
        let mut r = solid(300, 100, [128, 128, 128]);
        for y in 0..100usize {
            for x in 220..280usize {
                let v = if (x + y) % 2 == 0 { 0 } else { 255 };
                let i = (y * 300 + x) * 3;
                r.data[i..i + 3].copy_from_slice(&[v, v, v]);
            }
        }
        let (ax, _) = auto_anchor(&r, (1.0 / 3.0, 1.0)).unwrap();
        assert!(ax > 0.66, "{ax}");
        let flat = solid(300, 100, [50, 50, 50]);
        let (fx, fy) = auto_anchor(&flat, (0.5, 1.0)).unwrap();
        assert!(
            (fx - 0.5).abs() < 0.05 && (fy - 0.5).abs() < 0.05,
            "{fx},{fy}"
        );
    }

    #[test]
    fn sharpen_and_blur_keep_size() {
        let r = solid(30, 30, [100, 100, 100]);
        let b = blur(r.clone(), 10).unwrap();
        assert_eq!((b.width, b.height), (30, 30));
        let s = sharpen(r, 2.0).unwrap();
        assert!(s.data.iter().all(|&v| v == 100));
    }
}
