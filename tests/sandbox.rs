//! End-to-end: image decoders run in sandboxed worker processes (issue #15, item 7). A
//! worker holds no secret, cannot open a socket, read the config file or start a process;
//! a worker killed mid-transform or out of its address space fails only its own request,
//! with a clean JSON error, and the node goes on serving. Every wait polls state with a
//! deadline; nothing is timed.

use e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn png(dir: &Path, name: &str, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 239) as u8])
    });
    img.save(dir.join(name)).unwrap();
}

/// A still PNG from FFmpeg's lavfi `source` (`testsrc2`, `color=c=red`) at `size` (`WxH`).
fn lavfi_png(path: &Path, source: &str, size: &str) {
    let st = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("{source}:size={size}").replacen("testsrc2:", "testsrc2=", 1))
        .args(["-frames:v", "1", "-pix_fmt", "rgb24"])
        .arg(path)
        .status()
        .expect("ffmpeg CLI");
    assert!(st.success(), "ffmpeg failed");
}

fn config(media: &Path, extra: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{{PORT}}\"]\nthreads = 2\n{extra}\n\
         [[origins]]\nname = \"media\"\nmatcher = \"^/lib/(.+)$\"\n\
         [[origins.sources]]\nkind = \"local\"\nroot = \"{}\"\n",
        media.display()
    )
}

/// `/health` once the sandbox's self-test has reported (30 s at most).
async fn sandbox_health(edge: &Edge) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, _, body) = get(edge, "/health", &[]).await;
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if v["sandbox"]["state"] == "isolated" {
            return v["sandbox"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox never reported: {v}\n{}",
            edge.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node's transform workers: pids of its children started as `transform-worker`.
fn workers(edge: &Edge) -> Vec<u32> {
    let parent = edge.pid();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...: the fields after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && String::from_utf8_lossy(&cmd).contains("transform-worker") {
            out.push(pid);
        }
    }
    out
}

/// User + system CPU of process `pid`, in clock ticks (`/proc/{pid}/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // After the comm: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let f = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    f(11) + f(12)
}

fn status_field(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `media_edge_transform_workers_ended_total` for one reason.
fn ended(metrics: &str, reason: &str) -> f64 {
    series(
        metrics,
        &format!("media_edge_transform_workers_ended_total{{reason=\"{reason}\"}}"),
    )
}

const RUNNING: &str = "media_edge_transforms_running";

#[tokio::test(flavor = "multi_thread")]
async fn transform_workers_hold_no_secret_and_cannot_reach_out() {
    let dir = tempfile::tempdir().unwrap();
    png(dir.path(), "a.png", 640, 480);
    let edge = Edge::start_with_env(
        &config(dir.path(), ""),
        &[(
            "MEDIA_EDGE_SECRET",
            "a-signing-secret-the-worker-must-not-see",
        )],
    )
    .await;

    // The self-test: a worker tried to open a socket, read the config file and fork.
    let sb = sandbox_health(&edge).await;
    for what in ["socket", "open", "fork"] {
        let got = sb["tried"][what].as_str().unwrap_or("");
        assert!(got.starts_with("refused"), "{what}: {got} ({sb})");
    }
    assert_eq!(sb["seccomp"], true, "{sb}");
    assert_eq!(sb["no_new_privs"], true, "{sb}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(
            sb["uid"], 65534,
            "a root node's workers run as nobody: {sb}"
        );
    }

    // A transform through a worker: the right picture comes back.
    let (s, h, body) = get(&edge, "/lib/a.png?width=320&format=png", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["content-type"], "image/png");
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!((img.width(), img.height()), (320, 240));

    // The worker as the kernel sees it: seccomp filtering, no_new_privs, an empty
    // environment (so no secret), and no descriptor but its three pipes.
    let ws = workers(&edge);
    assert!(!ws.is_empty(), "no worker process");
    for pid in ws {
        assert_eq!(status_field(pid, "Seccomp"), "2", "worker {pid}");
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "worker {pid}");
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        assert!(!env.contains("a-signing-secret"), "worker {pid} env: {env}");
        assert!(!env.contains("MEDIA_EDGE"), "worker {pid} env: {env}");
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            fds.iter().all(|f| ["0", "1", "2"].contains(&f.as_str())),
            "worker {pid} holds descriptors {fds:?}"
        );
    }
    assert!(!edge.log().contains("ERROR"), "{}", edge.log());
}

