//! One rendezvous session: the current payload and the validators that describe it.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::entropy::{Entropy, EntropyError};
use crate::etag::EntityTag;
use crate::id::SessionId;

/// A session as stored: its current payload and validators. Cloning is cheap (the payload
/// is reference-counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session's id.
    pub id: SessionId,
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
    /// A new session holding `payload`, created at `now` with lifetime `ttl`.
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
        let etag = EntityTag::generate(id, &payload, entropy)?;
        Ok(Self {
            id,
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
