//! Fast hits and response decoration: the headers every cacheable answer gets, and the one
//! answer the edge gives without pingora-cache — a plain `GET`/`HEAD` of a fresh, whole
//! memory-tier object.
//!
//! Owns what such a hit looks like (the stored header as pingora-cache would send it, `Age`,
//! the decoration of [`Edge::decorate`]) and the [`Prepared`] part of it, built once per memory
//! object: a [`ResponseHeader`] for Pingora sessions and HTTP/1.1 bytes for the front door.
//! Both paths answer through one [`FastHit`], so they cannot disagree. Everything else (range,
//! conditional, `Vary`, not 200, no length, purged, stale) is not a fast hit and takes
//! pingora-cache's path. Must not decide freshness beyond "fresh now" (the storage's) and the
//! purge check.

use super::{front, Ctx, Edge};
use crate::metrics;
use pingora_cache::CacheKey;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::io::Write;
use std::sync::Arc;

/// The object's part of a fast hit's response header, prepared once per memory object.
pub struct Prepared {
    /// The stored header as pingora-cache sends it (HTTP/1.1), decorated with everything that
    /// depends only on the object, its key and the config.
    pub header: ResponseHeader,
    /// `header` as HTTP/1.1 bytes: status line and header lines, without the blank line and
    /// without the headers named in `replaced` (and those written per response).
    pub wire: bytes::Bytes,
    /// Headers each hit sets itself (replacing stored ones of the same name).
    pub replaced: Vec<&'static str>,
    /// The entry's `Cache-Tag` value, for the purge check.
    pub tags: Option<Arc<str>>,
}

/// A fresh memory-tier object ready to answer one request.
pub struct FastHit {
    pub hit: crate::edge::storage::FreshHit<Prepared>,
    /// This request's own headers ([`request_headers`]).
    pub own: Vec<(&'static str, String)>,
}

impl FastHit {
    /// The response header for a Pingora session.
    pub fn header(&self) -> Result<ResponseHeader> {
        let mut resp = self.hit.prepared.header.clone();
        resp.insert_header(http::header::AGE, self.hit.age.as_secs())?;
        for (k, v) in &self.own {
            resp.insert_header(*k, v.as_str())?;
        }
        Ok(resp)
    }

    /// Whether [`Self::write_h1_head`] writes the same header as [`Self::header`]: the
    /// request's own values are valid header values and replace no stored header that the
    /// prepared bytes still hold.
    pub fn h1_ready(&self) -> bool {
        let p = &self.hit.prepared;
        let clash = |k: &str| !p.replaced.contains(&k) && p.header.headers.contains_key(k);
        !self
            .own
            .iter()
            .any(|(k, v)| !front::value_ok(v.as_bytes()) || clash(k))
    }

    /// The header as HTTP/1.1 lines (no `Date`, `Connection` or blank line: the front door's).
    pub fn write_h1_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hit.prepared.wire);
        // Writing to a Vec cannot fail.
        let _ = write!(out, "age: {}\r\n", self.hit.age.as_secs());
        for (k, v) in &self.own {
            front::put_header(out, k.as_bytes(), v.as_bytes());
        }
    }
}

