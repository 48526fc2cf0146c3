//! The one error type of request resolution. It owns the wording of every "bad parameter"
//! message (always naming the parameter, the offending value and what is allowed) and the
//! mapping to an HTTP status and error code; it must not know about responses or JSON.

use thiserror::Error;

/// Longest slice of an offending value quoted back in a message.
const MAX_QUOTED: usize = 64;

/// Shortens a user-supplied value before it is quoted in an error message.
pub(crate) fn quote(value: &str) -> String {
    if value.len() <= MAX_QUOTED {
        return value.to_string();
    }
    let mut end = MAX_QUOTED;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &value[..end])
}

/// The error codes of the JSON error bodies (`{"error":{"code":..}}`), one list for every
/// route family and every layer: the filters name theirs, the proxy maps its own failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    NoMatchingOrigin,
    MethodNotAllowed,
    RangeNotSatisfiable,
    PayloadTooLarge,
    UnsupportedMedia,
    RateLimited,
    LoopDetected,
    Overloaded,
    OriginError,
    ProcessingFailed,
    Timeout,
    Internal,
}

impl ErrorCode {
    /// The code as it appears in a body.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::NoMatchingOrigin => "NO_MATCHING_ORIGIN",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::RangeNotSatisfiable => "RANGE_NOT_SATISFIABLE",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::UnsupportedMedia => "UNSUPPORTED_MEDIA",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::LoopDetected => "LOOP_DETECTED",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::OriginError => "ORIGIN_ERROR",
            ErrorCode::ProcessingFailed => "PROCESSING_FAILED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Everything that can be wrong with a request's transform parameters or URL shape.
/// All of them are the client's fault: [`FilterError::status`] is 400.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FilterError {
    /// A numeric value outside its range, e.g. `width 5000 out of range 10..=4096`.
    #[error("{param} {value} out of range {range}")]
    OutOfRange {
        param: String,
        value: String,
        range: String,
    },
    /// A value that does not parse or is not one of a fixed set.
    #[error("{param} {value:?} is invalid: expected {expected}")]
    InvalidValue {
        param: String,
        value: String,
        expected: &'static str,
    },
    /// The same parameter given twice (`width=1&width=2`).
    #[error("parameter {0} given more than once")]
    Duplicate(String),
    /// `derivative=`/`impolicy=` naming no configured derivative.
    #[error("unknown derivative {name:?} (known: {known})")]
    UnknownDerivative { name: String, known: String },
    /// An option name inside a `/cdn-cgi/...` option string that is not supported.
    #[error("unknown {form} option {name:?} (allowed: {allowed})")]
    UnknownOption {
        form: &'static str,
        name: String,
        allowed: &'static str,
    },
    /// A parameter name in a canonical (internal) query that is not a spec field.
    #[error("unknown canonical parameter {0:?}")]
    UnknownParam(String),
    /// A `/cdn-cgi/...` URL that does not have the `<options>/<source>` shape.
    #[error("malformed cdn-cgi URL {path:?}: {reason}")]
    MalformedCdnCgi { path: String, reason: &'static str },
    /// A source path that is empty, relative or escapes its root.
    #[error("invalid source path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A parameter that makes no sense for the resolved mode (`rotate=45` on an image).
    #[error("{param} {value} not allowed for mode {mode}: {reason}")]
    NotAllowedForMode {
        param: &'static str,
        value: String,
        mode: &'static str,
        reason: &'static str,
    },
    /// A canonical query without the `mode` field.
    #[error("canonical query is missing mode")]
    MissingMode,
    /// A documented option this node cannot carry out (`gravity=face` needs a model).
    #[error("{param}={value} is not available: {reason}")]
    Unavailable {
        param: String,
        value: String,
        reason: &'static str,
    },
    /// A query parameter that is neither ours, Akamai's, nor on the ignore list, on a
    /// transform request (`filters.unknown_params = "reject"`).
    #[error(
        "unknown parameter {name:?} (see the parameter list; names the node should ignore go in \
         filters.ignore_params)"
    )]
    UnknownQueryParam { name: String },
}

impl FilterError {
    /// The error code for the JSON body (`{"error":{"code":..}}`).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        400
    }

    pub(crate) fn range(param: &str, value: impl std::fmt::Display, range: &str) -> Self {
        FilterError::OutOfRange {
            param: param.to_string(),
            value: quote(&value.to_string()),
            range: range.to_string(),
        }
    }

    pub(crate) fn invalid(param: &str, value: &str, expected: &'static str) -> Self {
        FilterError::InvalidValue {
            param: param.to_string(),
            value: quote(value),
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_param_value_and_range() {
        let e = FilterError::range("width", 5000, "10..=4096");
        assert_eq!(e.to_string(), "width 5000 out of range 10..=4096");
        assert_eq!(e.code(), "BAD_REQUEST");
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn long_values_are_shortened() {
        let long = "é".repeat(100);
        let q = quote(&long);
        assert!(q.len() <= MAX_QUOTED + 3);
        assert!(q.ends_with("..."));
    }
}
