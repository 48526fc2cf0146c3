//! Request → [`Resolved`]: the one pipeline that turns a path, a query and headers into a
//! validated [`TransformSpec`], its [`Source`] and its cache key. It owns the order of
//! things and the precedence between layers; every rule it applies lives in its own module.
//!
//! 1. Route: a `/cdn-cgi/{image,media}/<options>/<source>` form or a plain path.
//! 2. Query: canonical names (highest), then cdn-cgi options, then Akamai translations
//!    (lowest); a field set by a higher layer is never overwritten. Names that are not ours
//!    are ignored on passthroughs; on a transform of a path they are `400` unless
//!    `ignore_params` lists them (`utm_*`, cache busters) or `unknown_params = "ignore"`;
//!    the signing names and an external source's own query are never refused.
//! 3. No transform parameter and no cdn-cgi form → passthrough (`orig:{path}`).
//! 4. Derivative: `derivative`/`impolicy`/`imref`, else `imwidth` matched against the
//!    derivative widths (selection only); its dimensions replace the request's.
//! 5. Mode: explicit, else `format=m4a` → audio, video extension + still format → frame,
//!    video extension → video, audio extension → audio, else image.
//! 6. Sizes: Akamai widths snap (per-origin option), explicit sizes are range-checked for
//!    the mode, `dpr` multiplies (clamped; `trim` too), client hints size a transform with
//!    no size, `slow-connection-quality` replaces `quality` on a slow connection.
//! 7. Normalise defaults, validate, key.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::akamai::{self, AkamaiInput, AkamaiParam, Translated};
use crate::cache_key::cache_key;
use crate::cdncgi::{self, CdnForm};
use crate::config::{FiltersConfig, UnknownParams};
use crate::derivative;
use crate::error::{quote, FilterError};
use crate::params::{parse_decimal, Format, Mode, Param, Quality, TransformSpec, Trim, MIN_DIM};
use crate::responsive::{self, Hints};
use crate::Headers;

/// The request as the proxy sees it. `path` is the raw path (no query); `query` the raw
/// query string without `?`.
#[derive(Clone, Copy)]
pub struct RequestParts<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a dyn Headers,
}

/// Per-origin switches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolveOptions {
    /// Snap widths requested through Akamai parameters (`imwidth` when it is used as a
    /// width, `w`) up to `akamai.breakpoints` (default true).
    pub akamai_snapping: bool,
    /// Let `imwidth` select a derivative by its width (default true).
    pub derivative_matching: bool,
    /// Size transforms without dimensions from client hints (default true; also needs
    /// `responsive.enabled` in the config).
    pub responsive: bool,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            akamai_snapping: true,
            derivative_matching: true,
            responsive: true,
        }
    }
}

/// Where the input comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A path on this host (leading `/`), routed to an origin by the proxy.
    Path(String),
    /// An absolute `http(s)://` URL from a cdn-cgi form.
    External(String),
}

impl Source {
    pub fn as_str(&self) -> &str {
        match self {
            Source::Path(p) | Source::External(p) => p,
        }
    }

    /// Lowercase extension of the last path segment (`/a/b.MP4?x` → `mp4`).
    pub fn extension(&self) -> Option<String> {
        let s = self.as_str();
        let s = s.split(['?', '#']).next().unwrap_or(s);
        let last = s.rsplit('/').next()?;
        let (_, ext) = last.rsplit_once('.')?;
        (!ext.is_empty() && ext.len() <= 5).then(|| ext.to_ascii_lowercase())
    }

    fn is_video(&self) -> bool {
        matches!(
            self.extension().as_deref(),
            Some("mp4" | "webm" | "mov" | "mkv" | "m4v" | "avi" | "ts")
        )
    }

    fn is_audio(&self) -> bool {
        matches!(
            self.extension().as_deref(),
            Some("mp3" | "m4a" | "aac" | "wav" | "ogg" | "oga" | "flac" | "opus")
        )
    }
}

