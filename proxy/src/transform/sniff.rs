//! What a body *is*, from its first bytes: the one table of magic numbers in the node.
//! The image engine asks which [`ImageFormat`] to decode, the origin service asks whether a
//! body goes to the video engine, the external fetcher asks for a `Content-Type` (and
//! refuses what is not media); all three read the same [`sniff`]. It never looks at a name,
//! an extension or a declared type, never decodes, and never panics on short or hostile
//! input (every read is bounds-checked). Feed it the first [`SNIFF_BYTES`] of a body.

/// How many leading bytes [`sniff`] wants: an MPEG-TS needs three sync bytes (377), SVG
/// text a little more.
pub const SNIFF_BYTES: usize = 512;

/// An input format the image engine decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Gif,
    Webp,
    Bmp,
    Tiff,
    Avif,
    Heic,
    Svg,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Gif => "gif",
            ImageFormat::Webp => "webp",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Tiff => "tiff",
            ImageFormat::Avif => "avif",
            ImageFormat::Heic => "heic",
            ImageFormat::Svg => "svg",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Gif => "image/gif",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Bmp => "image/bmp",
            ImageFormat::Tiff => "image/tiff",
            ImageFormat::Avif => "image/avif",
            ImageFormat::Heic => "image/heic",
            ImageFormat::Svg => "image/svg+xml",
        }
    }
}

/// What the first bytes of a body say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A picture the image engine decodes.
    Image(ImageFormat),
    /// A HEIF-family still (`mif1`, `msf1` brands) with no AVIF or HEVC brand: an image,
    /// but not one the image engine decodes.
    OtherImage(&'static str),
    /// An audio or video container: the video engine's input.
    AudioVideo(&'static str),
}

impl Sniffed {
    /// The `Content-Type` of the body.
    pub fn mime(self) -> &'static str {
        match self {
            Sniffed::Image(f) => f.mime(),
            Sniffed::OtherImage(m) | Sniffed::AudioVideo(m) => m,
        }
    }
}

/// Classifies a body by its first bytes; `None` when it is not media.
pub fn sniff(b: &[u8]) -> Option<Sniffed> {
    use Sniffed::{AudioVideo as Av, Image};
    let at = |i: usize, m: &[u8]| b.get(i..i + m.len()) == Some(m);
    let riff = |kind: &[u8]| at(0, b"RIFF") && at(8, kind);
    Some(if at(0, &[0xFF, 0xD8, 0xFF]) {
        Image(ImageFormat::Jpeg)
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        Image(ImageFormat::Png)
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        Image(ImageFormat::Gif)
    } else if riff(b"WEBP") {
        Image(ImageFormat::Webp)
    } else if at(0, b"II*\0") || at(0, b"MM\0*") {
        Image(ImageFormat::Tiff)
    } else if is_bmp(b) {
        Image(ImageFormat::Bmp)
    } else if at(4, b"ftyp") {
        isobmff(b)
    } else if [b"moov".as_slice(), b"mdat", b"wide", b"free"]
        .iter()
        .any(|m| at(4, m))
    {
        // QuickTime without an `ftyp` box.
        Av("video/quicktime")
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Av("video/webm")
    } else if riff(b"AVI ") {
        Av("video/x-msvideo")
    } else if riff(b"WAVE") {
        Av("audio/wav")
    } else if at(0, b"OggS") {
        Av("audio/ogg")
    } else if at(0, b"FLV\x01") {
        Av("video/x-flv")
    } else if at(0, b"fLaC") {
        Av("audio/flac")
    } else if at(0, b"ID3") || at(0, &[0xFF, 0xFB]) {
        Av("audio/mpeg")
    } else if at(0, &[0x00, 0x00, 0x01, 0xBA]) {
        Av("video/mpeg")
    } else if [0, 188, 376].iter().all(|&i| b.get(i) == Some(&0x47)) {
        // Three MPEG-TS sync bytes (a GIF also starts with 0x47, and may have it at 188).
        Av("video/mp2t")
    } else if looks_like_svg(b) {
        Image(ImageFormat::Svg)
    } else {
        return None;
    })
}

/// The image format to decode, when the body is one the image engine reads.
pub fn image_format(b: &[u8]) -> Option<ImageFormat> {
    match sniff(b)? {
        Sniffed::Image(f) => Some(f),
        _ => None,
    }
}

/// Whether the body is an audio/video container (and not an image).
pub fn is_audio_video(b: &[u8]) -> bool {
    matches!(sniff(b), Some(Sniffed::AudioVideo(_)))
}

/// A BMP: `BM` and one of the known DIB header sizes.
fn is_bmp(b: &[u8]) -> bool {
    let Some(dib) = b.get(14..18).filter(|_| b.starts_with(b"BM")) else {
        return false;
    };
    let dib = u32::from_le_bytes([dib[0], dib[1], dib[2], dib[3]]);
    matches!(dib, 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124)
}

/// Brands of HEIF-family stills whose items the image engine does not decode on their own.
const OTHER_IMAGE_BRANDS: [&[u8]; 2] = [b"mif1", b"msf1"];

