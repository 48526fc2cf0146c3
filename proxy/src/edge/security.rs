//! Edge security: who the client is, whether it may ask, and how often.
//!
//! Owns the client IP (forwarding headers believed only from `trusted_proxies`),
//! `require_cloudflare_edge`, per-route-class authorization (signed URL, bearer token,
//! either, or nothing) and per-client, per-class rate limits with `pingora-limits` (a
//! count-min sketch of fixed size: memory stays bounded under a flood of distinct IPs).
//! The rules themselves (signature format, IP parsing, classes) live in `filters`; this
//! module holds the secrets and the counters. No secret ever reaches a log or an error.

use crate::config::{AuthRule, SecurityConfig};
use crate::error::{ApiError, ErrorCode};
use filters::{CidrSet, OperationClass, RateLimitConfig};
use pingora_limits::rate::Rate;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A configured bearer token.
pub struct Token {
    secret: String,
    pub tenant: String,
    pub scopes: Vec<String>,
}

/// Who made an authorized request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    Signed,
    Tenant { name: String, scopes: Vec<String> },
}

pub struct Security {
    keys: Vec<(String, Vec<u8>)>,
    tokens: Vec<Token>,
    pub trusted: CidrSet,
    pub admin_networks: CidrSet,
    require_cloudflare_edge: bool,
    cfg: SecurityConfig,
    limits: RateLimitConfig,
    /// Shared with the security state a live config change replaces, when the limits stay.
    limiter: std::sync::Arc<Rate>,
}

const WINDOW: Duration = Duration::from_secs(60);

/// Why the security state could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("security.tokens[{index}]: env var {var} is not set")]
    TokenEnvUnset { index: usize, var: String },
    #[error("trusted_proxies_file {}: {source}", path.display())]
    TrustedProxiesFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: {errors:?}")]
    Networks {
        key: &'static str,
        errors: Vec<filters::CidrError>,
    },
}

