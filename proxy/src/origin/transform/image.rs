//! The image engine's part of the transform step: the original read into memory (within
//! `max_image_bytes`), then transformed on the bounded pool, or (negotiated AVIF) handed to
//! [`super::avif_background`]. It must not read the body itself beyond [`super::body`].

use bytes::Bytes;
use filters::TransformSpec;

use super::{body, err, Job, Transformer};
use crate::error::ApiError;
use crate::origin::sources::Fetched;
use crate::transform::{Output, TransformError, Turn};

impl Transformer {
    pub(super) async fn run_image(
        &self,
        job: &Job<'_>,
        fetched: Fetched,
    ) -> Result<Output, ApiError> {
        let version = body::source_version(&fetched);
        // The original is read only once the job has its turn on the pool: a queued request
        // holds no image in memory (and a full queue refuses before reading anything).
        let turn = self.pool.turn(&job.client).await.map_err(err)?;
        let bytes = body::read_to_memory(fetched, self.limits.max_image_bytes).await?;
        match (job.avif_fallback, job.spec.format) {
            (Some(fallback), Some(filters::Format::Avif)) => {
                let key = format!(
                    "{}\n{}\n{}\n{version}",
                    job.origin,
                    job.path,
                    job.spec.to_canonical_query()
                );
                drop(turn);
                self.avif_or_stand_in(key, job, fallback, bytes).await
            }
            _ => self.image_bytes_with(turn, job, &job.spec, bytes).await,
        }
    }

    /// The image engine on the pool for `job`'s client (`format=json`: the metadata
    /// document), with `spec` (the job's, or one derived from it).
    pub(super) async fn image_bytes(
        &self,
        job: &Job<'_>,
        spec: &TransformSpec,
        bytes: Bytes,
    ) -> Result<Output, ApiError> {
        let turn = self.pool.turn(&job.client).await.map_err(err)?;
        self.image_bytes_with(turn, job, spec, bytes).await
    }

    /// The image engine with a turn already taken.
    async fn image_bytes_with(
        &self,
        turn: Turn,
        job: &Job<'_>,
        spec: &TransformSpec,
        bytes: Bytes,
    ) -> Result<Output, ApiError> {
        on_turn(
            turn,
            spec.clone(),
            bytes,
            self.engine_options(job),
            self.isolation(),
        )
        .await
        .map_err(err)
    }

    /// The engine's options for `job`: the node's, with its origin's upscale limit.
    #[cfg(feature = "image-engine")]
    pub(super) fn engine_options(&self, job: &Job<'_>) -> crate::transform::image::ImageOptions {
        let mut o = self.image.clone();
        if let Some(a) = job.max_upscale_area {
            o.max_upscale_area = a;
        }
        o
    }

