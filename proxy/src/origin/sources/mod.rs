//! Sources: where originals come from (local folder, S3/R2, remote HTTP).
//!
//! Owns fetching one object by path with an optional single byte range and conditional
//! validators, and mapping each backend's failures onto `SourceError`. A source never
//! caches and never transforms; it streams.

pub mod external;
pub mod local;
pub mod remote;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use std::borrow::Cow;
use std::pin::Pin;

/// A streamed body.
pub type BodyStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + Sync>>;

/// What the origin service asks a source for.
#[derive(Debug, Clone, Default)]
pub struct FetchRequest {
    /// The object path after `$n` substitution, still percent-encoded as in the URL.
    pub path: String,
    /// A `Range` header value; sources honour single ranges and ignore others.
    pub range: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    /// HEAD: headers only.
    pub head: bool,
}

/// A source's answer: 200, 206, 304 (or another status a remote passed through).
pub struct Fetched {
    pub status: u16,
    /// Lower-case header names.
    pub headers: Vec<(String, String)>,
    pub body: Option<BodyStream>,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("refused path {0:?}")]
    Refused(String),
    #[error("source error: {0}")]
    Upstream(String),
    #[error("source timed out: {0}")]
    Timeout(String),
    #[error("range not satisfiable (size {0})")]
    RangeNotSatisfiable(u64),
}

impl SourceError {
    /// Whether the next source should be tried.
    pub fn falls_through(&self) -> bool {
        matches!(
            self,
            SourceError::NotFound(_) | SourceError::Upstream(_) | SourceError::Timeout(_)
        )
    }
}

#[async_trait]
pub trait Source: Send + Sync {
    fn kind(&self) -> &'static str;
    async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, SourceError>;
    /// The file behind `path` when the source is a local folder (checked like `fetch`), so
    /// the video engine reads it in place instead of copying it.
    async fn local_file(&self, _path: &str) -> Option<std::path::PathBuf> {
        None
    }
}

/// Decodes a percent-encoded object path and refuses anything that could climb out of the
/// source's folder or prefix: `..` segments (also encoded or double-encoded), backslashes,
/// NUL bytes. Returns the clean relative path without a leading `/`.
pub fn clean_path(raw: &str) -> Result<String, SourceError> {
    check_path(raw).map(Cow::into_owned)
}

/// [`clean_path`] without allocating when nothing needs decoding (the edge checks every
/// request path with it).
pub fn check_path(raw: &str) -> Result<Cow<'_, str>, SourceError> {
    let refuse = || SourceError::Refused(raw.to_string());
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
    };
    let once: Cow<'_, str> = match percent_encoding::percent_decode_str(raw).decode_utf8() {
        Ok(c) => c,
        Err(_) => return Err(refuse()),
    };
    // A second decode only to detect double-encoded traversal; the once-decoded form is used.
    let twice = once
        .contains('%')
        .then(|| decode(&once).unwrap_or_default());
    for candidate in std::iter::once(once.as_ref()).chain(twice.as_deref()) {
        if candidate.contains('\\') || candidate.contains('\0') {
            return Err(refuse());
        }
        if candidate.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(refuse());
        }
    }
    let trimmed = match once {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim_start_matches('/')),
        Cow::Owned(o) => Cow::Owned(o.trim_start_matches('/').to_string()),
    };
    if trimmed.is_empty() || trimmed.split('/').any(str::is_empty) {
        return Err(SourceError::NotFound(raw.to_string()));
    }
    Ok(trimmed)
}

/// A parsed single byte range against an object of known size: `(start, end_inclusive)`.
/// `Ok(None)`: no usable single range (absent, multi-range or malformed: serve the whole).
pub fn single_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, SourceError> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(SourceError::RangeNotSatisfiable(size));
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(size.saturating_sub(1)),
                _ => return Ok(None),
            }
        };
        if start >= size {
            return Err(SourceError::RangeNotSatisfiable(size));
        }
        (start, end)
    };
    Ok(Some(range))
}

/// Why a configured source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("local source root {}: {source}", path.display())]
    Root {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("env var {var} ({key}) is not set")]
    EnvVar { var: String, key: &'static str },
    /// A source handed the configuration of another kind.
    #[error("not {0}")]
    WrongKind(&'static str),
    #[error("http client: {0}")]
    HttpClient(reqwest::Error),
}

/// The value of the environment variable `var`, named in the configuration by `key`.
pub(crate) fn env_var(var: &str, key: &'static str) -> Result<String, BuildError> {
    std::env::var(var).map_err(|_| BuildError::EnvVar {
        var: var.to_string(),
        key,
    })
}

/// Builds the configured sources.
pub async fn build(cfg: &crate::config::SourceConfig) -> Result<Box<dyn Source>, BuildError> {
    use crate::config::SourceConfig as C;
    Ok(match cfg {
        C::Local { root, .. } => Box::new(local::LocalSource::new(root)?),
        C::S3 { .. } => Box::new(s3::S3Source::new(cfg).await?),
        C::Remote { .. } => Box::new(remote::RemoteSource::new(cfg)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        for bad in [
            "../etc/passwd",
            "a/../../etc/passwd",
            "%2e%2e/etc/passwd",
            "%2E%2E%2Fetc%2Fpasswd",
            "%252e%252e/etc/passwd",
            "..%5c..%5cwindows",
            "a\\..\\b",
            "a/%00b",
            "./a",
        ] {
            assert!(
                matches!(clean_path(bad), Err(SourceError::Refused(_))),
                "{bad}"
            );
        }
        assert_eq!(clean_path("/photos/a%20b.jpg").unwrap(), "photos/a b.jpg");
        assert_eq!(clean_path("x..y/z.jpg").unwrap(), "x..y/z.jpg");
    }

    #[test]
    fn ranges() {
        assert_eq!(single_range(Some("bytes=0-9"), 100).unwrap(), Some((0, 9)));
        assert_eq!(
            single_range(Some("bytes=90-"), 100).unwrap(),
            Some((90, 99))
        );
        assert_eq!(
            single_range(Some("bytes=-10"), 100).unwrap(),
            Some((90, 99))
        );
        assert_eq!(
            single_range(Some("bytes=-1000"), 100).unwrap(),
            Some((0, 99))
        );
        assert_eq!(
            single_range(Some("bytes=50-5000"), 100).unwrap(),
            Some((50, 99))
        );
        assert!(single_range(Some("bytes=100-"), 100).is_err());
        assert_eq!(single_range(Some("bytes=0-1,5-6"), 100).unwrap(), None);
        assert_eq!(single_range(Some("items=0-1"), 100).unwrap(), None);
        assert_eq!(single_range(None, 100).unwrap(), None);
    }
}
