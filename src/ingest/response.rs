//! Inbound answers: the one mapping from ingest outcomes to HTTP status and JSON.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::stats::RejectReason;
use crate::listen::json;
use crate::store::AppendOutcome;
use crate::verify::{Reply, VerifyError};

/// Why an inbound request was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Verification failed: `401` (`403` for a refused Meta handshake).
    #[error("{error}")]
    Rejected {
        error: VerifyError,
        /// `WWW-Authenticate` value for schemes that have one (basic, bearer).
        challenge: Option<&'static str>,
    },
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
    #[error("storage over max_disk_bytes or under min_free_bytes")]
    OverBudget,
}

impl IngestError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::Rejected {
                error: VerifyError::HandshakeRefused,
                ..
            } => StatusCode::FORBIDDEN,
            IngestError::Rejected { .. } => StatusCode::UNAUTHORIZED,
            IngestError::NotFound => StatusCode::NOT_FOUND,
            IngestError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            IngestError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Timeout => StatusCode::REQUEST_TIMEOUT,
            IngestError::BadBody => StatusCode::BAD_REQUEST,
            IngestError::Unavailable | IngestError::OverBudget => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Why the sender's request was refused (counted as rejected); `None`
    /// when the request was not at fault or had no source.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            IngestError::Rejected { error, .. } => Some(error.into()),
            IngestError::MethodNotAllowed => Some(RejectReason::Method),
            IngestError::TooLarge => Some(RejectReason::TooLarge),
            IngestError::Timeout => Some(RejectReason::Timeout),
            IngestError::BadBody => Some(RejectReason::BadBody),
            IngestError::NotFound | IngestError::Unavailable | IngestError::OverBudget => None,
        }
    }

    /// The JSON error answer, with `Allow`, `Retry-After` or
    /// `WWW-Authenticate` where the status calls for it. A verification
    /// failure also carries its fixed `reason` code.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = match &self {
            IngestError::Rejected { error, .. } => json(
                self.status(),
                &serde_json::json!({ "error": error.to_string(), "reason": error.reason() }),
            ),
            _ => crate::listen::error(self.status(), &self.to_string()),
        };
        match self {
            IngestError::Rejected {
                challenge: Some(challenge),
                ..
            } => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            IngestError::MethodNotAllowed => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            IngestError::Unavailable => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            IngestError::OverBudget => {
                // Space comes back only at a retention pass; passes are at most a minute apart.
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
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

/// A handshake the relay answers itself (status, type and body from the verifier).
pub fn answered(reply: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(reply.body));
    *resp.status_mut() = reply.status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    // A Meta challenge is echoed request data: never let it be sniffed as HTML.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
