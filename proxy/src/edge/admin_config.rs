//! `GET /admin/config` (the running config's text, secrets masked) and `POST
//! /admin/config/validate` (a whole TOML checked by `check-config`'s validator: every
//! problem with its key path, and which changed keys only a restart applies).

use super::{respond_json, Edge};
use crate::config::Config;
use pingora_proxy::Session;
use serde_json::json;

/// Keys a running node cannot change: its listeners, threads and stores (`server.data_dir`
/// is not compared: `--data-dir` overrides it).
pub fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let mut keys = Vec::new();
    let mut differs = |key: &'static str, a: String, b: String| {
        if a != b {
            keys.push(key);
        }
    };
    differs(
        "server.listen",
        format!("{:?}", o.listen),
        format!("{:?}", n.listen),
    );
    differs("server.tls", format!("{:?}", o.tls), format!("{:?}", n.tls));
    differs(
        "server.threads",
        o.threads.to_string(),
        n.threads.to_string(),
    );
    differs(
        "server.front_door",
        o.front_door.to_string(),
        n.front_door.to_string(),
    );
    differs("server.h2c", o.h2c.to_string(), n.h2c.to_string());
    let (o, n) = (&old.store, &new.store);
    differs(
        "store.database_url",
        o.database_url.clone(),
        n.database_url.clone(),
    );
    differs(
        "store.objects",
        format!("{:?}", o.objects),
        format!("{:?}", n.objects),
    );
    differs(
        "store.uploads",
        format!("{:?}", o.uploads),
        format!("{:?}", n.uploads),
    );
    differs(
        "jobs.workers",
        old.jobs.workers.to_string(),
        new.jobs.workers.to_string(),
    );
    keys
}

pub async fn get(edge: &Edge, session: &mut Session, rid: &str) {
    let cfg = &edge.state.cfg;
    let v = json!({
        "file": cfg.file.as_ref().map(|f| f.display().to_string()),
        "toml": cfg.redacted_text(),
    });
    respond_json(session, rid, 200, &v).await;
}

pub async fn validate(edge: &Edge, session: &mut Session, rid: &str, body: &[u8]) {
    let Ok(text) = std::str::from_utf8(body) else {
        let v = json!({"valid": false, "problems": [{"path": "(syntax)", "message": "the body is not UTF-8"}]});
        return respond_json(session, rid, 400, &v).await;
    };
    let cfg = &edge.state.cfg;
    match Config::parse(text, &cfg.base) {
        Ok(new) => {
            let v = json!({"valid": true, "restart_required": restart_keys(cfg, &new)});
            respond_json(session, rid, 200, &v).await;
        }
        Err(e) => {
            let problems: Vec<_> =
                e.0.iter()
                    .map(|p| json!({"path": p.path, "message": p.message}))
                    .collect();
            let v = json!({
                "valid": false,
                "error": {"code": "BAD_REQUEST", "message": format!("{} problem(s) in the config", problems.len())},
                "problems": problems,
            });
            respond_json(session, rid, 400, &v).await;
        }
    }
}
