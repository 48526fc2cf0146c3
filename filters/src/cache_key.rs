//! The cache key: a deterministic string from the resolved spec and source,
//! `{mode}:{source}[:w=..][:h=..][:fit=..]...[:e={etag}][:v={version}]`. Because it is
//! built from the normalised [`TransformSpec`], parameter order, aliases, Akamai/Cloudflare
//! spellings and default values never change it. Response-header-only fields (playback
//! hints, `filename`, `onerror`) never enter it. It owns the key grammar only.
//!
//! `%` and `:` in the source and the ETag are percent-escaped so that no path can imitate
//! a field (`/a:w=10` does not collide with `/a` at width 10).

use std::fmt::Write as _;

use crate::params::{format_bitrate, format_time, TransformSpec};
use crate::resolve::Source;

/// Appends `s` with `%` → `%25` and `:` → `%3A`.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
}

/// The base key (no validator) for a resolved spec. A passthrough is `orig:{path}`.
pub fn cache_key(spec: &TransformSpec, source: &Source) -> String {
    let mut k = String::with_capacity(64);
    k.push_str(spec.mode.as_str());
    k.push(':');
    push_escaped(&mut k, source.as_str());
    if spec.is_passthrough() {
        return k;
    }
    macro_rules! field {
        ($name:literal, $v:expr) => {
            if let Some(v) = &$v {
                let _ = write!(k, concat!(":", $name, "={}"), v);
            }
        };
    }
    field!("w", spec.width);
    field!("h", spec.height);
    field!("fit", spec.fit);
    field!("g", spec.gravity);
    field!("f", spec.format);
    field!("q", spec.quality);
    field!("c", spec.compression);
    field!("t", spec.time_ms.map(format_time));
    field!("d", spec.duration_ms.map(format_time));
    field!("a", spec.audio);
    field!("der", spec.derivative);
    field!("ic", spec.image_count);
    field!("seg", spec.segment);
    field!("fps", spec.fps);
    field!("spd", spec.speed);
    field!("rot", spec.rotate);
    if let Some(c) = spec.crop {
        let _ = write!(k, ":crop={}x{}+{}+{}", c.w, c.h, c.x, c.y);
    }
    field!("trim", spec.trim);
    field!("br", spec.bitrate.map(format_bitrate));
    field!("blur", spec.blur);
    field!("sh", spec.sharpen);
    field!("bg", spec.background);
    field!("bri", spec.brightness);
    field!("con", spec.contrast);
    field!("gam", spec.gamma);
    field!("sat", spec.saturation);
    field!("flip", spec.flip);
    field!("anim", spec.animated);
    field!("codec", spec.codec);
    field!("meta", spec.metadata);
    k
}

/// Appends the source validator: `:e={etag}` (quotes and a weak `W/` prefix dropped) and
/// `:v={version}`.
pub fn with_validator(key: &str, etag: Option<&str>, version: Option<u64>) -> String {
    let mut k = String::with_capacity(key.len() + 48);
    k.push_str(key);
    if let Some(e) = etag {
        let e = e.trim();
        let e = e.strip_prefix("W/").unwrap_or(e).trim_matches('"');
        if !e.is_empty() {
            k.push_str(":e=");
            push_escaped(&mut k, e);
        }
    }
    if let Some(v) = version {
        let _ = write!(k, ":v={v}");
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(q: &str, src: &str) -> String {
        cache_key(
            &TransformSpec::from_canonical_query(q).unwrap(),
            &Source::Path(src.into()),
        )
    }

    #[test]
    fn key_table() {
        for (q, src, want) in [
            ("mode=orig", "/a.mp4", "orig:/a.mp4"),
            ("mode=orig&filename=x&loop=true", "/a.mp4", "orig:/a.mp4"),
            ("mode=image&width=100", "/a.jpg", "image:/a.jpg:w=100"),
            (
                "mode=frame&width=640&height=360&format=png&derivative=thumbnail",
                "/v.mp4",
                "frame:/v.mp4:w=640:h=360:f=png:der=thumbnail",
            ),
            (
                "mode=video&width=640&time=1.5s&duration=10s&audio=false&bitrate=800k&autoplay=true&muted=true",
                "/v.mp4",
                "video:/v.mp4:w=640:t=1.5s:d=10s:a=false:br=800k",
            ),
            (
                "mode=image&crop=1:2:3:4&background=%23fff&gravity=0.5x0.5",
                "/a.jpg",
                "image:/a.jpg:g=0.5x0.5:crop=1x2+3+4:bg=#ffffff",
            ),
            ("mode=image&width=100", "/a:w=10.jpg", "image:/a%3Aw=10.jpg:w=100"),
            ("mode=image&width=100&filename=x&onerror=redirect", "/a.jpg", "image:/a.jpg:w=100"),
        ] {
            assert_eq!(key(q, src), want, "{q}");
        }
    }

    #[test]
    fn path_cannot_imitate_fields() {
        assert_ne!(
            key("mode=image", "/a:w=10"),
            key("mode=image&width=10", "/a")
        );
        assert_ne!(key("mode=image", "/a%3Aw=10"), key("mode=image", "/a:w=10"));
    }

    #[test]
    fn external_source() {
        let s = TransformSpec::from_canonical_query("mode=image&width=80").unwrap();
        assert_eq!(
            cache_key(&s, &Source::External("https://x.test/a.jpg".into())),
            "image:https%3A//x.test/a.jpg:w=80"
        );
    }

    #[test]
    fn validators() {
        for (etag, v, want) in [
            (Some("\"abc\""), None, "k:e=abc"),
            (Some("W/\"abc\""), Some(3), "k:e=abc:v=3"),
            (Some("a:b"), None, "k:e=a%3Ab"),
            (None, Some(7), "k:v=7"),
            (Some("\"\""), None, "k"),
            (None, None, "k"),
        ] {
            assert_eq!(with_validator("k", etag, v), want);
        }
    }
}
