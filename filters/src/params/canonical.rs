//! The canonical query form of a [`TransformSpec`]: fixed parameter order (the order of the
//! [`Param`] table), canonical spellings, defaults omitted, and its strict parser (mode
//! required, no duplicates, no `dpr` or `debug`). It owns that string grammar only; it must
//! not know Akamai or Cloudflare names or merge layers of a request: that is `resolve`'s.

use std::fmt::{self, Write as _};

use super::{Mode, Param, TransformSpec};
use crate::error::{quote, FilterError};

impl TransformSpec {
    /// The canonical query string: fixed parameter order, canonical spellings, defaults
    /// omitted. `from_canonical_query(to_canonical_query(s)) == s` for every resolved spec.
    pub fn to_canonical_query(&self) -> String {
        let mut out = String::with_capacity(64);
        self.write_canonical(&mut |name, value| {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(name);
            out.push('=');
            for b in value.bytes() {
                match b {
                    b'#' => out.push_str("%23"),
                    b'%' => out.push_str("%25"),
                    b'&' => out.push_str("%26"),
                    b'+' => out.push_str("%2B"),
                    b'=' => out.push_str("%3D"),
                    b' ' => out.push_str("%20"),
                    _ => out.push(b as char),
                }
            }
        });
        out
    }

    /// Calls `emit(name, value)` for every set field in canonical order. Shared by the
    /// canonical query and the diagnostics.
    pub fn write_canonical(&self, emit: &mut dyn FnMut(&'static str, &str)) {
        let mut buf = String::new();
        let mut e = |p: Param, v: &dyn fmt::Display| {
            buf.clear();
            let _ = write!(buf, "{v}");
            emit(p.name(), &buf);
        };
        e(Param::Mode, &self.mode);
        self.for_each_set_field(&mut e);
    }

    /// Parses a canonical query (as made by [`Self::to_canonical_query`]). Strict: `mode`
    /// is required (`orig` allowed), names must be canonical, no duplicates, no request-only
    /// parameter ([`Param::is_request_only`]).
    pub fn from_canonical_query(q: &str) -> Result<TransformSpec, FilterError> {
        let mut spec = TransformSpec::new(Mode::Original);
        let mut mode = None;
        let mut seen: u64 = 0;
        for (name, value) in form_urlencoded::parse(q.as_bytes()) {
            let p = match Param::from_name(&name) {
                Some(p) if !p.is_request_only() => p,
                _ => return Err(FilterError::UnknownParam(quote(&name))),
            };
            let bit = 1u64 << (p as u32);
            if seen & bit != 0 {
                return Err(FilterError::Duplicate(p.name().to_string()));
            }
            seen |= bit;
            if p == Param::Mode {
                mode = Some(Mode::parse_str(&value).ok_or_else(|| {
                    FilterError::invalid(
                        "mode",
                        &value,
                        "image, video, frame, spritesheet, audio, orig",
                    )
                })?);
            } else {
                spec.set(p, p.name(), &value)?;
            }
        }
        spec.mode = mode.ok_or(FilterError::MissingMode)?;
        if spec.mode == Mode::Original {
            if let Some(p) = Param::ALL
                .iter()
                .find(|&&p| p.is_transform() && spec.is_set(p))
            {
                return Err(FilterError::NotAllowedForMode {
                    param: p.name(),
                    value: "(set)".into(),
                    mode: "orig",
                    reason: "the original takes no transform parameters",
                });
            }
        }
        spec.check_combinations()?;
        spec.normalize();
        spec.validate()?;
        Ok(spec)
    }
}
