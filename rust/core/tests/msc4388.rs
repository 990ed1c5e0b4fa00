//! The semantic spec of the MSC4388 (2025) rendezvous API, through [`Service`]: every rule
//! is a check run on the memory store and on a real Redis store (through the production
//! Redis path, on the caller's manual clock), with the same assertions. Then what only a
//! comparison or a shared store shows: byte-identical tokens on both stores, sessions
//! surviving a new process, maintenance of both protocols, snapshots.

// Test code: failing loudly is the point, and times are computed from known constants.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unchecked_time_subtraction,
    clippy::too_many_lines,
    clippy::needless_pass_by_value
)]

mod redis_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use synapse_rendezvous_core::rate_limit::ClientKey;
use synapse_rendezvous_core::store::snapshot::{self, Limits};
use synapse_rendezvous_core::{
    Authenticated, Clock, Config, Entropy, ManualClock, MemoryStore, Msc4388Mode, Protocol,
    Rendezvous, Routes, SequenceToken, Service, SessionId, Store, CREATE_PATH, MSC4388_PREFIX,
};

use redis_support::{RedisServer, Watchdog, LIMIT};
use support::CountingEntropy;

/// Makes an API over an empty store of `config`'s capacity, with randomness from the given
/// entropy, on a manual clock at [`start`].
type Maker<'a> = &'a dyn Fn(Config, Arc<dyn Entropy>) -> Api;

/// An hour from now, in whole seconds: a Redis server's own key expiry (on its real clock)
/// then never removes a key during a test on the manual clock.
fn start() -> SystemTime {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_secs(now.as_secs() + 3600)
}

/// The default configuration with MSC4388 in `mode`.
fn config(mode: Msc4388Mode) -> Config {
    Config::default().with_msc4388(mode).unwrap()
}

fn open() -> Config {
    config(Msc4388Mode::Open)
}

/// One API instance under test.
struct Api {
    clock: Arc<ManualClock>,
    service: Service,
}

impl Api {
    fn new(config: Config, entropy: Arc<dyn Entropy>, store: Arc<dyn Store>) -> Self {
        let clock = Arc::new(ManualClock::new(start()));
        let rendezvous = Rendezvous::new(
            config,
            entropy,
            Routes::takeover(),
            "https://matrix.example.org/",
        );
        Self {
            service: Service::new(rendezvous, store, clock.clone()),
            clock,
        }
    }

    fn advance_millis(&self, millis: u64) {
        self.clock.advance(Duration::from_millis(millis));
    }

    fn send(&self, request: Request<Bytes>) -> Response<Bytes> {
        self.service.handle(&request)
    }

    fn call(&self, method: Method, path: &str, body: &str) -> Response<Bytes> {
        self.send(
            request(method, path, body)
                .body(Bytes::from(body.to_owned()))
                .unwrap(),
        )
    }

    fn discover(&self, authenticated: bool) -> Response<Bytes> {
        let mut builder = request(Method::GET, MSC4388_PREFIX, "");
        if authenticated {
            builder = builder.extension(Authenticated);
        }
        self.send(builder.body(Bytes::new()).unwrap())
    }

    /// `POST` a create with `data`.
    fn post(&self, data: &str) -> Response<Bytes> {
        let body = json!({ "data": data }).to_string();
        self.call(Method::POST, MSC4388_PREFIX, &body)
    }

    /// A session created with `data`: its id and first token.
    fn create(&self, data: &str) -> (String, String) {
        let created = self.post(data);
        let body = ok_json(&created);
        (
            body["id"].as_str().unwrap().to_owned(),
            body["sequence_token"].as_str().unwrap().to_owned(),
        )
    }

    fn get(&self, id: &str) -> Response<Bytes> {
        self.call(Method::GET, &path(id), "")
    }

    fn put(&self, id: &str, token: &str, data: &str) -> Response<Bytes> {
        let body = json!({ "sequence_token": token, "data": data }).to_string();
        self.call(Method::PUT, &path(id), &body)
    }

