//! Session ids, and the methods and paths the API answers.

#[allow(clippy::wildcard_imports)]
use super::*;

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