/// How the request was spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestForm {
    Query,
    CdnCgiImage,
    CdnCgiMedia,
}

/// One query parameter as received (for `debug=view`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawParam {
    pub name: String,
    pub value: String,
}

/// One translated (Akamai or cdn-cgi) parameter and whether it took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranslatedParam {
    pub from: String,
    pub to: &'static str,
    pub value: String,
    /// False when a higher-precedence spelling had already set the field.
    pub applied: bool,
}

/// What `debug=view` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostics {
    pub form: RequestForm,
    pub raw_params: Vec<RawParam>,
    pub translated_params: Vec<TranslatedParam>,
    pub ignored_params: Vec<String>,
    pub imref: Vec<(String, String)>,
    pub derivative: Option<String>,
    /// How the derivative was chosen (`derivative`, `impolicy`, `imref`, `imwidth=340`).
    pub derivative_reason: Option<String>,
    pub hints: Option<Hints>,
    pub source: Source,
    pub spec: TransformSpec,
    pub canonical_query: String,
    pub cache_key: String,
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub spec: TransformSpec,
    pub source: Source,
    /// Base key without validator; see [`crate::with_validator`].
    pub cache_key: String,
    /// Headers the response must `Vary` on (client hints used for sizing).
    pub vary: Vec<&'static str>,
    /// Send `Accept-CH: {responsive::ACCEPT_CH}`.
    pub accept_ch: bool,
    /// `slow-connection-quality` was given: `Vary` on and ask for the network hints
    /// (`Accept-CH: {responsive::NETWORK_ACCEPT_CH}`).
    pub network_hints: bool,
    pub derivative: Option<String>,
    /// `debug=view` was requested.
    pub debug: bool,
    /// Over the synchronous limits: answer 202 and run as a job.
    pub needs_async: bool,
    pub form: RequestForm,
    /// Any Akamai parameter was present.
    pub akamai: bool,
    /// Filled only when `debug` is set.
    pub diagnostics: Option<Box<Diagnostics>>,
}

/// The request's parameters, merged by precedence.
struct Intent {
    spec: TransformSpec,
    mode: Option<Mode>,
    dpr: Option<f32>,
    /// `slow-connection-quality`.
    slow_quality: Option<Quality>,
    /// `zoom` was given (checked, then dropped: it only acts with `gravity=face`).
    zoom_set: bool,
    debug: bool,
    debug_set: bool,
    transform: bool,
}

impl Intent {
    fn is_set(&self, p: Param) -> bool {
        match p {
            Param::Mode => self.mode.is_some(),
            Param::Dpr => self.dpr.is_some(),
            Param::Debug => self.debug_set,
            Param::SlowQuality => self.slow_quality.is_some(),
            Param::Zoom => self.zoom_set,
            p if p.is_trim_part() => self.spec.trim.as_ref().is_some_and(|t| t.has_part(p)),
            _ => self.spec.is_set(p),
        }
    }

    /// Sets `p` unless a higher layer already did; returns whether it was applied.
    fn set_if_absent(&mut self, p: Param, name: &str, v: &str) -> Result<bool, FilterError> {
        if self.is_set(p) {
            return Ok(false);
        }
        match p {
            Param::Mode => {
                let m = Mode::parse_str(v)
                    .filter(|m| *m != Mode::Original)
                    .ok_or_else(|| FilterError::invalid(name, v, Mode::EXPECTED))?;
                self.mode = Some(m);
            }
            Param::Dpr => {
                let d = parse_decimal(v)
                    .ok_or_else(|| FilterError::invalid(name, v, "a decimal number"))?;
                if !(d > 0.0 && d <= 4.0) {
                    return Err(FilterError::range(
                        name,
                        quote(v),
                        "greater than 0, at most 4",
                    ));
                }
                self.dpr = Some(d as f32);
            }
            Param::Debug => {
                if v != "view" {
                    return Err(FilterError::invalid(name, v, "view"));
                }
                self.debug = true;
                self.debug_set = true;
            }
            Param::SlowQuality => {
                self.slow_quality = Some(
                    Quality::parse_str(v)
                        .ok_or_else(|| FilterError::invalid(name, v, Quality::EXPECTED))?,
                );
            }
            Param::Zoom => {
                let z = parse_decimal(v)
                    .ok_or_else(|| FilterError::invalid(name, v, "a decimal number"))?;
                if !(0.0..=1.0).contains(&z) {
                    return Err(FilterError::range(name, quote(v), "0..=1"));
                }
                self.zoom_set = true;
            }
            p if p.is_trim_part() => {
                self.spec
                    .trim
                    .get_or_insert_with(Trim::default)
                    .set_part(p, name, v)?;
            }
            _ => self.spec.set(p, name, v)?,
        }
        if p.is_transform() {
            self.transform = true;
        }
        Ok(true)
    }
}

