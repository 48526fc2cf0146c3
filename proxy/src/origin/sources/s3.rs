//! The S3 source (AWS S3, Cloudflare R2, MinIO, any S3-compatible endpoint) via aws-sdk-s3.
//!
//! Passes `Range`, `If-None-Match` and `If-Modified-Since` to the bucket, so a ranged miss on
//! a 2 GB object reads only the range, and the object's ETag and Last-Modified pass through.
//! Like every source it never caches and never transforms.

use super::{clean_path, env_var, BuildError, FetchRequest, Fetched, Source, SourceError};
use crate::config::SourceConfig;
use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::DateTimeFormat;
use std::time::Duration;
use tokio_util::io::ReaderStream;

pub struct S3Source {
    client: aws_sdk_s3::Client,
    bucket: String,
    timeout: Duration,
}

impl S3Source {
    pub async fn new(cfg: &SourceConfig) -> Result<Self, BuildError> {
        let SourceConfig::S3 {
            bucket,
            region,
            endpoint,
            path_style,
            access_key_env,
            secret_key_env,
            timeout,
            ..
        } = cfg
        else {
            return Err(BuildError::WrongKind("an s3 source"));
        };
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(timeout.0)
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
        if let (Some(ak), Some(sk)) = (access_key_env, secret_key_env) {
            let ak = env_var(ak, "access_key_env")?;
            let sk = env_var(sk, "secret_key_env")?;
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                ak,
                sk,
                None,
                None,
                "media-edge-config",
            ));
        }
        if let Some(ep) = endpoint {
            loader = loader.endpoint_url(ep.clone());
        }
        let sdk = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(*path_style)
            .build();
        Ok(S3Source {
            client: aws_sdk_s3::Client::from_conf(conf),
            bucket: bucket.clone(),
            timeout: timeout.0,
        })
    }

    async fn object_size(&self, key: &str) -> Option<u64> {
        let h = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        h.content_length().and_then(|l| u64::try_from(l).ok())
    }
}

#[async_trait]
impl Source for S3Source {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, SourceError> {
        let key = clean_path(&req.path)?;
        let call = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_range(
                req.range
                    .clone()
                    .filter(|r| r.starts_with("bytes=") && !r.contains(',')),
            )
            .set_if_none_match(req.if_none_match.clone())
            .set_if_modified_since(
                req.if_modified_since
                    .as_deref()
                    .and_then(|v| httpdate::parse_http_date(v).ok())
                    .map(aws_sdk_s3::primitives::DateTime::from),
            )
            .send();
        let out = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => return Err(SourceError::Timeout(format!("s3 {}/{key}", self.bucket))),
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                return match (status, &e) {
                    (Some(304), _) => {
                        let mut headers = Vec::new();
                        if let Some(r) = e.raw_response() {
                            for name in ["etag", "last-modified", "cache-control"] {
                                if let Some(v) = r.headers().get(name) {
                                    headers.push((name.to_string(), v.to_string()));
                                }
                            }
                        }
                        Ok(Fetched {
                            status: 304,
                            headers,
                            body: None,
                        })
                    }
                    (Some(404 | 403), _) => {
                        Err(SourceError::NotFound(format!("s3 {}/{key}", self.bucket)))
                    }
                    (Some(416), _) => Err(SourceError::RangeNotSatisfiable(
                        self.object_size(&key).await.unwrap_or(0),
                    )),
                    (_, SdkError::TimeoutError(_)) => {
                        Err(SourceError::Timeout(format!("s3 {}/{key}", self.bucket)))
                    }
                    (Some(s), _) => Err(SourceError::Upstream(format!(
                        "s3 {}/{key}: status {s}",
                        self.bucket
                    ))),
                    (None, e) => Err(SourceError::Upstream(format!(
                        "s3 {}/{key}: {}",
                        self.bucket,
                        short(e)
                    ))),
                };
            }
        };
        let mut headers = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                headers.push((k.to_string(), v));
            }
        };
        push("content-type", out.content_type().map(str::to_string));
        push(
            "content-length",
            out.content_length().map(|l| l.to_string()),
        );
        push("etag", out.e_tag().map(str::to_string));
        push(
            "last-modified",
            out.last_modified()
                .and_then(|d| d.fmt(DateTimeFormat::HttpDate).ok()),
        );
        push("cache-control", out.cache_control().map(str::to_string));
        push("content-range", out.content_range().map(str::to_string));
        push("expires", out.expires_string().map(str::to_string));
        let status = if out.content_range().is_some() {
            206
        } else {
            200
        };
        if req.head {
            return Ok(Fetched {
                status,
                headers,
                body: None,
            });
        }
        let reader = out.body.into_async_read();
        Ok(Fetched {
            status,
            headers,
            body: Some(Box::pin(ReaderStream::with_capacity(reader, 64 * 1024))),
        })
    }
}

fn short<E: std::error::Error>(e: &E) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Writes, for the object store (`store::objects`); originals are never written.
impl S3Source {
    /// Puts one object, streamed from `body`; the object appears whole or not at all.
    pub async fn put(
        &self,
        key: &str,
        body: aws_sdk_s3::primitives::ByteStream,
        content_type: &str,
    ) -> Result<(), SourceError> {
        let call = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .send();
        match tokio::time::timeout(self.timeout.max(Duration::from_secs(300)), call).await {
            Err(_) => Err(SourceError::Timeout(format!(
                "s3 put {}/{key}",
                self.bucket
            ))),
            Ok(Err(e)) => Err(SourceError::Upstream(format!(
                "s3 put {}/{key}: {}",
                self.bucket,
                aws_sdk_s3::error::DisplayErrorContext(&e)
            ))),
            Ok(Ok(_)) => Ok(()),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), SourceError> {
        let call = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send();
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(SourceError::Timeout(format!(
                "s3 delete {}/{key}",
                self.bucket
            ))),
            Ok(Err(e)) => Err(SourceError::Upstream(format!(
                "s3 delete {}/{key}: {}",
                self.bucket,
                aws_sdk_s3::error::DisplayErrorContext(&e)
            ))),
            Ok(Ok(_)) => Ok(()),
        }
    }
}
