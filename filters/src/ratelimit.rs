//! Rate-limit policy: which [`OperationClass`] a request belongs to, how many requests per
//! minute each class allows, and the bucket key for a client. It owns the decision only;
//! counting (pingora-limits) and answering 429 belong to the proxy.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::params::{Format, Mode, TransformSpec};
use crate::resolve::{Resolved, Source};

/// What a request costs, for rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationClass {
    Image,
    Thumbnail,
    External,
    Metadata,
    Upload,
    Video,
    Original,
}

impl OperationClass {
    pub const ALL: [OperationClass; 7] = [
        OperationClass::Image,
        OperationClass::Thumbnail,
        OperationClass::External,
        OperationClass::Metadata,
        OperationClass::Upload,
        OperationClass::Video,
        OperationClass::Original,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationClass::Image => "image",
            OperationClass::Thumbnail => "thumbnail",
            OperationClass::External => "external",
            OperationClass::Metadata => "metadata",
            OperationClass::Upload => "upload",
            OperationClass::Video => "video",
            OperationClass::Original => "original",
        }
    }
}

/// Classifies by route first (`/upload`, `/proxy/{image,thumbnail,metadata,external}`,
/// a `/cdn-cgi/...` form whose source is an `http(s)://` URL), then by the spec's mode:
/// frame/spritesheet → thumbnail, video/audio → video, `format=json` → metadata,
/// passthrough (or no spec) → original.
pub fn classify(path: &str, spec: Option<&TransformSpec>) -> OperationClass {
    if path == "/upload" || path.starts_with("/upload/") {
        return OperationClass::Upload;
    }
    if let Some(rest) = path.strip_prefix("/proxy/") {
        let route = rest.split('/').next().unwrap_or("");
        match route {
            "image" => return OperationClass::Image,
            "thumbnail" => return OperationClass::Thumbnail,
            "metadata" => return OperationClass::Metadata,
            "external" => return OperationClass::External,
            _ => {}
        }
    }
    if path.starts_with("/cdn-cgi/") && (path.contains("/http:/") || path.contains("/https:/")) {
        return OperationClass::External;
    }
    by_spec(spec)
}

/// [`classify`] using the resolved source too (an external source is `External`).
pub fn classify_resolved(path: &str, resolved: &Resolved) -> OperationClass {
    match classify(path, Some(&resolved.spec)) {
        OperationClass::Upload => OperationClass::Upload,
        _ if matches!(resolved.source, Source::External(_)) => OperationClass::External,
        c => c,
    }
}

fn by_spec(spec: Option<&TransformSpec>) -> OperationClass {
    let Some(spec) = spec else {
        return OperationClass::Original;
    };
    match spec.mode {
        Mode::Original => OperationClass::Original,
        Mode::Frame | Mode::Spritesheet => OperationClass::Thumbnail,
        Mode::Video | Mode::Audio | Mode::Hls => OperationClass::Video,
        Mode::Image if spec.format == Some(Format::Json) => OperationClass::Metadata,
        Mode::Image => OperationClass::Image,
    }
}

/// Requests per minute per client and class; `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub image: Option<u32>,
    pub thumbnail: Option<u32>,
    pub external: Option<u32>,
    pub metadata: Option<u32>,
    pub upload: Option<u32>,
    pub video: Option<u32>,
    pub original: Option<u32>,
}

impl Default for RateLimits {
    /// image 100, thumbnail 20, external 30, metadata 200, upload 30, video 20 per minute;
    /// originals unlimited.
    fn default() -> Self {
        RateLimits {
            image: Some(100),
            thumbnail: Some(20),
            external: Some(30),
            metadata: Some(200),
            upload: Some(30),
            video: Some(20),
            original: None,
        }
    }
}

/// Rate-limit policy configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub per_minute: RateLimits,
    /// IPv6 clients are bucketed by this prefix length (default 64: one bucket per site).
    pub ipv6_prefix: u8,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            per_minute: RateLimits::default(),
            ipv6_prefix: 64,
        }
    }
}

impl RateLimitConfig {
    /// The per-minute limit for a class, `None` when unlimited or disabled.
    pub fn limit_for(&self, class: OperationClass) -> Option<u32> {
        if !self.enabled {
            return None;
        }
        let l = &self.per_minute;
        match class {
            OperationClass::Image => l.image,
            OperationClass::Thumbnail => l.thumbnail,
            OperationClass::External => l.external,
            OperationClass::Metadata => l.metadata,
            OperationClass::Upload => l.upload,
            OperationClass::Video => l.video,
            OperationClass::Original => l.original,
        }
    }

