//! Rate limits and the per-client session cap, through the public API.
// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]
#![cfg(test)]

#[cfg(test)]
mod support;

use http::{Method, StatusCode};
use support::{Harness, Reply};
use synapse_rendezvous_core::rate_limit::{BucketConfig, RateLimitConfig};
use synapse_rendezvous_core::{Config, CREATE_PATH};

const ALICE: &str = "192.0.2.10";
const BOB: &str = "198.51.100.20";

fn harness(limits: RateLimitConfig) -> Harness {
    Harness::with_config(Config {
        rate_limit: limits,
        ..Config::default()
    })
}

fn create_from(harness: &Harness, address: &str) -> Reply {
    harness
        .request(Method::POST, CREATE_PATH)
        .text("hi")
        .from(address)
        .send()
}

fn get_from(harness: &Harness, url: &str, address: &str) -> Reply {
    harness.request(Method::GET, url).from(address).send()
}

fn created_url(reply: &Reply) -> String {
    reply.json()["url"].as_str().expect("a url").to_owned()
}

#[test]
fn create_flood_from_one_client_is_429_with_retry_after() {
    let harness = harness(RateLimitConfig {
        create: BucketConfig {
            per_second: 0.2,
            burst: 3,
        },
        ..RateLimitConfig::default()
    });
    for _ in 0..3 {
        create_from(&harness, ALICE).assert_status(StatusCode::CREATED);
    }
    let limited = create_from(&harness, ALICE);
    limited
        .assert_error(429, "M_LIMIT_EXCEEDED")
        .assert_common_headers();
    assert_eq!(limited.json()["retry_after_ms"], 5000);
    assert_eq!(limited.header("retry-after"), Some("5"));
    create_from(&harness, BOB).assert_status(StatusCode::CREATED);
    harness.advance(5);
    create_from(&harness, ALICE).assert_status(StatusCode::CREATED);
}

#[test]
fn honest_polling_is_never_limited_by_default() {
    let harness = harness(RateLimitConfig::default());
    let url = created_url(&create_from(&harness, ALICE));
    // Two devices behind one address polling once a second each, for the whole TTL.
    for _ in 0..120 {
        get_from(&harness, &url, ALICE).assert_status(StatusCode::OK);
        get_from(&harness, &url, ALICE).assert_status(StatusCode::OK);
        harness.advance(1);
    }
}

#[test]
fn session_request_flood_is_limited_per_client() {
    let harness = harness(RateLimitConfig {
        session: BucketConfig {
            per_second: 1.0,
            burst: 5,
        },
        ..RateLimitConfig::default()
    });
    let url = created_url(&create_from(&harness, ALICE));
    for _ in 0..5 {
        get_from(&harness, &url, ALICE).assert_status(StatusCode::OK);
    }
    get_from(&harness, &url, ALICE).assert_error(429, "M_LIMIT_EXCEEDED");
    get_from(&harness, &url, BOB).assert_status(StatusCode::OK);
}

#[test]
fn live_sessions_per_client_are_capped_and_delete_frees_a_slot() {
    let harness = harness(RateLimitConfig {
        max_sessions_per_ip: 2,
        ..RateLimitConfig::default()
    });
    let first = created_url(&create_from(&harness, ALICE));
    create_from(&harness, ALICE).assert_status(StatusCode::CREATED);
    let capped = create_from(&harness, ALICE);
    capped.assert_error(429, "M_LIMIT_EXCEEDED");
    assert_eq!(capped.json()["retry_after_ms"], 120_000);
    create_from(&harness, BOB).assert_status(StatusCode::CREATED);
    harness
        .request(Method::DELETE, &first)
        .from(ALICE)
        .send()
        .assert_status(StatusCode::NO_CONTENT);
    create_from(&harness, ALICE).assert_status(StatusCode::CREATED);
}

#[test]
fn expiry_frees_the_per_client_cap() {
    let harness = harness(RateLimitConfig {
        max_sessions_per_ip: 1,
        ..RateLimitConfig::default()
    });
    create_from(&harness, ALICE).assert_status(StatusCode::CREATED);
    create_from(&harness, ALICE).assert_error(429, "M_LIMIT_EXCEEDED");
    harness.advance(120);
    create_from(&harness, ALICE).assert_status(StatusCode::CREATED);
}

#[test]
fn a_create_refused_for_capacity_does_not_use_up_the_cap() {
    let harness = Harness::with_config(Config {
        capacity: 1,
        rate_limit: RateLimitConfig {
            max_sessions_per_ip: 1,
            ..RateLimitConfig::default()
        },
        ..Config::default()
    });
    create_from(&harness, BOB).assert_status(StatusCode::CREATED);
    create_from(&harness, ALICE).assert_error(429, "M_LIMIT_EXCEEDED");
    harness.advance(120);
    create_from(&harness, ALICE).assert_status(StatusCode::CREATED);
}

#[test]
fn exempt_networks_and_disabled_limits_are_not_limited() {
    let exempt = harness(RateLimitConfig {
        create: BucketConfig {
            per_second: 0.001,
            burst: 1,
        },
        exempt: vec!["192.0.2.0/24".parse().unwrap()],
        ..RateLimitConfig::default()
    });
    for _ in 0..5 {
        create_from(&exempt, ALICE).assert_status(StatusCode::CREATED);
    }
    create_from(&exempt, BOB).assert_status(StatusCode::CREATED);
    create_from(&exempt, BOB).assert_error(429, "M_LIMIT_EXCEEDED");

    let disabled = harness(RateLimitConfig {
        enabled: false,
        create: BucketConfig {
            per_second: 0.001,
            burst: 1,
        },
        ..RateLimitConfig::default()
    });
    for _ in 0..5 {
        create_from(&disabled, BOB).assert_status(StatusCode::CREATED);
    }
}

