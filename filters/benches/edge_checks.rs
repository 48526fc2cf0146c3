//! The per-request security cost at the edge: signature verification + client-IP resolution
//! + a rate-limit check (target: under 2 µs together), and the rate limiter's memory under a
//! flood of 100,000 distinct client IPs (it must stay bounded).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use filters::{client_ip, signature, CidrSet, OperationClass, RateLimitConfig};
use pingora_limits::rate::Rate;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    let secret = b"a-long-signing-secret-from-the-environment";
    let url = signature::sign(
        "/images/hero.jpg?width=640&format=webp",
        4_102_444_800,
        secret,
        None,
    );
    let keys: Vec<(&str, &[u8])> = vec![("default", secret)];
    let trusted =
        CidrSet::parse(&["173.245.48.0/20", "103.21.244.0/22", "2400:cb00::/32"]).expect("cidrs");
    let headers: &[(&str, &str)] = &[
        ("CF-Connecting-IP", "198.51.100.23"),
        ("X-Forwarded-For", "198.51.100.23"),
    ];
    let peer: IpAddr = "173.245.48.7".parse().expect("ip");
    let limits = RateLimitConfig::default();
    let rate = Rate::new(Duration::from_secs(60));
    c.bench_function("edge/verify+client_ip+rate_check", |b| {
        b.iter(|| {
            let ok = signature::verify(black_box(&url), 1_800_000_000, &keys).is_ok();
            let ip = client_ip::resolve(black_box(peer), &headers, &trusted);
            let key = limits.bucket_key(OperationClass::Image, ip);
            let n = rate.observe(&key, 1);
            (ok, n <= 100)
        })
    });

    // Flood: 100,000 distinct client IPs through one limiter.
    let before = rss_kib();
    let flood = Rate::new(Duration::from_secs(60));
    for i in 0..100_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        flood.observe(&limits.bucket_key(OperationClass::Image, ip), 1);
    }
    let after = rss_kib();
    println!(
        "rate limiter under a 100k-distinct-IP flood: RSS {before} KiB -> {after} KiB (+{} KiB); \
         the count-min sketch is fixed-size, so 1M IPs cost the same",
        after.saturating_sub(before)
    );
    black_box(&flood);
}

criterion_group!(benches, bench);
criterion_main!(benches);
