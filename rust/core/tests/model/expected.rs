//! What the model says a response must be.

use std::time::Duration;

use http::StatusCode;

use crate::reference::ModelSession;

/// What the model says a response must be.
#[derive(Debug)]
pub(crate) enum Expected {
    Error(StatusCode, &'static str),
    /// 429 for lack of room, with how long until the oldest live session ends.
    Full(Duration),
    Created,
    Payload(ModelSession, bool),
    NotModified(ModelSession),
    Accepted(ModelSession),
    PreconditionFailed(ModelSession),
    Deleted,
    Preflight,
}

impl Expected {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Error(_, errcode) => errcode,
            Self::Full(_) => "429 capacity",
            Self::Created => "201",
            Self::Payload(_, false) => "200 GET",
            Self::Payload(_, true) => "200 HEAD",
            Self::NotModified(_) => "304",
            Self::Accepted(_) => "202",
            Self::PreconditionFailed(_) => "412",
            Self::Deleted => "204 DELETE",
            Self::Preflight => "204 OPTIONS",
        }
    }
}

/// Every label of [`Expected::label`]: a long enough random run must see each.
pub(crate) const EVERY_OUTCOME: &[&str] = &[
    "M_MISSING_PARAM",
    "M_INVALID_PARAM",
    "M_TOO_LARGE",
    "M_NOT_FOUND",
    "M_UNRECOGNIZED",
    "429 capacity",
    "201",
    "200 GET",
    "200 HEAD",
    "304",
    "202",
    "412",
    "204 DELETE",
    "204 OPTIONS",
];

pub(crate) const NOT_FOUND: Expected = Expected::Error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
pub(crate) const UNRECOGNIZED: Expected = Expected::Error(StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
pub(crate) const NOT_ALLOWED: Expected =
    Expected::Error(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED");