    /// A successful `PUT`'s token.
    fn write(&self, id: &str, token: &str, data: &str) -> String {
        ok_json(&self.put(id, token, data))["sequence_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn delete(&self, id: &str) -> Response<Bytes> {
        self.call(Method::DELETE, &path(id), "")
    }

    /// An MSC4108 (2024) create; the session's id.
    fn create_2024(&self, payload: &str) -> String {
        let response = self.send(
            Request::post(CREATE_PATH)
                .header("content-type", "text/plain")
                .header("content-length", payload.len().to_string())
                .body(Bytes::from(payload.to_owned()))
                .unwrap(),
        );
        assert_eq!(response.status(), StatusCode::CREATED);
        let url = json_of(&response)["url"].as_str().unwrap().to_owned();
        url.rsplit('/').next().unwrap().to_owned()
    }

    fn call_2024(&self, method: Method, id: &str, body: &str) -> Response<Bytes> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("/_synapse/client/rendezvous/{id}"));
        if !body.is_empty() {
            builder = builder
                .header("content-type", "text/plain")
                .header("content-length", body.len().to_string())
                .header("if-match", "*");
        }
        self.send(builder.body(Bytes::from(body.to_owned())).unwrap())
    }
}

fn request(method: Method, path: &str, body: &str) -> http::request::Builder {
    let builder = Request::builder().method(method).uri(path);
    if body.is_empty() {
        builder
    } else {
        builder.header("content-type", "application/json")
    }
}

fn path(id: &str) -> String {
    format!("{MSC4388_PREFIX}/{id}")
}

fn json_of(response: &Response<Bytes>) -> Value {
    serde_json::from_slice(response.body())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", response.body()))
}

/// The body of a 200, with MSC4388's headers checked.
fn ok_json(response: &Response<Bytes>) -> Value {
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        String::from_utf8_lossy(response.body())
    );
    assert_json_headers(response);
    let body = json_of(response);
    assert!(body.is_object());
    body
}

fn assert_json_headers(response: &Response<Bytes>) {
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap());
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(
        header("cache-control"),
        Some("no-cache, no-store, must-revalidate")
    );
    assert_eq!(header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        header("content-length"),
        Some(response.body().len().to_string().as_str())
    );
    for absent in ["etag", "last-modified", "expires", "pragma"] {
        assert_eq!(header(absent), None, "{absent}");
    }
}

fn assert_error(response: &Response<Bytes>, status: u16, errcode: &str) {
    assert_eq!(
        response.status().as_u16(),
        status,
        "{:?}",
        String::from_utf8_lossy(response.body())
    );
    assert_json_headers(response);
    let body = json_of(response);
    assert_eq!(body["errcode"], errcode, "{body}");
    assert!(body["error"].is_string());
}

fn token(response: &Response<Bytes>) -> String {
    ok_json(response)["sequence_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn system() -> Arc<dyn Entropy> {
    Arc::new(synapse_rendezvous_core::SystemEntropy)
}

// ---- The checks, each run on both stores -------------------------------------------------

fn discovery_answers_per_mode_and_caller(make: Maker<'_>) {
    let open = make(config(Msc4388Mode::Open), system());
    for authenticated in [false, true] {
        assert_eq!(
            ok_json(&open.discover(authenticated)),
            json!({"create_available": true})
        );
    }
    let closed = make(config(Msc4388Mode::Authenticated), system());
    assert_eq!(
        ok_json(&closed.discover(false)),
        json!({"create_available": false})
    );
    assert_eq!(
        ok_json(&closed.discover(true)),
        json!({"create_available": true})
    );
    // HEAD is GET without a body, as in Synapse.
    let head = open.send(Request::head(MSC4388_PREFIX).body(Bytes::new()).unwrap());
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.body().is_empty());
}

fn authenticated_mode_needs_the_extension_to_create(make: Maker<'_>) {
    let api = make(config(Msc4388Mode::Authenticated), system());
    let body = json!({"data": "hi"}).to_string();
    assert_error(
        &api.call(Method::POST, MSC4388_PREFIX, &body),
        403,
        "M_FORBIDDEN",
    );
    // Even a malformed body: the policy comes first.
    assert_error(
        &api.call(Method::POST, MSC4388_PREFIX, "{"),
        403,
        "M_FORBIDDEN",
    );
    let created = api.send(
        request(Method::POST, MSC4388_PREFIX, &body)
            .extension(Authenticated)
            .body(Bytes::from(body.clone()))
            .unwrap(),
    );
    let id = ok_json(&created)["id"].as_str().unwrap().to_owned();
    // Everything else needs no authentication.
    assert_eq!(ok_json(&api.get(&id))["data"], "hi");
    let current = token(&api.get(&id));
    api.write(&id, &current, "reply");
    ok_json(&api.delete(&id));
}