    #[cfg(not(feature = "image-engine"))]
    pub(super) fn engine_options(&self, _job: &Job<'_>) {}

    /// The sandbox image work runs in, if any.
    #[cfg(feature = "image-engine")]
    pub(super) fn isolation(&self) -> Isolation {
        self.sandbox.clone()
    }

    #[cfg(not(feature = "image-engine"))]
    pub(super) fn isolation(&self) -> Isolation {}
}

/// Where image work runs: in a sandboxed worker process, or (`None`) on the pool's thread.
#[cfg(feature = "image-engine")]
pub(super) type Isolation = Option<std::sync::Arc<crate::transform::sandbox::Sandbox>>;
#[cfg(not(feature = "image-engine"))]
pub(super) type Isolation = ();

/// Runs the image engine with `turn`: first the memory the work will hold is reserved from
/// the pool's budget (estimated from the header, off the reactor), then the work runs.
#[cfg(feature = "image-engine")]
pub(super) async fn on_turn(
    turn: Turn,
    spec: TransformSpec,
    bytes: Bytes,
    opts: crate::transform::image::ImageOptions,
    sandbox: Isolation,
) -> Result<Output, TransformError> {
    use crate::transform::image;
    if let Some(sb) = sandbox {
        // The worker that estimates keeps the source for the transform.
        let (mut turn, planned) = turn.step(move || sb.plan(&spec, &opts, &bytes)).await?;
        turn.reserve(planned.need()).await?;
        return turn.run(move || planned.transform()).await;
    }
    let (b, s, o) = (bytes.clone(), spec.clone(), opts.clone());
    let (mut turn, need) = turn.step(move || image::memory_need(&b, &s, &o)).await?;
    turn.reserve(need).await?;
    turn.run(move || image::transform(&bytes, &spec, &opts))
        .await
}

#[cfg(not(feature = "image-engine"))]
pub(super) async fn on_turn(
    _turn: Turn,
    _spec: TransformSpec,
    _bytes: Bytes,
    _opts: (),
    _sandbox: Isolation,
) -> Result<Output, TransformError> {
    Err(TransformError::Unsupported(
        "this build has no image engine".into(),
    ))
}

/// The transform sandbox the config asks for (`transform.isolate`), checked at once: an
/// image worker and a video worker try to open a socket, read the config file and start a
/// process (the video worker also to write beside its directory), and what they got is
/// logged and shown on `/health`.
#[cfg(feature = "image-engine")]
pub(crate) fn sandbox_for(
    cfg: &crate::config::Config,
) -> Option<std::sync::Arc<crate::transform::sandbox::Sandbox>> {
    use crate::transform::sandbox::{Sandbox, SandboxOptions};
    let t = &cfg.transform;
    if !t.isolate {
        return None;
    }
    let sandbox = std::sync::Arc::new(Sandbox::new(SandboxOptions {
        workers: match t.workers {
            0 => crate::transform::pool::cores(),
            n => n,
        },
        address_space: t.worker_memory.0,
        recycle_rss: t.worker_recycle_rss.0,
        max_jobs: t.worker_max_jobs,
        program: "/proc/self/exe".into(),
    }));
    let probe = cfg
        .file
        .clone()
        .unwrap_or_else(|| cfg.server.data_dir.clone());
    // Absolute: a video worker's working directory is its output directory.
    let probe = std::fs::canonicalize(&probe).unwrap_or(probe);
    let s = sandbox.clone();
    let scratch = cfg.server.data_dir.join("tmp");
    std::thread::spawn(
        move || match s.self_test(&probe.to_string_lossy(), &scratch) {
            Ok(v) => {
                let refused = |v: &serde_json::Value| {
                    let tried = v["tried"].as_object().into_iter().flatten();
                    tried
                        .into_iter()
                        .all(|(_, t)| t.as_str().is_some_and(|t| t.starts_with("refused")))
                        && v["seccomp"] == true
                };
                // A video worker's file calls are confined by Landlock alone.
                let video = v.get("video").is_none_or(|v| {
                    refused(v) && matches!(v["landlock"].as_str(), Some("full" | "partial"))
                });
                if refused(&v) && video {
                    tracing::info!(sandbox = %v, "transform workers are isolated");
                } else {
                    tracing::warn!(sandbox = %v, "transform workers are NOT fully confined");
                }
            }
            Err(e) => tracing::warn!(error = %e, "the transform sandbox's self-test failed"),
        },
    );
    Some(sandbox)
}

#[cfg(feature = "image-engine")]
/// The image engine's options from `[transform]`.
pub(crate) fn image_options(
    t: &crate::config::TransformConfig,
) -> crate::transform::image::ImageOptions {
    use crate::transform::image::{ImageOptions, MetadataPolicy};
    ImageOptions {
        max_input_pixels: t.max_input_pixels,
        max_decode_bytes: t.max_decode_bytes.0,
        max_upscale_area: t.max_upscale_area,
        max_input_bytes: t.max_image_bytes.0,
        avif_enabled: t.avif,
        timeout: t.image_timeout.0,
        metadata: match t.metadata.as_str() {
            "keep" => Some(MetadataPolicy::Keep),
            "copyright" => Some(MetadataPolicy::Copyright),
            "none" => Some(MetadataPolicy::None),
            _ => None,
        },
        ..ImageOptions::default()
    }
}
