//! Cloudflare URL forms: `/cdn-cgi/image/<options>/<source>` and
//! `/cdn-cgi/media/<options>/<source>`, with comma-separated Cloudflare option names. It
//! owns splitting the path, percent-decoding and mapping option names to canonical
//! parameters, and turning `<source>` into a [`Source`] (a path on this host, given a
//! leading `/`, or an absolute `http(s)://` URL). Value validation happens in `params`.

use std::borrow::Cow;

use crate::error::{quote, FilterError};
use crate::params::Param;
use crate::resolve::Source;

/// Which Cloudflare form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CdnForm {
    Image,
    Media,
}

/// One option mapped to its canonical parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdnOption<'a> {
    /// Cloudflare's spelling, quoted in errors.
    pub name: &'a str,
    pub param: Param,
    pub value: Cow<'a, str>,
}

/// A parsed `/cdn-cgi/...` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdnCgi<'a> {
    pub form: CdnForm,
    pub options: Vec<CdnOption<'a>>,
    pub source: Source,
    /// `width=auto`: size from client hints.
    pub width_auto: bool,
}

const IMAGE_ALLOWED: &str = "width/w, height/h, fit, gravity/g, quality/q, format/f, dpr, anim, \
     background, blur, rotate, sharpen, brightness, contrast, gamma, saturation, flip, metadata, \
     onerror, compression, trim, trim.top, trim.left, trim.width, trim.height, \
     trim.border.color, trim.border.tolerance, trim.border.keep, zoom/face-zoom, \
     slow-connection-quality/scq, segment";
const MEDIA_ALLOWED: &str = "mode, width, height, fit, time, duration, format, audio, imageCount";

fn image_option(name: &str) -> Option<Param> {
    Some(match name {
        "width" | "w" => Param::Width,
        "height" | "h" => Param::Height,
        "fit" => Param::Fit,
        "gravity" | "g" => Param::Gravity,
        "quality" | "q" => Param::Quality,
        "format" | "f" => Param::Format,
        "dpr" => Param::Dpr,
        "anim" => Param::Animated,
        "background" => Param::Background,
        "blur" => Param::Blur,
        "rotate" => Param::Rotate,
        "sharpen" => Param::Sharpen,
        "brightness" => Param::Brightness,
        "contrast" => Param::Contrast,
        "gamma" => Param::Gamma,
        "saturation" => Param::Saturation,
        "flip" => Param::Flip,
        "metadata" => Param::Metadata,
        "onerror" => Param::OnError,
        "compression" => Param::Compression,
        "trim" => Param::Trim,
        "trim.top" => Param::TrimTop,
        "trim.left" => Param::TrimLeft,
        "trim.width" => Param::TrimWidth,
        "trim.height" => Param::TrimHeight,
        "trim.border.color" => Param::TrimBorderColor,
        "trim.border.tolerance" => Param::TrimBorderTolerance,
        "trim.border.keep" => Param::TrimBorderKeep,
        "zoom" | "face-zoom" => Param::Zoom,
        "slow-connection-quality" | "scq" => Param::SlowQuality,
        // Cloudflare's background removal: refused with its reason by the value check.
        "segment" => Param::Segment,
        _ => return None,
    })
}

fn media_option(name: &str) -> Option<Param> {
    Some(match name {
        "mode" => Param::Mode,
        "width" => Param::Width,
        "height" => Param::Height,
        "fit" => Param::Fit,
        "time" => Param::Time,
        "duration" => Param::Duration,
        "format" => Param::Format,
        "audio" => Param::Audio,
        "imageCount" | "imagecount" => Param::ImageCount,
        _ => return None,
    })
}

/// Splits an option string at the commas that are not inside parentheses, so that
/// `background=rgba(250,40,145,0.5)` stays one option (Cloudflare documents it unescaped).
fn split_options(opts: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0u32;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, b) in opts.bytes().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                parts.push(&opts[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&opts[start..]);
    parts.into_iter()
}