fn create_then_read_round_trips(make: Maker<'_>) {
    let api = make(open(), system());
    let data = "héllo \u{1F600} \"quoted\" \\ \n\u{0001}";
    let created = api.post(data);
    let body = ok_json(&created);
    let id = body["id"].as_str().unwrap();
    let first = body["sequence_token"].as_str().unwrap();
    assert_eq!(body["expires_in_ms"], 120_000);
    assert_eq!(body.as_object().unwrap().len(), 3);
    for text in [id, first] {
        assert!(text.len() <= 255);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)));
    }
    let id_parsed: SessionId = id.parse().unwrap();
    assert_eq!(
        first,
        SequenceToken::initial(id_parsed, data.as_bytes()).as_str()
    );
    api.advance_millis(1_500);
    let read = ok_json(&api.get(id));
    assert_eq!(
        read,
        json!({"data": data, "sequence_token": first, "expires_in_ms": 118_500})
    );
    // Empty data is data.
    let (empty, _) = api.create("");
    assert_eq!(ok_json(&api.get(&empty))["data"], "");
}

fn token_changes_on_every_write_identical_data_included(make: Maker<'_>) {
    let api = make(open(), system());
    let (id, t0) = api.create("same");
    let t1 = api.write(&id, &t0, "same");
    assert_ne!(t1, t0);
    let t2 = api.write(&id, &t1, "same");
    assert_ne!(t2, t1);
    assert_ne!(t2, t0);
    assert!(t1.starts_with("1.") && t2.starts_with("2."));
    let read = ok_json(&api.get(&id));
    assert_eq!(read["sequence_token"], t2.as_str());
    assert_eq!(read["data"], "same");
    let t3 = api.write(&id, &t2, "different");
    assert_eq!(ok_json(&api.get(&id))["data"], "different");
    assert_eq!(token(&api.get(&id)), t3);
    // Tokens differ between sessions holding the same data.
    let (other, o0) = api.create("same");
    assert_ne!(other, id);
    assert_ne!(o0, t0);
}

fn stale_token_with_the_current_data_is_an_idempotent_retry(make: Maker<'_>) {
    let api = make(open(), system());
    let (id, t0) = api.create("first");
    let t1 = api.write(&id, &t0, "second");
    let never_issued = SequenceToken::new(id.parse().unwrap(), 77, b"x").to_string();
    // The lost-response retry (the previous token), an older one, a token never issued, an
    // unparseable one, an empty one: all acknowledged with the current token.
    for presented in [t0.as_str(), never_issued.as_str(), "garbage!", "", "1.abc"] {
        assert_eq!(api.write(&id, presented, "second"), t1, "{presented:?}");
    }
    let read = ok_json(&api.get(&id));
    assert_eq!(read["sequence_token"], t1.as_str());
    assert_eq!(read["data"], "second");
    // Byte for byte: close is not equal.
    assert_error(
        &api.put(&id, &t0, "second "),
        409,
        "IO_ELEMENT_MSC4388_CONCURRENT_WRITE",
    );
    let metrics = api.service.metrics();
    assert_eq!(metrics.protocol(Protocol::Msc4388).retries, 5);
    assert_eq!(metrics.protocol(Protocol::Msc4388).conflicts, 1);
}

fn stale_token_with_other_data_is_409(make: Maker<'_>) {
    let api = make(open(), system());
    let (id, t0) = api.create("first");
    let t1 = api.write(&id, &t0, "second");
    for presented in [t0.as_str(), "never", ""] {
        assert_error(
            &api.put(&id, presented, "third"),
            409,
            "IO_ELEMENT_MSC4388_CONCURRENT_WRITE",
        );
    }
    let read = ok_json(&api.get(&id));
    assert_eq!(read["sequence_token"], t1.as_str());
    assert_eq!(read["data"], "second");
}

fn lifetime_is_fixed_and_every_method_is_404_after_expiry(make: Maker<'_>) {
    let api = make(open(), system());
    let (id, t0) = api.create("a");
    let (gone, _) = api.create("b");
    api.advance_millis(100_000);
    let t1 = api.write(&id, &t0, "written late");
    assert_eq!(ok_json(&api.get(&id))["expires_in_ms"], 20_000);
    api.advance_millis(19_999);
    assert_eq!(ok_json(&api.get(&id))["expires_in_ms"], 1);
    api.advance_millis(1);
    assert_error(&api.get(&id), 404, "M_NOT_FOUND");
    assert_error(&api.put(&id, &t1, "x"), 404, "M_NOT_FOUND");
    // The idempotent retry does not resurrect it either.
    assert_error(&api.put(&id, &t1, "written late"), 404, "M_NOT_FOUND");
    assert_error(&api.delete(&id), 404, "M_NOT_FOUND");
    assert_error(&api.delete(&gone), 404, "M_NOT_FOUND");
    assert_eq!(api.service.maintain().unwrap().live, 0);
}

