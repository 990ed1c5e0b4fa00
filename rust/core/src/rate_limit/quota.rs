//! The cap on live sessions per client: without it one address could hold the whole
//! capacity and refuse QR login to everyone else until its sessions expire.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::{ClientKey, Decision};
use crate::id::SessionId;
use crate::store::StoreError;

/// Counts the live sessions each client created.
pub trait SessionQuota: Send + Sync {
    /// Counts `id` (live until `expires`) against `client` unless it already has `max`
    /// live sessions; then says when its oldest one expires.
    ///
    /// # Errors
    /// [`StoreError`] when a shared quota cannot be reached.
    fn reserve(
        &self,
        client: &ClientKey,
        id: SessionId,
        expires: SystemTime,
        max: usize,
        now: SystemTime,
    ) -> Result<Decision, StoreError>;

    /// Stops counting `id`: it was deleted, or its create failed.
    ///
    /// # Errors
    /// [`StoreError`] when a shared quota cannot be reached.
    fn release(&self, id: SessionId) -> Result<(), StoreError>;

    /// Forgets expired sessions, so that memory stays bounded.
    fn forget_expired(&self, now: SystemTime);
}

/// Session counts in process memory.
#[derive(Debug, Default)]
pub struct MemorySessionQuota {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    by_client: HashMap<ClientKey, BTreeSet<(SystemTime, SessionId)>>,
    owner: HashMap<SessionId, (ClientKey, SystemTime)>,
}

impl Counts {
    fn trim(&mut self, client: &ClientKey, now: SystemTime) {
        let Some(sessions) = self.by_client.get_mut(client) else {
            return;
        };
        while let Some(&(expires, id)) = sessions.first() {
            if expires > now {
                break;
            }
            sessions.pop_first();
            self.owner.remove(&id);
        }
        if sessions.is_empty() {
            self.by_client.remove(client);
        }
    }
}

impl MemorySessionQuota {
    /// An empty quota.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SessionQuota for MemorySessionQuota {
    fn reserve(
        &self,
        client: &ClientKey,
        id: SessionId,
        expires: SystemTime,
        max: usize,
        now: SystemTime,
    ) -> Result<Decision, StoreError> {
        let mut counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        counts.trim(client, now);
        let sessions = counts.by_client.entry(*client).or_default();
        if sessions.len() >= max {
            let oldest = sessions.first().map_or(now, |(expires, _)| *expires);
            return Ok(Decision::Limited {
                retry_after: oldest.duration_since(now).unwrap_or(Duration::ZERO),
            });
        }
        sessions.insert((expires, id));
        counts.owner.insert(id, (*client, expires));
        Ok(Decision::Allowed)
    }

    fn release(&self, id: SessionId) -> Result<(), StoreError> {
        let mut counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((client, expires)) = counts.owner.remove(&id) {
            if let Some(sessions) = counts.by_client.get_mut(&client) {
                sessions.remove(&(expires, id));
                if sessions.is_empty() {
                    counts.by_client.remove(&client);
                }
            }
        }
        Ok(())
    }

    fn forget_expired(&self, now: SystemTime) {
        let mut counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let clients: Vec<ClientKey> = counts.by_client.keys().copied().collect();
        for client in clients {
            counts.trim(&client, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::entropy::SystemEntropy;

    fn start() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn id() -> SessionId {
        SessionId::generate(start(), &SystemEntropy).unwrap()
    }

    fn client() -> ClientKey {
        ClientKey::new("192.0.2.1".parse::<IpAddr>().unwrap())
    }

    #[test]
    fn cap_counts_live_sessions_only() {
        let quota = MemorySessionQuota::new();
        let expires = start() + Duration::from_secs(100);
        let first = id();
        assert_eq!(
            quota.reserve(&client(), first, expires, 2, start()),
            Ok(Decision::Allowed)
        );
        assert_eq!(
            quota.reserve(&client(), id(), expires, 2, start()),
            Ok(Decision::Allowed)
        );
        assert_eq!(
            quota.reserve(&client(), id(), expires, 2, start()),
            Ok(Decision::Limited {
                retry_after: Duration::from_secs(100)
            })
        );
        quota.release(first).unwrap();
        assert_eq!(
            quota.reserve(&client(), id(), expires, 2, start()),
            Ok(Decision::Allowed)
        );
        assert_eq!(
            quota.reserve(
                &client(),
                id(),
                expires + Duration::from_secs(1),
                2,
                expires
            ),
            Ok(Decision::Allowed)
        );
    }

    #[test]
    fn expired_sessions_are_forgotten() {
        let quota = MemorySessionQuota::new();
        quota
            .reserve(
                &client(),
                id(),
                start() + Duration::from_secs(1),
                5,
                start(),
            )
            .unwrap();
        quota.forget_expired(start() + Duration::from_secs(1));
        let counts = quota.inner.lock().unwrap();
        assert!(counts.by_client.is_empty() && counts.owner.is_empty());
    }
}
