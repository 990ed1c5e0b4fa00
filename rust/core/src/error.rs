//! Every error a client can receive, and the one place where their status codes, Matrix
//! errcodes and messages are spelled.

use std::time::Duration;

use http::StatusCode;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A required header is absent (`Content-Length`, `Content-Type`, `If-Match`).
    MissingHeader(&'static str),
    /// A header is present but unusable.
    InvalidHeader(&'static str),
    /// The body is larger than the configured maximum.
    PayloadTooLarge {
        /// The configured maximum, in bytes.
        max: usize,
    },
    /// The session does not exist, has expired, was deleted, or the id is malformed.
    SessionNotFound,
    /// The path is not one this API serves.
    UnknownPath,
    /// The method is not allowed on this path.
    MethodNotAllowed,
    /// The client is over one of its rate limits.
    RateLimited {
        /// When the request would be allowed.
        retry_after: Duration,
    },
    /// No room for another live session.
    CapacityExceeded {
        /// When a slot frees up at the latest.
        retry_after: Duration,
    },
    /// The store could not be reached or answered in time.
    StoreUnavailable,
    /// Too many requests already wait for the store.
    StoreOverloaded,
    /// A bug or a failed system call; the details go to the log, not the client.
    Internal,
    /// MSC4388: the request is not allowed (a create without the access token the policy
    /// wants, or a GET that is a browser navigation); the text says which.
    Forbidden(&'static str),
    /// MSC4388: the body is not the JSON object asked for; the text says why.
    InvalidBody(&'static str),
    /// MSC4388: a write with a stale `sequence_token` and other data than the current.
    ConcurrentWrite,
}

impl ErrorKind {
    /// The HTTP status, the Matrix errcode and the human-readable message of this error.
    pub fn describe(&self) -> (http::StatusCode, &'static str, String) {
        match self {
            Self::MissingHeader(name) => (
                StatusCode::BAD_REQUEST,
                "M_MISSING_PARAM",
                format!("Missing {name} header"),
            ),
            Self::InvalidHeader(name) => (
                StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                format!("Invalid {name} header"),
            ),
            Self::PayloadTooLarge { max } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                format!("Payload too large: at most {max} bytes are allowed"),
            ),
            Self::SessionNotFound => (
                StatusCode::NOT_FOUND,
                "M_NOT_FOUND",
                "Rendezvous session not found".to_owned(),
            ),
            Self::UnknownPath => (
                StatusCode::NOT_FOUND,
                "M_UNRECOGNIZED",
                "Unrecognized request".to_owned(),
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "M_UNRECOGNIZED",
                "Method not allowed".to_owned(),
            ),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "M_LIMIT_EXCEEDED",
                "Too many requests; slow down".to_owned(),
            ),
            Self::CapacityExceeded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "M_LIMIT_EXCEEDED",
                "Too many rendezvous sessions in progress; try again later".to_owned(),
            ),
            Self::StoreUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "M_UNKNOWN",
                "Rendezvous session store is unavailable; try again shortly".to_owned(),
            ),
            Self::StoreOverloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "M_UNKNOWN",
                "Rendezvous session store is busy; try again shortly".to_owned(),
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "Internal server error".to_owned(),
            ),
            Self::Forbidden(why) => (StatusCode::FORBIDDEN, "M_FORBIDDEN", (*why).to_owned()),
            Self::InvalidBody(why) => (
                StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                (*why).to_owned(),
            ),
            Self::ConcurrentWrite => (
                StatusCode::CONFLICT,
                MSC4388_CONCURRENT_WRITE,
                "The rendezvous session has changed since the given sequence_token".to_owned(),
            ),
        }
    }

    /// How long the client should wait before retrying, for errors that say so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CapacityExceeded { retry_after } | Self::RateLimited { retry_after } => {
                Some(*retry_after)
            }
            // A second is enough for a Redis restart or a burst to pass.
            Self::StoreUnavailable | Self::StoreOverloaded => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// The errcode MSC4108 puts beside `M_UNKNOWN` on a 412, under this key.
pub(crate) const MSC4108_ERRCODE_KEY: &str = "org.matrix.msc4108.errcode";
/// Its value for a write whose `If-Match` is stale.
pub(crate) const CONCURRENT_WRITE: &str = "M_CONCURRENT_WRITE";
/// MSC4388's unstable errcode for a concurrent write (stable: `M_CONCURRENT_WRITE`).
pub const MSC4388_CONCURRENT_WRITE: &str = "IO_ELEMENT_MSC4388_CONCURRENT_WRITE";
