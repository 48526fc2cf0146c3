//! Fuzz harnesses over the parsers of untrusted bytes, shared by the `proxy/fuzz` targets
//! (cargo fuzz) and by unit tests that run them on generated inputs in every `cargo test`.
//!
//! Each harness returns `Err` with what went wrong instead of panicking, so a fuzz target can
//! `panic!` on it and a test can print it. Must not do I/O beyond in-memory streams.

use crate::edge::front::{parse_head, Parse};
use crate::edge::policy;
use crate::edge::storage::format;

/// The disk tier's meta format: anything decodes or is refused without a panic, and what
/// decodes encodes back to the same bytes.
pub fn disk_format(data: &[u8]) -> Result<(), String> {
    if let Some((write_id, body_len, meta)) = format::decode_meta(data) {
        let again = format::encode_meta(&meta, body_len, write_id);
        if again != data {
            return Err(format!("decode/encode changed {} bytes", data.len()));
        }
    }
    if data.len() >= 8 {
        let id = u64::from_be_bytes(data[..8].try_into().map_err(|_| "slice")?);
        if !format::body_header_matches(&format::body_header(id), id) {
            return Err("a body header does not match its own write id".into());
        }
    }
    let _ = format::body_header_matches(data, 0);
    Ok(())
}

/// A transform worker's reply, as the node reads it: anything is decoded or refused without a
/// panic and without buffering a body past its bound, and what decodes encodes back the same.
#[cfg(feature = "image-engine")]
pub fn sandbox_reply(data: &[u8]) -> Result<(), String> {
    use crate::transform::sandbox::wire::{self, Reply};
    const MAX: u64 = 1 << 16;
    if let Ok((reply, body, used)) = wire::decode::<Reply>(data, MAX) {
        if body.len() as u64 > MAX {
            return Err(format!(
                "a body of {} bytes passed a bound of {MAX}",
                body.len()
            ));
        }
        let again = wire::frame(&reply, &body);
        let (back, body2, _) = wire::decode::<Reply>(&again, MAX).map_err(|e| e.to_string())?;
        if back != reply || body2 != body || used > data.len() {
            return Err("a decoded reply does not encode back to itself".into());
        }
    }
    Ok(())
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
}

/// Pingora's verdict on `data` as a request head: its header and the head's length.
fn pingora_head(data: &[u8]) -> Option<(pingora_http::RequestHeader, usize)> {
    use tokio::io::AsyncWriteExt;
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(data.len() + 1);
            client.write_all(data).await.ok()?;
            drop(client);
            let mut s =
                pingora_core::protocols::http::v1::server::HttpSession::new(Box::new(server));
            let n = s.read_request().await.ok()??;
            Some((s.req_header().clone(), n))
        })
    })
}

/// The front door's head parser against Pingora's on the same bytes: a head the front door
/// answers itself must be one Pingora reads the same way (method, target, headers) and ends
/// at the same byte, so the two can never disagree about request boundaries.
pub fn front_door_head(data: &[u8]) -> Result<(), String> {
    let Parse::Complete(ours) = parse_head(data) else {
        // Anything else goes to Pingora with its bytes untouched.
        return Ok(());
    };
    let Some((theirs, n)) = pingora_head(data) else {
        return Err(format!(
            "the front door takes a head Pingora refuses: {:?}",
            lossy(data)
        ));
    };
    if n != ours.len {
        return Err(format!(
            "head ends at {} for the front door, {n} for Pingora",
            ours.len
        ));
    }
    if ours.req.method != theirs.method || ours.req.uri != theirs.uri {
        return Err(format!(
            "{} {} vs {} {}",
            ours.req.method, ours.req.uri, theirs.method, theirs.uri
        ));
    }
    if ours.req.headers != theirs.headers {
        return Err(format!(
            "headers differ: {:?} vs {:?}",
            ours.req.headers, theirs.headers
        ));
    }
    Ok(())
}

