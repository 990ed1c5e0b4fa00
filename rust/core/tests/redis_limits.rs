//! Rate limits and per-client session caps in Redis hold across processes together: two
//! limiters on one server (two Synapse processes) draw from the same budgets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_support;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use redis_support::{store, RedisServer, Watchdog, LIMIT};
use synapse_rendezvous_core::rate_limit::{
    BucketConfig, ClientKey, Decision, Limit, RateLimitConfig, RateLimiter, SessionQuota,
};
use synapse_rendezvous_core::{SessionId, SystemEntropy};

fn client(address: &str) -> ClientKey {
    ClientKey::new(address.parse::<IpAddr>().unwrap())
}

fn limits_config() -> RateLimitConfig {
    RateLimitConfig {
        create: BucketConfig {
            per_second: 0.5,
            burst: 3,
        },
        ..RateLimitConfig::default()
    }
}

fn start() -> SystemTime {
    SystemTime::now()
}

#[test]
fn token_buckets_are_shared_between_processes() {
    let _watchdog = Watchdog::arm("token_buckets_are_shared_between_processes", LIMIT);
    let server = RedisServer::start();
    let first = store(server.port(), "limits:", 10).limits(limits_config());
    let second = store(server.port(), "limits:", 10).limits(limits_config());
    let alice = client("192.0.2.1");
    let now = start();
    assert_eq!(
        first.check(Limit::Create, &alice, now),
        Ok(Decision::Allowed)
    );
    assert_eq!(
        second.check(Limit::Create, &alice, now),
        Ok(Decision::Allowed)
    );
    assert_eq!(
        first.check(Limit::Create, &alice, now),
        Ok(Decision::Allowed)
    );
    assert_eq!(
        second.check(Limit::Create, &alice, now),
        Ok(Decision::Limited {
            retry_after: Duration::from_secs(2)
        })
    );
    // Other clients and the other budget are untouched; time refills.
    assert_eq!(
        second.check(Limit::Create, &client("192.0.2.2"), now),
        Ok(Decision::Allowed)
    );
    assert_eq!(
        first.check(Limit::Session, &alice, now),
        Ok(Decision::Allowed)
    );
    let later = now + Duration::from_secs(2);
    assert_eq!(
        first.check(Limit::Create, &alice, later),
        Ok(Decision::Allowed)
    );
}

#[test]
fn session_caps_are_shared_and_released_on_delete() {
    let _watchdog = Watchdog::arm("session_caps_are_shared_and_released_on_delete", LIMIT);
    let server = RedisServer::start();
    let first = store(server.port(), "caps:", 10).limits(limits_config());
    let second = store(server.port(), "caps:", 10).limits(limits_config());
    let alice = client("2001:db8::1");
    let now = start();
    let expires = now + Duration::from_secs(120);
    let id = || SessionId::generate(now, &SystemEntropy).unwrap();
    let kept = id();
    assert_eq!(
        first.reserve(&alice, kept, expires, 2, now),
        Ok(Decision::Allowed)
    );
    assert_eq!(
        second.reserve(&alice, id(), expires, 2, now),
        Ok(Decision::Allowed)
    );
    let Ok(Decision::Limited { retry_after }) = first.reserve(&alice, id(), expires, 2, now) else {
        panic!("the third session should be over the cap");
    };
    assert!(
        retry_after > Duration::from_secs(119) && retry_after <= Duration::from_secs(120),
        "{retry_after:?}"
    );
    second.release(kept).unwrap();
    assert_eq!(
        first.reserve(&alice, id(), expires, 2, now),
        Ok(Decision::Allowed)
    );
    // Expired sessions no longer count.
    assert_eq!(
        first.reserve(&alice, id(), expires + Duration::from_secs(1), 2, expires),
        Ok(Decision::Allowed)
    );
}

#[test]
fn limits_fail_cleanly_when_redis_is_down() {
    let _watchdog = Watchdog::arm("limits_fail_cleanly_when_redis_is_down", LIMIT);
    let server = RedisServer::start();
    let port = server.port();
    server.stop();
    let limits = store(port, "down:", 10).limits(limits_config());
    assert!(limits
        .check(Limit::Create, &client("192.0.2.1"), start())
        .is_err());
}
