//! The headers of every kind of response, the ETags, Expires and Last-Modified.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---------------------------------------------------------------------------------------
// Headers of every response kind
// ---------------------------------------------------------------------------------------

#[test]
fn created_201_carries_every_header() {
    let h = Harness::new();
    let reply = h.post("hello");
    reply
        .assert_status(StatusCode::CREATED)
        .assert_common_headers()
        .assert_validators();
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.expires(), at(120));
    assert_eq!(reply.last_modified(), at(0));
}

#[test]
fn read_200_carries_every_header_and_exactly_text_plain() {
    let h = Harness::new();
    let session = h.create("hello");
    h.advance(1);
    let reply = h.get(&session.path, None);
    reply
        .assert_status(StatusCode::OK)
        .assert_common_headers()
        .assert_validators();
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.content_length(), 5);
    assert_eq!(reply.etag(), session.etag);
}

#[test]
fn not_modified_304_carries_every_header() {
    let h = Harness::new();
    let session = h.create("hello");
    h.advance(1);
    let reply = h.get(&session.path, Some(&session.etag));
    reply
        .assert_status(StatusCode::NOT_MODIFIED)
        .assert_common_headers()
        .assert_validators();
    assert_eq!(reply.etag(), session.etag);
    assert_eq!(reply.expires(), at(120));
    assert_eq!(reply.last_modified(), at(0));
}

#[test]
fn accepted_202_carries_every_header_with_length_0_and_text_plain() {
    let h = Harness::new();
    let session = h.create("hello");
    h.advance(1);
    let reply = h.put(&session.path, "world", Some("*"));
    reply
        .assert_status(StatusCode::ACCEPTED)
        .assert_common_headers()
        .assert_validators();
    assert!(reply.body().is_empty());
    assert_eq!(reply.header("content-length"), Some("0"));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
}

#[test]
fn deleted_204_carries_cors_caching_and_length_0() {
    let h = Harness::new();
    let session = h.create("hello");
    let reply = h.delete(&session.path);
    reply
        .assert_status(StatusCode::NO_CONTENT)
        .assert_common_headers();
    assert!(reply.body().is_empty());
    assert_eq!(reply.header("content-length"), Some("0"));
}

