//! Image engine benchmarks: a large JPEG (≥3000 px; `MEDIA_EDGE_BENCH_INPUT`, else
//! `conf/samples/photo.jpg` upscaled 2× in memory) resized to 800 px wide as WebP q75,
//! JPEG q75 and AVIF, plus the shrink-on-load effect (JPEG decode at full size vs 1/4).
//!
//! `cargo bench -p media-edge --features image-engine --bench image` runs the criterion
//! groups. With `-- --throughput` it instead runs every output on `MEDIA_EDGE_BENCH_THREADS`
//! threads (default 2) for `MEDIA_EDGE_BENCH_SECS` seconds each (default 10) and prints one
//! line per output: `throughput <format> <images/s> <bytes>` — what `scripts/bench/image.sh`
//! reads (`jpeg-no-shrink` is the JPEG run with shrink-on-load off).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, Criterion};
use filters::params::Param;
use filters::{Mode, TransformSpec};
use media_edge::transform::image::{probe, transform, ImageOptions};

fn input() -> Vec<u8> {
    if let Ok(p) = std::env::var("MEDIA_EDGE_BENCH_INPUT") {
        return std::fs::read(&p).unwrap_or_else(|e| panic!("read {p}: {e}"));
    }
    let photo = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conf/samples/photo.jpg"
    ))
    .expect("conf/samples/photo.jpg");
    // 2x: 3600x2400 once oriented.
    let img = image::load_from_memory(&photo).expect("decode sample");
    let big = img.resize_exact(
        img.width() * 2,
        img.height() * 2,
        image::imageops::FilterType::Triangle,
    );
    let mut out = std::io::Cursor::new(Vec::new());
    big.to_rgb8()
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode bench input");
    out.into_inner()
}

fn spec(params: &[(&str, &str)]) -> TransformSpec {
    let mut s = TransformSpec::new(Mode::Image);
    for (k, v) in params {
        let p = Param::from_name(k).expect("param");
        s.set(p, k, v).expect("value");
    }
    s.normalize();
    s
}

fn outputs() -> Vec<(&'static str, TransformSpec)> {
    vec![
        (
            "webp",
            spec(&[("width", "800"), ("format", "webp"), ("quality", "75")]),
        ),
        (
            "jpeg",
            spec(&[("width", "800"), ("format", "jpeg"), ("quality", "75")]),
        ),
        (
            "avif",
            spec(&[("width", "800"), ("format", "avif"), ("quality", "75")]),
        ),
    ]
}

fn throughput(bytes: Arc<Vec<u8>>, opts: ImageOptions) {
    let threads: usize = std::env::var("MEDIA_EDGE_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let secs: u64 = std::env::var("MEDIA_EDGE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let p = probe(&bytes, &opts).expect("probe");
    eprintln!(
        "input {}x{} {} bytes, {threads} threads, {secs}s per output",
        p.width,
        p.height,
        bytes.len()
    );
    let mut runs = outputs();
    let no_shrink = ImageOptions {
        shrink_on_load: false,
        ..opts.clone()
    };
    runs.push(("jpeg-no-shrink", runs[1].1.clone()));
    for (name, s) in runs {
        let opts = if name == "jpeg-no-shrink" {
            no_shrink.clone()
        } else {
            opts.clone()
        };
        let size = transform(&bytes, &s, &opts).expect("transform").body.len();
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (bytes, s, opts, done) = (bytes.clone(), s.clone(), opts.clone(), done.clone());
                std::thread::spawn(move || {
                    while Instant::now() < deadline {
                        black_box(transform(&bytes, &s, &opts).expect("transform"));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("bench thread");
        }
        let n = done.load(Ordering::Relaxed);
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!("throughput {name} {rate:.2} {size}");
    }
}

fn main() {
    let bytes = Arc::new(input());
    let opts = ImageOptions::default();
    if std::env::args().any(|a| a == "--throughput") {
        throughput(bytes, opts);
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let mut g = c.benchmark_group("image_800w");
    for (name, s) in outputs() {
        g.bench_function(name, |b| {
            b.iter(|| transform(black_box(&bytes), &s, &opts).expect("transform"))
        });
    }
    g.finish();
    // Shrink-on-load: 800 px from 3600 px decodes at 1/4 instead of in full.
    let mut g = c.benchmark_group("shrink_on_load");
    let s = spec(&[("width", "800"), ("format", "jpeg"), ("quality", "75")]);
    g.bench_function("on", |b| {
        b.iter(|| transform(black_box(&bytes), &s, &opts).expect("transform"))
    });
    let off = ImageOptions {
        shrink_on_load: false,
        ..opts.clone()
    };
    g.bench_function("off", |b| {
        b.iter(|| transform(black_box(&bytes), &s, &off).expect("transform"))
    });
    g.finish();
    c.final_summary();
}
