//! The behaviour MSC4108 (2024) clients rely on, as summarised in the project's brief and in
//! `docs/differences.md`, one test per rule, through the public API only: requests in,
//! responses out, time moved by a [`ManualClock`]. These tests are the semantic spec; the
//! Python suite tests what only Synapse and Twisted can break.
//!
//! [`ManualClock`]: synapse_rendezvous_core::ManualClock
// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction
)]

// Under cfg(test) so that clippy's allow-expect-in-tests covers the helpers too.
#[cfg(test)]
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;
use support::{
    at, for_each_upload, list_contains, random_part, session_path, CountingEntropy, Harness,
    BASEURL,
};
use synapse_rendezvous_core::{Config, CREATE_PATH, SESSION_PREFIX};

/// An id that is well formed but was never issued.
const UNKNOWN_ID: &str = "01KQ3ZZZZZZZZZZZZZZZZZZZZZ";

/// The 4097-byte body: one byte over the default limit.
fn too_large() -> String {
    "x".repeat(4097)
}

// ---------------------------------------------------------------------------------------
// Create and the session URL
// ---------------------------------------------------------------------------------------

#[test]
fn create_is_201_with_absolute_url_from_public_baseurl() {
    let h = Harness::new();
    let reply = h.post("hello");
    reply.assert_status(StatusCode::CREATED);
    let url = reply.json()["url"].as_str().unwrap().to_owned();
    let id = url.rsplit('/').next().unwrap();
    assert_eq!(url, format!("{BASEURL}_synapse/client/rendezvous/{id}"));
    assert_eq!(reply.json(), json!({ "url": url }));
}

#[test]
fn session_url_ignores_the_host_header() {
    let h = Harness::new();
    let reply = h
        .request(Method::POST, CREATE_PATH)
        .header("host", "evil.example")
        .text("hello")
        .send();
    reply.assert_status(StatusCode::CREATED);
    let url = reply.json()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(BASEURL), "{url}");
    assert!(!url.contains("evil.example"), "{url}");
}

#[test]
fn session_url_keeps_a_path_prefix_of_public_baseurl() {
    let h = Harness::with_baseurl("https://example.org/matrix/");
    let url = h.create("hello").url;
    let id = url.rsplit('/').next().unwrap();
    assert_eq!(
        url,
        format!("https://example.org/matrix/_synapse/client/rendezvous/{id}")
    );
}

#[test]
fn created_session_reads_back_the_exact_payload() {
    let h = Harness::new();
    let payload = "ciphertext \u{e9}\u{1f511} with spaces\nand lines";
    let session = h.create(payload);
    let reply = h.get(&session.path, None);
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.body(), payload.as_bytes());
    assert_eq!(reply.etag(), session.etag);
}

