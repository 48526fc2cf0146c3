//! Cloudflare's purge API, drop-in: `POST /client/v4/zones/{zone_id}/purge_cache` (and
//! `/invalidate_cache`, answered as a purge: the node never serves what it was told is
//! outdated) with
//! Cloudflare's bodies and response envelope, so purge tooling written against Cloudflare
//! (its SDKs, `curl` scripts, CI steps) works by changing the base URL.
//!
//! - `files`: URLs as strings or `{"url", "headers"}` objects → key purges (the node's keys
//!   never hold the host: the URL's path and query are resolved as a request would be);
//! - `tags` → tag purges; `prefixes` (`www.example.com/path/`, host optional) → path-prefix
//!   purges; `hosts` and `purge_everything` → everything (the node serves one key space).
//!
//! Authentication is the admin API's (the admin token, or a token with the `admin` scope,
//! as `Authorization: Bearer`). Answers: `{"success", "errors", "messages", "result"}`, with
//! `result.id` the zone id on success and Cloudflare's error codes on failure.

use super::admin::{apply_purge, bearer, is_admin, read_body, MAX_PURGE_ITEMS};
use super::{respond_json, Edge};
use pingora_proxy::Session;
use serde::Deserialize;
use serde_json::{json, Value};

pub const PREFIX: &str = "/client/v4/";

#[derive(Deserialize)]
#[serde(untagged)]
enum File {
    Url(String),
    WithHeaders {
        url: String,
        #[allow(dead_code)]
        #[serde(default)]
        headers: serde_json::Map<String, Value>,
    },
}

#[derive(Deserialize, Default)]
struct Body {
    #[serde(default)]
    files: Vec<File>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    purge_everything: bool,
}

/// A failure in Cloudflare's envelope.
async fn fail(session: &mut Session, rid: &str, status: u16, code: u32, message: &str) {
    let v = json!({
        "success": false,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": null,
    });
    respond_json(session, rid, status, &v).await;
}

/// A Cloudflare prefix (`www.example.com/a/`, `https://host/a/` or `/a/`) as a path prefix.
pub fn prefix_path(p: &str) -> String {
    let p = p
        .strip_prefix("https://")
        .or_else(|| p.strip_prefix("http://"))
        .unwrap_or(p);
    if p.starts_with('/') {
        return p.to_string();
    }
    match p.find('/') {
        Some(i) => p[i..].to_string(),
        None => "/".to_string(),
    }
}

/// A zone id as Cloudflare spells them (32 hex digits), or any short identifier.
fn valid_zone(z: &str) -> bool {
    (1..=64).contains(&z.len()) && z.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub async fn handle(edge: &Edge, session: &mut Session, rid: &str) {
    let path = session.req_header().uri.path().to_string();
    let method = session.req_header().method.clone();
    let zone = path
        .strip_prefix("/client/v4/zones/")
        .and_then(|r| {
            r.strip_suffix("/purge_cache")
                .or_else(|| r.strip_suffix("/invalidate_cache"))
        })
        .filter(|z| valid_zone(z))
        .map(str::to_string);
    let Some(zone) = zone else {
        return fail(session, rid, 404, 7003, "No route for the URI").await;
    };
    if method != http::Method::POST {
        return fail(session, rid, 405, 10405, "Method not allowed").await;
    }
    let admin_on =
        edge.state.admin_token.is_some() || edge.state.live().security.has_scope_tokens("admin");
    if !admin_on || bearer(session).is_none() {
        return fail(session, rid, 401, 10000, "Authentication error").await;
    }
    if !is_admin(edge, session) {
        return fail(session, rid, 403, 10000, "Authentication error").await;
    }
    let raw = match read_body(session).await {
        Ok(b) => b,
        Err(e) => return fail(session, rid, e.status, 1012, &e.message).await,
    };
    let body: Body = match serde_json::from_slice(&raw) {
        Ok(b) => b,
        Err(e) => {
            let m = format!("Invalid JSON body: {e}");
            return fail(session, rid, 400, 1012, &m).await;
        }
    };
    let everything = body.purge_everything || !body.hosts.is_empty();
    let keys: Vec<String> = body
        .files
        .into_iter()
        .map(|f| match f {
            File::Url(u) | File::WithHeaders { url: u, .. } => u,
        })
        .collect();
    let mut prefixes: Vec<String> = body.prefixes.iter().map(|p| prefix_path(p)).collect();
    if everything {
        prefixes.push("/".into());
    }
    let n = keys.len() + body.tags.len() + prefixes.len();
    if n == 0 {
        let m = "Request must contain one of \"purge_everything\", \"files\", \"tags\", \"hosts\" or \"prefixes\"";
        return fail(session, rid, 400, 1012, m).await;
    }
    if n > MAX_PURGE_ITEMS {
        let m = format!("at most {MAX_PURGE_ITEMS} items a request");
        return fail(session, rid, 400, 1012, &m).await;
    }
    let (_, _, persisted) = apply_purge(edge, &body.tags, &keys, &prefixes).await;
    if !persisted {
        tracing::warn!("a Cloudflare-API purge was applied but not written to the purge log");
    }
    let v = json!({
        "success": true,
        "errors": [],
        "messages": [],
        "result": {"id": zone},
    });
    respond_json(session, rid, 200, &v).await;
}

#[cfg(test)]
mod tests {
    use super::prefix_path;

    #[test]
    fn prefixes_lose_their_host() {
        assert_eq!(prefix_path("www.example.com/images/"), "/images/");
        assert_eq!(prefix_path("https://www.example.com/a/b"), "/a/b");
        assert_eq!(prefix_path("/already/a/path"), "/already/a/path");
        assert_eq!(prefix_path("www.example.com"), "/");
    }
}
