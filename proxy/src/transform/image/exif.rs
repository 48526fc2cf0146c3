//! EXIF and ICC extraction: finds the EXIF (TIFF) block and ICC profile in a JPEG without
//! decoding it, reads the orientation, turns the interesting tags into JSON (GPS as signed
//! decimal degrees), and builds the EXIF block an output may carry under a
//! [`MetadataPolicy`]. It never writes pixels and never keeps GPS in an output.

use exif::{In, Tag, Value};
use serde_json::{json, Map, Value as Json};

use super::MetadataPolicy;

/// Walks the JPEG marker segments before the first scan, calling `f(marker, payload)`.
pub(crate) fn jpeg_segments<'a>(b: &'a [u8], mut f: impl FnMut(u8, &'a [u8])) {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return;
    }
    let mut i = 2usize;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return;
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            // Fill byte.
            i += 1;
            continue;
        }
        if marker == 0xD8 || (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            return;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        if len < 2 || i + 2 + len > b.len() {
            return;
        }
        f(marker, &b[i + 4..i + 2 + len]);
        i += 2 + len;
    }
}

/// The raw EXIF (TIFF) block of a JPEG, if any.
pub fn jpeg_exif(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = None;
    jpeg_segments(b, |m, p| {
        if out.is_none() && m == 0xE1 && p.starts_with(b"Exif\0\0") {
            out = Some(p[6..].to_vec());
        }
    });
    out
}

/// The ICC profile of a JPEG (APP2 `ICC_PROFILE` chunks, reassembled in order).
pub fn jpeg_icc(b: &[u8]) -> Option<Vec<u8>> {
    let mut chunks: Vec<(u8, &[u8])> = Vec::new();
    jpeg_segments(b, |m, p| {
        if m == 0xE2 && p.len() > 14 && p.starts_with(b"ICC_PROFILE\0") {
            chunks.push((p[12], &p[14..]));
        }
    });
    if chunks.is_empty() {
        return None;
    }
    chunks.sort_by_key(|c| c.0);
    Some(
        chunks
            .into_iter()
            .flat_map(|c| c.1.iter().copied())
            .collect(),
    )
}

fn parse(raw: &[u8]) -> Option<exif::Exif> {
    let mut r = exif::Reader::new();
    r.continue_on_error(true);
    match r.read_raw(raw.to_vec()) {
        Ok(e) => Some(e),
        Err(exif::Error::PartialResult(p)) => Some(p.into_inner().0),
        Err(_) => None,
    }
}

/// EXIF orientation 1..=8 from a raw EXIF block.
pub fn orientation(raw: &[u8]) -> Option<u8> {
    let e = parse(raw)?;
    let v = e
        .get_field(Tag::Orientation, In::PRIMARY)?
        .value
        .get_uint(0)?;
    u8::try_from(v).ok().filter(|o| (1..=8).contains(o))
}

fn ascii(e: &exif::Exif, tag: Tag) -> Option<String> {
    let f = e.get_field(tag, In::PRIMARY)?;
    match &f.value {
        Value::Ascii(v) => {
            let s: Vec<String> = v
                .iter()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .trim_end_matches('\0')
                        .trim()
                        .to_string()
                })
                .filter(|s| !s.is_empty())
                .collect();
            (!s.is_empty()).then(|| s.join(" "))
        }
        _ => Some(f.display_value().to_string()),
    }
}

fn rational(e: &exif::Exif, tag: Tag) -> Option<f64> {
    match &e.get_field(tag, In::PRIMARY)?.value {
        Value::Rational(v) => v.first().filter(|r| r.denom != 0).map(|r| r.to_f64()),
        Value::SRational(v) => v.first().filter(|r| r.denom != 0).map(|r| r.to_f64()),
        other => other.get_uint(0).map(f64::from),
    }
}

