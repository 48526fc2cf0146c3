//! Configuration the filters read: derivative presets, breakpoints, device widths, the
//! synchronous duration limit and rate-limit policy. It owns the serde shape (unknown keys
//! rejected), the documented defaults and [`FiltersConfig::validate`], which lists every
//! problem with its key path; it must not read files or the environment (the proxy does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::params::{self, Fit, Format, Mode, Quality, MIN_DIM};
use crate::ratelimit::RateLimitConfig;

/// A named preset (`?derivative=tablet`, `?impolicy=tablet`). Its dimensions replace the
/// request's; its other fields are defaults the request's explicit parameters override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derivative {
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub fit: Option<Fit>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    pub quality: Option<Quality>,
    /// Start offset, e.g. `"0s"`, `"1m30s"`.
    #[serde(default)]
    pub time: Option<String>,
    /// Whether `imwidth` may select this derivative by its width (default true).
    #[serde(default = "yes")]
    pub breakpoint: bool,
}

fn yes() -> bool {
    true
}

impl Derivative {
    /// A plain `width`×`height` contain preset.
    pub fn sized(width: u32, height: u32) -> Self {
        Derivative {
            width: Some(width),
            height: Some(height),
            fit: Some(Fit::Contain),
            mode: None,
            format: None,
            quality: None,
            time: None,
            breakpoint: true,
        }
    }
}

/// Widths chosen from `CF-Device-Type` when the request gives no size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceWidths {
    pub mobile: u32,
    pub tablet: u32,
    pub desktop: u32,
}

impl Default for DeviceWidths {
    fn default() -> Self {
        DeviceWidths {
            mobile: 854,
            tablet: 1280,
            desktop: 1920,
        }
    }
}

/// Client-hint sizing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsiveConfig {
    /// Use client hints / device type when a transform names no size (default true).
    pub enabled: bool,
    /// Widths a hinted width is rounded up to (capped at the largest).
    pub breakpoints: Vec<u32>,
    pub device_widths: DeviceWidths,
}

impl Default for ResponsiveConfig {
    fn default() -> Self {
        ResponsiveConfig {
            enabled: true,
            breakpoints: vec![320, 640, 768, 1024, 1366, 1600, 1920],
            device_widths: DeviceWidths::default(),
        }
    }
}

/// Akamai Image & Video Manager compatibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AkamaiConfig {
    /// Widths an Akamai-requested width snaps up to when snapping is on for the origin.
    pub breakpoints: Vec<u32>,
    /// The derivative an `impolicy` naming no derivative falls back to (Image & Video
    /// Manager's default policy); unset, such a request is served without a policy.
    pub default_policy: Option<String>,
}

impl Default for AkamaiConfig {
    fn default() -> Self {
        AkamaiConfig {
            breakpoints: vec![320, 640, 1024, 2048, 5000],
            default_policy: None,
        }
    }
}

/// What a transform request's query parameters that are neither ours, Akamai's, nor on
/// `ignore_params` get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownParams {
    /// `400` naming the parameter, as Cloudflare answers an option it does not know.
    #[default]
    Reject,
    /// Left out of the key and the spec (Akamai's behaviour).
    Ignore,
}

/// Tracking and cache-busting names that pages add to image URLs (`*` ends a prefix).
pub const DEFAULT_IGNORE_PARAMS: &[&str] = &[
    "utm_*",
    "fbclid",
    "gclid",
    "gclsrc",
    "dclid",
    "msclkid",
    "mc_cid",
    "mc_eid",
    "_ga",
    "_gl",
    "ref",
    "v",
    "ver",
    "version",
    "cb",
    "cachebuster",
    "_",
];

