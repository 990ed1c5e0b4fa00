//! The contract every [`Store`] keeps, as generic checks over [`Operation`]s run against each
//! implementation with the same assertions. Each check gets a factory of empty stores of a
//! given capacity, whose time is the `now` each operation is given.
//!
//! Times start an hour ahead of the real clock, at an instant with milliseconds, so that a
//! store backed by a server with its own expiry keeps every key during the test and times
//! must round-trip to the millisecond.

mod expiry;
mod limits;
mod sessions;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use synapse_rendezvous_core::store::{Action, Executed, Meta, NewSession, Operation, Outcome};
use synapse_rendezvous_core::{
    EntityTag, EntityTagList, Protocol, Session, SessionId, Store, SystemEntropy,
};

pub use self::expiry::{
    every_expiry_is_counted_once, expired_sessions_are_invisible_before_maintenance,
    expiry_is_exact_to_the_millisecond, maintenance_removes_only_ended_sessions,
};
pub use self::limits::{
    admission_is_taken_before_anything_else, prefix_groups_share_the_last_half_fairly,
    quota_and_capacity_refusals_take_nothing, quota_caps_the_live_sessions_of_a_client,
};
pub use self::sessions::{
    conditional_read_names_the_current_version, create_then_read_round_trips_exactly,
    delete_removes_the_session, full_store_refuses_without_evicting,
    replace_checks_the_current_tag, unknown_ids_are_not_found,
};

/// Makes an empty store holding at most the given number of live sessions.
pub type Factory<'a> = &'a dyn Fn(usize) -> Box<dyn Store>;

const TTL: Duration = Duration::from_secs(120);
const MS: Duration = Duration::from_millis(1);

/// An hour from now, rounded to the second, plus 123 ms.
fn start() -> SystemTime {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_secs(now.as_secs() + 3600) + Duration::from_millis(123)
}

/// A session to create with `payload`, a fresh id and tag, living `ttl`, with no quota.
fn new_session(payload: &[u8], ttl: Duration) -> NewSession {
    let id = SessionId::generate(start(), &SystemEntropy).unwrap();
    let payload = Bytes::copy_from_slice(payload);
    NewSession {
        id,
        etag: EntityTag::generate(id, &SystemEntropy).unwrap(),
        payload,
        ttl,
        quota: None,
        groups: Vec::new(),
    }
}

/// The session a create of `new` at `now` makes.
fn stored(new: &NewSession, now: SystemTime) -> Session {
    Session {
        id: new.id,
        protocol: Protocol::Msc4108,
        payload: new.payload.clone(),
        etag: new.etag.clone(),
        last_modified: now,
        expires: now + new.ttl,
    }
}

/// Carries out `action` at `now` with no rate limit.
fn run(store: &dyn Store, action: Action, now: SystemTime) -> Executed {
    let operation = Operation {
        admission: None,
        action,
    };
    store.execute(&operation, now).unwrap()
}

fn outcome(store: &dyn Store, action: Action, now: SystemTime) -> Outcome {
    run(store, action, now).outcome
}

/// Creates `new` at `now`, which must succeed; the session as stored.
fn create(store: &dyn Store, new: &NewSession, now: SystemTime) -> Session {
    let session = stored(new, now);
    assert_eq!(
        outcome(store, Action::Create(new.clone()), now),
        Outcome::Created(Meta::from(&session))
    );
    session
}

fn read(id: SessionId) -> Action {
    Action::Read {
        id,
        if_none_match: None,
    }
}

/// A replace of `id` by `payload` under `if_match`, and the tag the new version gets.
fn replace(id: SessionId, if_match: EntityTagList, payload: &[u8]) -> (Action, EntityTag) {
    let payload = Bytes::copy_from_slice(payload);
    let etag = EntityTag::generate(id, &SystemEntropy).unwrap();
    let action = Action::Replace {
        id,
        if_match,
        payload,
        etag: etag.clone(),
    };
    (action, etag)
}

fn delete(id: SessionId) -> Action {
    Action::Delete { id }
}

fn tags(list: &[&str]) -> EntityTagList {
    EntityTagList::Tags(list.iter().map(|&tag| tag.to_owned()).collect())
}

fn unknown_id() -> SessionId {
    SessionId::generate(start(), &SystemEntropy).unwrap()
}
