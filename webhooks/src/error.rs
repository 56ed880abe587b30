use thiserror::Error;

/// Why a delivery was not accepted. Never carries the expected MAC.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("signature header is missing")]
    MissingSignature,
    #[error("signature header is malformed")]
    MalformedSignature,
    #[error("signature does not match")]
    BadSignature,
    #[error("verify token does not match")]
    BadVerifyToken,
    #[error("handshake mode is not `subscribe`")]
    BadMode,
    #[error("signed_request is malformed")]
    MalformedSignedRequest,
    #[error("signed_request algorithm is not HMAC-SHA256")]
    UnsupportedAlgorithm,
    // -- slack, discord ----
    #[error("request timestamp header is missing or not a number")]
    BadTimestamp,
    #[error("request timestamp is outside the replay window")]
    StaleTimestamp,
}
