//! The zero-setup store: sessions in this process's memory, indexed by expiry (so that
//! reclaiming them costs only the sessions that actually ended) and by the client that
//! created them (for its quota), all under one lock so that every operation is atomic.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::{
    Action, Executed, Maintenance, Meta, Msc4388Write, NewSession, Operation, Outcome, Store,
    StoreError,
};
use crate::etag::{EntityTag, EntityTagList};
use crate::id::SessionId;
use crate::rate_limit::{ClientKey, Decision, MemoryRateLimiter, PrefixGroup};
use crate::session::{Protocol, Session};

/// Live sessions in process memory, at most `capacity` of them, with the rate limits of
/// the clients using them.
#[derive(Debug)]
pub struct MemoryStore {
    capacity: usize,
    limiter: MemoryRateLimiter,
    inner: Mutex<State>,
}

/// Ordered by expiry, so that the ended ones are always at the front.
type ByExpiry = BTreeSet<(SystemTime, SessionId)>;

#[derive(Debug, Default)]
struct State {
    by_id: HashMap<SessionId, Stored>,
    expiring: ByExpiry,
    /// The live sessions of each client with a quota.
    owned: HashMap<ClientKey, ByExpiry>,
    /// The live sessions of each prefix group sharing the capacity fairly.
    grouped: HashMap<PrefixGroup, ByExpiry>,
}

#[derive(Debug)]
struct Stored {
    session: Session,
    owner: Option<ClientKey>,
    groups: Vec<PrefixGroup>,
}

/// Removes `entry` from `key`'s index, and the index once empty.
fn unindex<K: Eq + std::hash::Hash>(
    indexes: &mut HashMap<K, ByExpiry>,
    key: &K,
    entry: &(SystemTime, SessionId),
) {
    if let Some(index) = indexes.get_mut(key) {
        index.remove(entry);
        if index.is_empty() {
            indexes.remove(key);
        }
    }
}

impl State {
    /// Removes every session ended at `now`; returns how many.
    fn reclaim(&mut self, now: SystemTime) -> usize {
        let mut reclaimed = 0;
        while let Some(&(expires, id)) = self.expiring.first() {
            if expires > now {
                break;
            }
            self.remove(id);
            reclaimed += 1;
        }
        reclaimed
    }

    /// Removes a session from every index.
    fn remove(&mut self, id: SessionId) -> Option<Session> {
        let Stored {
            session,
            owner,
            groups,
        } = self.by_id.remove(&id)?;
        let entry = (session.expires, id);
        self.expiring.remove(&entry);
        if let Some(owner) = owner {
            unindex(&mut self.owned, &owner, &entry);
        }
        for group in &groups {
            unindex(&mut self.grouped, group, &entry);
        }
        Some(session)
    }

    /// The live session `id` of `protocol`: one of the other protocol is not there for it.
    fn live(&self, id: SessionId, protocol: Protocol, now: SystemTime) -> Option<&Session> {
        self.by_id
            .get(&id)
            .map(|stored| &stored.session)
            .filter(|session| session.protocol == protocol && !session.is_expired(now))
    }

    fn live_mut(
        &mut self,
        id: SessionId,
        protocol: Protocol,
        now: SystemTime,
    ) -> Option<&mut Session> {
        self.by_id
            .get_mut(&id)
            .map(|stored| &mut stored.session)
            .filter(|session| session.protocol == protocol && !session.is_expired(now))
    }

    /// Creates a session of `protocol`; sessions of both protocols share the capacity.
    fn create(
        &mut self,
        new: &NewSession,
        protocol: Protocol,
        now: SystemTime,
        capacity: usize,
    ) -> Executed {
        let expired = self.reclaim(now);
        let wait_for = |index: Option<&ByExpiry>| {
            index
                .and_then(BTreeSet::first)
                .map_or(Duration::ZERO, |(expires, _)| {
                    expires.duration_since(now).unwrap_or_default()
                })
        };
        let outcome = if let Some(quota) = new
            .quota
            .filter(|quota| self.owned.get(&quota.client).map_or(0, BTreeSet::len) >= quota.max)
        {
            Outcome::QuotaExceeded {
                retry_after: wait_for(self.owned.get(&quota.client)),
            }
        } else if self.by_id.len() >= capacity {
            Outcome::Full {
                retry_after: wait_for(Some(&self.expiring)),
            }
        } else if let Some(group) = self.group_over_its_share(&new.groups, capacity) {
            Outcome::Full {
                retry_after: wait_for(self.grouped.get(&group)),
            }
        } else {
            let session = Session {
                id: new.id,
                protocol,
                payload: new.payload.clone(),
                etag: new.etag.clone(),
                last_modified: now,
                expires: now + new.ttl,
            };
            let meta = Meta::from(&session);
            let owner = new.quota.map(|quota| quota.client);
            self.insert(session, owner, new.groups.clone());
            Outcome::Created(meta)
        };
        Executed::expiring(outcome, expired)
    }

