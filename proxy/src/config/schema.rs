//! The sections of the config file as serde structs: `[server]`, `[cache]`, `[content]`,
//! `[external]`, `[security]`, `[transform]` (`[filters]` is `filters::FiltersConfig`, the
//! origins are in `origins`).
//!
//! Owns every key's type, its documentation and its default. A default is written once, in
//! the section's `impl Default`; `#[serde(default)]` on the struct fills a missing key from
//! it, so a key left out and `Section::default()` agree. It must not check values against
//! each other or the file system (that is `validate`) and must not read the environment:
//! secrets are named here (`*_env`), read by whoever uses them.

use super::units::{ByteSize, Dur};
use serde::Deserialize;
use std::path::PathBuf;

/// Default timeout of a whole fetch from a source (S3, remote, external URL).
pub(super) const FETCH_TIMEOUT: Dur = Dur::secs(30);
/// Default connect timeout of a fetch over HTTP (remote sources, external URLs).
pub(super) const CONNECT_TIMEOUT: Dur = Dur::secs(5);

/// Loopback, the default of the networks that may purge and read /health and /metrics.
fn loopback() -> Vec<String> {
    vec!["127.0.0.0/8".into(), "::1/128".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Plain HTTP listeners, `"ip:port"`.
    pub listen: Vec<String>,
    /// HTTPS listeners.
    pub tls: Vec<TlsListener>,
    /// Worker threads of the edge; 0 = number of cores.
    pub threads: usize,
    /// Where the disk cache, purge log, sockets and pid file live. `--data-dir` overrides it.
    pub data_dir: PathBuf,
    /// The env var holding the admin bearer token; the admin API is off while it is unset.
    pub admin_token_env: String,
    /// Peers allowed to use the HTTP `PURGE` method (CIDRs).
    pub purge_allowed: Vec<String>,
    /// Keep `Cache-Tag` on client responses (default: stripped).
    pub keep_cache_tag: bool,
    /// The token this node adds to `Via`; a request already carrying it is a loop (508).
    pub via_token: String,
    /// The origin service's unix socket; default `{data_dir}/origin.sock`.
    pub origin_socket: Option<PathBuf>,
    /// How long the edge waits for the origin service's response headers.
    pub origin_timeout: Dur,
    /// Seconds an old process gets to drain on graceful upgrade or shutdown.
    pub grace_period: Dur,
    /// Per-connection write buffer of the listeners: a response header and a body up to
    /// this size leave in one `send` (Pingora's default, one TCP segment, sends the header
    /// and the body of a 10 KB hit separately).
    pub write_buffer: ByteSize,
    /// Per-connection read buffer of the listeners (Pingora's default, 64 KiB, which saves
    /// system calls under TLS); 0 reads straight from the socket. Allocated for every open
    /// connection, idle or not: what an open connection costs before it sends a byte.
    pub read_buffer: ByteSize,
    /// Let the edge's worker threads steal each other's tasks (Pingora's default, on). Off,
    /// each thread runs its own connections: fewer cross-thread wake-ups, no balancing. On
    /// the 2-core bench machine the two measured the same within noise.
    pub work_stealing: bool,
    /// Log as JSON lines.
    pub json_logs: bool,
    /// Allow `debug=view` without the admin token.
    pub debug_view: bool,
    /// The edge's own HTTP/1 loop in front of Pingora (fast hits written straight from
    /// prepared bytes). Off: every connection is Pingora's (`edge/front.rs`).
    pub front_door: bool,
    /// HTTP/2 with prior knowledge (h2c) on the plain listeners, next to HTTP/1.1. TLS
    /// listeners always offer `h2` and `http/1.1` by ALPN.
    pub h2c: bool,
    /// Idle time a keep-alive connection is kept between requests (front door).
    pub keepalive_timeout: Dur,
    /// Longest time a client may take to send a whole request head (front door), however
    /// slowly its bytes trickle in.
    pub head_timeout: Dur,
    /// Open client connections at most (front door); when full, the connection idle the
    /// longest is closed for a new one, and a new one is refused when none is idle.
    /// 0: three quarters of the open-files limit (raised to its hard limit at start).
    pub max_connections: usize,
    /// Open connections per client IP at most (front door; trusted proxies exempt); 0: no cap.
    pub max_connections_per_ip: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec!["0.0.0.0:8080".into()],
            tls: vec![],
            threads: 0,
            data_dir: PathBuf::from("./data"),
            admin_token_env: "MEDIA_EDGE_ADMIN_TOKEN".into(),
            purge_allowed: loopback(),
            keep_cache_tag: false,
            via_token: "media-edge".into(),
            origin_socket: None,
            origin_timeout: Dur::secs(60),
            grace_period: Dur::secs(10),
            write_buffer: ByteSize::kib(16),
            read_buffer: ByteSize::kib(64),
            work_stealing: true,
            json_logs: false,
            debug_view: false,
            front_door: true,
            h2c: false,
            keepalive_timeout: Dur::secs(60),
            head_timeout: Dur::secs(10),
            max_connections: 0,
            max_connections_per_ip: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    pub listen: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache on or off (off: every request goes to the origin service).
    pub enabled: bool,
    /// Memory tier budget.
    pub memory_bytes: ByteSize,
    /// Largest object kept in the memory tier; larger ones live on disk only.
    pub memory_max_object: ByteSize,
    /// Disk tier budget.
    pub disk_bytes: ByteSize,
    /// Largest object cached at all.
    pub max_object: ByteSize,
    /// How long requests for a key being filled wait for the filling request.
    pub lock_timeout: Dur,
    /// Default stale-while-revalidate when the response does not say.
    pub stale_while_revalidate: Dur,
    /// Default stale-if-error when the response does not say.
    pub stale_if_error: Dur,
    /// A ranged request that misses is answered from the source's range (not cached) and the
    /// whole object is filled in the background.
    pub range_miss_passthrough: bool,
    /// Longest time an entry is fresh, whatever its `Cache-Control` says, and the longest
    /// stale-while-revalidate / stale-if-error window; purges older than three times this are
    /// forgotten (nothing they could hide is servable).
    pub max_ttl: Dur,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            memory_bytes: ByteSize::mib(256),
            memory_max_object: ByteSize::mib(8),
            disk_bytes: ByteSize::gib(10),
            max_object: ByteSize::gib(4),
            lock_timeout: Dur::secs(30),
            stale_while_revalidate: Dur::secs(60),
            stale_if_error: Dur::secs(86400),
            range_miss_passthrough: true,
            max_ttl: Dur::secs(365 * 86400),
        }
    }
}

