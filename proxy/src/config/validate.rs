//! The checks of `check-config`, one function a section, each pushing every problem it finds
//! with its key path (`server.tls[0].cert`, `origins[1].sources[0].url`).
//!
//! Owns the rules a deserialized section must also follow (addresses, CIDR lists, ranges,
//! files and folders that must exist) and resolving the file's relative paths against its
//! folder. It must not change a value otherwise, open sockets or read the files it checks.

use super::origins::{compile_matcher, OriginConfig, SourceConfig};
use super::problems::Problems;
use super::schema::{
    AnalyticsConfig, CacheConfig, ContentConfig, ExternalConfig, JobsConfig, SecurityConfig,
    ServerConfig, StoreConfig, TransformConfig,
};
use regex::Regex;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The top-level sections, in the order `check-config` names them.
pub(super) const SECTIONS: [&str; 11] = [
    "server",
    "cache",
    "filters",
    "transform",
    "security",
    "external",
    "content",
    "store",
    "jobs",
    "analytics",
    "origins",
];

/// A path from the file, relative ones resolved against the file's folder.
pub(super) fn resolve(base: &Path, f: &Path) -> PathBuf {
    match f.is_relative() {
        true => base.join(f),
        false => f.to_path_buf(),
    }
}

fn cidrs(list: &[String], path: &str, p: &mut Problems) {
    if let Err(errs) = filters::CidrSet::parse(list) {
        p.push_all(path, errs);
    }
}

fn file_exists(f: &Path, base: &Path, path: String, p: &mut Problems) {
    let f = resolve(base, f);
    if !f.is_file() {
        p.push(path, format!("file {} does not exist", f.display()));
    }
}

fn http_url(url: &str, path: String, p: &mut Problems) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        p.push(path, format!("{url:?} must be an http:// or https:// URL"));
    }
}

fn socket_addr(addr: &str, path: String, p: &mut Problems) {
    if addr.parse::<std::net::SocketAddr>().is_err() {
        p.push(path, format!("{addr:?} is not an ip:port address"));
    }
}

fn within<T>(value: T, range: std::ops::RangeInclusive<T>, path: &str, p: &mut Problems)
where
    T: PartialOrd + std::fmt::Display,
{
    if !range.contains(&value) {
        p.push(
            path,
            format!("{value} is not within {}..={}", range.start(), range.end()),
        );
    }
}

/// Top-level keys that are no section.
pub(super) fn known_sections(doc: &toml::Table, p: &mut Problems) {
    for key in doc.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
        p.push(
            key.clone(),
            format!("unknown section `{key}` (expected {})", SECTIONS.join(", ")),
        );
    }
}

pub(super) fn server(s: &ServerConfig, base: &Path, p: &mut Problems) {
    if s.listen.is_empty() && s.tls.is_empty() {
        p.push("server.listen", "no listener configured");
    }
    for (i, l) in s.listen.iter().enumerate() {
        socket_addr(l, format!("server.listen[{i}]"), p);
    }
    for (i, t) in s.tls.iter().enumerate() {
        socket_addr(&t.listen, format!("server.tls[{i}].listen"), p);
        for (k, f) in [("cert", &t.cert), ("key", &t.key)] {
            file_exists(f, base, format!("server.tls[{i}].{k}"), p);
        }
    }
    cidrs(&s.purge_allowed, "server.purge_allowed", p);
}

pub(super) fn cache(c: &CacheConfig, p: &mut Problems) {
    if c.memory_max_object.0 > c.memory_bytes.0 {
        p.push(
            "cache.memory_max_object",
            format!(
                "{} is larger than cache.memory_bytes {}",
                c.memory_max_object.0, c.memory_bytes.0
            ),
        );
    }
}

