//! The node's side of a worker's pipes and `/proc` entries: waiting on a descriptor with
//! the call's deadline and cancel token, whole writes and reads, a worker's memory figures.
//! Owns no policy: the callers decide what a stop means.

use super::Stop;
use crate::transform::pool::CancelToken;
use std::os::fd::AsRawFd;
use std::process::{ChildStdin, ChildStdout};
use std::time::Instant;

/// How often a waiting call looks at its cancel token.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// A `kB` field of `/proc/{pid}/status`.
pub(super) fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resident bytes of process `pid` (`/proc/{pid}/statm`).
pub(super) fn resident_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some(pages * page)
}

/// Waits until `fd` is ready for `events`, the deadline passes or the caller goes away.
fn ready(
    fd: i32,
    events: i16,
    deadline: Instant,
    cancel: &Option<CancelToken>,
) -> Result<(), Stop> {
    loop {
        if cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(Stop::Cancelled);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Stop::Deadline);
        }
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = left.min(TICK).as_millis().max(1) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Stop::Closed(format!("poll: {e}")));
            }
        }
    }
}

pub(super) fn write_all(
    pipe: &ChildStdin,
    mut data: &[u8],
    deadline: Instant,
    cancel: &Option<CancelToken>,
) -> Result<(), Stop> {
    let fd = pipe.as_raw_fd();
    while !data.is_empty() {
        ready(fd, libc::POLLOUT, deadline, cancel)?;
        // SAFETY: writes from a live slice to a descriptor this process owns.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => continue,
                _ => return Err(Stop::Closed(format!("write: {e}"))),
            }
        }
        data = &data[n as usize..];
    }
    Ok(())
}

pub(super) fn read_exact(
    pipe: &ChildStdout,
    buf: &mut [u8],
    deadline: Instant,
    cancel: &Option<CancelToken>,
) -> Result<(), Stop> {
    let fd = pipe.as_raw_fd();
    let mut at = 0;
    while at < buf.len() {
        ready(fd, libc::POLLIN, deadline, cancel)?;
        let rest = &mut buf[at..];
        // SAFETY: reads into a live slice from a descriptor this process owns.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n == 0 {
            return Err(Stop::Closed("the worker closed its output".into()));
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => continue,
                _ => return Err(Stop::Closed(format!("read: {e}"))),
            }
        }
        at += n as usize;
    }
    Ok(())
}
