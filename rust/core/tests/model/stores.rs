//! Stores for the model beyond the memory store: the Redis store's clock, and broken stores
//! that the model must refute.

use std::time::{Duration, SystemTime};

use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use synapse_rendezvous_core::store::{Action, Executed, Maintenance, Operation, Outcome};
use synapse_rendezvous_core::{EntityTagList, MemoryStore, Session, SessionId, Store, StoreError};

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
    /// Keeps the previous `Last-Modified` on writes.
    KeepsLastModified,
    /// Keeps the old tag on writes of the same bytes (Synapse's weakness).
    TagsByPayload,
}

impl Faulty {
    /// The live session `id`, as the inner store has it at `now`.
    fn current(&self, id: SessionId, now: SystemTime) -> Result<Option<Session>, StoreError> {
        let read = Operation {
            admission: None,
            action: Action::Read {
                id,
                if_none_match: None,
            },
        };
        Ok(match self.inner.execute(&read, now)?.outcome {
            Outcome::Found(session) => Some(session),
            _ => None,
        })
    }
}

impl Store for Faulty {
    fn execute(&self, operation: &Operation, now: SystemTime) -> Result<Executed, StoreError> {
        let Action::Replace {
            id,
            if_match,
            payload,
            etag,
        } = &operation.action
        else {
            return self.inner.execute(operation, now);
        };
        let mut corrupted = operation.clone();
        let mut at = now;
        match (self.fault, self.current(*id, now)?) {
            (Fault::IgnoresPrecondition, _) => {
                corrupted.action = Action::Replace {
                    id: *id,
                    if_match: EntityTagList::Any,
                    payload: payload.clone(),
                    etag: etag.clone(),
                };
            }
            // The store stamps a write with its `now`: an older one keeps the old time.
            (Fault::KeepsLastModified, Some(current)) => at = current.last_modified,
            (Fault::TagsByPayload, Some(current)) if current.payload == payload => {
                corrupted.action = Action::Replace {
                    id: *id,
                    if_match: if_match.clone(),
                    payload: payload.clone(),
                    etag: current.etag,
                };
            }
            _ => {}
        }
        self.inner.execute(&corrupted, at)
    }

    fn maintain(&self, now: SystemTime) -> Result<Maintenance, StoreError> {
        self.inner.maintain(now)
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
