//! The `[[origins]]` of the config: their schema (matcher, TTLs, ordered sources and how each
//! source authenticates), compiling the matchers, matching a request path to an origin and
//! expanding a source's path template (`$1`..) with the match.
//!
//! Owns what an origin and a source are and the template syntax. It must not fetch anything
//! or look at the file system (whether a local root exists is `validate`'s question) and must
//! not know the other sections.

use super::schema::{CONNECT_TIMEOUT, FETCH_TIMEOUT};
use super::units::Dur;
use super::Config;
use regex::{Captures, Regex};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// TTLs for responses that carry no freshness of their own, by status class.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtlConfig {
    pub ok: Dur,
    pub redirects: Dur,
    pub client_error: Dur,
    pub server_error: Dur,
}

impl Default for TtlConfig {
    fn default() -> Self {
        TtlConfig {
            ok: Dur::secs(86400),
            redirects: Dur::secs(300),
            client_error: Dur::secs(60),
            server_error: Dur(Duration::ZERO),
        }
    }
}

impl TtlConfig {
    /// The TTL for a status; `None` when that class is not cached (TTL 0).
    pub fn for_status(&self, status: u16) -> Option<Duration> {
        let d = match status {
            200..=299 => self.ok.0,
            300..=399 => self.redirects.0,
            400..=499 => self.client_error.0,
            _ => self.server_error.0,
        };
        (!d.is_zero()).then_some(d)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    pub name: String,
    /// Regex on the request path; capture groups are `$1`.. in source paths.
    pub matcher: String,
    #[serde(default)]
    pub ttl: TtlConfig,
    /// The `Cache-Control: public, max-age=…` browsers are sent on this origin's successful
    /// answers, whatever the source said (Cloudflare's Browser Cache TTL). Unset: the
    /// source's own `Cache-Control`, else 1 h for transforms and the `ttl.ok` class TTL for
    /// originals.
    #[serde(default)]
    pub browser_ttl: Option<Dur>,
    /// How far an image of this origin may be enlarged (output pixels over source pixels),
    /// over `transform.max_upscale_area` (e.g. 1.0: never enlarge; 64: allow 8× a side).
    #[serde(default)]
    pub max_upscale_area: Option<f64>,
    /// Per-origin request resolution switches (`akamai_snapping`, `derivative_matching`,
    /// `responsive`; all on by default).
    #[serde(default)]
    pub options: filters::ResolveOptions,
    /// One rule for every request this origin answers — originals, transforms, thumbnails,
    /// metadata, content-hash routes — overriding `security.auth`'s per-class rules, so a
    /// bucket is protected as a whole (unset: the class rules apply).
    #[serde(default)]
    pub auth: Option<super::AuthRule>,
    /// Tried in order; 404, 5xx and timeouts fall through to the next.
    pub sources: Vec<SourceConfig>,
}

// The defaults of source keys. Enum variants cannot take them from an `impl Default`, so
// serde calls these; the timeouts are the same as the external fetcher's.
fn source_path() -> String {
    "$1".into()
}
fn s3_region() -> String {
    "us-east-1".into()
}
fn sigv4_service() -> String {
    "s3".into()
}
fn fetch_timeout() -> Dur {
    FETCH_TIMEOUT
}
fn connect_timeout() -> Dur {
    CONNECT_TIMEOUT
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    Local {
        /// Folder served; nothing outside it is reachable (no `..`, no symlink out).
        root: PathBuf,
        /// Object path inside the folder, with `$1`.. from the matcher.
        #[serde(default = "source_path")]
        path: String,
    },
    S3 {
        bucket: String,
        #[serde(default = "s3_region")]
        region: String,
        /// For R2, MinIO or any S3-compatible server.
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        path_style: bool,
        /// Env var names of the credentials; unset = the SDK's default chain.
        #[serde(default)]
        access_key_env: Option<String>,
        #[serde(default)]
        secret_key_env: Option<String>,
        #[serde(default = "source_path")]
        path: String,
        #[serde(default = "fetch_timeout")]
        timeout: Dur,
    },
    Remote {
        /// Base URL; `path` is appended.
        url: String,
        #[serde(default = "source_path")]
        path: String,
        #[serde(default)]
        auth: RemoteAuth,
        #[serde(default = "fetch_timeout")]
        timeout: Dur,
        #[serde(default = "connect_timeout")]
        connect_timeout: Dur,
    },
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Local { .. } => "local",
            SourceConfig::S3 { .. } => "s3",
            SourceConfig::Remote { .. } => "remote",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RemoteAuth {
    #[default]
    None,
    Bearer {
        token_env: String,
    },
    Header {
        name: String,
        value_env: String,
    },
    AwsSigv4 {
        access_key_env: String,
        secret_key_env: String,
        region: String,
        #[serde(default = "sigv4_service")]
        service: String,
    },
}

/// An origin matcher that is not a regex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regex {pattern:?}: {reason}")]
pub struct MatcherError {
    pub pattern: String,
    /// The last line of the regex crate's message (the others repeat the pattern).
    pub reason: String,
}

/// Compiles an origin's `matcher`.
pub fn compile_matcher(pattern: &str) -> Result<Regex, MatcherError> {
    Regex::new(pattern).map_err(|e| MatcherError {
        pattern: pattern.into(),
        reason: e.to_string().lines().last().unwrap_or("").into(),
    })
}

impl Config {
    /// The first origin whose matcher matches `path` (no capture groups: cheaper).
    pub fn origin_index(&self, path: &str) -> Option<usize> {
        let builtin = self.matchers.len().checked_sub(1)?;
        if path.starts_with(UPLOADS_PREFIX) {
            return self.matchers[builtin].is_match(path).then_some(builtin);
        }
        self.matchers[..builtin]
            .iter()
            .position(|re| re.is_match(path))
    }

    /// The origin whose matcher matches `path`, with its capture groups (`$0` is the whole
    /// match), for [`substitute`]. Paths under [`UPLOADS_PREFIX`] are the built-in uploads
    /// origin's (the last) alone; it matches nothing else.
    pub fn match_origin<'h>(&self, path: &'h str) -> Option<(usize, Captures<'h>)> {
        let builtin = self.matchers.len().checked_sub(1)?;
        if path.starts_with(UPLOADS_PREFIX) {
            return self.matchers[builtin].captures(path).map(|c| (builtin, c));
        }
        self.matchers[..builtin]
            .iter()
            .enumerate()
            .find_map(|(i, re)| re.captures(path).map(|c| (i, c)))
    }

    /// The configured origins, without the built-in uploads origin.
    pub fn configured_origins(&self) -> &[OriginConfig] {
        &self.origins[..self.origins.len().saturating_sub(1)]
    }
}

/// The path prefix of the built-in origin that serves uploaded originals,
/// `/_uploads/{tenant}/{sha256}`. Never reachable by a client's own path: the edge routes a
/// tenant's content-hash requests there.
pub const UPLOADS_PREFIX: &str = "/_uploads/";
/// The built-in uploads origin's name.
pub const UPLOADS_ORIGIN: &str = "_uploads";

/// Whether `t` can name a tenant: 1-64 of `A-Z a-z 0-9 . _ -`, not starting with a dot (it
/// names a folder).
pub fn valid_tenant(t: &str) -> bool {
    (1..=64).contains(&t.len())
        && !t.starts_with('.')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The built-in origin over the uploads folder or bucket (`store.uploads`, default
/// `{data_dir}/uploads`), the last of `Config::origins`: paths under [`UPLOADS_PREFIX`]
/// match it alone, every other path only the configured origins.
pub fn uploads_origin(
    uploads: Option<&SourceConfig>,
    data_dir: &std::path::Path,
) -> (OriginConfig, Regex) {
    let mut source = uploads.cloned().unwrap_or_else(|| SourceConfig::Local {
        root: data_dir.join("uploads"),
        path: source_path(),
    });
    match &mut source {
        SourceConfig::Local { path, .. }
        | SourceConfig::S3 { path, .. }
        | SourceConfig::Remote { path, .. } => *path = source_path(),
    }
    let matcher = format!("^{UPLOADS_PREFIX}([A-Za-z0-9_-][A-Za-z0-9._-]{{0,63}}/[0-9a-f]{{64}})$");
    let re = Regex::new(&matcher).expect("a constant pattern");
    (
        OriginConfig {
            name: UPLOADS_ORIGIN.into(),
            matcher,
            ttl: TtlConfig::default(),
            browser_ttl: None,
            max_upscale_area: None,
            options: filters::ResolveOptions::default(),
            auth: None,
            sources: vec![source],
        },
        re,
    )
}

/// Expands a source path template with the groups of a match: `$0`..`$9` are the groups (one
/// digit each: `$12` is group 1 then `2`; a group that is absent or did not take part is
/// empty); every other `$` is itself (`${name}`, `$$` and a trailing `$` stay as written).
pub fn substitute(template: &str, groups: &Captures<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    groups.expand(&expand_syntax(template), &mut out);
    out
}

/// The template in `Captures::expand`'s syntax: `$d` becomes `${d}`, any other `$` is `$$`.
fn expand_syntax(template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 8);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('$', Some(d)) if d.is_ascii_digit() => {
                out.push_str("${");
                out.push(*d);
                out.push('}');
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            (c, _) => out.push(c),
        }
    }
    out
}
