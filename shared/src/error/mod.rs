//! The one error type of the HTTP API, rendered in OpenAI's shape so that SDKs show our messages:
//! `{"error": {"type": "...", "code": "...", "message": "...", "param": null}}`.
//!
//! Every variant maps to exactly one status (the `match` in [`ApiError::status`] is exhaustive), and
//! internal failures never put their details in the body: they are logged and answered with a generic text.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

mod codes;
pub use codes::ErrorCode;

/// Any error, for start-up paths that only report it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a field is invalid. `param` names the field.
    #[error("{message}")]
    InvalidRequest { code: ErrorCode, message: String, param: Option<String> },
    /// 401: no valid credentials.
    #[error("{message}")]
    Unauthenticated { code: ErrorCode, message: String },
    /// 402: the wallet cannot cover the request (OpenAI's `insufficient_quota`).
    #[error("{message}")]
    PaymentRequired { code: ErrorCode, message: String },
    /// 403: authenticated but not allowed.
    #[error("{message}")]
    Forbidden { code: ErrorCode, message: String },
    /// 404: no such route or resource.
    #[error("{message}")]
    NotFound { code: ErrorCode, message: String },
    /// 405: the route exists but not with this method.
    #[error("{message}")]
    MethodNotAllowed { message: String },
    /// 409: the request conflicts with the current state (duplicate email, ...).
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String, param: Option<String> },
    /// 413: the body is larger than the documented limit.
    #[error("request body exceeds {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    /// 415: the body is not `application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 429: too many attempts; retry after the given number of seconds.
    #[error("{message}")]
    TooManyRequests { code: ErrorCode, message: String, retry_after_secs: u64 },
    /// 429 `spend_limit_reached` (type `insufficient_quota`): a spend limit (`param`) refuses the call until
    /// it resets or is raised, so clients are told not to retry.
    #[error("{message}")]
    SpendLimitReached { param: &'static str, message: String },
    /// 500: a bug or a failed dependency. The detail is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
    /// 502: a third party (payment gateway, model provider) failed or answered nonsense.
    #[error("{message}")]
    BadGateway { code: ErrorCode, message: String },
    /// 504: a third party did not answer in time.
    #[error("{message}")]
    GatewayTimeout { message: String },
    /// 503: a dependency is unavailable; the client may retry.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 503: the model's providers are overloaded; the client may retry after the time given.
    #[error("{message}")]
    Overloaded { message: String, retry_after_secs: u64 },
}

/// What a 502 or a 503 without a time of its own tells the client to wait before retrying.
pub const RETRY_SOON_SECS: u64 = 2;

impl ApiError {
    pub fn invalid(code: ErrorCode, param: &str, message: impl Into<String>) -> Self {
        Self::InvalidRequest { code, message: message.into(), param: Some(param.to_owned()) }
    }

    pub fn unauthenticated(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Unauthenticated { code, message: message.into() }
    }

    /// The status follows the code (the catalogue in `codes.rs` says which).
    pub fn status(&self) -> StatusCode {
        self.error_code().status()
    }

    /// OpenAI's error `type` vocabulary.
    pub fn error_type(&self) -> &'static str {
        self.error_code().error_type()
    }

    /// The code as the client sees it.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    pub fn error_code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidRequest { code, .. }
            | ApiError::Unauthenticated { code, .. }
            | ApiError::Forbidden { code, .. }
            | ApiError::PaymentRequired { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::TooManyRequests { code, .. }
            | ApiError::BadGateway { code, .. } => *code,
            ApiError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            ApiError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::Internal(_) => ErrorCode::InternalError,
            ApiError::GatewayTimeout { .. } => ErrorCode::UpstreamTimeout,
            ApiError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            ApiError::Overloaded { .. } => ErrorCode::ModelOverloaded,
            ApiError::SpendLimitReached { .. } => ErrorCode::SpendLimitReached,
        }
    }

    /// How long the client should wait before retrying, for the answers that invite a retry: a 429 or an
    /// overloaded 503 with the time it was given, and any other 502 or 503 soon (never a bare 503).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::TooManyRequests { retry_after_secs, .. } | ApiError::Overloaded { retry_after_secs, .. } => {
                Some(*retry_after_secs)
            }
            ApiError::BadGateway { .. } | ApiError::Unavailable(_) => Some(RETRY_SOON_SECS),
            _ => None,
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. } | ApiError::Conflict { param, .. } => param.as_deref(),
            ApiError::SpendLimitReached { param, .. } => Some(param),
            _ => None,
        }
    }

    /// The message shown to the client: internal details are replaced by a generic text.
    fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "The server failed to process the request. Please retry later.".into(),
            ApiError::Unavailable(_) => "A dependency is temporarily unavailable. Please retry later.".into(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = json!({
            "error": {
                "type": self.error_type(),
                "code": self.code(),
                "message": self.public_message(),
                "param": self.param(),
            }
        });
        let mut response = (status, Json(body)).into_response();
        // An error answers one caller's request: no cache on the way (CloudFront, a proxy) may keep it for
        // the next caller of the same path.
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, ApiError::SpendLimitReached { .. }) {
            // OpenAI's SDKs obey this header before their own retry rules.
            response.headers_mut().insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let Some(seconds) = self.retry_after_secs() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
