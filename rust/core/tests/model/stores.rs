//! Stores for the model beyond the memory store: the Redis store's clock, and broken stores
//! that the model must refute.

use std::time::{Duration, SystemTime};

use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use synapse_rendezvous_core::{
    CreateOutcome, EntityTagList, MemoryStore, ReplaceOutcome, Session, SessionId, Store,
    StoreError, Version,
};

use crate::checks::whole_seconds;
use crate::run::run_ops;
use crate::strategies::ops_strategy;
use crate::system::{fixed_start, StoreFactory};

/// Whole seconds, a day ahead of the real clock, so that Redis's own key expiry (which
/// follows its real clock) never removes a session before the manual clock ends it.
pub(crate) fn redis_start() -> SystemTime {
    whole_seconds(SystemTime::now() + Duration::from_secs(86_400))
}

/// A memory store with one deliberate bug.
pub(crate) struct Faulty {
    pub(crate) inner: MemoryStore,
    pub(crate) fault: Fault,
}

#[derive(Clone, Copy)]
pub(crate) enum Fault {
    /// Writes whatever `If-Match` says.
    IgnoresPrecondition,
    /// Keeps the creation time as `Last-Modified` on writes.
    KeepsLastModified,
    /// Keeps the old tag on writes of the same bytes (Synapse's weakness).
    TagsByPayload,
}

impl Store for Faulty {
    fn create(&self, session: Session, now: SystemTime) -> Result<CreateOutcome, StoreError> {
        self.inner.create(session, now)
    }

    fn get(&self, id: SessionId, now: SystemTime) -> Result<Option<Session>, StoreError> {
        self.inner.get(id, now)
    }

    fn replace(
        &self,
        id: SessionId,
        if_match: &EntityTagList,
        mut version: Version,
        now: SystemTime,
    ) -> Result<ReplaceOutcome, StoreError> {
        let current = self.inner.get(id, now)?;
        match (self.fault, current) {
            (Fault::IgnoresPrecondition, _) => {
                return self.inner.replace(id, &EntityTagList::Any, version, now)
            }
            (Fault::KeepsLastModified, Some(current)) => {
                version.last_modified = current.last_modified;
            }
            (Fault::TagsByPayload, Some(current)) if current.payload == version.payload => {
                version.etag = current.etag;
            }
            _ => {}
        }
        self.inner.replace(id, if_match, version, now)
    }

    fn delete(&self, id: SessionId, now: SystemTime) -> Result<bool, StoreError> {
        self.inner.delete(id, now)
    }

    fn live_count(&self, now: SystemTime) -> Result<usize, StoreError> {
        self.inner.live_count(now)
    }

    fn reclaim_expired(&self, now: SystemTime) -> Result<usize, StoreError> {
        self.inner.reclaim_expired(now)
    }

    fn expired_total(&self) -> u64 {
        self.inner.expired_total()
    }
}

/// Whether random runs find a sequence that the model refutes on stores from `factory`.
pub(crate) fn refuted(factory: StoreFactory<'_>) -> bool {
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    };
    TestRunner::new(config)
        .run(&ops_strategy(80), |ops| {
            run_ops(factory, fixed_start(), &ops)
                .map(drop)
                .map_err(TestCaseError::fail)
        })
        .is_err()
}
