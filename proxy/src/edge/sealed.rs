//! Large memory-tier bodies kept in sealed memfds, so the front door can `sendfile` them.
//!
//! A hit of a 100 KB object spent most of its CPU copying the body into the socket; nginx
//! `sendfile`s its cache files and skips that copy. A body of at least [`MIN_LEN`] bytes is
//! written once into an anonymous memory file (`memfd_create`), sealed against any change
//! (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) and mapped read-only: the
//! mapping is the object's `Bytes` for pingora-cache's hit path, and the file is what the
//! front door hands to `sendfile`. Sealing is what makes this safe: pages the kernel still
//! holds for a send in flight can never change, even once the object is evicted.
//!
//! Each such body holds one descriptor and one mapping, so their number is capped
//! ([`set_budget`]); past the cap, or where the kernel refuses (`memfd_create` filtered by a
//! sandbox), a body stays on the heap and is copied as before.

use bytes::Bytes;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bodies smaller than this are copied: below it `sendfile` saves less than it costs.
pub const MIN_LEN: usize = 64 * 1024;

/// Sealed bodies alive, and how many may be.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static BUDGET: AtomicUsize = AtomicUsize::new(0);

/// Allows up to `n` sealed bodies (each holds a descriptor and a mapping); 0 turns them off.
pub fn set_budget(n: usize) {
    BUDGET.store(n, Ordering::Relaxed);
}

/// Raises the soft limit on open files to the hard one (as servers do) and sets the budget
/// of sealed bodies to a quarter of it, at most 16,384 (mappings count against
/// `vm.max_map_count`, 65,530 by default). Returns the budget.
pub fn init_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            0
        } else {
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
            lim.rlim_cur as usize
        }
    };
    let n = (soft / 4).min(16_384);
    set_budget(n);
    n
}

/// A body in a sealed, read-only mapped memory file.
pub struct SealedBody {
    fd: OwnedFd,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and never changes (sealed); it is unmapped only on drop.
unsafe impl Send for SealedBody {}
unsafe impl Sync for SealedBody {}

impl SealedBody {
    /// Copies `data` into a new sealed memory file, or `None` (too small, over budget, or
    /// refused by the kernel).
    pub fn new(data: &[u8]) -> Option<Arc<SealedBody>> {
        if data.len() < MIN_LEN {
            return None;
        }
        // Reserve a slot first, so concurrent fills cannot overshoot the budget.
        let budget = BUDGET.load(Ordering::Relaxed);
        if LIVE.fetch_add(1, Ordering::Relaxed) >= budget {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let made = Self::make(data);
        if made.is_none() {
            LIVE.fetch_sub(1, Ordering::Relaxed);
        }
        made.map(Arc::new)
    }

    fn make(data: &[u8]) -> Option<SealedBody> {
        // SAFETY: FFI calls with valid arguments; every failure path closes what was opened.
        unsafe {
            let raw = libc::memfd_create(
                c"media-edge-body".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            );
            if raw < 0 {
                return None;
            }
            let fd = OwnedFd::from_raw_fd(raw);
            let mut off = 0;
            while off < data.len() {
                let n = libc::write(
                    raw,
                    data[off..].as_ptr().cast(),
                    (data.len() - off).min(1 << 30),
                );
                if n < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return None;
                }
                if n == 0 {
                    return None;
                }
                off += n as usize;
            }
            let seals =
                libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            if libc::fcntl(raw, libc::F_ADD_SEALS, seals) != 0 {
                return None;
            }
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                data.len(),
                libc::PROT_READ,
                libc::MAP_SHARED,
                raw,
                0,
            );
            if ptr == libc::MAP_FAILED {
                return None;
            }
            Some(SealedBody {
                fd,
                ptr: ptr as *const u8,
                len: data.len(),
            })
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped body as `Bytes` (no copy; keeps the file alive).
    pub fn bytes(self: &Arc<Self>) -> Bytes {
        Bytes::from_owner(Mapped(self.clone()))
    }
}

impl AsRef<[u8]> for SealedBody {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for SealedBody {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `make`, unmapped once; the descriptor closes after.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Mapped(Arc<SealedBody>);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref().as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bodies_read_back_and_cannot_change() {
        set_budget(1000);
        assert!(
            SealedBody::new(&[1u8; 100]).is_none(),
            "small bodies stay on the heap"
        );
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let s = SealedBody::new(&data).expect("memfd");
        assert_eq!(s.len(), data.len());
        let b = s.bytes();
        assert_eq!(&b[..], &data[..]);
        assert_eq!(&b.slice(1000..2000)[..], &data[1000..2000]);
        // The file reads the same, and refuses writes and resizing.
        let mut back = vec![0u8; 10];
        let n = unsafe { libc::pread(s.fd(), back.as_mut_ptr().cast(), 10, 5000) };
        assert_eq!(n, 10);
        assert_eq!(back, data[5000..5010]);
        let w = unsafe { libc::pwrite(s.fd(), b"x".as_ptr().cast(), 1, 0) };
        assert_eq!(w, -1, "sealed against writes");
        assert_eq!(unsafe { libc::ftruncate(s.fd(), 10) }, -1, "and shrinking");
        // The mapping outlives the handle that made it, through the `Bytes`.
        drop(s);
        assert_eq!(&b[190_000..190_010], &data[190_000..190_010]);
    }
}
