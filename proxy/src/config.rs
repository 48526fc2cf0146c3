//! Configuration: one TOML file, parsed into typed structs and validated.
//!
//! Owns the schema (every key is documented in `conf/media-edge.toml`), the built-in
//! default config, size/duration spellings (`"256MiB"`, `"1h"`), and `check-config`: every
//! problem is reported at once with its key path. It must not open sockets or touch the
//! cache; it only reads the file and the environment variables the file names.

use regex::Regex;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default config, the same text as `conf/media-edge.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../conf/media-edge.toml");

/// One problem found in a config, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All the problems of a config that did not validate.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A byte size written as `1048576`, `"512KiB"`, `"256MiB"`, `"10GiB"`, `"1MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses a size with an optional binary (`KiB`, `MiB`, `GiB`, `TiB`) or decimal (`KB`..) unit.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("size {s:?} is not a number with an optional unit like \"256MiB\""))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "size {s:?} has unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB)"
            ))
        }
    };
    Ok((n * mult) as u64)
}

/// A duration written as seconds (`30`) or `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"7d"`, `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Dur(Duration::from_secs(n))),
            Raw::S(s) => parse_duration(&s)
                .map(Dur)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"90"`, `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"7d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration {s:?} lacks a unit after its last number"))?;
        if digits == 0 {
            return Err(format!(
                "duration {s:?} is not like \"30s\", \"5m\" or \"1h30m\""
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {s:?} has a number that is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86400),
            other => {
                return Err(format!(
                    "duration {s:?} has unknown unit {other:?} (ms, s, m, h, d)"
                ))
            }
        };
    }
    Ok(total)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Plain HTTP listeners, `"ip:port"`.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// HTTPS listeners.
    #[serde(default)]
    pub tls: Vec<TlsListener>,
    /// Worker threads of the edge; 0 = number of cores.
    #[serde(default)]
    pub threads: usize,
    /// Where the disk cache, purge log, sockets and pid file live. `--data-dir` overrides it.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The env var holding the admin bearer token; the admin API is off while it is unset.
    #[serde(default = "default_admin_token_env")]
    pub admin_token_env: String,
    /// Peers allowed to use the HTTP `PURGE` method (CIDRs).
    #[serde(default = "default_purgers")]
    pub purge_allowed: Vec<String>,
    /// Keep `Cache-Tag` on client responses (default: stripped).
    #[serde(default)]
    pub keep_cache_tag: bool,
    /// The token this node adds to `Via`; a request already carrying it is a loop (508).
    #[serde(default = "default_via")]
    pub via_token: String,
    /// The origin service's unix socket; default `{data_dir}/origin.sock`.
    #[serde(default)]
    pub origin_socket: Option<PathBuf>,
    /// How long the edge waits for the origin service's response headers.
    #[serde(default = "default_origin_timeout")]
    pub origin_timeout: Dur,
    /// Seconds an old process gets to drain on graceful upgrade or shutdown.
    #[serde(default = "default_grace")]
    pub grace_period: Dur,
    /// Per-connection write buffer of the listeners: a response header and a body up to
    /// this size leave in one `send` (Pingora's default, one TCP segment, sends the header
    /// and the body of a 10 KB hit separately).
    #[serde(default = "default_write_buffer")]
    pub write_buffer: ByteSize,
    /// Let the edge's worker threads steal each other's tasks (Pingora's default, on). Off,
    /// each thread runs its own connections: fewer cross-thread wake-ups, no balancing. On
    /// the 2-core bench machine the two measured the same within noise.
    #[serde(default = "yes")]
    pub work_stealing: bool,
    /// Log as JSON lines.
    #[serde(default)]
    pub json_logs: bool,
    /// Allow `debug=view` without the admin token.
    #[serde(default)]
    pub debug_view: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    pub listen: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache on or off (off: every request goes to the origin service).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Memory tier budget.
    #[serde(default = "default_mem_bytes")]
    pub memory_bytes: ByteSize,
    /// Largest object kept in the memory tier; larger ones live on disk only.
    #[serde(default = "default_mem_max_object")]
    pub memory_max_object: ByteSize,
    /// Disk tier budget.
    #[serde(default = "default_disk_bytes")]
    pub disk_bytes: ByteSize,
    /// Largest object cached at all.
    #[serde(default = "default_max_object")]
    pub max_object: ByteSize,
    /// How long requests for a key being filled wait for the filling request.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Dur,
    /// Default stale-while-revalidate when the response does not say.
    #[serde(default = "default_swr")]
    pub stale_while_revalidate: Dur,
    /// Default stale-if-error when the response does not say.
    #[serde(default = "default_sie")]
    pub stale_if_error: Dur,
    /// A ranged request that misses is answered from the source's range (not cached) and the
    /// whole object is filled in the background.
    #[serde(default = "yes")]
    pub range_miss_passthrough: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            memory_bytes: default_mem_bytes(),
            memory_max_object: default_mem_max_object(),
            disk_bytes: default_disk_bytes(),
            max_object: default_max_object(),
            lock_timeout: default_lock_timeout(),
            stale_while_revalidate: default_swr(),
            stale_if_error: default_sie(),
            range_miss_passthrough: true,
        }
    }
}

