//! The front door: the edge's HTTP/1 connection loop, in front of Pingora's `HttpProxy`.
//!
//! Owns reading request heads on HTTP/1 connections and answering the one kind of request that
//! needs none of Pingora's proxy machinery: a plain `GET`/`HEAD` that [`Edge::admit`] lets
//! through and whose object the memory tier holds whole and fresh ([`Edge::fast_hit_for`]). Those
//! are written straight to the connection from the header bytes prepared once per memory
//! object. Every other request — anything unusual in its head, any miss, range, conditional,
//! built-in route, error, HTTP/2 — goes to Pingora's `HttpProxy` with its bytes untouched (fed
//! back as the session's first bytes), where the edge's `ProxyHttp` makes every decision as
//! before. It must not decide cache policy or answer anything the edge would answer
//! differently: what it sends for a hit is the same status, headers and body as pingora-cache's
//! hit path (`tests/edge_cache.rs::fast_hits_answer_like_ordinary_hits`).
//!
//! Why: on a small cached object Pingora's per-request HTTP/1 parse, proxy session set-up and
//! header serialisation cost as much CPU as nginx's whole cached hit (see the README's
//! performance section). Parsing is httparse's, as in Pingora; the front door only takes
//! requests without a body (no `Content-Length`, no `Transfer-Encoding`), so it never has to
//! find where a body ends and cannot disagree with Pingora about request boundaries.

