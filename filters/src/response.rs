//! Response-side helpers the edge applies from a resolved spec: informational headers
//! (`X-Derivative`; `X-Resolved-Width/Height` are the output's real size, set where it is
//! made), `Content-Disposition` from `filename`, the
//! playback-hint headers, and `format=auto` negotiation from `Accept`. Pure: it returns
//! header pairs and never touches a response.

use crate::params::{Format, TransformSpec};

/// Headers derived from the spec, in a stable order:
/// `X-Derivative`, `Content-Disposition`
/// (`inline; filename="{filename}.{ext}"`, extension from the format when known), and
/// `X-Playback-Loop`, `X-Playback-Autoplay`, `X-Playback-Muted`, `X-Playback-Preload`.
pub fn response_headers(spec: &TransformSpec) -> Vec<(&'static str, String)> {
    let mut h = Vec::new();
    if let Some(d) = &spec.derivative {
        h.push(("X-Derivative", d.clone()));
    }
    if let Some(name) = &spec.filename {
        // `filename` is [A-Za-z0-9_-]+, so it needs no quoting or escaping.
        let ext = spec.format.and_then(Format::extension);
        let value = match ext {
            Some(ext) => format!("inline; filename=\"{name}.{ext}\""),
            None => format!("inline; filename=\"{name}\""),
        };
        h.push(("Content-Disposition", value));
    }
    let p = &spec.playback;
    if let Some(v) = p.loop_ {
        h.push(("X-Playback-Loop", v.to_string()));
    }
    if let Some(v) = p.autoplay {
        h.push(("X-Playback-Autoplay", v.to_string()));
    }
    if let Some(v) = p.muted {
        h.push(("X-Playback-Muted", v.to_string()));
    }
    if let Some(v) = p.preload {
        h.push(("X-Playback-Preload", v.as_str().to_string()));
    }
    h
}

/// The q-value `accept` gives `mime` (exact type, then `image/*`, then `*/*`); 0 when absent.
fn q_for(accept: &str, mime: &str) -> f32 {
    let (major, _) = mime.split_once('/').unwrap_or((mime, ""));
    let mut best: (u8, f32) = (0, 0.0);
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let ty = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let specificity = if ty == mime {
            3
        } else if ty.strip_suffix("/*") == Some(major) {
            2
        } else if ty == "*/*" {
            1
        } else {
            continue;
        };
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|v| v.trim().parse::<f32>().ok())
            })
            .next()
            .filter(|q| q.is_finite())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        if specificity > best.0 {
            best = (specificity, q);
        }
    }
    best.1
}

/// Picks the output for `format=auto`: AVIF when enabled and explicitly accepted, else WebP
/// when explicitly accepted, else PNG for images with alpha, else JPEG. Wildcards do not
/// count as support for the newer formats. Responses must `Vary: Accept`.
pub fn negotiate_format(accept: Option<&str>, has_alpha: bool, avif_enabled: bool) -> Format {
    let accept = accept.unwrap_or("");
    let explicit = |mime: &str| {
        accept.split(',').any(|i| {
            i.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(mime)
        }) && q_for(accept, mime) > 0.0
    };
    if avif_enabled && explicit("image/avif") {
        Format::Avif
    } else if explicit("image/webp") {
        Format::Webp
    } else if has_alpha {
        Format::Png
    } else {
        Format::Jpeg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_from_spec() {
        let s = TransformSpec::from_canonical_query(
            "mode=video&width=1280&height=720&format=mp4&derivative=tablet&filename=my_clip-1&loop=true&autoplay=false&muted=true&preload=metadata",
        )
        .unwrap();
        assert_eq!(
            response_headers(&s),
            vec![
                ("X-Derivative", "tablet".to_string()),
                (
                    "Content-Disposition",
                    "inline; filename=\"my_clip-1.mp4\"".to_string()
                ),
                ("X-Playback-Loop", "true".to_string()),
                ("X-Playback-Autoplay", "false".to_string()),
                ("X-Playback-Muted", "true".to_string()),
                ("X-Playback-Preload", "metadata".to_string()),
            ]
        );
        let s = TransformSpec::from_canonical_query("mode=orig&filename=x").unwrap();
        assert_eq!(
            response_headers(&s),
            vec![("Content-Disposition", "inline; filename=\"x\"".to_string())]
        );
        let s = TransformSpec::from_canonical_query("mode=image&format=jpeg&filename=x").unwrap();
        assert_eq!(response_headers(&s)[0].1, "inline; filename=\"x.jpg\"");
    }

    #[test]
    fn negotiate_table() {
        for (accept, alpha, avif, want) in [
            (Some("image/avif,image/webp,*/*"), false, true, Format::Avif),
            (
                Some("image/avif,image/webp,*/*"),
                false,
                false,
                Format::Webp,
            ),
            (Some("image/webp,*/*"), true, true, Format::Webp),
            (Some("image/avif;q=0,image/webp"), false, true, Format::Webp),
            (Some("image/webp;q=0"), false, true, Format::Jpeg),
            (Some("*/*"), false, true, Format::Jpeg),
            (Some("image/*"), true, true, Format::Png),
            (None, false, true, Format::Jpeg),
            (Some("IMAGE/AVIF"), false, true, Format::Avif),
        ] {
            assert_eq!(negotiate_format(accept, alpha, avif), want, "{accept:?}");
        }
    }
}
