//! The Redis store when Redis is not there: down at startup, stopped, restarted, frozen.
//! Every operation must fail within about the configured timeout, never hang, and the same
//! store must serve again once Redis is back, without anyone reconnecting it by hand.

// Helpers are not `#[test]` functions, which clippy's allow-unwrap-in-tests does not reach.
// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]

mod redis_support;

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use redis_support::{
    config, create, delete, new_session, read, replace, run, store, url, LinkedRedis, RedisServer,
    Watchdog, LIMIT,
};
use synapse_rendezvous_core::store::{Action, Executed, Maintenance, Outcome};
use synapse_rendezvous_core::{Backend, Config, EntityTagList, Store, StoreError};

/// A store on `port` whose calls time out after `timeout`.
fn store_with_timeout(port: u16, prefix: &str, timeout: Duration) -> LinkedRedis {
    LinkedRedis::new(&url(port), &config(prefix, timeout), 10, false)
}

/// Asserts that `op` fails within the timeout plus a second.
fn fails_in_time<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    op: impl FnOnce() -> Result<T, StoreError>,
) {
    let started = Instant::now();
    let result = op();
    let took = started.elapsed();
    assert!(
        matches!(
            result,
            Err(StoreError::Timeout | StoreError::Unavailable(_))
        ),
        "{what}: expected a timeout or an outage, got {result:?}"
    );
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
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{what}: still failing 5 s after Redis came back: {e}"),
        }
    }
}

/// Each kind of operation, and maintenance, fails within the timeout.
fn every_call_fails_in_time(store: &LinkedRedis, timeout: Duration) {
    let now = SystemTime::now();
    let id = new_session(b"").id;
    fails_in_time("read", timeout, || run(store, read(id), now));
    fails_in_time("create", timeout, || {
        run(store, Action::Create(new_session(b"during")), now)
    });
    fails_in_time("replace", timeout, || {
        run(store, replace(id, EntityTagList::Any, b"x"), now)
    });
    fails_in_time("delete", timeout, || run(store, delete(id), now));
    fails_in_time("maintain", timeout, || store.maintain(now));
}

#[test]
fn outage_fails_fast_and_service_resumes_by_itself() {
    let _watchdog = Watchdog::arm("outage_fails_fast_and_service_resumes_by_itself", LIMIT);
    let timeout = Duration::from_millis(300);
    let server = RedisServer::start();
    let port = server.port();
    let store = store_with_timeout(port, "out:", timeout);
    let before = new_session(b"before");
    create(&store, &before, SystemTime::now());

    server.stop();
    every_call_fails_in_time(&store, timeout);

    let _server = RedisServer::start_on(port);
    // The new server starts empty (no persistence), and the same store serves it.
    let read_again = recovers("read", || run(&store, read(before.id), SystemTime::now()));
    assert_eq!(read_again, Executed::only(Outcome::NotFound));
    for _ in 0..8 {
        assert_eq!(
            store.maintain(SystemTime::now()).unwrap(),
            Maintenance {
                expired: 0,
                live: 0,
                discarded: 0
            }
        );
    }
    let after = new_session(b"after");
    create(&store, &after, SystemTime::now());
    let found = run(&store, read(after.id), SystemTime::now()).unwrap();
    assert!(matches!(found.outcome, Outcome::Found(_)), "{found:?}");
}

#[test]
fn restart_between_requests_fails_no_read() {
    let _watchdog = Watchdog::arm("restart_between_requests_fails_no_read", LIMIT);
    let server = RedisServer::start();
    let port = server.port();
    let store = store(port, "restart:", 10);
    let s = new_session(b"before");
    create(&store, &s, SystemTime::now());
    server.stop();
    let _server = RedisServer::start_on(port);
    // The connection is stale now: a read finds out on its first try and is sent again on
    // a new connection, so that no read fails.
    for _ in 0..8 {
        let read_again = run(&store, read(s.id), SystemTime::now()).unwrap();
        assert_eq!(read_again, Executed::only(Outcome::NotFound));
    }
}

#[test]
fn unresponsive_redis_times_out() {
    let _watchdog = Watchdog::arm("unresponsive_redis_times_out", LIMIT);
    let timeout = Duration::from_millis(300);
    let server = RedisServer::start();
    let store = store_with_timeout(server.port(), "frozen:", timeout);
    let s = new_session(b"frozen");
    create(&store, &s, SystemTime::now());
    server.freeze(true);
    every_call_fails_in_time(&store, timeout);
    server.freeze(false);
    let found = recovers("read", || run(&store, read(s.id), SystemTime::now()));
    assert!(matches!(found.outcome, Outcome::Found(_)), "{found:?}");
    // The create that timed out had been sent: Redis may carry it out once it runs again
    // (its client got a 503 and never learnt the session), so one or two are live.
    let live = store.maintain(SystemTime::now()).unwrap().live;
    assert!((1..=2).contains(&live), "{live} live sessions");
}

#[test]
fn redis_down_at_startup_is_not_an_error() {
    let _watchdog = Watchdog::arm("redis_down_at_startup_is_not_an_error", LIMIT);
    let timeout = Duration::from_millis(300);
    let port = redis_support::free_port();
    // Opening the store needs no server.
    let config_json = serde_json::json!({
        "store": "redis",
        "redis": {"url": url(port), "timeout": "300ms"},
    });
    let config = Config::from_json(&config_json).unwrap();
    assert!(Backend::open(&config, None, SystemTime::now()).is_ok());
    let store = store_with_timeout(port, "late:", timeout);
    let s = new_session(b"late");
    fails_in_time("create", timeout, || {
        run(&store, Action::Create(s.clone()), SystemTime::now())
    });
    let _server = RedisServer::start_on(port);
    let created = recovers("create", || {
        run(&store, Action::Create(s.clone()), SystemTime::now())
    });
    assert!(
        matches!(created.outcome, Outcome::Created(_)),
        "{created:?}"
    );
    let found = run(&store, read(s.id), SystemTime::now()).unwrap();
    assert!(matches!(found.outcome, Outcome::Found(_)), "{found:?}");
}

#[test]
fn malformed_urls_are_refused() {
    for bad in ["", "http://localhost/", "redis://[::1", "not a url"] {
        let result = synapse_rendezvous_core::store::redis::Target::parse(bad);
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{bad:?}: {result:?}"
        );
        let config = Config::from_json(&serde_json::json!({"store": "redis"})).unwrap();
        let opened = Backend::open(&config, Some(bad), SystemTime::now());
        let error = opened.err().map(|error| error.key);
        assert_eq!(error.as_deref(), Some("redis.url"), "{bad:?}");
    }
}