/// Content-hash routes (`/proxy/{image,thumbnail,metadata}/{sha256}`): rewritten to the path
/// `{prefix}{sha256}`, which an origin serves like any other path (its matcher and sources
/// decide where objects named by their hash live).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentConfig {
    #[serde(default = "default_content_prefix")]
    pub prefix: String,
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig {
            prefix: default_content_prefix(),
        }
    }
}

fn default_content_prefix() -> String {
    "/content/".into()
}

/// External fetches: client-supplied URLs (`/cdn-cgi/*/https://..`, `/proxy/external?url=`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    /// Off by default: an open image proxy must be a choice.
    #[serde(default)]
    pub enabled: bool,
    /// Hosts allowed (exact or `*.example.com`); empty = any host not denied.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    #[serde(default)]
    pub deny_hosts: Vec<String>,
    /// Networks exempt from the private/loopback refusal (e.g. an internal image host).
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    #[serde(default = "default_external_max")]
    pub max_bytes: ByteSize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Whole fetch, body included.
    #[serde(default = "default_source_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_redirects")]
    pub max_redirects: u32,
    /// Cache TTL of external answers that carry none.
    #[serde(default = "default_external_ttl")]
    pub ttl: Dur,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        ExternalConfig {
            enabled: false,
            allow_hosts: vec![],
            deny_hosts: vec![],
            allowed_networks: vec![],
            max_bytes: default_external_max(),
            connect_timeout: default_connect_timeout(),
            timeout: default_source_timeout(),
            max_redirects: default_redirects(),
            ttl: default_external_ttl(),
        }
    }
}

fn default_external_max() -> ByteSize {
    ByteSize(32 << 20)
}
fn default_redirects() -> u32 {
    3
}
fn default_external_ttl() -> Dur {
    Dur(Duration::from_secs(86400))
}

/// What a route class requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthRule {
    /// Open (a valid bearer token still identifies the tenant).
    #[default]
    None,
    /// A valid signed URL.
    Signature,
    /// A bearer token from `security.tokens`.
    Token,
    /// A signed URL or a bearer token.
    Either,
}

/// Per route class rules (the classes of `filters::OperationClass`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    #[serde(default)]
    pub original: AuthRule,
    #[serde(default)]
    pub image: AuthRule,
    #[serde(default)]
    pub video: AuthRule,
    #[serde(default)]
    pub thumbnail: AuthRule,
    #[serde(default)]
    pub metadata: AuthRule,
    #[serde(default)]
    pub external: AuthRule,
    #[serde(default = "token_rule")]
    pub upload: AuthRule,
}

fn token_rule() -> AuthRule {
    AuthRule::Token
}

