//! Inbound answers: the one mapping from ingest outcomes to HTTP status and JSON.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::respond::json;
use crate::store::AppendOutcome;

/// Why an inbound request was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no source at this path")]
    NotFound,
    #[error("method not allowed; use POST")]
    MethodNotAllowed,
    #[error("body exceeds max_body_bytes")]
    TooLarge,
    #[error("request not received within request_timeout")]
    Timeout,
    #[error("malformed request body")]
    BadBody,
    #[error("storage unavailable; retry later")]
    Unavailable,
}

impl IngestError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::NotFound => StatusCode::NOT_FOUND,
            IngestError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Timeout => StatusCode::REQUEST_TIMEOUT,
            IngestError::BadBody => StatusCode::BAD_REQUEST,
            IngestError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// True when the sender's request was at fault (counted as rejected).
    pub fn is_rejection(&self) -> bool {
        !matches!(self, IngestError::Unavailable | IngestError::NotFound)
    }

    /// The JSON error answer, with `Allow` or `Retry-After` where the status calls for it.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = crate::respond::error(self.status(), &self.to_string());
        match self {
            IngestError::MethodNotAllowed => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            IngestError::Unavailable => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            IngestError::TooLarge | IngestError::Timeout => {
                // The rest of the body is unread; the connection cannot be reused.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

/// `200 {"id","seq","duplicate"}`.
pub fn accepted(outcome: AppendOutcome) -> Response<Full<Bytes>> {
    let (seq, id, duplicate) = match outcome {
        AppendOutcome::Stored { seq, id } => (seq, id, false),
        AppendOutcome::Duplicate { seq, id } => (seq, id, true),
    };
    json(
        StatusCode::OK,
        &serde_json::json!({ "id": id, "seq": seq.0, "duplicate": duplicate }),
    )
}
