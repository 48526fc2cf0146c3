//! End-to-end: the Debian package. `scripts/package-deb.sh` packages the binary under test;
//! `dpkg -i` installs it on this machine; the files, their modes, the conffile, the system
//! user, the enabled unit (`systemd-analyze verify`) and the config (`check-config`) are
//! checked; the unit's `ExecStart=` (without `--daemon`, on a free port) runs as the unit's
//! `User=` on the packaged config and serves the packaged samples; `dpkg -r` keeps the config
//! and `dpkg --purge` leaves nothing behind, user included.
//!
//! It needs root and dpkg (CI: a fresh Debian 12 as root) and is skipped otherwise, or when
//! this machine already has a media-edge package, user or folder (it would replace them).
//! systemd need not run: the unit is started by hand, the way systemd would start it.

use e2e::*;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PKG: &str = "media-edge";
const UNIT: &str = "/lib/systemd/system/media-edge.service";
const CONF: &str = "/etc/media-edge/media-edge.toml";
const STATE: &str = "/var/lib/media-edge";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/media-edge.service";

/// Runs `cmd`; panics when it cannot start.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs `cmd`, asserts it succeeded and returns its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(line: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", line]);
    c
}

fn have(program: &str) -> bool {
    output(sh("command -v \"$0\" >/dev/null").arg(program))
        .status
        .success()
}

/// dpkg's `Status` of the package, `None` when dpkg knows nothing of it.
fn dpkg_status() -> Option<String> {
    let out = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", PKG]));
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// `getent DB NAME` split at `:`, `None` when there is no such entry.
fn getent(db: &str, name: &str) -> Option<Vec<String>> {
    let out = output(Command::new("getent").args([db, name]));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !line.is_empty()).then(|| line.split(':').map(String::from).collect())
}

fn dpkg(args: &[&str]) -> String {
    ok(Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Why this machine cannot run the test, if it cannot.
fn unsuitable() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (dpkg -i needs it; CI runs as root)".into());
    }
    for tool in ["dpkg", "dpkg-deb", "dpkg-query", "getent", "setpriv"] {
        if !have(tool) {
            return Some(format!("{tool} not found (not a Debian system?)"));
        }
    }
    if let Some(s) = dpkg_status() {
        if !s.ends_with("not-installed") {
            return Some(format!(
                "a {PKG} package is here already ({s}); not replacing it"
            ));
        }
    }
    if getent("passwd", PKG).is_some() || getent("group", PKG).is_some() {
        return Some(format!(
            "a {PKG} user or group exists already (a manual install?)"
        ));
    }
    for p in ["/etc/media-edge", STATE, "/usr/share/media-edge"] {
        if Path::new(p).exists() {
            return Some(format!("{p} exists already (a manual install?)"));
        }
    }
    None
}

/// Purges the package when the test ends, passed or not.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if dpkg_status().is_some() {
            let _ = output(Command::new("dpkg").args(["--purge", PKG]));
        }
    }
}