pub(super) fn security(s: &SecurityConfig, base: &Path, p: &mut Problems) {
    cidrs(&s.trusted_proxies, "security.trusted_proxies", p);
    cidrs(&s.admin_networks, "security.admin_networks", p);
    if let Some(f) = &s.trusted_proxies_file {
        file_exists(f, base, "security.trusted_proxies_file".into(), p);
    }
    for (i, t) in s.tokens.iter().enumerate() {
        // The tenant names folders and keys (`{tenant}/{sha256}`).
        if !super::origins::valid_tenant(&t.tenant) {
            p.push(
                format!("security.tokens[{i}].tenant"),
                format!(
                    "{:?} must be 1-64 of A-Z a-z 0-9 . _ - and not start with a dot",
                    t.tenant
                ),
            );
        }
    }
}

pub(super) fn external(x: &ExternalConfig, p: &mut Problems) {
    cidrs(&x.allowed_networks, "external.allowed_networks", p);
}

pub(super) fn content(c: &ContentConfig, p: &mut Problems) {
    let prefix = &c.prefix;
    if !prefix.starts_with('/')
        || !prefix.ends_with('/')
        || prefix.len() < 3
        || prefix.starts_with("/proxy/")
    {
        p.push(
            "content.prefix",
            format!(
                "{prefix:?} must be a path like \"/content/\": starting and ending with `/`, not under /proxy/"
            ),
        );
    }
}

pub(super) fn transform(t: &TransformConfig, p: &mut Problems) {
    if !matches!(t.metadata.as_str(), "auto" | "none" | "copyright" | "keep") {
        p.push(
            "transform.metadata",
            format!("{:?} is not one of auto, none, copyright, keep", t.metadata),
        );
    }
    within(t.hls_height, 10..=2160, "transform.hls_height", p);
    within(t.hls_segment_secs, 1..=60, "transform.hls_segment_secs", p);
    let mib = t.memory_budget.0 >> 20;
    if !(16..=512 << 10).contains(&mib) {
        p.push(
            "transform.memory_budget",
            format!("{mib} MiB is outside 16 MiB..=512 GiB"),
        );
    }
    let mib = t.worker_memory.0 >> 20;
    if mib < 512 {
        p.push(
            "transform.worker_memory",
            format!(
                "{mib} MiB is under 512 MiB (a worker maps ~400 MiB of code: the binary, \
                 FFmpeg and the codec libraries)"
            ),
        );
    }
    if t.worker_max_jobs == 0 {
        p.push(
            "transform.worker_max_jobs",
            "must be at least 1".to_string(),
        );
    }
    if t.image_timeout.0.is_zero() {
        p.push(
            "transform.image_timeout",
            "must be more than 0s".to_string(),
        );
    }
}

pub(super) fn store(s: &StoreConfig, base: &Path, p: &mut Problems) {
    let url = s.database_url.as_str();
    if !(url.is_empty()
        || url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        p.push(
            "store.database_url",
            format!("{url:?} is not empty, a sqlite: URL or a postgres:// URL"),
        );
    }
    within(s.max_connections, 1..=1000, "store.max_connections", p);
    if s.thumbnail_widths.len() > 8 {
        p.push("store.thumbnail_widths", "at most 8 widths");
    }
    for (i, w) in s.thumbnail_widths.iter().enumerate() {
        within(
            *w,
            16..=filters::content::THUMB_MAX_WIDTH,
            &format!("store.thumbnail_widths[{i}]"),
            p,
        );
    }
    within(s.placeholder_width, 4..=64, "store.placeholder_width", p);
    for (key, objects) in [("objects", &s.objects), ("uploads", &s.uploads)] {
        match objects {
            None | Some(SourceConfig::S3 { .. }) => {}
            Some(SourceConfig::Local { root, .. }) => {
                let root = resolve(base, root);
                if root.exists() && !root.is_dir() {
                    p.push(
                        format!("store.{key}.root"),
                        format!("{} is not a folder", root.display()),
                    );
                }
            }
            Some(SourceConfig::Remote { .. }) => p.push(
                format!("store.{key}.kind"),
                "objects are kept in a folder (\"local\") or a bucket (\"s3\"), not \"remote\"",
            ),
        }
    }
}

