//! Draining: whether this process has been told to stop (`SIGQUIT` for a graceful upgrade,
//! `SIGTERM` for a graceful shutdown) and is in its grace period.
//!
//! Owns one process-wide flag and the task that sets it. Pingora's own shutdown signal reaches
//! connections only when the grace period ends, and closing idle keep-alive connections then
//! races clients that are sending their next request at that moment. While draining, the
//! front door answers every request with `Connection: close` instead (and hands requests to
//! Pingora without keep-alive), so busy clients move to the new process during the grace
//! period. Must not decide anything else about requests.
//!
//! Once Pingora has broadcast the shutdown (its listeners stop accepting), the process need
//! not sit out the rest of the grace period: as soon as no client connection is open and no
//! transform or job holds a worker, it exits (Pingora itself always sleeps the whole grace
//! period and then the runtime shutdown timeout).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

static DRAINING: AtomicBool = AtomicBool::new(false);

/// This process is in its grace period: answers close their connections.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Marks the process as draining (also for tests).
pub fn start_draining() {
    DRAINING.store(true, Ordering::Relaxed);
}

/// A Pingora background service that sets the flag on `SIGQUIT` or `SIGTERM`, and ends the
/// process early once it is idle after the shutdown broadcast.
pub struct DrainWatch {
    /// The front door's connection table (`None` with `server.front_door = false`: Pingora
    /// keeps no count of its connections, so the process waits out the grace period).
    pub conns: Option<Arc<super::conns::Connections>>,
    /// Transforms and jobs hold a worker of this pool while they run; the request log writer
    /// must have written what it holds.
    pub origin: Arc<crate::origin::OriginService>,
}

/// How often, and how many times in a row, the process must be seen idle before it exits:
/// a connection accepted just before the broadcast gets admitted in that time.
const IDLE_POLL: Duration = Duration::from_millis(100);
const IDLE_POLLS: u32 = 5;

impl DrainWatch {
    fn idle(&self, conns: &super::conns::Connections) -> bool {
        let (running, waiting) = self.origin.transform_pool().load();
        conns.open() == 0 && running == 0 && waiting == 0 && !crate::analytics::writer_running()
    }

    /// After the shutdown broadcast: exits once idle for [`IDLE_POLLS`] polls in a row.
    async fn exit_when_idle(&self) {
        let Some(conns) = &self.conns else {
            return;
        };
        let mut seen = 0;
        loop {
            seen = if self.idle(conns) { seen + 1 } else { 0 };
            if seen >= IDLE_POLLS {
                tracing::info!("shutdown: no connection open and no work running, exiting");
                std::process::exit(0);
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
    }
}

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
        // The broadcast: for SIGTERM at once, for SIGQUIT once the sockets are handed over.
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        self.exit_when_idle().await;
    }
}