impl Default for RouteAuth {
    fn default() -> Self {
        RouteAuth {
            original: AuthRule::None,
            image: AuthRule::None,
            video: AuthRule::None,
            thumbnail: AuthRule::None,
            metadata: AuthRule::None,
            external: AuthRule::None,
            upload: AuthRule::Token,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub id: String,
    /// Env var holding the secret.
    pub secret_env: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Env var holding the token.
    pub token_env: String,
    pub tenant: String,
    /// `read`, `upload`, `admin`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Signed URLs, tokens, trusted proxies, route rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Keys accepted for signed URLs (several at once for rotation; `kid` picks one).
    #[serde(default = "default_signing_keys")]
    pub signing_keys: Vec<SigningKey>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Peers whose `CF-Connecting-IP` / `X-Forwarded-For` / `X-Real-IP` are believed (CIDRs).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// A file of CIDRs, one per line (`conf/cloudflare-ips.txt` ships Cloudflare's ranges).
    #[serde(default)]
    pub trusted_proxies_file: Option<PathBuf>,
    /// Refuse (403) peers that are not trusted proxies.
    #[serde(default)]
    pub require_cloudflare_edge: bool,
    /// Networks that may read /health and /metrics directly under `require_cloudflare_edge`.
    #[serde(default = "default_purgers")]
    pub admin_networks: Vec<String>,
    #[serde(default)]
    pub auth: RouteAuth,
    /// Count cache hits against rate limits too (default: only requests reaching the origin).
    #[serde(default)]
    pub rate_limit_hits: bool,
}

fn default_signing_keys() -> Vec<SigningKey> {
    vec![SigningKey {
        id: "default".into(),
        secret_env: "MEDIA_EDGE_SECRET".into(),
    }]
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            signing_keys: default_signing_keys(),
            tokens: vec![],
            trusted_proxies: vec![],
            trusted_proxies_file: None,
            require_cloudflare_edge: false,
            admin_networks: default_purgers(),
            auth: RouteAuth::default(),
            rate_limit_hits: false,
        }
    }
}

/// Limits and switches of the transform engines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// Largest original read into memory for an image transform (413 above).
    #[serde(default = "default_max_image_bytes")]
    pub max_image_bytes: ByteSize,
    /// Largest original streamed to a temp file for a video transform (413 above).
    #[serde(default = "default_max_video_bytes")]
    pub max_video_bytes: ByteSize,
    /// Largest decoded image, in pixels (width × height; 413 above).
    #[serde(default = "default_max_pixels")]
    pub max_input_pixels: u64,
    /// Offer AVIF for `format=auto`.
    #[serde(default = "yes")]
    pub avif: bool,
    /// Metadata kept in outputs: `none` (default), `copyright`, `keep`.
    #[serde(default = "default_metadata")]
    pub metadata: String,
    /// Concurrent transforms; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// Wall-clock limit of one video transform.
    #[serde(default = "default_video_timeout")]
    pub video_timeout: Dur,
    /// How long a made HLS package is kept on disk for its segments to be served.
    #[serde(default = "default_hls_retention")]
    pub hls_retention: Dur,
    /// The HLS rendition: height in pixels (width for portrait video), never upscaled, h264.
    #[serde(default = "default_hls_height")]
    pub hls_height: u32,
    /// HLS segment length in seconds (1..=60).
    #[serde(default = "default_hls_segment_secs")]
    pub hls_segment_secs: u32,
    /// Encode AVIF in the background for `format=auto`: a cold request gets WebP marked
    /// short-lived at once, later requests get the AVIF.
    #[serde(default = "yes")]
    pub avif_background: bool,
    /// `max-age` of the stand-in answered while the AVIF is being encoded.
    #[serde(default = "default_avif_pending_max_age")]
    pub avif_pending_max_age: Dur,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            max_image_bytes: default_max_image_bytes(),
            max_video_bytes: default_max_video_bytes(),
            max_input_pixels: default_max_pixels(),
            avif: true,
            metadata: default_metadata(),
            workers: 0,
            video_timeout: default_video_timeout(),
            hls_retention: default_hls_retention(),
            hls_height: default_hls_height(),
            hls_segment_secs: default_hls_segment_secs(),
            avif_background: true,
            avif_pending_max_age: default_avif_pending_max_age(),
        }
    }
}

fn default_max_image_bytes() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_max_video_bytes() -> ByteSize {
    ByteSize(4 << 30)
}
fn default_max_pixels() -> u64 {
    268_402_689
}
fn default_metadata() -> String {
    "none".into()
}
fn default_avif_pending_max_age() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_hls_height() -> u32 {
    720
}
fn default_hls_segment_secs() -> u32 {
    6
}
fn default_hls_retention() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}
fn default_video_timeout() -> Dur {
    Dur(Duration::from_secs(120))
}

/// TTLs for responses that carry no freshness of their own, by status class.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlConfig {
    #[serde(default = "ttl_ok")]
    pub ok: Dur,
    #[serde(default = "ttl_redirects")]
    pub redirects: Dur,
    #[serde(default = "ttl_client_error")]
    pub client_error: Dur,
    #[serde(default = "ttl_server_error")]
    pub server_error: Dur,
}

