//! Pure request logic for Media Edge: no I/O, no async, no clock. Everything the edge must
//! decide about a request before touching a cache or an origin lives here, as functions from
//! values to values: transform parameters and their canonical form ([`params`]), the Akamai
//! and Cloudflare spellings ([`akamai`], [`cdncgi`]), derivatives and client-hint sizing
//! ([`derivative`], [`responsive`]), the request pipeline ([`resolve()`]), cache keys
//! ([`cache_key`]), response headers ([`response`]), signed URLs ([`signature`]), client
//! addresses ([`client_ip`]) and rate-limit policy ([`ratelimit`]).

pub mod akamai;
pub mod cache_key;
pub mod cdncgi;
pub mod client_ip;
pub mod config;
pub mod content;
pub mod derivative;
pub mod error;
pub mod params;
pub mod ratelimit;
pub mod resolve;
pub mod response;
pub mod responsive;
pub mod signature;
pub mod ssrf;

pub use cache_key::{cache_key, with_validator};
pub use client_ip::{Cidr, CidrError, CidrSet};
pub use config::{Derivative, FiltersConfig, UnknownParams};
pub use error::{ErrorCode, FilterError};
pub use params::{
    Codec, Compression, Crop, Fit, Flip, Format, Gravity, Metadata, Mode, OnError, Playback,
    Preload, Quality, TransformSpec, Trim, TrimBorder, TRIM_DEFAULT_TOLERANCE,
};
pub use ratelimit::{classify, OperationClass, RateLimitConfig};
pub use resolve::{
    resolve, Diagnostics, RequestForm, RequestParts, ResolveOptions, Resolved, Source,
};
pub use response::{negotiate_format, response_headers};
pub use responsive::{ACCEPT_CH, NETWORK_ACCEPT_CH, NETWORK_HINTS, VARY_HEADERS};
pub use signature::SignatureError;

/// Case-insensitive request header lookup (first value). Implemented for
/// `http::HeaderMap`, slices and arrays of `(&str, &str)`, `Vec<(String, String)>` and `()`.
pub trait Headers {
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for () {
    fn header(&self, _: &str) -> Option<&str> {
        None
    }
}

impl Headers for &[(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl Headers for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Headers for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name)?.to_str().ok()
    }
}