fn delete_ends_the_session(make: Maker<'_>) {
    let api = make(open(), system());
    let (id, t0) = api.create("a");
    assert_eq!(ok_json(&api.delete(&id)), json!({}));
    assert_error(&api.get(&id), 404, "M_NOT_FOUND");
    assert_error(&api.put(&id, &t0, "a"), 404, "M_NOT_FOUND");
    assert_error(&api.delete(&id), 404, "M_NOT_FOUND");
    assert_eq!(
        api.service
            .metrics()
            .protocol(Protocol::Msc4388)
            .sessions_deleted,
        1
    );
}

fn data_over_4096_utf8_bytes_is_413(make: Maker<'_>) {
    let api = make(open(), system());
    // 1365 three-byte characters and two ASCII bytes: 4097 bytes in 1367 characters.
    let over = format!("{}ab", "€".repeat(1365));
    assert_eq!(over.len(), 4097);
    assert_eq!(over.chars().count(), 1367);
    let at = &over[..4096];
    assert_error(&api.post(&over), 413, "M_TOO_LARGE");
    let (id, t0) = api.create(at);
    assert_eq!(ok_json(&api.get(&id))["data"], at);
    assert_error(&api.put(&id, &t0, &over), 413, "M_TOO_LARGE");
    // 413 before the lookup.
    assert_error(&api.put("unknown", &t0, &over), 413, "M_TOO_LARGE");
    // Escaped JSON may be far longer than its data, and still within the limit.
    let escaped = format!("{{\"data\": \"{}\"}}", "\\u0001".repeat(4096));
    ok_json(&api.call(Method::POST, MSC4388_PREFIX, &escaped));
    // A larger body than any honest one: refused unparsed.
    let padded = format!("{{\"data\": \"\"{}}}", " ".repeat(40_000));
    assert_error(
        &api.call(Method::POST, MSC4388_PREFIX, &padded),
        413,
        "M_TOO_LARGE",
    );
}

fn malformed_bodies_are_400(make: Maker<'_>) {
    let api = make(open(), system());
    let (id, t0) = api.create("a");
    for bad in [
        "",
        "{",
        "[]",
        "\"data\"",
        "null",
        "{}",
        r#"{"data": 5}"#,
        r#"{"data": null}"#,
        r#"{"data": ["x"]}"#,
    ] {
        assert_error(
            &api.call(Method::POST, MSC4388_PREFIX, bad),
            400,
            "M_INVALID_PARAM",
        );
    }
    let missing_token = json!({"data": "a"}).to_string();
    let numeric_token = json!({"data": "a", "sequence_token": 1}).to_string();
    let missing_data = json!({ "sequence_token": t0 }).to_string();
    for bad in ["{", "[]", &missing_token, &numeric_token, &missing_data] {
        assert_error(
            &api.call(Method::PUT, &path(&id), bad),
            400,
            "M_INVALID_PARAM",
        );
        // Before the lookup.
        assert_error(
            &api.call(Method::PUT, &path("nope"), bad),
            400,
            "M_INVALID_PARAM",
        );
    }
    let invalid_utf8 = api.send(
        request(Method::POST, MSC4388_PREFIX, "x")
            .body(Bytes::from_static(b"{\"data\": \"\xff\"}"))
            .unwrap(),
    );
    assert_error(&invalid_utf8, 400, "M_INVALID_PARAM");
    assert_eq!(ok_json(&api.get(&id))["sequence_token"], t0.as_str());
}

fn unknown_and_malformed_ids_are_404(make: Maker<'_>) {
    let api = make(open(), system());
    let (_, t0) = api.create("a");
    let fresh = SessionId::generate(start(), &synapse_rendezvous_core::SystemEntropy)
        .unwrap()
        .to_string();
    for id in [
        fresh.as_str(),
        "nope",
        "%zz",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV".to_lowercase().as_str(),
    ] {
        assert_error(&api.get(id), 404, "M_NOT_FOUND");
        assert_error(&api.put(id, &t0, "a"), 404, "M_NOT_FOUND");
        assert_error(&api.delete(id), 404, "M_NOT_FOUND");
    }
    for other in ["/", "/a/b", "x"] {
        assert_error(
            &api.call(Method::GET, &format!("{MSC4388_PREFIX}{other}"), ""),
            404,
            "M_UNRECOGNIZED",
        );
    }
}

