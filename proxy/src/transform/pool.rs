//! The transform pool: the one place CPU-heavy work waits for its turn. It owns four bounds
//! and nothing else:
//! - **workers**: at most `permits` transforms run at once, each on a blocking thread;
//! - **the queue**: at most `max_waiting` wait (past that, 503 + `Retry-After` at once);
//! - **fairness**: one client (the IP the edge resolved, or a background worker's name) holds
//!   at most `per_client` turns, and a freed turn goes to the longest-waiting request whose
//!   client is under that cap, so one client's burst never holds every worker;
//! - **memory**: a turn reserves the bytes its work will hold ([`Turn::reserve`]) from a
//!   global budget before it decodes; it waits for budget rather than pushing the node into
//!   swap, and work that alone needs more than the whole budget is refused (413).
//!
//! A turn belongs to the blocking thread doing the work, not to the request's future: a
//! client that goes away cannot free a worker that is still busy. Instead, dropping the
//! future raises the work's [`CancelToken`], which the engines check at every frame and stage
//! ([`check_cancel`], the video engine's deadline), so abandoned work stops within a frame.
//! It must not know about HTTP or about what the work is.

use super::TransformError;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{oneshot, Semaphore};

/// Work counted by how it ended, for `/metrics`: stopped because the request went away
/// (`cancelled`), or because it ran past its time limit (`deadline`).
pub static CANCELLED: AtomicU64 = AtomicU64::new(0);
pub static DEADLINE: AtomicU64 = AtomicU64::new(0);

/// The pool's client for work nobody waits on (job workers, background AVIF encodes): one
/// client together, so background work is capped like any one client.
pub const BACKGROUND: &str = "background";

/// Budget units: KiB (a semaphore holds at most `usize::MAX >> 3` permits and a request is a
/// `u32`: budgets up to 512 GiB).
const UNIT: u64 = 1024;

/// Raised when the request a transform works for is gone (its future was dropped).
#[derive(Clone, Default, Debug)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

thread_local! {
    /// The token of the work running on this blocking thread (set by [`Turn::run`]).
    static CURRENT: std::cell::RefCell<Option<CancelToken>> = const { std::cell::RefCell::new(None) };
}

/// The cancel token of the work running on this thread, if it runs on the pool.
pub fn current_cancel() -> Option<CancelToken> {
    CURRENT.with(|c| c.borrow().clone())
}

/// A checkpoint for long work on the pool: `Err(Cancelled)` once the request is gone.
pub fn check_cancel(what: &str) -> Result<(), TransformError> {
    match current_cancel() {
        Some(t) if t.is_cancelled() => Err(TransformError::Cancelled(format!(
            "{what} stopped: the request went away"
        ))),
        _ => Ok(()),
    }
}

/// The bounded, fair pool. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    permits: usize,
    per_client: usize,
    max_waiting: usize,
    /// The memory budget in [`UNIT`]s, and what is left of it.
    budget_units: u32,
    memory: Arc<Semaphore>,
    state: parking_lot::Mutex<State>,
}

#[derive(Default)]
struct State {
    running: usize,
    by_client: HashMap<Arc<str>, usize>,
    queue: VecDeque<Waiter>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    client: Arc<str>,
    tx: oneshot::Sender<()>,
}

impl State {
    fn grant(&mut self, client: &Arc<str>) {
        self.running += 1;
        *self.by_client.entry(client.clone()).or_insert(0) += 1;
    }

    fn release(&mut self, client: &Arc<str>) {
        self.running = self.running.saturating_sub(1);
        if let Some(n) = self.by_client.get_mut(client) {
            *n -= 1;
            if *n == 0 {
                self.by_client.remove(client);
            }
        }
    }

    fn under_cap(&self, client: &str, per_client: usize) -> bool {
        self.by_client.get(client).copied().unwrap_or(0) < per_client
    }

    /// Hands free turns to the longest-waiting requests whose clients are under the cap.
    fn wake(&mut self, permits: usize, per_client: usize) {
        while self.running < permits {
            let Some(i) =
                (0..self.queue.len()).find(|&i| self.under_cap(&self.queue[i].client, per_client))
            else {
                return;
            };
            let Some(w) = self.queue.remove(i) else {
                return;
            };
            self.grant(&w.client);
            if w.tx.send(()).is_err() {
                // The waiter is gone (it removes itself under this lock, so this is rare).
                self.release(&w.client);
            }
        }
    }
}

