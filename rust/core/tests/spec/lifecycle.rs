//! A session from creation to expiry or deletion, and the capacity that is never met by eviction.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------------------

#[test]
fn session_is_live_until_just_before_expiry() {
    let h = Harness::with_ttl(60);
    let session = h.create("hello");
    h.advance(59);
    h.advance_millis(999);
    h.get(&session.path, None).assert_status(StatusCode::OK);
    h.put(&session.path, "x", Some("*"))
        .assert_status(StatusCode::ACCEPTED);
}

#[test]
fn at_exactly_creation_plus_ttl_every_method_is_404() {
    let h = Harness::with_ttl(60);
    let session = h.create("hello");
    h.advance(60);
    assert_gone(&h, &session.path);
}

#[test]
fn after_expiry_every_method_is_404() {
    let h = Harness::with_ttl(60);
    let session = h.create("hello");
    h.advance(61);
    assert_gone(&h, &session.path);
    h.advance(3600);
    assert_gone(&h, &session.path);
}

#[test]
fn stale_if_match_on_expired_session_is_404_not_412() {
    let h = Harness::with_ttl(60);
    let session = h.create("hello");
    h.advance(60);
    h.put(&session.path, "x", Some("\"stale\""))
        .assert_error(404, "M_NOT_FOUND");
}

#[test]
fn delete_then_every_method_is_404() {
    let h = Harness::new();
    let session = h.create("hello");
    h.delete(&session.path)
        .assert_status(StatusCode::NO_CONTENT);
    assert_gone(&h, &session.path);
}

#[test]
fn delete_of_unknown_id_is_404() {
    let h = Harness::new();
    h.delete(&session_path(UNKNOWN_ID))
        .assert_error(404, "M_NOT_FOUND");
}

#[test]
fn expired_sessions_are_reclaimed_without_a_request() {
    let h = Harness::with_ttl(60);
    for _ in 0..3 {
        h.create("hello");
    }
    assert_eq!(h.reclaim_expired(), 0);
    assert_eq!(h.live_count(), 3);
    h.advance(60);
    assert_eq!(h.reclaim_expired(), 3);
    assert_eq!(h.live_count(), 0);
    assert_eq!(h.reclaim_expired(), 0);
}

#[test]
fn every_ended_session_is_counted_expired_once() {
    let h = Harness::with_ttl(60);
    let sessions: Vec<_> = (0..3).map(|_| h.create("hello")).collect();
    h.advance(60);
    // Found ended by a DELETE, by a create making room, then by nothing left to find.
    h.delete(&sessions[0].path).assert_error(404, "M_NOT_FOUND");
    assert_eq!(h.metrics().sessions_expired, 1);
    h.create("next");
    assert_eq!(h.metrics().sessions_expired, 3);
    assert_eq!(h.reclaim_expired(), 0);
    h.advance(60);
    assert_eq!(h.reclaim_expired(), 1);
    assert_eq!(h.metrics().sessions_expired, 4);
}

#[test]
fn live_count_follows_creates_deletes_and_expiry() {
    let h = Harness::with_ttl(60);
    assert_eq!(h.live_count(), 0);
    let a = h.create("a");
    h.advance(30);
    h.create("b");
    assert_eq!(h.live_count(), 2);
    h.delete(&a.path).assert_status(StatusCode::NO_CONTENT);
    assert_eq!(h.live_count(), 1);
    h.advance(30);
    assert_eq!(h.live_count(), 1);
    h.advance(30);
    assert_eq!(h.live_count(), 0);
}

/// Every method on a session that is gone answers 404 `M_NOT_FOUND`.
#[track_caller]
pub(crate) fn assert_gone(h: &Harness, path: &str) {
    h.get(path, None).assert_error(404, "M_NOT_FOUND");
    h.get(path, Some("*")).assert_error(404, "M_NOT_FOUND");
    let head = h.head(path, None);
    head.assert_status(StatusCode::NOT_FOUND);
    h.put(path, "x", Some("*")).assert_error(404, "M_NOT_FOUND");
    h.delete(path).assert_error(404, "M_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------
// Capacity
// ---------------------------------------------------------------------------------------

#[test]
fn create_beyond_capacity_is_429_without_evicting() {
    let h = Harness::with_capacity(3);
    let sessions: Vec<_> = ["a", "b", "c"].iter().map(|b| h.create(b)).collect();
    h.advance(1);
    let refused = h.post("d");
    refused.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(
        refused.json()["retry_after_ms"].is_u64(),
        "{}",
        refused.json()
    );
    assert!(refused.header("retry-after").is_some());
    for (session, body) in sessions.iter().zip(["a", "b", "c"]) {
        let read = h.get(&session.path, None);
        read.assert_status(StatusCode::OK);
        assert_eq!(read.body(), body.as_bytes());
    }
    assert_eq!(h.live_count(), 3);
}

#[test]
fn retry_after_is_time_to_first_expiry_rounded_up_to_seconds() {
    let h = Harness::with_capacity(1);
    h.create("a");
    h.advance_millis(500);
    let refused = h.post("b");
    refused.assert_error(429, "M_LIMIT_EXCEEDED");
    assert_eq!(refused.json()["retry_after_ms"], 119_500);
    assert_eq!(refused.header("retry-after"), Some("120"));
}

#[test]
fn creates_succeed_again_once_sessions_expire() {
    let h = Harness::with_config(Config {
        capacity: 2,
        ttl: Duration::from_secs(60),
        ..Config::default()
    });
    h.create("a");
    h.create("b");
    h.post("c").assert_error(429, "M_LIMIT_EXCEEDED");
    h.advance(60);
    let c = h.create("c");
    h.create("d");
    h.post("e").assert_error(429, "M_LIMIT_EXCEEDED");
    assert_eq!(h.get(&c.path, None).body(), b"c");
}

#[test]
fn delete_frees_capacity() {
    let h = Harness::with_capacity(1);
    let a = h.create("a");
    h.post("b").assert_error(429, "M_LIMIT_EXCEEDED");
    h.delete(&a.path).assert_status(StatusCode::NO_CONTENT);
    h.create("b");
}
