//! What clients get when the store fails: 503 with `Retry-After: 1` for an outage, a
//! timeout or an overload (all pass within a second or so), 500 for corrupt data, with the
//! store's error attached for the log.
// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]
#![cfg(test)]

#[cfg(test)]
mod support;

use std::sync::Arc;
use std::time::SystemTime;

use http::{Method, StatusCode};
use support::{session_path, Harness};
use synapse_rendezvous_core::store::{Executed, Maintenance, Operation};
use synapse_rendezvous_core::{Config, Problem, Store, StoreError, CREATE_PATH};

/// Fails every call with the same error.
struct FailingStore(StoreError);

impl Store for FailingStore {
    fn execute(&self, _: &Operation, _: SystemTime) -> Result<Executed, StoreError> {
        Err(self.0.clone())
    }

    fn maintain(&self, _: SystemTime) -> Result<Maintenance, StoreError> {
        Err(self.0.clone())
    }
}

const SOME_ID: &str = "01KQ3ZZZZZZZZZZZZZZZZZZZZZ";

#[test]
fn store_failures_are_503_with_retry_after_or_500_when_corrupt() {
    for (error, status) in [
        (StoreError::Unavailable("down".to_owned()), 503),
        (StoreError::Timeout, 503),
        (StoreError::Overloaded, 503),
        (StoreError::Corrupt("garbage".to_owned()), 500),
    ] {
        let h = Harness::with_store(Config::default(), Arc::new(FailingStore(error.clone())));
        let path = session_path(SOME_ID);
        let replies = [
            h.post("hello"),
            h.get(&path, None),
            h.put(&path, "x", Some("*")),
            h.delete(&path),
        ];
        for reply in &replies {
            reply
                .assert_error(status, "M_UNKNOWN")
                .assert_common_headers();
            let retry_after = (status == 503).then_some("1");
            assert_eq!(reply.header("retry-after"), retry_after, "{error:?}");
            let problem = reply.response.extensions().get::<Problem>();
            assert_eq!(problem, Some(&Problem(error.to_string())), "{error:?}");
        }
        assert_eq!(h.service.maintain(), Err(error.clone()));
        let kind = match error {
            StoreError::Unavailable(_) => 0,
            StoreError::Timeout => 1,
            StoreError::Overloaded => 2,
            StoreError::Corrupt(_) => 3,
        };
        assert_eq!(h.metrics().store_errors[kind], 4, "{error:?}");
    }
}

#[test]
fn requests_that_need_no_store_are_answered_while_it_fails() {
    let h = Harness::with_store(
        Config::default(),
        Arc::new(FailingStore(StoreError::Timeout)),
    );
    h.request(Method::POST, CREATE_PATH)
        .sized("no type")
        .send()
        .assert_error(400, "M_MISSING_PARAM");
    h.request(Method::OPTIONS, CREATE_PATH)
        .send()
        .assert_status(StatusCode::NO_CONTENT);
    h.get(&session_path("not-an-id"), None)
        .assert_error(404, "M_NOT_FOUND");
    h.request(Method::PATCH, &session_path(SOME_ID))
        .send()
        .assert_error(405, "M_UNRECOGNIZED");
    assert_eq!(h.metrics().latency_count, 0);
}
