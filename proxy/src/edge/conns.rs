//! Connection admission for the front door: caps on open client connections, per client IP
//! and in total, and the connection that has waited the longest (idle between requests, or
//! still reading a head) closed first when the node is full.
//!
//! Owns the table of open front-door connections (one lock per connection opened or closed,
//! never per request: a request only stores its connection's idle time in an atomic). Must
//! not read or write requests; the front door asks [`Connections::admit`] and holds the
//! [`Slot`] for the connection's life.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// This client IP already holds `max_connections_per_ip`.
    PerIp,
    /// `max_connections` are open and none is idle.
    Full,
}

/// One open connection's shared state.
pub struct ConnState {
    /// Milliseconds since the table's epoch when the connection began to wait (for its next
    /// request, or for the rest of a head); 0 while busy with a whole request, `u64::MAX`
    /// once picked to close.
    idle_since: AtomicU64,
    /// Notified to close the connection at its next idle moment.
    pub close: Notify,
}

impl ConnState {
    /// Waiting for a request or the rest of its head: a candidate to close when the node is
    /// full. A connection already waiting keeps the time it began (a head trickling in
    /// byte by byte does not make it younger).
    pub fn set_idle(&self, table: &Connections) {
        if self.idle_since.load(Ordering::Relaxed) != 0 {
            return;
        }
        let ms = table.epoch.elapsed().as_millis() as u64 + 1;
        let _ = self
            .idle_since
            .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Answering a whole request.
    pub fn set_busy(&self) {
        let _ = self
            .idle_since
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                (v != u64::MAX).then_some(0)
            });
    }
}

struct Inner {
    per_ip: HashMap<IpAddr, usize>,
    open: HashMap<u64, Arc<ConnState>>,
    next_id: u64,
}

/// The front door's open connections (see the module doc).
pub struct Connections {
    max_total: usize,
    max_per_ip: usize,
    /// Peers the per-IP cap does not apply to (trusted proxies carry many clients).
    exempt: filters::CidrSet,
    epoch: Instant,
    inner: Mutex<Inner>,
}

/// A connection admitted by [`Connections::admit`]; released when dropped.
pub struct Slot {
    table: Arc<Connections>,
    id: u64,
    ip: Option<IpAddr>,
    pub state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.table.inner.lock();
        inner.open.remove(&self.id);
        if let Some(ip) = self.ip {
            if let Some(n) = inner.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    inner.per_ip.remove(&ip);
                }
            }
        }
    }
}

impl Connections {
    /// `max_total` 0: no total cap; `max_per_ip` 0: no per-IP cap.
    pub fn new(max_total: usize, max_per_ip: usize, exempt: filters::CidrSet) -> Connections {
        Connections {
            max_total: if max_total == 0 {
                usize::MAX
            } else {
                max_total
            },
            max_per_ip: if max_per_ip == 0 {
                usize::MAX
            } else {
                max_per_ip
            },
            exempt,
            epoch: Instant::now(),
            inner: Mutex::new(Inner {
                per_ip: HashMap::new(),
                open: HashMap::new(),
                next_id: 0,
            }),
        }
    }

    /// Admits a new connection from `ip`, or says why not. When the node is full, the
    /// connection that has waited the longest (idle, or reading a head) is told to close and
    /// this one takes its place.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        let capped_ip = ip.filter(|ip| !self.exempt.contains(*ip));
        let mut inner = self.inner.lock();
        if let Some(ip) = capped_ip {
            if inner.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
                return Err(Refused::PerIp);
            }
        }
        if inner.open.len() >= self.max_total {
            let oldest = inner
                .open
                .values()
                .filter_map(|c| {
                    let t = c.idle_since.load(Ordering::Relaxed);
                    (t != 0 && t != u64::MAX).then_some((t, c))
                })
                .min_by_key(|(t, _)| *t)
                .map(|(_, c)| c.clone());
            let Some(victim) = oldest else {
                return Err(Refused::Full);
            };
            victim.idle_since.store(u64::MAX, Ordering::Relaxed);
            victim.close.notify_one();
            crate::metrics::count_connection_closed_for_room();
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let state = Arc::new(ConnState {
            idle_since: AtomicU64::new(0),
            close: Notify::new(),
        });
        inner.open.insert(id, state.clone());
        if let Some(ip) = capped_ip {
            *inner.per_ip.entry(ip).or_default() += 1;
        }
        Ok(Slot {
            table: self.clone(),
            id,
            ip: capped_ip,
            state,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.inner.lock().open.len()
    }
}

/// The soft open-files limit, raised to the hard limit (at most 2^20): each connection is a
/// descriptor, and the default soft limit (1024) would cap the node far below its budget.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct passed; no other memory is touched.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let want = lim.rlim_max.min(1 << 20);
        if want > lim.rlim_cur {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = want;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn per_ip_and_total_caps_with_the_oldest_idle_closed_first() {
        let exempt = filters::CidrSet::parse(&["10.0.0.0/8"]).unwrap();
        let t = Arc::new(Connections::new(4, 2, exempt));
        let a1 = t.admit(ip("192.0.2.1")).unwrap();
        let _a2 = t.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(t.admit(ip("192.0.2.1")).err(), Some(Refused::PerIp));
        // Trusted proxies are not capped per IP.
        let p1 = t.admit(ip("10.1.1.1")).unwrap();
        let p2 = t.admit(ip("10.1.1.1")).unwrap();
        assert_eq!(t.open(), 4);
        // Full and nobody idle: refused.
        assert_eq!(t.admit(ip("192.0.2.9")).err(), Some(Refused::Full));
        // Waiting again does not make a connection younger.
        p2.state.set_idle(&t);
        let first = p2.state.idle_since.load(Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(3));
        p2.state.set_idle(&t);
        assert_eq!(p2.state.idle_since.load(Ordering::Relaxed), first);
        p2.state.set_busy();
        // p1 idle first, then a1: p1 is closed to make room.
        p1.state.set_idle(&t);
        std::thread::sleep(std::time::Duration::from_millis(3));
        a1.state.set_idle(&t);
        let newcomer = t.admit(ip("192.0.2.9")).unwrap();
        assert_eq!(
            p1.state.idle_since.load(Ordering::Relaxed),
            u64::MAX,
            "picked"
        );
        assert_ne!(a1.state.idle_since.load(Ordering::Relaxed), u64::MAX);
        // A picked connection is never busy or idle again, and is not picked twice.
        p1.state.set_busy();
        assert_eq!(p1.state.idle_since.load(Ordering::Relaxed), u64::MAX);
        drop(p1);
        drop(p2);
        // Releasing frees the per-IP count too.
        drop(a1);
        let _again = t.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(t.open(), 3);
        drop(newcomer);
    }
}
