//! Creating a session and the session URL it answers with.

#[allow(clippy::wildcard_imports)]
use super::*;

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
