//! SVG rasterisation with usvg/resvg. Owns turning untrusted SVG text into RGBA pixels at a
//! chosen size with nothing outside the document reachable: `<image>` references (files, URLs
//! and data URLs alike) resolve to nothing, there is no text shaping from system fonts, and
//! scripts are never run (resvg has no script engine). It must not touch the file system.

use super::Raster;
use crate::transform::TransformError;

fn options() -> resvg::usvg::Options<'static> {
    let mut opt = resvg::usvg::Options::default();
    opt.resources_dir = None;
    opt.image_href_resolver = resvg::usvg::ImageHrefResolver {
        resolve_data: Box::new(|_, _, _| None),
        resolve_string: Box::new(|_, _| None),
    };
    opt
}

fn parse(bytes: &[u8]) -> Result<resvg::usvg::Tree, TransformError> {
    resvg::usvg::Tree::from_data(bytes, &options())
        .map_err(|e| TransformError::Invalid(format!("corrupt svg: {e}")))
}

fn dims(tree: &resvg::usvg::Tree) -> (u32, u32) {
    let s = tree.size();
    let f = |v: f32| {
        if v.is_finite() && v >= 1.0 {
            v.ceil().min(u32::MAX as f32) as u32
        } else {
            1
        }
    };
    (f(s.width()), f(s.height()))
}

/// The document's intrinsic size in pixels.
pub fn intrinsic_size(bytes: &[u8]) -> Result<(u32, u32), TransformError> {
    Ok(dims(&parse(bytes)?))
}

/// Rasterises the document scaled to `width`×`height` (the caller keeps the aspect ratio).
pub fn rasterize(bytes: &[u8], width: u32, height: u32) -> Result<Raster, TransformError> {
    let tree = parse(bytes)?;
    let (iw, ih) = dims(&tree);
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(width.max(1), height.max(1)).ok_or_else(|| {
            TransformError::TooLarge(format!("cannot rasterise svg at {width}x{height}"))
        })?;
    let t = resvg::tiny_skia::Transform::from_scale(
        width as f32 / iw as f32,
        height as f32 / ih as f32,
    );
    resvg::render(&tree, t, &mut pixmap.as_mut());
    // tiny-skia stores premultiplied RGBA; outputs want straight alpha.
    let mut data = pixmap.take();
    for px in data.chunks_exact_mut(4) {
        let a = u32::from(px[3]);
        if a != 0 && a != 255 {
            for c in &mut px[..3] {
                *c = ((u32::from(*c) * 255 + a / 2) / a).min(255) as u8;
            }
        }
    }
    Ok(Raster {
        width: width.max(1),
        height: height.max(1),
        alpha: true,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rasterises_without_external_references() {
        let svg = br##"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="40" height="20">
            <rect width="40" height="20" fill="#ff0000"/>
            <image href="/etc/passwd" width="10" height="10"/>
            <image xlink:href="file:///etc/hostname" width="10" height="10"/>
            <script>alert(1)</script>
        </svg>"##;
        assert_eq!(intrinsic_size(svg).unwrap(), (40, 20));
        let r = rasterize(svg, 80, 40).unwrap();
        assert_eq!((r.width, r.height), (80, 40));
        assert_eq!(&r.data[..4], &[255, 0, 0, 255]);
        assert!(matches!(
            rasterize(b"<svg", 10, 10),
            Err(TransformError::Invalid(_))
        ));
    }
}