/// Query names that belong to the signing layer: never ours to interpret, never passed on.
fn is_signing_param(name: &str) -> bool {
    matches!(name, "signature" | "expires" | "kid")
}

fn clamp_dim(v: f32, max: u32) -> u32 {
    (v.round().max(MIN_DIM as f32) as u32).min(max)
}

/// Resolves one request. Errors are always the client's fault (400).
pub fn resolve(
    req: &RequestParts,
    cfg: &FiltersConfig,
    opts: &ResolveOptions,
) -> Result<Resolved, FilterError> {
    // 1. Route.
    let cdn = cdncgi::parse(req.path)?;
    let (form, mut source) = match &cdn {
        Some(c) => (
            match c.form {
                CdnForm::Image => RequestForm::CdnCgiImage,
                CdnForm::Media => RequestForm::CdnCgiMedia,
            },
            c.source.clone(),
        ),
        None => {
            cdncgi::validate_path(req.path)?;
            (RequestForm::Query, Source::Path(req.path.to_string()))
        }
    };

    // 2. Query: canonical names first, Akamai names collected for later.
    let mut intent = Intent {
        spec: TransformSpec::new(Mode::Image),
        mode: None,
        dpr: None,
        slow_quality: None,
        zoom_set: false,
        debug: false,
        debug_set: false,
        transform: false,
    };
    let mut ak = AkamaiInput::default();
    let mut seen: Vec<Cow<'_, str>> = Vec::new();
    let mut raw: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    let mut ignored: Vec<Cow<'_, str>> = Vec::new();
    let mut passthrough_query: Option<form_urlencoded::Serializer<'_, String>> = None;
    let external = matches!(source, Source::External(_));
    for (name, value) in form_urlencoded::parse(req.query.unwrap_or("").as_bytes()) {
        if seen.contains(&name) {
            return Err(FilterError::Duplicate(quote(&name)));
        }
        if let Some(p) = Param::from_name(&name) {
            intent.set_if_absent(p, &name, &value)?;
        } else if let Some(a) = AkamaiParam::from_name(&name) {
            akamai::translate(a, value.clone(), &mut ak)?;
        } else {
            if external && !is_signing_param(&name) {
                passthrough_query
                    .get_or_insert_with(|| form_urlencoded::Serializer::new(String::new()))
                    .append_pair(&name, &value);
            }
            ignored.push(name.clone());
        }
        raw.push((name.clone(), value));
        seen.push(name);
    }
    if !intent.debug {
        raw.clear();
    }
    if let (Some(q), Source::External(url)) = (passthrough_query.as_mut(), &mut source) {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&q.finish());
    }

    // cdn-cgi options, then Akamai translations, each only where still unset.
    let mut translated: Vec<TranslatedParam> = Vec::new();
    if let Some(c) = &cdn {
        for o in &c.options {
            let applied = intent.set_if_absent(o.param, o.name, &o.value)?;
            if intent.debug {
                translated.push(TranslatedParam {
                    from: o.name.to_string(),
                    to: o.param.name(),
                    value: o.value.to_string(),
                    applied,
                });
            }
        }
        if c.form == CdnForm::Image && intent.mode.is_none() {
            intent.mode = Some(Mode::Image);
        }
    }
    let mut width_from_akamai = false;
    for Translated {
        from,
        param,
        to,
        value,
    } in &ak.translated
    {
        let applied = intent.set_if_absent(*param, from, value)?;
        if applied && *param == Param::Width {
            width_from_akamai = true;
        }
        if intent.debug {
            translated.push(TranslatedParam {
                from: from.to_string(),
                to,
                value: value.to_string(),
                applied,
            });
        }
    }

    let is_transform = intent.transform || cdn.is_some() || ak.transform;
    // An unknown name on a transform of a path is most likely a misspelt option: refuse it
    // as Cloudflare refuses an unknown option, unless the site said to ignore it.
    if is_transform
        && form == RequestForm::Query
        && !external
        && cfg.unknown_params == UnknownParams::Reject
    {
        if let Some(n) = ignored
            .iter()
            .find(|n| !is_signing_param(n) && !cfg.ignores_param(n))
        {
            return Err(FilterError::UnknownQueryParam { name: quote(n) });
        }
    }

    // 3. Passthrough.
    if !is_transform {
        let mut spec = TransformSpec::new(Mode::Original);
        spec.filename = intent.spec.filename.take();
        spec.playback = std::mem::take(&mut intent.spec.playback);
        return Ok(finish(
            spec,
            source,
            cfg,
            form,
            intent.debug,
            &ak,
            (Vec::new(), false),
            None,
            None,
            raw,
            translated,
            ignored,
        ));
    }

    // 4. Derivative.
    let mut derivative_reason = None;
    let mut name = intent.spec.derivative.take();
    if let Some(n) = &name {
        let from_impolicy = ak.translated.iter().any(|t| t.param == Param::Derivative)
            && !seen.iter().any(|s| s == "derivative");
        derivative_reason = Some(if from_impolicy {
            "impolicy".to_string()
        } else {
            "derivative".to_string()
        });
        // Image & Video Manager: a policy that does not exist is the default policy.
        if from_impolicy && !cfg.derivatives.contains_key(n) {
            derivative_reason = cfg
                .akamai
                .default_policy
                .as_ref()
                .map(|_| format!("impolicy={n} unknown: the default policy"));
            name = cfg.akamai.default_policy.clone();
        }
    }
    if name.is_some() {
    } else if let Some(n) = ak.imref_derivative() {
        name = Some(n.to_string());
        derivative_reason = Some("imref".to_string());
    } else if let Some(iw) = ak.imwidth {
        if intent.spec.width.is_none() {
            let matched = opts
                .derivative_matching
                .then(|| derivative::match_width(cfg, iw))
                .flatten();
            match matched {
                Some(n) => {
                    name = Some(n.to_string());
                    derivative_reason = Some(format!("imwidth={iw}"));
                }
                None => {
                    intent.spec.width = Some(iw);
                    width_from_akamai = true;
                }
            }
        }
    }
    if let Some(n) = &name {
        let d = derivative::lookup(cfg, n)?;
        derivative::apply(&mut intent.spec, &mut intent.mode, n, d);
        width_from_akamai = false;
    }

    // 5. Mode.
    let mode = match intent.mode {
        Some(m) => m,
        None => {
            let f = intent.spec.format;
            if f == Some(Format::M4a) {
                Mode::Audio
            } else if source.is_video() {
                if f.is_some_and(Format::is_still_image) {
                    Mode::Frame
                } else {
                    Mode::Video
                }
            } else if source.is_audio() {
                Mode::Audio
            } else {
                Mode::Image
            }
        }
    };
    let mut spec = intent.spec;
    spec.mode = mode;
    let max = mode.max_dim();

    // 6. Sizes.
    if mode == Mode::Audio {
        (spec.width, spec.height, spec.fit) = (None, None, None);
    }
    if width_from_akamai {
        if let Some(w) = spec.width {
            let w = if opts.akamai_snapping {
                derivative::snap(w, &cfg.akamai.breakpoints)
            } else {
                w
            };
            spec.width = Some(w.clamp(MIN_DIM, max));
        }
    }
    spec.validate()?;
    if let Some(d) = intent.dpr {
        spec.width = spec.width.map(|w| clamp_dim(w as f32 * d, max));
        spec.height = spec.height.map(|h| clamp_dim(h as f32 * d, max));
        spec.trim = spec.trim.map(|t| t.scaled(d));
    }
    let mut vary = Vec::new();
    let mut hints = None;
    let cdn_auto = cdn.as_ref().is_some_and(|c| c.width_auto);
    // Akamai's viewport and density parameters size the output on their own, whether or
    // not the origin sizes from client hints.
    let from_headers = opts.responsive && cfg.responsive.enabled || cdn_auto;
    let akamai_view = ak.view_width.is_some() || ak.view_height.is_some() || ak.density.is_some();
    if mode != Mode::Audio
        && spec.width.is_none()
        && spec.height.is_none()
        && (from_headers || akamai_view)
    {
        let h = responsive::read_hints(req.headers, ak.view_width, ak.view_height, ak.density);
        if let Some(w) = responsive::width_for(&h, &cfg.responsive, intent.dpr) {
            spec.width = Some(w.clamp(MIN_DIM, max));
        } else if let Some(vh) = ak.view_height {
            let d = intent.dpr.or(h.dpr).unwrap_or(1.0);
            spec.height = Some(clamp_dim(vh as f32 * d, max));
        }
        if from_headers {
            vary = responsive::VARY_HEADERS.to_vec();
        }
        hints = Some(h);
    }

    // Cloudflare's slow-connection-quality: the quality for clients whose hints say slow.
    let network_hints = intent.slow_quality.is_some();
    if let Some(q) = intent.slow_quality {
        if responsive::is_slow_connection(req.headers) {
            spec.quality = Some(q);
        }
        vary.extend_from_slice(responsive::NETWORK_HINTS);
    }

    // 7. Normalise, validate, key.
    spec.check_combinations()?;
    spec.normalize();
    spec.validate()?;
    Ok(finish(
        spec,
        source,
        cfg,
        form,
        intent.debug,
        &ak,
        (vary, network_hints),
        hints,
        derivative_reason,
        raw,
        translated,
        ignored,
    ))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    spec: TransformSpec,
    source: Source,
    cfg: &FiltersConfig,
    form: RequestForm,
    debug: bool,
    ak: &AkamaiInput<'_>,
    (vary, network_hints): (Vec<&'static str>, bool),
    hints: Option<Hints>,
    derivative_reason: Option<String>,
    raw: Vec<(Cow<'_, str>, Cow<'_, str>)>,
    translated: Vec<TranslatedParam>,
    ignored: Vec<Cow<'_, str>>,
) -> Resolved {
    let key = cache_key(&spec, &source);
    let diagnostics = debug.then(|| {
        Box::new(Diagnostics {
            form,
            raw_params: raw
                .into_iter()
                .map(|(n, v)| RawParam {
                    name: n.into_owned(),
                    value: v.into_owned(),
                })
                .collect(),
            translated_params: translated,
            ignored_params: ignored.into_iter().map(Cow::into_owned).collect(),
            imref: ak.imref.clone(),
            derivative: spec.derivative.clone(),
            derivative_reason,
            hints,
            source: source.clone(),
            spec: spec.clone(),
            canonical_query: spec.to_canonical_query(),
            cache_key: key.clone(),
        })
    });
    Resolved {
        needs_async: spec.needs_async_over(cfg.sync_max_duration_ms()),
        derivative: spec.derivative.clone(),
        accept_ch: vary.iter().any(|v| responsive::VARY_HEADERS.contains(v)),
        network_hints,
        vary,
        cache_key: key,
        source,
        spec,
        debug,
        form,
        akamai: ak.present,
        diagnostics,
    }
}