/// An ISO-BMFF file (`ftyp` at 4): AVIF or HEIC from the major or a compatible brand,
/// else an image by its major brand, else audio/video.
fn isobmff(b: &[u8]) -> Sniffed {
    let major = b.get(8..12).unwrap_or(&[]);
    let size = b
        .get(0..4)
        .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize);
    let end = size.min(b.len()).min(256);
    let compatible = b.get(16..end).unwrap_or(&[]).chunks_exact(4);
    let mut heic = false;
    for brand in std::iter::once(major).chain(compatible) {
        match brand {
            b"avif" | b"avis" => return Sniffed::Image(ImageFormat::Avif),
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"hevm" | b"hevs" => {
                heic = true
            }
            _ => {}
        }
    }
    if heic {
        Sniffed::Image(ImageFormat::Heic)
    } else if OTHER_IMAGE_BRANDS.contains(&major) {
        Sniffed::OtherImage("image/heic")
    } else if major == b"M4A " {
        Sniffed::AudioVideo("audio/mp4")
    } else if major == b"qt  " {
        Sniffed::AudioVideo("video/quicktime")
    } else {
        Sniffed::AudioVideo("video/mp4")
    }
}

/// SVG text: an XML prolog, comment, doctype or the root element first, an `<svg` element
/// within the first 4 KiB, and no HTML.
fn looks_like_svg(b: &[u8]) -> bool {
    let head = &b[..b.len().min(4096)];
    let Ok(text) = std::str::from_utf8(head).or_else(|e| {
        // A multi-byte character cut at 4096 is fine.
        std::str::from_utf8(&head[..e.valid_up_to()])
    }) else {
        return false;
    };
    let t = text.trim_start_matches('\u{feff}').trim_start();
    ["<?xml", "<svg", "<!--", "<!DOCTYPE"]
        .iter()
        .any(|p| t.starts_with(p))
        && t.contains("<svg")
        && !t.to_ascii_lowercase().contains("<html")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_table() {
        #[rustfmt::skip]
        let cases: &[(&[u8], Option<ImageFormat>)] = &[
            (b"\xFF\xD8\xFF\xE0\0\x10JFIF", Some(ImageFormat::Jpeg)),
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Some(ImageFormat::Png)),
            (b"GIF89a\x01\0\x01\0", Some(ImageFormat::Gif)),
            (b"RIFF\x24\0\0\0WEBPVP8 ", Some(ImageFormat::Webp)),
            (b"II*\0\x08\0\0\0", Some(ImageFormat::Tiff)),
            (b"MM\0*\0\0\0\x08", Some(ImageFormat::Tiff)),
            (b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0", Some(ImageFormat::Bmp)),
            (b"BMW hello world, not a bitmap", None),
            (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1", Some(ImageFormat::Avif)),
            (b"\0\0\0\x18ftypmif1\0\0\0\0mif1heic", Some(ImageFormat::Heic)),
            (b"\0\0\0\x18ftypisom\0\0\0\0isommp41", None),
            // A box shorter than its header claims is read as far as it goes.
            (b"\0\0\0\x1cftypavif", Some(ImageFormat::Avif)),
            (b"\0\0\0\x1cftyp", None),
            (b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>", Some(ImageFormat::Svg)),
            (b"  <svg width=\"10\" height=\"10\"></svg>", Some(ImageFormat::Svg)),
            (b"<html><body>hi</body></html>", None),
            (b"", None),
            (b"\xFF\xD8", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                image_format(bytes),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn containers_are_told_from_images_by_bytes() {
        let sniff_av = is_audio_video;
        let ftyp = |brand: &[u8]| [&[0, 0, 0, 0x20][..], b"ftyp", brand, &[0; 8]].concat();
        assert!(sniff_av(&ftyp(b"isom")));
        assert!(sniff_av(&ftyp(b"qt  ")));
        assert!(!sniff_av(&ftyp(b"avif")));
        assert!(!sniff_av(&ftyp(b"heic")));
        assert!(sniff_av(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F]));
        assert!(sniff_av(b"RIFF\0\0\0\0AVI LIST"));
        assert!(!sniff_av(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(sniff_av(b"OggS\0\x02"));
        let mut ts = vec![0u8; 400];
        ts[0] = 0x47;
        ts[188] = 0x47;
        ts[376] = 0x47;
        assert!(sniff_av(&ts));
        // A GIF starts with 0x47 too, and may have it at 188: not a transport stream.
        let mut gif = b"GIF89a".to_vec();
        gif.resize(400, 0);
        gif[188] = 0x47;
        assert!(!sniff_av(&gif));
        assert!(!sniff_av(&[0xFF, 0xD8, 0xFF, 0xE0]));
        assert!(!sniff_av(b"\x89PNG\r\n\x1a\n"));
        assert!(!sniff_av(b""));
    }

    #[test]
    fn content_types() {
        let sniff_media = |b: &[u8]| sniff(b).map(Sniffed::mime);
        assert_eq!(sniff_media(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_media(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(sniff_media(b"\0\0\0\x20ftypisom...."), Some("video/mp4"));
        assert_eq!(sniff_media(b"\0\0\0\x1cftypavif"), Some("image/avif"));
        assert_eq!(
            sniff_media(b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
            Some("image/svg+xml")
        );
        assert_eq!(sniff_media(b"<!DOCTYPE html><html>"), None);
        assert_eq!(sniff_media(b"hello"), None);
        assert_eq!(sniff_media(b""), None);
    }
}