    /// The counter key for a client and class: `image:203.0.113.7`, `video:2001:db8:1:2::/64`.
    pub fn bucket_key(&self, class: OperationClass, ip: IpAddr) -> String {
        match crate::client_ip::normalize(ip) {
            IpAddr::V4(v4) => format!("{}:{v4}", class.as_str()),
            IpAddr::V6(v6) => {
                let bits = u32::from(self.ipv6_prefix.min(128));
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                let net = std::net::Ipv6Addr::from(u128::from(v6) & mask);
                format!("{}:{net}/{bits}", class.as_str())
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.ipv6_prefix > 128 {
            errs.push(format!(
                "ratelimit.ipv6_prefix: {} out of range 0..=128",
                self.ipv6_prefix
            ));
        }
        for c in OperationClass::ALL {
            if self.limit_for(c) == Some(0) {
                errs.push(format!(
                    "ratelimit.per_minute.{}: 0 would refuse every request (omit it for unlimited)",
                    c.as_str()
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(q: &str) -> TransformSpec {
        TransformSpec::from_canonical_query(q).unwrap()
    }

    #[test]
    fn classify_table() {
        let img = spec("mode=image&width=100");
        let json = spec("mode=image&format=json");
        let frame = spec("mode=frame&width=100");
        let sprite = spec("mode=spritesheet&width=100");
        let video = spec("mode=video&width=100");
        let audio = spec("mode=audio");
        let orig = spec("mode=orig");
        for (path, s, want) in [
            ("/upload", None, OperationClass::Upload),
            ("/upload/abc", None, OperationClass::Upload),
            ("/proxy/image/abc", None, OperationClass::Image),
            ("/proxy/thumbnail/abc", None, OperationClass::Thumbnail),
            ("/proxy/metadata/abc", None, OperationClass::Metadata),
            ("/proxy/external", None, OperationClass::External),
            (
                "/cdn-cgi/image/w=1/https://x.test/a.jpg",
                Some(&img),
                OperationClass::External,
            ),
            ("/a.jpg", Some(&img), OperationClass::Image),
            ("/a.jpg", Some(&json), OperationClass::Metadata),
            ("/a.mp4", Some(&frame), OperationClass::Thumbnail),
            ("/a.mp4", Some(&sprite), OperationClass::Thumbnail),
            ("/a.mp4", Some(&video), OperationClass::Video),
            ("/a.mp4", Some(&audio), OperationClass::Video),
            ("/a.mp4", Some(&orig), OperationClass::Original),
            ("/a.mp4", None, OperationClass::Original),
            ("/uploads/x.jpg", Some(&img), OperationClass::Image),
        ] {
            assert_eq!(classify(path, s), want, "{path}");
        }
    }

    #[test]
    fn limits_and_buckets() {
        let c = RateLimitConfig::default();
        assert_eq!(c.limit_for(OperationClass::Image), Some(100));
        assert_eq!(c.limit_for(OperationClass::Thumbnail), Some(20));
        assert_eq!(c.limit_for(OperationClass::External), Some(30));
        assert_eq!(c.limit_for(OperationClass::Metadata), Some(200));
        assert_eq!(c.limit_for(OperationClass::Upload), Some(30));
        assert_eq!(c.limit_for(OperationClass::Original), None);
        let off = RateLimitConfig {
            enabled: false,
            ..RateLimitConfig::default()
        };
        assert_eq!(off.limit_for(OperationClass::Image), None);
        assert_eq!(
            c.bucket_key(OperationClass::Image, "203.0.113.7".parse().unwrap()),
            "image:203.0.113.7"
        );
        assert_eq!(
            c.bucket_key(
                OperationClass::Video,
                "2001:db8:1:2:3:4:5:6".parse().unwrap()
            ),
            "video:2001:db8:1:2::/64"
        );
        assert_eq!(
            c.bucket_key(OperationClass::Image, "::ffff:203.0.113.7".parse().unwrap()),
            "image:203.0.113.7"
        );
    }

    #[test]
    fn config_toml() {
        let c: RateLimitConfig = toml::from_str("[per_minute]\nimage = 5\nvideo = 7\n").unwrap();
        assert_eq!(c.limit_for(OperationClass::Image), Some(5));
        assert_eq!(c.limit_for(OperationClass::Video), Some(7));
        assert_eq!(c.limit_for(OperationClass::Thumbnail), Some(20));
        assert!(toml::from_str::<RateLimitConfig>("[per_minute]\nfoo = 1").is_err());
        let zero: RateLimitConfig = toml::from_str("[per_minute]\nimage = 0").unwrap();
        assert!(zero.validate().unwrap_err()[0].contains("per_minute.image"));
    }
}
