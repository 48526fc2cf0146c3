//! The admin dashboard at `/admin/dashboard`: its pages and assets (built into the binary, no
//! external resources), the login form and the session cookie its API calls carry.
//!
//! Owns the session: a cookie `me_session={expiry}.{mac}`, the MAC an HMAC-SHA256 of the
//! expiry keyed by the admin token that logged in (the env token or a token with the `admin`
//! scope), so a session survives restarts and upgrades and ends when its token is removed.
//! 24 h, `HttpOnly`, `SameSite=Strict`, `Secure` on TLS, `Path=/`. A cookie-authenticated
//! request that is not a GET/HEAD must also carry `X-Dashboard: 1` (a header no cross-site
//! form can send). The pages are the dashboard's own script's: the API it calls is the admin
//! API ([`super::admin`]).

use super::admin::{is_admin_token, read_body};
use super::respond::{own_head, respond};
use super::Edge;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use pingora_proxy::Session;
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

pub const PREFIX: &str = "/admin/dashboard";
const COOKIE: &str = "me_session";
const SESSION_SECS: u64 = 24 * 3600;

const INDEX: &str = include_str!("../../assets/dashboard/index.html");
const LOGIN: &str = include_str!("../../assets/dashboard/login.html");
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../../assets/dashboard/app.css");

/// Only the node's own script, styles and data: the pages load nothing from elsewhere.
const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(token: &str, expiry: u64) -> String {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(token.as_bytes())
        .expect("HMAC takes a key of any length");
    m.update(format!("media-edge dashboard session {expiry}").as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// The cookie value of a session of `token` that ends at `expiry`.
pub fn session_value(token: &str, expiry: u64) -> String {
    format!("{expiry}.{}", mac(token, expiry))
}

/// Whether `value` is a live session of one of `tokens` at `now`.
pub fn session_valid<'a>(value: &str, tokens: impl IntoIterator<Item = &'a str>, now: u64) -> bool {
    let Some((expiry, presented)) = value.split_once('.') else {
        return false;
    };
    let Ok(expiry) = expiry.parse::<u64>() else {
        return false;
    };
    if expiry <= now || expiry > now + SESSION_SECS {
        return false;
    }
    tokens
        .into_iter()
        .any(|t| super::admin::secret_eq(mac(t, expiry).as_bytes(), presented.as_bytes()))
}

/// The `me_session` cookie of the request, if any.
fn cookie(session: &Session) -> Option<&str> {
    session
        .req_header()
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Whether the request carries a live dashboard session (and, unless it only reads, the
/// dashboard's `X-Dashboard` header).
pub fn has_session(edge: &Edge, session: &Session) -> bool {
    let Some(value) = cookie(session) else {
        return false;
    };
    let m = &session.req_header().method;
    let reads = *m == http::Method::GET || *m == http::Method::HEAD;
    if !reads && !session.req_header().headers.contains_key("x-dashboard") {
        return false;
    }
    let live = edge.state.live();
    let tokens = edge
        .state
        .admin_token
        .as_deref()
        .into_iter()
        .chain(live.security.tokens_with_scope("admin"));
    session_valid(value, tokens, now())
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

async fn page(
    session: &mut Session,
    rid: &str,
    status: u16,
    ctype: &str,
    body: &'static str,
    extra: &[(&str, String)],
) {
    let body = Bytes::from_static(body.as_bytes());
    let Some(mut resp) = own_head(status, ctype, body.len(), Some(rid)) else {
        return;
    };
    let _ = resp.insert_header("content-security-policy", CSP);
    let _ = resp.insert_header("x-frame-options", "DENY");
    let _ = resp.insert_header("x-content-type-options", "nosniff");
    let _ = resp.insert_header("referrer-policy", "no-referrer");
    for (k, v) in extra {
        let _ = resp.append_header(k.to_string(), v.as_str());
    }
    respond(session, resp, body).await;
}

async fn redirect(session: &mut Session, rid: &str, to: &str, cookie: Option<String>) {
    let mut extra = vec![("location", to.to_string())];
    if let Some(c) = cookie {
        extra.push(("set-cookie", c));
    }
    page(session, rid, 303, "text/plain; charset=utf-8", "", &extra).await;
}

/// Answers `/admin/dashboard` and below; `false` when the path is not the dashboard's.
pub async fn handle(edge: &Edge, session: &mut Session, rid: &str) -> bool {
    let path = session.req_header().uri.path().to_string();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return false;
    };
    let method = session.req_header().method.clone();
    let secure = if is_tls(session) { "; Secure" } else { "" };
    match (method.as_str(), rest) {
        ("GET" | "HEAD", "" | "/") => {
            if has_session(edge, session) {
                page(session, rid, 200, "text/html; charset=utf-8", INDEX, &[]).await;
            } else {
                page(session, rid, 200, "text/html; charset=utf-8", LOGIN, &[]).await;
            }
        }
        ("GET" | "HEAD", "/app.js") => {
            page(
                session,
                rid,
                200,
                "text/javascript; charset=utf-8",
                APP_JS,
                &[],
            )
            .await
        }
        ("GET" | "HEAD", "/app.css") => {
            page(session, rid, 200, "text/css; charset=utf-8", APP_CSS, &[]).await
        }
        ("POST", "/login") => {
            let body = read_body(session).await.unwrap_or_default();
            let token = form_urlencoded::parse(&body)
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            if !token.is_empty() && is_admin_token(edge, &token) {
                let expiry = now() + SESSION_SECS;
                let c = format!(
                    "{COOKIE}={}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; SameSite=Strict{secure}",
                    session_value(&token, expiry)
                );
                tracing::info!(request_id = rid, "dashboard login");
                redirect(session, rid, PREFIX, Some(c)).await;
            } else {
                tracing::warn!(request_id = rid, "dashboard login refused");
                redirect(session, rid, &format!("{PREFIX}?error=1"), None).await;
            }
        }
        ("POST", "/logout") => {
            let c = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}");
            redirect(session, rid, PREFIX, Some(c)).await;
        }
        _ => {
            let e = crate::error::ApiError::not_found(format!("{path} not found"));
            super::respond_error(session, rid, &e).await;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bound_to_their_token_and_expire() {
        let now = 1_800_000_000;
        let v = session_value("secret-a", now + 100);
        assert!(session_valid(&v, ["secret-a"], now));
        assert!(session_valid(&v, ["other", "secret-a"], now));
        assert!(!session_valid(&v, ["secret-b"], now), "another token");
        assert!(!session_valid(&v, [] as [&str; 0], now), "token removed");
        assert!(!session_valid(&v, ["secret-a"], now + 100), "expired");
        // An expiry pushed past 24 h, or a tampered one, does not verify.
        let far = session_value("secret-a", now + SESSION_SECS + 10);
        assert!(!session_valid(&far, ["secret-a"], now));
        let (_, m) = v.split_once('.').unwrap();
        assert!(!session_valid(
            &format!("{}.{m}", now + 200),
            ["secret-a"],
            now
        ));
        for junk in ["", ".", "x.y", "123", "123.", &format!("{}.zz", now + 5)] {
            assert!(!session_valid(junk, ["secret-a"], now), "{junk:?}");
        }
    }
}
