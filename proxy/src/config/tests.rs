//! Unit tests of the config: spellings, defaults, templates and the exact text and key path
//! of every validation message (end-to-end tests and the README quote them).

use super::*;
use std::time::Duration;

/// An `[[origins]]` block with one local source, its `root` as given.
fn local_origin(name: &str, matcher: &str, root: &str) -> String {
    format!(
        "[[origins]]\nname = {name:?}\nmatcher = {matcher:?}\n\
         [[origins.sources]]\nkind = \"local\"\nroot = {root:?}\n"
    )
}

#[test]
fn sizes() {
    assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
    assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
    assert_eq!(parse_size("12").unwrap(), 12);
    assert!(parse_size("12 parsecs").is_err());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert!(parse_duration("5 fortnights").is_err());
    assert!(parse_duration("m").is_err());
}

/// The message of each way a size or duration can be wrong (serde adds the key path).
#[test]
fn unit_error_messages() {
    let size = |t: &str| parse_size(t).map(|_| ()).unwrap_err().to_string();
    let duration = |t: &str| parse_duration(t).map(|_| ()).unwrap_err().to_string();
    let cases: [(&dyn Fn(&str) -> String, &str, &str); 9] = [
        (&size, "12 parsecs", "size \"12 parsecs\" has unknown unit \"parsecs\" (use B, KiB, MiB, GiB, TiB, KB, MB, GB)"),
        (&size, "5 PiB", "size \"5 PiB\" has unknown unit \"pib\" (use B, KiB, MiB, GiB, TiB, KB, MB, GB)"),
        (&size, "lots", "size \"lots\" is not a number with an optional unit like \"256MiB\""),
        (&size, "", "size \"\" is not a number with an optional unit like \"256MiB\""),
        (&duration, "", "empty duration"),
        (&duration, "5 fortnights", "duration \"5 fortnights\" has unknown unit \" fortnights\" (ms, s, m, h, d)"),
        (&duration, "m", "duration \"m\" is not like \"30s\", \"5m\" or \"1h30m\""),
        (&duration, "5m5", "duration \"5m5\" lacks a unit after its last number"),
        (&duration, "99999999999999999999s", "duration \"99999999999999999999s\" has a number that is too large"),
    ];
    for (parse, text, message) in cases {
        assert_eq!(parse(text), message, "{text:?}");
    }
    assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
    assert_eq!(parse_size("7 tib").unwrap(), 7 << 40);
}

#[test]
fn default_config_is_valid() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let c = Config::parse(DEFAULT_CONFIG, &base).expect("default config validates");
    let (i, groups) = c
        .match_origin("/samples/photo.jpg")
        .expect("samples origin");
    assert_eq!(c.origins[i].name, "samples");
    assert_eq!(&groups[1], "photo.jpg");
}