use super::admit::Admit;
use super::conns::{Connections, Refused};
use super::respond::{error_response, log_request};
use super::Edge;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{count_connection_event, ConnectionEvent};
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::HttpProxy;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the first bytes of an h2c preface are waited for (the head deadline applies
/// after).
const HEAD_PEEK: Duration = Duration::from_secs(10);
/// Request heads larger than this are refused (431) before more is buffered.
const MAX_HEAD: usize = 16 * 1024;
/// Headers the front door looks at; more go to Pingora.
const MAX_HEADERS: usize = 64;

/// Pingora's `HttpProxy` for the edge, with the fast-hit loop in front (see the module doc).
pub struct FrontDoor {
    proxy: Arc<HttpProxy<Edge>>,
    edge: Edge,
    /// Open connections and their caps.
    conns: Arc<Connections>,
    /// A request head must be whole this long after its first byte (a new connection's
    /// first head: after the accept).
    head_timeout: Duration,
    /// Idle time allowed between requests.
    keepalive: Duration,
    /// How long an idle connection stays open once shutdown has begun.
    linger: Duration,
}

impl FrontDoor {
    pub fn new(
        proxy: HttpProxy<Edge>,
        edge: Edge,
        conns: Arc<Connections>,
        head_timeout: Duration,
        keepalive: Duration,
        grace_period: Duration,
    ) -> FrontDoor {
        FrontDoor {
            proxy: Arc::new(proxy),
            edge,
            conns,
            head_timeout,
            keepalive,
            linger: grace_period.min(Duration::from_secs(1)),
        }
    }

    /// Writes `e` as the connection's last answer (bounded: a client that does not read is
    /// dropped after a second).
    async fn refuse(&self, stream: &mut Stream, e: &ApiError) {
        let Some((resp, body)) = error_response("", e) else {
            return;
        };
        let mut out = head_bytes(&resp, &["x-request-id"]).to_vec();
        put_header(&mut out, b"connection", b"close");
        out.extend_from_slice(b"\r\n");
        let write = write_response(stream, &out, &body);
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }

    /// Hands the connection, with the bytes already read, to Pingora's own keep-alive loop for
    /// good (a request with a body: only Pingora knows where it ends, and bytes read past it —
    /// a pipelined request — stay with its next session).
    async fn hand_over(
        &self,
        stream: Stream,
        buf: BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        session.set_pipelining_enabled(true);
        if !buf.is_empty() {
            session.set_pipelined_prefix(buf);
        }
        loop {
            let stopping = *shutdown.borrow() || super::drain::draining();
            session.set_keepalive((!stopping).then_some(self.keepalive.as_secs().max(1)));
            let (stream, settings) = self
                .proxy
                .process_new_http(session, shutdown)
                .await?
                .consume();
            session = ServerSession::new_http1(stream);
            if let Some(s) = settings {
                s.apply_to_session(&mut session);
            }
        }
    }

    /// Hands the connection, with the bytes already read, to Pingora for one request;
    /// returns the connection if Pingora keeps it open.
    async fn delegate(
        &self,
        stream: Stream,
        buf: &mut BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // No keep-alive request limit to pass on: with one, the connection is Pingora's whole.
        let mut session = ServerSession::new_http1(stream);
        let stopping = *shutdown.borrow() || super::drain::draining();
        session.set_keepalive((!stopping).then_some(self.keepalive.as_secs().max(1)));
        if !buf.is_empty() {
            session.set_pipelined_prefix(buf.split());
        }
        let reused = self.proxy.process_new_http(session, shutdown).await?;
        Some(reused.consume().0)
    }

    /// Answers `head` if it is a fast hit (or a fast hit refused by the rate limit).
    async fn try_fast(
        &self,
        stream: &mut Stream,
        head: &Head,
        peer: Option<std::net::IpAddr>,
        close: bool,
        out: &mut Vec<u8>,
    ) -> Served {
        let edge = &self.edge;
        let mut ctx = pingora_proxy::ProxyHttp::new_ctx(edge);
        let Admit::Proceed(class) = edge.admit(&head.req, peer, &mut ctx) else {
            return Served::No;
        };
        let Some(fast) = edge.fast_hit_for(&head.req, &ctx) else {
            return Served::No;
        };
        let is_head = head.req.method == http::Method::HEAD;
        // The request's own headers replace stored ones of the same name, as on the ordinary
        // path: any clash the prepared bytes cannot express is left to Pingora's path.
        if !fast.h1_ready() {
            return Served::No;
        }
        out.clear();
        let (status, result, body) = match edge.rate_gate(class, &mut ctx) {
            Ok(()) => {
                fast.write_h1_head(out);
                edge.count_fast_hit(&mut ctx);
                (200, "hit", fast.hit.body)
            }
            Err(e) => {
                let Some((resp, body)) = error_response(&ctx.request_id, &e) else {
                    return Served::No;
                };
                out.extend_from_slice(&head_bytes(&resp, &[]));
                let label =
                    pingora_cache::CachePhase::Disabled(pingora_cache::NoCacheReason::NeverEnabled);
                (resp.status.as_u16(), label.as_str(), body)
            }
        };
        put_header(
            out,
            b"date",
            pingora_core::protocols::http::date::get_cached_date().as_bytes(),
        );
        let connection: &[u8] = if close { b"close" } else { b"keep-alive" };
        put_header(out, b"connection", connection);
        out.extend_from_slice(b"\r\n");
        let body: &[u8] = if is_head { &[] } else { &body };
        // Counted before the bytes leave: a client that has read the answer sees it counted.
        crate::metrics::count_front_door(true);
        let written = write_response(stream, out, body).await;
        let sent = if written.is_ok() {
            body.len() as u64
        } else {
            0
        };
        let error = written.is_err().then_some("WriteError").or(ctx.error_code);
        ctx.tier = "memory";
        log_request(
            &head.req.method,
            head.req.uri.path(),
            status,
            result,
            sent,
            error,
            &ctx,
        );
        match written {
            Ok(()) => Served::Yes,
            Err(e) => {
                tracing::debug!(error = %e, "writing a fast hit");
                Served::Failed
            }
        }
    }
}

enum Served {
    Yes,
    /// Not a fast hit: the request goes to Pingora.
    No,
    /// The connection failed while answering.
    Failed,
}

#[async_trait]
impl ServerApp for FrontDoor {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // HTTP/2 (ALPN h2, or the h2c preface on a plain connection when `server.h2c`), and
        // server options this loop does not implement (custom protocols, a keep-alive
        // request limit; none are set by the edge): Pingora's own loop.
        let mut stream = stream;
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        // Held for the connection's life, whatever protocol it speaks.
        let slot = match self.conns.admit(peer) {
            Ok(s) => s,
            Err(why) => {
                let (event, e) = match why {
                    Refused::PerIp => (
                        ConnectionEvent::RefusedPerIp,
                        "too many connections from this client",
                    ),
                    Refused::Full => (
                        ConnectionEvent::RefusedFull,
                        "the node is at its connection limit",
                    ),
                };
                count_connection_event(event);
                let mut e = ApiError::new(503, ErrorCode::Overloaded, e);
                e.retry_after = Some(1);
                if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                    self.refuse(&mut stream, &e).await;
                }
                return None;
            }
        };
        let options = self.proxy.server_options();
        let unsupported =
            options.is_some_and(|o| o.force_custom || o.keepalive_request_limit.is_some());
        let h2c = options.is_some_and(|o| o.h2c) && stream.get_ssl_digest().is_none();
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2))
            || (h2c && starts_with_h2_preface(&mut stream).await?);
        if unsupported || h2 {
            let reused = ServerApp::process_new(&self.proxy, stream, shutdown).await;
            drop(slot);
            return reused;
        }
        let mut buf = BytesMut::with_capacity(4096);
        let mut out = Vec::with_capacity(1024);
        // Made once per connection (not per read): the server starting to shut down, and the
        // keep-alive deadline, moved forward at most once a second.
        let mut watch = shutdown.clone();
        let stopping = async move {
            while !*watch.borrow_and_update() {
                if watch.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::pin!(stopping);
        let idle_timer = tokio::time::sleep(self.keepalive);
        tokio::pin!(idle_timer);
        // A connection is closed for shutdown only between requests: a new connection's first
        // request is answered (with `Connection: close`), as Pingora does.
        let mut answered_one = false;
        // When the head being read started: a new connection's first head counts from the
        // accept, a later one from its first byte. `None`: idle between requests.
        let mut head_started = Some(tokio::time::Instant::now());
        // Set once shutdown has begun: when an idle connection is closed.
        let mut linger_end: Option<tokio::time::Instant> = None;
        loop {
            // A complete head, or a reason to hand the connection to Pingora.
            let head = loop {
                let now = tokio::time::Instant::now();
                if !buf.is_empty() {
                    head_started.get_or_insert(now);
                    let parsed = parse_head(&buf);
                    if !matches!(parsed, Parse::Partial | Parse::Long) {
                        // A whole head: no longer a candidate to close for room.
                        slot.state.set_busy();
                    }
                    match parsed {
                        Parse::Complete(h) => break Some(h),
                        Parse::NotOurs => break None,
                        Parse::WithBody => {
                            crate::metrics::count_front_door(false);
                            return self.hand_over(stream, buf, shutdown).await;
                        }
                        // Pingora gets only whole heads, so none waits there unbounded.
                        Parse::Long if head_complete(&buf) => break None,
                        Parse::Partial | Parse::Long if buf.len() < MAX_HEAD => {}
                        Parse::Partial | Parse::Long => {
                            count_connection_event(ConnectionEvent::HeadTooLarge);
                            let e = ApiError::new(
                                431,
                                ErrorCode::BadRequest,
                                format!("request head over {MAX_HEAD} bytes"),
                            );
                            self.refuse(&mut stream, &e).await;
                            return None;
                        }
                    }
                }
                let idle = buf.is_empty() && answered_one;
                // Shutting down: an idle connection lingers a moment, so a request its client
                // is sending right now is answered (with `Connection: close`) rather than
                // met by a closed connection; then it is closed.
                if idle && *shutdown.borrow() && linger_end.is_none() {
                    linger_end = Some(now + self.linger);
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
                // Idle: the keep-alive time, moved forward at most once a second. Reading a
                // head: its fixed deadline, never moved by the bytes that trickle in.
                let deadline = match head_started {
                    Some(t) => t + self.head_timeout,
                    None => now + self.keepalive,
                };
                let deadline = linger_end.map_or(deadline, |l| deadline.min(l));
                let current = idle_timer.deadline();
                if deadline < current || deadline - current > Duration::from_secs(1) {
                    idle_timer.as_mut().reset(deadline);
                }
                // Waiting: idle between requests, or reading a head (a new connection counts
                // from its accept, a later head from the idle time before it). The node, when
                // full, closes the connection that has waited the longest, so slow heads make
                // room for new clients as idle keep-alives do.
                slot.state.set_idle(&self.conns);
                let read = tokio::select! {
                    biased;
                    r = stream.read_buf(&mut buf) => r,
                    _ = &mut idle_timer => {
                        if head_started.is_some() {
                            count_connection_event(ConnectionEvent::HeadTimeout);
                            if !buf.is_empty() {
                                let e = ApiError::new(408, ErrorCode::Timeout, "request head not received in time");
                                self.refuse(&mut stream, &e).await;
                            }
                        }
                        return None;
                    }
                    _ = &mut stopping, if idle && linger_end.is_none() => {
                        linger_end = Some(tokio::time::Instant::now() + self.linger);
                        continue;
                    }
                    // The node is full and this connection has waited the longest.
                    _ = slot.state.close.notified() => {
                        if !buf.is_empty() {
                            count_connection_event(ConnectionEvent::HeadTimeout);
                        }
                        return None;
                    }
                };
                match read {
                    Ok(n) if n > 0 => {}
                    // Closed or failed: nothing to answer.
                    _ => return None,
                }
            };
            head_started = None;
            // What stays here after a hand-over: for a head without a body, the bytes after it
            // (Pingora gets exactly the head); otherwise Pingora gets everything read.
            let kept = match head {
                Some(h) => {
                    let close = h.close || *shutdown.borrow() || super::drain::draining();
                    match self.try_fast(&mut stream, &h, peer, close, &mut out).await {
                        Served::Yes if close => {
                            let _ = stream.shutdown().await;
                            return None;
                        }
                        Served::Yes => {
                            buf.advance(h.len);
                            answered_one = true;
                            continue;
                        }
                        Served::Failed => return None,
                        Served::No => {
                            crate::metrics::count_front_door(false);
                            buf.split_off(h.len)
                        }
                    }
                }
                None => {
                    crate::metrics::count_front_door(false);
                    BytesMut::new()
                }
            };
            stream = self.delegate(stream, &mut buf, shutdown).await?;
            buf.unsplit(kept);
            answered_one = true;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// The client's first bytes are HTTP/2's connection preface (prior knowledge, h2c). Peeked
/// (given back to the stream), as Pingora's own h2c detection does: the first 24 bytes are
/// waited for, at most [`HEAD_PEEK`]; `None` when the connection fails or sends less (a
/// request that short — HTTP/1.0 without a `Host` — is not answered on an h2c listener).
async fn starts_with_h2_preface(stream: &mut Stream) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    let peek = tokio::time::timeout(HEAD_PEEK, stream.try_peek(&mut buf));
    // A stream that cannot peek is taken for HTTP/1.
    let peeked = peek.await.ok()?.ok()?;
    Some(peeked && buf == PREFACE)
}

/// A parsed request head the front door may answer.
pub(crate) struct Head {
    pub(crate) req: RequestHeader,
    /// Bytes of the head (the request ends there: it has no body).
    pub(crate) len: usize,
    /// `Connection: close` was asked.
    pub(crate) close: bool,
}

pub(crate) enum Parse {
    Complete(Head),
    Partial,
    /// More headers than the front door looks at, the head perhaps not yet whole: Pingora's
    /// once it is ([`head_complete`]).
    Long,
    /// A whole head announcing a body (`Content-Length`, `Transfer-Encoding`): the rest of the
    /// connection is Pingora's, which knows where the body ends and what follows it.
    WithBody,
    /// Valid or not, a request for Pingora: not `GET`/`HEAD` HTTP/1.1 in origin form, a body
    /// (`Content-Length`, `Transfer-Encoding`), `Expect`, `Upgrade`, a `Connection` other than
    /// `keep-alive`/`close`, too many headers, or anything httparse or `http` refuses.
    NotOurs,
}

pub(crate) fn parse_head(buf: &[u8]) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parse::Long,
        Err(_) => return Parse::NotOurs,
    };
    // A body, whatever the method: Pingora's from here on (see `Parse::WithBody`).
    let framing = [&b"content-length"[..], b"transfer-encoding"];
    if parsed.headers.iter().any(|h| {
        framing
            .iter()
            .any(|f| h.name.as_bytes().eq_ignore_ascii_case(f))
    }) {
        return Parse::WithBody;
    }
    let (Some(method), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Parse::NotOurs;
    };
    if !(method == "GET" || method == "HEAD") || !path.starts_with('/') {
        return Parse::NotOurs;
    }
    let mut close = false;
    for h in parsed.headers.iter() {
        let name = h.name.as_bytes();
        let refused = [&b"expect"[..], b"upgrade"];
        if refused.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            return Parse::NotOurs;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            if h.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return Parse::NotOurs;
            }
        }
    }
    let Ok(mut req) =
        RequestHeader::build_no_case(method, path.as_bytes(), Some(parsed.headers.len()))
    else {
        return Parse::NotOurs;
    };
    for h in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) else {
            return Parse::NotOurs;
        };
        if req.append_header(name, value).is_err() {
            return Parse::NotOurs;
        }
    }
    // Pingora's own checks on `Host` (one value, no userinfo): refused heads are Pingora's.
    if pingora_core::protocols::http::authority::validate_request_authority(&req).is_err() {
        return Parse::NotOurs;
    }
    Parse::Complete(Head { req, len, close })
}

