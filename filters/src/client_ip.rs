//! Who the client is: a CIDR set of trusted proxies and the rule that picks the client
//! address from the peer and the forwarding headers (`CF-Connecting-IP`, `X-Forwarded-For`,
//! `X-Real-IP`), honoured only when the peer itself is trusted. IPv4-mapped IPv6 addresses
//! are treated as IPv4 throughout. It must not do I/O or know about requests beyond a header
//! lookup.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Headers;

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct CidrError {
    pub input: String,
    pub reason: &'static str,
}

/// One network, `addr/len`, stored with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cidr {
    V4(u32, u8),
    V6(u128, u8),
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, normalize(ip)) {
            (Cidr::V4(net, len), IpAddr::V4(a)) => u32::from(a) & mask32(*len) == *net,
            (Cidr::V6(net, len), IpAddr::V6(a)) => u128::from(a) & mask128(*len) == *net,
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `2001:db8::/32`, a bare address (a /32 or /128), or an IPv4-mapped
    /// IPv6 network (`::ffff:10.0.0.0/104` → `10.0.0.0/8`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrError {
            input: crate::error::quote(s),
            reason,
        };
        let (addr, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.trim(), None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let len: Option<u8> = match len {
            Some(l) if !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit()) => {
                Some(
                    l.parse()
                        .map_err(|_| err("prefix length is not a number"))?,
                )
            }
            Some(_) => return Err(err("prefix length is not a number")),
            None => None,
        };
        match ip {
            IpAddr::V4(a) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return Err(err("IPv4 prefix length must be 0..=32"));
                }
                Ok(Cidr::V4(u32::from(a) & mask32(len), len))
            }
            IpAddr::V6(a) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return Err(err("IPv6 prefix length must be 0..=128"));
                }
                if let Some(v4) = a.to_ipv4_mapped() {
                    if len >= 96 {
                        let l4 = len - 96;
                        return Ok(Cidr::V4(u32::from(v4) & mask32(l4), l4));
                    }
                }
                Ok(Cidr::V6(u128::from(a) & mask128(len), len))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4(n, l) => write!(f, "{}/{l}", Ipv4Addr::from(*n)),
            Cidr::V6(n, l) => write!(f, "{}/{l}", Ipv6Addr::from(*n)),
        }
    }
}

/// A set of networks (trusted proxies). Deserializes from a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrSet {
    nets: Vec<Cidr>,
}

impl CidrSet {
    /// Parses every entry, reporting all bad ones at once.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, Vec<CidrError>> {
        let mut nets = Vec::with_capacity(items.len());
        let mut errs = Vec::new();
        for i in items {
            match i.as_ref().parse() {
                Ok(c) => nets.push(c),
                Err(e) => errs.push(e),
            }
        }
        if errs.is_empty() {
            Ok(CidrSet { nets })
        } else {
            Err(errs)
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = normalize(ip);
        self.nets.iter().any(|n| n.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Cidr> {
        self.nets.iter()
    }
}

impl FromIterator<Cidr> for CidrSet {
    fn from_iter<T: IntoIterator<Item = Cidr>>(iter: T) -> Self {
        CidrSet {
            nets: iter.into_iter().collect(),
        }
    }
}

impl Serialize for CidrSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.nets.iter().map(|n| n.to_string()))
    }
}

impl<'de> Deserialize<'de> for CidrSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        CidrSet::parse(&items).map_err(|errs| {
            let msg: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            serde::de::Error::custom(msg.join("; "))
        })
    }
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`) becomes IPv4; everything else is unchanged.
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Parses one forwarded address: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:80`,
/// with surrounding spaces and quotes tolerated.
pub fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(normalize(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| normalize(IpAddr::V6(a)));
    }
    let (host, port) = s.rsplit_once(':')?;
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return host.parse::<Ipv4Addr>().ok().map(IpAddr::V4);
    }
    None
}