fn browser_navigation_is_403_before_the_lookup(make: Maker<'_>) {
    let api = make(open(), system());
    let (id, _) = api.create("secret");
    for (name, value) in [
        ("sec-fetch-dest", "document"),
        ("sec-fetch-dest", "image"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-user", "?1"),
        ("sec-fetch-site", "none"),
    ] {
        for target in [id.as_str(), "unknown"] {
            let response = api.send(
                Request::get(path(target))
                    .header(name, value)
                    .body(Bytes::new())
                    .unwrap(),
            );
            assert_error(&response, 403, "M_FORBIDDEN");
            assert!(!String::from_utf8_lossy(response.body()).contains("secret"));
        }
    }
    // What a script's fetch sends is served.
    let fetch = api.send(
        Request::get(path(&id))
            .header("sec-fetch-dest", "empty")
            .header("sec-fetch-mode", "cors")
            .header("sec-fetch-site", "cross-site")
            .body(Bytes::new())
            .unwrap(),
    );
    assert_eq!(ok_json(&fetch)["data"], "secret");
}

fn sessions_are_invisible_to_the_other_protocol(make: Maker<'_>) {
    let api = make(open(), system());
    // A 2024 session on MSC4388's paths.
    let old = api.create_2024("2024 payload");
    assert_error(&api.get(&old), 404, "M_NOT_FOUND");
    assert_error(&api.put(&old, "0.x", "2024 payload"), 404, "M_NOT_FOUND");
    assert_error(&api.delete(&old), 404, "M_NOT_FOUND");
    let read = api.call_2024(Method::GET, &old, "");
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.body().as_ref(), b"2024 payload");
    // An MSC4388 session on MSC4108's paths.
    let (new, t0) = api.create("2025 data");
    assert_eq!(
        api.call_2024(Method::GET, &new, "").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call_2024(Method::PUT, &new, "overwrite").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call_2024(Method::DELETE, &new, "").status(),
        StatusCode::NOT_FOUND
    );
    let read = ok_json(&api.get(&new));
    assert_eq!(read["data"], "2025 data");
    assert_eq!(read["sequence_token"], t0.as_str());
    assert_eq!(
        api.call_2024(Method::DELETE, &old, "").status(),
        StatusCode::NO_CONTENT
    );
    let metrics = api.service.metrics();
    assert_eq!(metrics.protocol(Protocol::Msc4108).sessions_created, 1);
    assert_eq!(metrics.protocol(Protocol::Msc4388).sessions_created, 1);
    assert_eq!(metrics.sessions_created, 2);
}

