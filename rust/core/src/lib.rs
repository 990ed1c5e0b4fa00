//! The rendezvous session API of MSC4108 (2024), free of Python and Twisted.
//!
//! Two devices signing in with a QR code exchange small opaque text blobs through a
//! store-and-forward mailbox on the homeserver. This crate holds the whole behaviour of that
//! mailbox: the session model, the stores, and the HTTP semantics as a function from an
//! [`http::Request`] to an [`http::Response`]. Time and randomness are injected
//! ([`Clock`], [`Entropy`]) so that expiry and id generation are testable without sleeping.
//!
//! The protocol as served here is described in `shared/spec/msc4108-rendezvous.md` of the
//! project; `docs/differences.md` lists where it deliberately differs from Synapse's built-in.

mod clock;
mod config;
mod duration;
mod entropy;
mod error;
mod etag;
mod handler;
mod id;
pub mod metrics;
pub mod rate_limit;
mod request;
mod response;
mod route;
mod session;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigError, RedisConfig, StoreConfig};
pub use duration::parse_duration;
pub use entropy::{Entropy, EntropyError, SystemEntropy};
pub use error::ErrorKind;
pub use etag::{EntityTag, EntityTagList, MalformedEntityTagList};
pub use handler::Rendezvous;
pub use id::SessionId;
pub use response::Problem;
pub use route::{Route, Routes, CREATE_PATH, SESSION_PREFIX};
pub use session::{Session, Version};
pub use store::{CreateOutcome, MemoryStore, RedisStore, ReplaceOutcome, Store, StoreError};
