//! Media Edge: a self-hosted media CDN node on Pingora.
//!
//! `edge` is the caching reverse proxy, `origin` the in-process upstream that reads sources,
//! `config` the TOML schema, `server` the wiring of both into one Pingora server, `reload`
//! the graceful-upgrade command, `store` the metadata database and object store, `jobs` the
//! queue of asynchronous transforms, `uploads` media put in by tenants, `analytics` the
//! request log and what is read from it.

pub mod analytics;
pub mod config;
pub mod edge;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod jobs;
pub mod metrics;
pub mod origin;
pub mod reload;
pub mod server;
pub mod store;
pub mod transform;
pub mod unix_socket;
pub mod uploads;