fn capacity_is_shared_and_refuses_without_evicting(make: Maker<'_>) {
    let api = make(
        Config {
            capacity: 2,
            ..open()
        },
        system(),
    );
    let old = api.create_2024("2024");
    let (new, _) = api.create("2025");
    api.advance_millis(10_000);
    let full = api.post("third");
    assert_error(&full, 429, "M_LIMIT_EXCEEDED");
    assert_eq!(json_of(&full)["retry_after_ms"], 110_000);
    assert_eq!(full.headers()["retry-after"], "110");
    let refused_2024 = api.send(
        Request::post(CREATE_PATH)
            .header("content-type", "text/plain")
            .header("content-length", "1")
            .body(Bytes::from_static(b"x"))
            .unwrap(),
    );
    assert_eq!(refused_2024.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(ok_json(&api.get(&new))["data"], "2025");
    assert_eq!(
        api.call_2024(Method::GET, &old, "").status(),
        StatusCode::OK
    );
    assert_eq!(api.service.maintain().unwrap().live, 2);
    ok_json(&api.delete(&new));
    api.create("room again");
}

fn rate_limits_and_quota_are_msc4108s(make: Maker<'_>) {
    let api = make(open(), system());
    let from = |builder: http::request::Builder| {
        builder.extension(ClientKey::new("192.0.2.7".parse().unwrap()))
    };
    let body = json!({"data": "x"}).to_string();
    let create = || {
        api.send(
            from(request(Method::POST, MSC4388_PREFIX, &body))
                .body(Bytes::from(body.clone()))
                .unwrap(),
        )
    };
    // The default create bucket: a burst of 10.
    let mut id = String::new();
    for _ in 0..10 {
        ok_json(&create())["id"]
            .as_str()
            .unwrap()
            .clone_into(&mut id);
    }
    let limited = create();
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
    assert!(json_of(&limited)["retry_after_ms"].as_u64().unwrap() > 0);
    // The session bucket: a burst of 50, then limited.
    let get = || api.send(from(Request::get(path(&id))).body(Bytes::new()).unwrap());
    for _ in 0..50 {
        ok_json(&get());
    }
    assert_error(&get(), 429, "M_LIMIT_EXCEEDED");
    assert_eq!(
        api.service
            .metrics()
            .protocol(Protocol::Msc4388)
            .rate_limited,
        2
    );
    // Another client is not affected.
    ok_json(&api.get(&id));
}

fn methods_preflight_and_headers(make: Maker<'_>) {
    let api = make(open(), system());
    let (id, _) = api.create("a");
    for (method, target) in [
        (Method::PUT, MSC4388_PREFIX.to_owned()),
        (Method::DELETE, MSC4388_PREFIX.to_owned()),
        (Method::PATCH, MSC4388_PREFIX.to_owned()),
        (Method::POST, path(&id)),
        (Method::PATCH, path(&id)),
    ] {
        assert_error(&api.call(method, &target, ""), 405, "M_UNRECOGNIZED");
    }
    for target in [MSC4388_PREFIX.to_owned(), path(&id)] {
        let preflight = api.call(Method::OPTIONS, &target, "");
        assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
        assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
        let methods = preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap();
        for method in ["GET", "POST", "PUT", "DELETE"] {
            assert!(methods.contains(method), "{methods}");
        }
        assert!(preflight.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Content-Type"));
    }
    // Conditional headers are ignored: a GET always carries the data.
    let conditional = api.send(
        Request::get(path(&id))
            .header("if-none-match", "*")
            .body(Bytes::new())
            .unwrap(),
    );
    assert_eq!(ok_json(&conditional)["data"], "a");
}

fn off_mode_serves_nothing_of_msc4388(make: Maker<'_>) {
    let api = make(Config::default(), system());
    let id = SessionId::generate(start(), &synapse_rendezvous_core::SystemEntropy)
        .unwrap()
        .to_string();
    for (method, target) in [
        (Method::GET, MSC4388_PREFIX.to_owned()),
        (Method::POST, MSC4388_PREFIX.to_owned()),
        (Method::OPTIONS, MSC4388_PREFIX.to_owned()),
        (Method::GET, path(&id)),
        (Method::PUT, path(&id)),
        (Method::DELETE, path(&id)),
    ] {
        let response = api.call(method, &target, r#"{"data": "x"}"#);
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{target}");
        assert_eq!(json_of(&response)["errcode"], "M_UNRECOGNIZED");
    }
    // MSC4108 is untouched.
    api.create_2024("still here");
}

macro_rules! on_both_stores {
    ($($check:ident),* $(,)?) => {
        mod on_memory {
            use super::*;
            $(
                #[test]
                fn $check() {
                    super::$check(&|config: Config, entropy| {
                        let store = Arc::new(MemoryStore::new(config.capacity));
                        Api::new(config, entropy, store)
                    });
                }
            )*
        }
        mod on_redis {
            use std::sync::atomic::{AtomicU32, Ordering};
            use super::*;
            $(
                #[test]
                fn $check() {
                    let _watchdog = Watchdog::arm(stringify!($check), LIMIT);
                    let server = RedisServer::start();
                    let port = server.port();
                    let stores = AtomicU32::new(0);
                    super::$check(&|config: Config, entropy| {
                        let prefix = format!("msc4388-{}:", stores.fetch_add(1, Ordering::Relaxed));
                        let store = redis_support::store_on_caller_clock(port, &prefix, config.capacity)
                            .with_bounds(config.max_payload_bytes, config.ttl);
                        Api::new(config, entropy, Arc::new(store))
                    });
                }
            )*
        }
    };
}

on_both_stores!(
    discovery_answers_per_mode_and_caller,
    authenticated_mode_needs_the_extension_to_create,
    create_then_read_round_trips,
    token_changes_on_every_write_identical_data_included,
    stale_token_with_the_current_data_is_an_idempotent_retry,
    stale_token_with_other_data_is_409,
    lifetime_is_fixed_and_every_method_is_404_after_expiry,
    delete_ends_the_session,
    data_over_4096_utf8_bytes_is_413,
    malformed_bodies_are_400,
    unknown_and_malformed_ids_are_404,
    browser_navigation_is_403_before_the_lookup,
    sessions_are_invisible_to_the_other_protocol,
    capacity_is_shared_and_refuses_without_evicting,
    rate_limits_and_quota_are_msc4108s,
    methods_preflight_and_headers,
    off_mode_serves_nothing_of_msc4388,
);

// ---- Across stores and processes -----------------------------------------------------------

/// A fixed history of requests; every response body, in order.
fn history(api: &Api) -> Vec<Value> {
    let mut bodies = Vec::new();
    let mut log = |response: Response<Bytes>| bodies.push(json_of(&response));
    let (a, a0) = api.create("alpha");
    let (b, b0) = api.create("alpha");
    log(api.get(&a));
    log(api.put(&a, &a0, "alpha"));
    let a1 = token(&api.get(&a));
    log(api.put(&a, &a1, "beta"));
    log(api.put(&a, &a0, "beta"));
    log(api.put(&a, &a0, "gamma"));
    log(api.put(&b, &b0, "β∂"));
    api.advance_millis(1_234);
    log(api.get(&a));
    log(api.get(&b));
    log(api.delete(&b));
    bodies.push(json!([a, a0, b, b0]));
    bodies
}

#[test]
fn tokens_are_byte_identical_on_memory_and_redis() {
    let _watchdog = Watchdog::arm("tokens_are_byte_identical_on_memory_and_redis", LIMIT);
    let server = RedisServer::start();
    let memory = Api::new(
        open(),
        Arc::new(CountingEntropy::default()),
        Arc::new(MemoryStore::new(10)),
    );
    let redis = Api::new(
        open(),
        Arc::new(CountingEntropy::default()),
        Arc::new(redis_support::store_on_caller_clock(
            server.port(),
            "same:",
            10,
        )),
    );
    let (on_memory, on_redis) = (history(&memory), history(&redis));
    assert_eq!(on_memory, on_redis);
    // And the history means what it says.
    let tokens: Vec<&str> = on_memory
        .iter()
        .filter_map(|body| body["sequence_token"].as_str())
        .collect();
    assert!(tokens.iter().all(|t| t.len() <= 64));
}

#[test]
fn redis_sessions_of_both_protocols_survive_a_new_process_and_are_maintained() {
    let _watchdog = Watchdog::arm("redis_survive", LIMIT);
    let server = RedisServer::start();
    let make = || {
        let store = redis_support::store_on_caller_clock(server.port(), "shared:", 10)
            .with_bounds(4096, Duration::from_secs(120));
        Api::new(open(), system(), Arc::new(store))
    };
    let first = make();
    let old = first.create_2024("2024");
    let (new, t0) = first.create("2025");
    let t1 = first.write(&new, &t0, "2025 again");
    first.advance_millis(60_000);
    let (later, _) = first.create("later");
    drop(first);

    let second = make();
    second.advance_millis(60_000);
    let read = ok_json(&second.get(&new));
    assert_eq!(read["sequence_token"], t1.as_str());
    assert_eq!(read["data"], "2025 again");
    assert_eq!(read["expires_in_ms"], 60_000);
    // The retry of the write the first process answered is still recognised.
    assert_eq!(second.write(&new, &t0, "2025 again"), t1);
    assert_eq!(
        second.call_2024(Method::GET, &old, "").status(),
        StatusCode::OK
    );
    let found = second.service.maintain().unwrap();
    assert_eq!((found.live, found.expired), (3, 0));
    second.advance_millis(60_000);
    let found = second.service.maintain().unwrap();
    assert_eq!((found.live, found.expired), (1, 2));
    assert_eq!(ok_json(&second.get(&later))["data"], "later");

    // The data model: an MSC4388 session is a hash under its own namespace, indexed with
    // the MSC4108 ones.
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let key = format!("shared:session:msc4388:{later}");
    let fields: Vec<String> = redis::cmd("HKEYS").arg(&key).query(&mut raw).unwrap();
    for field in ["payload", "etag", "last_modified", "expires"] {
        assert!(fields.iter().any(|f| f == field), "{fields:?}");
    }
    let score: Option<u64> = redis::cmd("ZSCORE")
        .arg("shared:sessions")
        .arg(format!("msc4388:{later}"))
        .query(&mut raw)
        .unwrap();
    assert!(score.is_some());
}

#[test]
fn redis_drops_msc4388_data_over_its_limit_as_forged() {
    let _watchdog = Watchdog::arm("redis_forged", LIMIT);
    let server = RedisServer::start();
    let store = redis_support::store_on_caller_clock(server.port(), "forge:", 10)
        .with_bounds(100_000, Duration::from_secs(120));
    let api = Api::new(open(), system(), Arc::new(store));
    let (id, t0) = api.create("small");
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap();
    let () = redis::cmd("HSET")
        .arg(format!("forge:session:msc4388:{id}"))
        .arg("payload")
        .arg("x".repeat(4097))
        .query(&mut raw)
        .unwrap();
    let response = api.get(&id);
    assert_error(&response, 404, "M_NOT_FOUND");
    assert!(response
        .extensions()
        .get::<synapse_rendezvous_core::Warning>()
        .is_some());
    assert_error(&api.put(&id, &t0, "x"), 404, "M_NOT_FOUND");
}

#[test]
fn snapshots_keep_the_protocol_and_still_load_version_1() {
    let dir = std::env::temp_dir().join(format!("msc4388-snapshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sessions.snapshot");
    let store = Arc::new(MemoryStore::new(10));
    let api = Api::new(open(), system(), store.clone());
    let old = api.create_2024("2024");
    let (new, t0) = api.create("2025");
    let t1 = api.write(&new, &t0, "written");
    let now = api.clock.now();
    let limits = |msc4388| Limits {
        capacity: 10,
        max_payload_bytes: 4096,
        ttl: Duration::from_secs(120),
        msc4388,
    };

    snapshot::save(&file, &store.live_sessions(now)).unwrap();
    assert_eq!(&std::fs::read(&file).unwrap()[..8], b"SRVSNAP2");
    let contents = snapshot::take(&file, &limits(true), now).unwrap().unwrap();
    let restored = Arc::new(MemoryStore::new(10));
    assert_eq!(restored.restore(contents.sessions, now), 2);
    let again = Api::new(open(), system(), restored);
    let read = ok_json(&again.get(&new));
    assert_eq!(read["sequence_token"], t1.as_str());
    assert_eq!(read["data"], "written");
    assert_eq!(
        again.call_2024(Method::GET, &old, "").status(),
        StatusCode::OK
    );
    assert_eq!(
        again.call_2024(Method::GET, &new, "").status(),
        StatusCode::NOT_FOUND
    );

    // With MSC4388 off, its sessions are not restored.
    snapshot::save(&file, &store.live_sessions(now)).unwrap();
    let contents = snapshot::take(&file, &limits(false), now).unwrap().unwrap();
    assert_eq!((contents.sessions.len(), contents.unserved), (1, 1));
    assert_eq!(contents.dropped(), 0);

    // Only MSC4108 sessions: version 1, loadable by older releases.
    ok_json(&api.delete(&new));
    snapshot::save(&file, &store.live_sessions(now)).unwrap();
    assert_eq!(&std::fs::read(&file).unwrap()[..8], b"SRVSNAP1");
    let contents = snapshot::take(&file, &limits(false), now).unwrap().unwrap();
    assert_eq!(contents.sessions.len(), 1);
    assert_eq!(contents.sessions[0].protocol, Protocol::Msc4108);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_are_counted_per_protocol() {
    let api = Api::new(open(), system(), Arc::new(MemoryStore::new(10)));
    let old = api.create_2024("x");
    api.call_2024(Method::GET, &old, "");
    let (new, t0) = api.create("y");
    api.get(&new);
    api.put(&new, "stale", "z");
    api.write(&new, &t0, "z");
    api.delete(&new);
    let metrics = api.service.metrics();
    let (old, new) = (
        metrics.protocol(Protocol::Msc4108),
        metrics.protocol(Protocol::Msc4388),
    );
    assert_eq!(old.responses, vec![("POST", 201, 1), ("GET", 200, 1)]);
    assert_eq!(
        new.responses,
        vec![
            ("POST", 200, 1),
            ("GET", 200, 1),
            ("PUT", 200, 1),
            ("PUT", 409, 1),
            ("DELETE", 200, 1)
        ]
    );
    assert_eq!(
        (new.sessions_created, new.sessions_deleted, new.conflicts),
        (1, 1, 1)
    );
    assert_eq!(metrics.responses.iter().map(|r| r.2).sum::<u64>(), 7);
    assert_eq!(Protocol::ALL.map(Protocol::name), ["msc4108", "msc4388"]);
}
