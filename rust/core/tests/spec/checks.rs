//! The order of the request checks: Content-Length, size, Content-Type, then If-Match, unknown ids and stale tags.

#[allow(clippy::wildcard_imports)]
use super::*;

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
