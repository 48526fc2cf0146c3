//! HEIC/HEIF and AVIF decoding through the system libheif (Debian 12: 1.15, with libde265 for
//! HEVC and dav1d/aom for AV1), compiled with the `heic` feature (on by default). The Rust
//! bindings on crates.io need libheif 1.17+, so the dozen C functions used here are declared
//! directly. Without the feature these inputs are a clean 415.
//!
//! Owns: reading the primary image from bytes in memory, refusing it past the pixel limit
//! before any pixel is decoded, and returning 8-bit interleaved RGB(A) with the embedded ICC
//! profile. libheif applies the container's rotation/mirror (`irot`/`imir`) itself. It never
//! resizes and never reads anything but the bytes it is given.

use super::{ImageOptions, Probe, Raster};
use crate::transform::TransformError;

#[cfg(feature = "heic")]
mod ffi {
    use std::os::raw::{c_char, c_int, c_void};

    /// `struct heif_error`: `code` 0 is success.
    #[repr(C)]
    pub struct HeifError {
        pub code: c_int,
        pub subcode: c_int,
        pub message: *const c_char,
    }

    pub enum Context {}
    pub enum Handle {}
    pub enum Image {}
    #[cfg(test)]
    pub enum Encoder {}

    pub const COLORSPACE_RGB: c_int = 1;
    pub const CHROMA_INTERLEAVED_RGB: c_int = 10;
    pub const CHROMA_INTERLEAVED_RGBA: c_int = 11;
    pub const CHANNEL_INTERLEAVED: c_int = 10;
    #[cfg(test)]
    pub const COMPRESSION_HEVC: c_int = 1;

    #[link(name = "heif")]
    extern "C" {
        pub fn heif_init(params: *mut c_void) -> HeifError;
        pub fn heif_context_alloc() -> *mut Context;
        pub fn heif_context_free(ctx: *mut Context);
        pub fn heif_context_read_from_memory_without_copy(
            ctx: *mut Context,
            mem: *const c_void,
            size: usize,
            options: *const c_void,
        ) -> HeifError;
        pub fn heif_context_set_maximum_image_size_limit(ctx: *mut Context, max_width: c_int);
        pub fn heif_context_get_primary_image_handle(
            ctx: *mut Context,
            handle: *mut *mut Handle,
        ) -> HeifError;
        pub fn heif_image_handle_release(handle: *const Handle);
        pub fn heif_image_handle_get_width(handle: *const Handle) -> c_int;
        pub fn heif_image_handle_get_height(handle: *const Handle) -> c_int;
        pub fn heif_image_handle_has_alpha_channel(handle: *const Handle) -> c_int;
        pub fn heif_image_handle_get_raw_color_profile_size(handle: *const Handle) -> usize;
        pub fn heif_image_handle_get_raw_color_profile(
            handle: *const Handle,
            out: *mut c_void,
        ) -> HeifError;
        pub fn heif_decode_image(
            handle: *const Handle,
            out: *mut *mut Image,
            colorspace: c_int,
            chroma: c_int,
            options: *const c_void,
        ) -> HeifError;
        pub fn heif_image_get_width(img: *const Image, channel: c_int) -> c_int;
        pub fn heif_image_get_height(img: *const Image, channel: c_int) -> c_int;
        pub fn heif_image_get_plane_readonly(
            img: *const Image,
            channel: c_int,
            stride: *mut c_int,
        ) -> *const u8;
        pub fn heif_image_release(img: *const Image);
    }

    #[cfg(test)]
    #[link(name = "heif")]
    extern "C" {
        pub fn heif_context_get_encoder_for_format(
            ctx: *mut Context,
            format: c_int,
            enc: *mut *mut Encoder,
        ) -> HeifError;
        pub fn heif_encoder_release(enc: *mut Encoder);
        pub fn heif_encoder_set_lossy_quality(enc: *mut Encoder, q: c_int) -> HeifError;
        pub fn heif_image_create(
            w: c_int,
            h: c_int,
            colorspace: c_int,
            chroma: c_int,
            out: *mut *mut Image,
        ) -> HeifError;
        pub fn heif_image_add_plane(
            img: *mut Image,
            channel: c_int,
            w: c_int,
            h: c_int,
            bit_depth: c_int,
        ) -> HeifError;
        pub fn heif_image_get_plane(img: *mut Image, channel: c_int, stride: *mut c_int)
            -> *mut u8;
        pub fn heif_context_encode_image(
            ctx: *mut Context,
            img: *const Image,
            enc: *mut Encoder,
            options: *const c_void,
            out: *mut *mut Handle,
        ) -> HeifError;
        pub fn heif_context_write_to_file(ctx: *mut Context, path: *const c_char) -> HeifError;
    }

