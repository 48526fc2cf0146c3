//! Resolving a typical Akamai request with client hints (target: under 5 µs).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use filters::{resolve, FiltersConfig, RequestParts, ResolveOptions};

fn bench(c: &mut Criterion) {
    let cfg = FiltersConfig::default();
    let opts = ResolveOptions::default();
    let headers: &[(&str, &str)] = &[
        ("Host", "media.example.test"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("Accept", "image/avif,image/webp,*/*"),
        ("Sec-CH-Viewport-Width", "412"),
        ("Sec-CH-DPR", "2.625"),
        ("CF-Device-Type", "mobile"),
        ("X-Forwarded-For", "203.0.113.7"),
    ];
    c.bench_function("resolve/akamai_imwidth_with_headers", |b| {
        b.iter(|| {
            let req = RequestParts {
                path: black_box("/videos/2024/launch/clip.mp4"),
                query: black_box(Some(
                    "imwidth=640&imformat=h264&start=5s&dur=10s&mute=true&utm_source=newsletter",
                )),
                headers: &headers,
            };
            resolve(&req, &cfg, &opts).map(|r| r.cache_key.len())
        })
    });
    c.bench_function("resolve/query_responsive", |b| {
        b.iter(|| {
            let req = RequestParts {
                path: black_box("/images/hero.jpg"),
                query: black_box(Some("format=auto&quality=high&fit=cover")),
                headers: &headers,
            };
            resolve(&req, &cfg, &opts).map(|r| r.cache_key.len())
        })
    });
    c.bench_function("resolve/cdn_cgi_media", |b| {
        b.iter(|| {
            let req = RequestParts {
                path: black_box(
                    "/cdn-cgi/media/mode=frame,time=3s,width=640,format=jpg/videos/a.mp4",
                ),
                query: None,
                headers: &headers,
            };
            resolve(&req, &cfg, &opts).map(|r| r.cache_key.len())
        })
    });
    c.bench_function("signature/verify", |b| {
        let url = filters::signature::sign(
            "/videos/clip.mp4?imwidth=640&imformat=h264",
            2_000_000_000,
            b"secret",
            None,
        );
        let keys: &[(&str, &[u8])] = &[("k1", b"secret")];
        b.iter(|| filters::signature::verify(black_box(&url), 1_700_000_000, keys))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
