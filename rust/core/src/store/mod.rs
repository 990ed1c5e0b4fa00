//! Where sessions live. Every store gives the same observable behaviour: a session exists
//! from its creation until its expiry or deletion, a write replaces it only if the caller's
//! precondition holds at that instant, live sessions are never evicted to make room, and a
//! request's rate limit, its client's quota and its effect are decided together, atomically.
//!
//! The memory store answers in place ([`Store::execute`]). The Redis store is sans-IO: it
//! turns an [`Operation`] into one script call and the reply into an [`Executed`]
//! ([`RedisStore`]); the caller moves the bytes, for instance through a [`Link`].

mod memory;
mod operation;
pub mod redis;
pub mod snapshot;

use std::fmt;
use std::time::SystemTime;

pub use self::memory::MemoryStore;
pub use self::operation::{
    Action, Admission, Executed, Maintenance, Meta, Msc4388Write, NewSession, Operation, Outcome,
    Quota,
};
pub use self::redis::{Link, RedisStore};

/// A store could not do what was asked; the request fails with 503 or 500.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backing service cannot be reached.
    Unavailable(String),
    /// The backing service did not answer in time.
    Timeout,
    /// Too many requests are already waiting for the backing service.
    Overloaded,
    /// Stored data could not be decoded.
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "session store unavailable: {why}"),
            Self::Timeout => f.write_str("session store timed out"),
            Self::Overloaded => f.write_str("too many requests waiting for the session store"),
            Self::Corrupt(why) => write!(f, "corrupt session in store: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A store that answers in place, without I/O the caller must drive.
pub trait Store: Send + Sync {
    /// Carries out `operation` atomically at `now` (whole milliseconds).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    fn execute(&self, operation: &Operation, now: SystemTime) -> Result<Executed, StoreError>;

    /// Frees the memory of ended sessions and counts the live ones; meant to run
    /// periodically.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be used.
    fn maintain(&self, now: SystemTime) -> Result<Maintenance, StoreError>;
}