/// A worker killed in the middle of a transform (as the OOM killer would) fails that one
/// request with a clean JSON 413; the next transform gets a new worker and succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_transform_fails_only_its_request() {
    let dir = tempfile::tempdir().unwrap();
    lavfi_png(&dir.path().join("big.png"), "testsrc2", "2400x2400");
    png(dir.path(), "small.png", 200, 150);
    let extra = "origin_timeout = \"300s\"\n[transform]\nimage_timeout = \"300s\"\n";
    let edge = Edge::start(&config(dir.path(), extra)).await;
    sandbox_health(&edge).await;

    // AVIF at full quality and size: seconds of work in one encoder call.
    let url = edge.url("/lib/big.png?format=avif&quality=100");
    let slow = tokio::spawn(async move {
        let r = client().get(url).send().await.expect("request");
        let s = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string());
        (s, ct, r.bytes().await.expect("body").to_vec())
    });
    // Kill the worker once the transform is running in it: its worker has spent a second of
    // CPU (the self-test and the header estimate take milliseconds).
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed = loop {
        let m = metrics_of(&edge).await;
        let ws = workers(&edge);
        if series(&m, RUNNING) >= 1.0 && ws.iter().any(|p| cpu_ticks(*p) >= 100) {
            for pid in &ws {
                // SAFETY: signalling a child process of the edge under test.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
            break ws;
        }
        assert!(
            !slow.is_finished(),
            "the transform ended before it was seen running"
        );
        assert!(Instant::now() < deadline, "the transform never ran\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (s, ct, body) = slow.await.unwrap();
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct.as_deref(), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("worker"),
        "{v}"
    );

    // The node goes on: a new worker answers the next transform.
    let (s, _, body) = get(&edge, "/lib/small.png?width=100&format=webp", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!((img.width(), img.height()), (100, 75));
    let now = workers(&edge);
    assert!(
        now.iter().all(|p| !killed.contains(p)),
        "{now:?} {killed:?}"
    );
    let m = metrics_of(&edge).await;
    assert!(ended(&m, "out_of_memory") >= 1.0, "{m}");
    // The killed worker was replaced by a new one.
    let started = series(&m, "media_edge_transform_workers_started_total");
    assert!(started >= 2.0, "{m}");
}

/// A worker whose decode needs more than its address space: the allocation fails inside the
/// worker, the request is 413, the node's own memory never sees the decode. (A worker maps
/// ~400 MiB of code before it allocates anything: the binary, FFmpeg and the codecs.)
#[tokio::test(flavor = "multi_thread")]
async fn a_decode_past_the_worker_memory_is_413() {
    let dir = tempfile::tempdir().unwrap();
    // 9000² RGB: 243 MB decoded, 324 MB as RGBA; a few hundred KB as a PNG.
    lavfi_png(&dir.path().join("huge.png"), "color=c=red", "9000x9000");
    png(dir.path(), "small.png", 200, 150);
    let extra = "[transform]\nworker_memory = \"560MiB\"\nmemory_budget = \"8GiB\"\n\
                 max_decode_bytes = \"8GiB\"\n";
    let edge = Edge::start(&config(dir.path(), extra)).await;
    sandbox_health(&edge).await;
    let rss = |pid: u32| -> u64 {
        status_field(pid, "VmHWM")
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let (s, _, body) = get(&edge, "/lib/huge.png?width=300&format=webp", &[]).await;
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE", "{v}");
    // The node itself never held the decode (its peak stays far below 243 MB over idle).
    assert!(
        rss(edge.pid()) < 240 * 1024,
        "node peak {} kB",
        rss(edge.pid())
    );
    let (s, _, body) = get(&edge, "/lib/small.png?width=100&format=webp", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
}

/// What a descriptor of process `pid` points at.
fn fd_targets(pid: u32) -> Vec<(String, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let target = std::fs::read_link(e.path()).unwrap_or_default();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        target.to_string_lossy().into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Video work runs in workers too: a worker of its own for a transcode, which holds the
/// source as a descriptor, may write only in its private directory (its self-test could
/// not create a file beside it) and, killed mid-encode, fails only its request and leaves
/// no scratch file; frames and probes run in the pooled workers.
#[tokio::test(flavor = "multi_thread")]
async fn video_workers_write_only_their_directory_and_die_alone() {
    let dir = tempfile::tempdir().unwrap();
    make_test_video(&dir.path().join("clip.mp4"), 20, "1280x720");
    let extra = "data_dir = \"{DIR}/data\"\norigin_timeout = \"300s\"\n\
                 [transform]\nvideo_timeout = \"300s\"\n\
                 [jobs]\nsync_max_duration = \"600s\"\nsync_slow_codec_max_duration = \"600s\"\n\
                 sync_max_frame_pixels = 100000000000\n";
    let edge = Edge::start(&config(dir.path(), extra)).await;
    let sb = sandbox_health(&edge).await;
    let video = &sb["video"];
    for what in ["socket", "open", "fork", "write_outside"] {
        let got = video["tried"][what].as_str().unwrap_or("");
        assert!(got.starts_with("refused"), "{what}: {got} ({sb})");
    }
    assert_eq!(video["write_inside"], "ALLOWED", "{sb}");
    assert_eq!(video["seccomp"], true, "{sb}");

    // A frame and the JSON probe: through the pooled workers.
    let (s, h, body) = get(&edge, "/lib/clip.mp4?mode=frame&time=2s&width=320", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["content-type"], "image/jpeg");
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!((img.width(), img.height()), (320, 180));
    let (s, _, body) = get(&edge, "/lib/clip.mp4?format=json", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["width"], 1280, "{v}");

    // A vp9 re-encode of 500 720p frames: tens of seconds in its own worker.
    let url = edge.url("/lib/clip.mp4?mode=video&codec=vp9&width=1280");
    let slow = tokio::spawn(async move {
        let r = client().get(url).send().await.expect("request");
        let s = r.status().as_u16();
        (s, r.bytes().await.expect("body").to_vec())
    });
    let scratch = edge.dir.path().join("data").join("tmp");
    let deadline = Instant::now() + Duration::from_secs(120);
    let pid = loop {
        let busy = workers(&edge).into_iter().find(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains("--video") && cpu_ticks(*p) >= 100
        });
        if let Some(pid) = busy {
            break pid;
        }
        assert!(
            !slow.is_finished(),
            "the transcode ended before it was seen"
        );
        assert!(
            Instant::now() < deadline,
            "no video worker ran\n{}",
            edge.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status_field(pid, "Seccomp"), "2", "worker {pid}");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1", "worker {pid}");
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&env).contains("MEDIA_EDGE"));
    // Its descriptors: the pipes, the source, its directory and what it wrote there.
    let fds = fd_targets(pid);
    let scratch_s = scratch.to_string_lossy().into_owned();
    for (n, target) in &fds {
        let ok = ["0", "1", "2"].contains(&n.as_str())
            || target.ends_with("/clip.mp4")
            || target.starts_with(&format!("{scratch_s}/.video-"));
        assert!(ok, "worker {pid} holds {n} -> {target} ({fds:?})");
    }
    assert!(
        fds.iter()
            .any(|(n, t)| n == "3" && t.ends_with("/clip.mp4")),
        "{fds:?}"
    );
    assert!(fds.iter().any(|(n, _)| n == "4"), "{fds:?}");

    // SAFETY: signalling a child process of the edge under test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let (s, body) = slow.await.unwrap();
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE", "{v}");
    // No scratch left behind, and the node goes on.
    let left: Vec<String> = std::fs::read_dir(&scratch)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch left: {left:?}");
    let (s, _, body) = get(&edge, "/lib/clip.mp4?mode=frame&time=5s&width=160", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let m = metrics_of(&edge).await;
    assert!(ended(&m, "out_of_memory") >= 1.0, "{m}");
    // The self-test's video worker ended after its one call.
    assert!(ended(&m, "finished") >= 1.0, "{m}");
    assert!(!edge.log().contains("ERROR"), "{}", edge.log());
}
