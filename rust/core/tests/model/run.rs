//! Running sequences of operations against the system and the model side by side.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use synapse_rendezvous_core::CREATE_PATH;

use crate::checks::describe;
use crate::expected::{Expected, NOT_ALLOWED, NOT_FOUND, UNRECOGNIZED};
use crate::ops::{Advance, Op, OtherMethod, Pick, Upload};
use crate::reference::{upload_error, Model, ModelRoute, ModelSession, Precondition};
use crate::requests::{plain_request, upload_request};
use crate::strategies::ops_strategy;
use crate::system::{Harness, StoreFactory, CAPACITY, TTL};

pub(crate) struct Run {
    pub(crate) harness: Harness,
    pub(crate) model: Model,
    /// What kinds of answer the sequence got, so that a test can tell it covered them all.
    pub(crate) seen: Vec<&'static str>,
}

impl Run {
    pub(crate) fn now(&self) -> SystemTime {
        use synapse_rendezvous_core::Clock as _;
        self.harness.clock.now()
    }

    /// Runs one operation and checks its response; `Err` says what was wrong.
    pub(crate) fn step(&mut self, op: &Op) -> Result<(), String> {
        let now = self.now();
        let (request, expected) = match op {
            Op::Advance(advance) => {
                self.advance(advance);
                return Ok(());
            }
            Op::Maintain => return self.check_maintenance(),
            Op::Create(upload) => {
                let request = upload_request(Method::POST, CREATE_PATH, upload, None);
                (request, self.expect_create(upload, now))
            }
            Op::Get {
                target,
                condition,
                head,
            } => {
                let (path, route) = self.model.resolve_target(target);
                let (value, precondition) = self.model.resolve_condition(condition, &route);
                let method = if *head { Method::HEAD } else { Method::GET };
                let expected = match route {
                    ModelRoute::Create => NOT_ALLOWED,
                    ModelRoute::Unknown => UNRECOGNIZED,
                    ModelRoute::Session(id) => match id.and_then(|id| self.model.live(&id, now)) {
                        None => NOT_FOUND,
                        // A malformed If-None-Match cannot name the current version.
                        Some(s) if precondition.matches(&s.etag) => {
                            Expected::NotModified(s.clone())
                        }
                        Some(s) => Expected::Payload(s.clone(), *head),
                    },
                };
                (plain_request(method, &path, value), expected)
            }
            Op::Put {
                target,
                condition,
                upload,
            } => {
                let (path, route) = self.model.resolve_target(target);
                let (value, precondition) = self.model.resolve_condition(condition, &route);
                let expected = self.expect_put(upload, &route, &precondition, now);
                (upload_request(Method::PUT, &path, upload, value), expected)
            }
            Op::Delete(target) => {
                let (path, route) = self.model.resolve_target(target);
                let expected = match route {
                    ModelRoute::Create => NOT_ALLOWED,
                    ModelRoute::Unknown => UNRECOGNIZED,
                    ModelRoute::Session(id) => {
                        match id.filter(|id| self.model.live(id, now).is_some()) {
                            Some(_) => Expected::Deleted,
                            None => NOT_FOUND,
                        }
                    }
                };
                (plain_request(Method::DELETE, &path, None), expected)
            }
            Op::Other(target, method) => {
                let (path, route) = self.model.resolve_target(target);
                let expected = match (route, method) {
                    (ModelRoute::Unknown, _) => UNRECOGNIZED,
                    (_, OtherMethod::Options) => Expected::Preflight,
                    // A create without any header.
                    (ModelRoute::Create, OtherMethod::Post) => {
                        Expected::Error(StatusCode::BAD_REQUEST, "M_MISSING_PARAM")
                    }
                    _ => NOT_ALLOWED,
                };
                (plain_request(method.method(), &path, None), expected)
            }
        };
        let response = self.harness.service.handle(&request);
        self.seen.push(expected.label());
        let context = || describe(&request, &response);
        self.check(&request, &response, expected, now)
            .map_err(|why| format!("{why}\n{}", context()))?;
        self.check_expired_count(false)
    }

    pub(crate) fn expect_create(&self, upload: &Upload, now: SystemTime) -> Expected {
        if let Some((status, errcode)) = upload_error(upload) {
            return Expected::Error(status, errcode);
        }
        if self.model.live_count(now) >= CAPACITY {
            let oldest = self
                .model
                .sessions
                .values()
                .filter(|s| now < s.expires)
                .map(|s| s.expires)
                .min()
                .unwrap();
            return Expected::Full(oldest.duration_since(now).unwrap());
        }
        Expected::Created
    }