/// The client address. When the peer is not trusted it is the client, whatever the
/// headers say. When it is trusted: `CF-Connecting-IP`, else the right-most
/// `X-Forwarded-For` entry that is not itself trusted (walking stops at an unparsable
/// entry), else `X-Real-IP`, else the peer.
pub fn resolve(peer: IpAddr, headers: &dyn Headers, trusted: &CidrSet) -> IpAddr {
    let peer = normalize(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    if let Some(ip) = headers
        .header("cf-connecting-ip")
        .and_then(parse_forwarded_ip)
    {
        return ip;
    }
    if let Some(xff) = headers.header("x-forwarded-for") {
        for entry in xff.rsplit(',') {
            if entry.trim().is_empty() {
                continue;
            }
            match parse_forwarded_ip(entry) {
                Some(ip) if trusted.contains(ip) => continue,
                Some(ip) => return ip,
                None => break,
            }
        }
    }
    if let Some(ip) = headers.header("x-real-ip").and_then(parse_forwarded_ip) {
        return ip;
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(items: &[&str]) -> CidrSet {
        CidrSet::parse(items).unwrap()
    }

    #[test]
    fn cidr_parse_table() {
        for (s, ok) in [
            ("10.0.0.0/8", Some("10.0.0.0/8")),
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("192.168.1.7", Some("192.168.1.7/32")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("2001:db8::/32", Some("2001:db8::/32")),
            ("::1", Some("::1/128")),
            ("::ffff:10.0.0.0/104", Some("10.0.0.0/8")),
            ("10.0.0.0/33", None),
            ("2001:db8::/129", None),
            ("10.0.0.0/", None),
            ("10.0.0.0/x", None),
            ("10.0.0/8", None),
            ("example.com", None),
            ("", None),
        ] {
            let got = s.parse::<Cidr>().ok().map(|c| c.to_string());
            assert_eq!(got.as_deref(), ok, "{s}");
        }
        let e = CidrSet::parse(&["10.0.0.0/8", "bad", "1.2.3.4/40"]).unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].to_string(), "invalid CIDR \"bad\": not an IP address");
    }

    #[test]
    fn contains_table() {
        let s = set(&["10.0.0.0/8", "2001:db8::/32", "203.0.113.9"]);
        for (a, want) in [
            ("10.9.8.7", true),
            ("11.0.0.1", false),
            ("::ffff:10.1.1.1", true),
            ("2001:db8:ffff::1", true),
            ("2001:db9::1", false),
            ("203.0.113.9", true),
            ("203.0.113.10", false),
        ] {
            assert_eq!(s.contains(ip(a)), want, "{a}");
        }
        assert!(set(&["0.0.0.0/0"]).contains(ip("1.2.3.4")));
        assert!(!set(&["0.0.0.0/0"]).contains(ip("2001:db8::1")));
    }

    #[test]
    fn resolve_table() {
        let trusted = set(&["10.0.0.0/8", "::1"]);
        type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let rows: &[Row] = &[
            // Untrusted peer: headers ignored.
            (
                "198.51.100.1",
                &[
                    ("CF-Connecting-IP", "1.1.1.1"),
                    ("X-Forwarded-For", "2.2.2.2"),
                ],
                "198.51.100.1",
            ),
            // Trusted peer: CF-Connecting-IP first.
            (
                "10.0.0.1",
                &[
                    ("CF-Connecting-IP", "1.1.1.1"),
                    ("X-Forwarded-For", "2.2.2.2"),
                ],
                "1.1.1.1",
            ),
            // Right-most untrusted XFF entry (spoofed left entries ignored).
            (
                "10.0.0.1",
                &[("X-Forwarded-For", "6.6.6.6, 3.3.3.3, 10.0.0.5")],
                "3.3.3.3",
            ),
            (
                "10.0.0.1",
                &[("X-Forwarded-For", "3.3.3.3:4444")],
                "3.3.3.3",
            ),
            (
                "10.0.0.1",
                &[("X-Forwarded-For", "[2001:db8::5]:443")],
                "2001:db8::5",
            ),
            (
                "10.0.0.1",
                &[("X-Forwarded-For", "::ffff:4.4.4.4")],
                "4.4.4.4",
            ),
            // All XFF entries trusted → X-Real-IP → peer.
            (
                "10.0.0.1",
                &[("X-Forwarded-For", "10.0.0.2"), ("X-Real-IP", "5.5.5.5")],
                "5.5.5.5",
            ),
            ("10.0.0.1", &[("X-Forwarded-For", "10.0.0.2")], "10.0.0.1"),
            // Garbage stops the walk.
            (
                "10.0.0.1",
                &[("X-Forwarded-For", "7.7.7.7, garbage, 10.0.0.3")],
                "10.0.0.1",
            ),
            (
                "10.0.0.1",
                &[("CF-Connecting-IP", "not-an-ip"), ("X-Real-IP", "5.5.5.5")],
                "5.5.5.5",
            ),
            // IPv4-mapped trusted peer.
            ("::ffff:10.0.0.1", &[("X-Real-IP", "5.5.5.5")], "5.5.5.5"),
            (
                "::ffff:198.51.100.1",
                &[("X-Real-IP", "5.5.5.5")],
                "198.51.100.1",
            ),
            ("::1", &[("X-Forwarded-For", "2001:db8::9")], "2001:db8::9"),
        ];
        for (peer, headers, want) in rows {
            let got = resolve(ip(peer), headers, &trusted);
            assert_eq!(got, ip(want), "peer {peer} headers {headers:?}");
        }
    }

    #[test]
    fn serde_list() {
        #[derive(Deserialize)]
        struct C {
            trusted: CidrSet,
        }
        let c: C = toml::from_str(r#"trusted = ["10.0.0.0/8", "::1"]"#).unwrap();
        assert!(c.trusted.contains(ip("10.2.3.4")));
        let e = toml::from_str::<C>(r#"trusted = ["10.0.0.0/99"]"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("IPv4 prefix length must be 0..=32"), "{e}");
    }
}
