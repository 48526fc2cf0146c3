//! `GET /admin/config` (the running config's text, secrets masked), `POST
//! /admin/config/validate` (a whole TOML checked by `check-config`'s validator: every problem
//! with its key path, and which changed keys only a restart applies) and `POST /admin/config`
//! (the same checks, then the config swapped in for every request that starts afterwards and
//! written back to the `--config` file).
//!
//! Owns which keys a running node can change. A live change replaces the config, the security
//! state (tokens, signing keys, route rules; rate-limit counts are kept when the limits stay)
//! and the origins' sources as one, in the edge and the origin service; connections, listeners
//! and both cache tiers are untouched. A request in flight finishes with the config it
//! started with.

use super::{respond_json, Edge, Live};
use crate::config::Config;
use crate::origin::Routing;
use pingora_proxy::Session;
use serde_json::{json, Value};
use std::sync::Arc;

/// Pushes `"{section}.{field}"` for each listed field that differs between `$o` and `$n`.
macro_rules! differing {
    ($keys:ident, $o:expr, $n:expr, $section:literal, [$($field:ident),* $(,)?]) => {
        $(
            if format!("{:?}", $o.$field) != format!("{:?}", $n.$field) {
                $keys.push(concat!($section, ".", stringify!($field)));
            }
        )*
    };
}

/// Keys a running node cannot change: its listeners and connection handling, the cache tiers'
/// sizes, the transform engine, the stores, the job workers and the request log, all built once
/// at start. (`server.data_dir` is not compared: `--data-dir` overrides it.) Everything else —
/// origins, TTLs and cache policy, security, filters, content routes, external fetches,
/// `server.purge_allowed`, `keep_cache_tag`, `origin_timeout`, `debug_view` — applies live.
pub fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    differing!(
        keys,
        old.server,
        new.server,
        "server",
        [
            listen,
            tls,
            threads,
            admin_token_env,
            via_token,
            origin_socket,
            grace_period,
            write_buffer,
            read_buffer,
            work_stealing,
            json_logs,
            front_door,
            h2c,
            keepalive_timeout,
            head_timeout,
            max_connections,
            max_connections_per_ip,
        ]
    );
    differing!(
        keys,
        old.cache,
        new.cache,
        "cache",
        [memory_bytes, memory_max_object, disk_bytes, lock_timeout]
    );
    differing!(
        keys,
        old.transform,
        new.transform,
        "transform",
        [
            max_image_bytes,
            max_video_bytes,
            max_input_pixels,
            max_decode_bytes,
            max_upscale_area,
            avif,
            metadata,
            workers,
            max_per_client,
            memory_budget,
            image_timeout,
            isolate,
            worker_memory,
            worker_recycle_rss,
            worker_max_jobs,
            video_timeout,
            hls_retention,
            hls_height,
            hls_segment_secs,
            avif_background,
            avif_pending_max_age,
        ]
    );
    differing!(
        keys,
        old.store,
        new.store,
        "store",
        [
            database_url,
            database_url_env,
            max_connections,
            transforms,
            objects,
            uploads,
            max_upload_bytes,
            thumbnail_widths,
            placeholder_width,
        ]
    );
    differing!(
        keys,
        old.jobs,
        new.jobs,
        "jobs",
        [
            workers,
            sync_max_bytes,
            sync_max_duration,
            sync_slow_codec_max_duration,
            sync_max_frame_pixels,
            max_attempts,
            retry_base,
            retry_max,
            lease,
            poll_interval,
        ]
    );
    differing!(
        keys,
        old.analytics,
        new.analytics,
        "analytics",
        [enabled, retention, queue, sample, hash_client_ip]
    );
    keys
}

pub async fn get(edge: &Edge, session: &mut Session, rid: &str) {
    let live = edge.state.live();
    let v = json!({
        "file": live.cfg.file.as_ref().map(|f| f.display().to_string()),
        "toml": live.cfg.redacted_text(),
    });
    respond_json(session, rid, 200, &v).await;
}

/// A 400 listing `problems` (`[{"path","message"}]`).
fn invalid(problems: Vec<Value>) -> Value {
    json!({
        "valid": false,
        "error": {"code": "BAD_REQUEST", "message": format!("{} problem(s) in the config", problems.len())},
        "problems": problems,
    })
}

