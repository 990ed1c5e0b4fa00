//! What one request asks of a store, and what the store answers. The core decides the
//! operation from the request; a store carries it out atomically (one lock in memory, one
//! script in Redis), rate limit and per-client quota included, and reports an [`Outcome`]
//! the core turns into the response.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::etag::{EntityTag, EntityTagList};
use crate::id::SessionId;
use crate::rate_limit::{BucketConfig, ClientKey, Limit, PrefixGroup};
use crate::session::{Protocol, Session};

/// One request's whole use of the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// The rate limit the request draws from; `None` when no limit applies to its client.
    pub admission: Option<Admission>,
    /// What to do once admitted.
    pub action: Action,
}

/// A token to take from a client's bucket before anything else happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    /// Whose bucket.
    pub client: ClientKey,
    /// Which of its buckets.
    pub limit: Limit,
    /// That bucket's size and refill rate.
    pub bucket: BucketConfig,
}

/// The part of an operation that concerns sessions.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Store a new session, unless its client or the store is full.
    Create(NewSession),
    /// Read a session; `if_none_match` lets the store skip the payload of a 304.
    Read {
        /// The session.
        id: SessionId,
        /// The request's `If-None-Match`, if any and well formed.
        if_none_match: Option<EntityTagList>,
    },
    /// Replace a session's content if `if_match` names its current version.
    Replace {
        /// The session.
        id: SessionId,
        /// The request's `If-Match`.
        if_match: EntityTagList,
        /// The new content.
        payload: Bytes,
        /// The new content's tag.
        etag: EntityTag,
    },
    /// End a session.
    Delete {
        /// The session.
        id: SessionId,
    },
    /// MSC4388: store a new session (`payload` is its `data`, `etag` its first sequence
    /// token), under the same capacity, quota and fair-share rules as [`Action::Create`].
    Msc4388Create(NewSession),
    /// MSC4388: read a session, payload included.
    Msc4388Read {
        /// The session.
        id: SessionId,
    },
    /// MSC4388: compare-and-swap of a session's data.
    Msc4388Write(Msc4388Write),
    /// MSC4388: end a session.
    Msc4388Delete {
        /// The session.
        id: SessionId,
    },
}

impl Action {
    /// The API whose sessions this action addresses: it never sees the other's.
    pub fn protocol(&self) -> Protocol {
        match self {
            Self::Create(_) | Self::Read { .. } | Self::Replace { .. } | Self::Delete { .. } => {
                Protocol::Msc4108
            }
            Self::Msc4388Create(_)
            | Self::Msc4388Read { .. }
            | Self::Msc4388Write(_)
            | Self::Msc4388Delete { .. } => Protocol::Msc4388,
        }
    }
}

/// An MSC4388 write (PUT). With `current` the session's token and data:
///
/// - `presented == current` token (and a successor exists): the data becomes `data`, the
///   token becomes `next`, even when `data` equals the old data: [`Outcome::Replaced`].
/// - otherwise, `data` equal to the current data byte for byte: an idempotent retry,
///   nothing changes: [`Outcome::Unchanged`] with the current token.
/// - otherwise: a concurrent write, nothing changes: [`Outcome::PreconditionFailed`].
///
/// The lifetime never changes. `next` is computed by the core from `presented` (see
/// [`crate::SequenceToken`]), so the store only compares strings.
#[derive(Debug, Clone, PartialEq)]
pub struct Msc4388Write {
    /// The session.
    pub id: SessionId,
    /// The `sequence_token` the client sent, verbatim.
    pub presented: String,
    /// The token the write gets if `presented` is current; `None` when `presented` is not
    /// a token this server could have issued (so it cannot be current).
    pub next: Option<EntityTag>,
    /// The new data, as UTF-8 bytes.
    pub data: Bytes,
}

/// A session to create: everything but its times, which the store's clock decides.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSession {
    /// Its id.
    pub id: SessionId,
    /// Its first content.
    pub payload: Bytes,
    /// That content's tag.
    pub etag: EntityTag,
    /// How long it lives from the store's `now`.
    pub ttl: Duration,
    /// The cap on live sessions of the client creating it, if one applies.
    pub quota: Option<Quota>,
    /// The client's wider prefix groups, when the capacity is shared fairly among them:
    /// once the store is more than half full, a group holding as many live sessions as are
    /// still free gets no more. Empty: no such rule.
    pub groups: Vec<PrefixGroup>,
}

/// A client's cap on live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Whose sessions.
    pub client: ClientKey,
    /// How many may be live at once.
    pub max: usize,
}

/// The validators of a session version: what every successful answer's headers carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The version's tag.
    pub etag: EntityTag,
    /// When it was written.
    pub last_modified: SystemTime,
    /// When the session ends.
    pub expires: SystemTime,
}

impl From<&Session> for Meta {
    fn from(session: &Session) -> Self {
        Self {
            etag: session.etag.clone(),
            last_modified: session.last_modified,
            expires: session.expires,
        }
    }
}

/// What a store did with an [`Operation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client's bucket is empty; nothing else was done.
    RateLimited {
        /// When a token is available again.
        retry_after: Duration,
    },
    /// The client has its maximum of live sessions.
    QuotaExceeded {
        /// When its oldest one ends.
        retry_after: Duration,
    },
    /// The store holds its capacity of live sessions; nothing was evicted.
    Full {
        /// When the oldest live session ends.
        retry_after: Duration,
    },
    /// The session was created.
    Created(Meta),
    /// The session, payload included.
    Found(Session),
    /// The session's current version is one `If-None-Match` names.
    NotModified {
        /// Its validators.
        meta: Meta,
        /// The length of the payload a 200 would carry.
        length: usize,
    },
    /// The content was replaced.
    Replaced(Meta),
    /// `If-Match` does not name the current version (MSC4388: the sequence token is stale
    /// and the data differs, a concurrent write); nothing changed.
    PreconditionFailed(Meta),
    /// MSC4388: a stale token with the current data, byte for byte: an idempotent retry,
    /// acknowledged with the current version; nothing changed.
    Unchanged(Meta),
    /// The session was deleted.
    Deleted,
    /// No live session has this id.
    NotFound,
}

/// An outcome, and what the store removed on the way: ended sessions (for the
/// `sessions_expired` metric) and sessions it cannot have written (found in Redis with a
/// payload over the limit or an expiry beyond now + ttl: forged or left by a misconfigured
/// process), which the caller should warn about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// What happened.
    pub outcome: Outcome,
    /// Ended sessions removed while doing it.
    pub expired: usize,
    /// Sessions dropped because the store cannot have written them.
    pub discarded: usize,
}

impl Executed {
    /// An outcome that removed nothing.
    pub fn only(outcome: Outcome) -> Self {
        Self {
            outcome,
            expired: 0,
            discarded: 0,
        }
    }

    /// An outcome that removed `expired` ended sessions.
    pub fn expiring(outcome: Outcome, expired: usize) -> Self {
        Self {
            expired,
            ..Self::only(outcome)
        }
    }
}

/// What a maintenance run found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Maintenance {
    /// Ended sessions removed.
    pub expired: usize,
    /// Live sessions left.
    pub live: usize,
    /// Sessions dropped because the store cannot have written them (see [`Executed`]).
    pub discarded: usize,
}
