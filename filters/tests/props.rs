//! Properties: the cache key ignores parameter order, alias spellings, defaults and
//! non-transform noise; the canonical query is a fixed point; a signature verifies iff the
//! URL is untampered; nothing panics on arbitrary input.

use filters::{
    resolve, signature, FiltersConfig, RequestParts, ResolveOptions, Resolved, TransformSpec,
};
use proptest::prelude::*;

fn run(
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Resolved, filters::FilterError> {
    let req = RequestParts {
        path,
        query: Some(query),
        headers: &headers,
    };
    resolve(&req, &FiltersConfig::default(), &ResolveOptions::default())
}

/// Each entry: equivalent spellings of one video parameter, canonical spelling first.
const VIDEO_SPELLINGS: &[&[(&str, &str)]] = &[
    &[("height", "360")],
    &[("fit", "cover"), ("obj-fit", "crop"), ("fit", "COVER")],
    &[
        ("format", "mp4"),
        ("f", "mp4"),
        ("imformat", "h264"),
        ("format", "MP4"),
    ],
    &[
        ("time", "90"),
        ("time", "1m30s"),
        ("time", "90s"),
        ("start", "1m30"),
        ("time", "90000ms"),
        ("time", "90.0s"),
        ("time", "1.5m"),
    ],
    &[("duration", "10"), ("dur", "10s"), ("duration", "10000ms")],
    &[
        ("audio", "false"),
        ("mute", "true"),
        ("audio", "0"),
        ("audio", "no"),
        ("audio", "FALSE"),
    ],
    &[("quality", "80"), ("q", "80")],
    &[
        ("bitrate", "2M"),
        ("bitrate", "2000k"),
        ("bitrate", "2000000"),
        ("bitrate", "2.0M"),
    ],
    &[("codec", "h264"), ("codec", "avc"), ("codec", "H264")],
    &[("gravity", "0.5x0.25"), ("gravity", "0.50x0.250")],
];

/// Parameters that never change the key of a transform: defaults, hints, foreign names.
const NOISE: &[(&str, &str)] = &[
    ("gravity", "center"),
    ("speed", "1"),
    ("rotate", "0"),
    ("loop", "true"),
    ("autoplay", "false"),
    ("muted", "1"),
    ("preload", "metadata"),
    ("filename", "clip"),
    ("utm_source", "mail"),
    ("signature", "abc"),
    ("expires", "123"),
    ("debug", "view"),
    ("im-viewheight", "300"),
];

fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

prop_compose! {
    fn spelled_request()(
        picks in proptest::collection::vec((any::<bool>(), 0usize..8), VIDEO_SPELLINGS.len()),
        noise in proptest::sample::subsequence(NOISE.to_vec(), 0..NOISE.len()),
        seed in any::<u64>(),
    ) -> (String, String) {
        let mut canonical = vec![("width", "640")];
        let mut spelled = vec![("width", "640")];
        for (i, (on, variant)) in picks.into_iter().enumerate() {
            if on {
                let options = VIDEO_SPELLINGS[i];
                canonical.push(options[0]);
                spelled.push(options[variant % options.len()]);
            }
        }
        // Distinct noise names only (duplicates are an error by design).
        for n in noise {
            if !spelled.iter().any(|(k, _)| *k == n.0) {
                spelled.push(n);
            }
        }
        // Deterministic shuffle from the seed.
        let mut s = seed;
        for i in (1..spelled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            spelled.swap(i, (s >> 33) as usize % (i + 1));
        }
        (query(&canonical), query(&spelled))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn key_invariant_under_order_alias_and_defaults((canonical, spelled) in spelled_request()) {
        let a = run("/v.mp4", &canonical, &[]).unwrap();
        let b = run("/v.mp4", &spelled, &[]).unwrap();
        prop_assert_eq!(&a.cache_key, &b.cache_key, "{} vs {}", canonical, spelled);
        // Same transform, modulo header-only fields.
        let strip = |mut s: TransformSpec| { s.filename = None; s.playback = Default::default(); s };
        prop_assert_eq!(strip(a.spec), strip(b.spec));
    }

    #[test]
    fn derivative_spellings_share_a_key(
        which in 0usize..4,
        noise in proptest::sample::subsequence(NOISE.to_vec(), 0..NOISE.len()),
    ) {
        let spelling = [("derivative", "tablet"), ("impolicy", "tablet"), ("imwidth", "1280"), ("imwidth", "900")][which];
        let mut pairs = vec![spelling];
        pairs.extend(noise);
        pairs.reverse();
        let k = run("/v.mp4", &query(&pairs), &[]).unwrap().cache_key;
        prop_assert_eq!(k, "video:/v.mp4:w=1280:h=720:der=tablet");
    }

    #[test]
    fn canonical_query_is_a_fixed_point(
        pairs in proptest::collection::vec(
            (proptest::sample::select(vec![
                "width", "height", "fit", "gravity", "mode", "time", "duration", "audio", "format",
                "quality", "compression", "filename", "derivative", "dpr", "imageCount", "fps", "speed",
                "rotate", "crop", "bitrate", "blur", "sharpen", "background", "animated", "codec",
                "loop", "preload", "imwidth", "imheight", "impolicy", "imformat", "imdensity", "w", "h",
                "q", "f", "obj-fit", "start", "dur", "mute",
            ]),
            proptest::sample::select(vec![
                "0", "1", "10", "90", "100", "640", "1280", "2000", "4096", "5000", "0.5", "1.5", "2", "3",
                "true", "false", "cover", "contain", "crop", "fill", "scale-down", "auto", "center", "0.3x0.6",
                "video", "frame", "spritesheet", "audio", "image", "jpg", "png", "webp", "mp4", "m4a", "h264",
                "h265", "vp9", "high", "low", "fast", "5s", "1m30s", "90.5s", "2m", "800k", "2M", "%23abc",
                "red", "tablet", "mobile", "thumbnail", "clip", "10:10:0:0", "none", "270",
            ]),
        ), 0..8),
        path in proptest::sample::select(vec!["/a.jpg", "/v.mp4", "/s.mp3", "/x"]),
    ) {
        let mut seen = std::collections::HashSet::new();
        let pairs: Vec<_> = pairs.into_iter().filter(|(k, _)| seen.insert(*k)).collect();
        if let Ok(r) = run(path, &query(&pairs), &[]) {
            let c = r.spec.to_canonical_query();
            let back = TransformSpec::from_canonical_query(&c);
            prop_assert!(back.is_ok(), "{} -> {} -> {:?}", query(&pairs), c, back);
            let back = back.unwrap();
            prop_assert_eq!(&back, &r.spec);
            prop_assert_eq!(back.to_canonical_query(), c);
            // The key is a function of the spec.
            prop_assert_eq!(filters::cache_key(&back, &r.source), r.cache_key);
        }
    }

    #[test]
    fn from_canonical_query_is_stable_on_any_input(q in "[a-zA-Z=&%0-9.:#x-]{0,60}") {
        if let Ok(s) = TransformSpec::from_canonical_query(&q) {
            let c = s.to_canonical_query();
            prop_assert_eq!(TransformSpec::from_canonical_query(&c).unwrap(), s);
        }
    }

    #[test]
    fn resolve_never_panics(
        path in "(/cdn-cgi/(image|media)/)?[ -~]{0,40}",
        query in "[ -~]{0,80}",
        vw in "[ -~]{0,6}",
        dev in "[ -~]{0,8}",
    ) {
        let headers = [("Sec-CH-Viewport-Width", vw.as_str()), ("CF-Device-Type", dev.as_str()), ("Sec-CH-DPR", "2")];
        if let Ok(r) = run(&path, &query, &headers) {
            prop_assert!(r.spec.validate().is_ok());
            prop_assert!(!r.cache_key.is_empty());
        }
    }

    #[test]
    fn signature_verifies_iff_untampered(
        path in "/[a-z0-9/._-]{0,24}",
        pairs in proptest::collection::vec(("[a-z]{1,6}", "[a-zA-Z0-9]{0,6}"), 0..5),
        secret in proptest::collection::vec(any::<u8>(), 1..40),
        expires in 1_000u64..4_000_000_000,
        kid in proptest::option::of("[a-z0-9]{1,4}"),
        tamper_at in any::<proptest::sample::Index>(),
        tamper_with in "[a-zA-Z0-9]",
    ) {
        let pairs: Vec<_> = pairs
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "signature" | "expires" | "kid"))
            .collect();
        let mut unsigned = path.clone();
        if !pairs.is_empty() {
            unsigned.push('?');
            unsigned.push_str(&pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"));
        }
        let id = kid.clone().unwrap_or_else(|| "default".into());
        let keys: &[(&str, &[u8])] = &[("other", b"not-the-key"), (id.as_str(), &secret)];
        let signed = signature::sign(&unsigned, expires, &secret, kid.as_deref());
        prop_assert_eq!(signature::verify(&signed, expires - 1, keys), Ok(()));
        prop_assert!(signature::verify(&signed, expires + 1, keys).is_err());

        // Change one byte of the part that was signed.
        let i = tamper_at.index(unsigned.len());
        let mut bytes = unsigned.clone().into_bytes();
        let new = tamper_with.as_bytes()[0];
        prop_assume!(bytes[i] != new);
        bytes[i] = new;
        let tampered_unsigned = String::from_utf8(bytes).unwrap();
        let suffix = &signed[unsigned.len()..];
        let tampered = format!("{tampered_unsigned}{suffix}");
        prop_assert!(signature::verify(&tampered, expires - 1, keys).is_err(), "{} verified", tampered);

        // Change the expiry or the signature.
        let later = signed.replace(&format!("expires={expires}"), &format!("expires={}", expires + 1));
        prop_assert!(signature::verify(&later, 0, keys).is_err());
        let (head, sig) = signed.rsplit_once("signature=").unwrap();
        let mut sig = sig.to_string().into_bytes();
        sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
        let forged = format!("{head}signature={}", String::from_utf8(sig).unwrap());
        prop_assert!(signature::verify(&forged, 0, keys).is_err());
    }
}