impl Edge {
    /// Answers a plain `GET`/`HEAD` of a fresh, whole object held by the memory tier without
    /// pingora-cache's lookup machinery (see [`Self::fast_hit_for`]). `false`: not a fast
    /// hit, the request takes the ordinary path (which also decodes an entry's metadata for
    /// later fast hits).
    pub(crate) async fn fast_hit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let head = session.req_header().method == http::Method::HEAD;
        let Some(fast) = self.fast_hit_for(session.req_header(), ctx) else {
            return Ok(false);
        };
        let Ok(resp) = fast.header() else {
            return Ok(false);
        };
        self.count_fast_hit(ctx);
        // A write error goes back to Pingora (logged, connection not reused), as on any hit.
        session.write_response_header(Box::new(resp), head).await?;
        if !head {
            session
                .write_response_body(Some(fast.hit.body), true)
                .await?;
        }
        Ok(true)
    }

    /// The memory tier's answer to an admitted request, when it can be given without
    /// pingora-cache: a plain `GET`/`HEAD` (no `Range`, no conditional header, not a fill)
    /// whose key is held whole, fresh, without `Vary`, status 200 with a length, not purged.
    /// Not counted: see [`Self::count_fast_hit`].
    pub(crate) fn fast_hit_for(&self, req: &RequestHeader, ctx: &Ctx) -> Option<FastHit> {
        const CONDITIONAL: [http::header::HeaderName; 6] = [
            http::header::RANGE,
            http::header::IF_NONE_MATCH,
            http::header::IF_MODIFIED_SINCE,
            http::header::IF_RANGE,
            http::header::IF_MATCH,
            http::header::IF_UNMODIFIED_SINCE,
        ];
        let st = &self.state;
        if !ctx.live.cfg.cache.enabled || ctx.is_fill {
            return None;
        }
        if !(req.method == http::Method::HEAD || req.method == http::Method::GET)
            || CONDITIONAL.iter().any(|h| req.headers.contains_key(h))
        {
            return None;
        }
        let key = ctx.key.as_deref()?;
        let hit = st
            .storage
            .fresh_mem_hit(&CacheKey::new(key, ""), |h| self.prepare(h, key, ctx))?;
        let purged = st
            .purge
            .is_purged(key, &ctx.path, hit.prepared.tags.as_deref(), hit.created);
        let stored_cc = hit
            .prepared
            .header
            .headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok());
        let own = request_headers(ctx, None, stored_cc, 200);
        (!purged).then(|| FastHit { hit, own })
    }

    /// The object's part of every fast hit of `key`, from its stored header; `None` when the
    /// object cannot be a fast hit (not 200, `Vary`, no length, chunked).
    fn prepare(&self, h: &ResponseHeader, key: &str, ctx: &Ctx) -> Option<Prepared> {
        let eligible = h.status == http::StatusCode::OK
            && !h.headers.contains_key(http::header::VARY)
            && h.headers.contains_key(http::header::CONTENT_LENGTH)
            && !h.headers.contains_key(http::header::TRANSFER_ENCODING);
        if !eligible {
            return None;
        }
        let tags = h.headers.get("cache-tag").and_then(|v| v.to_str().ok());
        let tags = tags.map(Into::into);
        let mut header = h.clone();
        header.set_version(http::Version::HTTP_11);
        self.decorate_object(&ctx.live, &mut header, Some(key), "HIT")
            .ok()?;
        // What every hit of this key sets itself (names fixed by the key's spec; the
        // browser's `Cache-Control` always, from the stored one or the origin's rule).
        let stored_cc = h
            .headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok());
        let mut replaced: Vec<&'static str> = request_headers(ctx, None, stored_cc, 200)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        if !replaced.contains(&"cache-control") {
            replaced.push("cache-control");
        }
        let wire = front::head_bytes(&header, &replaced);
        Some(Prepared {
            header,
            wire,
            replaced,
            tags,
        })
    }

    /// Counts a fast hit (cache result, memory-tier hit) and marks the request as one.
    pub(crate) fn count_fast_hit(&self, ctx: &mut Ctx) {
        metrics::count_cache_result("HIT");
        ctx.fast_hit = true;
        self.state.storage.count_fast_hit();
    }

    /// The headers every response to a cacheable request gets, whichever path answered it
    /// ([`Self::decorate_object`] then [`Self::decorate_request`]), counted by `X-Cache`.
    pub(crate) fn decorate(
        &self,
        resp: &mut ResponseHeader,
        ctx: &Ctx,
        x_cache: &'static str,
    ) -> Result<()> {
        self.decorate_object(&ctx.live, resp, ctx.key.as_deref(), x_cache)?;
        self.decorate_request(resp, ctx)?;
        metrics::count_cache_result(x_cache);
        Ok(())
    }

    /// What depends only on the object, its key and the config: `X-Cache`, `X-Cache-Key`,
    /// our `Via` hop, `Accept-Ranges`; `Cache-Tag` (unless kept) and internal headers removed.
    fn decorate_object(
        &self,
        live: &super::Live,
        resp: &mut ResponseHeader,
        key: Option<&str>,
        x_cache: &'static str,
    ) -> Result<()> {
        resp.insert_header("x-cache", http::HeaderValue::from_static(x_cache))?;
        if let Some(k) = key {
            resp.insert_header("x-cache-key", k)?;
        }
        let token = &live.cfg.server.via_token;
        let joined = match resp.headers.get("via").and_then(|v| v.to_str().ok()) {
            Some(existing) if !existing.is_empty() => Some(format!("{existing}, 1.1 {token}")),
            _ => None,
        };
        match joined {
            Some(v) => resp.insert_header("via", v)?,
            None => resp.insert_header("via", self.state.via.clone())?,
        }
        if !live.cfg.server.keep_cache_tag {
            resp.remove_header("cache-tag");
        }
        resp.remove_header(crate::origin::HDR_ORIGIN);
        // As pingora-cache's range filter does on a hit: a 200 with a length accepts ranges.
        if resp.status.as_u16() == 200
            && (resp.headers.contains_key(http::header::CONTENT_LENGTH)
                || !resp.headers.contains_key("accept-ranges"))
        {
            resp.insert_header("accept-ranges", "bytes")?;
        }
        Ok(())
    }

    /// What depends on this request: `X-Request-ID`, the spec's headers, `Vary`, `Accept-CH`.
    fn decorate_request(&self, resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
        let stored_vary = resp.headers.get("vary").and_then(|v| v.to_str().ok());
        let stored_cc = resp
            .headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok());
        for (k, v) in request_headers(ctx, stored_vary, stored_cc, resp.status.as_u16()) {
            resp.insert_header(k, v)?;
        }
        Ok(())
    }
}