/// The process started from the unit's `ExecStart=`; killed if the test stops half-way.
struct Service {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Service {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (the unit's KillSignal=), then waits for the exit; true when it exited.
    fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of the unit's one `Key=` line.
fn unit_value(unit: &str, key: &str) -> String {
    let mut values = unit
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string);
    let v = values
        .next()
        .unwrap_or_else(|| panic!("{UNIT} has no {key}="));
    assert!(values.next().is_none(), "{UNIT} has several {key}=");
    v
}

/// Starts the unit's `ExecStart=` as systemd would (its `User=`, `Group=`,
/// `WorkingDirectory=`, `UMask=`, a clean environment) but in the foreground and on a free
/// port of 127.0.0.1; waits for `/health`.
async fn start_from_unit(unit: &str, log_dir: &Path) -> Service {
    let exec = unit_value(unit, "ExecStart");
    let argv: Vec<&str> = exec
        .split_whitespace()
        .filter(|a| *a != "--daemon")
        .collect();
    // systemd runs it as Type=forking; here it stays in the foreground.
    assert_ne!(
        argv.len(),
        exec.split_whitespace().count(),
        "the unit's ExecStart= has no --daemon (Type=forking): {exec}"
    );
    let (user, group) = (unit_value(unit, "User"), unit_value(unit, "Group"));
    let cwd = unit_value(unit, "WorkingDirectory");
    let umask = u32::from_str_radix(&unit_value(unit, "UMask"), 8).expect("UMask= octal");
    for attempt in 1.. {
        let port = free_port();
        let log = log_dir.join(format!("service-{attempt}.log"));
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={user}"))
            .arg(format!("--regid={group}"))
            .arg("--init-groups")
            .arg("--")
            .args(&argv)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(&cwd)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", STATE)
            .env("USER", &user)
            .env("LOGNAME", &user)
            .env("MEDIA_EDGE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let set_umask = move || {
            unsafe { libc::umask(umask as libc::mode_t) };
            Ok::<(), std::io::Error>(())
        };
        // Only umask(2) runs between fork and exec: async-signal-safe.
        unsafe {
            cmd.pre_exec(set_umask);
        }
        let mut s = Service {
            child: Some(cmd.spawn().expect("spawn setpriv")),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let exited = loop {
            if let Ok(r) = client().get(s.url("/health")).send().await {
                if r.status() == 200 {
                    return s;
                }
            }
            if let Some(Ok(Some(st))) = s.child.as_mut().map(|c| c.try_wait()) {
                s.child = None;
                break st.to_string();
            }
            if Instant::now() >= deadline {
                s.stop();
                break "no /health in 30 s".into();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let log = s.log();
        // The free port was released before the bind: another process may have taken it.
        if attempt < 3 && log.contains("Address already in use") {
            continue;
        }
        panic!("the unit's ExecStart did not come up ({exited}): {argv:?}\n{log}");
    }
    unreachable!()
}

/// Mode bits, owner and group names of `path`.
fn mode_owner(path: &str) -> (u32, String, String) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |db: &str, id: u32| {
        getent(db, &id.to_string())
            .map(|e| e[0].clone())
            .unwrap_or_else(|| id.to_string())
    };
    (
        m.mode() & 0o7777,
        name("passwd", m.uid()),
        name("group", m.gid()),
    )
}

fn assert_mode(path: &str, mode: u32, owner: &str, group: &str) {
    assert_eq!(
        mode_owner(path),
        (mode, owner.to_string(), group.to_string()),
        "{path}: mode, owner, group"
    );
}

/// The package owning `lib` (a path `ldd` printed; dpkg may know it with or without /usr).
fn owner_of(lib: &str) -> String {
    let real = std::fs::canonicalize(lib)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| lib.to_string());
    let mut candidates = vec![lib.to_string(), real.clone()];
    for p in [lib, real.as_str()] {
        match p.strip_prefix("/usr") {
            Some(rest) => candidates.push(rest.to_string()),
            None => candidates.push(format!("/usr{p}")),
        }
    }
    for c in &candidates {
        let out = output(Command::new("dpkg").args(["-S", c]));
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().find(|l| !l.starts_with("diversion")) {
            if out.status.success() {
                let pkg = line.split(':').next().unwrap_or("");
                return pkg.to_string();
            }
        }
    }
    panic!("no installed package owns {lib}")
}

/// The packages of the libraries `bin` names itself (DT_NEEDED), by `readelf` and `ldd`.
fn linked_packages(bin: &Path) -> Vec<String> {
    let dynamic = ok(Command::new("readelf").arg("-d").arg(bin));
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(
        !needed.is_empty(),
        "{} links no shared library?",
        bin.display()
    );
    let ldd = ok(Command::new("ldd").arg(bin));
    let mut pkgs: Vec<String> = needed
        .iter()
        .map(|n| {
            let path = ldd
                .lines()
                .map(str::split_whitespace)
                .find_map(|mut w| {
                    let first = w.next()?;
                    match w.next() {
                        Some("=>") if first == *n => w.next().map(str::to_string),
                        _ if first.ends_with(&format!("/{n}")) => Some(first.to_string()),
                        _ => None,
                    }
                })
                .unwrap_or_else(|| panic!("ldd does not resolve {n}:\n{ldd}"));
            owner_of(&path)
        })
        .collect();
    pkgs.sort();
    pkgs.dedup();
    pkgs
}

#[tokio::test(flavor = "multi_thread")]
async fn the_debian_package_installs_serves_the_samples_and_purges_cleanly() {
    if let Some(why) = unsuitable() {
        eprintln!("SKIPPED the Debian package test: {why}");
        return;
    }
    let bin = binary();
    let tmp = tempfile::tempdir().expect("tempdir");

    // --- build
    let version = env!("CARGO_PKG_VERSION").replacen('-', "~", 1);
    let arch = ok(Command::new("dpkg").arg("--print-architecture"));
    let expected = tmp
        .path()
        .join(format!("{PKG}_{version}_{}.deb", arch.trim()));
    // Compression does not matter here and xz of a debug binary takes long on small CI boxes.
    let built = ok(Command::new("bash")
        .arg(workspace().join("scripts/package-deb.sh"))
        .arg("--binary")
        .arg(&bin)
        .arg("--out")
        .arg(tmp.path())
        .args(["--compression", "none"]));
    assert_eq!(
        built.trim(),
        expected.to_string_lossy(),
        "the package's path"
    );
    let deb = expected;
    let deb_path = deb.to_string_lossy().into_owned();
    let field = |name: &str| ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name));
    assert_eq!(field("Package").trim(), PKG);
    assert_eq!(field("Version").trim(), version);
    let depends = field("Depends");
    let depends: Vec<&str> = depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .collect();
    assert!(depends.contains(&"adduser"), "Depends: {depends:?}");
    for pkg in linked_packages(&bin) {
        assert!(
            depends.contains(&pkg.as_str()),
            "the binary links a library of {pkg}, which Depends lacks: {depends:?}"
        );
    }
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for line in listing.lines() {
        assert!(
            line.contains(" root/root "),
            "not root-owned in the package: {line}"
        );
    }

