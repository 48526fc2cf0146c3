//! Table tests of the cache policy: one row per rule.

use super::*;

fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(status, None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}

const LIMITS: Limits = Limits {
    max_object: 1000,
    stale_while_revalidate: Duration::from_secs(7),
    stale_if_error: Duration::from_secs(9),
    max_ttl: Duration::from_secs(100),
};

/// `Some(ttl in s, swr, sie)` when stored, `None` when not.
fn decide(r: &ResponseHeader, req: Request) -> Option<(u64, u32, u32)> {
    let now = SystemTime::now();
    match cacheability(r, req, &LIMITS, now) {
        RespCacheable::Cacheable(m) => Some((
            m.fresh_until().duration_since(now).unwrap().as_secs(),
            m.stale_while_revalidate_sec(),
            m.stale_if_error_sec(),
        )),
        RespCacheable::Uncacheable(_) => None,
    }
}

#[test]
fn what_is_stored_and_for_how_long() {
    let class = |s| Request {
        class_ttl: Some(Duration::from_secs(s)),
    };
    #[rustfmt::skip]
    let rows: Vec<(&str, ResponseHeader, Request, Option<(u64, u32, u32)>)> = vec![
        ("max-age wins over the class TTL", resp(200, &[("cache-control", "max-age=30")]), class(60), Some((30, 7, 9))),
        ("class TTL when the response says nothing", resp(200, &[]), class(60), Some((60, 7, 9))),
        ("class TTL of an error status", resp(404, &[]), class(5), Some((5, 7, 9))),
        ("no TTL at all: not stored", resp(200, &[]), Request::default(), None),
        ("response's own stale windows", resp(200, &[("cache-control", "max-age=30, stale-while-revalidate=3, stale-if-error=4")]), class(60), Some((30, 3, 4))),
        ("partial content", resp(206, &[("cache-control", "max-age=30")]), class(60), None),
        ("not modified", resp(304, &[]), class(60), None),
        ("vary star", resp(200, &[("vary", "Accept, *")]), class(60), None),
        ("set-cookie", resp(200, &[("set-cookie", "a=b")]), class(60), None),
        ("no-store", resp(200, &[("cache-control", "no-store")]), class(60), None),
        ("private", resp(200, &[("cache-control", "private, max-age=30")]), class(60), None),
        ("over the size limit", resp(200, &[("content-length", "1001")]), class(60), None),
        ("at the size limit", resp(200, &[("content-length", "1000")]), class(60), Some((60, 7, 9))),
        // s-maxage implies proxy-revalidate (RFC 9111 5.2.2.10): no stale serving.
        ("a year of max-age is capped at max_ttl", resp(200, &[("cache-control", "max-age=31536000, stale-while-revalidate=31536000")]), class(60), Some((100, 100, 9))),
        ("s-maxage for shared caches", resp(200, &[("cache-control", "max-age=5, s-maxage=20")]), class(60), Some((20, 0, 0))),
    ];
    for (why, r, req, want) in rows {
        let got = decide(&r, req);
        // Freshness is computed from two clock reads: allow a second.
        let ok = match (got, want) {
            (Some((a, s1, e1)), Some((b, s2, e2))) => a.abs_diff(b) <= 1 && s1 == s2 && e1 == e2,
            (g, w) => g == w,
        };
        assert!(ok, "{why}: got {got:?}, want {want:?}");
    }
}

#[test]
fn private_headers_are_not_stored() {
    let r = resp(
        200,
        &[
            ("cache-control", "max-age=30, private=\"x-secret\""),
            ("x-secret", "1"),
            ("x-public", "2"),
        ],
    );
    let RespCacheable::Cacheable(m) =
        cacheability(&r, Request::default(), &LIMITS, SystemTime::now())
    else {
        panic!("stored");
    };
    assert!(m.headers().get("x-secret").is_none());
    assert_eq!(m.headers().get("x-public").unwrap(), "2");
}

