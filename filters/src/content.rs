//! Content-hash routes. `/proxy/image/{sha256}`, `/proxy/thumbnail/{sha256}` and
//! `/proxy/metadata/{sha256}` name an object by the SHA-256 of its bytes instead of by a path.
//! Each is rewritten here into an ordinary request: the path `{prefix}{sha256}` (the prefix is
//! the node's content route, matched by an origin like any other path) and a query of
//! canonical parameters. So the three routes share origins, cache keys, transforms and purge
//! with every other request form: `/proxy/image/<h>?width=300` and `{prefix}<h>?width=300`
//! are one cache entry.
//!
//! - `image`: the query is kept as it is (every canonical and Akamai parameter applies; images
//!   stay within 4096 px a side, the general limit).
//! - `thumbnail`: `width`, `height` (at most 1920 × 1080), `format`, `quality`, `fit`,
//!   `gravity` and `timestamp` (seconds, or any `time` spelling) → `mode=frame`. A still image
//!   has one frame, itself; the origin service answers it resized.
//! - `metadata`: no parameters → `format=json` (image metadata or video probe).
//! - `video`: the video modes (`video`, `hls`, `frame`, `spritesheet`, `audio`) with their
//!   parameters as they are; no `mode` → `mode=hls` (the playlist; its segment URIs are
//!   relative, so they come back on this route).
//!
//! The signing parameters (`signature`, `expires`, `kid`) are checked by the edge on the URL
//! as the client sent it and are dropped from the rewritten query, as is `tenant` (a signed
//! URL's way to name whose uploads to look in; the edge reads it).

use crate::params::parse_time;
use crate::FilterError;

/// Which content-hash route a path takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRoute {
    Image,
    Thumbnail,
    Metadata,
    Video,
}

/// Largest thumbnail width.
pub const THUMB_MAX_WIDTH: u32 = 1920;
/// Largest thumbnail height.
pub const THUMB_MAX_HEIGHT: u32 = 1080;

/// A content-hash request rewritten into a path and a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRequest {
    pub route: ContentRoute,
    /// Lower-case hex SHA-256.
    pub hash: String,
    /// `{prefix}{hash}`.
    pub path: String,
    /// The query to resolve the path with (may be empty).
    pub query: String,
}

/// The route and hash segment of a `/proxy/{image,thumbnail,metadata}/<hash>` path, or
/// `None` for any other path.
pub fn content_route(path: &str) -> Option<(ContentRoute, &str)> {
    let rest = path.strip_prefix("/proxy/")?;
    let (route, hash) = rest.split_once('/')?;
    let route = match route {
        "image" => ContentRoute::Image,
        "thumbnail" => ContentRoute::Thumbnail,
        "metadata" => ContentRoute::Metadata,
        "video" => ContentRoute::Video,
        _ => return None,
    };
    Some((route, hash))
}

/// Rewrites a content-hash request; `Ok(None)` when `path` is not one.
pub fn rewrite(
    path: &str,
    query: Option<&str>,
    prefix: &str,
) -> Result<Option<ContentRequest>, FilterError> {
    let Some((route, hash)) = content_route(path) else {
        return Ok(None);
    };
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FilterError::InvalidPath {
            path: path.to_string(),
            reason: "a content hash is 64 hex digits (SHA-256)",
        });
    }
    let hash = hash.to_ascii_lowercase();
    let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| !matches!(k.as_ref(), "signature" | "expires" | "kid" | "tenant"));
    let mut out = form_urlencoded::Serializer::new(String::new());
    match route {
        ContentRoute::Image => {
            // An image route stays an image transform: other modes and the metadata/video
            // formats have their own routes (and their own auth and rate-limit classes).
            for (k, v) in pairs {
                let refused = match k.as_ref() {
                    "mode" => v != "image",
                    "segment" => true,
                    "format" | "f" | "imformat" => {
                        matches!(
                            v.to_ascii_lowercase().as_str(),
                            "json" | "m4a" | "mp4" | "webm" | "h264" | "h265" | "vp9" | "av1"
                        )
                    }
                    _ => false,
                };
                if refused {
                    return Err(FilterError::invalid(
                        &k,
                        &v,
                        "an image transform on /proxy/image (use /proxy/thumbnail or /proxy/metadata)",
                    ));
                }
                out.append_pair(&k, &v);
            }
        }
        ContentRoute::Thumbnail => {
            out.append_pair("mode", "frame");
            for (k, v) in pairs {
                match k.as_ref() {
                    "width" => {
                        bounded("width", &v, THUMB_MAX_WIDTH)?;
                        out.append_pair("width", &v);
                    }
                    "height" => {
                        bounded("height", &v, THUMB_MAX_HEIGHT)?;
                        out.append_pair("height", &v);
                    }
                    "format" | "quality" | "fit" | "gravity" => {
                        out.append_pair(&k, &v);
                    }
                    "timestamp" | "time" => {
                        if parse_time(&v).is_none() {
                            return Err(FilterError::invalid(
                                &k,
                                &v,
                                "seconds (5, 2.5) or a duration (1m30s, 500ms)",
                            ));
                        }
                        out.append_pair("time", &v);
                    }
                    _ => {
                        return Err(FilterError::UnknownOption {
                            form: "thumbnail",
                            name: k.into_owned(),
                            allowed: "width, height, format, quality, fit, gravity, timestamp",
                        })
                    }
                }
            }
        }
        ContentRoute::Video => {
            let mut moded = false;
            for (k, v) in pairs {
                if k == "mode" {
                    if !matches!(
                        v.as_ref(),
                        "video" | "hls" | "frame" | "spritesheet" | "audio"
                    ) {
                        return Err(FilterError::invalid(
                            &k,
                            &v,
                            "video, hls, frame, spritesheet or audio on /proxy/video",
                        ));
                    }
                    moded = true;
                }
                out.append_pair(&k, &v);
            }
            if !moded {
                out.append_pair("mode", "hls");
            }
        }
        ContentRoute::Metadata => {
            if let Some((k, _)) = pairs.into_iter().next() {
                return Err(FilterError::UnknownOption {
                    form: "metadata",
                    name: k.into_owned(),
                    allowed: "none",
                });
            }
            out.append_pair("format", "json");
        }
    }
    Ok(Some(ContentRequest {
        route,
        path: format!("{prefix}{hash}"),
        hash,
        query: out.finish(),
    }))
}

