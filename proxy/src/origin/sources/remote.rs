//! The remote HTTP(S) source: an operator-configured base URL, optional auth from env vars.
//!
//! 404/410 fall through to the next source, 5xx and timeouts too; other statuses (200, 206,
//! 304, 3xx, other 4xx) are answered as the remote gave them. Secrets never reach a log line.

use super::{env_var, BuildError, FetchRequest, Fetched, Source, SourceError};
use crate::config::{RemoteAuth, SourceConfig};
use async_trait::async_trait;
use futures::TryStreamExt;
use std::time::{Duration, SystemTime};

pub struct RemoteSource {
    client: reqwest::Client,
    base: String,
    auth: ResolvedAuth,
    timeout: Duration,
}

enum ResolvedAuth {
    None,
    Header(String, String),
    Sigv4 {
        identity: aws_smithy_runtime_api::client::identity::Identity,
        region: String,
        service: String,
    },
}

const PASS_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-range",
    "etag",
    "last-modified",
    "cache-control",
    "expires",
    "cache-tag",
    "vary",
    "content-encoding",
    "location",
];

impl RemoteSource {
    pub fn new(cfg: &SourceConfig) -> Result<Self, BuildError> {
        let SourceConfig::Remote {
            url,
            auth,
            timeout,
            connect_timeout,
            ..
        } = cfg
        else {
            return Err(BuildError::WrongKind("a remote source"));
        };
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout.0)
            .read_timeout(timeout.0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(BuildError::HttpClient)?;
        let auth = match auth {
            RemoteAuth::None => ResolvedAuth::None,
            RemoteAuth::Bearer { token_env } => ResolvedAuth::Header(
                "authorization".into(),
                format!("Bearer {}", env_var(token_env, "token_env")?),
            ),
            RemoteAuth::Header { name, value_env } => {
                ResolvedAuth::Header(name.clone(), env_var(value_env, "value_env")?)
            }
            RemoteAuth::AwsSigv4 {
                access_key_env,
                secret_key_env,
                region,
                service,
            } => {
                let creds = aws_credential_types::Credentials::new(
                    env_var(access_key_env, "access_key_env")?,
                    env_var(secret_key_env, "secret_key_env")?,
                    None,
                    None,
                    "media-edge-config",
                );
                ResolvedAuth::Sigv4 {
                    identity: creds.into(),
                    region: region.clone(),
                    service: service.clone(),
                }
            }
        };
        Ok(RemoteSource {
            client,
            base: url.clone(),
            auth,
            timeout: timeout.0,
        })
    }

    fn url_for(&self, path: &str) -> String {
        let base = self.base.trim_end_matches('/');
        format!("{base}/{}", path.trim_start_matches('/'))
    }
}

/// A request that could not be signed: the stage that failed and why.
#[derive(Debug, thiserror::Error)]
#[error("sigv4 {stage}: {source}")]
struct SigningError {
    stage: &'static str,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl SigningError {
    fn new(stage: &'static str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SigningError {
            stage,
            source: e.into(),
        }
    }
}

fn sigv4_headers(
    identity: &aws_smithy_runtime_api::client::identity::Identity,
    region: &str,
    service: &str,
    url: &str,
    headers: &[(String, String)],
) -> Result<Vec<(String, String)>, SigningError> {
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
    };
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| SigningError::new("params", e))?
        .into();
    let signable = SignableRequest::new(
        "GET",
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::UnsignedPayload,
    )
    .map_err(|e| SigningError::new("request", e))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| SigningError::new("sign", e))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[async_trait]
impl Source for RemoteSource {
    fn kind(&self) -> &'static str {
        "remote"
    }

    async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, SourceError> {
        // Lexical traversal check; the path stays percent-encoded for the remote.
        super::clean_path(&req.path)?;
        let url = self.url_for(&req.path);
        let mut headers: Vec<(String, String)> = Vec::new();
        if let Some(r) = &req.range {
            headers.push(("range".into(), r.clone()));
        }
        if let Some(v) = &req.if_none_match {
            headers.push(("if-none-match".into(), v.clone()));
        }
        if let Some(v) = &req.if_modified_since {
            headers.push(("if-modified-since".into(), v.clone()));
        }
        match &self.auth {
            ResolvedAuth::None => {}
            ResolvedAuth::Header(k, v) => headers.push((k.clone(), v.clone())),
            ResolvedAuth::Sigv4 {
                identity,
                region,
                service,
            } => {
                let signed = sigv4_headers(identity, region, service, &url, &headers)
                    .map_err(|e| SourceError::Upstream(e.to_string()))?;
                headers.extend(signed);
            }
        }
        let mut rb = if req.head {
            self.client.head(&url)
        } else {
            self.client.get(&url)
        };
        for (k, v) in &headers {
            rb = rb.header(k, v);
        }
        let resp = match tokio::time::timeout(self.timeout, rb.send()).await {
            Err(_) => return Err(SourceError::Timeout(url_for_log(&url))),
            Ok(Err(e)) if e.is_timeout() => return Err(SourceError::Timeout(url_for_log(&url))),
            Ok(Err(e)) => {
                return Err(SourceError::Upstream(format!(
                    "{}: {}",
                    url_for_log(&url),
                    e.without_url()
                )))
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        match status {
            404 | 410 => return Err(SourceError::NotFound(url_for_log(&url))),
            416 => {
                let size = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit('/').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                return Err(SourceError::RangeNotSatisfiable(size));
            }
            s if s >= 500 => {
                return Err(SourceError::Upstream(format!(
                    "{}: status {s}",
                    url_for_log(&url)
                )))
            }
            _ => {}
        }
        let out_headers = PASS_HEADERS
            .iter()
            .filter_map(|h| {
                resp.headers()
                    .get(*h)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| (h.to_string(), v.to_string()))
            })
            .collect();
        if req.head || status == 304 {
            return Ok(Fetched {
                status,
                headers: out_headers,
                body: None,
            });
        }
        let stream = resp.bytes_stream().map_err(std::io::Error::other);
        Ok(Fetched {
            status,
            headers: out_headers,
            body: Some(Box::pin(stream)),
        })
    }
}

/// A URL fit for logs: no query string (it may carry credentials).
fn url_for_log(url: &str) -> String {
    url.split('?').next().unwrap_or("").to_string()
}
