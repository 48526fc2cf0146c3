//! The problem report of `check-config`: one [`ConfigProblem`] per thing wrong, each with the
//! key path it concerns (`origins[0].matcher`), and [`ConfigErrors`], all of them at once.
//!
//! Owns the report types, the collector the validators push into, and the step that
//! deserializes one part of the document and turns a serde error into a problem at its full
//! key path. It must not decide what is valid: the rules live in `validate` and `origins`.

use serde::de::DeserializeOwned;
use std::fmt::Display;

/// One problem found in a config, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

/// All the problems of a config that did not validate.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// A config that failed before any key could be read (unreadable file, TOML syntax).
    pub(super) fn single(path: impl Into<String>, message: impl Display) -> Self {
        ConfigErrors(vec![ConfigProblem {
            path: path.into(),
            message: message.to_string(),
        }])
    }
}

/// Collects problems in the order they are found.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Display) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.to_string(),
        });
    }

    /// One problem at `path` per error of a list check (CIDR lists, `[filters]`).
    pub(super) fn push_all<E: Display>(&mut self, path: &str, errs: impl IntoIterator<Item = E>) {
        for e in errs {
            self.push(path, e);
        }
    }

    /// Deserializes one part of the document, recording a problem (with its full key path)
    /// on error.
    pub(super) fn section<T: DeserializeOwned>(
        &mut self,
        value: toml::Value,
        prefix: &str,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let path = match (prefix.is_empty(), inner.as_str()) {
                    (_, ".") => prefix.to_string(),
                    (true, p) => p.to_string(),
                    (false, p) => format!("{prefix}.{p}"),
                };
                let path = if path.is_empty() {
                    "(root)".into()
                } else {
                    path
                };
                self.push(path, e.into_inner());
                None
            }
        }
    }

    /// `Ok` when nothing was found.
    pub(super) fn finish(self) -> Result<(), ConfigErrors> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(ConfigErrors(self.0)),
        }
    }
}