/// Everything the `filters` crate is configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FiltersConfig {
    /// Named presets. Default: `tablet` 1280×720 contain, `mobile` 854×640 contain,
    /// `thumbnail` 640×360 frame png at 0s (not selectable by `imwidth`).
    pub derivatives: BTreeMap<String, Derivative>,
    pub responsive: ResponsiveConfig,
    pub akamai: AkamaiConfig,
    /// Clips longer than this many seconds become async jobs (default 60).
    pub sync_max_duration_secs: u32,
    pub ratelimit: RateLimitConfig,
    /// Unknown query names on a transform request: `reject` (default) or `ignore`.
    pub unknown_params: UnknownParams,
    /// Query names never interpreted nor refused (`*` at the end matches a prefix).
    pub ignore_params: Vec<String>,
}

impl Default for FiltersConfig {
    fn default() -> Self {
        let mut derivatives = BTreeMap::new();
        derivatives.insert("tablet".to_string(), Derivative::sized(1280, 720));
        derivatives.insert("mobile".to_string(), Derivative::sized(854, 640));
        derivatives.insert(
            "thumbnail".to_string(),
            Derivative {
                width: Some(640),
                height: Some(360),
                fit: None,
                mode: Some(Mode::Frame),
                format: Some(Format::Png),
                quality: None,
                time: Some("0s".to_string()),
                breakpoint: false,
            },
        );
        FiltersConfig {
            derivatives,
            responsive: ResponsiveConfig::default(),
            akamai: AkamaiConfig::default(),
            sync_max_duration_secs: 60,
            ratelimit: RateLimitConfig::default(),
            unknown_params: UnknownParams::default(),
            ignore_params: DEFAULT_IGNORE_PARAMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl FiltersConfig {
    /// Every problem at once, each prefixed with its key path (relative to this section).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        for (name, d) in &self.derivatives {
            let at = format!("derivatives.{name}");
            if !params::is_token(name, 64) {
                errs.push(format!(
                    "{at}: name must be 1..=64 letters, digits, '-' or '_'"
                ));
            }
            let mode = d.mode.unwrap_or(Mode::Image);
            if mode == Mode::Original {
                errs.push(format!("{at}.mode: \"orig\" is not a transform mode"));
            }
            let max = if d.mode.is_none() {
                params::MAX_VIDEO_DIM
            } else {
                mode.max_dim()
            };
            for (k, v) in [("width", d.width), ("height", d.height)] {
                if let Some(v) = v {
                    if !(MIN_DIM..=max).contains(&v) {
                        errs.push(format!("{at}.{k}: {v} out of range {MIN_DIM}..={max}"));
                    }
                }
            }
            if let Some(t) = &d.time {
                match params::parse_time(t) {
                    Some(ms) if ms <= params::MAX_TIME_MS => {}
                    _ => errs.push(format!("{at}.time: {t:?} is not a time in 0s..=10m")),
                }
            }
            if d.breakpoint && d.width.is_none() {
                errs.push(format!(
                    "{at}.breakpoint: a derivative selectable by imwidth needs a width"
                ));
            }
        }
        check_breakpoints(
            "responsive.breakpoints",
            &self.responsive.breakpoints,
            &mut errs,
        );
        check_breakpoints("akamai.breakpoints", &self.akamai.breakpoints, &mut errs);
        if let Some(d) = &self.akamai.default_policy {
            if !self.derivatives.contains_key(d) {
                errs.push(format!(
                    "akamai.default_policy: {} is not a configured derivative",
                    crate::error::quote(d)
                ));
            }
        }
        let dw = &self.responsive.device_widths;
        for (k, v) in [
            ("mobile", dw.mobile),
            ("tablet", dw.tablet),
            ("desktop", dw.desktop),
        ] {
            if !(MIN_DIM..=params::MAX_IMAGE_DIM).contains(&v) {
                errs.push(format!(
                    "responsive.device_widths.{k}: {v} out of range {MIN_DIM}..={}",
                    params::MAX_IMAGE_DIM
                ));
            }
        }
        if !(1..=600).contains(&self.sync_max_duration_secs) {
            errs.push(format!(
                "sync_max_duration_secs: {} out of range 1..=600",
                self.sync_max_duration_secs
            ));
        }
        for p in &self.ignore_params {
            let bare = p.strip_suffix('*').unwrap_or(p);
            if bare.is_empty() || bare.contains('*') || bare.len() > 64 {
                errs.push(format!(
                    "ignore_params: {} must be a name of 1..=64 characters, or a prefix ending in *",
                    crate::error::quote(p)
                ));
            }
        }
        errs.extend(self.ratelimit.validate().err().unwrap_or_default());
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// Is `name` on `ignore_params`?
    pub fn ignores_param(&self, name: &str) -> bool {
        self.ignore_params
            .iter()
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => p == name,
            })
    }

