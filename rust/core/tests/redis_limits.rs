//! Rate limits and per-client session caps in Redis hold across processes together: two
//! stores on one server (two Synapse processes) draw from the same budgets and quotas.

// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]

mod redis_support;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use redis_support::{
    config, delete, new_session, read, run, store_on_caller_clock, url, LinkedRedis, RedisServer,
    Watchdog, LIMIT, TTL,
};
use synapse_rendezvous_core::rate_limit::{BucketConfig, ClientKey, Limit};
use synapse_rendezvous_core::store::{Action, Admission, NewSession, Operation, Outcome, Quota};
use synapse_rendezvous_core::{Store, StoreError};

const CREATES: BucketConfig = BucketConfig {
    per_second: 0.5,
    burst: 3,
};

fn client(address: &str) -> ClientKey {
    ClientKey::new(address.parse::<IpAddr>().unwrap())
}

/// Whole seconds, an hour ahead of the real clock, so that Redis's own key expiry never
/// ends a session or a bucket before the test's clock does.
fn start() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs() + 3600)
}

/// Two processes' stores on one server, on the test's clock.
fn two_stores(server: &RedisServer, prefix: &str) -> (LinkedRedis, LinkedRedis) {
    (
        store_on_caller_clock(server.port(), prefix, 10),
        store_on_caller_clock(server.port(), prefix, 10),
    )
}

/// A create by `client`, drawing from its create bucket.
fn limited_create(client: ClientKey) -> Operation {
    Operation {
        admission: Some(Admission {
            client,
            limit: Limit::Create,
            bucket: CREATES,
        }),
        action: Action::Create(new_session(b"limited")),
    }
}

fn outcome(store: &LinkedRedis, operation: &Operation, now: SystemTime) -> Outcome {
    store.execute(operation, now).unwrap().outcome
}

#[test]
fn token_buckets_are_shared_between_processes() {
    let _watchdog = Watchdog::arm("token_buckets_are_shared_between_processes", LIMIT);
    let server = RedisServer::start();
    let (first, second) = two_stores(&server, "limits:");
    let alice = client("192.0.2.1");
    let now = start();
    for store in [&first, &second, &first] {
        let created = outcome(store, &limited_create(alice), now);
        assert!(matches!(created, Outcome::Created(_)), "{created:?}");
    }
    assert_eq!(
        outcome(&second, &limited_create(alice), now),
        Outcome::RateLimited {
            retry_after: Duration::from_secs(2)
        }
    );
    // Other clients and the other budget are untouched; time refills.
    let bob = outcome(&second, &limited_create(client("192.0.2.2")), now);
    assert!(matches!(bob, Outcome::Created(_)), "{bob:?}");
    let session_budget = Operation {
        admission: Some(Admission {
            limit: Limit::Session,
            ..limited_create(alice).admission.unwrap()
        }),
        action: read(new_session(b"").id),
    };
    assert_eq!(outcome(&first, &session_budget, now), Outcome::NotFound);
    let later = now + Duration::from_secs(2);
    let refilled = outcome(&first, &limited_create(alice), later);
    assert!(matches!(refilled, Outcome::Created(_)), "{refilled:?}");
}

#[test]
fn session_caps_are_shared_and_released_on_delete_and_expiry() {
    let _watchdog = Watchdog::arm(
        "session_caps_are_shared_and_released_on_delete_and_expiry",
        LIMIT,
    );
    let server = RedisServer::start();
    let (first, second) = two_stores(&server, "caps:");
    let alice = client("2001:db8::1");
    let owned = || NewSession {
        quota: Some(Quota {
            client: alice,
            max: 2,
        }),
        ..new_session(b"owned")
    };
    let now = start();
    let kept = owned();
    let create = |store: &LinkedRedis, new: &NewSession, at| {
        run(store, Action::Create(new.clone()), at).unwrap().outcome
    };
    assert!(matches!(create(&first, &kept, now), Outcome::Created(_)));
    let other = Duration::from_secs(1);
    assert!(matches!(
        create(&second, &owned(), now + other),
        Outcome::Created(_)
    ));
    assert_eq!(
        create(&first, &owned(), now + other),
        Outcome::QuotaExceeded {
            retry_after: TTL - other
        }
    );
    // Another address in the same /64 is the same client.
    let neighbour = NewSession {
        quota: Some(Quota {
            client: client("2001:db8::ffff"),
            max: 2,
        }),
        ..new_session(b"neighbour")
    };
    assert!(matches!(
        create(&second, &neighbour, now + other),
        Outcome::QuotaExceeded { .. }
    ));
    assert_eq!(
        run(&second, delete(kept.id), now + other).unwrap().outcome,
        Outcome::Deleted
    );
    assert!(matches!(
        create(&first, &owned(), now + other),
        Outcome::Created(_)
    ));
    // Ended sessions no longer count.
    let ended = now + other + TTL;
    assert!(matches!(
        create(&second, &owned(), ended),
        Outcome::Created(_)
    ));
    assert!(matches!(
        create(&first, &owned(), ended),
        Outcome::Created(_)
    ));
}

#[test]
fn limits_fail_cleanly_when_redis_is_down() {
    let _watchdog = Watchdog::arm("limits_fail_cleanly_when_redis_is_down", LIMIT);
    let server = RedisServer::start();
    let port = server.port();
    server.stop();
    let timeout = Duration::from_millis(300);
    let store = LinkedRedis::new(&url(port), &config("down:", timeout), 10, true);
    let result = store.execute(&limited_create(client("192.0.2.1")), start());
    assert!(
        matches!(
            result,
            Err(StoreError::Timeout | StoreError::Unavailable(_))
        ),
        "{result:?}"
    );
}