    /// The first of `groups` that holds at least as many live sessions as are free, once
    /// the store is more than half full.
    fn group_over_its_share(&self, groups: &[PrefixGroup], capacity: usize) -> Option<PrefixGroup> {
        let live = self.by_id.len();
        if live * 2 <= capacity {
            return None;
        }
        let free = capacity.saturating_sub(live);
        groups
            .iter()
            .find(|group| self.grouped.get(group).map_or(0, BTreeSet::len) >= free)
            .copied()
    }

    fn insert(&mut self, session: Session, owner: Option<ClientKey>, groups: Vec<PrefixGroup>) {
        // Ids carry 80 random bits; a collision means a broken RNG. Keep the indexes exact.
        self.remove(session.id);
        let entry = (session.expires, session.id);
        self.expiring.insert(entry);
        if let Some(owner) = owner {
            self.owned.entry(owner).or_default().insert(entry);
        }
        for group in &groups {
            self.grouped.entry(*group).or_default().insert(entry);
        }
        self.by_id.insert(
            session.id,
            Stored {
                session,
                owner,
                groups,
            },
        );
    }

    fn read(
        &self,
        id: SessionId,
        if_none_match: Option<&EntityTagList>,
        now: SystemTime,
    ) -> Outcome {
        match self.live(id, Protocol::Msc4108, now) {
            None => Outcome::NotFound,
            Some(session) if if_none_match.is_some_and(|tags| tags.matches(&session.etag)) => {
                Outcome::NotModified {
                    meta: Meta::from(session),
                    length: session.payload.len(),
                }
            }
            Some(session) => Outcome::Found(session.clone()),
        }
    }

    fn replace(
        &mut self,
        id: SessionId,
        if_match: &EntityTagList,
        (payload, etag): (&bytes::Bytes, &EntityTag),
        now: SystemTime,
    ) -> Outcome {
        let Some(session) = self.live_mut(id, Protocol::Msc4108, now) else {
            return Outcome::NotFound;
        };
        if !if_match.matches(&session.etag) {
            return Outcome::PreconditionFailed(Meta::from(&*session));
        }
        session.payload = payload.clone();
        session.etag = etag.clone();
        session.last_modified = now;
        Outcome::Replaced(Meta::from(&*session))
    }

    /// The MSC4388 compare-and-swap (see [`Msc4388Write`]).
    fn write(&mut self, write: &Msc4388Write, now: SystemTime) -> Outcome {
        let Some(session) = self.live_mut(write.id, Protocol::Msc4388, now) else {
            return Outcome::NotFound;
        };
        match &write.next {
            Some(next) if session.etag.opaque() == write.presented => {
                session.payload = write.data.clone();
                session.etag = next.clone();
                session.last_modified = now;
                Outcome::Replaced(Meta::from(&*session))
            }
            _ if session.payload == write.data => Outcome::Unchanged(Meta::from(&*session)),
            _ => Outcome::PreconditionFailed(Meta::from(&*session)),
        }
    }

    /// Deletes session `id` of `protocol`. One of the other protocol stays, unless it has
    /// ended, when it is reclaimed (and counted) like any ended session.
    fn delete(&mut self, id: SessionId, protocol: Protocol, now: SystemTime) -> Executed {
        let Some(stored) = self.by_id.get(&id) else {
            return Executed::only(Outcome::NotFound);
        };
        let (ended, ours) = (
            stored.session.is_expired(now),
            stored.session.protocol == protocol,
        );
        if ended {
            self.remove(id);
            Executed::expiring(Outcome::NotFound, 1)
        } else if ours {
            self.remove(id);
            Executed::only(Outcome::Deleted)
        } else {
            Executed::only(Outcome::NotFound)
        }
    }
}