/// Content-hash routes (`/proxy/{image,thumbnail,metadata}/{sha256}`): rewritten to the path
/// `{prefix}{sha256}`, which an origin serves like any other path (its matcher and sources
/// decide where objects named by their hash live).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContentConfig {
    pub prefix: String,
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig {
            prefix: "/content/".into(),
        }
    }
}

/// External fetches: client-supplied URLs (`/cdn-cgi/*/https://..`, `/proxy/external?url=`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalConfig {
    /// Off by default: an open image proxy must be a choice.
    pub enabled: bool,
    /// Hosts allowed (exact or `*.example.com`); empty = any host not denied.
    pub allow_hosts: Vec<String>,
    pub deny_hosts: Vec<String>,
    /// Networks exempt from the private/loopback refusal (e.g. an internal image host).
    pub allowed_networks: Vec<String>,
    pub max_bytes: ByteSize,
    pub connect_timeout: Dur,
    /// Whole fetch, body included.
    pub timeout: Dur,
    pub max_redirects: u32,
    /// Cache TTL of external answers that carry none.
    pub ttl: Dur,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        ExternalConfig {
            enabled: false,
            allow_hosts: vec![],
            deny_hosts: vec![],
            allowed_networks: vec![],
            max_bytes: ByteSize::mib(32),
            connect_timeout: CONNECT_TIMEOUT,
            timeout: FETCH_TIMEOUT,
            max_redirects: 3,
            ttl: Dur::secs(86400),
        }
    }
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
#[serde(default, deny_unknown_fields)]
pub struct RouteAuth {
    pub original: AuthRule,
    pub image: AuthRule,
    pub video: AuthRule,
    pub thumbnail: AuthRule,
    pub metadata: AuthRule,
    pub external: AuthRule,
    pub upload: AuthRule,
}

