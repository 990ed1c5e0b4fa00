//! Where sessions live. Every store gives the same observable behaviour: a session exists
//! from its creation until its expiry or deletion, a write replaces it only if the caller's
//! precondition holds at that instant, and live sessions are never evicted to make room.

mod memory;
mod redis;
pub mod snapshot;

use std::fmt;
use std::time::{Duration, SystemTime};

pub use self::redis::{RedisLimits, RedisStore};
pub use memory::MemoryStore;

use crate::etag::EntityTagList;
use crate::id::SessionId;
use crate::session::{Session, Version};

/// The outcome of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The session was stored.
    Created,
    /// The store holds `capacity` live sessions; nothing was evicted.
    Full {
        /// How long until the oldest live session expires.
        retry_after: Duration,
    },
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceOutcome {
    /// The precondition held; the session as it now is.
    Replaced(Session),
    /// The precondition failed; the session as it still is.
    PreconditionFailed(Session),
    /// No live session has this id.
    NotFound,
}

/// A store could not do what was asked; the request fails with 503 or 500.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backing service cannot be reached.
    Unavailable(String),
    /// The backing service did not answer in time.
    Timeout,
    /// Stored data could not be decoded.
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "session store unavailable: {why}"),
            Self::Timeout => f.write_str("session store timed out"),
            Self::Corrupt(why) => write!(f, "corrupt session in store: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Storage of live sessions, shared by every request of a process.
pub trait Store: Send + Sync {
    /// Stores a new session unless `capacity` live sessions exist already.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    fn create(&self, session: Session, now: SystemTime) -> Result<CreateOutcome, StoreError>;

    /// The live session with this id, if any.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    fn get(&self, id: SessionId, now: SystemTime) -> Result<Option<Session>, StoreError>;

    /// Replaces the session's content with `version` if `if_match` matches its current tag,
    /// atomically with respect to every other request.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    fn replace(
        &self,
        id: SessionId,
        if_match: &EntityTagList,
        version: Version,
        now: SystemTime,
    ) -> Result<ReplaceOutcome, StoreError>;

    /// Removes the session; `false` when no live session had this id.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    fn delete(&self, id: SessionId, now: SystemTime) -> Result<bool, StoreError>;

    /// How many live sessions the store holds.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    fn live_count(&self, now: SystemTime) -> Result<usize, StoreError>;

    /// How many ended sessions this instance has removed since it was created, by any call
    /// (creates and counts trim them too), for the `sessions_expired` metric.
    fn expired_total(&self) -> u64;

    /// Frees the memory of expired sessions; returns how many were reclaimed.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    fn reclaim_expired(&self, now: SystemTime) -> Result<usize, StoreError>;
}
