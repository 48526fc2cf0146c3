//! Responsive sizing for transforms that name no size: reads Client Hints
//! (`Sec-CH-Width`/`Width`, `Sec-CH-Viewport-Width`/`Viewport-Width`, `Sec-CH-DPR`/`DPR`),
//! Akamai's `im-viewwidth`/`im-density`, then `CF-Device-Type`, and picks a width rounded
//! up to a configured breakpoint. It owns the precedence and the list of headers a response
//! must `Vary` on; it must not decide whether a request is a transform (`resolve` does).

use serde::Serialize;

use crate::config::ResponsiveConfig;
use crate::derivative::snap;
use crate::params::parse_decimal;
use crate::Headers;

/// Every header that can change a responsive width, for `Vary`.
pub const VARY_HEADERS: &[&str] = &[
    "Sec-CH-Width",
    "Width",
    "Sec-CH-Viewport-Width",
    "Viewport-Width",
    "Sec-CH-DPR",
    "DPR",
    "CF-Device-Type",
];

/// The `Accept-CH` value to send with responses sized from hints.
pub const ACCEPT_CH: &str =
    "Sec-CH-Width, Sec-CH-Viewport-Width, Sec-CH-DPR, Width, Viewport-Width, DPR";

/// The network hints `slow-connection-quality` reads: the headers a response whose quality
/// they chose must `Vary` on, and its `Accept-CH`.
pub const NETWORK_HINTS: &[&str] = &["RTT", "Save-Data", "ECT", "Downlink"];
pub const NETWORK_ACCEPT_CH: &str = "RTT, Save-Data, ECT, Downlink";

/// Cloudflare's slow connection for `slow-connection-quality`: a hint present and `RTT`
/// over 150 ms, `Save-Data: on`, `ECT` one of `slow-2g`, `2g`, `3g`, or `Downlink` under
/// 5 Mbps. Malformed hints are ignored.
pub fn is_slow_connection(h: &dyn Headers) -> bool {
    let num = |name| h.header(name).and_then(|v| parse_decimal(v.trim()));
    num("rtt").is_some_and(|v| v > 150.0)
        || h.header("save-data")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("on"))
        || h.header("ect").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "slow-2g" | "2g" | "3g"
            )
        })
        || num("downlink").is_some_and(|v| v < 5.0)
}

/// `CF-Device-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    Mobile,
    Tablet,
    Desktop,
}

/// What the client told us about its screen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Hints {
    /// Intended resource width in physical pixels (`Sec-CH-Width`/`Width`).
    pub width: Option<u32>,
    /// Layout viewport width in CSS pixels.
    pub viewport_width: Option<u32>,
    /// Layout viewport height in CSS pixels (`im-viewheight`; informational).
    pub viewport_height: Option<u32>,
    pub dpr: Option<f32>,
    pub device: Option<DeviceType>,
}

impl Hints {
    pub fn is_empty(&self) -> bool {
        *self == Hints::default()
    }
}

fn px(v: Option<&str>) -> Option<u32> {
    let v = parse_decimal(v?.trim())?;
    (1.0..=100_000.0).contains(&v).then(|| v.round() as u32)
}

fn dpr(v: Option<&str>) -> Option<f32> {
    let v = parse_decimal(v?.trim())?;
    (v > 0.0 && v <= 4.0).then_some(v as f32)
}

/// Reads the hint headers (malformed values are ignored: hints are advisory). Akamai's
/// query hints (`im-viewwidth`, `im-viewheight`, `im-density`) take precedence over headers.
pub fn read_hints(
    headers: &dyn Headers,
    view_width: Option<u32>,
    view_height: Option<u32>,
    density: Option<f32>,
) -> Hints {
    let h = |n| headers.header(n);
    let device = h("cf-device-type").and_then(|d| match d.trim().to_ascii_lowercase().as_str() {
        "mobile" => Some(DeviceType::Mobile),
        "tablet" => Some(DeviceType::Tablet),
        "desktop" => Some(DeviceType::Desktop),
        _ => None,
    });
    Hints {
        width: px(h("sec-ch-width")).or_else(|| px(h("width"))),
        viewport_width: view_width
            .or_else(|| px(h("sec-ch-viewport-width")))
            .or_else(|| px(h("viewport-width"))),
        viewport_height: view_height,
        dpr: density
            .or_else(|| dpr(h("sec-ch-dpr")))
            .or_else(|| dpr(h("dpr"))),
        device,
    }
}

/// The width to render, before clamping to the mode's range: the resource-width hint, else
/// viewport × DPR (an explicit `dpr` parameter beats the hint), else the device type's
/// configured width; hinted widths round up to the configured breakpoints. `None` when the
/// client said nothing usable.
pub fn width_for(h: &Hints, cfg: &ResponsiveConfig, explicit_dpr: Option<f32>) -> Option<u32> {
    let raw = if let Some(w) = h.width {
        Some(w)
    } else if let Some(vw) = h.viewport_width {
        let d = explicit_dpr.or(h.dpr).unwrap_or(1.0);
        Some((vw as f32 * d).round() as u32)
    } else {
        None
    };
    if let Some(w) = raw {
        return Some(snap(w, &cfg.breakpoints));
    }
    let d = &cfg.device_widths;
    h.device.map(|dev| match dev {
        DeviceType::Mobile => d.mobile,
        DeviceType::Tablet => d.tablet,
        DeviceType::Desktop => d.desktop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(headers: &[(&str, &str)]) -> Hints {
        read_hints(&headers, None, None, None)
    }

    #[test]
    fn width_table() {
        let cfg = ResponsiveConfig::default();
        for (headers, explicit, want) in [
            (&[][..], None, None),
            (&[("Sec-CH-Width", "700")][..], None, Some(768)),
            (&[("Width", "700")][..], None, Some(768)),
            (
                &[("Sec-CH-Viewport-Width", "400"), ("Sec-CH-DPR", "2")][..],
                None,
                Some(1024),
            ),
            (
                &[("Viewport-Width", "400"), ("DPR", "1.5")][..],
                None,
                Some(640),
            ),
            (
                &[("Sec-CH-Viewport-Width", "400")][..],
                Some(3.0),
                Some(1366),
            ),
            (&[("Sec-CH-Viewport-Width", "5000")][..], None, Some(1920)),
            (&[("CF-Device-Type", "mobile")][..], None, Some(854)),
            (&[("CF-Device-Type", "tablet")][..], None, Some(1280)),
            (&[("CF-Device-Type", "Desktop")][..], None, Some(1920)),
            (&[("CF-Device-Type", "toaster")][..], None, None),
            (
                &[("Width", "wide"), ("CF-Device-Type", "mobile")][..],
                None,
                Some(854),
            ),
            (
                &[("Width", "300"), ("CF-Device-Type", "desktop")][..],
                None,
                Some(320),
            ),
        ] {
            assert_eq!(
                width_for(&hints(headers), &cfg, explicit),
                want,
                "{headers:?}"
            );
        }
    }

    #[test]
    fn akamai_query_hints_win() {
        let headers: &[(&str, &str)] = &[("Sec-CH-Viewport-Width", "1000"), ("Sec-CH-DPR", "1")];
        let h = read_hints(&headers, Some(300), Some(500), Some(2.0));
        assert_eq!(h.viewport_width, Some(300));
        assert_eq!(h.viewport_height, Some(500));
        assert_eq!(width_for(&h, &ResponsiveConfig::default(), None), Some(640));
    }
}
