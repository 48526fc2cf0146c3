//! The external fetcher: client-supplied URLs (`/cdn-cgi/*/https://..`, `/proxy/external`),
//! fetched without becoming a hole in the operator's network.
//!
//! Every hop is checked before any connection: `http`/`https` only, the host allow/deny
//! lists, then DNS resolution and the SSRF policy of `filters::ssrf` on every resolved
//! address (a name that resolves to any refused address is refused). The request then goes
//! to exactly the address that was checked (the client pins it; no second lookup, so DNS
//! rebinding fails). Redirects are followed by hand, at most `max_redirects` times, each hop
//! checked again. The body is capped (`max_bytes`), connect and total times are bounded,
//! and the content is sniffed (`transform::sniff`): only image, video and audio bytes pass
//! (HTML or unknown → 415). It must never connect to an address it has not checked.

use super::{BodyStream, Fetched};
use crate::config::ExternalConfig;
use crate::error::{ApiError, ErrorCode};
use crate::transform::sniff::{self, Sniffed, SNIFF_BYTES};
use bytes::Bytes;
use futures::StreamExt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

pub struct ExternalFetcher {
    cfg: ExternalConfig,
    allowed_networks: filters::CidrSet,
}

/// An external body over `max_bytes`: the error the capped stream ends with (the transform
/// step answers it with 413).
#[derive(Debug, thiserror::Error)]
#[error("external body over {max} bytes")]
pub struct OverLimit {
    pub max: u64,
}

/// A bad `[external]` setting.
#[derive(Debug, thiserror::Error)]
pub enum ExternalConfigError {
    #[error("external.allowed_networks: {0:?}")]
    AllowedNetworks(Vec<filters::CidrError>),
}

