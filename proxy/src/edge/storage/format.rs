//! The disk tier's on-disk format: what the two files of an entry hold, encoded and decoded.
//!
//! `{hash}.b` is a 16-byte header (`MEDGEB01` + the write id, big-endian) followed by the body;
//! `{hash}.m` is `MEDGEM01`, the same write id, the body length, the two lengths of pingora's
//! serialized `CacheMeta` and its two parts. A pair whose write ids or lengths disagree is torn.
//! Pure functions over bytes (no I/O), bounds-checked for any input: the files are read back
//! after crashes and may hold anything.

/// Magic of a body file.
pub const BODY_MAGIC: &[u8; 8] = b"MEDGEB01";
/// Magic of a meta file.
pub const META_MAGIC: &[u8; 8] = b"MEDGEM01";
/// Body file header: magic + write id.
pub const BODY_HEADER: u64 = 16;
/// Fixed part of a meta file: magic, write id, body length, two part lengths.
const META_FIXED: usize = 32;

/// The header of a body file written by `write_id`.
pub fn body_header(write_id: u64) -> [u8; BODY_HEADER as usize] {
    let mut header = [0u8; BODY_HEADER as usize];
    header[..8].copy_from_slice(BODY_MAGIC);
    header[8..].copy_from_slice(&write_id.to_be_bytes());
    header
}

/// Whether `header` opens a body file written by `write_id`.
pub fn body_header_matches(header: &[u8], write_id: u64) -> bool {
    header.len() == BODY_HEADER as usize
        && &header[..8] == BODY_MAGIC
        && header[8..] == write_id.to_be_bytes()
}

/// A meta file's bytes for pingora's serialized meta `meta` of a body of `body_len` bytes.
pub fn encode_meta(meta: &(Vec<u8>, Vec<u8>), body_len: u64, write_id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_FIXED + meta.0.len() + meta.1.len());
    out.extend_from_slice(META_MAGIC);
    out.extend_from_slice(&write_id.to_be_bytes());
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(&(meta.0.len() as u32).to_be_bytes());
    out.extend_from_slice(&(meta.1.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta.0);
    out.extend_from_slice(&meta.1);
    out
}

/// `(write id, body length, serialized meta)` of a meta file, `None` if it is not one whole.
pub fn decode_meta(raw: &[u8]) -> Option<(u64, u64, (Vec<u8>, Vec<u8>))> {
    if raw.len() < META_FIXED || &raw[..8] != META_MAGIC {
        return None;
    }
    let u64_at = |i: usize| raw.get(i..i + 8)?.try_into().ok().map(u64::from_be_bytes);
    let u32_at = |i: usize| raw.get(i..i + 4)?.try_into().ok().map(u32::from_be_bytes);
    let write_id = u64_at(8)?;
    let body_len = u64_at(16)?;
    let l0 = u32_at(24)? as usize;
    let l1 = u32_at(28)? as usize;
    if (raw.len() - META_FIXED) as u64 != l0 as u64 + l1 as u64 {
        return None;
    }
    let (a, b) = raw[META_FIXED..].split_at(l0);
    Some((write_id, body_len, (a.to_vec(), b.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_anything_else_is_refused() {
        let meta = (b"internal".to_vec(), b"header!".to_vec());
        let raw = encode_meta(&meta, 1234, 77);
        assert_eq!(decode_meta(&raw), Some((77, 1234, meta.clone())));
        for cut in 0..raw.len() {
            assert_eq!(decode_meta(&raw[..cut]), None, "truncated at {cut}");
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert_eq!(decode_meta(&longer), None);
        let mut bad_magic = raw.clone();
        bad_magic[0] ^= 1;
        assert_eq!(decode_meta(&bad_magic), None);
        // Lengths that overflow a 32-bit sum are refused, not wrapped.
        let mut huge = raw;
        huge[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        huge[28..32].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_meta(&huge), None);
    }

    #[test]
    fn body_headers_name_their_write() {
        let h = body_header(42);
        assert!(body_header_matches(&h, 42));
        assert!(!body_header_matches(&h, 43));
        assert!(!body_header_matches(&h[..15], 42));
        let mut other = h;
        other[0] = b'X';
        assert!(!body_header_matches(&other, 42));
    }
}