fn bounded(param: &str, v: &str, max: u32) -> Result<(), FilterError> {
    let n: u32 = v
        .trim()
        .parse()
        .map_err(|_| FilterError::invalid(param, v, "a whole number of pixels"))?;
    if !(crate::params::MIN_DIM..=max).contains(&n) {
        return Err(FilterError::range(
            param,
            n,
            &format!("{}..={max}", crate::params::MIN_DIM),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn rw(path: &str, q: &str) -> Result<Option<ContentRequest>, FilterError> {
        rewrite(path, Some(q), "/content/")
    }

    #[test]
    fn other_paths_are_not_content_routes() {
        for p in [
            "/samples/a.jpg",
            "/proxy/external",
            "/proxy/other/abc",
            "/proxy/image",
        ] {
            assert_eq!(rw(p, "").unwrap(), None, "{p}");
        }
    }

    #[test]
    fn hash_must_be_sha256_hex() {
        for h in [
            "abc",
            &H[..63],
            &format!("{H}0"),
            &H.replace('9', "g"),
            "../../etc/passwd",
        ] {
            let e = rw(&format!("/proxy/image/{h}"), "").unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.to_string().contains("64 hex digits"), "{e}");
        }
        let upper = rw(&format!("/proxy/metadata/{}", H.to_uppercase()), "").unwrap();
        assert_eq!(upper.unwrap().path, format!("/content/{H}"));
    }

    #[test]
    fn image_keeps_its_query_and_drops_signing() {
        let r = rw(
            &format!("/proxy/image/{H}"),
            "width=300&format=webp&signature=x&expires=1",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.route, ContentRoute::Image);
        assert_eq!(r.path, format!("/content/{H}"));
        assert_eq!(r.query, "width=300&format=webp");
        for q in [
            "mode=video",
            "mode=hls",
            "format=json",
            "f=mp4",
            "imformat=h264",
            "segment=1",
        ] {
            let e = rw(&format!("/proxy/image/{H}"), q).unwrap_err();
            assert_eq!(e.status(), 400, "{q}");
        }
        assert!(rw(&format!("/proxy/image/{H}"), "mode=image&format=avif").is_ok());
    }

    #[test]
    fn thumbnail_is_a_bounded_frame() {
        let r = rw(
            &format!("/proxy/thumbnail/{H}"),
            "width=640&height=360&timestamp=2.5&format=webp&quality=high",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            r.query,
            "mode=frame&width=640&height=360&time=2.5&format=webp&quality=high"
        );
        let e = rw(&format!("/proxy/thumbnail/{H}"), "width=1921").unwrap_err();
        assert_eq!(e.to_string(), "width 1921 out of range 10..=1920");
        let e = rw(&format!("/proxy/thumbnail/{H}"), "height=1081").unwrap_err();
        assert_eq!(e.to_string(), "height 1081 out of range 10..=1080");
        assert!(rw(&format!("/proxy/thumbnail/{H}"), "width=abc").is_err());
        assert!(rw(&format!("/proxy/thumbnail/{H}"), "timestamp=soon").is_err());
        let e = rw(&format!("/proxy/thumbnail/{H}"), "mode=video").unwrap_err();
        assert!(e.to_string().contains("unknown thumbnail option"), "{e}");
    }

    #[test]
    fn video_defaults_to_the_hls_playlist() {
        let v = rw(&format!("/proxy/video/{H}"), "").unwrap().unwrap();
        assert_eq!(
            (v.route, v.query.as_str()),
            (ContentRoute::Video, "mode=hls")
        );
        let v = rw(&format!("/proxy/video/{H}"), "mode=hls&segment=2")
            .unwrap()
            .unwrap();
        assert_eq!(v.query, "mode=hls&segment=2");
        assert!(rw(&format!("/proxy/video/{H}"), "mode=image").is_err());
    }

    #[test]
    fn metadata_takes_no_parameters() {
        let r = rw(&format!("/proxy/metadata/{H}"), "kid=a&signature=b")
            .unwrap()
            .unwrap();
        assert_eq!(r.query, "format=json");
        assert!(rw(&format!("/proxy/metadata/{H}"), "width=10").is_err());
    }

    #[test]
    fn the_rewritten_request_resolves_like_the_plain_path() {
        let cfg = crate::FiltersConfig::default();
        let key = |path: &str, q: &str| {
            let parts = crate::RequestParts {
                path,
                query: Some(q),
                headers: &(),
            };
            crate::resolve(&parts, &cfg, &crate::ResolveOptions::default())
                .unwrap()
                .cache_key
        };
        let r = rw(&format!("/proxy/thumbnail/{H}"), "timestamp=2&width=320")
            .unwrap()
            .unwrap();
        assert_eq!(
            key(&r.path, &r.query),
            key(&format!("/content/{H}"), "width=320&mode=frame&time=2s")
        );
    }
}