#[test]
fn ipv6_clients_share_a_budget_per_slash_64() {
    let harness = harness(RateLimitConfig {
        create: BucketConfig {
            per_second: 0.001,
            burst: 1,
        },
        ..RateLimitConfig::default()
    });
    create_from(&harness, "2001:db8:0:1::1").assert_status(StatusCode::CREATED);
    create_from(&harness, "2001:db8:0:1::2").assert_error(429, "M_LIMIT_EXCEEDED");
    create_from(&harness, "2001:db8:0:2::1").assert_status(StatusCode::CREATED);
}

/// Only requests that reach the store draw from a budget: whatever is answered from the
/// request alone (400, 413, 405, a malformed id, a preflight) takes no token.
#[test]
fn requests_answered_without_the_store_take_no_token() {
    let harness = harness(RateLimitConfig {
        create: BucketConfig {
            per_second: 0.001,
            burst: 1,
        },
        session: BucketConfig {
            per_second: 0.001,
            burst: 1,
        },
        ..RateLimitConfig::default()
    });
    let send = |method: Method, path: &str| harness.request(method, path).from(ALICE);
    for _ in 0..5 {
        send(Method::POST, CREATE_PATH)
            .sized("no type")
            .send()
            .assert_error(400, "M_MISSING_PARAM");
        send(Method::POST, CREATE_PATH)
            .text("x".repeat(5000))
            .send()
            .assert_error(413, "M_TOO_LARGE");
        send(Method::OPTIONS, CREATE_PATH)
            .send()
            .assert_status(StatusCode::NO_CONTENT);
    }
    let url = created_url(&create_from(&harness, ALICE));
    for _ in 0..5 {
        send(Method::PUT, &url)
            .text("no if-match")
            .send()
            .assert_error(400, "M_MISSING_PARAM");
        send(Method::PATCH, &url)
            .send()
            .assert_error(405, "M_UNRECOGNIZED");
        get_from(&harness, &support::session_path("not-an-id"), ALICE)
            .assert_error(404, "M_NOT_FOUND");
    }
    get_from(&harness, &url, ALICE).assert_status(StatusCode::OK);
    get_from(&harness, &url, ALICE).assert_error(429, "M_LIMIT_EXCEEDED");
    create_from(&harness, ALICE).assert_error(429, "M_LIMIT_EXCEEDED");
}

/// Rate-limit and quota refusals count as `rate_limited`; a full store's 429 does not (it
/// says nothing about the client).
#[test]
fn only_client_refusals_count_as_rate_limited() {
    let harness = Harness::with_config(Config {
        capacity: 2,
        rate_limit: RateLimitConfig {
            max_sessions_per_ip: 1,
            ..RateLimitConfig::default()
        },
        ..Config::default()
    });
    create_from(&harness, ALICE).assert_status(StatusCode::CREATED);
    create_from(&harness, ALICE).assert_error(429, "M_LIMIT_EXCEEDED");
    assert_eq!(harness.metrics().rate_limited, 1);
    create_from(&harness, BOB).assert_status(StatusCode::CREATED);
    create_from(&harness, "203.0.113.5").assert_error(429, "M_LIMIT_EXCEEDED");
    assert_eq!(harness.metrics().rate_limited, 1);
}

#[test]
fn metrics_count_what_happened() {
    let harness = harness(RateLimitConfig {
        create: BucketConfig {
            per_second: 0.001,
            burst: 1,
        },
        ..RateLimitConfig::default()
    });
    let created = create_from(&harness, ALICE);
    let url = created_url(&created);
    create_from(&harness, ALICE).assert_error(429, "M_LIMIT_EXCEEDED");
    harness
        .request(Method::PUT, &url)
        .header("if-match", "\"stale\"")
        .text("x")
        .send()
        .assert_status(StatusCode::PRECONDITION_FAILED);
    harness.delete(&url).assert_status(StatusCode::NO_CONTENT);
    let metrics = harness.metrics();
    assert_eq!(metrics.sessions_created, 1);
    assert_eq!(metrics.sessions_deleted, 1);
    assert_eq!(metrics.rate_limited, 1);
    assert_eq!(metrics.conflicts, 1);
    assert!(metrics.responses.contains(&("POST", 429, 1)));
    assert!(metrics.responses.contains(&("PUT", 412, 1)));
    assert!(metrics.latency_count >= 3);
}

fn flood_from_one_slash_48(fair_share: bool) -> usize {
    let harness = Harness::with_config(Config {
        capacity: 10,
        rate_limit: RateLimitConfig {
            create: BucketConfig {
                per_second: 1.0,
                burst: 100,
            },
            fair_share,
            ..RateLimitConfig::default()
        },
        ..Config::default()
    });
    let created = (0..10)
        .filter(|n| {
            create_from(&harness, &format!("2001:db8:7:{n:x}::1")).status() == StatusCode::CREATED
        })
        .count();
    if fair_share {
        // Another /48 still gets in.
        create_from(&harness, "2001:db8:8::1").assert_status(StatusCode::CREATED);
    }
    created
}

#[test]
fn one_prefix_group_cannot_take_the_whole_capacity() {
    assert_eq!(flood_from_one_slash_48(true), 6);
    assert_eq!(flood_from_one_slash_48(false), 10);
}
