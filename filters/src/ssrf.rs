//! SSRF policy for external fetches: which addresses a CDN node must never connect to on a
//! client's behalf. Pure: the fetcher resolves names and asks here about every address
//! (first hop and every redirect), then connects to exactly the address it checked.
//!
//! Refused: unspecified, loopback, private (RFC 1918), CGNAT (100.64/10), link-local
//! (169.254/16, which holds the cloud metadata service 169.254.169.254), multicast,
//! broadcast, reserved and benchmarking ranges, `0.0.0.0/8`; IPv6 loopback, unspecified,
//! unique-local (fc00::/7, incl. AWS's fd00:ec2::254), link-local, multicast, documentation;
//! and the IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) and NAT64
//! (`64:ff9b::/96`) spellings of refused IPv4 addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused (for the error message).
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let n = u32::from(ip);
    let within = |net: u32, bits: u32| n >> (32 - bits) == net >> (32 - bits);
    Some(if ip.is_unspecified() || o[0] == 0 {
        "unspecified address"
    } else if ip.is_loopback() {
        "loopback address"
    } else if ip.is_private() {
        "private address"
    } else if within(0x6440_0000, 10) {
        "carrier-grade NAT address"
    } else if ip.is_link_local() {
        "link-local / cloud metadata address"
    } else if ip.is_multicast() {
        "multicast address"
    } else if ip.is_broadcast() || o[0] >= 240 {
        "reserved address"
    } else if within(0xc612_0000, 15) {
        "benchmarking address"
    } else if within(0xc000_0000, 24)
        || within(0xc000_0200, 24)
        || within(0xc633_6400, 24)
        || within(0xcb00_7100, 24)
    {
        "special-purpose address"
    } else {
        return None;
    })
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refusal_v4(v4);
    }
    let seg = ip.segments();
    // IPv4-compatible (deprecated) ::a.b.c.d and NAT64 64:ff9b::a.b.c.d.
    let embedded = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return refusal_v4(embedded).or(Some("IPv4-compatible address"));
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return refusal_v4(embedded);
    }
    Some(if ip.is_unspecified() {
        "unspecified address"
    } else if ip.is_loopback() {
        "loopback address"
    } else if seg[0] & 0xfe00 == 0xfc00 {
        "unique-local address"
    } else if seg[0] & 0xffc0 == 0xfe80 {
        "link-local address"
    } else if ip.is_multicast() {
        "multicast address"
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        "documentation address"
    } else {
        return None;
    })
}

/// Whether `url`'s scheme is allowed for external fetches.
pub fn scheme_allowed(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

/// Host allow/deny lists: exact names or `*.suffix` wildcards, case-insensitive. An empty
/// allowlist allows every host not denied.
pub fn host_allowed(host: &str, allow: &[String], deny: &[String]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let matches = |pat: &String| {
        let pat = pat.to_ascii_lowercase();
        match pat.strip_prefix("*.") {
            Some(suffix) => host == suffix || host.ends_with(&format!(".{suffix}")),
            None => host == pat,
        }
    };
    if deny.iter().any(matches) {
        return false;
    }
    allow.is_empty() || allow.iter().any(matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_addresses() {
        for bad in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(
                refusal(bad.parse().unwrap()).is_some(),
                "{bad} must be refused"
            );
        }
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(
                refusal(good.parse().unwrap()).is_none(),
                "{good} must be allowed"
            );
        }
    }

    #[test]
    fn hosts_and_schemes() {
        assert!(scheme_allowed("https") && scheme_allowed("HTTP"));
        assert!(!scheme_allowed("file") && !scheme_allowed("gopher") && !scheme_allowed("ftp"));
        let allow = vec!["*.example.com".to_string(), "cdn.net".to_string()];
        let deny = vec!["bad.example.com".to_string()];
        assert!(host_allowed("img.example.com", &allow, &deny));
        assert!(host_allowed("Example.COM.", &allow, &deny));
        assert!(!host_allowed("bad.example.com", &allow, &deny));
        assert!(!host_allowed("evil.com", &allow, &deny));
        assert!(host_allowed("evil.com", &[], &deny));
        assert!(!host_allowed("xcdn.net", &allow, &[]));
    }
}
