//! Conditional GETs: If-None-Match and 304.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------------------
// Conditional GET
// ---------------------------------------------------------------------------------------

#[test]
fn if_none_match_with_current_etag_is_304_without_body() {
    let h = Harness::new();
    let session = h.create("hello");
    let reply = h.get(&session.path, Some(&session.etag));
    reply.assert_status(StatusCode::NOT_MODIFIED);
    assert!(reply.body().is_empty());
}

#[test]
fn if_none_match_star_is_304() {
    let h = Harness::new();
    let session = h.create("hello");
    h.get(&session.path, Some("*"))
        .assert_status(StatusCode::NOT_MODIFIED);
}

#[test]
fn weak_if_none_match_of_the_current_etag_is_304() {
    let h = Harness::new();
    let session = h.create("hello");
    let weak = format!("W/{}", session.etag);
    h.get(&session.path, Some(&weak))
        .assert_status(StatusCode::NOT_MODIFIED);
}

#[test]
fn stale_if_none_match_is_200_with_the_new_payload() {
    let h = Harness::new();
    let session = h.create("first");
    h.put(&session.path, "second", Some("*"))
        .assert_status(StatusCode::ACCEPTED);
    let reply = h.get(&session.path, Some(&session.etag));
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.body(), b"second");
}

#[test]
fn head_with_current_if_none_match_is_304() {
    let h = Harness::new();
    let session = h.create("hello");
    h.head(&session.path, Some(&session.etag))
        .assert_status(StatusCode::NOT_MODIFIED);
}