impl Default for RouteAuth {
    /// Every class open but uploads, which need a token.
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
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Keys accepted for signed URLs (several at once for rotation; `kid` picks one).
    pub signing_keys: Vec<SigningKey>,
    pub tokens: Vec<TokenConfig>,
    /// Peers whose `CF-Connecting-IP` / `X-Forwarded-For` / `X-Real-IP` are believed (CIDRs).
    pub trusted_proxies: Vec<String>,
    /// A file of CIDRs, one per line (`conf/cloudflare-ips.txt` ships Cloudflare's ranges).
    pub trusted_proxies_file: Option<PathBuf>,
    /// Refuse (403) peers that are not trusted proxies.
    pub require_cloudflare_edge: bool,
    /// Networks that may read /health and /metrics directly under `require_cloudflare_edge`.
    pub admin_networks: Vec<String>,
    pub auth: RouteAuth,
    /// Count cache hits against rate limits too (default: only requests reaching the origin).
    pub rate_limit_hits: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            signing_keys: vec![SigningKey {
                id: "default".into(),
                secret_env: "MEDIA_EDGE_SECRET".into(),
            }],
            tokens: vec![],
            trusted_proxies: vec![],
            trusted_proxies_file: None,
            require_cloudflare_edge: false,
            admin_networks: loopback(),
            auth: RouteAuth::default(),
            rate_limit_hits: false,
        }
    }
}

/// Limits and switches of the transform engines.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransformConfig {
    /// Largest original read into memory for an image transform (413 above).
    pub max_image_bytes: ByteSize,
    /// Largest original streamed to a temp file for a video transform (413 above).
    pub max_video_bytes: ByteSize,
    /// Largest decoded image, in pixels (width × height; 413 above).
    pub max_input_pixels: u64,
    /// Memory one image decode may take, in bytes: the decoder's buffer (pixels × bytes per
    /// pixel of its color type, 8 for 16-bit RGBA) plus the RGBA working copy. Checked from
    /// the header before anything is decoded (413 above): a pixel limit is not a memory
    /// limit, and a 2 MB 16-bit PNG of 16000² needs 3 GB.
    pub max_decode_bytes: ByteSize,
    /// An enlarged output holds at most this many times the source's pixels (413 above):
    /// upscaling a thumbnail to 4096² is cheap to ask and costly to do.
    pub max_upscale_area: f64,
    /// Offer AVIF for `format=auto`.
    pub avif: bool,
    /// Metadata kept in outputs when the request does not say: `auto` (default:
    /// Cloudflare's, `copyright` for JPEG and nothing for WebP, AVIF and PNG), `none`,
    /// `copyright`, `keep`.
    pub metadata: String,
    /// Concurrent transforms; 0 = one per core.
    pub workers: usize,
    /// Transforms one client (the IP the edge resolved) may run at once; 0 = one fewer than
    /// the workers (at least one), so one client never holds every worker. Job workers and
    /// background AVIF encodes are one client together.
    pub max_per_client: usize,
    /// Memory all running image transforms may hold together (the source, decode buffers,
    /// output rasters and encoded bytes, estimated from the header before decoding). A
    /// transform waits for its share; one that alone needs more is refused (413).
    pub memory_budget: ByteSize,
    /// Wall-clock limit of one image transform, checked between stages and frames (504);
    /// an isolated transform's worker is killed 2 s past it.
    pub image_timeout: Dur,
    /// Run image and video decoding and encoding in sandboxed worker processes (no
    /// secrets, no network, seccomp, Landlock, an address-space limit). Default true.
    pub isolate: bool,
    /// Address space (`RLIMIT_AS`) of one transform worker: past it the worker's
    /// allocations fail and its request is 413.
    pub worker_memory: ByteSize,
    /// A worker whose resident memory is past this after a transform is replaced, so
    /// memory a large transform took goes back to the system.
    pub worker_recycle_rss: ByteSize,
    /// Transforms one worker serves before it is replaced.
    pub worker_max_jobs: u64,
    /// Wall-clock limit of one video transform.
    pub video_timeout: Dur,
    /// How long a made HLS package is kept on disk for its segments to be served.
    pub hls_retention: Dur,
    /// The HLS rendition: height in pixels (width for portrait video), never upscaled, h264.
    pub hls_height: u32,
    /// HLS segment length in seconds (1..=60).
    pub hls_segment_secs: u32,
    /// Encode AVIF in the background for `format=auto`: a cold request gets WebP marked
    /// short-lived at once, later requests get the AVIF.
    pub avif_background: bool,
    /// `max-age` of the stand-in answered while the AVIF is being encoded.
    pub avif_pending_max_age: Dur,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            max_image_bytes: ByteSize::mib(64),
            max_video_bytes: ByteSize::gib(4),
            // 16383 × 16383, the largest WebP.
            max_input_pixels: 268_402_689,
            max_decode_bytes: ByteSize::gib(1),
            max_upscale_area: 16.0,
            avif: true,
            metadata: "auto".into(),
            workers: 0,
            max_per_client: 0,
            memory_budget: ByteSize::mib(512),
            image_timeout: Dur::secs(30),
            isolate: true,
            worker_memory: ByteSize::gib(4),
            worker_recycle_rss: ByteSize::mib(256),
            worker_max_jobs: 10_000,
            video_timeout: Dur::secs(120),
            hls_retention: Dur::secs(24 * 3600),
            hls_height: 720,
            hls_segment_secs: 6,
            avif_background: true,
            avif_pending_max_age: Dur::secs(60),
        }
    }
}