/// The origin request built from any head Pingora accepts: only allow-listed headers, no body
/// framing, and a head the origin service's parser (httparse, as hyper's) accepts.
pub fn origin_request(data: &[u8]) -> Result<(), String> {
    let Some((req, _)) = pingora_head(data) else {
        return Ok(());
    };
    let mut up = req.clone();
    policy::origin_request(&mut up, "0123456789abcdef0123456789abcdef")
        .map_err(|e| format!("building the origin request: {e}"))?;
    for name in up.headers.keys() {
        let n = name.as_str();
        if n != "host" && !policy::ORIGIN_REQUEST_HEADERS.contains(&n) {
            return Err(format!("{n} reached the origin request"));
        }
    }
    for framing in ["content-length", "transfer-encoding"] {
        if up.headers.contains_key(framing) {
            return Err(format!("{framing} reached the origin request"));
        }
    }
    let mut wire = bytes::BytesMut::new();
    wire.extend_from_slice(format!("{} {} HTTP/1.1\r\n", up.method, up.uri).as_bytes());
    up.header_to_h1_wire(&mut wire);
    wire.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 100];
    match httparse::Request::new(&mut headers).parse(&wire) {
        Ok(httparse::Status::Complete(n)) if n == wire.len() => Ok(()),
        other => Err(format!(
            "the origin service would refuse {:?}: {other:?}",
            lossy(&wire)
        )),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift) for inputs.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Flips a byte of `b`, cuts it or extends it (by `round`).
        fn mutate(&mut self, b: &mut Vec<u8>, round: usize) {
            match round % 3 {
                0 => {
                    let at = (self.next() as usize) % b.len();
                    b[at] ^= (self.next() as u8) | 1;
                }
                1 => b.truncate((self.next() as usize) % b.len()),
                _ => b.extend((0..(self.next() % 16)).map(|_| self.next() as u8)),
            }
        }

        /// The first item most of the time (a valid piece), else any.
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            if self.next() % 4 != 0 {
                return items[0];
            }
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    /// Request heads built from pieces that exercise the edges of both parsers.
    fn heads(n: usize) -> Vec<Vec<u8>> {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let methods = ["GET", "HEAD", "POST", "get", "GET ", "PURGE"];
        let targets = [
            "/a",
            "/samples/p.jpg?w=1",
            "*",
            "http://x/a",
            "/a b",
            "/%00",
            "/a?x=\u{1}",
        ];
        let versions = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "];
        let headers = [
            "Host: x",
            "host: x",
            "Host: a@b",
            "Content-Length: 0",
            "Content-Length: 0, 0",
            "Transfer-Encoding: chunked",
            "Connection: close",
            "Connection: keep-alive, x",
            "X-A: 1",
            "X-A:",
            " X-B: folded",
            "X-C: \u{1}",
            "Range: bytes=0-1",
            "Expect: 100-continue",
            "Upgrade: h2c",
            "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "Bad Header: x",
            "X-Tab:\tv",
            "x-media-edge-fill: x",
            "If-None-Match: \"e\"",
        ];
        let ends = [
            "\r\n\r\n",
            "\n\n",
            "\r\n",
            "\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
            "\r\n\r\nbody",
        ];
        (0..n)
            .map(|_| {
                let mut s = format!(
                    "{} {} {}",
                    g.pick(&methods),
                    g.pick(&targets),
                    g.pick(&versions)
                );
                s.push_str("\r\nHost: x");
                for _ in 0..(g.next() % 5) {
                    s.push_str("\r\n");
                    let h = if g.next() % 2 == 0 {
                        headers[8]
                    } else {
                        g.pick(&headers[1..])
                    };
                    s.push_str(h);
                }
                s.push_str(g.pick(&ends));
                s.into_bytes()
            })
            .collect()
    }

    #[test]
    fn the_front_door_and_pingora_agree_on_generated_heads() {
        let (mut ours, mut pingoras) = (0, 0);
        for h in heads(3000) {
            front_door_head(&h).unwrap();
            origin_request(&h).unwrap();
            ours += usize::from(matches!(parse_head(&h), Parse::Complete(_)));
            pingoras += usize::from(pingora_head(&h).is_some());
        }
        // The generator reaches both verdicts often (else the comparison proves nothing).
        assert!(ours > 300, "front door took {ours}");
        assert!(pingoras > ours, "Pingora took {pingoras}");
    }

    #[cfg(feature = "image-engine")]
    #[test]
    fn sandbox_replies_survive_generated_bytes() {
        use crate::transform::sandbox::wire::{frame, ErrorKind, Reply};
        let mut g = Gen(7);
        let seeds = [
            frame(
                &Reply::Output {
                    content_type: "image/webp".into(),
                    width: 10,
                    height: 20,
                    headers: vec![("vary".into(), "Accept".into())],
                },
                b"RIFF0000WEBP",
            ),
            frame(
                &Reply::Error {
                    kind: ErrorKind::Invalid,
                    message: "bad".into(),
                },
                b"",
            ),
            frame(&Reply::Need { bytes: 1 << 40 }, b""),
        ];
        for i in 0..6000 {
            let mut b = seeds[i % seeds.len()].clone();
            g.mutate(&mut b, i);
            sandbox_reply(&b).unwrap();
        }
        for s in &seeds {
            sandbox_reply(s).unwrap();
        }
    }

    #[test]
    fn the_disk_format_survives_generated_bytes() {
        let mut g = Gen(42);
        let good = format::encode_meta(&(vec![1, 2, 3], vec![4, 5]), 10, 7);
        for i in 0..5000 {
            let mut b = good.clone();
            g.mutate(&mut b, i);
            disk_format(&b).unwrap();
        }
        disk_format(&good).unwrap();
    }
}