/// Sizes of a pool.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Transforms at once.
    pub permits: usize,
    /// Waiting at most (past that: 503).
    pub max_waiting: usize,
    /// Turns one client may hold at once.
    pub per_client: usize,
    /// Bytes all running transforms may reserve together.
    pub memory_bytes: u64,
}

impl Limits {
    /// `permits` at once, 16 waiting per permit, one client at most `permits - 1` (so one
    /// client never holds every worker when there are two or more), 512 MiB of memory.
    pub fn new(permits: usize) -> Limits {
        let permits = permits.max(1);
        Limits {
            permits,
            max_waiting: permits * 16,
            per_client: (permits - 1).max(1),
            memory_bytes: 512 << 20,
        }
    }
}

/// A turn on the pool, for one client. Dropped (by the thread that did the work), it frees
/// the worker and the memory it reserved.
pub struct Turn {
    inner: Arc<Inner>,
    client: Arc<str>,
    memory: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut s = self.inner.state.lock();
        s.release(&self.client);
        s.wake(self.inner.permits, self.inner.per_client);
    }
}

impl Turn {
    /// Reserves `bytes` of the memory budget for this turn's work (held until the turn
    /// ends), waiting while others hold it. More than the whole budget is refused (413).
    pub async fn reserve(&mut self, bytes: u64) -> Result<(), TransformError> {
        let total = u64::from(self.inner.budget_units) * UNIT;
        if bytes > total {
            return Err(TransformError::TooLarge(format!(
                "the transform needs about {} MiB, over the transform memory budget of {} MiB \
                 (transform.memory_budget)",
                bytes >> 20,
                total >> 20
            )));
        }
        // Reserving again replaces what was reserved (the estimate got better).
        self.memory = None;
        let units = bytes.div_ceil(UNIT).max(1) as u32;
        let permit = self
            .inner
            .memory
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| TransformError::Internal("transform memory budget closed".into()))?;
        self.memory = Some(permit);
        Ok(())
    }

    /// Runs `f` on a blocking thread that owns this turn and gives it back with the result:
    /// for a short step before the work (an estimate), so that a caller who stops waiting
    /// cannot free the worker while the step still runs.
    pub async fn step<T, F>(self, f: F) -> Result<(Turn, T), TransformError>
    where
        F: FnOnce() -> Result<T, TransformError> + Send + 'static,
        T: Send + 'static,
    {
        let r = tokio::task::spawn_blocking(move || {
            let turn = self;
            f().map(|t| (turn, t))
        })
        .await
        .map_err(|e| TransformError::Internal(format!("transform task failed: {e}")))?;
        r
    }

    /// Runs `f` on a blocking thread with this turn. The thread owns the turn, so it is
    /// freed only when `f` returns; if the caller stops waiting, the work's cancel token is
    /// raised ([`check_cancel`]). A panic in `f` is an internal error.
    pub async fn run<T, F>(self, f: F) -> Result<T, TransformError>
    where
        F: FnOnce() -> Result<T, TransformError> + Send + 'static,
        T: Send + 'static,
    {
        let token = CancelToken::default();
        /// Raises the token unless the work's answer was taken.
        struct OnDrop(Option<CancelToken>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                if let Some(t) = self.0.take() {
                    t.cancel();
                }
            }
        }
        let mut on_drop = OnDrop(Some(token.clone()));
        let turn = self;
        let r = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            /// Clears the thread's token however `f` ends (blocking threads are reused).
            struct Current;
            impl Drop for Current {
                fn drop(&mut self) {
                    CURRENT.with(|c| *c.borrow_mut() = None);
                }
            }
            CURRENT.with(|c| *c.borrow_mut() = Some(token));
            let current = Current;
            let r = f();
            drop(current);
            match &r {
                Err(TransformError::Cancelled(_)) => {
                    CANCELLED.fetch_add(1, Ordering::Relaxed);
                }
                Err(TransformError::Timeout(_)) => {
                    DEADLINE.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            r
        })
        .await
        .map_err(|e| TransformError::Internal(format!("transform task failed: {e}")));
        on_drop.0 = None;
        r?
    }
}

