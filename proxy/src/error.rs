//! The one place where errors become HTTP: status, JSON body `{"error":{"code","message"}}`
//! (flat `{"code","message"}` on Fluxer's `/proxy/*` routes).
//!
//! Every handler in the edge, the origin service and the admin API returns `ApiError`;
//! nothing else formats an error response.

pub use filters::ErrorCode;
use serde_json::json;

/// An error on its way to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(400, ErrorCode::BadRequest, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(401, ErrorCode::Unauthorized, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(403, ErrorCode::Forbidden, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(404, ErrorCode::NotFound, m)
    }
    pub fn no_matching_origin(path: &str) -> Self {
        Self::new(
            404,
            ErrorCode::NoMatchingOrigin,
            format!("no origin matches path {path:?}"),
        )
    }
    pub fn origin_error(m: impl Into<String>) -> Self {
        Self::new(502, ErrorCode::OriginError, m)
    }
    pub fn timeout(m: impl Into<String>) -> Self {
        Self::new(504, ErrorCode::Timeout, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(500, ErrorCode::Internal, m)
    }

    /// The JSON body: `{"error": {"code", "message"[, "retry_after"]}}`.
    pub fn body(&self) -> Vec<u8> {
        self.body_shaped(false)
    }

    /// The JSON body, nested (`{"error": {…}}`) or, as Fluxer's media proxy answers on its
    /// `/proxy/*` routes, flat (`{"code", "message"[, "retry_after"]}`).
    pub fn body_shaped(&self, flat: bool) -> Vec<u8> {
        let mut err = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(r) = self.retry_after {
            err["retry_after"] = json!(r);
        }
        let v = if flat { err } else { json!({ "error": err }) };
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Whether errors on `path` take Fluxer's flat shape (its `/proxy/*` routes).
    pub fn flat_for(path: &str) -> bool {
        path.starts_with("/proxy/")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let mut e = ApiError::new(429, ErrorCode::RateLimited, "slow down");
        e.retry_after = Some(7);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "RATE_LIMITED");
        assert_eq!(v["error"]["message"], "slow down");
        assert_eq!(v["error"]["retry_after"], 7);
        let v: serde_json::Value = serde_json::from_slice(&e.body_shaped(true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": "RATE_LIMITED", "message": "slow down", "retry_after": 7})
        );
    }
}
