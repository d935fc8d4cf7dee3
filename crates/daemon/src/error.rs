//! Engine errors as HTTP responses: `{"message": ...}` with the status the error kind maps to.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wharf_api::ErrorBody;
pub use wharf_engine::error::chain;
use wharf_engine::{ContainerError, ErrorKind, ImageError};

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn from_kind(kind: ErrorKind, message: String) -> ApiError {
        let status = match kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::NotModified => StatusCode::NOT_MODIFIED,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, message }
    }
}

impl From<ContainerError> for ApiError {
    fn from(e: ContainerError) -> ApiError {
        ApiError::from_kind(e.kind(), chain(&e))
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> ApiError {
        ApiError::from_kind(e.kind(), chain(&e))
    }
}

impl From<wharf_engine::df::DiskUsageError> for ApiError {
    fn from(e: wharf_engine::df::DiskUsageError) -> ApiError {
        use wharf_engine::df::DiskUsageError;
        match e {
            DiskUsageError::Image(e) => e.into(),
            DiskUsageError::Container(e) => e.into(),
        }
    }
}

impl From<wharf_engine::network::NetworkError> for ApiError {
    fn from(e: wharf_engine::network::NetworkError) -> ApiError {
        ApiError::from_kind(e.kind(), chain(&e))
    }
}

impl From<wharf_engine::distribution::DistributionError> for ApiError {
    fn from(e: wharf_engine::distribution::DistributionError) -> ApiError {
        ApiError::from_kind(e.kind(), e.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return StatusCode::NOT_MODIFIED.into_response();
        }
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        }
        (
            self.status,
            Json(ErrorBody {
                message: self.message,
            }),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