impl Pool {
    /// `permits` transforms at once, with [`Limits::new`]'s other bounds.
    pub fn new(permits: usize) -> Pool {
        Pool::with_limits(Limits::new(permits))
    }

    pub fn with_limits(l: Limits) -> Pool {
        let units = (l.memory_bytes / UNIT).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        Pool {
            inner: Arc::new(Inner {
                permits: l.permits.max(1),
                per_client: l.per_client.max(1),
                max_waiting: l.max_waiting,
                budget_units: units,
                memory: Arc::new(Semaphore::new(units as usize)),
                state: parking_lot::Mutex::new(State::default()),
            }),
        }
    }

    /// Sized from the machine's cores.
    pub fn for_cores() -> Pool {
        Pool::new(cores())
    }

    /// Waits for a turn for `client`, or refuses at once when `max_waiting` already wait.
    pub async fn turn(&self, client: &str) -> Result<Turn, TransformError> {
        let inner = &self.inner;
        let client: Arc<str> = Arc::from(client);
        let (id, rx) = {
            let mut s = inner.state.lock();
            // After every hand-over either no worker is free or nobody waiting is under
            // their cap, so a client under its cap may take a free worker at once.
            if s.running < inner.permits && s.under_cap(&client, inner.per_client) {
                s.grant(&client);
                return Ok(self.granted(client));
            }
            if s.queue.len() >= inner.max_waiting {
                return Err(TransformError::Overloaded(format!(
                    "{} transforms already waiting: try again shortly",
                    s.queue.len()
                )));
            }
            // One client fills at most half the queue, so a burst cannot refuse the others.
            let own = s.queue.iter().filter(|w| w.client == client).count();
            if own >= (inner.max_waiting / 2).max(1) {
                return Err(TransformError::Overloaded(format!(
                    "{own} of this client's transforms already waiting: try again shortly"
                )));
            }
            let (tx, rx) = oneshot::channel();
            s.next_id += 1;
            let id = s.next_id;
            s.queue.push_back(Waiter {
                id,
                client: client.clone(),
                tx,
            });
            (id, rx)
        };
        /// Leaves the queue if the wait is abandoned; frees a turn granted meanwhile.
        struct Waiting<'a> {
            pool: &'a Inner,
            id: u64,
            client: Arc<str>,
            rx: Option<oneshot::Receiver<()>>,
        }
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                let Some(mut rx) = self.rx.take() else { return };
                let mut s = self.pool.state.lock();
                if let Some(i) = s.queue.iter().position(|w| w.id == self.id) {
                    s.queue.remove(i);
                } else if rx.try_recv().is_ok() {
                    s.release(&self.client);
                    s.wake(self.pool.permits, self.pool.per_client);
                }
            }
        }
        let mut waiting = Waiting {
            pool: inner,
            id,
            client: client.clone(),
            rx: Some(rx),
        };
        let granted = match waiting.rx.as_mut() {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        waiting.rx = None;
        if !granted {
            return Err(TransformError::Internal("transform pool closed".into()));
        }
        Ok(self.granted(client))
    }

    fn granted(&self, client: Arc<str>) -> Turn {
        Turn {
            inner: self.inner.clone(),
            client,
            memory: None,
        }
    }

    /// Runs `f` for `client` on a blocking thread once a turn is free ([`Self::turn`]).
    pub async fn run<T, F>(&self, client: &str, f: F) -> Result<T, TransformError>
    where
        F: FnOnce() -> Result<T, TransformError> + Send + 'static,
        T: Send + 'static,
    {
        self.turn(client).await?.run(f).await
    }

    /// Transforms running and waiting now (for metrics).
    pub fn load(&self) -> (usize, usize) {
        let s = self.inner.state.lock();
        (s.running, s.queue.len())
    }

    /// Bytes of the memory budget reserved now.
    pub fn memory_reserved(&self) -> u64 {
        let free = self.inner.memory.available_permits() as u64;
        (u64::from(self.inner.budget_units).saturating_sub(free)) * UNIT
    }
}

/// The machine's cores (2 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

#[cfg(test)]
mod tests;