    // --- install (twice: the second run is postinst over an existing user and folders)
    let _installed = Installed;
    dpkg(&["-i", deb_path.as_str()]);
    dpkg(&["-i", deb_path.as_str()]);
    assert_eq!(dpkg_status().as_deref(), Some("install ok installed"));

    let user = getent("passwd", PKG).expect("the media-edge user");
    let group = getent("group", PKG).expect("the media-edge group");
    let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), user[3].parse().unwrap());
    assert_eq!(group[2], user[3], "the user's primary group is media-edge");
    assert!(uid < 1000, "a system user: uid {uid}");
    assert_eq!(
        (user[5].as_str(), user[6].as_str()),
        (STATE, "/usr/sbin/nologin")
    );

    assert_mode("/usr/bin/media-edge", 0o755, "root", "root");
    assert_mode(UNIT, 0o644, "root", "root");
    assert_mode("/etc/media-edge", 0o750, "root", PKG);
    assert_mode(CONF, 0o640, "root", PKG);
    assert_mode(STATE, 0o750, PKG, PKG);
    assert!(Path::new(STATE).is_dir());
    assert_mode("/etc/media-edge/cloudflare-ips.txt", 0o644, "root", "root");
    for doc in ["copyright", "README.md.gz", "changelog.gz"] {
        assert_mode(
            &format!("/usr/share/doc/media-edge/{doc}"),
            0o644,
            "root",
            "root",
        );
    }
    assert_mode("/usr/share/man/man1/media-edge.1.gz", 0o644, "root", "root");
    let man = ok(Command::new("zcat").arg("/usr/share/man/man1/media-edge.1.gz"));
    assert!(
        man.contains("check\\-config"),
        "the manual page lists the commands:\n{man}"
    );
    let samples_src = workspace().join("conf/samples");
    let mut samples: Vec<String> = std::fs::read_dir(&samples_src)
        .expect("conf/samples")
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    samples.sort();
    assert!(!samples.is_empty());
    for s in &samples {
        let installed = format!("/usr/share/media-edge/samples/{s}");
        assert_mode(&installed, 0o644, "root", "root");
        assert!(
            std::fs::read(&installed).unwrap() == std::fs::read(samples_src.join(s)).unwrap(),
            "{installed} differs from conf/samples/{s}"
        );
    }
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PKG]));
    for f in [CONF, "/etc/media-edge/cloudflare-ips.txt"] {
        assert!(conffiles.contains(f), "conffiles: {conffiles}");
    }
    let conf = std::fs::read_to_string(CONF).unwrap();
    assert!(
        conf.contains("\nroot = \"/usr/share/media-edge/samples\"\n"),
        "{conf}"
    );
    assert!(
        conf.contains("\ndata_dir = \"/var/lib/media-edge\"\n"),
        "{conf}"
    );

    // --- the unit: enabled as Debian enables units, valid for systemd
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(unit_value(&unit, "ExecStart").starts_with("/usr/bin/media-edge run "));
    assert!(!unit.contains("/usr/local/bin"), "{unit}");
    assert_eq!(
        std::fs::read_link(WANTS).ok().as_deref(),
        Some(Path::new(UNIT)),
        "enabled for multi-user.target"
    );
    assert!(
        have("systemd-analyze"),
        "systemd-analyze not found: install systemd (scripts/setup.sh --with-test-tools)"
    );
    let verify = output(Command::new("systemd-analyze").args(["verify", UNIT]));
    let complaints = String::from_utf8_lossy(&verify.stderr);
    let about_unit: Vec<&str> = complaints.lines().filter(|l| l.contains(PKG)).collect();
    assert!(
        verify.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {UNIT} ({}):\n{complaints}",
        verify.status
    );

    // --- the config
    let checked = ok(Command::new("/usr/bin/media-edge").args(["check-config", CONF]));
    assert!(checked.contains(": ok"), "{checked}");

    // --- the service, started from the unit (postinst started a running systemd's copy)
    if Path::new("/run/systemd/system").exists() {
        let _ = output(Command::new("systemctl").args(["stop", PKG]));
    }
    let mut service = start_from_unit(&unit, tmp.path()).await;
    let pid = service.child.as_ref().map(|c| c.id()).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert_eq!(ids("Uid:"), vec![uid; 4], "runs as media-edge");
    assert_eq!(ids("Gid:"), vec![gid; 4], "runs as group media-edge");
    for s in &samples {
        let r = client()
            .get(service.url(&format!("/samples/{s}")))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "/samples/{s}:\n{}", service.log());
        let body = r.bytes().await.expect("body");
        assert!(
            body == std::fs::read(samples_src.join(s)).unwrap(),
            "/samples/{s}: not the sample's bytes ({} bytes)",
            body.len()
        );
    }
    assert!(service.stop(), "no exit after SIGTERM:\n{}", service.log());
    let state: Vec<_> = std::fs::read_dir(STATE).unwrap().flatten().collect();
    assert!(!state.is_empty(), "the service kept nothing in {STATE}");
    for e in &state {
        let m = e.metadata().unwrap();
        assert_eq!(m.uid(), uid, "{} is not the service's", e.path().display());
    }

    // --- remove: the program goes, the config and the user stay
    dpkg(&["-r", PKG]);
    for gone in ["/usr/bin/media-edge", UNIT, "/usr/share/media-edge"] {
        assert!(!Path::new(gone).exists(), "{gone} is left after dpkg -r");
    }
    assert!(Path::new(CONF).exists(), "dpkg -r removed the conffile");
    assert!(getent("passwd", PKG).is_some(), "dpkg -r removed the user");

    // --- purge: nothing left
    dpkg(&["--purge", PKG]);
    assert_eq!(
        dpkg_status().filter(|s| !s.ends_with("not-installed")),
        None
    );
    for gone in [
        "/etc/media-edge",
        STATE,
        "/usr/share/doc/media-edge",
        "/usr/share/man/man1/media-edge.1.gz",
        WANTS,
        "/etc/systemd/system/media-edge.service",
    ] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} is left after dpkg --purge"
        );
    }
    assert!(
        getent("passwd", PKG).is_none(),
        "the user is left after purge"
    );
    assert!(
        getent("group", PKG).is_none(),
        "the group is left after purge"
    );
    // `--list` exits 1 when there are no overrides at all.
    let overrides = output(Command::new("dpkg-statoverride").arg("--list"));
    let overrides = String::from_utf8_lossy(&overrides.stdout);
    assert!(
        !overrides.contains("/etc/media-edge"),
        "stat overrides left: {overrides}"
    );
}