impl Default for TtlConfig {
    fn default() -> Self {
        TtlConfig {
            ok: ttl_ok(),
            redirects: ttl_redirects(),
            client_error: ttl_client_error(),
            server_error: ttl_server_error(),
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
    /// Per-origin request resolution switches (`akamai_snapping`, `derivative_matching`,
    /// `responsive`; all on by default).
    #[serde(default)]
    pub options: filters::ResolveOptions,
    /// Tried in order; 404, 5xx and timeouts fall through to the next.
    pub sources: Vec<SourceConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    Local {
        /// Folder served; nothing outside it is reachable (no `..`, no symlink out).
        root: PathBuf,
        /// Object path inside the folder, with `$1`.. from the matcher.
        #[serde(default = "default_source_path")]
        path: String,
    },
    S3 {
        bucket: String,
        #[serde(default = "default_region")]
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
        #[serde(default = "default_source_path")]
        path: String,
        #[serde(default = "default_source_timeout")]
        timeout: Dur,
    },
    Remote {
        /// Base URL; `path` is appended.
        url: String,
        #[serde(default = "default_source_path")]
        path: String,
        #[serde(default)]
        auth: RemoteAuth,
        #[serde(default = "default_source_timeout")]
        timeout: Dur,
        #[serde(default = "default_connect_timeout")]
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
        #[serde(default = "default_sigv4_service")]
        service: String,
    },
}

/// The whole config file.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub cache: CacheConfig,
    /// Transform parameters: derivatives, breakpoints, client hints, rate limits.
    pub filters: filters::FiltersConfig,
    /// Transform engine limits.
    pub transform: TransformConfig,
    /// Signed URLs, tokens, client IPs, route rules.
    pub security: SecurityConfig,
    /// Client-supplied URLs.
    pub external: ExternalConfig,
    /// Content-hash routes.
    pub content: ContentConfig,
    /// The folder relative paths in the file resolve against.
    pub base: PathBuf,
    pub origins: Vec<OriginConfig>,
    /// Compiled matchers, one per origin, same order.
    pub matchers: Vec<Regex>,
}

fn yes() -> bool {
    true
}
fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:8080".into()]
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_admin_token_env() -> String {
    "MEDIA_EDGE_ADMIN_TOKEN".into()
}
fn default_purgers() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}
fn default_via() -> String {
    "media-edge".into()
}
fn default_write_buffer() -> ByteSize {
    ByteSize(16 << 10)
}
fn default_origin_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_grace() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_mem_bytes() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_mem_max_object() -> ByteSize {
    ByteSize(8 << 20)
}
fn default_disk_bytes() -> ByteSize {
    ByteSize(10 << 30)
}
fn default_max_object() -> ByteSize {
    ByteSize(4 << 30)
}
fn default_lock_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_swr() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_sie() -> Dur {
    Dur(Duration::from_secs(86400))
}
fn ttl_ok() -> Dur {
    Dur(Duration::from_secs(86400))
}
fn ttl_redirects() -> Dur {
    Dur(Duration::from_secs(300))
}
fn ttl_client_error() -> Dur {
    Dur(Duration::from_secs(60))
}
fn ttl_server_error() -> Dur {
    Dur(Duration::ZERO)
}
fn default_source_path() -> String {
    "$1".into()
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_source_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_sigv4_service() -> String {
    "s3".into()
}

/// Deserializes one part of the document, recording a problem (with its full key path) on error.
fn section<T: DeserializeOwned>(
    value: toml::Value,
    prefix: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = match (prefix.is_empty(), inner.as_str()) {
                (_, ".") => prefix.to_string(),
                (true, p) => p.to_string(),
                (false, p) => format!("{prefix}.{p}"),
            };
            problems.push(ConfigProblem {
                path: if path.is_empty() {
                    "(root)".into()
                } else {
                    path
                },
                message: e.into_inner().to_string(),
            });
            None
        }
    }
}

impl Config {
    /// The built-in default config.
    pub fn default_config() -> Result<Config, ConfigErrors> {
        Config::parse(DEFAULT_CONFIG, Path::new("."))
    }

