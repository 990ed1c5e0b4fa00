//! The reference model of MSC4108 sessions: a map of id to payload, tag and expiry, and
//! how it reads paths, conditional headers and uploads.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use http::{HeaderValue, StatusCode};
use synapse_rendezvous_core::{CREATE_PATH, SESSION_PREFIX};

use crate::ops::{Condition, ContentTypeChoice, Length, Pick, Target, Upload};
use crate::system::{MAX_PAYLOAD, UNKNOWN_ID};

#[derive(Debug, Clone)]
pub(crate) struct ModelSession {
    pub(crate) payload: Vec<u8>,
    /// The current tag, without quotes.
    pub(crate) etag: String,
    pub(crate) expires: SystemTime,
    pub(crate) last_modified: SystemTime,
}

/// What the API must hold, as plainly as possible.
#[derive(Debug, Default)]
pub(crate) struct Model {
    /// Every session ever created, in order, whether it still exists or not.
    pub(crate) ids: Vec<String>,
    /// Sessions not deleted; those past their expiry are dead but kept for their expiry.
    pub(crate) sessions: HashMap<String, ModelSession>,
    /// Every tag each session ever had, the current one last.
    pub(crate) history: HashMap<String, Vec<String>>,
    /// Every tag ever issued, in order.
    pub(crate) issued: Vec<String>,
    pub(crate) issued_set: HashSet<String>,
}

/// What a path addresses, by the model's reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ModelRoute {
    Create,
    /// `None`: a session path whose id cannot be one the server issued.
    Session(Option<String>),
    Unknown,
}

/// What a conditional header says, by the model's reading.
#[derive(Debug, Clone)]
pub(crate) enum Precondition {
    Absent,
    Malformed,
    Any,
    Tags(Vec<String>),
}

impl Precondition {
    pub(crate) fn matches(&self, current: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|tag| tag == current),
            Self::Absent | Self::Malformed => false,
        }
    }
}

impl Model {
    pub(crate) fn live(&self, id: &str, now: SystemTime) -> Option<&ModelSession> {
        self.sessions.get(id).filter(|s| now < s.expires)
    }

    pub(crate) fn live_count(&self, now: SystemTime) -> usize {
        self.sessions.values().filter(|s| now < s.expires).count()
    }

    /// Sessions that ended before anyone deleted them (deleting one afterwards changes
    /// nothing: it had already ended).
    pub(crate) fn ended_count(&self, now: SystemTime) -> usize {
        self.sessions.values().filter(|s| now >= s.expires).count()
    }

    pub(crate) fn pick(&self, index: Pick) -> Option<&str> {
        (!self.ids.is_empty()).then(|| self.ids[index.of(self.ids.len())].as_str())
    }

    pub(crate) fn resolve_target(&self, target: &Target) -> (String, ModelRoute) {
        let session = |suffix: &str| format!("{SESSION_PREFIX}/{suffix}");
        let known = |index: Pick| self.pick(index).unwrap_or(UNKNOWN_ID).to_owned();
        match target {
            Target::Known(index) => {
                let id = known(*index);
                (session(&id), ModelRoute::Session(Some(id)))
            }
            Target::KnownWithQuery(index) => {
                let id = known(*index);
                (
                    format!("{}?x=1&If-Match=*", session(&id)),
                    ModelRoute::Session(Some(id)),
                )
            }
            Target::KnownEscaped(index) => {
                let id = known(*index);
                let escaped = format!("%{:02X}{}", id.as_bytes()[0], &id[1..]);
                (session(&escaped), ModelRoute::Session(Some(id)))
            }
            Target::KnownLowercase(index) => {
                let id = known(*index);
                let lower = id.to_lowercase();
                let route = if lower == id {
                    ModelRoute::Session(Some(id))
                } else {
                    ModelRoute::Session(None)
                };
                (session(&lower), route)
            }
            Target::KnownNested(index) => (
                session(&format!("{}/x", known(*index))),
                ModelRoute::Unknown,
            ),
            Target::Unknown => (
                session(UNKNOWN_ID),
                ModelRoute::Session(Some(UNKNOWN_ID.to_owned())),
            ),
            Target::Garbage("") => (session(""), ModelRoute::Unknown),
            Target::Garbage(garbage) => (session(garbage), ModelRoute::Session(None)),
            Target::Create => (CREATE_PATH.to_owned(), ModelRoute::Create),
        }
    }