/// The metadata database and the object store (`[store]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The metadata database (jobs, finished transforms, cache-bust versions): empty = a
    /// SQLite file `{data_dir}/media-edge.db`; `sqlite:///path/to/file.db` or
    /// `postgres://user:password@host:port/db` (a fleet shares one).
    pub database_url: String,
    /// An env var holding the database URL (wins over `database_url`; for passwords).
    pub database_url_env: Option<String>,
    /// Connections to the database at most.
    pub max_connections: u32,
    /// Keep every finished transform in the object store, so a cold cache, a restarted
    /// node or another node serves it without transforming again (`X-Store: HIT|MISS`).
    pub transforms: bool,
    /// Where objects are kept: a folder (`kind = "local"`, `root`; default
    /// `{data_dir}/store`) or an S3/R2 bucket (`kind = "s3"`, the keys of an S3 source).
    pub objects: Option<super::origins::SourceConfig>,
    /// Where uploaded originals are kept, at `{tenant}/{sha256}`: the same forms as
    /// `objects`; default the folder `{data_dir}/uploads`.
    pub uploads: Option<super::origins::SourceConfig>,
    /// The largest upload accepted (413 above).
    pub max_upload_bytes: super::units::ByteSize,
    /// Widths of the WebP thumbnails made of every uploaded image (and kept in the store).
    pub thumbnail_widths: Vec<u32>,
    /// Width of an uploaded image's blur placeholder (a tiny WebP recorded as a `data:` URI).
    pub placeholder_width: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            database_url: String::new(),
            database_url_env: None,
            max_connections: 8,
            transforms: true,
            objects: None,
            uploads: None,
            max_upload_bytes: ByteSize::gib(4),
            thumbnail_widths: vec![160, 320, 640],
            placeholder_width: 24,
        }
    }
}

/// The request log and the analytics read from it (`[analytics]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Count every request into the analytics (where it is answered; written to the
    /// metadata store about once a second) and keep raw rows of errors and a sample.
    pub enabled: bool,
    /// How long records are kept (pruned in the background).
    pub retention: Dur,
    /// Raw rows waiting to be written at most; beyond, new ones are dropped and counted.
    pub queue: usize,
    /// The fraction of successful requests kept as raw rows besides every error (0 to 1;
    /// every request is counted in the analytics whatever this is).
    pub sample: f64,
    /// Store a hash of the client IP instead of the address.
    pub hash_client_ip: bool,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enabled: true,
            retention: Dur::secs(7 * 86_400),
            queue: 65_536,
            sample: 0.01,
            hash_client_ip: false,
        }
    }
}

/// Asynchronous transforms (`[jobs]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs run at once by this node; 0 = half the cores, at least one.
    pub workers: usize,
    /// A video transform of a source larger than this runs as a job (202).
    pub sync_max_bytes: ByteSize,
    /// A video, audio or spritesheet output longer than this runs as a job.
    pub sync_max_duration: Dur,
    /// An h265, vp9 or av1 output longer than this runs as a job.
    pub sync_slow_codec_max_duration: Dur,
    /// A video output whose work is over this runs as a job: frames × output pixels, × 4
    /// for h265, vp9 and av1. Default 2 G (≈ 32 s of 1080p30 h264, 8 s in vp9): a short
    /// clip at a huge size or frame rate is as much work as a long one.
    pub sync_max_frame_pixels: u64,
    /// Tries of a job before it is `failed` (the dead-letter state).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled each try, capped at `retry_max`.
    pub retry_base: Dur,
    pub retry_max: Dur,
    /// How long a claimed job is its worker's without news; a crashed node's jobs are taken
    /// over after it.
    pub lease: Dur,
    /// How often an idle worker looks for work (a job queued on this node wakes it at once).
    pub poll_interval: Dur,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            workers: 0,
            sync_max_bytes: ByteSize::mib(256),
            sync_max_duration: Dur::secs(60),
            sync_slow_codec_max_duration: Dur::secs(10),
            sync_max_frame_pixels: 2_000_000_000,
            max_attempts: 5,
            retry_base: Dur::secs(120),
            retry_max: Dur::secs(900),
            lease: Dur::secs(60),
            poll_interval: Dur::secs(1),
        }
    }
}