    /// Reads and validates a config file; relative paths inside resolve against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigProblem {
                path: path.display().to_string(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base)
    }

    /// Parses and validates config text. Every problem is collected before returning.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let mut problems = Vec::new();
        let doc: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                return Err(ConfigErrors(vec![ConfigProblem {
                    path: "(syntax)".into(),
                    message: e.to_string().trim().replace('\n', " "),
                }]))
            }
        };
        for key in doc.keys() {
            if !matches!(
                key.as_str(),
                "server"
                    | "cache"
                    | "filters"
                    | "transform"
                    | "security"
                    | "external"
                    | "content"
                    | "origins"
            ) {
                problems.push(ConfigProblem {
                    path: key.clone(),
                    message: format!("unknown section `{key}` (expected server, cache, filters, transform, security, external, content, origins)"),
                });
            }
        }
        let table = |k: &str| {
            doc.get(k)
                .cloned()
                .unwrap_or(toml::Value::Table(Default::default()))
        };
        let server: Option<ServerConfig> = section(table("server"), "server", &mut problems);
        let cache: Option<CacheConfig> = section(table("cache"), "cache", &mut problems);
        let security: Option<SecurityConfig> =
            section(table("security"), "security", &mut problems);
        if let Some(sec) = &security {
            for (name, list) in [
                ("trusted_proxies", &sec.trusted_proxies),
                ("admin_networks", &sec.admin_networks),
            ] {
                if let Err(errs) = filters::CidrSet::parse(list) {
                    for e in errs {
                        problems.push(ConfigProblem {
                            path: format!("security.{name}"),
                            message: e.to_string(),
                        });
                    }
                }
            }
            if let Some(f) = &sec.trusted_proxies_file {
                let f = if f.is_relative() {
                    base.join(f)
                } else {
                    f.clone()
                };
                if !f.is_file() {
                    problems.push(ConfigProblem {
                        path: "security.trusted_proxies_file".into(),
                        message: format!("file {} does not exist", f.display()),
                    });
                }
            }
        }
        let external: Option<ExternalConfig> =
            section(table("external"), "external", &mut problems);
        if let Some(x) = &external {
            if let Err(errs) = filters::CidrSet::parse(&x.allowed_networks) {
                for e in errs {
                    problems.push(ConfigProblem {
                        path: "external.allowed_networks".into(),
                        message: e.to_string(),
                    });
                }
            }
        }
        let content: Option<ContentConfig> = section(table("content"), "content", &mut problems);
        if let Some(c) = &content {
            let p = &c.prefix;
            if !p.starts_with('/') || !p.ends_with('/') || p.len() < 3 || p.starts_with("/proxy/") {
                problems.push(ConfigProblem {
                    path: "content.prefix".into(),
                    message: format!(
                        "{p:?} must be a path like \"/content/\": starting and ending with `/`, not under /proxy/"
                    ),
                });
            }
        }
        let transform: Option<TransformConfig> =
            section(table("transform"), "transform", &mut problems);
        if let Some(t) = &transform {
            if !matches!(t.metadata.as_str(), "none" | "copyright" | "keep") {
                problems.push(ConfigProblem {
                    path: "transform.metadata".into(),
                    message: format!("{:?} is not one of none, copyright, keep", t.metadata),
                });
            }
            if !(10..=2160).contains(&t.hls_height) {
                problems.push(ConfigProblem {
                    path: "transform.hls_height".into(),
                    message: format!("{} is not within 10..=2160", t.hls_height),
                });
            }
            if !(1..=60).contains(&t.hls_segment_secs) {
                problems.push(ConfigProblem {
                    path: "transform.hls_segment_secs".into(),
                    message: format!("{} is not within 1..=60", t.hls_segment_secs),
                });
            }
        }
        let filters_cfg: Option<filters::FiltersConfig> =
            section(table("filters"), "filters", &mut problems);
        if let Some(f) = &filters_cfg {
            if let Err(errs) = f.validate() {
                for e in errs {
                    problems.push(ConfigProblem {
                        path: "filters".into(),
                        message: e,
                    });
                }
            }
        }
        let mut origins = Vec::new();
        match doc.get("origins") {
            None => {}
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(o) = section::<OriginConfig>(
                        item.clone(),
                        &format!("origins[{i}]"),
                        &mut problems,
                    ) {
                        origins.push((i, o));
                    }
                }
            }
            Some(_) => problems.push(ConfigProblem {
                path: "origins".into(),
                message: "must be an array of tables ([[origins]])".into(),
            }),
        }

        // Semantic checks.
        let mut matchers = Vec::new();
        let mut names = HashSet::new();
        let mut out_origins = Vec::new();
        for (i, mut o) in origins {
            let p = format!("origins[{i}]");
            if o.name.is_empty() {
                problems.push(ConfigProblem {
                    path: format!("{p}.name"),
                    message: "must not be empty".into(),
                });
            } else if !names.insert(o.name.clone()) {
                problems.push(ConfigProblem {
                    path: format!("{p}.name"),
                    message: format!("duplicate origin name {:?}", o.name),
                });
            }
            match Regex::new(&o.matcher) {
                Ok(r) => matchers.push(r),
                Err(e) => {
                    problems.push(ConfigProblem {
                        path: format!("{p}.matcher"),
                        message: format!(
                            "invalid regex {:?}: {}",
                            o.matcher,
                            e.to_string().lines().last().unwrap_or("")
                        ),
                    });
                    matchers.push(Regex::new("$^").expect("static regex"));
                }
            }
            if o.sources.is_empty() {
                problems.push(ConfigProblem {
                    path: format!("{p}.sources"),
                    message: "needs at least one source".into(),
                });
            }
            for (j, s) in o.sources.iter_mut().enumerate() {
                let sp = format!("{p}.sources[{j}]");
                match s {
                    SourceConfig::Local { root, .. } => {
                        if root.is_relative() {
                            *root = base.join(&*root);
                        }
                        if !root.is_dir() {
                            problems.push(ConfigProblem {
                                path: format!("{sp}.root"),
                                message: format!("folder {} does not exist", root.display()),
                            });
                        }
                    }
                    SourceConfig::S3 {
                        bucket,
                        endpoint,
                        access_key_env,
                        secret_key_env,
                        ..
                    } => {
                        if bucket.is_empty() {
                            problems.push(ConfigProblem {
                                path: format!("{sp}.bucket"),
                                message: "must not be empty".into(),
                            });
                        }
                        if let Some(ep) = endpoint {
                            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                                problems.push(ConfigProblem {
                                    path: format!("{sp}.endpoint"),
                                    message: format!("{ep:?} must be an http:// or https:// URL"),
                                });
                            }
                        }
                        if access_key_env.is_some() != secret_key_env.is_some() {
                            problems.push(ConfigProblem {
                                path: format!("{sp}.access_key_env"),
                                message: "access_key_env and secret_key_env go together".into(),
                            });
                        }
                    }
                    SourceConfig::Remote { url, .. } => {
                        if !(url.starts_with("http://") || url.starts_with("https://")) {
                            problems.push(ConfigProblem {
                                path: format!("{sp}.url"),
                                message: format!("{url:?} must be an http:// or https:// URL"),
                            });
                        }
                    }
                }
            }
            out_origins.push(o);
        }
        if let Some(s) = &server {
            if s.listen.is_empty() && s.tls.is_empty() {
                problems.push(ConfigProblem {
                    path: "server.listen".into(),
                    message: "no listener configured".into(),
                });
            }
            for (i, l) in s.listen.iter().enumerate() {
                if l.parse::<std::net::SocketAddr>().is_err() {
                    problems.push(ConfigProblem {
                        path: format!("server.listen[{i}]"),
                        message: format!("{l:?} is not an ip:port address"),
                    });
                }
            }
            for (i, t) in s.tls.iter().enumerate() {
                if t.listen.parse::<std::net::SocketAddr>().is_err() {
                    problems.push(ConfigProblem {
                        path: format!("server.tls[{i}].listen"),
                        message: format!("{:?} is not an ip:port address", t.listen),
                    });
                }
                for (k, f) in [("cert", &t.cert), ("key", &t.key)] {
                    let f = if f.is_relative() {
                        base.join(f)
                    } else {
                        f.clone()
                    };
                    if !f.is_file() {
                        problems.push(ConfigProblem {
                            path: format!("server.tls[{i}].{k}"),
                            message: format!("file {} does not exist", f.display()),
                        });
                    }
                }
            }
            if let Err(errs) = filters::CidrSet::parse(&s.purge_allowed) {
                for e in errs {
                    problems.push(ConfigProblem {
                        path: "server.purge_allowed".into(),
                        message: e.to_string(),
                    });
                }
            }
        }
        if let Some(c) = &cache {
            if c.memory_max_object.0 > c.memory_bytes.0 {
                problems.push(ConfigProblem {
                    path: "cache.memory_max_object".into(),
                    message: format!(
                        "{} is larger than cache.memory_bytes {}",
                        c.memory_max_object.0, c.memory_bytes.0
                    ),
                });
            }
        }
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let (
            Some(mut server),
            Some(cache),
            Some(filters),
            Some(transform),
            Some(security),
            Some(external),
            Some(content),
        ) = (
            server,
            cache,
            filters_cfg,
            transform,
            security,
            external,
            content,
        )
        else {
            return Err(ConfigErrors(problems));
        };
        for t in &mut server.tls {
            if t.cert.is_relative() {
                t.cert = base.join(&t.cert);
            }
            if t.key.is_relative() {
                t.key = base.join(&t.key);
            }
        }
        Ok(Config {
            server,
            cache,
            filters,
            transform,
            security,
            external,
            content,
            base: base.to_path_buf(),
            origins: out_origins,
            matchers,
        })
    }

    /// The first origin whose matcher matches `path` (no capture groups: cheaper).
    pub fn origin_index(&self, path: &str) -> Option<usize> {
        self.matchers.iter().position(|re| re.is_match(path))
    }

    /// The origin whose matcher matches `path`, with its capture groups (`$0` is the whole match).
    pub fn match_origin(&self, path: &str) -> Option<(usize, Vec<String>)> {
        for (i, re) in self.matchers.iter().enumerate() {
            if let Some(c) = re.captures(path) {
                let groups = c
                    .iter()
                    .map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default())
                    .collect();
                return Some((i, groups));
            }
        }
        None
    }

    /// Where the origin service listens.
    pub fn origin_socket(&self) -> PathBuf {
        self.server
            .origin_socket
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("origin.sock"))
    }
}

