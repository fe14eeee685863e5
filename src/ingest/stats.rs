//! Per-source request counters for the admin API and metrics. Rejections are
//! counted by a fixed set of reasons, so label values never come from requests.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::verify::VerifyError;

/// Why a request was refused, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    MissingHeader,
    MalformedHeader,
    BadSignature,
    BadCredentials,
    StaleTimestamp,
    BadHandshake,
    Method,
    TooLarge,
    Timeout,
    BadBody,
}

impl RejectReason {
    /// Every reason, in counter order.
    pub const ALL: [RejectReason; 10] = [
        RejectReason::MissingHeader,
        RejectReason::MalformedHeader,
        RejectReason::BadSignature,
        RejectReason::BadCredentials,
        RejectReason::StaleTimestamp,
        RejectReason::BadHandshake,
        RejectReason::Method,
        RejectReason::TooLarge,
        RejectReason::Timeout,
        RejectReason::BadBody,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MissingHeader => "missing_header",
            RejectReason::MalformedHeader => "malformed_header",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::BadCredentials => "bad_credentials",
            RejectReason::StaleTimestamp => "stale_timestamp",
            RejectReason::BadHandshake => "bad_handshake",
            RejectReason::Method => "method",
            RejectReason::TooLarge => "too_large",
            RejectReason::Timeout => "timeout",
            RejectReason::BadBody => "bad_body",
        }
    }
}

impl From<&VerifyError> for RejectReason {
    fn from(e: &VerifyError) -> RejectReason {
        match e {
            VerifyError::MissingHeader(_) => RejectReason::MissingHeader,
            VerifyError::MalformedHeader(_) => RejectReason::MalformedHeader,
            VerifyError::BadSignature => RejectReason::BadSignature,
            VerifyError::BadCredentials => RejectReason::BadCredentials,
            VerifyError::StaleTimestamp => RejectReason::StaleTimestamp,
            VerifyError::HandshakeRefused => RejectReason::BadHandshake,
        }
    }
}

/// Counters of one source.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Stored (new) messages.
    pub received: AtomicU64,
    /// Refused requests, all reasons together.
    pub rejected: AtomicU64,
    /// Accepted but not stored again (idempotency key seen inside the window).
    pub duplicates: AtomicU64,
    /// Handshakes the relay answered itself (not stored).
    pub handshakes: AtomicU64,
    /// Sync replies answered with the destination's answer.
    pub replied_by_app: AtomicU64,
    /// Sync replies answered with the configured fallback.
    pub replied_with_fallback: AtomicU64,
    rejected_by: [AtomicU64; RejectReason::ALL.len()],
    /// Time from request start to the durable answer, for stored messages.
    pub ingest_duration: crate::telemetry::Seconds,
}

impl SourceStats {
    /// Counts one refused request.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejected_by[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refused requests for this reason.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected_by[reason as usize].load(Ordering::Relaxed)
    }

    /// Every reason with its count, in [`RejectReason::ALL`] order.
    pub fn rejected_by_reason(&self) -> Vec<(RejectReason, u64)> {
        RejectReason::ALL
            .iter()
            .map(|&r| (r, self.rejected_for(r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_counter() {
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let s = SourceStats::default();
        s.reject(RejectReason::BadSignature);
        s.reject(RejectReason::BadSignature);
        s.reject(RejectReason::Timeout);
        assert_eq!(s.rejected.load(Ordering::Relaxed), 3);
        assert_eq!(s.rejected_for(RejectReason::BadSignature), 2);
        assert_eq!(s.rejected_for(RejectReason::Timeout), 1);
        assert_eq!(s.rejected_by_reason().len(), RejectReason::ALL.len());
    }

    #[test]
    fn verify_reasons_are_the_counter_labels() {
        for e in VerifyError::every_kind() {
            assert_eq!(RejectReason::from(&e).as_str(), e.reason());
        }
    }
}
