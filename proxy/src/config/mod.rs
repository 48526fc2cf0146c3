//! Configuration: one TOML file, parsed into typed structs and validated.
//!
//! Owns the whole config: its schema (every key is documented in `conf/media-edge.toml`), the
//! built-in default config, size/duration spellings (`"256MiB"`, `"1h"`), and `check-config`:
//! every problem is reported at once with its key path. It must not open sockets or touch the
//! cache; it only reads the file and the environment variables the file names.
//!
//! - `units`: `ByteSize`, `Dur` and their spellings.
//! - `schema`: the sections and their defaults (`impl Default`, once each).
//! - `origins`: `[[origins]]`, matching a path to an origin, source path templates.
//! - `validate`: the checks of each section beyond its types.
//! - `problems`: the report (`ConfigProblem`, `ConfigErrors`) and its collector.
//!
//! This file holds [`Config`] and the order of the steps of [`Config::parse`].

mod origins;
mod problems;
mod schema;
mod units;
mod validate;

#[cfg(test)]
mod tests;

pub use origins::{
    compile_matcher, substitute, uploads_origin, valid_tenant, MatcherError, OriginConfig,
    RemoteAuth, SourceConfig, TtlConfig, UPLOADS_ORIGIN, UPLOADS_PREFIX,
};
pub use problems::{ConfigErrors, ConfigProblem};
pub use schema::{
    AnalyticsConfig, AuthRule, CacheConfig, ContentConfig, ExternalConfig, JobsConfig, RouteAuth,
    SecurityConfig, ServerConfig, SigningKey, StoreConfig, TlsListener, TokenConfig,
    TransformConfig,
};
pub use units::{parse_duration, parse_size, ByteSize, Dur, UnitError};

use problems::Problems;
use regex::Regex;
use std::path::{Path, PathBuf};

/// The default config, the same text as `conf/media-edge.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../conf/media-edge.toml");

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
    /// The metadata database and the object store.
    pub store: StoreConfig,
    /// Asynchronous transforms.
    pub jobs: JobsConfig,
    /// The request log and analytics.
    pub analytics: AnalyticsConfig,
    /// The folder relative paths in the file resolve against.
    pub base: PathBuf,
    pub origins: Vec<OriginConfig>,
    /// Compiled matchers, one per origin, same order.
    pub matchers: Vec<Regex>,
    /// The text it was read from (`GET /admin/config` shows it, redacted).
    pub text: String,
    /// The file it was read from, when there was one.
    pub file: Option<PathBuf>,
}

impl Config {
    /// The built-in default config.
    pub fn default_config() -> Result<Config, ConfigErrors> {
        Config::parse(DEFAULT_CONFIG, Path::new("."))
    }

    /// Rebuilds the built-in uploads origin (the last) for the final `server.data_dir`.
    pub fn refresh_uploads_origin(&mut self) {
        let (o, m) = uploads_origin(self.store.uploads.as_ref(), &self.server.data_dir);
        if let (Some(lo), Some(lm)) = (self.origins.last_mut(), self.matchers.last_mut()) {
            *lo = o;
            *lm = m;
        }
    }

