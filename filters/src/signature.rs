//! Signed URLs: HMAC-SHA256 over the path, the query without the signing parameters, and
//! the expiry; base64url (no padding) in `signature=`, Unix seconds in `expires=`, an
//! optional key id in `kid=` for key rotation. It owns the message format, signing and
//! constant-time verification; the clock and the secrets are passed in.
//!
//! Message: `{path}` + (`?{query}` when parameters remain) + `\n` + `{expires}` (decimal,
//! as parsed). The query keeps every other parameter byte for byte and in order, dropping
//! only `signature`, `expires` and `kid` (and empty `&&` segments). The newline separator
//! keeps the trailing query value and the expiry from running together: without it
//! `?w=15` expiring at `1700000000` and `?w=1` expiring at `51700000000` would sign the
//! same bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// Why a signed URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// No `signature` or no `expires` parameter.
    #[error("missing {0} parameter")]
    Missing(&'static str),
    /// Genuine, but `expires` is in the past.
    #[error("signature expired at {expires} (now {now})")]
    Expired { expires: u64, now: u64 },
    /// Tampered, malformed or signed with another key.
    #[error("invalid signature: {0}")]
    Invalid(&'static str),
    /// `kid` names no configured key.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
}

impl SignatureError {
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            SignatureError::Missing(_) => crate::ErrorCode::Unauthorized,
            _ => crate::ErrorCode::Forbidden,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            SignatureError::Missing(_) => 401,
            _ => 403,
        }
    }
}

/// The signing parameters pulled out of a query, and the query without them.
struct Split<'a> {
    path: &'a str,
    rest: String,
    signature: Option<&'a str>,
    expires: Option<&'a str>,
    kid: Option<&'a str>,
    duplicate: bool,
}

fn split(path_and_query: &str) -> Split<'_> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut s = Split {
        path,
        rest: String::new(),
        signature: None,
        expires: None,
        kid: None,
        duplicate: false,
    };
    for seg in query.unwrap_or("").split('&') {
        if seg.is_empty() {
            continue;
        }
        let (name, value) = seg.split_once('=').unwrap_or((seg, ""));
        let slot = match name {
            "signature" => &mut s.signature,
            "expires" => &mut s.expires,
            "kid" => &mut s.kid,
            _ => {
                if !s.rest.is_empty() {
                    s.rest.push('&');
                }
                s.rest.push_str(seg);
                continue;
            }
        };
        if slot.is_some() {
            s.duplicate = true;
        }
        *slot = Some(value);
    }
    s
}

fn message(path: &str, rest: &str, expires: u64) -> String {
    let mut m = String::with_capacity(path.len() + rest.len() + 22);
    m.push_str(path);
    if !rest.is_empty() {
        m.push('?');
        m.push_str(rest);
    }
    m.push('\n');
    m.push_str(&expires.to_string());
    m
}

fn mac(secret: &[u8], msg: &str) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(msg.as_bytes());
    m
}

/// Signs `path_and_query` (any existing `signature`/`expires`/`kid` are replaced) and
/// returns it with `expires=`, `kid=` (when given) and `signature=` appended.
pub fn sign(path_and_query: &str, expires: u64, secret: &[u8], kid: Option<&str>) -> String {
    let s = split(path_and_query);
    let tag = mac(secret, &message(s.path, &s.rest, expires))
        .finalize()
        .into_bytes();
    let mut out = String::with_capacity(path_and_query.len() + 80);
    out.push_str(s.path);
    out.push('?');
    if !s.rest.is_empty() {
        out.push_str(&s.rest);
        out.push('&');
    }
    out.push_str("expires=");
    out.push_str(&expires.to_string());
    if let Some(kid) = kid {
        out.push_str("&kid=");
        out.extend(form_urlencoded::byte_serialize(kid.as_bytes()));
    }
    out.push_str("&signature=");
    out.push_str(&URL_SAFE_NO_PAD.encode(tag));
    out
}

