//! The in-process side of `scripts/bench/video.sh`: runs one video transform through
//! `media_edge::transform::video` and prints its wall time, so the script can set it
//! beside the `ffmpeg` CLI doing the same work.
//!
//! `video_bench frame|sprite|transcode|hls INPUT OUTPUT` (for `hls`, OUTPUT is a folder).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use filters::{Mode, TransformSpec};
use media_edge::transform::video::{self, VideoOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(op), Some(input), Some(output)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: video_bench frame|sprite|transcode|hls INPUT OUTPUT");
        return ExitCode::from(2);
    };
    let (input, output) = (Path::new(input), Path::new(output));
    let opts = VideoOptions {
        timeout: std::time::Duration::from_secs(600),
        ..VideoOptions::default()
    };
    let t = Instant::now();
    let result = match op.as_str() {
        "frame" => {
            let mut spec = TransformSpec::new(Mode::Frame);
            spec.width = Some(640);
            spec.time_ms = Some(30_000);
            video::frame(input, &spec, &opts).and_then(|o| {
                std::fs::write(output, &o.body)
                    .map_err(|e| video_err(e.to_string()))
                    .map(|_| format!("{}x{} {} bytes", o.width, o.height, o.body.len()))
            })
        }
        "sprite" => {
            let spec = TransformSpec::new(Mode::Spritesheet);
            video::spritesheet(input, &spec, &opts).and_then(|o| {
                std::fs::write(output, &o.body)
                    .map_err(|e| video_err(e.to_string()))
                    .map(|_| format!("{}x{} {} bytes", o.width, o.height, o.body.len()))
            })
        }
        "transcode" => {
            let mut spec = TransformSpec::new(Mode::Video);
            spec.width = Some(640);
            spec.height = Some(360);
            video::transcode(input, &spec, &opts, output, &|_| {})
                .map(|o| format!("{}x{} {:.2}s", o.width, o.height, o.duration_secs))
        }
        "hls" => video::hls(input, &opts, output, &|_| {}).map(|o| {
            format!(
                "{}x{} {:.2}s {} segments",
                o.width,
                o.height,
                o.duration_secs,
                o.segments.len()
            )
        }),
        other => {
            eprintln!("unknown op {other}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(what) => {
            println!("{op} {:.1} ms {what}", t.elapsed().as_secs_f64() * 1000.0);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{op} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn video_err(m: String) -> media_edge::transform::TransformError {
    media_edge::transform::TransformError::Internal(m)
}