pub(super) fn analytics(a: &AnalyticsConfig, p: &mut Problems) {
    if a.retention.0 < std::time::Duration::from_secs(3600) {
        p.push("analytics.retention", "at least 1h");
    }
    within(a.queue, 1..=10_000_000, "analytics.queue", p);
    if !(0.0..=1.0).contains(&a.sample) {
        p.push("analytics.sample", "a fraction from 0 to 1");
    }
}

pub(super) fn jobs(j: &JobsConfig, p: &mut Problems) {
    within(j.max_attempts, 1..=100, "jobs.max_attempts", p);
    within(j.workers, 0..=256, "jobs.workers", p);
    if j.lease.0 < std::time::Duration::from_secs(1) {
        p.push("jobs.lease", "must be at least 1s");
    }
    if j.poll_interval.0 < std::time::Duration::from_millis(10) {
        p.push("jobs.poll_interval", "must be at least 10ms");
    }
    if j.retry_max.0 < j.retry_base.0 {
        p.push("jobs.retry_max", "must not be below jobs.retry_base");
    }
}

pub(super) fn filters(f: &filters::FiltersConfig, p: &mut Problems) {
    if let Err(errs) = f.validate() {
        p.push_all("filters", errs);
    }
}

/// The `[[origins]]` items, each deserialized on its own so that one bad origin does not hide
/// the problems of the next; `(index in the file, origin)`.
pub(super) fn origin_items(doc: &toml::Table, p: &mut Problems) -> Vec<(usize, OriginConfig)> {
    match doc.get("origins") {
        None => vec![],
        Some(toml::Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| Some((i, p.section(item.clone(), &format!("origins[{i}]"))?)))
            .collect(),
        Some(_) => {
            p.push("origins", "must be an array of tables ([[origins]])");
            vec![]
        }
    }
}

/// Checks the origins and compiles their matchers (one a valid origin, same order); local
/// roots are resolved against `base`.
pub(super) fn origins(
    items: Vec<(usize, OriginConfig)>,
    base: &Path,
    p: &mut Problems,
) -> (Vec<OriginConfig>, Vec<Regex>) {
    let mut names = HashSet::new();
    let mut matchers = Vec::new();
    let mut out = Vec::new();
    for (i, mut o) in items {
        let at = format!("origins[{i}]");
        if o.name.is_empty() {
            p.push(format!("{at}.name"), "must not be empty");
        } else if !names.insert(o.name.clone()) {
            p.push(
                format!("{at}.name"),
                format!("duplicate origin name {:?}", o.name),
            );
        }
        match compile_matcher(&o.matcher) {
            Ok(r) => matchers.push(r),
            Err(e) => p.push(format!("{at}.matcher"), e),
        }
        if o.sources.is_empty() {
            p.push(format!("{at}.sources"), "needs at least one source");
        }
        if o.browser_ttl.is_some_and(|d| d.0.as_secs() > 365 * 86_400) {
            p.push(format!("{at}.browser_ttl"), "at most a year (365d)");
        }
        if let Some(a) = o.max_upscale_area.filter(|a| !(1.0..=1024.0).contains(a)) {
            p.push(
                format!("{at}.max_upscale_area"),
                format!("{a} is outside 1..=1024"),
            );
        }
        for (j, s) in o.sources.iter_mut().enumerate() {
            source(s, base, &format!("{at}.sources[{j}]"), p);
        }
        out.push(o);
    }
    (out, matchers)
}

fn source(s: &mut SourceConfig, base: &Path, at: &str, p: &mut Problems) {
    match s {
        SourceConfig::Local { root, .. } => {
            *root = resolve(base, root);
            if !root.is_dir() {
                p.push(
                    format!("{at}.root"),
                    format!("folder {} does not exist", root.display()),
                );
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
                p.push(format!("{at}.bucket"), "must not be empty");
            }
            if let Some(ep) = endpoint {
                http_url(ep, format!("{at}.endpoint"), p);
            }
            if access_key_env.is_some() != secret_key_env.is_some() {
                p.push(
                    format!("{at}.access_key_env"),
                    "access_key_env and secret_key_env go together",
                );
            }
        }
        SourceConfig::Remote { url, .. } => http_url(url, format!("{at}.url"), p),
    }
}
