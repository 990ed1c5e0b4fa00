//! The rendezvous session APIs of MSC4108 (2024) and MSC4388 (2025), free of Python and
//! Twisted.
//!
//! Two devices signing in with a QR code exchange small opaque text blobs through a
//! store-and-forward mailbox on the homeserver. This crate holds the whole behaviour of that
//! mailbox: the session model, the stores, and the HTTP semantics as a function from an
//! [`http::Request`] to an [`http::Response`]. It does no I/O of its own: a request becomes
//! at most one store [`Operation`](store::Operation), which a memory store answers in place
//! and the caller sends to Redis as one script call. Time and randomness are injected
//! ([`Clock`], [`Entropy`]) so that expiry and id generation are testable without sleeping.
//!
//! MSC4388 is off unless [`Config::msc4388`] says otherwise; its sessions share the store,
//! the capacity and the rate limits with MSC4108's, but each protocol's sessions are
//! reachable only through its own paths.
//!
//! `docs/differences.md` lists where the protocol as served here deliberately differs from
//! Synapse's built-in.

mod backend;
mod clock;
mod config;
mod duration;
mod entropy;
mod error;
mod etag;
mod handler;
mod id;
pub mod metrics;
mod msc4388;
pub mod rate_limit;
mod request;
mod response;
mod route;
mod sequence;
mod session;
pub mod store;

pub use backend::{Backend, Notice};
pub use clock::{floor_to_millis, from_unix_millis, unix_millis, Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigError, RedisConfig, StoreConfig};
pub use duration::parse_duration;
pub use entropy::{Entropy, EntropyError, SystemEntropy};
pub use error::{ErrorKind, MSC4388_CONCURRENT_WRITE};
pub use etag::{EntityTag, EntityTagList, MalformedEntityTagList};
pub use handler::{discarded, Query, Rendezvous, Service, Step};
pub use id::SessionId;
pub use msc4388::{
    Authenticated, Msc4388Mode, MSC4388_MAX_BODY_BYTES, MSC4388_MAX_DATA_BYTES, MSC4388_MAX_TTL,
    MSC4388_MIN_TTL, MSC4388_PREFIX,
};
pub use response::{Problem, Warning};
pub use route::{loggable_path, Route, Routes, CREATE_PATH, SESSION_PREFIX};
pub use sequence::SequenceToken;
pub use session::{Protocol, Session};
pub use store::{MemoryStore, RedisStore, Store, StoreError};