/// Why a URL could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no signing key {0:?} in security.signing_keys")]
    NoKey(String),
    #[error("the signing key's secret env var is not set (MEDIA_EDGE_SECRET by default)")]
    SecretUnset,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Security {
    /// Builds the security state; secrets come from the env vars the config names
    /// (a signing key whose variable is unset is skipped; a token's is an error).
    pub fn new(
        cfg: &SecurityConfig,
        limits: &RateLimitConfig,
        base: &std::path::Path,
    ) -> Result<Security, SecurityError> {
        let mut keys = Vec::new();
        for k in &cfg.signing_keys {
            if let Ok(secret) = std::env::var(&k.secret_env) {
                if !secret.is_empty() {
                    keys.push((k.id.clone(), secret.into_bytes()));
                }
            }
        }
        let mut tokens = Vec::new();
        for (i, t) in cfg.tokens.iter().enumerate() {
            let secret = std::env::var(&t.token_env).map_err(|_| SecurityError::TokenEnvUnset {
                index: i,
                var: t.token_env.clone(),
            })?;
            tokens.push(Token {
                secret,
                tenant: t.tenant.clone(),
                scopes: t.scopes.clone(),
            });
        }
        let mut trusted: Vec<String> = cfg.trusted_proxies.clone();
        if let Some(f) = &cfg.trusted_proxies_file {
            let f = if f.is_relative() {
                base.join(f)
            } else {
                f.clone()
            };
            let text = std::fs::read_to_string(&f).map_err(|source| {
                SecurityError::TrustedProxiesFile {
                    path: f.clone(),
                    source,
                }
            })?;
            trusted.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
        }
        let networks = |key, items: &[String]| {
            CidrSet::parse(items).map_err(|errors| SecurityError::Networks { key, errors })
        };
        let trusted = networks("trusted proxies", &trusted)?;
        let admin_networks = networks("admin_networks", &cfg.admin_networks)?;
        Ok(Security {
            keys,
            tokens,
            trusted,
            admin_networks,
            require_cloudflare_edge: cfg.require_cloudflare_edge,
            cfg: cfg.clone(),
            limits: limits.clone(),
            limiter: std::sync::Arc::new(Rate::new(WINDOW)),
        })
    }

    /// The client address for limits and logs.
    /// Keeps `old`'s rate-limit counts when the limits are the same (a config change that
    /// does not touch `[filters.ratelimit]` does not reset anyone's window).
    pub fn keep_counts(&mut self, old: &Security) {
        if format!("{:?}", self.limits) == format!("{:?}", old.limits) {
            self.limiter = old.limiter.clone();
        }
    }

    pub fn client_ip(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        filters::client_ip::resolve(peer, headers, &self.trusted)
    }

    /// With `require_cloudflare_edge`, only trusted proxies may connect (health and metrics
    /// also from `admin_networks`).
    pub fn check_peer(&self, peer: IpAddr, path: &str) -> Result<(), ApiError> {
        if !self.require_cloudflare_edge || self.trusted.contains(peer) {
            return Ok(());
        }
        if (path == "/health" || path == "/metrics") && self.admin_networks.contains(peer) {
            return Ok(());
        }
        Err(ApiError::forbidden(
            "this node only accepts requests through its CDN edge",
        ))
    }

    fn rule(&self, class: OperationClass) -> AuthRule {
        let a = &self.cfg.auth;
        match class {
            OperationClass::Original => a.original,
            OperationClass::Image => a.image,
            OperationClass::Video => a.video,
            OperationClass::Thumbnail => a.thumbnail,
            OperationClass::Metadata => a.metadata,
            OperationClass::External => a.external,
            OperationClass::Upload => a.upload,
        }
    }

    fn token(&self, authorization: Option<&str>) -> Option<&Token> {
        let presented = authorization?.strip_prefix("Bearer ")?.trim();
        self.tokens
            .iter()
            .find(|t| crate::edge::admin::secret_eq(t.secret.as_bytes(), presented.as_bytes()))
    }

    /// Checks the rule — the origin's when it sets one, else the route class's — against the
    /// request's signature and bearer token.
    pub fn authorize(
        &self,
        class: OperationClass,
        path_and_query: &str,
        authorization: Option<&str>,
        origin_rule: Option<AuthRule>,
    ) -> Result<Principal, ApiError> {
        let rule = origin_rule.unwrap_or_else(|| self.rule(class));
        let token = || {
            self.token(authorization).map(|t| Principal::Tenant {
                name: t.tenant.clone(),
                scopes: t.scopes.clone(),
            })
        };
        let signature = || -> Result<Principal, ApiError> {
            if self.keys.is_empty() {
                return Err(ApiError::forbidden(
                    "signed URLs are required but no signing key is configured",
                ));
            }
            let keys: Vec<(&str, &[u8])> = self
                .keys
                .iter()
                .map(|(id, s)| (id.as_str(), s.as_slice()))
                .collect();
            filters::signature::verify(path_and_query, unix_now(), &keys)
                .map(|_| Principal::Signed)
                .map_err(|e| {
                    let msg = match &e {
                        filters::SignatureError::Expired { .. } => "URL expired".to_string(),
                        other => other.to_string(),
                    };
                    ApiError::new(e.status(), e.code(), msg)
                })
        };
        match rule {
            AuthRule::None => Ok(token().unwrap_or(Principal::Anonymous)),
            AuthRule::Signature => signature(),
            AuthRule::Token => match (authorization, token()) {
                (_, Some(p)) => {
                    // Uploads need the `upload` scope; everything else `read` (or `admin`).
                    let need = if class == OperationClass::Upload {
                        "upload"
                    } else {
                        "read"
                    };
                    match &p {
                        Principal::Tenant { scopes, .. }
                            if scopes.iter().any(|s| s == need || s == "admin") =>
                        {
                            Ok(p)
                        }
                        _ => Err(ApiError::forbidden(format!(
                            "token lacks the {need:?} scope"
                        ))),
                    }
                }
                (None, None) => Err(ApiError::unauthorized("a bearer token is required")),
                (Some(_), None) => Err(ApiError::forbidden("bearer token not accepted")),
            },
            AuthRule::Either => match token() {
                Some(p) => Ok(p),
                None if authorization.is_some() && !path_and_query.contains("signature=") => {
                    Err(ApiError::forbidden("bearer token not accepted"))
                }
                None => signature(),
            },
        }
    }

    /// The tenant of a request's bearer token when it may read (`read`, `upload` or
    /// `admin` scope).
    pub fn reader_tenant(&self, authorization: Option<&str>) -> Option<&str> {
        self.token(authorization)
            .filter(|t| {
                t.scopes
                    .iter()
                    .any(|s| matches!(s.as_str(), "read" | "upload" | "admin"))
            })
            .map(|t| t.tenant.as_str())
    }

    /// Whether `path_and_query` carries a valid, unexpired signature of a configured key.
    pub fn signed(&self, path_and_query: &str) -> bool {
        let keys: Vec<(&str, &[u8])> = self
            .keys
            .iter()
            .map(|(id, s)| (id.as_str(), s.as_slice()))
            .collect();
        !keys.is_empty() && filters::signature::verify(path_and_query, unix_now(), &keys).is_ok()
    }

    /// Whether any configured token carries `scope`.
    pub fn has_scope_tokens(&self, scope: &str) -> bool {
        self.tokens
            .iter()
            .any(|t| t.scopes.iter().any(|s| s == scope))
    }

    /// The tenant of `presented` when it is a configured token carrying `scope`.
    pub fn tenant_with_scope(&self, presented: &str, scope: &str) -> Option<&str> {
        self.tokens
            .iter()
            .find(|t| crate::edge::admin::secret_eq(t.secret.as_bytes(), presented.as_bytes()))
            .filter(|t| t.scopes.iter().any(|s| s == scope))
            .map(|t| t.tenant.as_str())
    }

    /// Whether `presented` is a configured token carrying `scope`.
    /// The secrets of the tokens with `scope`.
    pub fn tokens_with_scope<'a>(&'a self, scope: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tokens
            .iter()
            .filter(move |t| t.scopes.iter().any(|s| s == scope))
            .map(|t| t.secret.as_str())
    }

    pub fn token_has_scope(&self, presented: &str, scope: &str) -> bool {
        self.tokens
            .iter()
            .find(|t| crate::edge::admin::secret_eq(t.secret.as_bytes(), presented.as_bytes()))
            .is_some_and(|t| t.scopes.iter().any(|s| s == scope))
    }

    /// Counts one request of `class` from `ip`; over the limit → 429 with `retry_after`.
    pub fn rate_check(&self, class: OperationClass, ip: IpAddr) -> Result<(), ApiError> {
        let Some(limit) = self.limits.limit_for(class) else {
            return Ok(());
        };
        let key = self.limits.bucket_key(class, ip);
        let count = self.limiter.observe(&key, 1);
        if count <= limit as isize {
            return Ok(());
        }
        let fraction = self
            .limiter
            .rate_with(&key, |r| r.current_interval_fraction);
        let retry_after = ((1.0 - fraction) * WINDOW.as_secs_f64()).ceil().max(1.0) as u64;
        let mut e = ApiError::new(
            429,
            ErrorCode::RateLimited,
            format!("over {limit} {} requests per minute", class.as_str()),
        );
        e.retry_after = Some(retry_after);
        Err(e)
    }

    /// Whether cache hits are counted too (default: only requests that reach the origin).
    pub fn limit_hits(&self) -> bool {
        self.cfg.rate_limit_hits
    }
}

