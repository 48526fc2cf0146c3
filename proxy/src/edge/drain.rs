//! Draining: whether this process has been told to stop (`SIGQUIT` for a graceful upgrade,
//! `SIGTERM` for a graceful shutdown) and is in its grace period.
//!
//! Owns one process-wide flag and the task that sets it. Pingora's own shutdown signal reaches
//! connections only when the grace period ends, and closing idle keep-alive connections then
//! races clients that are sending their next request at that moment. While draining, the
//! front door answers every request with `Connection: close` instead (and hands requests to
//! Pingora without keep-alive), so busy clients move to the new process during the grace
//! period. Must not decide anything else about requests.

use std::sync::atomic::{AtomicBool, Ordering};

static DRAINING: AtomicBool = AtomicBool::new(false);

/// This process is in its grace period: answers close their connections.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Marks the process as draining (also for tests).
pub fn start_draining() {
    DRAINING.store(true, Ordering::Relaxed);
}

/// A Pingora background service that sets the flag on `SIGQUIT` or `SIGTERM`.
pub struct DrainWatch;

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut quit), Ok(mut term)) =
            (signal(SignalKind::quit()), signal(SignalKind::terminate()))
        else {
            tracing::warn!("no signal handler for draining: keep-alive answers stay open");
            return;
        };
        tokio::select! {
            _ = quit.recv() => start_draining(),
            _ = term.recv() => start_draining(),
            _ = shutdown.changed() => {}
        }
    }
}