#[test]
fn absolute_session_url_is_served_too() {
    let h = Harness::new();
    let session = h.create("hello");
    h.get(&session.url, None).assert_status(StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// Check 1: Content-Length
// ---------------------------------------------------------------------------------------

#[test]
fn missing_content_length_is_400_missing_param() {
    for_each_upload(|upload| {
        upload
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .assert_error(400, "M_MISSING_PARAM")
            .assert_common_headers();
    });
}

#[test]
fn unparseable_content_length_is_400_invalid_param() {
    for bad in ["abc", "-1", "1.0", "0x1", ""] {
        for_each_upload(|upload| {
            upload
                .header("content-type", "text/plain")
                .header("content-length", bad)
                .body("x")
                .send()
                .assert_error(400, "M_INVALID_PARAM");
        });
    }
}

#[test]
fn content_length_is_checked_before_content_type() {
    for_each_upload(|upload| {
        upload
            .header("content-type", "application/json")
            .body("x")
            .send()
            .assert_error(400, "M_MISSING_PARAM");
    });
}

// ---------------------------------------------------------------------------------------
// Check 2: size
// ---------------------------------------------------------------------------------------

#[test]
fn body_over_4096_bytes_is_413_too_large() {
    for_each_upload(|upload| {
        upload
            .text(too_large())
            .send()
            .assert_error(413, "M_TOO_LARGE")
            .assert_common_headers();
    });
}

#[test]
fn body_of_exactly_4096_bytes_is_accepted() {
    let h = Harness::new();
    let session = h.create(&"x".repeat(4096));
    assert_eq!(h.get(&session.path, None).body().len(), 4096);
    h.put(&session.path, &"y".repeat(4096), Some("*"))
        .assert_status(StatusCode::ACCEPTED);
    assert_eq!(
        h.get(&session.path, None).body(),
        "y".repeat(4096).as_bytes()
    );
}

#[test]
fn empty_body_is_accepted() {
    let h = Harness::new();
    let session = h.create("");
    let read = h.get(&session.path, None);
    read.assert_status(StatusCode::OK);
    assert!(read.body().is_empty());
    assert_eq!(read.content_length(), 0);
    h.put(&session.path, "x", Some("*"))
        .assert_status(StatusCode::ACCEPTED);
    h.put(&session.path, "", Some("*"))
        .assert_status(StatusCode::ACCEPTED);
    assert!(h.get(&session.path, None).body().is_empty());
}

#[test]
fn max_payload_is_configurable() {
    let h = Harness::with_config(Config {
        max_payload_bytes: 10,
        ..Config::default()
    });
    h.post(&"x".repeat(11)).assert_error(413, "M_TOO_LARGE");
    let session = h.create(&"x".repeat(10));
    h.put(&session.path, &"y".repeat(11), Some("*"))
        .assert_error(413, "M_TOO_LARGE");
    h.put(&session.path, &"y".repeat(10), Some("*"))
        .assert_status(StatusCode::ACCEPTED);
}

#[test]
fn size_is_checked_before_content_type() {
    for_each_upload(|upload| {
        upload
            .sized(too_large())
            .send()
            .assert_error(413, "M_TOO_LARGE");
    });
    for_each_upload(|upload| {
        upload
            .header("content-type", "application/octet-stream")
            .sized(too_large())
            .send()
            .assert_error(413, "M_TOO_LARGE");
    });
}

// ---------------------------------------------------------------------------------------
// Check 3: Content-Type
// ---------------------------------------------------------------------------------------

#[test]
fn missing_content_type_is_400_missing_param() {
    for_each_upload(|upload| {
        upload
            .sized("x")
            .send()
            .assert_error(400, "M_MISSING_PARAM");
    });
}

#[test]
fn wrong_content_type_is_400_invalid_param() {
    for bad in [
        "application/json",
        "text/html",
        "application/octet-stream",
        "text/plainx",
        "text",
        "text/plain; format=flowed",
        "text/plain; charset=latin1",
    ] {
        for_each_upload(|upload| {
            upload
                .header("content-type", bad)
                .sized("x")
                .send()
                .assert_error(400, "M_INVALID_PARAM");
        });
    }
}

#[test]
fn content_type_is_compared_case_insensitively() {
    for value in ["TEXT/PLAIN", "Text/Plain"] {
        let h = Harness::new();
        let created = h
            .request(Method::POST, CREATE_PATH)
            .header("content-type", value)
            .sized("x")
            .send();
        created.assert_status(StatusCode::CREATED);
        let path = created.json()["url"]
            .as_str()
            .unwrap()
            .replace(BASEURL, "/");
        h.request(Method::PUT, &path)
            .header("content-type", value)
            .header("if-match", "*")
            .sized("y")
            .send()
            .assert_status(StatusCode::ACCEPTED);
    }
}

#[test]
fn charset_utf8_is_accepted_and_get_answers_exactly_text_plain() {
    for value in ["text/plain; charset=utf-8", "text/plain;charset=UTF-8"] {
        let h = Harness::new();
        let created = h
            .request(Method::POST, CREATE_PATH)
            .header("content-type", value)
            .sized("a")
            .send();
        created.assert_status(StatusCode::CREATED);
        let path = created.json()["url"]
            .as_str()
            .unwrap()
            .replace(BASEURL, "/");
        let read = h.get(&path, None);
        assert_eq!(read.header("content-type"), Some("text/plain"));
        h.request(Method::PUT, &path)
            .header("content-type", value)
            .header("if-match", "*")
            .sized("b")
            .send()
            .assert_status(StatusCode::ACCEPTED);
        let read = h.get(&path, None);
        assert_eq!(read.body(), b"b");
        assert_eq!(read.header("content-type"), Some("text/plain"));
        assert_eq!(
            h.head(&path, None).header("content-type"),
            Some("text/plain")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Checks 4 to 6: If-Match, unknown id, stale If-Match (PUT only)
// ---------------------------------------------------------------------------------------

#[test]
fn put_without_if_match_is_400_missing_param() {
    let h = Harness::new();
    let session = h.create("hello");
    h.put(&session.path, "x", None)
        .assert_error(400, "M_MISSING_PARAM")
        .assert_common_headers();
    assert_eq!(h.get(&session.path, None).body(), b"hello");
}

#[test]
fn content_type_is_checked_before_if_match() {
    let h = Harness::new();
    let session = h.create("hello");
    h.request(Method::PUT, &session.path)
        .header("content-type", "application/json")
        .sized("x")
        .send()
        .assert_error(400, "M_INVALID_PARAM");
}

#[test]
fn malformed_if_match_is_400_invalid_param() {
    let h = Harness::new();
    let session = h.create("hello");
    for bad in ["abc", "\"unterminated", "W/abc", "*, \"a\""] {
        h.put(&session.path, "x", Some(bad))
            .assert_error(400, "M_INVALID_PARAM");
    }
    assert_eq!(h.get(&session.path, None).etag(), session.etag);
}

#[test]
fn put_on_unknown_id_is_404_not_found() {
    let h = Harness::new();
    h.put(&session_path(UNKNOWN_ID), "x", Some("*"))
        .assert_error(404, "M_NOT_FOUND")
        .assert_common_headers();
}

#[test]
fn missing_if_match_on_unknown_id_is_400_not_404() {
    let h = Harness::new();
    h.put(&session_path(UNKNOWN_ID), "x", None)
        .assert_error(400, "M_MISSING_PARAM");
}

#[test]
fn too_large_on_unknown_id_is_413_not_404() {
    let h = Harness::new();
    h.put(&session_path(UNKNOWN_ID), &too_large(), Some("*"))
        .assert_error(413, "M_TOO_LARGE");
}

#[test]
fn bad_content_length_or_type_on_unknown_id_is_400_not_404() {
    let h = Harness::new();
    let path = session_path(UNKNOWN_ID);
    h.request(Method::PUT, &path)
        .header("content-type", "text/plain")
        .header("if-match", "*")
        .body("x")
        .send()
        .assert_error(400, "M_MISSING_PARAM");
    h.request(Method::PUT, &path)
        .header("if-match", "*")
        .sized("x")
        .send()
        .assert_error(400, "M_MISSING_PARAM");
    h.request(Method::PUT, &path)
        .header("content-type", "image/png")
        .header("if-match", "*")
        .sized("x")
        .send()
        .assert_error(400, "M_INVALID_PARAM");
}

#[test]
fn stale_if_match_on_unknown_id_is_404_not_412() {
    let h = Harness::new();
    h.put(&session_path(UNKNOWN_ID), "x", Some("\"stale\""))
        .assert_error(404, "M_NOT_FOUND");
}

#[test]
fn stale_if_match_is_412_with_current_validators() {
    let h = Harness::new();
    let session = h.create("first");
    h.advance(3);
    let written = h.put(&session.path, "second", Some(&session.etag));
    written.assert_status(StatusCode::ACCEPTED);
    h.advance(2);

    let reply = h.put(&session.path, "third", Some(&session.etag));
    reply.assert_status(StatusCode::PRECONDITION_FAILED);
    let body = reply.json();
    assert_eq!(body["errcode"], "M_UNKNOWN");
    assert_eq!(body["org.matrix.msc4108.errcode"], "M_CONCURRENT_WRITE");
    assert!(body["error"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.assert_common_headers().assert_validators();
    assert_eq!(reply.etag(), written.etag());
    assert_eq!(reply.expires(), at(120));
    assert_eq!(reply.last_modified(), at(3));

    let read = h.get(&session.path, None);
    assert_eq!(read.body(), b"second");
    assert_eq!(read.etag(), written.etag());
}

#[test]
fn too_large_with_stale_if_match_is_413_not_412() {
    let h = Harness::new();
    let session = h.create("hello");
    h.put(&session.path, &too_large(), Some("\"stale\""))
        .assert_error(413, "M_TOO_LARGE");
}

#[test]
fn current_if_match_writes_and_the_202_etag_is_the_new_current_one() {
    let h = Harness::new();
    let session = h.create("first");
    let written = h.put(&session.path, "second", Some(&session.etag));
    written.assert_status(StatusCode::ACCEPTED);
    assert_ne!(written.etag(), session.etag);
    let read = h.get(&session.path, None);
    assert_eq!(read.body(), b"second");
    assert_eq!(read.etag(), written.etag());
    h.put(&session.path, "third", Some(written.etag()))
        .assert_status(StatusCode::ACCEPTED);
}

#[test]
fn if_match_star_matches_an_existing_session() {
    let h = Harness::new();
    let session = h.create("first");
    h.put(&session.path, "second", Some("*"))
        .assert_status(StatusCode::ACCEPTED);
    h.put(&session.path, "third", Some("*"))
        .assert_status(StatusCode::ACCEPTED);
    assert_eq!(h.get(&session.path, None).body(), b"third");
}

#[test]
fn weak_if_match_of_the_current_etag_succeeds() {
    let h = Harness::new();
    let session = h.create("first");
    let weak = format!("W/{}", session.etag);
    h.put(&session.path, "second", Some(&weak))
        .assert_status(StatusCode::ACCEPTED);
    assert_eq!(h.get(&session.path, None).body(), b"second");
}

#[test]
fn weak_if_match_of_a_stale_etag_is_412() {
    let h = Harness::new();
    let session = h.create("first");
    h.put(&session.path, "second", Some("*"))
        .assert_status(StatusCode::ACCEPTED);
    let weak = format!("W/{}", session.etag);
    h.put(&session.path, "third", Some(&weak))
        .assert_status(StatusCode::PRECONDITION_FAILED);
}

#[test]
fn if_match_list_containing_the_current_etag_succeeds() {
    let h = Harness::new();
    let session = h.create("first");
    let list = format!("\"other\", {}", session.etag);
    h.put(&session.path, "second", Some(&list))
        .assert_status(StatusCode::ACCEPTED);
}

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
fn assert_gone(h: &Harness, path: &str) {
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

// ---------------------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------------------

#[test]
fn ids_are_26_upper_case_crockford_chars() {
    let h = Harness::new();
    for _ in 0..20 {
        let id = h.create("x").id;
        assert_eq!(id.len(), 26, "{id}");
        assert!(
            id.chars()
                .all(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c)),
            "{id}"
        );
    }
}

#[test]
fn successive_ids_random_parts_are_not_sequential() {
    let h = Harness::new();
    let randoms: Vec<u128> = (0..20)
        .map(|_| random_part(h.create("x").session_id()))
        .collect();
    for pair in randoms.windows(2) {
        assert_ne!(pair[0], pair[1]);
        assert_ne!(pair[0].wrapping_add(1), pair[1], "ids are sequential");
    }
    let distinct: HashSet<_> = randoms.iter().collect();
    assert_eq!(distinct.len(), randoms.len());
}

#[test]
fn lower_case_id_is_404_not_found() {
    let h = Harness::new();
    let session = h.create("hello");
    let lower = session_path(&session.id.to_lowercase());
    h.get(&lower, None).assert_error(404, "M_NOT_FOUND");
    h.put(&lower, "x", Some("*"))
        .assert_error(404, "M_NOT_FOUND");
    h.delete(&lower).assert_error(404, "M_NOT_FOUND");
    h.get(&session.path, None).assert_status(StatusCode::OK);
}

#[test]
fn percent_encoded_non_ascii_id_is_404_not_found() {
    let h = Harness::new();
    for id in [
        "%C3%A9",
        "%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9",
        "%FF",
        "%zz",
        "%",
    ] {
        let path = session_path(id);
        h.get(&path, None).assert_error(404, "M_NOT_FOUND");
        h.put(&path, "x", Some("*"))
            .assert_error(404, "M_NOT_FOUND");
        h.delete(&path).assert_error(404, "M_NOT_FOUND");
    }
}

#[test]
fn malformed_ids_are_404_not_found() {
    let h = Harness::new();
    let session = h.create("hello");
    for id in [
        &session.id[..25],
        &format!("{}0", session.id),
        "not-an-id",
        "0000000000000000000000000I",
    ] {
        h.get(&session_path(id), None)
            .assert_error(404, "M_NOT_FOUND");
    }
}

// ---------------------------------------------------------------------------------------
// Methods and paths
// ---------------------------------------------------------------------------------------

#[test]
fn other_methods_on_a_session_are_405_unrecognized() {
    let h = Harness::new();
    let session = h.create("hello");
    for method in [Method::POST, Method::PATCH, Method::TRACE, Method::CONNECT] {
        h.request(method.clone(), &session.path)
            .text("x")
            .send()
            .assert_error(405, "M_UNRECOGNIZED");
    }
    assert_eq!(h.get(&session.path, None).etag(), session.etag);
}

#[test]
fn other_methods_on_an_unknown_id_are_405_unrecognized() {
    let h = Harness::new();
    for id in [UNKNOWN_ID, "lowercase"] {
        for method in [Method::POST, Method::PATCH] {
            h.request(method, &session_path(id))
                .send()
                .assert_error(405, "M_UNRECOGNIZED");
        }
    }
}

#[test]
fn other_methods_on_the_create_path_are_405_unrecognized() {
    let h = Harness::new();
    for method in [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ] {
        let reply = h.request(method.clone(), CREATE_PATH).send();
        reply.assert_status(StatusCode::METHOD_NOT_ALLOWED);
        if method != Method::HEAD {
            reply.assert_error(405, "M_UNRECOGNIZED");
        }
    }
}

#[test]
fn unknown_paths_are_404_unrecognized() {
    let h = Harness::new();
    let session = h.create("hello");
    for path in [
        "/",
        "/nowhere",
        "/_matrix/client/versions",
        "/_matrix/client/unstable/org.matrix.msc4108/rendezvous/extra",
        "/_synapse/client/rendezvousX",
        &format!("{}/extra", session.path),
    ] {
        for method in [Method::GET, Method::POST] {
            h.request(method, path)
                .text("x")
                .send()
                .assert_error(404, "M_UNRECOGNIZED");
        }
    }
}

#[test]
fn takeover_does_not_create_on_the_session_root() {
    let h = Harness::new();
    for path in [SESSION_PREFIX, "/_synapse/client/rendezvous/"] {
        h.request(Method::POST, path)
            .text("x")
            .send()
            .assert_error(404, "M_UNRECOGNIZED");
    }
    assert_eq!(h.live_count(), 0);
}

#[test]
fn delegation_creates_on_the_session_root() {
    let h = Harness::delegation();
    let reply = h.request(Method::POST, SESSION_PREFIX).text("hello").send();
    reply
        .assert_status(StatusCode::CREATED)
        .assert_common_headers()
        .assert_validators();
    let url = reply.json()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{BASEURL}_synapse/client/rendezvous/")));
    let path = url.replace(BASEURL, "/");
    assert_eq!(h.get(&path, None).body(), b"hello");
}

#[test]
fn delegation_root_applies_the_upload_checks() {
    let h = Harness::delegation();
    h.request(Method::POST, SESSION_PREFIX)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .assert_error(400, "M_MISSING_PARAM");
    h.request(Method::POST, SESSION_PREFIX)
        .text(too_large())
        .send()
        .assert_error(413, "M_TOO_LARGE");
    h.request(Method::POST, SESSION_PREFIX)
        .sized("x")
        .send()
        .assert_error(400, "M_MISSING_PARAM");
}

#[test]
fn delegation_root_refuses_other_methods_with_405() {
    let h = Harness::delegation();
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        h.request(method, SESSION_PREFIX)
            .send()
            .assert_error(405, "M_UNRECOGNIZED");
    }
}

#[test]
fn options_answers_a_preflight_on_every_rendezvous_path() {
    for h in [Harness::new(), Harness::delegation()] {
        let session = h.create("hello");
        let mut paths = vec![
            CREATE_PATH.to_owned(),
            session.path.clone(),
            session_path(UNKNOWN_ID),
        ];
        if h.request(Method::POST, SESSION_PREFIX)
            .text("x")
            .send()
            .status()
            == StatusCode::CREATED
        {
            paths.push(SESSION_PREFIX.to_owned());
        }
        for path in &paths {
            let reply = h
                .request(Method::OPTIONS, path)
                .header("origin", "https://app.element.io")
                .header("access-control-request-method", "PUT")
                .header("access-control-request-headers", "content-type, if-match")
                .send();
            assert!(reply.status().is_success(), "{path}: {}", reply.status());
            assert_eq!(
                reply.header("access-control-allow-origin"),
                Some("*"),
                "{path}"
            );
            let methods = reply.must_header("access-control-allow-methods");
            for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"] {
                assert!(
                    list_contains(methods, method),
                    "{path}: {method} in {methods}"
                );
            }
            let allowed = reply.must_header("access-control-allow-headers");
            for header in ["Content-Type", "If-Match", "If-None-Match"] {
                assert!(
                    list_contains(allowed, header),
                    "{path}: {header} in {allowed}"
                );
            }
            reply.content_length();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Clock
// ---------------------------------------------------------------------------------------

#[test]
fn clock_stepped_backwards_breaks_nothing() {
    let h = Harness::with_capacity(2);
    let session = h.create("hello");
    h.clock.set(at(0) - Duration::from_secs(3600));

    let read = h.get(&session.path, None);
    read.assert_status(StatusCode::OK).assert_common_headers();
    assert_eq!(read.expires(), at(120));
    h.get(&session.path, Some(&session.etag))
        .assert_status(StatusCode::NOT_MODIFIED);
    let written = h.put(&session.path, "world", Some(&session.etag));
    written.assert_status(StatusCode::ACCEPTED);
    assert_eq!(written.expires(), at(120));
    let other = h.create("other");
    h.post("third").assert_error(429, "M_LIMIT_EXCEEDED");
    assert_eq!(h.reclaim_expired(), 0);
    assert_eq!(h.live_count(), 2);
    h.delete(&other.path).assert_status(StatusCode::NO_CONTENT);

    h.clock.set(at(120));
    assert_gone(&h, &session.path);
    assert_eq!(h.live_count(), 0);
    h.create("again");
}