/// Decodes `%XX` escapes (invalid escapes are kept literally; invalid UTF-8 is replaced).
pub(crate) fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Checks a path on this host: leading `/`, no `..` segment (raw or escaped), no NUL or
/// backslash.
pub fn validate_path(path: &str) -> Result<(), FilterError> {
    let bad = |reason| FilterError::InvalidPath {
        path: quote(path),
        reason,
    };
    if !path.starts_with('/') {
        return Err(bad("must start with /"));
    }
    if path.contains(['\0', '\\']) {
        return Err(bad("must not contain NUL or backslash"));
    }
    let decoded = percent_decode(path);
    if decoded.contains(['\0', '\\']) {
        return Err(bad("must not contain NUL or backslash"));
    }
    if decoded.split('/').any(|seg| seg == "..") {
        return Err(bad("must not contain a .. segment"));
    }
    Ok(())
}

/// Turns `<source>` into a [`Source`]. Proxies often merge `//`, so `https:/host` is
/// repaired to `https://host`.
pub fn parse_source(raw: &str, whole: &str) -> Result<Source, FilterError> {
    let malformed = |reason| FilterError::MalformedCdnCgi {
        path: quote(whole),
        reason,
    };
    let lower_prefix = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    for scheme in ["https:", "http:"] {
        if lower_prefix.starts_with(scheme) {
            let rest = raw[scheme.len()..].trim_start_matches('/');
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() || host.contains(['@', ' ', '\\']) {
                return Err(malformed("source URL has no valid host"));
            }
            return Ok(Source::External(format!(
                "{}//{rest}",
                &scheme.to_ascii_lowercase()
            )));
        }
    }
    if raw.contains("://") {
        return Err(malformed("source URL must be http or https"));
    }
    let path = format!("/{}", raw.trim_start_matches('/'));
    if path == "/" {
        return Err(malformed("missing source after the options"));
    }
    validate_path(&path)?;
    Ok(Source::Path(path))
}