impl ExternalFetcher {
    pub fn new(cfg: &ExternalConfig) -> Result<ExternalFetcher, ExternalConfigError> {
        let allowed_networks = filters::CidrSet::parse(&cfg.allowed_networks)
            .map_err(ExternalConfigError::AllowedNetworks)?;
        Ok(ExternalFetcher {
            cfg: cfg.clone(),
            allowed_networks,
        })
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.allowed_networks.contains(ip) {
            return Ok(());
        }
        match filters::ssrf::refusal(ip) {
            Some(why) => Err(ApiError::forbidden(format!(
                "external URL resolves to a {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Checks one hop and returns the address to connect to.
    async fn check_hop(&self, url: &reqwest::Url) -> Result<SocketAddr, ApiError> {
        if !filters::ssrf::scheme_allowed(url.scheme()) {
            return Err(ApiError::bad_request(format!(
                "external URL scheme {:?} is not allowed",
                url.scheme()
            )));
        }
        let host = url
            .host()
            .ok_or_else(|| ApiError::bad_request("external URL has no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let host_str = match &host {
            url::Host::Domain(d) => d.to_string(),
            url::Host::Ipv4(v4) => v4.to_string(),
            url::Host::Ipv6(v6) => v6.to_string(),
        };
        if !filters::ssrf::host_allowed(&host_str, &self.cfg.allow_hosts, &self.cfg.deny_hosts) {
            return Err(ApiError::forbidden(format!(
                "external host {host_str:?} is not allowed"
            )));
        }
        let addrs: Vec<SocketAddr> = match host {
            url::Host::Ipv4(v4) => vec![SocketAddr::new(IpAddr::V4(v4), port)],
            url::Host::Ipv6(v6) => vec![SocketAddr::new(IpAddr::V6(v6), port)],
            url::Host::Domain(d) => {
                let lookup = tokio::net::lookup_host((d, port));
                match tokio::time::timeout(self.cfg.connect_timeout.0, lookup).await {
                    Ok(Ok(a)) => a.collect(),
                    Ok(Err(_)) => {
                        return Err(ApiError::new(
                            502,
                            ErrorCode::OriginError,
                            format!("cannot resolve {host_str:?}"),
                        ))
                    }
                    Err(_) => {
                        return Err(ApiError::timeout(format!(
                            "resolving {host_str:?} timed out"
                        )))
                    }
                }
            }
        };
        if addrs.is_empty() {
            return Err(ApiError::new(
                502,
                ErrorCode::OriginError,
                format!("{host_str:?} has no address"),
            ));
        }
        for a in &addrs {
            self.check_ip(a.ip())?;
        }
        Ok(addrs[0])
    }

    /// Fetches `url` (GET), following checked redirects.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, ApiError> {
        let deadline = Instant::now() + self.cfg.timeout.0;
        let mut url = reqwest::Url::parse(url)
            .map_err(|e| ApiError::bad_request(format!("bad external URL: {e}")))?;
        for hop in 0..=self.cfg.max_redirects {
            let addr = self.check_hop(&url).await?;
            let host = url
                .host_str()
                .unwrap_or("")
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let client = reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(self.cfg.connect_timeout.0)
                .resolve(&host, addr)
                .build()
                .map_err(|e| ApiError::internal(format!("http client: {e}")))?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let resp = match tokio::time::timeout(
                remaining,
                client
                    .get(url.clone())
                    .header("user-agent", "media-edge")
                    .send(),
            )
            .await
            {
                Err(_) => return Err(ApiError::timeout("external fetch timed out")),
                Ok(Err(e)) if e.is_timeout() => {
                    return Err(ApiError::timeout("external fetch timed out"))
                }
                Ok(Err(e)) => {
                    return Err(ApiError::origin_error(format!(
                        "external fetch failed: {}",
                        e.without_url()
                    )))
                }
                Ok(Ok(r)) => r,
            };
            let status = resp.status();
            if status.is_redirection() {
                let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok()) else {
                    return Err(ApiError::origin_error("redirect without Location"));
                };
                if hop == self.cfg.max_redirects {
                    return Err(ApiError::origin_error(format!(
                        "more than {} redirects",
                        self.cfg.max_redirects
                    )));
                }
                url = url
                    .join(loc)
                    .map_err(|_| ApiError::origin_error("bad redirect Location"))?;
                continue;
            }
            if status.as_u16() == 404 || status.as_u16() == 410 {
                return Err(ApiError::not_found("external URL not found"));
            }
            if !status.is_success() {
                return Err(ApiError::origin_error(format!(
                    "external URL answered {}",
                    status.as_u16()
                )));
            }
            return self.read(resp, deadline).await;
        }
        Err(ApiError::origin_error("too many redirects"))
    }

    async fn read(&self, resp: reqwest::Response, deadline: Instant) -> Result<Fetched, ApiError> {
        let max = self.cfg.max_bytes.0;
        if resp.content_length().is_some_and(|l| l > max) {
            return Err(ApiError::new(
                413,
                ErrorCode::PayloadTooLarge,
                format!("external body over {max} bytes"),
            ));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for h in ["etag", "last-modified"] {
            if let Some(v) = resp.headers().get(h).and_then(|v| v.to_str().ok()) {
                headers.push((h.to_string(), v.to_string()));
            }
        }
        // Sniff from the first bytes before passing anything on.
        let mut stream = resp.bytes_stream();
        let mut head = Vec::new();
        while head.len() < SNIFF_BYTES {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, stream.next()).await {
                Err(_) => return Err(ApiError::timeout("external fetch timed out")),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(ApiError::origin_error(format!(
                        "external body: {}",
                        e.without_url()
                    )))
                }
                Ok(Some(Ok(c))) => head.extend_from_slice(&c),
            }
        }
        if head.len() as u64 > max {
            return Err(ApiError::new(
                413,
                ErrorCode::PayloadTooLarge,
                format!("external body over {max} bytes"),
            ));
        }
        let Some(mime) = sniff::sniff(&head).map(Sniffed::mime) else {
            return Err(ApiError::new(
                415,
                ErrorCode::UnsupportedMedia,
                "external URL is not an image, video or audio file",
            ));
        };
        headers.push(("content-type".into(), mime.into()));
        let first = Bytes::from(head);
        let mut seen = first.len() as u64;
        let rest = stream.map(move |c| {
            let c = c.map_err(std::io::Error::other)?;
            seen += c.len() as u64;
            if seen > max {
                return Err(std::io::Error::other(OverLimit { max }));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "external fetch timed out",
                ));
            }
            Ok(c)
        });
        let body: BodyStream =
            Box::pin(futures::stream::once(async move { Ok(first) }).chain(rest));
        Ok(Fetched {
            status: 200,
            headers,
            body: Some(body),
        })
    }
}