/// The values a key left out takes; changing one changes deployed nodes.
#[test]
fn defaults_are_todays_values() {
    let c = Config::parse("", Path::new("/")).expect("an empty config validates");
    let s = &c.server;
    assert_eq!(s.listen, ["0.0.0.0:8080"]);
    assert!(s.tls.is_empty());
    assert_eq!(s.threads, 0);
    assert_eq!(s.data_dir, Path::new("./data"));
    assert_eq!(s.admin_token_env, "MEDIA_EDGE_ADMIN_TOKEN");
    assert_eq!(s.purge_allowed, ["127.0.0.0/8", "::1/128"]);
    assert!(!s.keep_cache_tag);
    assert_eq!(s.via_token, "media-edge");
    assert_eq!(s.origin_socket, None);
    assert_eq!(s.origin_timeout, Dur(Duration::from_secs(60)));
    assert_eq!(s.grace_period, Dur(Duration::from_secs(10)));
    assert_eq!(s.write_buffer, ByteSize(16384));
    assert_eq!(s.read_buffer, ByteSize(65536));
    assert!(s.work_stealing);
    assert!(!s.json_logs);
    assert!(!s.debug_view);
    assert!(s.front_door);
    assert!(!s.h2c);
    assert_eq!(s.head_timeout, Dur(Duration::from_secs(10)));
    assert_eq!(s.keepalive_timeout, Dur(Duration::from_secs(60)));
    assert_eq!((s.max_connections, s.max_connections_per_ip), (0, 256));
    assert_eq!(c.origin_socket(), Path::new("./data/origin.sock"));

    let k = &c.cache;
    assert!(k.enabled);
    assert_eq!(k.memory_bytes, ByteSize(268_435_456));
    assert_eq!(k.memory_max_object, ByteSize(8_388_608));
    assert_eq!(k.disk_bytes, ByteSize(10_737_418_240));
    assert_eq!(k.max_object, ByteSize(4_294_967_296));
    assert_eq!(k.lock_timeout, Dur(Duration::from_secs(30)));
    assert_eq!(k.stale_while_revalidate, Dur(Duration::from_secs(60)));
    assert_eq!(k.stale_if_error, Dur(Duration::from_secs(86400)));
    assert!(k.range_miss_passthrough);

    assert_eq!(c.content.prefix, "/content/");

    let x = &c.external;
    assert!(!x.enabled);
    assert!(x.allow_hosts.is_empty() && x.deny_hosts.is_empty() && x.allowed_networks.is_empty());
    assert_eq!(x.max_bytes, ByteSize(33_554_432));
    assert_eq!(x.connect_timeout, Dur(Duration::from_secs(5)));
    assert_eq!(x.timeout, Dur(Duration::from_secs(30)));
    assert_eq!(x.max_redirects, 3);
    assert_eq!(x.ttl, Dur(Duration::from_secs(86400)));

    let sec = &c.security;
    assert_eq!(sec.signing_keys.len(), 1);
    assert_eq!(sec.signing_keys[0].id, "default");
    assert_eq!(sec.signing_keys[0].secret_env, "MEDIA_EDGE_SECRET");
    assert!(sec.tokens.is_empty() && sec.trusted_proxies.is_empty());
    assert_eq!(sec.trusted_proxies_file, None);
    assert!(!sec.require_cloudflare_edge);
    assert_eq!(sec.admin_networks, ["127.0.0.0/8", "::1/128"]);
    let a = &sec.auth;
    for rule in [
        a.original,
        a.image,
        a.video,
        a.thumbnail,
        a.metadata,
        a.external,
    ] {
        assert_eq!(rule, AuthRule::None);
    }
    assert_eq!(a.upload, AuthRule::Token);
    assert!(!sec.rate_limit_hits);

    let t = &c.transform;
    assert_eq!(t.max_image_bytes, ByteSize(67_108_864));
    assert_eq!(t.max_video_bytes, ByteSize(4_294_967_296));
    assert_eq!(t.max_input_pixels, 268_402_689);
    assert_eq!(t.max_decode_bytes, ByteSize(1 << 30));
    assert_eq!(c.cache.max_ttl, Dur(Duration::from_secs(365 * 86400)));
    assert!(t.avif && t.avif_background);
    assert_eq!(t.metadata, "auto");
    assert_eq!(t.workers, 0);
    assert_eq!(t.video_timeout, Dur(Duration::from_secs(120)));
    assert_eq!(t.hls_retention, Dur(Duration::from_secs(86400)));
    assert_eq!(t.hls_height, 720);
    assert_eq!(t.hls_segment_secs, 6);
    assert_eq!(t.avif_pending_max_age, Dur(Duration::from_secs(60)));

    let ttl = TtlConfig::default();
    assert_eq!(ttl.ok, Dur(Duration::from_secs(86400)));
    assert_eq!(ttl.redirects, Dur(Duration::from_secs(300)));
    assert_eq!(ttl.client_error, Dur(Duration::from_secs(60)));
    assert_eq!(ttl.server_error, Dur(Duration::ZERO));
    // Only the built-in uploads origin, which takes its own prefix and nothing else.
    assert!(c.configured_origins().is_empty());
    assert_eq!(c.origins.len(), 1);
    assert_eq!(c.origins[0].name, super::UPLOADS_ORIGIN);
    let h = "a".repeat(64);
    assert_eq!(c.origin_index(&format!("/_uploads/t1/{h}")), Some(0));
    assert_eq!(c.origin_index(&format!("/_uploads/../{h}")), None);
    assert_eq!(c.origin_index("/samples/a.jpg"), None);
}

/// A key left out, `Section::default()` and the documented value in `conf/media-edge.toml`
/// are the same (compared by their `Debug` dump, which shows every field).
#[test]
fn defaults_agree_with_the_default_file() {
    let empty = Config::parse("", Path::new("/")).expect("an empty config validates");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let file = Config::parse(DEFAULT_CONFIG, &base).expect("default config validates");
    fn same<T: std::fmt::Debug + Default>(section: &str, left_out: &T, in_file: &T) {
        let default = format!("{:?}", T::default());
        assert_eq!(format!("{left_out:?}"), default, "[{section}] left out");
        assert_eq!(
            format!("{in_file:?}"),
            default,
            "[{section}] in conf/media-edge.toml"
        );
    }
    same("server", &empty.server, &file.server);
    same("cache", &empty.cache, &file.cache);
    same("content", &empty.content, &file.content);
    same("external", &empty.external, &file.external);
    same("security", &empty.security, &file.security);
    same("transform", &empty.transform, &file.transform);
    let d = |v: &dyn std::fmt::Debug| format!("{v:?}");
    assert_eq!(d(&empty.filters), d(&filters::FiltersConfig::default()));
    assert_eq!(d(&file.origins[0].ttl), d(&TtlConfig::default()));
}