/// The headers [`Edge::decorate_request`] sets, given the stored `Vary` and `Cache-Control`
/// values and the status: the request id, the spec's headers, the browser's `Cache-Control`
/// ([`browser_cache_control`]), `Vary` (stored plus what the resolution varies on),
/// `Accept-CH`.
pub(crate) fn request_headers(
    ctx: &Ctx,
    stored_vary: Option<&str>,
    stored_cc: Option<&str>,
    status: u16,
) -> Vec<(&'static str, String)> {
    let mut out = vec![("x-request-id", ctx.request_id.clone())];
    let Some(r) = &ctx.resolved else {
        return out;
    };
    out.extend(filters::response_headers(&r.spec));
    if let Some(cc) = browser_cache_control(ctx, status, stored_cc) {
        out.push(("cache-control", cc));
    }
    if status >= 400 && !r.spec.is_passthrough() {
        let media = r.form == filters::RequestForm::CdnCgiMedia
            || !matches!(r.spec.mode, filters::Mode::Image | filters::Mode::Original);
        if let Some(code) = cf_resized_error(status, media) {
            out.push(("cf-resized", format!("err={code}")));
        }
    }
    let mut vary: Vec<&str> = r.vary.clone();
    if ctx.vary_accept {
        vary.push("Accept");
    }
    if !vary.is_empty() {
        let mut all: Vec<String> = stored_vary
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for v in vary {
            if !all.iter().any(|a| a.eq_ignore_ascii_case(v)) {
                all.push(v.to_string());
            }
        }
        out.push(("vary", all.join(", ")));
    }
    match (r.accept_ch, r.network_hints) {
        (true, true) => out.push((
            "accept-ch",
            format!("{}, {}", filters::ACCEPT_CH, filters::NETWORK_ACCEPT_CH),
        )),
        (true, false) => out.push(("accept-ch", filters::ACCEPT_CH.to_string())),
        (false, true) => out.push(("accept-ch", filters::NETWORK_ACCEPT_CH.to_string())),
        (false, false) => {}
    }
    out
}

/// Fluxer's media proxy answers every `/proxy/*` success with this.
pub const FLUXER_CACHE_CONTROL: &str = "public, max-age=604800";

/// The `Cache-Control` a browser gets on a successful (200, 206, 304) answer: what the source
/// said when it keeps the object private (`no-store`, `no-cache`, `private`); on Fluxer's
/// `/proxy/*` routes a week ([`FLUXER_CACHE_CONTROL`]); the origin's `browser_ttl` when set;
/// else the source's own; else, as Cloudflare does, an hour for a transform and the
/// origin's `ttl.ok` class TTL for an original. Other statuses keep what they carry.
pub(crate) fn browser_cache_control(
    ctx: &Ctx,
    status: u16,
    stored: Option<&str>,
) -> Option<String> {
    if !matches!(status, 200 | 206 | 304) {
        return stored.map(str::to_string);
    }
    let private = stored.is_some_and(|c| {
        c.split(',').any(|d| {
            let d = d.trim();
            ["no-store", "no-cache", "private"]
                .iter()
                .any(|p| d.len() >= p.len() && d[..p.len()].eq_ignore_ascii_case(p))
        })
    });
    if private {
        return stored.map(str::to_string);
    }
    if ctx.path.starts_with("/proxy/") {
        return Some(FLUXER_CACHE_CONTROL.to_string());
    }
    let origin = ctx.origin.and_then(|i| ctx.live.cfg.origins.get(i));
    if let Some(t) = origin.and_then(|o| o.browser_ttl) {
        return Some(format!("public, max-age={}", t.0.as_secs()));
    }
    if let Some(s) = stored {
        return Some(s.to_string());
    }
    let transform = ctx
        .resolved
        .as_ref()
        .is_some_and(|r| !r.spec.is_passthrough());
    let secs = if transform {
        3600
    } else {
        origin?.ttl.for_status(200)?.as_secs()
    };
    Some(format!("public, max-age={secs}"))
}

/// Cloudflare's `Cf-Resized: err=…` code for a failed transform's status, as its two
/// troubleshooting pages list them: 9401 bad options, 9403 a request loop, 9404 no such
/// source, 9412 not an image (or video) it can read, 9413 an image too large (Media
/// Transformations: 9402, "the video was too large"), 9504 the origin timed out, 9509 the
/// origin failed, 9523 an internal error. Statuses Cloudflare gives no code (401, 403,
/// 429, …) get none.
pub(crate) fn cf_resized_error(status: u16, media: bool) -> Option<u16> {
    Some(match status {
        400 | 422 => 9401,
        404 => 9404,
        415 => 9412,
        413 if media => 9402,
        413 => 9413,
        508 => 9403,
        502 | 503 => 9509,
        504 => 9504,
        500 => 9523,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::cf_resized_error;

    #[test]
    fn cf_resized_codes_follow_the_form() {
        for (status, media, code) in [
            (400, false, Some(9401)),
            (422, true, Some(9401)),
            (404, false, Some(9404)),
            (415, true, Some(9412)),
            (413, false, Some(9413)),
            (413, true, Some(9402)),
            (508, false, Some(9403)),
            (504, true, Some(9504)),
            (502, false, Some(9509)),
            (500, false, Some(9523)),
            (403, false, None),
            (429, true, None),
        ] {
            assert_eq!(
                cf_resized_error(status, media),
                code,
                "{status} media={media}"
            );
        }
    }
}
