//! Building the operations the Redis tests send, and sending them.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use synapse_rendezvous_core::store::{Action, Executed, NewSession, Operation, Outcome};
use synapse_rendezvous_core::{
    EntityTag, EntityTagList, SessionId, Store, StoreError, SystemEntropy,
};

/// The lifetime of every session the helpers make.
pub const TTL: Duration = Duration::from_secs(120);

/// A session to create with `payload`, a fresh id and tag, no quota.
pub fn new_session(payload: &[u8]) -> NewSession {
    let id = SessionId::generate(SystemTime::now(), &SystemEntropy).expect("entropy");
    let payload = Bytes::copy_from_slice(payload);
    NewSession {
        id,
        etag: EntityTag::generate(id, &SystemEntropy).expect("entropy"),
        payload,
        ttl: TTL,
        quota: None,
        groups: Vec::new(),
    }
}

/// Carries out `action` at `now` with no rate limit.
pub fn run(store: &dyn Store, action: Action, now: SystemTime) -> Result<Executed, StoreError> {
    let operation = Operation {
        admission: None,
        action,
    };
    store.execute(&operation, now)
}

/// Creates `new`, which must succeed.
pub fn create(store: &dyn Store, new: &NewSession, now: SystemTime) {
    let outcome = run(store, Action::Create(new.clone()), now).map(|done| done.outcome);
    assert!(
        matches!(outcome, Ok(Outcome::Created(_))),
        "create: {outcome:?}"
    );
}

/// A plain read.
pub fn read(id: SessionId) -> Action {
    Action::Read {
        id,
        if_none_match: None,
    }
}

/// A replace of `id` by `payload` under `if_match`.
pub fn replace(id: SessionId, if_match: EntityTagList, payload: &[u8]) -> Action {
    let payload = Bytes::copy_from_slice(payload);
    Action::Replace {
        id,
        if_match,
        etag: EntityTag::generate(id, &SystemEntropy).expect("entropy"),
        payload,
    }
}

/// A delete.
pub fn delete(id: SessionId) -> Action {
    Action::Delete { id }
}