#[test]
fn source_defaults() {
    let text = local_origin("o", "^/(.*)", "/")
        + r#"
        [[origins.sources]]
        kind = "s3"
        bucket = "b"
        [[origins.sources]]
        kind = "remote"
        url = "http://x/"
        auth = { type = "aws-sigv4", access_key_env = "A", secret_key_env = "S", region = "r" }
    "#;
    let c = Config::parse(&text, Path::new("/")).expect("validates");
    let o = &c.origins[0];
    assert_eq!(
        format!("{:?}", o.ttl),
        format!("{:?}", TtlConfig::default())
    );
    let [SourceConfig::Local {
        path: local_path, ..
    }, SourceConfig::S3 {
        region,
        endpoint,
        path_style,
        access_key_env,
        secret_key_env,
        path: s3_path,
        timeout: s3_timeout,
        ..
    }, SourceConfig::Remote {
        path: remote_path,
        auth: RemoteAuth::AwsSigv4 { service, .. },
        timeout,
        connect_timeout,
        ..
    }] = &o.sources[..]
    else {
        panic!("unexpected sources {:?}", o.sources);
    };
    for p in [local_path, s3_path, remote_path] {
        assert_eq!(p, "$1");
    }
    assert_eq!(region, "us-east-1");
    assert_eq!((endpoint, path_style), (&None, &false));
    assert_eq!((access_key_env, secret_key_env), (&None, &None));
    assert_eq!(service, "s3");
    assert_eq!(*s3_timeout, Dur(Duration::from_secs(30)));
    assert_eq!(*timeout, Dur(Duration::from_secs(30)));
    assert_eq!(*connect_timeout, Dur(Duration::from_secs(5)));
    let remote: SourceConfig =
        toml::from_str("kind = \"remote\"\nurl = \"http://x/\"").expect("remote source");
    assert!(matches!(
        remote,
        SourceConfig::Remote {
            auth: RemoteAuth::None,
            ..
        }
    ));
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = r#"
        [server]
        listen = ["nonsense"]
        [cache]
        memory_bytes = "12 parsecs"
        [transform]
        hls_height = 5000
        hls_segment_secs = 0
        [[origins]]
        name = "a"
        matcher = "^/a/(.*"
        [[origins.sources]]
        kind = "local"
        root = "/definitely/not/here"
        [[origins]]
        name = "b"
        matcher = "^/b/"
        colour = "blue"
        sources = []
    "#;
    let errs = Config::parse(text, Path::new("/")).unwrap_err().0;
    let paths: Vec<_> = errs.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"cache.memory_bytes"), "{errs:?}");
    assert!(paths.contains(&"origins[0].matcher"), "{errs:?}");
    assert!(paths.contains(&"origins[0].sources[0].root"), "{errs:?}");
    assert!(
        paths.iter().any(|p| p.starts_with("origins[1]")),
        "{errs:?}"
    );
    assert!(paths.contains(&"server.listen[0]"), "{errs:?}");
    assert!(paths.contains(&"transform.hls_height"), "{errs:?}");
    assert!(paths.contains(&"transform.hls_segment_secs"), "{errs:?}");
}

/// Each check's exact lines in `check-config`'s output, in the order it prints them
/// (`testdata/check-config.txt`).
#[test]
fn validation_messages() {
    let spec = include_str!("testdata/check-config.txt");
    let cases: Vec<&str> = spec.split("\n=== ").skip(1).collect();
    assert!(
        cases.len() >= 13,
        "cases of check-config.txt: {}",
        cases.len()
    );
    for case in cases {
        let (title, rest) = case.split_once('\n').expect("a title line");
        let (text, expected) = rest.split_once("\n---\n").expect("a --- line");
        let errs = Config::parse(text, Path::new("/base")).expect_err(title);
        assert_eq!(errs.to_string().trim_end(), expected.trim_end(), "{title}");
    }
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let key = base.join("cloudflare-ips.txt");
    let text = format!(
        "[server]\ntls = [{{ listen = \"0.0.0.0:8443\", cert = \"media-edge.toml\", key = {key:?} }}]\n{}",
        local_origin("s", "^/s/(.*)", "samples")
    );
    let c = Config::parse(&text, &base).expect("validates");
    assert_eq!(c.server.tls[0].cert, base.join("media-edge.toml"));
    assert_eq!(c.server.tls[0].key, key);
    let SourceConfig::Local { root, .. } = &c.origins[0].sources[0] else {
        panic!("a local source");
    };
    assert_eq!(root, &base.join("samples"));
    assert_eq!(c.base, base);
}