/// Parses a `/cdn-cgi/image/..` or `/cdn-cgi/media/..` path; `Ok(None)` for any other path.
pub fn parse(path: &str) -> Result<Option<CdnCgi<'_>>, FilterError> {
    let (form, rest) = if let Some(r) = path.strip_prefix("/cdn-cgi/image/") {
        (CdnForm::Image, r)
    } else if let Some(r) = path.strip_prefix("/cdn-cgi/media/") {
        (CdnForm::Media, r)
    } else {
        return Ok(None);
    };
    let Some((opts, source)) = rest.split_once('/') else {
        return Err(FilterError::MalformedCdnCgi {
            path: quote(path),
            reason: "expected /cdn-cgi/<form>/<options>/<source>",
        });
    };
    let source = parse_source(source, path)?;
    let (lookup, form_name, allowed): (fn(&str) -> Option<Param>, _, _) = match form {
        CdnForm::Image => (image_option, "cdn-cgi/image", IMAGE_ALLOWED),
        CdnForm::Media => (media_option, "cdn-cgi/media", MEDIA_ALLOWED),
    };
    let mut options: Vec<CdnOption<'_>> = Vec::new();
    let mut width_auto = false;
    for item in split_options(opts).filter(|s| !s.is_empty()) {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| FilterError::MalformedCdnCgi {
                path: quote(path),
                reason: "every option must be name=value",
            })?;
        let param = lookup(name).ok_or_else(|| FilterError::UnknownOption {
            form: form_name,
            name: quote(name),
            allowed,
        })?;
        if options.iter().any(|o| o.param == param) || (param == Param::Width && width_auto) {
            return Err(FilterError::Duplicate(name.to_string()));
        }
        let value = percent_decode(value);
        if form == CdnForm::Media
            && param == Param::Mode
            && !matches!(&*value, "video" | "frame" | "spritesheet" | "audio")
        {
            return Err(FilterError::invalid(
                name,
                &value,
                "video, frame, spritesheet, audio",
            ));
        }
        if param == Param::Width && value.eq_ignore_ascii_case("auto") {
            width_auto = true;
            continue;
        }
        options.push(CdnOption { name, param, value });
    }
    Ok(Some(CdnCgi {
        form,
        options,
        source,
        width_auto,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(path: &str) -> Vec<(Param, String)> {
        parse(path)
            .unwrap()
            .unwrap()
            .options
            .into_iter()
            .map(|o| (o.param, o.value.into_owned()))
            .collect()
    }

    #[test]
    fn every_image_option() {
        for (opt, p, v) in [
            ("width=80", Param::Width, "80"),
            ("w=80", Param::Width, "80"),
            ("height=60", Param::Height, "60"),
            ("h=60", Param::Height, "60"),
            ("fit=cover", Param::Fit, "cover"),
            ("gravity=left", Param::Gravity, "left"),
            ("g=0.5x0.5", Param::Gravity, "0.5x0.5"),
            ("quality=75", Param::Quality, "75"),
            ("q=75", Param::Quality, "75"),
            ("format=auto", Param::Format, "auto"),
            ("f=webp", Param::Format, "webp"),
            ("dpr=2", Param::Dpr, "2"),
            ("anim=false", Param::Animated, "false"),
            ("background=%23ff0000", Param::Background, "#ff0000"),
            ("blur=10", Param::Blur, "10"),
            ("rotate=90", Param::Rotate, "90"),
            ("sharpen=1.5", Param::Sharpen, "1.5"),
            ("metadata=none", Param::Metadata, "none"),
            ("onerror=redirect", Param::OnError, "redirect"),
            ("compression=fast", Param::Compression, "fast"),
        ] {
            assert_eq!(
                opts(&format!("/cdn-cgi/image/{opt}/a.jpg")),
                vec![(p, v.to_string())],
                "{opt}"
            );
        }
    }

    #[test]
    fn every_media_option() {
        for (opt, p, v) in [
            ("mode=frame", Param::Mode, "frame"),
            ("width=640", Param::Width, "640"),
            ("height=360", Param::Height, "360"),
            ("fit=contain", Param::Fit, "contain"),
            ("time=3s", Param::Time, "3s"),
            ("duration=5s", Param::Duration, "5s"),
            ("format=jpg", Param::Format, "jpg"),
            ("audio=false", Param::Audio, "false"),
            ("imageCount=10", Param::ImageCount, "10"),
        ] {
            assert_eq!(
                opts(&format!("/cdn-cgi/media/{opt}/v.mp4")),
                vec![(p, v.to_string())],
                "{opt}"
            );
        }
    }

    #[test]
    fn sources() {
        for (path, want) in [
            (
                "/cdn-cgi/image/w=80/images/a.jpg",
                Source::Path("/images/a.jpg".into()),
            ),
            (
                "/cdn-cgi/image/w=80//images/a.jpg",
                Source::Path("/images/a.jpg".into()),
            ),
            (
                "/cdn-cgi/image/w=80/https://x.test/a.jpg",
                Source::External("https://x.test/a.jpg".into()),
            ),
            (
                "/cdn-cgi/image/w=80/https:/x.test/a.jpg",
                Source::External("https://x.test/a.jpg".into()),
            ),
            (
                "/cdn-cgi/media/mode=frame/HTTP://x.test/v.mp4",
                Source::External("http://x.test/v.mp4".into()),
            ),
        ] {
            assert_eq!(parse(path).unwrap().unwrap().source, want, "{path}");
        }
        assert_eq!(parse("/images/a.jpg").unwrap(), None);
        let c = parse("/cdn-cgi/image/width=auto,q=80/a.jpg")
            .unwrap()
            .unwrap();
        assert!(c.width_auto);
        assert_eq!(c.form, CdnForm::Image);
    }

    #[test]
    fn errors() {
        for (path, msg) in [
            ("/cdn-cgi/image/w=80", "malformed cdn-cgi URL"),
            ("/cdn-cgi/image/w=80/", "missing source after the options"),
            (
                "/cdn-cgi/image/border=2/a.jpg",
                "unknown cdn-cgi/image option \"border\"",
            ),
            (
                "/cdn-cgi/media/quality=2/a.mp4",
                "unknown cdn-cgi/media option \"quality\"",
            ),
            ("/cdn-cgi/image/w/a.jpg", "every option must be name=value"),
            (
                "/cdn-cgi/image/w=1,width=2/a.jpg",
                "parameter width given more than once",
            ),
            ("/cdn-cgi/image/w=1/ftp://x.test/a", "must be http or https"),
            ("/cdn-cgi/image/w=1/https://", "no valid host"),
            (
                "/cdn-cgi/image/w=1/https://user@x.test/a.jpg",
                "no valid host",
            ),
            (
                "/cdn-cgi/image/w=1/a/../../etc/passwd",
                "must not contain a .. segment",
            ),
            (
                "/cdn-cgi/image/w=1/a/%2e%2e/b",
                "must not contain a .. segment",
            ),
        ] {
            let e = parse(path).unwrap_err().to_string();
            assert!(e.contains(msg), "{path}: {e}");
        }
    }

    #[test]
    fn decode() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("%zz%2"), "%zz%2");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