    /// The synchronous duration limit in milliseconds.
    pub fn sync_max_duration_ms(&self) -> u64 {
        u64::from(self.sync_max_duration_secs) * 1000
    }
}

fn check_breakpoints(at: &str, bps: &[u32], errs: &mut Vec<String>) {
    if bps.windows(2).any(|w| w[0] >= w[1]) {
        errs.push(format!("{at}: must be strictly increasing, got {bps:?}"));
    }
    if bps.iter().any(|&b| b < MIN_DIM) {
        errs.push(format!(
            "{at}: every breakpoint must be at least {MIN_DIM}, got {bps:?}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = FiltersConfig::default();
        c.validate().unwrap();
        assert_eq!(c.derivatives["tablet"].width, Some(1280));
        assert_eq!(c.derivatives["tablet"].height, Some(720));
        assert_eq!(c.derivatives["mobile"].width, Some(854));
        assert_eq!(c.derivatives["mobile"].height, Some(640));
        let t = &c.derivatives["thumbnail"];
        assert_eq!(
            (t.width, t.height, t.mode, t.format),
            (Some(640), Some(360), Some(Mode::Frame), Some(Format::Png))
        );
        assert_eq!(c.akamai.breakpoints, vec![320, 640, 1024, 2048, 5000]);
        assert_eq!(c.sync_max_duration_ms(), 60_000);
    }

    #[test]
    fn toml_partial_config_and_unknown_keys() {
        let c: FiltersConfig = toml::from_str(
            r#"
            sync_max_duration_secs = 30
            [derivatives.hero]
            width = 1920
            height = 1080
            fit = "cover"
            quality = 80
            [responsive.device_widths]
            mobile = 480
            "#,
        )
        .unwrap();
        assert_eq!(c.derivatives.len(), 1);
        assert_eq!(c.derivatives["hero"].fit, Some(Fit::Cover));
        assert_eq!(c.derivatives["hero"].quality, Some(Quality::Value(80)));
        assert_eq!(c.responsive.device_widths.mobile, 480);
        assert_eq!(c.responsive.device_widths.tablet, 1280);
        c.validate().unwrap();

        let e = toml::from_str::<FiltersConfig>("colour = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = toml::from_str::<FiltersConfig>("[derivatives.x]\nwidht = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `widht`"), "{e}");
        let e = toml::from_str::<FiltersConfig>("[derivatives.x]\nfit = \"squash\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid fit \"squash\""), "{e}");
    }

    #[test]
    fn validate_lists_every_problem_with_its_path() {
        let mut c = FiltersConfig::default();
        c.derivatives.insert(
            "bad".into(),
            Derivative {
                width: Some(5000),
                time: Some("forever".into()),
                ..Derivative::sized(1, 1)
            },
        );
        c.akamai.breakpoints = vec![640, 320];
        c.sync_max_duration_secs = 0;
        let errs = c.validate().unwrap_err();
        let all = errs.join("\n");
        for want in [
            "derivatives.bad.width: 5000 out of range 10..=2000",
            "derivatives.bad.height: 1 out of range",
            "derivatives.bad.time: \"forever\"",
            "akamai.breakpoints: must be strictly increasing",
            "sync_max_duration_secs: 0 out of range",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }
}