/// Replaces `$1`..`$9` (and `${name}`-free `$0`) in a source path template.
pub fn substitute(template: &str, groups: &[String]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            if let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                chars.next();
                out.push_str(groups.get(d as usize).map(String::as_str).unwrap_or(""));
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("12").unwrap(), 12);
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn default_config_is_valid() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
        let c = Config::parse(DEFAULT_CONFIG, &base).expect("default config validates");
        let (i, groups) = c
            .match_origin("/samples/photo.jpg")
            .expect("samples origin");
        assert_eq!(c.origins[i].name, "samples");
        assert_eq!(groups[1], "photo.jpg");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
            [server]
            listen = ["nonsense"]
            [cache]
            memory_bytes = "12 parsecs"
            [transform]
            hls_height = 5000
            hls_segment_secs = 0
            [[origins]]
            name = "a"
            matcher = "^/a/(.*"
            [[origins.sources]]
            kind = "local"
            root = "/definitely/not/here"
            [[origins]]
            name = "b"
            matcher = "^/b/"
            colour = "blue"
            sources = []
        "#;
        let errs = Config::parse(text, Path::new("/")).unwrap_err().0;
        let paths: Vec<_> = errs.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"cache.memory_bytes"), "{errs:?}");
        assert!(paths.contains(&"origins[0].matcher"), "{errs:?}");
        assert!(paths.contains(&"origins[0].sources[0].root"), "{errs:?}");
        assert!(
            paths.iter().any(|p| p.starts_with("origins[1]")),
            "{errs:?}"
        );
        assert!(paths.contains(&"server.listen[0]"), "{errs:?}");
        assert!(paths.contains(&"transform.hls_height"), "{errs:?}");
        assert!(paths.contains(&"transform.hls_segment_secs"), "{errs:?}");
    }

    #[test]
    fn substitution() {
        let g = vec!["/x/a/b.jpg".to_string(), "a".into(), "b.jpg".into()];
        assert_eq!(substitute("$1/$2", &g), "a/b.jpg");
        assert_eq!(substitute("img/$2?$9", &g), "img/b.jpg?");
    }

    #[test]
    fn ttl_classes() {
        let t = TtlConfig::default();
        assert_eq!(t.for_status(200), Some(Duration::from_secs(86400)));
        assert_eq!(t.for_status(404), Some(Duration::from_secs(60)));
        assert_eq!(t.for_status(503), None);
    }
}