    pub(crate) fn expect_put(
        &self,
        upload: &Upload,
        route: &ModelRoute,
        precondition: &Precondition,
        now: SystemTime,
    ) -> Expected {
        let id = match route {
            ModelRoute::Create => return NOT_ALLOWED,
            ModelRoute::Unknown => return UNRECOGNIZED,
            ModelRoute::Session(id) => id,
        };
        if let Some((status, errcode)) = upload_error(upload) {
            return Expected::Error(status, errcode);
        }
        match precondition {
            Precondition::Absent => {
                return Expected::Error(StatusCode::BAD_REQUEST, "M_MISSING_PARAM")
            }
            Precondition::Malformed => {
                return Expected::Error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM")
            }
            Precondition::Any | Precondition::Tags(_) => {}
        }
        match id.as_deref().and_then(|id| self.model.live(id, now)) {
            None => NOT_FOUND,
            Some(s) if precondition.matches(&s.etag) => Expected::Accepted(ModelSession {
                payload: upload.body.clone(),
                etag: String::new(),
                expires: s.expires,
                last_modified: now,
            }),
            Some(s) => Expected::PreconditionFailed(s.clone()),
        }
    }

    pub(crate) fn advance(&mut self, advance: &Advance) {
        let now = self.now();
        let expiry = |index: Pick| {
            let id = self.model.pick(index)?;
            let expires = self.model.sessions.get(id)?.expires;
            (expires > now).then_some(expires)
        };
        let target = match advance {
            Advance::Millis(ms) => now + Duration::from_millis(*ms),
            Advance::Seconds(s) => now + Duration::from_secs(*s),
            Advance::PastTtl(ms) => now + TTL + Duration::from_millis(*ms),
            Advance::ToExpiry(index) => expiry(*index).unwrap_or(now),
            Advance::JustBeforeExpiry(index) => {
                expiry(*index).map_or(now, |at| (at - Duration::from_millis(1)).max(now))
            }
        };
        self.harness.clock.set(target);
    }

    /// What the module's periodic task does: the store must count exactly the model's live
    /// sessions, and have removed (and counted) every ended one by now. Only at these
    /// points, so that ended sessions also stay in the store between them, as they do
    /// between two runs of the task.
    pub(crate) fn check_maintenance(&self) -> Result<(), String> {
        let found = self.harness.service.maintain();
        let live = self.model.live_count(self.now());
        ensure!(
            found.as_ref().is_ok_and(|found| found.live == live),
            "maintenance found {found:?}, the model has {live} live sessions"
        );
        self.check_expired_count(true)
    }

    /// `sessions_expired` counts each session that ended without being deleted first, once,
    /// when the store removes it: never more than have ended, and all of them right after a
    /// maintenance run.
    pub(crate) fn check_expired_count(&self, all_removed: bool) -> Result<(), String> {
        let counted = self.harness.service.metrics().sessions_expired;
        let ended = self.model.ended_count(self.now()) as u64;
        ensure!(
            counted == ended || (!all_removed && counted < ended),
            "sessions_expired is {counted}, the model has {ended} ended sessions"
        );
        Ok(())
    }
}

/// Runs `ops` from scratch on a fresh store; `Err` names the first operation whose
/// response the model refutes.
pub(crate) fn run_ops(
    factory: StoreFactory<'_>,
    start: SystemTime,
    ops: &[Op],
) -> Result<Vec<&'static str>, String> {
    let mut run = Run {
        harness: Harness::new(factory(CAPACITY), start),
        model: Model::default(),
        seen: Vec::new(),
    };
    run.check_maintenance()?;
    for (i, op) in ops.iter().enumerate() {
        run.step(op)
            .map_err(|why| format!("operation {i} ({op:?}): {why}"))?;
    }
    run.check_maintenance()
        .map_err(|why| format!("after the last operation: {why}"))?;
    Ok(run.seen)
}

/// Checks `cases` random sequences of at most `max_len` operations against the model, each
/// on a fresh store from `factory`, with the clock starting at `start()`. Returns how often
/// each kind of answer was seen.
pub(crate) fn check_model(
    name: &str,
    cases: u32,
    max_len: usize,
    factory: StoreFactory<'_>,
    start: fn() -> SystemTime,
) -> BTreeMap<&'static str, usize> {
    let seen = RefCell::new(BTreeMap::new());
    let config = ProptestConfig {
        cases,
        // Regressions live as #[test]s below rather than in files beside the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&ops_strategy(max_len), |ops| {
        let labels = run_ops(factory, start(), &ops).map_err(TestCaseError::fail)?;
        let mut seen = seen.borrow_mut();
        for label in labels {
            *seen.entry(label).or_default() += 1;
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{name}: the model refutes the core\n{failure}");
    }
    seen.into_inner()
}

/// The number of cases: `PROPTEST_CASES` if set, else `default`.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}