/// Signs `path_and_query` with a configured key (by id, else the first whose secret is set).
/// The key id is added as `kid` when several keys are configured.
pub fn sign_url(
    cfg: &SecurityConfig,
    path_and_query: &str,
    expires_in: u64,
    key: Option<&str>,
) -> Result<String, SignError> {
    let candidates: Vec<_> = cfg
        .signing_keys
        .iter()
        .filter(|k| key.is_none_or(|id| k.id == id))
        .collect();
    if candidates.is_empty() {
        return Err(SignError::NoKey(key.unwrap_or("").to_string()));
    }
    for k in candidates {
        if let Ok(secret) = std::env::var(&k.secret_env) {
            if secret.is_empty() {
                continue;
            }
            let kid = (cfg.signing_keys.len() > 1).then_some(k.id.as_str());
            return Ok(filters::signature::sign(
                path_and_query,
                unix_now() + expires_in,
                secret.as_bytes(),
                kid,
            ));
        }
    }
    Err(SignError::SecretUnset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteAuth, SigningKey};

    fn sec(auth: RouteAuth, limits: RateLimitConfig) -> Security {
        // Set once: other tests of this binary read the environment from other threads.
        static ENV: std::sync::Once = std::sync::Once::new();
        ENV.call_once(|| {
            std::env::set_var("SEC_TEST_KEY_A", "secret-a");
            std::env::set_var("SEC_TEST_KEY_B", "secret-b");
        });
        let cfg = SecurityConfig {
            signing_keys: vec![
                SigningKey {
                    id: "a".into(),
                    secret_env: "SEC_TEST_KEY_A".into(),
                },
                SigningKey {
                    id: "b".into(),
                    secret_env: "SEC_TEST_KEY_B".into(),
                },
            ],
            auth,
            ..SecurityConfig::default()
        };
        Security::new(&cfg, &limits, std::path::Path::new(".")).unwrap()
    }

    #[test]
    fn signatures_by_route_class() {
        let auth = RouteAuth {
            image: AuthRule::Signature,
            ..RouteAuth::default()
        };
        let s = sec(auth, RateLimitConfig::default());
        let far = unix_now() + 3600;
        let url = filters::signature::sign("/img/a.jpg?width=100", far, b"secret-b", None);
        assert_eq!(
            s.authorize(OperationClass::Image, &url, None, None),
            Ok(Principal::Signed)
        );
        let tampered = url.replace("width=100", "width=200");
        assert_eq!(
            s.authorize(OperationClass::Image, &tampered, None, None)
                .unwrap_err()
                .status,
            403
        );
        let missing = s
            .authorize(OperationClass::Image, "/img/a.jpg?width=100", None, None)
            .unwrap_err();
        assert_eq!(missing.status, 401);
        let old = filters::signature::sign("/img/a.jpg", 1000, b"secret-a", None);
        let e = s
            .authorize(OperationClass::Image, &old, None, None)
            .unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (403, "URL expired"));
        assert_eq!(
            s.authorize(OperationClass::Original, "/img/a.jpg", None, None),
            Ok(Principal::Anonymous)
        );
    }

    #[test]
    fn rate_limits_answer_429_with_retry_after() {
        let mut limits = RateLimitConfig::default();
        limits.per_minute.image = Some(3);
        let s = sec(RouteAuth::default(), limits);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..3 {
            assert!(s.rate_check(OperationClass::Image, ip).is_ok());
        }
        let e = s.rate_check(OperationClass::Image, ip).unwrap_err();
        assert_eq!(e.status, 429);
        assert!(e.retry_after.is_some_and(|r| (1..=60).contains(&r)));
        assert!(s
            .rate_check(OperationClass::Image, "203.0.113.10".parse().unwrap())
            .is_ok());
        assert!(
            s.rate_check(OperationClass::Original, ip).is_ok(),
            "originals unlimited by default"
        );
    }
}