    /// The message of a failed call.
    pub fn message(e: &HeifError) -> String {
        if e.message.is_null() {
            return format!("libheif error {}.{}", e.code, e.subcode);
        }
        // SAFETY: libheif's messages are static NUL-terminated strings.
        unsafe { std::ffi::CStr::from_ptr(e.message) }
            .to_string_lossy()
            .into_owned()
    }

    /// Frees what it holds when dropped, on every path.
    pub struct Owned {
        pub ctx: *mut Context,
        pub handle: *mut Handle,
        pub image: *mut Image,
    }

    impl Drop for Owned {
        fn drop(&mut self) {
            // SAFETY: each pointer is null or was returned by libheif and is released once.
            unsafe {
                if !self.image.is_null() {
                    heif_image_release(self.image);
                }
                if !self.handle.is_null() {
                    heif_image_handle_release(self.handle);
                }
                if !self.ctx.is_null() {
                    heif_context_free(self.ctx);
                }
            }
        }
    }
}

/// Registers libheif's decoders now: it loads its plugins on first use, which a locked-down
/// transform worker could not do later.
#[cfg(feature = "heic")]
pub fn warm_up() {
    // SAFETY: `heif_init` takes null for its defaults; the context is freed at once.
    unsafe {
        ffi::heif_init(std::ptr::null_mut());
        let ctx = ffi::heif_context_alloc();
        if !ctx.is_null() {
            ffi::heif_context_free(ctx);
        }
    }
}

/// Decodes the primary image (no ICC conversion yet: returns the profile if any).
#[cfg(feature = "heic")]
pub fn decode(
    bytes: &[u8],
    probe: &Probe,
    opts: &ImageOptions,
) -> Result<(Raster, Option<Vec<u8>>), TransformError> {
    use ffi::*;
    let name = probe.format.as_str();
    let invalid = |what: &str, e: &HeifError| {
        TransformError::Invalid(format!("cannot {what} this {name}: {}", message(e)))
    };
    // SAFETY: every pointer passed is live for the call; `bytes` outlives the context
    // (read "without copy"), and `Owned` releases handle, image and context on every path.
    unsafe {
        let mut own = Owned {
            ctx: heif_context_alloc(),
            handle: std::ptr::null_mut(),
            image: std::ptr::null_mut(),
        };
        if own.ctx.is_null() {
            return Err(TransformError::Internal("libheif: no context".into()));
        }
        // libheif refuses images wider or taller than this before decoding.
        let side = (opts.max_input_pixels as f64)
            .sqrt()
            .ceil()
            .min(i32::MAX as f64) as i32;
        heif_context_set_maximum_image_size_limit(own.ctx, side.max(1));
        let e = heif_context_read_from_memory_without_copy(
            own.ctx,
            bytes.as_ptr().cast(),
            bytes.len(),
            std::ptr::null(),
        );
        if e.code != 0 {
            return Err(invalid("read", &e));
        }
        let e = heif_context_get_primary_image_handle(own.ctx, &mut own.handle);
        if e.code != 0 || own.handle.is_null() {
            return Err(invalid("find the primary image of", &e));
        }
        let (w, h) = (
            heif_image_handle_get_width(own.handle).max(0) as u64,
            heif_image_handle_get_height(own.handle).max(0) as u64,
        );
        if w == 0 || h == 0 {
            return Err(TransformError::Invalid(format!("{name} image has no size")));
        }
        if w * h > opts.max_input_pixels {
            return Err(TransformError::TooLarge(format!(
                "{name} image of {w}x{h} is over the limit of {} pixels",
                opts.max_input_pixels
            )));
        }
        let alpha = heif_image_handle_has_alpha_channel(own.handle) != 0;
        let icc = match heif_image_handle_get_raw_color_profile_size(own.handle) {
            0 => None,
            n => {
                let mut buf = vec![0u8; n];
                let e =
                    heif_image_handle_get_raw_color_profile(own.handle, buf.as_mut_ptr().cast());
                (e.code == 0).then_some(buf)
            }
        };
        let chroma = if alpha {
            CHROMA_INTERLEAVED_RGBA
        } else {
            CHROMA_INTERLEAVED_RGB
        };
        let e = heif_decode_image(
            own.handle,
            &mut own.image,
            COLORSPACE_RGB,
            chroma,
            std::ptr::null(),
        );
        if e.code != 0 || own.image.is_null() {
            // A missing decoder plugin is "unsupported", broken data is "invalid".
            return Err(if e.code == 3 || e.code == 4 {
                TransformError::Unsupported(format!("no decoder for this {name}: {}", message(&e)))
            } else {
                invalid("decode", &e)
            });
        }
        let iw = heif_image_get_width(own.image, CHANNEL_INTERLEAVED);
        let ih = heif_image_get_height(own.image, CHANNEL_INTERLEAVED);
        let mut stride = 0;
        let plane = heif_image_get_plane_readonly(own.image, CHANNEL_INTERLEAVED, &mut stride);
        if plane.is_null() || iw <= 0 || ih <= 0 || stride <= 0 {
            return Err(TransformError::Invalid(format!(
                "{name} decoded to no pixels"
            )));
        }
        let (iw, ih, stride) = (iw as usize, ih as usize, stride as usize);
        let row = iw * if alpha { 4 } else { 3 };
        if stride < row {
            return Err(TransformError::Internal("libheif: short rows".into()));
        }
        let src = std::slice::from_raw_parts(plane, stride * (ih - 1) + row);
        let mut data = Vec::with_capacity(row * ih);
        for y in 0..ih {
            data.extend_from_slice(&src[y * stride..y * stride + row]);
        }
        Ok((
            Raster {
                width: iw as u32,
                height: ih as u32,
                alpha,
                data,
            },
            icc,
        ))
    }
}

