//! Colour management: converts pixels tagged with an ICC profile to sRGB (moxcms) so every
//! output is plain sRGB and carries no profile. It runs on the resized output, not the full
//! decode, to stay cheap. Owns nothing else; a profile it cannot parse, or one that is not
//! RGB, leaves the pixels untouched (a slight tint beats a failed request).

use super::Raster;

/// Converts `r` from the colour space described by `icc` to sRGB.
pub fn to_srgb(mut r: Raster, icc: &[u8]) -> Raster {
    let Ok(src) = moxcms::ColorProfile::new_from_slice(icc) else {
        return r;
    };
    if src.color_space != moxcms::DataColorSpace::Rgb {
        return r;
    }
    let layout = if r.alpha {
        moxcms::Layout::Rgba
    } else {
        moxcms::Layout::Rgb
    };
    let dst = moxcms::ColorProfile::new_srgb();
    let Ok(t) =
        src.create_transform_8bit(layout, &dst, layout, moxcms::TransformOptions::default())
    else {
        return r;
    };
    let mut out = vec![0u8; r.data.len()];
    if t.transform(&r.data, &mut out).is_ok() {
        r.data = out;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_p3_is_converted_and_garbage_ignored() {
        let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
        let r = Raster {
            width: 1,
            height: 1,
            alpha: false,
            data: vec![200, 100, 50],
        };
        let out = to_srgb(r.clone(), &p3);
        // P3 is wider than sRGB: a saturated orange gets more saturated in sRGB numbers.
        assert!(out.data[0] > 200 && out.data[2] < 50, "{:?}", out.data);
        assert_eq!(to_srgb(r.clone(), b"not a profile"), r);
        let srgb = moxcms::ColorProfile::new_srgb().encode().unwrap();
        let same = to_srgb(r.clone(), &srgb);
        assert!(
            same.data
                .iter()
                .zip(&r.data)
                .all(|(a, b)| a.abs_diff(*b) <= 1),
            "{:?}",
            same.data
        );
    }
}