impl MemoryStore {
    /// An empty store that holds at most `capacity` live sessions.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            limiter: MemoryRateLimiter::new(),
            inner: Mutex::new(State::default()),
        }
    }

    /// Every live session of both protocols, for a snapshot.
    pub fn live_sessions(&self, now: SystemTime) -> Vec<Session> {
        self.lock()
            .by_id
            .values()
            .map(|stored| &stored.session)
            .filter(|session| !session.is_expired(now))
            .cloned()
            .collect()
    }

    /// Puts sessions from a snapshot back (each keeps its protocol), up to the capacity;
    /// returns how many were kept.
    /// They count against no client's quota: a snapshot does not record who made them.
    pub fn restore(&self, sessions: Vec<Session>, now: SystemTime) -> usize {
        let mut state = self.lock();
        state.reclaim(now);
        let mut restored = 0;
        for session in sessions {
            if state.by_id.len() >= self.capacity {
                break;
            }
            if !session.is_expired(now) {
                state.insert(session, None, Vec::new());
                restored += 1;
            }
        }
        restored
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the store, so keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn execute(&self, operation: &Operation, now: SystemTime) -> Result<Executed, StoreError> {
        if let Some(admission) = &operation.admission {
            if let Decision::Limited { retry_after } = self.limiter.take(admission, now) {
                return Ok(Executed::only(Outcome::RateLimited { retry_after }));
            }
        }
        let mut state = self.lock();
        Ok(match &operation.action {
            Action::Create(new) => state.create(new, Protocol::Msc4108, now, self.capacity),
            Action::Msc4388Create(new) => state.create(new, Protocol::Msc4388, now, self.capacity),
            Action::Read { id, if_none_match } => {
                Executed::only(state.read(*id, if_none_match.as_ref(), now))
            }
            Action::Replace {
                id,
                if_match,
                payload,
                etag,
            } => Executed::only(state.replace(*id, if_match, (payload, etag), now)),
            Action::Delete { id } => state.delete(*id, Protocol::Msc4108, now),
            Action::Msc4388Read { id } => Executed::only(
                state
                    .live(*id, Protocol::Msc4388, now)
                    .map_or(Outcome::NotFound, |session| Outcome::Found(session.clone())),
            ),
            Action::Msc4388Write(write) => Executed::only(state.write(write, now)),
            Action::Msc4388Delete { id } => state.delete(*id, Protocol::Msc4388, now),
        })
    }

    fn maintain(&self, now: SystemTime) -> Result<Maintenance, StoreError> {
        self.limiter.forget_idle(now);
        let mut state = self.lock();
        let expired = state.reclaim(now);
        Ok(Maintenance {
            expired,
            live: state.by_id.len(),
            discarded: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use bytes::Bytes;

    use super::*;
    use crate::entropy::SystemEntropy;
    use crate::store::Quota;

    const TTL: Duration = Duration::from_secs(120);

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn new_session(quota: Option<Quota>) -> NewSession {
        let id = SessionId::generate(start(), &SystemEntropy).unwrap();
        NewSession {
            id,
            payload: Bytes::from_static(b"hello"),
            etag: EntityTag::for_version(id, &[0; 16]),
            ttl: TTL,
            quota,
            groups: Vec::new(),
        }
    }

    fn run(store: &MemoryStore, action: Action, now: SystemTime) -> Executed {
        let operation = Operation {
            admission: None,
            action,
        };
        store.execute(&operation, now).unwrap()
    }

    fn alice() -> ClientKey {
        ClientKey::new("192.0.2.1".parse::<IpAddr>().unwrap())
    }

    #[test]
    fn full_store_refuses_without_evicting() {
        let store = MemoryStore::new(2);
        let (a, b) = (new_session(None), new_session(None));
        run(&store, Action::Create(a.clone()), start());
        run(&store, Action::Create(b), start() + Duration::from_secs(10));
        let later = start() + Duration::from_secs(20);
        assert_eq!(
            run(&store, Action::Create(new_session(None)), later).outcome,
            Outcome::Full {
                retry_after: Duration::from_secs(100)
            }
        );
        let read = Action::Read {
            id: a.id,
            if_none_match: None,
        };
        assert!(matches!(
            run(&store, read, later).outcome,
            Outcome::Found(_)
        ));
    }

    #[test]
    fn quota_counts_live_sessions_of_one_client() {
        let store = MemoryStore::new(10);
        let quota = Some(Quota {
            client: alice(),
            max: 1,
        });
        let first = new_session(quota);
        run(&store, Action::Create(first.clone()), start());
        assert_eq!(
            run(&store, Action::Create(new_session(quota)), start()).outcome,
            Outcome::QuotaExceeded { retry_after: TTL }
        );
        assert!(matches!(
            run(&store, Action::Create(new_session(None)), start()).outcome,
            Outcome::Created(_)
        ));
        run(&store, Action::Delete { id: first.id }, start());
        assert!(matches!(
            run(&store, Action::Create(new_session(quota)), start()).outcome,
            Outcome::Created(_)
        ));
    }

    #[test]
    fn ended_sessions_are_invisible_then_reclaimed() {
        let store = MemoryStore::new(1);
        let quota = Some(Quota {
            client: alice(),
            max: 1,
        });
        let session = new_session(quota);
        run(&store, Action::Create(session.clone()), start());
        let after = start() + TTL;
        let read = Action::Read {
            id: session.id,
            if_none_match: None,
        };
        assert_eq!(run(&store, read, after).outcome, Outcome::NotFound);
        assert_eq!(
            store.maintain(after).unwrap(),
            Maintenance {
                expired: 1,
                live: 0,
                discarded: 0
            }
        );
        let state = store.lock();
        assert!(state.owned.is_empty() && state.expiring.is_empty());
    }

    #[test]
    fn delete_of_an_ended_session_counts_it_expired() {
        let store = MemoryStore::new(1);
        let session = new_session(None);
        run(&store, Action::Create(session.clone()), start());
        assert_eq!(
            run(&store, Action::Delete { id: session.id }, start() + TTL),
            Executed::expiring(Outcome::NotFound, 1)
        );
    }
}