/// Verifies a signed `path_and_query` (raw, as received) at `now_unix` against `keys`
/// (`(id, secret)`). With `kid`, only that key is tried; without, every key is.
pub fn verify(
    path_and_query: &str,
    now_unix: u64,
    keys: &[(&str, &[u8])],
) -> Result<(), SignatureError> {
    let s = split(path_and_query);
    let sig = s.signature.ok_or(SignatureError::Missing("signature"))?;
    let expires = s.expires.ok_or(SignatureError::Missing("expires"))?;
    if s.duplicate {
        return Err(SignatureError::Invalid(
            "signing parameter given more than once",
        ));
    }
    let expires: u64 = crate::params::parse_uint(expires)
        .ok_or(SignatureError::Invalid("expires is not a Unix time"))?;
    let tag = URL_SAFE_NO_PAD
        .decode(sig.trim_end_matches('='))
        .map_err(|_| SignatureError::Invalid("signature is not base64url"))?;
    if tag.len() != 32 {
        return Err(SignatureError::Invalid("signature has the wrong length"));
    }
    let msg = message(s.path, &s.rest, expires);
    let ok = match s.kid {
        Some(kid) => {
            let kid_decoded = form_urlencoded::parse(format!("k={kid}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let (_, secret) = keys
                .iter()
                .find(|(id, _)| *id == kid_decoded)
                .ok_or_else(|| SignatureError::UnknownKey(crate::error::quote(&kid_decoded)))?;
            mac(secret, &msg).verify_slice(&tag).is_ok()
        }
        // Try every key; do not stop early so timing does not reveal which key matched.
        None => keys.iter().fold(false, |acc, (_, secret)| {
            mac(secret, &msg).verify_slice(&tag).is_ok() | acc
        }),
    };
    if !ok {
        return Err(SignatureError::Invalid("signature does not match"));
    }
    if now_unix > expires {
        return Err(SignatureError::Expired {
            expires,
            now: now_unix,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &[u8] = b"first-secret";
    const K2: &[u8] = b"second-secret";

    #[test]
    fn sign_then_verify() {
        let url = sign("/v/clip.mp4?width=640&mode=frame", 2_000, K1, None);
        assert!(url.starts_with("/v/clip.mp4?width=640&mode=frame&expires=2000&signature="));
        assert_eq!(verify(&url, 1_000, &[("a", K1)]), Ok(()));
        assert_eq!(verify(&url, 2_000, &[("a", K1)]), Ok(()));
        // Key rotation: any configured key may match when no kid is given.
        assert_eq!(verify(&url, 1_000, &[("b", K2), ("a", K1)]), Ok(()));
        let bare = sign("/a.jpg", 2_000, K1, None);
        assert!(bare.starts_with("/a.jpg?expires=2000&signature="));
        assert_eq!(verify(&bare, 0, &[("a", K1)]), Ok(()));
    }

    #[test]
    fn message_format_is_stable() {
        // Pinned so other signers can be checked against it.
        assert_eq!(message("/a.jpg", "w=1", 5), "/a.jpg?w=1\n5");
        assert_eq!(message("/a.jpg", "", 5), "/a.jpg\n5");
        let url = sign("/a.jpg?w=1", 5, b"k", None);
        let expect = URL_SAFE_NO_PAD.encode(mac(b"k", "/a.jpg?w=1\n5").finalize().into_bytes());
        assert!(url.ends_with(&expect));
    }

    #[test]
    fn signing_params_anywhere_in_the_query() {
        let url = sign("/a.jpg?w=1&h=2", 99, K1, None);
        let sig = url.rsplit_once("signature=").unwrap().1;
        let moved = format!("/a.jpg?signature={sig}&w=1&expires=99&h=2");
        assert_eq!(verify(&moved, 0, &[("a", K1)]), Ok(()));
        // Re-signing replaces the old signing params.
        let again = sign(&url, 120, K2, Some("k2"));
        assert_eq!(again.matches("expires=").count(), 1);
        assert_eq!(verify(&again, 100, &[("k1", K1), ("k2", K2)]), Ok(()));
    }

    #[test]
    fn errors_table() {
        let good = sign("/a.jpg?w=100", 1_000, K1, None);
        let with_kid = sign("/a.jpg?w=100", 1_000, K1, Some("k1"));
        let keys: &[(&str, &[u8])] = &[("k1", K1)];
        for (url, now, want) in [
            (
                "/a.jpg?w=100".to_string(),
                0,
                SignatureError::Missing("signature"),
            ),
            (
                "/a.jpg?w=100&signature=abc".to_string(),
                0,
                SignatureError::Missing("expires"),
            ),
            (
                good.clone(),
                1_001,
                SignatureError::Expired {
                    expires: 1_000,
                    now: 1_001,
                },
            ),
            (
                good.replace("w=100", "w=101"),
                0,
                SignatureError::Invalid("signature does not match"),
            ),
            (
                good.replace("expires=1000", "expires=9000"),
                0,
                SignatureError::Invalid("signature does not match"),
            ),
            (
                format!("{good}&w=5"),
                0,
                SignatureError::Invalid("signature does not match"),
            ),
            (
                good.replace("/a.jpg", "/b.jpg"),
                0,
                SignatureError::Invalid("signature does not match"),
            ),
            (
                format!("{good}&expires=1000"),
                0,
                SignatureError::Invalid("signing parameter given more than once"),
            ),
            (
                good.replace("expires=1000", "expires=soon"),
                0,
                SignatureError::Invalid("expires is not a Unix time"),
            ),
            (
                "/a.jpg?expires=1&signature=***".to_string(),
                0,
                SignatureError::Invalid("signature is not base64url"),
            ),
            (
                "/a.jpg?expires=1&signature=abcd".to_string(),
                0,
                SignatureError::Invalid("signature has the wrong length"),
            ),
            (
                with_kid.replace("kid=k1", "kid=k9"),
                0,
                SignatureError::UnknownKey("k9".into()),
            ),
        ] {
            assert_eq!(verify(&url, now, keys), Err(want.clone()), "{url}");
        }
        assert_eq!(
            verify(&good, 0, &[("k2", K2)]),
            Err(SignatureError::Invalid("signature does not match"))
        );
        assert_eq!(
            verify(&good, 0, &[]),
            Err(SignatureError::Invalid("signature does not match"))
        );
        // kid pins the key: a signature by another configured key is refused.
        let by_k1 = sign("/a.jpg", 1_000, K1, Some("k2"));
        assert!(verify(&by_k1, 0, &[("k1", K1), ("k2", K2)]).is_err());
        assert_eq!(SignatureError::Missing("signature").status(), 401);
        assert_eq!(SignatureError::Invalid("x").code(), "FORBIDDEN");
    }

    #[test]
    fn digits_cannot_move_between_query_and_expiry() {
        let url = sign("/a.jpg?w=15", 1_700_000_000, K1, None);
        let sig = url.rsplit_once("signature=").unwrap().1;
        let forged = format!("/a.jpg?w=1&expires=51700000000&signature={sig}");
        assert!(verify(&forged, 0, &[("a", K1)]).is_err());
    }
}