#[test]
fn not_found_404_carries_the_common_headers() {
    let h = Harness::new();
    for reply in [
        h.get(&session_path(UNKNOWN_ID), None),
        h.head(&session_path(UNKNOWN_ID), None),
        h.delete(&session_path(UNKNOWN_ID)),
        h.get("/nowhere", None),
    ] {
        reply
            .assert_status(StatusCode::NOT_FOUND)
            .assert_common_headers();
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
}

#[test]
fn bad_request_400_carries_the_common_headers() {
    let h = Harness::new();
    h.request(Method::POST, CREATE_PATH)
        .sized("x")
        .send()
        .assert_error(400, "M_MISSING_PARAM")
        .assert_common_headers();
}

#[test]
fn too_large_413_carries_the_common_headers() {
    let h = Harness::new();
    h.post(&too_large())
        .assert_error(413, "M_TOO_LARGE")
        .assert_common_headers();
}

#[test]
fn method_not_allowed_405_carries_the_common_headers() {
    let h = Harness::new();
    h.request(Method::PATCH, &session_path(UNKNOWN_ID))
        .send()
        .assert_error(405, "M_UNRECOGNIZED")
        .assert_common_headers();
}

#[test]
fn too_many_429_carries_the_common_headers() {
    let h = Harness::with_capacity(1);
    h.create("a");
    h.post("b")
        .assert_error(429, "M_LIMIT_EXCEEDED")
        .assert_common_headers();
}

#[test]
fn head_is_get_headers_without_body() {
    let h = Harness::new();
    let session = h.create("hello");
    h.advance(1);
    let get = h.get(&session.path, None);
    let head = h.head(&session.path, None);
    head.assert_status(StatusCode::OK)
        .assert_common_headers()
        .assert_validators();
    assert!(head.body().is_empty());
    assert_eq!(head.headers(), get.headers());
}

#[test]
fn date_header_equals_the_clock() {
    let h = Harness::new();
    let created = h.post("hello");
    assert_eq!(created.date(), at(0));
    let path = created.json()["url"]
        .as_str()
        .unwrap()
        .replace(BASEURL, "/");
    h.advance(59);
    assert_eq!(h.get(&path, None).date(), at(59));
    assert_eq!(h.put(&path, "x", Some("*")).date(), at(59));
    assert_eq!(h.get("/nowhere", None).date(), at(59));
    h.advance(1000);
    assert_eq!(h.get(&path, None).date(), at(1059));
}

// ---------------------------------------------------------------------------------------
// ETags
// ---------------------------------------------------------------------------------------

#[test]
fn etags_of_two_sessions_with_the_same_body_differ() {
    let h = Harness::new();
    let (a, b) = (h.create("same"), h.create("same"));
    assert_ne!(a.etag, b.etag);
    assert_ne!(h.get(&a.path, None).etag(), h.get(&b.path, None).etag());
}

#[test]
fn rewriting_identical_bytes_gives_a_new_etag() {
    let h = Harness::new();
    let session = h.create("same");
    let first = h.put(&session.path, "same", Some(&session.etag));
    first.assert_status(StatusCode::ACCEPTED);
    assert_ne!(first.etag(), session.etag);
    let second = h.put(&session.path, "same", Some(first.etag()));
    second.assert_status(StatusCode::ACCEPTED);
    assert_ne!(second.etag(), first.etag());
    // A peer polling with the old tag sees the write.
    h.get(&session.path, Some(first.etag()))
        .assert_status(StatusCode::OK);
}

#[test]
fn etags_stay_unique_with_a_poor_but_non_repeating_entropy_source() {
    let h = Harness::with_entropy(Arc::new(CountingEntropy::default()));
    let mut seen = HashSet::new();
    for _ in 0..5 {
        let session = h.create("same");
        assert!(seen.insert(session.etag.clone()), "{}", session.etag);
        let mut current = session.etag.clone();
        for _ in 0..5 {
            let written = h.put(&session.path, "same", Some(&current));
            written.assert_status(StatusCode::ACCEPTED);
            current = written.etag().to_owned();
            assert!(seen.insert(current.clone()), "{current}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Expires and Last-Modified
// ---------------------------------------------------------------------------------------

#[test]
fn expires_is_creation_plus_ttl_and_unchanged_by_writes() {
    let h = Harness::new();
    h.advance(7);
    let session = h.create("hello");
    assert_eq!(h.get(&session.path, None).expires(), at(7 + 120));
    h.advance(30);
    let written = h.put(&session.path, "world", Some("*"));
    assert_eq!(written.expires(), at(127));
    h.advance(30);
    assert_eq!(h.get(&session.path, None).expires(), at(127));
}

#[test]
fn configured_ttl_sets_expires() {
    let h = Harness::with_ttl(30);
    let session = h.create("hello");
    assert_eq!(h.get(&session.path, None).expires(), at(30));
}

#[test]
fn last_modified_moves_on_write() {
    let h = Harness::new();
    let session = h.create("hello");
    assert_eq!(h.get(&session.path, None).last_modified(), at(0));
    h.advance(10);
    let written = h.put(&session.path, "world", Some("*"));
    assert_eq!(written.last_modified(), at(10));
    h.advance(5);
    let read = h.get(&session.path, None);
    assert_eq!(read.last_modified(), at(10));
    assert_eq!(
        h.get(&session.path, Some(read.etag())).last_modified(),
        at(10)
    );
}

#[test]
fn defaults_are_ttl_120s_payload_4096_capacity_10000() {
    let config = Config::default();
    assert_eq!(config.ttl, Duration::from_secs(120));
    assert_eq!(config.max_payload_bytes, 4096);
    assert_eq!(config.capacity, 10_000);
}
