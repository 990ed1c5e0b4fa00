//! One rendezvous session: the current payload and the validators that describe it.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::entropy::{Entropy, EntropyError};
use crate::etag::EntityTag;
use crate::id::SessionId;

/// Which rendezvous API a session belongs to. A session is reachable only through the paths
/// of its own protocol: the two APIs have different write semantics, so a 2024 client must
/// never see (or overwrite) a 2025 session, and the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// MSC4108 (2024): `text/plain` bodies, `ETag`/`If-Match`. Every session stored before
    /// MSC4388 support is one of these.
    #[default]
    Msc4108,
    /// MSC4388 (2025): JSON bodies, `sequence_token` compare-and-swap.
    Msc4388,
}

impl Protocol {
    /// Both, in the order of [`Protocol::index`].
    pub const ALL: [Self; 2] = [Self::Msc4108, Self::Msc4388];

    /// The label metrics carry (`protocol="msc4108"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Msc4108 => "msc4108",
            Self::Msc4388 => "msc4388",
        }
    }

    /// 0 for MSC4108, 1 for MSC4388: the position in per-protocol arrays.
    pub fn index(self) -> usize {
        match self {
            Self::Msc4108 => 0,
            Self::Msc4388 => 1,
        }
    }
}

/// A session as stored: its current payload and validators. Cloning is cheap (the payload
/// is reference-counted).
///
/// For an MSC4388 session, `payload` is the `data` string's UTF-8 bytes and `etag` holds the
/// current `sequence_token` (see [`crate::SequenceToken`]); `last_modified` is kept but never
/// shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session's id.
    pub id: SessionId,
    /// The API it belongs to.
    pub protocol: Protocol,
    /// The payload of the latest write, stored as the exact bytes received.
    pub payload: Bytes,
    /// The tag of the latest write.
    pub etag: EntityTag,
    /// When the latest write happened.
    pub last_modified: SystemTime,
    /// When the session ends: creation time plus the TTL, never extended.
    pub expires: SystemTime,
}

impl Session {
    /// A new MSC4108 session holding `payload`, created at `now` with lifetime `ttl`.
    ///
    /// # Errors
    /// [`EntropyError`] when no randomness is available for the id or the tag.
    pub fn create(
        payload: Bytes,
        now: SystemTime,
        ttl: Duration,
        entropy: &dyn Entropy,
    ) -> Result<Self, EntropyError> {
        let id = SessionId::generate(now, entropy)?;
        let etag = EntityTag::generate(id, entropy)?;
        Ok(Self {
            id,
            protocol: Protocol::Msc4108,
            payload,
            etag,
            last_modified: now,
            expires: now + ttl,
        })
    }

    /// Whether the session has ended at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires
    }
}
