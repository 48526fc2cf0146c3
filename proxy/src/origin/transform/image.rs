//! The image engine's part of the transform step: the original read into memory (within
//! `max_image_bytes`), then transformed on the bounded pool, or (negotiated AVIF) handed to
//! [`super::avif_background`]. It must not read the body itself beyond [`super::body`].

use bytes::Bytes;
use filters::TransformSpec;

use super::{body, err, Job, Transformer};
use crate::error::ApiError;
use crate::origin::sources::Fetched;
use crate::transform::Output;
#[cfg(not(feature = "image-engine"))]
use crate::transform::TransformError;

impl Transformer {
    pub(super) async fn run_image(
        &self,
        job: &Job<'_>,
        fetched: Fetched,
    ) -> Result<Output, ApiError> {
        let version = body::source_version(&fetched);
        // The original is read only once the job has its turn on the pool: a queued request
        // holds no image in memory (and a full queue refuses before reading anything).
        let turn = self.pool.turn().await.map_err(err)?;
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
                self.avif_or_stand_in(key, &job.spec, fallback, bytes).await
            }
            _ => self.image_bytes_with(turn, &job.spec, bytes).await,
        }
    }

    /// The image engine on the pool (`format=json`: the metadata document).
    pub(super) async fn image_bytes(
        &self,
        spec: &TransformSpec,
        bytes: Bytes,
    ) -> Result<Output, ApiError> {
        let turn = self.pool.turn().await.map_err(err)?;
        self.image_bytes_with(turn, spec, bytes).await
    }

    /// The image engine with a turn already taken.
    #[cfg(feature = "image-engine")]
    async fn image_bytes_with(
        &self,
        turn: crate::transform::Turn,
        spec: &TransformSpec,
        bytes: Bytes,
    ) -> Result<Output, ApiError> {
        let opts = self.image.clone();
        let spec = spec.clone();
        turn.run(move || crate::transform::image::transform(&bytes, &spec, &opts))
            .await
            .map_err(err)
    }

    #[cfg(not(feature = "image-engine"))]
    async fn image_bytes_with(
        &self,
        _turn: crate::transform::Turn,
        _spec: &TransformSpec,
        _bytes: Bytes,
    ) -> Result<Output, ApiError> {
        Err(err(TransformError::Unsupported(
            "this build has no image engine".into(),
        )))
    }
}
