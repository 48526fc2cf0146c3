//! Resolution: a request's path, query and headers → a spec (filters crate), its origin, its
//! cache key and the origin service's request target.
//!
//! Owns the route rewrites done before the filters crate sees a request (content-hash routes,
//! `/proxy/external`), the choice of origin by matcher and its resolve options, `format=auto`
//! negotiation (the negotiated format, not the raw `Accept`, enters the key) and whether
//! external fetches are allowed. Pure over the config: no I/O, no counting, no answers.

use super::Edge;
use crate::config::UPLOADS_PREFIX;
use crate::error::ApiError;
use crate::origin::EXTERNAL_PATH;

/// A request resolved to a spec, an origin and the origin service's request target.
pub struct Resolution {
    pub resolved: filters::Resolved,
    pub origin: Option<usize>,
    pub upstream_path: String,
    /// The client-supplied URL of an external fetch.
    pub external: Option<String>,
    /// The response depends on `Accept` (`format=auto`).
    pub vary_accept: bool,
}

impl Edge {
    /// Cache key of an original (no transform): `orig:{path}`.
    pub fn original_key(path: &str) -> String {
        filters::cache_key(
            &filters::TransformSpec::new(filters::Mode::Original),
            &filters::Source::Path(path.to_string()),
        )
    }

    /// Resolves a request into a spec (filters crate), its origin, its cache key and the
    /// origin service's request target. `format=auto` is negotiated here from `Accept`, so
    /// the negotiated format (not the raw header) enters the key.
    pub fn resolve(
        &self,
        live: &super::Live,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> std::result::Result<Resolution, ApiError> {
        let cfg = &live.cfg;
        let to_api = |e: filters::FilterError| ApiError::new(e.status(), e.code(), e.to_string());
        // `/proxy/external?url=..&<params>`: the same as the cdn-cgi form with an absolute URL.
        let rewritten;
        let content =
            filters::content::rewrite(path, query, &cfg.content.prefix).map_err(to_api)?;
        let tenant_path;
        let (path, query) = if let Some(c) = &content {
            // `/proxy/{image,thumbnail,metadata,video}/{sha256}`: the requesting tenant's
            // upload (the uploads origin falls back to the content prefix when the tenant
            // has none), else a path under the content prefix.
            let path = match self.content_tenant(live, path, query, headers) {
                Some(t) => {
                    tenant_path = format!("{UPLOADS_PREFIX}{t}/{}", c.hash);
                    tenant_path.as_str()
                }
                None => c.path.as_str(),
            };
            (path, Some(c.query.as_str()).filter(|q| !q.is_empty()))
        } else if path == "/proxy/external" {
            let mut url = None;
            let mut opts = Vec::new();
            for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                if k == "url" {
                    url = Some(v.into_owned());
                } else if !matches!(k.as_ref(), "signature" | "expires" | "kid") {
                    opts.push(format!("{k}={v}"));
                }
            }
            let url = url
                .ok_or_else(|| ApiError::bad_request("/proxy/external needs url=<http(s) URL>"))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ApiError::bad_request(
                    "url must be an http:// or https:// URL",
                ));
            }
            if opts.is_empty() {
                let spec = filters::TransformSpec::new(filters::Mode::Original);
                return self.finish_external(live, spec, url, None);
            }
            rewritten = format!("/cdn-cgi/image/{}/{url}", opts.join(","));
            (rewritten.as_str(), None)
        } else {
            (path, query)
        };
        let parts = filters::RequestParts {
            path,
            query,
            headers,
        };
        let mut resolved =
            filters::resolve(&parts, &cfg.filters, &filters::ResolveOptions::default())
                .map_err(to_api)?;
        let (origin, source_path) = match &resolved.source {
            filters::Source::Path(p) => {
                // Uploads are reached through the content-hash routes only.
                if p.starts_with(UPLOADS_PREFIX) && content.is_none() {
                    return Err(ApiError::no_matching_origin(p));
                }
                let Some(origin) = cfg.origin_index(p) else {
                    if content.is_some() {
                        return Err(ApiError::not_found(format!(
                            "no origin serves content-hash objects (paths under {}): see [content] in the README",
                            cfg.content.prefix
                        )));
                    }
                    return Err(ApiError::no_matching_origin(p));
                };
                let opts = &cfg.origins[origin].options;
                let p = p.clone();
                if *opts != filters::ResolveOptions::default() {
                    resolved = filters::resolve(&parts, &cfg.filters, opts).map_err(to_api)?;
                }
                (Some(origin), p)
            }
            filters::Source::External(_) => (None, EXTERNAL_PATH.to_string()),
        };
        let vary_accept = resolved.spec.format == Some(filters::Format::Auto);
        if vary_accept {
            let accept = headers.get("accept").and_then(|v| v.to_str().ok());
            let negotiated = filters::negotiate_format(accept, false, cfg.transform.avif);
            if matches!(negotiated, filters::Format::Avif | filters::Format::Webp) {
                resolved.spec.format = Some(negotiated);
            }
            resolved.cache_key = filters::cache_key(&resolved.spec, &resolved.source);
        }
        if let filters::Source::External(url) = &resolved.source {
            let url = url.clone();
            return self.finish_external(
                live,
                resolved.spec.clone(),
                url,
                Some((resolved, vary_accept)),
            );
        }
        let upstream_path = if resolved.spec.is_passthrough() {
            source_path
        } else {
            format!("{source_path}?{}", resolved.spec.to_canonical_query())
        };
        Ok(Resolution {
            resolved,
            origin,
            upstream_path,
            vary_accept,
            external: None,
        })
    }

    /// Whose uploads a content-hash request looks in: the tenant of its bearer token (a
    /// token that may read), or the `tenant` parameter of a validly signed URL.
    fn content_tenant<'a>(
        &'a self,
        live: &'a super::Live,
        path: &str,
        query: Option<&'a str>,
        headers: &http::HeaderMap,
    ) -> Option<std::borrow::Cow<'a, str>> {
        let sec = &live.security;
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if let Some(t) = sec.reader_tenant(auth) {
            return Some(t.into());
        }
        let q = query?;
        let named = form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "tenant")
            .map(|(_, v)| v.into_owned())?;
        (crate::config::valid_tenant(&named) && sec.signed(&format!("{path}?{q}")))
            .then_some(named.into())
    }

    /// An external URL request: allowed only when `external.enabled`.
    fn finish_external(
        &self,
        live: &super::Live,
        spec: filters::TransformSpec,
        url: String,
        resolved: Option<(filters::Resolved, bool)>,
    ) -> std::result::Result<Resolution, ApiError> {
        if !live.cfg.external.enabled {
            return Err(ApiError::forbidden(
                "external fetches are not enabled on this node",
            ));
        }
        let source = filters::Source::External(url.clone());
        let (resolved, vary_accept) = match resolved {
            Some(r) => r,
            None => {
                let cache_key = filters::cache_key(&spec, &source);
                let r = filters::Resolved {
                    spec: spec.clone(),
                    source,
                    cache_key,
                    vary: vec![],
                    accept_ch: false,
                    network_hints: false,
                    derivative: None,
                    debug: false,
                    needs_async: false,
                    form: filters::RequestForm::Query,
                    akamai: false,
                    diagnostics: None,
                };
                (r, false)
            }
        };
        let upstream_path = if spec.is_passthrough() {
            EXTERNAL_PATH.to_string()
        } else {
            format!("{EXTERNAL_PATH}?{}", spec.to_canonical_query())
        };
        Ok(Resolution {
            resolved,
            origin: None,
            upstream_path,
            vary_accept,
            external: Some(url),
        })
    }
}
