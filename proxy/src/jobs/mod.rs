//! Asynchronous transforms: the queue (rows in the metadata store, so they survive restarts
//! and a fleet shares them), the workers that claim them under a lease, progress, retries
//! with exponential backoff, and the dead-letter state. [`api`] shapes the job API's
//! answers and the Server-Sent Events stream.
//!
//! Owns when a job runs and what becomes of it; what running one means (fetch the source,
//! transform, keep the result in the store) is the [`Runner`]'s, the origin service's. It
//! speaks no HTTP to clients.

pub mod api;

use crate::config::JobsConfig;
use crate::metrics::METRICS;
use crate::store::jobs::{JobRow, NewJob};
use crate::store::{DbError, Store};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a try failed, and whether another try could help.
#[derive(Debug, Clone)]
pub struct JobError {
    pub message: String,
    /// False for failures a retry cannot fix (the source is gone, the request is invalid).
    pub retryable: bool,
}

/// The running job's percent, written by the encoder's callback and sent to the store by
/// the worker.
#[derive(Default)]
pub struct Progress(AtomicI64);

impl Progress {
    /// `percent` of the output done, as the encoder reports it (0.0..=100.0).
    pub fn set(&self, percent: f32) {
        let p = percent.clamp(0.0, 100.0) as i64;
        // A job reports 100 only when it is complete.
        self.0.fetch_max(p.min(99), Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A result made (or found) in the store.
pub struct Made {
    pub key: String,
    pub content_type: String,
    /// The body, when it was asked for and is small enough.
    pub body: Option<bytes::Bytes>,
}

/// What runs a job: fetch, transform, keep the result in the store.
#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    /// Makes `path?query` (the origin service's request target) unless the store has it,
    /// and keeps it; with `body_max > 0` also returns a body of at most that many bytes.
    async fn produce(
        &self,
        path: &str,
        query: &str,
        progress: Arc<Progress>,
        body_max: usize,
    ) -> Result<Made, JobError>;

    /// Runs a job; its result's store key.
    async fn run(&self, job: &JobRow, progress: Arc<Progress>) -> Result<String, JobError> {
        self.produce(&job.path, &job.query, progress, 0)
            .await
            .map(|m| m.key)
    }
}

pub struct Queue {
    pub store: Arc<Store>,
    pub cfg: JobsConfig,
    /// This process, as the lease owner of the jobs it runs.
    owner: String,
    wake: tokio::sync::Notify,
    /// A job of this node ended (uploads waiting on it are settled).
    ended: tokio::sync::Notify,
}

impl Queue {
    pub fn new(store: Arc<Store>, cfg: JobsConfig) -> Arc<Queue> {
        Arc::new(Queue {
            store,
            cfg,
            owner: format!("{}-{}", std::process::id(), crate::store::jobs::new_id()),
            wake: tokio::sync::Notify::new(),
            ended: tokio::sync::Notify::new(),
        })
    }

    /// The job for this result, queued now unless an identical one is queued or running;
    /// committed on return. True when this call queued it.
    pub async fn submit(&self, job: &NewJob<'_>) -> Result<(JobRow, bool), DbError> {
        let (row, inserted) = self.store.db.enqueue(job).await?;
        if inserted {
            METRICS.jobs.with_label_values(&["queued"]).inc();
            self.wake();
        }
        Ok((row, inserted))
    }

    /// Wakes an idle worker of this node (a job was queued or retried here).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The wait before the try after `attempts` failed ones: `retry_base` doubled each
    /// time, at most `retry_max`.
    pub fn backoff(&self, attempts: i64) -> Duration {
        backoff(&self.cfg, attempts)
    }

    /// Workers: as configured, else half the cores, at least one.
    pub fn workers(&self) -> usize {
        match self.cfg.workers {
            0 => (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1),
            n => n,
        }
    }

    /// One worker: claims and runs jobs until `shutdown` turns true.
    pub async fn work(
        self: Arc<Self>,
        runner: Arc<dyn Runner>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let poll = self.cfg.poll_interval.0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let lease_ms = self.cfg.lease.0.as_millis() as i64;
            match self.store.db.claim(&self.owner, lease_ms).await {
                Ok(Some(job)) => {
                    tokio::select! {
                        _ = self.run_one(&job, runner.as_ref()) => {}
                        _ = shutdown.changed() => {
                            // Stopping mid-job: the job goes back to the queue at once for
                            // the next process (no attempt spent), instead of waiting out
                            // its lease.
                            let _ = self.store.db.release(&job.id, &self.owner).await;
                            return;
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "claiming a job"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn run_one(&self, job: &JobRow, runner: &dyn Runner) {
        let lease_ms = self.cfg.lease.0.as_millis() as i64;
        if job.attempts > job.max_attempts {
            // Its workers kept dying (each death spent a try when its lease was taken over).
            let msg = format!(
                "gave up after {} tries; last error: {}",
                job.max_attempts,
                job.error.as_deref().unwrap_or("the worker stopped")
            );
            let _ = self.store.db.fail(&job.id, &self.owner, &msg, None).await;
            METRICS.jobs.with_label_values(&["failed"]).inc();
            return;
        }
        tracing::info!(job = %job.id, path = %job.path, attempt = job.attempts, "job started");
        let progress = Arc::new(Progress::default());
        let run = runner.run(job, progress.clone());
        tokio::pin!(run);
        // Progress (and the lease with it) goes to the store a few times a lease.
        let tick = (self.cfg.lease.0 / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tokio::time::sleep(tick) => {
                    let p = progress.get();
                    let db = &self.store.db;
                    match db.progress(&job.id, &self.owner, p, lease_ms).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(job = %job.id, "job lease lost"),
                        Err(e) => tracing::warn!(job = %job.id, error = %e, "job progress"),
                    }
                }
            }
        };
        let db = &self.store.db;
        match result {
            Ok(key) => {
                let ok = db.complete(&job.id, &self.owner, &key).await;
                if !matches!(ok, Ok(true)) {
                    tracing::warn!(job = %job.id, "job finished after its lease was lost");
                }
                METRICS.jobs.with_label_values(&["complete"]).inc();
                tracing::info!(job = %job.id, key, "job complete");
            }
            Err(e) => {
                let retry = (e.retryable && job.attempts < job.max_attempts)
                    .then(|| self.backoff(job.attempts).as_millis() as i64);
                let state = if retry.is_some() { "retry" } else { "failed" };
                METRICS.jobs.with_label_values(&[state]).inc();
                tracing::warn!(job = %job.id, attempt = job.attempts, error = %e.message, state, "job try failed");
                let _ = db.fail(&job.id, &self.owner, &e.message, retry).await;
            }
        }
        self.ended.notify_one();
    }
}

fn backoff(cfg: &JobsConfig, attempts: i64) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 30) as u32;
    cfg.retry_base
        .0
        .saturating_mul(1u32 << doublings)
        .min(cfg.retry_max.0)
}

/// The workers as a Pingora background service (their own runtime threads).
pub struct Workers {
    pub queue: Arc<Queue>,
    pub runner: Arc<dyn Runner>,
    /// Upload objects whose removal a crash interrupted are removed first.
    pub uploads: Option<Arc<crate::uploads::Uploads>>,
}

#[async_trait::async_trait]
impl pingora_core::services::background::BackgroundService for Workers {
    async fn start(&self, shutdown: pingora_core::server::ShutdownWatch) {
        if let Some(u) = &self.uploads {
            u.sweep().await;
            // Uploads whose job ended (here, or on another node) are settled soon after.
            let (u, queue, mut stop) = (u.clone(), self.queue.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    u.settle_all().await;
                    tokio::select! {
                        _ = queue.ended.notified() => {}
                        _ = tokio::time::sleep(queue.cfg.poll_interval.0 * 4) => {}
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        let n = self.queue.workers();
        let workers: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(
                    self.queue
                        .clone()
                        .work(self.runner.clone(), shutdown.clone()),
                )
            })
            .collect();
        tracing::info!(workers = n, "job workers started");
        for w in workers {
            let _ = w.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = JobsConfig::default();
        let secs: Vec<u64> = (1..=6).map(|a| backoff(&cfg, a).as_secs()).collect();
        assert_eq!(secs, [120, 240, 480, 900, 900, 900]);
        let fast = JobsConfig {
            retry_base: Dur(Duration::from_millis(500)),
            retry_max: Dur(Duration::from_secs(3)),
            ..JobsConfig::default()
        };
        assert_eq!(backoff(&fast, 1), Duration::from_millis(500));
        assert_eq!(backoff(&fast, 3), Duration::from_secs(2));
        assert_eq!(backoff(&fast, 40), Duration::from_secs(3));
    }

    #[test]
    fn progress_never_claims_done() {
        let p = Progress::default();
        p.set(50.0);
        p.set(25.0);
        assert_eq!(p.get(), 50);
        p.set(100.0);
        assert_eq!(p.get(), 99);
    }
}