/// Without libheif: a clean 415.
#[cfg(not(feature = "heic"))]
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

/// Writes a `w`×`h` HEIC (HEVC via libheif's x265 encoder) of a colour gradient: test
/// fixtures made at test time, not committed.
#[cfg(all(test, feature = "heic"))]
pub fn write_test_heic(path: &std::path::Path, w: u32, h: u32) {
    use ffi::*;
    // SAFETY: test-only; pointers come from libheif and are released by `Owned` or below.
    unsafe {
        let own = Owned {
            ctx: heif_context_alloc(),
            handle: std::ptr::null_mut(),
            image: std::ptr::null_mut(),
        };
        let mut img = std::ptr::null_mut();
        let e = heif_image_create(
            w as i32,
            h as i32,
            COLORSPACE_RGB,
            CHROMA_INTERLEAVED_RGB,
            &mut img,
        );
        assert_eq!(e.code, 0, "{}", message(&e));
        let own_img = Owned {
            ctx: std::ptr::null_mut(),
            handle: std::ptr::null_mut(),
            image: img,
        };
        let e = heif_image_add_plane(img, CHANNEL_INTERLEAVED, w as i32, h as i32, 8);
        assert_eq!(e.code, 0, "{}", message(&e));
        let mut stride = 0;
        let p = heif_image_get_plane(img, CHANNEL_INTERLEAVED, &mut stride);
        for y in 0..h as usize {
            for x in 0..w as usize {
                let o = y * stride as usize + x * 3;
                *p.add(o) = (x * 255 / w as usize) as u8;
                *p.add(o + 1) = (y * 255 / h as usize) as u8;
                *p.add(o + 2) = 128;
            }
        }
        let mut enc = std::ptr::null_mut();
        let e = heif_context_get_encoder_for_format(own.ctx, COMPRESSION_HEVC, &mut enc);
        assert_eq!(e.code, 0, "no HEVC encoder: {}", message(&e));
        let _ = heif_encoder_set_lossy_quality(enc, 80);
        let e =
            heif_context_encode_image(own.ctx, img, enc, std::ptr::null(), std::ptr::null_mut());
        heif_encoder_release(enc);
        assert_eq!(e.code, 0, "{}", message(&e));
        let c = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
        let e = heif_context_write_to_file(own.ctx, c.as_ptr());
        assert_eq!(e.code, 0, "{}", message(&e));
        drop(own_img);
    }
}
