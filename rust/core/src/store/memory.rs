//! The zero-setup store: sessions in this process's memory, indexed by expiry so that
//! reclaiming them costs only the sessions that actually expired.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::{CreateOutcome, ReplaceOutcome, Store, StoreError};
use crate::etag::EntityTagList;
use crate::id::SessionId;
use crate::session::{Session, Version};

/// Live sessions in process memory, at most `capacity` of them.
#[derive(Debug)]
pub struct MemoryStore {
    capacity: usize,
    inner: Mutex<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    by_id: HashMap<SessionId, Session>,
    /// Every stored session, ordered by expiry: the expired ones are always at the front.
    by_expiry: BTreeSet<(SystemTime, SessionId)>,
    /// Ended sessions removed so far, by any call.
    expired_total: u64,
}

impl Sessions {
    fn reclaim_expired(&mut self, now: SystemTime) -> usize {
        let mut reclaimed = 0;
        while let Some(&(expires, id)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_id.remove(&id);
            reclaimed += 1;
        }
        self.expired_total += reclaimed as u64;
        reclaimed
    }

    fn live(&self, id: SessionId, now: SystemTime) -> Option<&Session> {
        self.by_id.get(&id).filter(|s| !s.is_expired(now))
    }
}

impl MemoryStore {
    /// An empty store that holds at most `capacity` live sessions.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Sessions::default()),
        }
    }

    /// Every live session, for a snapshot.
    pub fn live_sessions(&self, now: SystemTime) -> Vec<Session> {
        let sessions = self.lock();
        sessions
            .by_id
            .values()
            .filter(|s| !s.is_expired(now))
            .cloned()
            .collect()
    }

    /// Puts sessions from a snapshot back, up to the capacity; returns how many were kept.
    pub fn restore(&self, sessions: Vec<Session>, now: SystemTime) -> usize {
        let mut restored = 0;
        for session in sessions {
            if session.is_expired(now) {
                continue;
            }
            match self.create(session, now) {
                Ok(CreateOutcome::Created) => restored += 1,
                _ => break,
            }
        }
        restored
    }

    fn lock(&self) -> MutexGuard<'_, Sessions> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the store, so keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn create(&self, session: Session, now: SystemTime) -> Result<CreateOutcome, StoreError> {
        let mut sessions = self.lock();
        sessions.reclaim_expired(now);
        if sessions.by_id.len() >= self.capacity {
            let retry_after = sessions
                .by_expiry
                .first()
                .map_or(Duration::ZERO, |(expires, _)| {
                    expires.duration_since(now).unwrap_or_default()
                });
            return Ok(CreateOutcome::Full { retry_after });
        }
        sessions.by_expiry.insert((session.expires, session.id));
        if let Some(old) = sessions.by_id.insert(session.id, session) {
            // Ids carry 80 random bits; a collision means a broken RNG. Keep the index exact.
            sessions.by_expiry.remove(&(old.expires, old.id));
        }
        Ok(CreateOutcome::Created)
    }

    fn get(&self, id: SessionId, now: SystemTime) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().live(id, now).cloned())
    }

    fn replace(
        &self,
        id: SessionId,
        if_match: &EntityTagList,
        version: Version,
        now: SystemTime,
    ) -> Result<ReplaceOutcome, StoreError> {
        let mut sessions = self.lock();
        let Some(current) = sessions.live(id, now) else {
            return Ok(ReplaceOutcome::NotFound);
        };
        if !if_match.matches(&current.etag) {
            return Ok(ReplaceOutcome::PreconditionFailed(current.clone()));
        }
        let Some(session) = sessions.by_id.get_mut(&id) else {
            return Ok(ReplaceOutcome::NotFound);
        };
        session.payload = version.payload;
        session.etag = version.etag;
        session.last_modified = version.last_modified;
        Ok(ReplaceOutcome::Replaced(session.clone()))
    }

    fn delete(&self, id: SessionId, now: SystemTime) -> Result<bool, StoreError> {
        let mut sessions = self.lock();
        let Some(session) = sessions.by_id.remove(&id) else {
            return Ok(false);
        };
        sessions.by_expiry.remove(&(session.expires, id));
        if session.is_expired(now) {
            sessions.expired_total += 1;
            return Ok(false);
        }
        Ok(true)
    }

    fn expired_total(&self) -> u64 {
        self.lock().expired_total
    }

    fn live_count(&self, now: SystemTime) -> Result<usize, StoreError> {
        let mut sessions = self.lock();
        sessions.reclaim_expired(now);
        Ok(sessions.by_id.len())
    }

    fn reclaim_expired(&self, now: SystemTime) -> Result<usize, StoreError> {
        Ok(self.lock().reclaim_expired(now))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::entropy::SystemEntropy;
    use crate::etag::EntityTagList;

    const TTL: Duration = Duration::from_secs(120);

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn session(now: SystemTime) -> Session {
        Session::create(Bytes::from_static(b"hello"), now, TTL, &SystemEntropy).unwrap()
    }

    #[test]
    fn full_store_refuses_without_evicting() {
        let store = MemoryStore::new(2);
        let (a, b) = (session(start()), session(start() + Duration::from_secs(10)));
        assert_eq!(
            store.create(a.clone(), start()).unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(
            store.create(b.clone(), start()).unwrap(),
            CreateOutcome::Created
        );
        let later = start() + Duration::from_secs(20);
        assert_eq!(
            store.create(session(later), later).unwrap(),
            CreateOutcome::Full {
                retry_after: Duration::from_secs(100)
            }
        );
        assert_eq!(store.get(a.id, later).unwrap(), Some(a));
        assert_eq!(store.get(b.id, later).unwrap(), Some(b));
    }

    #[test]
    fn expiry_frees_room_and_memory() {
        let store = MemoryStore::new(1);
        store.create(session(start()), start()).unwrap();
        let after = start() + TTL;
        assert_eq!(store.reclaim_expired(after).unwrap(), 1);
        assert_eq!(store.live_count(after).unwrap(), 0);
        assert_eq!(
            store.create(session(after), after).unwrap(),
            CreateOutcome::Created
        );
    }

    #[test]
    fn expired_sessions_are_invisible_before_reclamation() {
        let store = MemoryStore::new(10);
        let s = session(start());
        store.create(s.clone(), start()).unwrap();
        let after = start() + TTL;
        assert_eq!(store.get(s.id, after).unwrap(), None);
        assert!(!store.delete(s.id, after).unwrap());
        let version = Session::next_version(s.id, Bytes::new(), after, &SystemEntropy).unwrap();
        assert_eq!(
            store
                .replace(s.id, &EntityTagList::Any, version, after)
                .unwrap(),
            ReplaceOutcome::NotFound
        );
    }

    #[test]
    fn replace_checks_the_current_tag() {
        let store = MemoryStore::new(10);
        let s = session(start());
        store.create(s.clone(), start()).unwrap();
        let stale = EntityTagList::Tags(vec!["nope".to_owned()]);
        let version = Session::next_version(s.id, Bytes::new(), start(), &SystemEntropy).unwrap();
        assert_eq!(
            store
                .replace(s.id, &stale, version.clone(), start())
                .unwrap(),
            ReplaceOutcome::PreconditionFailed(s.clone())
        );
        let current = EntityTagList::Tags(vec![s.etag.opaque().to_owned()]);
        let ReplaceOutcome::Replaced(updated) = store
            .replace(s.id, &current, version.clone(), start())
            .unwrap()
        else {
            panic!("expected a replace");
        };
        assert_eq!(updated.etag, version.etag);
        assert_eq!(updated.expires, s.expires);
    }

    #[test]
    fn delete_removes_from_both_indexes() {
        let store = MemoryStore::new(1);
        let s = session(start());
        store.create(s.clone(), start()).unwrap();
        assert!(store.delete(s.id, start()).unwrap());
        assert!(!store.delete(s.id, start()).unwrap());
        assert_eq!(store.live_count(start()).unwrap(), 0);
        assert_eq!(store.reclaim_expired(start() + TTL).unwrap(), 0);
    }
}