/// The body as a config the running node would run with: parsed and validated against the
/// running file's folder, with what the command line set (`--listen`, `--data-dir`) kept.
fn parse(edge: &Edge, running: &Config, body: &[u8]) -> Result<Config, Value> {
    let text = std::str::from_utf8(body).map_err(|_| {
        invalid(vec![
            json!({"path": "(syntax)", "message": "the body is not UTF-8"}),
        ])
    })?;
    let mut new = Config::parse(text, &running.base).map_err(|e| {
        invalid(
            e.0.iter()
                .map(|p| json!({"path": p.path, "message": p.message}))
                .collect(),
        )
    })?;
    if !edge.state.overrides.listen.is_empty() {
        new.server.listen = running.server.listen.clone();
    }
    new.server.data_dir = running.server.data_dir.clone();
    new.refresh_uploads_origin();
    new.file = running.file.clone();
    Ok(new)
}

pub async fn validate(edge: &Edge, session: &mut Session, rid: &str, body: &[u8]) {
    let live = edge.state.live();
    match parse(edge, &live.cfg, body) {
        Ok(new) => {
            let v = json!({"valid": true, "restart_required": restart_keys(&live.cfg, &new)});
            respond_json(session, rid, 200, &v).await;
        }
        Err(v) => respond_json(session, rid, 400, &v).await,
    }
}

/// `POST /admin/config`: 200 `{"applied": true, "written": path|null}`; 400 with the
/// problems; 409 naming the keys that need a restart (nothing applied).
pub async fn apply(edge: &Edge, session: &mut Session, rid: &str, body: &[u8]) {
    let (status, v) = apply_inner(edge, body).await;
    respond_json(session, rid, status, &v).await;
}

async fn apply_inner(edge: &Edge, body: &[u8]) -> (u16, Value) {
    let _one_at_a_time = edge.state.applying.lock().await;
    let old = edge.state.live();
    let new = match parse(edge, &old.cfg, body) {
        Ok(n) => n,
        Err(v) => return (400, v),
    };
    let restart = restart_keys(&old.cfg, &new);
    if !restart.is_empty() {
        let v = json!({
            "applied": false,
            "error": {"code": "CONFLICT", "message": format!(
                "{} cannot change on a running node: restart it (media-edge reload) to apply",
                restart.join(", "))},
            "restart_required": restart,
        });
        return (409, v);
    }
    let problem = |path: &str, message: String| {
        (
            400,
            invalid(vec![json!({"path": path, "message": message})]),
        )
    };
    let mut security =
        match super::security::Security::new(&new.security, &new.filters.ratelimit, &new.base) {
            Ok(s) => s,
            Err(e) => return problem("security", e.to_string()),
        };
    security.keep_counts(&old.security);
    let purge_allowed = match filters::CidrSet::parse(&new.server.purge_allowed) {
        Ok(c) => c,
        Err(e) => return problem("server.purge_allowed", format!("{e:?}")),
    };
    let new = Arc::new(new);
    let routing = match Routing::build(new.clone()).await {
        Ok(r) => r,
        Err(e) => return problem("origins", e.to_string()),
    };
    let written = match &new.file {
        Some(file) => match write_atomically(file, body).await {
            Ok(()) => Some(file.display().to_string()),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "writing the config back");
                let v = json!({
                    "applied": false,
                    "error": {"code": "INTERNAL", "message": format!(
                        "the config is valid but could not be written to {}: {e}; nothing applied",
                        file.display())},
                });
                return (500, v);
            }
        },
        None => None,
    };
    edge.state
        .purge
        .set_retention(new.cache.max_ttl.0.saturating_mul(3));
    edge.state.origin.set_routing(routing);
    edge.state.set_live(Live {
        cfg: new,
        security,
        purge_allowed,
    });
    crate::metrics::METRICS.config_applied.inc();
    tracing::info!(written = ?written, "config applied");
    (200, json!({"applied": true, "written": written}))
}

/// Replaces `file` with `body`: written beside it, flushed to disk, renamed over it, the
/// folder flushed (a crash leaves the old file or the new one, never a torn one).
async fn write_atomically(file: &std::path::Path, body: &[u8]) -> std::io::Result<()> {
    let file = file.to_path_buf();
    let body = body.to_vec();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        let name = file.file_name().ok_or(std::io::ErrorKind::InvalidInput)?;
        let aside = dir.join(format!(
            ".{}.{}.new",
            name.to_string_lossy(),
            std::process::id()
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&aside)?;
            if let Ok(meta) = std::fs::metadata(&file) {
                f.set_permissions(meta.permissions())?;
            }
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&aside, &file)?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&aside);
        }
        result
    })
    .await
    .map_err(std::io::Error::other)?
}
