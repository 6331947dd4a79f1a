use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sfu::SfuError;
use thiserror::Error;
use tracing::info;

use crate::token::TokenError;

/// Every client-facing failure: a status, a one-line reason in the body, and a log line.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(TokenError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("content type must be {0}")]
    UnsupportedMedia(&'static str),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    TooMany(String),
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::WrongRoom | TokenError::MissingGrant(_) => {
                ApiError::Forbidden(e.to_string())
            }
            TokenError::BadRoom => ApiError::BadRequest(e.to_string()),
            _ => ApiError::Unauthorized(e),
        }
    }
}

impl From<SfuError> for ApiError {
    fn from(e: SfuError) -> Self {
        match e {
            SfuError::Forbidden(_) => ApiError::Forbidden(e.to_string()),
            SfuError::UnknownParticipant
            | SfuError::UnknownTrack
            | SfuError::UnknownRoom
            | SfuError::NothingToTap(_) => ApiError::NotFound(e.to_string()),
            SfuError::RoomFull(_) | SfuError::EngineStopped => ApiError::Unavailable(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        info!(status = status.as_u16(), "request refused: {self}");
        let mut r = (status, format!("{self}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}