    /// Reads and validates a config file; relative paths inside resolve against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::single(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = Config::parse(&text, base)?;
        cfg.file = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The config text with secrets masked: the password of any URL with user info (a
    /// database URL, a remote origin), and any literal value of a key ending in `secret`,
    /// `password` or `token` (the `*_env` keys, which name environment variables, stay);
    /// basic and literal strings alike.
    pub fn redacted_text(&self) -> String {
        static SECRET: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
            Regex::new(r#"\b(\w*(?:secret|password|token))(\s*=\s*)("[^"\n]*"|'[^'\n]*')"#)
                .expect("a constant pattern")
        });
        static USERINFO: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
            Regex::new(r#"(://[^:@/\s"']+):[^@/\s"']*@"#).expect("a constant pattern")
        });
        static QUERY_PASSWORD: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
            Regex::new(r#"([?&](?:password|pass|pwd|secret|token)=)[^&\s"']*"#)
                .expect("a constant pattern")
        });
        let text = USERINFO.replace_all(&self.text, "$1:***@");
        let text = QUERY_PASSWORD.replace_all(&text, "$1***");
        SECRET
            .replace_all(&text, |c: &regex::Captures<'_>| {
                // The `Via` hop's name is public (every response carries it).
                if &c[1] == "via_token" {
                    return c[0].to_string();
                }
                let quote = &c[3][..1];
                let masked = if c[3].len() > 2 { "***" } else { "" };
                format!("{}{}{quote}{masked}{quote}", &c[1], &c[2])
            })
            .into_owned()
    }

    /// Parses and validates config text. Every problem is collected before returning.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigErrors::single("(syntax)", e.to_string().trim().replace('\n', " "))
        })?;
        let mut p = Problems::default();
        validate::known_sections(&doc, &mut p);
        let table = |k: &str| {
            doc.get(k)
                .cloned()
                .unwrap_or(toml::Value::Table(Default::default()))
        };
        // Each section is read, then checked; server and cache are checked after the origins
        // (the order `check-config` has always printed problems in).
        let server: Option<ServerConfig> = p.section(table("server"), "server");
        let cache: Option<CacheConfig> = p.section(table("cache"), "cache");
        let security: Option<SecurityConfig> = p.section(table("security"), "security");
        let security = security.inspect(|s| validate::security(s, base, &mut p));
        let external: Option<ExternalConfig> = p.section(table("external"), "external");
        let external = external.inspect(|x| validate::external(x, &mut p));
        let content: Option<ContentConfig> = p.section(table("content"), "content");
        let content = content.inspect(|c| validate::content(c, &mut p));
        let transform: Option<TransformConfig> = p.section(table("transform"), "transform");
        let transform = transform.inspect(|t| validate::transform(t, &mut p));
        let filters: Option<filters::FiltersConfig> = p.section(table("filters"), "filters");
        let filters = filters.inspect(|f| validate::filters(f, &mut p));
        let store: Option<StoreConfig> = p.section(table("store"), "store");
        let store = store.inspect(|s| validate::store(s, base, &mut p));
        let jobs: Option<JobsConfig> = p.section(table("jobs"), "jobs");
        let jobs = jobs.inspect(|j| validate::jobs(j, &mut p));
        let analytics: Option<AnalyticsConfig> = p.section(table("analytics"), "analytics");
        let analytics = analytics.inspect(|a| validate::analytics(a, &mut p));
        let items = validate::origin_items(&doc, &mut p);
        let (origins, matchers) = validate::origins(items, base, &mut p);
        let server = server.inspect(|s| validate::server(s, base, &mut p));
        let cache = cache.inspect(|c| validate::cache(c, &mut p));
        p.finish()?;
        let (
            Some(mut server),
            Some(cache),
            Some(filters),
            Some(transform),
            Some(security),
            Some(external),
            Some(content),
            Some(mut store),
            Some(jobs),
            Some(analytics),
        ) = (
            server, cache, filters, transform, security, external, content, store, jobs, analytics,
        )
        else {
            // Not reached: a section that did not deserialize left a problem.
            return Err(ConfigErrors(Vec::new()));
        };
        for t in &mut server.tls {
            t.cert = validate::resolve(base, &t.cert);
            t.key = validate::resolve(base, &t.key);
        }
        for objects in [&mut store.objects, &mut store.uploads] {
            if let Some(SourceConfig::Local { root, .. }) = objects {
                *root = validate::resolve(base, root);
            }
        }
        // The built-in uploads origin goes last (the configured ones keep their indices);
        // matching gives it its own prefix ([`Config::match_origin`]).
        let (mut origins, mut matchers) = (origins, matchers);
        let (o, m) = uploads_origin(store.uploads.as_ref(), &server.data_dir);
        origins.push(o);
        matchers.push(m);
        Ok(Config {
            server,
            cache,
            filters,
            transform,
            security,
            external,
            content,
            store,
            jobs,
            analytics,
            base: base.to_path_buf(),
            text: text.to_string(),
            file: None,
            origins,
            matchers,
        })
    }

    /// Where the origin service listens.
    pub fn origin_socket(&self) -> PathBuf {
        self.server
            .origin_socket
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("origin.sock"))
    }
}