/// Degrees/minutes/seconds plus an N/S/E/W reference as signed decimal degrees.
fn gps_coord(e: &exif::Exif, tag: Tag, reference: Tag, negative: u8) -> Option<f64> {
    let Value::Rational(dms) = &e.get_field(tag, In::PRIMARY)?.value else {
        return None;
    };
    let part = |i: usize| dms.get(i).filter(|r| r.denom != 0).map(|r| r.to_f64());
    let deg = part(0)? + part(1).unwrap_or(0.0) / 60.0 + part(2).unwrap_or(0.0) / 3600.0;
    let sign = match &e.get_field(reference, In::PRIMARY).map(|f| &f.value) {
        Some(Value::Ascii(v)) if v.first().and_then(|s| s.first()) == Some(&negative) => -1.0,
        _ => 1.0,
    };
    let v = sign * deg;
    (v.is_finite() && v.abs() <= 180.0).then(|| (v * 1e6).round() / 1e6)
}

/// The EXIF fields the metadata endpoint reports.
pub fn to_json(raw: &[u8]) -> Json {
    let Some(e) = parse(raw) else {
        return json!({});
    };
    let mut m = Map::new();
    for (name, tag) in [
        ("Make", Tag::Make),
        ("Model", Tag::Model),
        ("Software", Tag::Software),
        ("DateTime", Tag::DateTime),
        ("DateTimeOriginal", Tag::DateTimeOriginal),
        ("LensModel", Tag::LensModel),
        ("Artist", Tag::Artist),
        ("Copyright", Tag::Copyright),
        ("ImageDescription", Tag::ImageDescription),
    ] {
        if let Some(v) = ascii(&e, tag) {
            m.insert(name.into(), Json::String(v));
        }
    }
    if let Some(o) = e
        .get_field(Tag::Orientation, In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
    {
        m.insert("Orientation".into(), json!(o));
    }
    if let Some(iso) = e
        .get_field(Tag::PhotographicSensitivity, In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
    {
        m.insert("ISO".into(), json!(iso));
    }
    for (name, tag) in [
        ("ExposureTime", Tag::ExposureTime),
        ("FNumber", Tag::FNumber),
        ("FocalLength", Tag::FocalLength),
    ] {
        if let Some(v) = rational(&e, tag).filter(|v| v.is_finite()) {
            m.insert(name.into(), json!(v));
        }
    }
    let lat = gps_coord(&e, Tag::GPSLatitude, Tag::GPSLatitudeRef, b'S');
    let lon = gps_coord(&e, Tag::GPSLongitude, Tag::GPSLongitudeRef, b'W');
    if let (Some(lat), Some(lon)) = (lat, lon) {
        m.insert("latitude".into(), json!(lat));
        m.insert("longitude".into(), json!(lon));
        if let Some(alt) = rational(&e, Tag::GPSAltitude).filter(|v| v.is_finite()) {
            let below = matches!(
                e.get_field(Tag::GPSAltitudeRef, In::PRIMARY)
                    .and_then(|f| f.value.get_uint(0)),
                Some(1)
            );
            m.insert("altitude".into(), json!(if below { -alt } else { alt }));
        }
    }
    Json::Object(m)
}

/// The EXIF block an output carries under `policy`, or `None`. `Keep` keeps the camera
/// description and copyright but never GPS, maker notes or the orientation (already
/// applied to the pixels); `Copyright` keeps only Artist and Copyright.
pub fn output_exif(raw: Option<&[u8]>, policy: MetadataPolicy) -> Option<Vec<u8>> {
    let tags: &[Tag] = match policy {
        MetadataPolicy::None => return None,
        MetadataPolicy::Copyright => &[Tag::Artist, Tag::Copyright],
        MetadataPolicy::Keep => &[
            Tag::Make,
            Tag::Model,
            Tag::Software,
            Tag::DateTime,
            Tag::Artist,
            Tag::Copyright,
            Tag::ImageDescription,
        ],
    };
    let e = parse(raw?)?;
    let fields: Vec<&exif::Field> = tags
        .iter()
        .filter_map(|&t| e.get_field(t, In::PRIMARY))
        .collect();
    if fields.is_empty() {
        return None;
    }
    let mut w = exif::experimental::Writer::new();
    for f in &fields {
        w.push_field(f);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    w.write(&mut out, false).ok()?;
    Some(out.into_inner())
}

/// Adds an `eXIf` chunk (raw TIFF EXIF) right after a PNG's IHDR.
pub fn png_insert_exif(png: Vec<u8>, tiff: &[u8]) -> Vec<u8> {
    // Signature (8) + IHDR chunk (4 len + 4 type + 13 data + 4 crc).
    const AFTER_IHDR: usize = 8 + 25;
    if png.len() < AFTER_IHDR || &png[12..16] != b"IHDR" || tiff.len() > i32::MAX as usize {
        return png;
    }
    let mut chunk = Vec::with_capacity(tiff.len() + 12);
    chunk.extend_from_slice(&(tiff.len() as u32).to_be_bytes());
    chunk.extend_from_slice(b"eXIf");
    chunk.extend_from_slice(tiff);
    let crc = crc32fast::hash(&chunk[4..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    let mut out = Vec::with_capacity(png.len() + chunk.len());
    out.extend_from_slice(&png[..AFTER_IHDR]);
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&png[AFTER_IHDR..]);
    out
}

/// Adds an `EXIF` chunk (raw TIFF EXIF) to a WebP, turning a simple-format file into the
/// extended format (a `VP8X` header with the EXIF flag, and the alpha flag when the picture
/// has alpha) when needed.
pub fn webp_insert_exif(webp: Vec<u8>, tiff: &[u8], w: u32, h: u32, alpha: bool) -> Vec<u8> {
    if webp.len() < 20
        || &webp[..4] != b"RIFF"
        || &webp[8..12] != b"WEBP"
        || w == 0
        || h == 0
        || w > 1 << 24
        || h > 1 << 24
    {
        return webp;
    }
    let chunk = |fourcc: &[u8; 4], data: &[u8]| {
        let mut c = Vec::with_capacity(data.len() + 9);
        c.extend_from_slice(fourcc);
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    };
    let mut body: Vec<u8> = Vec::with_capacity(webp.len() + tiff.len() + 32);
    if &webp[12..16] == b"VP8X" {
        body.extend_from_slice(&webp[12..]);
        body[8] |= 0x08; // EXIF present
    } else {
        let mut x = [0u8; 10];
        x[0] = 0x08 | if alpha { 0x10 } else { 0 };
        x[4..7].copy_from_slice(&(w - 1).to_le_bytes()[..3]);
        x[7..10].copy_from_slice(&(h - 1).to_le_bytes()[..3]);
        body.extend_from_slice(&chunk(b"VP8X", &x));
        body.extend_from_slice(&webp[12..]);
    }
    body.extend_from_slice(&chunk(b"EXIF", tiff));
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    out
}

/// Inserts an EXIF block as an APP1 segment right after a JPEG's SOI.
pub fn jpeg_insert_exif(jpeg: Vec<u8>, tiff: &[u8]) -> Vec<u8> {
    let len = tiff.len() + 8;
    if len > usize::from(u16::MAX) || !jpeg.starts_with(&[0xFF, 0xD8]) {
        return jpeg;
    }
    let mut out = Vec::with_capacity(jpeg.len() + len + 2);
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(tiff);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A big-endian TIFF block with IFD0 {Make, Orientation, Copyright, GPS pointer} and a
    /// GPS IFD {LatRef, Lat, LonRef, Lon}; `orientation` 1..=8.
    pub(crate) fn sample_exif(orientation: u16) -> Vec<u8> {
        use exif::{Field, Rational};
        let rat = |n: u32, d: u32| Rational { num: n, denom: d };
        let fields = [
            Field {
                tag: Tag::Make,
                ifd_num: In::PRIMARY,
                value: Value::Ascii(vec![b"TestCam".to_vec()]),
            },
            Field {
                tag: Tag::Model,
                ifd_num: In::PRIMARY,
                value: Value::Ascii(vec![b"Model 9".to_vec()]),
            },
            Field {
                tag: Tag::Orientation,
                ifd_num: In::PRIMARY,
                value: Value::Short(vec![orientation]),
            },
            Field {
                tag: Tag::Copyright,
                ifd_num: In::PRIMARY,
                value: Value::Ascii(vec![b"(c) Test".to_vec()]),
            },
            Field {
                tag: Tag::DateTimeOriginal,
                ifd_num: In::PRIMARY,
                value: Value::Ascii(vec![b"2024:05:06 07:08:09".to_vec()]),
            },
            Field {
                tag: Tag::GPSLatitudeRef,
                ifd_num: In::PRIMARY,
                value: Value::Ascii(vec![b"N".to_vec()]),
            },
            Field {
                tag: Tag::GPSLatitude,
                ifd_num: In::PRIMARY,
                value: Value::Rational(vec![rat(48, 1), rat(51, 1), rat(2976, 100)]),
            },
            Field {
                tag: Tag::GPSLongitudeRef,
                ifd_num: In::PRIMARY,
                value: Value::Ascii(vec![b"W".to_vec()]),
            },
            Field {
                tag: Tag::GPSLongitude,
                ifd_num: In::PRIMARY,
                value: Value::Rational(vec![rat(2, 1), rat(17, 1), rat(4020, 100)]),
            },
        ];
        let mut w = exif::experimental::Writer::new();
        for f in &fields {
            w.push_field(f);
        }
        let mut out = std::io::Cursor::new(Vec::new());
        w.write(&mut out, false).expect("write test exif");
        out.into_inner()
    }

    #[test]
    fn reads_orientation_and_gps() {
        let raw = sample_exif(6);
        assert_eq!(orientation(&raw), Some(6));
        let j = to_json(&raw);
        assert_eq!(j["Make"], "TestCam");
        assert_eq!(j["DateTimeOriginal"], "2024:05:06 07:08:09");
        let lat = j["latitude"].as_f64().unwrap();
        let lon = j["longitude"].as_f64().unwrap();
        assert!((lat - 48.858267).abs() < 1e-5, "{lat}");
        assert!((lon + 2.2945).abs() < 1e-4, "{lon}");
        assert_eq!(to_json(b"garbage"), json!({}));
    }

    #[test]
    fn output_exif_never_carries_gps_or_orientation() {
        let raw = sample_exif(6);
        assert_eq!(output_exif(Some(&raw), MetadataPolicy::None), None);
        let kept = output_exif(Some(&raw), MetadataPolicy::Keep).unwrap();
        let j = to_json(&kept);
        assert_eq!(j["Make"], "TestCam");
        assert!(
            j.get("latitude").is_none() && j.get("Orientation").is_none(),
            "{j}"
        );
        let c = to_json(&output_exif(Some(&raw), MetadataPolicy::Copyright).unwrap());
        assert_eq!(c["Copyright"], "(c) Test");
        assert!(c.get("Make").is_none());
    }

    #[test]
    fn jpeg_segment_walk_survives_garbage() {
        assert_eq!(jpeg_exif(b"\xFF\xD8\xFF\xE1\xFF\xFF"), None);
        assert_eq!(jpeg_exif(b"\xFF\xD8"), None);
        assert_eq!(jpeg_icc(b"\xFF\xD8\xFF\xE2\x00\x01"), None);
        let with = jpeg_insert_exif(b"\xFF\xD8\xFF\xD9".to_vec(), &sample_exif(3));
        assert_eq!(orientation(&jpeg_exif(&with).unwrap()), Some(3));
    }
}