    /// The header value to send, and what it means.
    pub(crate) fn resolve_condition(
        &self,
        condition: &Condition,
        route: &ModelRoute,
    ) -> (Option<HeaderValue>, Precondition) {
        let id = match route {
            ModelRoute::Session(Some(id)) => Some(id.as_str()),
            _ => None,
        };
        let history = id.and_then(|id| self.history.get(id));
        // The latest tag this session had, live or not; a never-issued one otherwise.
        let current = history
            .and_then(|tags| tags.last())
            .cloned()
            .unwrap_or_else(|| "never-issued".to_owned());
        let tags = |opaque: String, header: String| {
            (
                Some(HeaderValue::from_str(&header).unwrap()),
                Precondition::Tags(vec![opaque]),
            )
        };
        match condition {
            Condition::Missing => (None, Precondition::Absent),
            Condition::Current => tags(current.clone(), format!("\"{current}\"")),
            Condition::CurrentWeak => tags(current.clone(), format!("W/\"{current}\"")),
            Condition::Stale(index) => {
                let earlier = history.filter(|tags| tags.len() > 1).map_or_else(
                    || "stale".to_owned(),
                    |tags| tags[index.of(tags.len() - 1)].clone(),
                );
                tags(earlier.clone(), format!("\"{earlier}\""))
            }
            Condition::Issued(index) => {
                let tag = if self.issued.is_empty() {
                    "none-yet".to_owned()
                } else {
                    self.issued[index.of(self.issued.len())].clone()
                };
                tags(tag.clone(), format!("\"{tag}\""))
            }
            Condition::Star => (Some(HeaderValue::from_static("*")), Precondition::Any),
            Condition::ListWithCurrent => (
                Some(HeaderValue::from_str(&format!("\"x\", W/\"{current}\" , \"y\"")).unwrap()),
                Precondition::Tags(vec!["x".to_owned(), current, "y".to_owned()]),
            ),
            Condition::Fresh(opaque) => tags(opaque.clone(), format!("\"{opaque}\"")),
            Condition::Malformed(value) => (
                Some(HeaderValue::from_static(value)),
                Precondition::Malformed,
            ),
            // Well-formed (obs-text is allowed in a tag), but never issued: it cannot match.
            Condition::NonAscii => (
                Some(HeaderValue::from_bytes(b"\"\xc3\xa9t\xc3\xa9\"").unwrap()),
                Precondition::Tags(vec!["\u{e9}t\u{e9}".to_owned()]),
            ),
        }
    }

    /// Records the tag of a successful write; false if it was ever issued before.
    pub(crate) fn issue(&mut self, id: &str, etag: &str) -> bool {
        self.history
            .entry(id.to_owned())
            .or_default()
            .push(etag.to_owned());
        self.issued.push(etag.to_owned());
        self.issued_set.insert(etag.to_owned())
    }
}

/// The first check of an upload that fails, in the order of the spec (length, size, type),
/// as a status and errcode.
pub(crate) fn upload_error(upload: &Upload) -> Option<(StatusCode, &'static str)> {
    const MISSING: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    const INVALID: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let received = upload.body.len() as u64;
    let declared = match upload.length {
        Length::Exact | Length::Twice { agreeing: true } => received,
        Length::Missing | Length::Chunked { with_length: false } => return Some(MISSING),
        Length::Malformed(_)
        | Length::Twice { agreeing: false }
        | Length::Chunked { with_length: true } => return Some(INVALID),
        Length::Declared(declared) => declared,
    };
    let max = MAX_PAYLOAD as u64;
    if declared > max || received > max {
        return Some((StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"));
    }
    if declared != received {
        return Some(INVALID);
    }
    match upload.content_type {
        ContentTypeChoice::Valid(_) => None,
        ContentTypeChoice::Missing => Some(MISSING),
        ContentTypeChoice::Invalid(_) | ContentTypeChoice::Twice => Some(INVALID),
    }
}
