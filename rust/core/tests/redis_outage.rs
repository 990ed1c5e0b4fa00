//! The Redis store when Redis is not there: down at startup, stopped, restarted, frozen.
//! Every operation must fail within about the configured timeout, never hang, and the same
//! store must serve again once Redis is back.

// Helpers are not `#[test]` functions, which clippy's allow-unwrap-in-tests does not reach.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_support;

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use redis_support::{config, fresh, store, url, RedisServer, Watchdog, LIMIT};
use synapse_rendezvous_core::{
    CreateOutcome, EntityTagList, RedisStore, Session, Store, StoreError, SystemEntropy,
};

/// Asserts that `op` fails within the timeout plus a second.
fn fails_in_time<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    op: impl FnOnce() -> Result<T, StoreError>,
) {
    let started = Instant::now();
    let result = op();
    let took = started.elapsed();
    assert!(result.is_err(), "{what}: expected an error, got {result:?}");
    assert!(
        took <= timeout + Duration::from_secs(1),
        "{what}: took {took:?} to fail ({result:?})"
    );
}

/// Polls `op` until it succeeds, for at most five seconds.
fn recovers<T>(what: &str, mut op: impl FnMut() -> Result<T, StoreError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match op() {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{what}: still failing 5 s after Redis came back: {e}"),
        }
    }
}

#[test]
fn outage_fails_fast_and_service_resumes_by_itself() {
    let _watchdog = Watchdog::arm("outage_fails_fast_and_service_resumes_by_itself", LIMIT);
    let timeout = Duration::from_millis(300);
    let server = RedisServer::start();
    let port = server.port();
    let store = RedisStore::connect(&url(port), &config("out:", timeout), 10).unwrap();
    let s = fresh(b"before");
    assert_eq!(
        store.create(s.clone(), SystemTime::now()).unwrap(),
        CreateOutcome::Created
    );
    // Several pooled connections, all of which go stale with the server.
    thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| store.get(s.id, SystemTime::now()).unwrap());
        }
    });

    server.stop();
    let now = SystemTime::now();
    let v = Session::next_version(s.id, Bytes::new(), now, &SystemEntropy).unwrap();
    fails_in_time("get", timeout, || store.get(s.id, now));
    fails_in_time("create", timeout, || store.create(fresh(b"during"), now));
    fails_in_time("replace", timeout, || {
        store.replace(s.id, &EntityTagList::Any, v, now)
    });
    fails_in_time("delete", timeout, || store.delete(s.id, now));
    fails_in_time("live_count", timeout, || store.live_count(now));
    fails_in_time("reclaim", timeout, || store.reclaim_expired(now));

    let _server = RedisServer::start_on(port);
    // The new server starts empty (no persistence), and the same store serves it.
    assert_eq!(recovers("get", || store.get(s.id, SystemTime::now())), None);
    for _ in 0..8 {
        assert_eq!(store.live_count(SystemTime::now()).unwrap(), 0);
    }
    let after = fresh(b"after");
    assert_eq!(
        store.create(after.clone(), SystemTime::now()).unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(store.get(after.id, SystemTime::now()).unwrap(), Some(after));
}

#[test]
fn restart_between_requests_fails_no_request() {
    let _watchdog = Watchdog::arm("restart_between_requests_fails_no_request", LIMIT);
    let server = RedisServer::start();
    let port = server.port();
    let store = store(port, "restart:", 10);
    let s = fresh(b"before");
    store.create(s.clone(), SystemTime::now()).unwrap();
    let barrier = Barrier::new(4);
    thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                barrier.wait();
                store.get(s.id, SystemTime::now()).unwrap()
            });
        }
    });
    server.stop();
    let _server = RedisServer::start_on(port);
    // Every pooled connection is stale now; none of them may fail a request.
    for _ in 0..8 {
        assert_eq!(store.get(s.id, SystemTime::now()).unwrap(), None);
    }
}

#[test]
fn unresponsive_redis_times_out() {
    let _watchdog = Watchdog::arm("unresponsive_redis_times_out", LIMIT);
    let timeout = Duration::from_millis(300);
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), &config("frozen:", timeout), 10).unwrap();
    let s = fresh(b"frozen");
    store.create(s.clone(), SystemTime::now()).unwrap();
    server.freeze(true);
    let now = SystemTime::now();
    fails_in_time("get", timeout, || store.get(s.id, now));
    fails_in_time("create", timeout, || store.create(fresh(b"x"), now));
    fails_in_time("live_count", timeout, || store.live_count(now));
    server.freeze(false);
    assert_eq!(
        recovers("get", || store.get(s.id, SystemTime::now())),
        Some(s.clone())
    );
    assert_eq!(store.live_count(SystemTime::now()).unwrap(), 1);
}

#[test]
fn redis_down_at_startup_is_not_an_error() {
    let _watchdog = Watchdog::arm("redis_down_at_startup_is_not_an_error", LIMIT);
    let timeout = Duration::from_millis(300);
    let port = redis_support::free_port();
    let store = RedisStore::connect(&url(port), &config("late:", timeout), 10).unwrap();
    let s = fresh(b"late");
    fails_in_time("create", timeout, || {
        store.create(s.clone(), SystemTime::now())
    });
    let _server = RedisServer::start_on(port);
    assert_eq!(
        recovers("create", || store.create(s.clone(), SystemTime::now())),
        CreateOutcome::Created
    );
    assert_eq!(store.get(s.id, SystemTime::now()).unwrap(), Some(s));
}

#[test]
fn malformed_urls_are_refused() {
    for bad in ["", "http://localhost/", "redis://[::1", "not a url"] {
        let result = RedisStore::connect(bad, &config("x:", Duration::from_secs(1)), 1);
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{bad:?}: {result:?}"
        );
    }
}