#[test]
fn x_cache_names_each_phase() {
    use pingora_cache::NoCacheReason::NeverEnabled;
    #[rustfmt::skip]
    let rows = [
        (CachePhase::Hit, None, false, "HIT"),
        (CachePhase::Stale, None, false, "STALE"),
        (CachePhase::StaleUpdating, None, false, "STALE"),
        (CachePhase::Expired, Some(502), false, "STALE"),
        (CachePhase::Expired, None, false, "STALE"),
        (CachePhase::Expired, Some(200), false, "EXPIRED"),
        (CachePhase::Revalidated, Some(304), false, "REVALIDATED"),
        (CachePhase::Miss, Some(200), false, "MISS"),
        (CachePhase::Disabled(NeverEnabled), Some(206), true, "MISS"),
        (CachePhase::Disabled(NeverEnabled), None, false, "BYPASS"),
        (CachePhase::Bypass, None, false, "BYPASS"),
    ];
    for (phase, upstream, passthrough, want) in rows {
        assert_eq!(
            x_cache(phase, upstream, passthrough),
            want,
            "{phase:?} {upstream:?}"
        );
    }
    assert!(from_storage(CachePhase::Hit) && from_storage(CachePhase::Revalidated));
    assert!(!from_storage(CachePhase::Miss) && !from_storage(CachePhase::Expired));
}

#[test]
fn variants_follow_the_stored_vary_names() {
    let mut stored = http::HeaderMap::new();
    assert!(variance(&stored, &RequestHeader::build("GET", b"/", None).unwrap()).is_none());
    stored.append("vary", "Accept, accept-encoding".parse().unwrap());
    let req = |accept: &str| {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("accept", accept).unwrap();
        r
    };
    let a = variance(&stored, &req("image/webp")).unwrap();
    assert_eq!(variance(&stored, &req("image/webp")), Some(a));
    assert_ne!(variance(&stored, &req("image/avif")), Some(a));
    // Names are case-insensitive and deduplicated.
    let mut spelled = http::HeaderMap::new();
    spelled.append("vary", "ACCEPT-ENCODING, accept, Accept".parse().unwrap());
    assert_eq!(variance(&spelled, &req("image/webp")), Some(a));
}

#[test]
fn stale_on_error_only_for_origin_failures() {
    use pingora_error::ErrorType;
    assert!(serves_stale(None));
    let up = Error::explain(ErrorType::ConnectRefused, "x").into_up();
    let down = Error::explain(ErrorType::ReadError, "x").into_down();
    assert!(serves_stale(Some(&up)));
    assert!(!serves_stale(Some(&down)));
}

#[test]
fn the_origin_service_is_sent_an_allow_list() {
    let mut req = RequestHeader::build("GET", b"/a.jpg", None).unwrap();
    for (k, v) in [
        ("host", "example.com"),
        ("content-length", "0, 0"),
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive, x-foo"),
        ("te", "trailers"),
        ("upgrade", "h2c"),
        ("cookie", "a=b"),
        ("authorization", "Bearer t"),
        ("x-media-edge-fill", "guess"),
        ("range", "bytes=0-9"),
        ("if-none-match", "\"e\""),
        ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("x-request-id", "abc"),
        ("x-pad", "1"),
        ("x-pad", "2"),
    ] {
        req.append_header(k, v).unwrap();
    }
    let mut dropped: Vec<String> = not_for_origin(&req)
        .iter()
        .map(|n| n.as_str().to_string())
        .collect();
    dropped.sort();
    assert_eq!(
        dropped,
        [
            "authorization",
            "connection",
            "content-length",
            "cookie",
            "host",
            "te",
            "transfer-encoding",
            "upgrade",
            "x-media-edge-fill",
            "x-pad"
        ]
    );
    for status in CLIENT_DEPENDENT {
        let r = resp(status, &[("cache-control", "public, max-age=600")]);
        let req = Request {
            class_ttl: Some(Duration::from_secs(60)),
        };
        assert_eq!(decide(&r, req), None, "{status} is about the request");
    }
}