fn captures<'h>(re: &str, path: &'h str) -> regex::Captures<'h> {
    Regex::new(re).unwrap().captures(path).unwrap()
}

#[test]
fn substitution() {
    let g = captures("^/x/([^/]+)/(.+)$", "/x/a/b.jpg");
    assert_eq!(substitute("$1/$2", &g), "a/b.jpg");
    assert_eq!(substitute("img/$2?$9", &g), "img/b.jpg?");
}

/// The template syntax: one digit after `$`; any other `$` is itself.
#[test]
fn substitution_table() {
    let g = captures("^/x/(a)?(b)/(.*)$", "/x/b/c.jpg");
    let cases = [
        ("$0", "/x/b/c.jpg"),
        ("$1", ""),
        ("$2/$3", "b/c.jpg"),
        ("$3_thumb", "c.jpg_thumb"),
        ("$32", "c.jpg2"),
        ("$$3", "$c.jpg"),
        ("${3}", "${3}"),
        ("${name}", "${name}"),
        ("cost$", "cost$"),
        ("a$b", "a$b"),
        ("$", "$"),
        ("", ""),
        ("$4$9", ""),
        ("é/$3/ü", "é/c.jpg/ü"),
        ("videos/$2$3", "videos/bc.jpg"),
    ];
    for (template, expected) in cases {
        assert_eq!(substitute(template, &g), expected, "{template:?}");
    }
    let sharded = captures("^/content/(([0-9a-f]{2})[0-9a-f]{2})$", "/content/abcd");
    assert_eq!(substitute("$2/$1", &sharded), "ab/abcd");
}

#[test]
fn the_first_matching_origin_wins() {
    let text = local_origin("a", "^/a/(.*)", "/") + &local_origin("any", "^/(.*)", "/");
    let c = Config::parse(&text, Path::new("/")).expect("validates");
    assert_eq!(c.origin_index("/a/x"), Some(0));
    assert_eq!(c.origin_index("/b/x"), Some(1));
    assert_eq!(c.origin_index("nothing"), None);
    let (i, g) = c.match_origin("/b/x").expect("matches");
    assert_eq!((i, &g[0], &g[1]), (1, "/b/x", "b/x"));
    assert!(c.match_origin("nothing").is_none());
}

#[test]
fn ttl_classes() {
    let t = TtlConfig::default();
    assert_eq!(t.for_status(200), Some(Duration::from_secs(86400)));
    assert_eq!(t.for_status(404), Some(Duration::from_secs(60)));
    assert_eq!(t.for_status(503), None);
}

#[test]
fn absurd_durations_are_refused_not_overflowed() {
    for s in [
        "213503982334602d",
        "18446744073709551615h",
        "1s18446744073709551615s",
    ] {
        let e = super::units::parse_duration(s).expect_err(s);
        assert!(e.to_string().contains(s), "{s}: {e}");
    }
    assert_eq!(
        super::units::parse_duration("1d2h").unwrap(),
        std::time::Duration::from_secs(86400 + 7200)
    );
}

#[test]
fn redacted_text_masks_secrets_and_keeps_env_names() {
    let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\n\
        [store]\ndatabase_url = 'postgres://media:hunter2@db:5432/media?sslpassword=x&password=pw2'\n\
        [security]\nsigning_keys = [{ id = \"a\", secret_env = \"SIGN\" }]\n\
        tokens = [{ token_env = \"ACME\", tenant = \"acme\", scopes = [\"read\"] }]\n";
    let cfg = Config::parse(text, Path::new(".")).expect("valid");
    let r = cfg.redacted_text();
    assert!(!r.contains("hunter2") && !r.contains("pw2"), "{r}");
    assert!(r.contains("postgres://media:***@db:5432/media"), "{r}");
    assert!(r.contains("secret_env = \"SIGN\""), "{r}");
    assert!(r.contains("token_env = \"ACME\""), "{r}");
    assert!(r.contains("listen = [\"127.0.0.1:8080\"]"), "{r}");
}