/// Whether `buf` holds a whole request head (its blank line, as httparse accepts it).
fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

/// `resp` as HTTP/1.1 bytes: the status line and its header lines, without the blank line and
/// without the headers written per response (`Date`, `Connection`, `Age`, and `also`).
pub fn head_bytes(resp: &ResponseHeader, also: &[&'static str]) -> Bytes {
    let mut h = resp.clone();
    for name in ["date", "connection", "age"].iter().chain(also) {
        h.remove_header(*name);
    }
    let mut out = BytesMut::with_capacity(512);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(h.status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(h.status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    h.header_to_h1_wire(&mut out);
    out.freeze()
}

pub(crate) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A header value that may be written as is (what `http::HeaderValue` accepts).
pub(crate) fn value_ok(v: &[u8]) -> bool {
    v.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// Writes head and body, in one `writev` when they do not fit the connection's write buffer,
/// and flushes.
async fn write_response(stream: &mut Stream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let (mut head, mut body) = (head, body);
    while !head.is_empty() {
        let n = stream
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n >= head.len() {
            body = &body[n - head.len()..];
            head = &[];
        } else {
            head = &head[n..];
        }
    }
    stream.write_all(body).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> Head {
        match parse_head(raw) {
            Parse::Complete(h) => h,
            Parse::Partial => panic!("partial: {:?}", String::from_utf8_lossy(raw)),
            Parse::NotOurs | Parse::Long | Parse::WithBody => {
                panic!("not ours: {:?}", String::from_utf8_lossy(raw))
            }
        }
    }

    #[test]
    fn plain_gets_and_heads_are_parsed_with_their_length() {
        let raw =
            b"GET /samples/a.jpg?w=10 HTTP/1.1\r\nHost: x\r\nAccept: image/webp\r\n\r\nGET /next";
        let h = complete(raw);
        assert_eq!(h.len, raw.len() - b"GET /next".len());
        assert_eq!(h.req.method, http::Method::GET);
        assert_eq!(h.req.uri.path(), "/samples/a.jpg");
        assert_eq!(h.req.uri.query(), Some("w=10"));
        assert_eq!(h.req.headers["accept"], "image/webp");
        assert!(!h.close);
        let h = complete(b"HEAD / HTTP/1.1\r\nConnection: Close\r\n\r\n");
        assert_eq!(h.req.method, http::Method::HEAD);
        assert!(h.close);
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parse::Partial
        ));
    }

    #[test]
    fn anything_unusual_is_left_to_pingora() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\n\r\n",
            b"PURGE / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: keep-alive, x\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x00",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
        ];
        for raw in cases {
            assert!(
                matches!(parse_head(raw), Parse::NotOurs | Parse::WithBody),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // Heads with a body are Pingora's for the rest of the connection.
        for raw in [
            &b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            assert!(matches!(parse_head(raw), Parse::WithBody));
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        // Too many headers for the front door: Pingora's, once the head is whole.
        assert!(matches!(parse_head(&many), Parse::Long));
        assert!(!head_complete(&many));
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse_head(&many), Parse::Long));
        assert!(head_complete(&many));
    }

    #[test]
    fn prepared_heads_leave_per_response_headers_out() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("content-length", "5").unwrap();
        resp.insert_header("date", "Mon, 01 Jan 2024 00:00:00 GMT")
            .unwrap();
        resp.insert_header("connection", "close").unwrap();
        resp.insert_header("age", "7").unwrap();
        resp.insert_header("x-cache", "HIT").unwrap();
        let wire = head_bytes(&resp, &[]);
        let text = std::str::from_utf8(&wire).unwrap().to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.contains("x-cache: hit\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n") && !text.ends_with("\r\n\r\n"),
            "{text}"
        );
        for gone in ["date:", "connection:", "age:"] {
            assert!(!text.contains(gone), "{text}");
        }
    }

    #[test]
    fn header_values_with_control_bytes_are_refused() {
        assert!(value_ok(b"abc 123\t/;=\"x\""));
        assert!(!value_ok(b"a\r\nx-injected: 1"));
        assert!(!value_ok(b"a\x00"));
        assert!(!value_ok(b"a\x7f"));
    }
}
