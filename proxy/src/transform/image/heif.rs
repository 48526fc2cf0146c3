//! HEIC/HEIF (and AVIF) decoding through libheif, compiled with the `heic` feature. Without
//! it, these inputs are a clean 415.

use super::{ImageOptions, Probe, Raster};
use crate::transform::TransformError;

/// Decodes the primary image (no ICC conversion yet: returns the profile if any).
pub fn decode(
    bytes: &[u8],
    probe: &Probe,
    opts: &ImageOptions,
) -> Result<(Raster, Option<Vec<u8>>), TransformError> {
    let _ = (bytes, opts);
    Err(TransformError::Unsupported(format!(
        "{} input needs the heic feature (libheif)",
        probe.format.as_str()
    )))
}
