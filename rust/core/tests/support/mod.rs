//! Helpers for the spec tests: a [`Harness`] around a [`Service`] over a [`MemoryStore`],
//! driven by a [`ManualClock`], a request builder, and assertions on replies.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use headers::{Date, Expires, Header, HeaderMapExt, LastModified};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::Value;
use synapse_rendezvous_core::metrics::MetricsSnapshot;
use synapse_rendezvous_core::rate_limit::ClientKey;
use synapse_rendezvous_core::store::Maintenance;
use synapse_rendezvous_core::{
    Clock, Config, Entropy, EntropyError, ManualClock, MemoryStore, Rendezvous, Routes, Service,
    SessionId, Store, SystemEntropy, CREATE_PATH, SESSION_PREFIX,
};

/// The homeserver's `public_baseurl` in every harness unless told otherwise.
pub const BASEURL: &str = "https://matrix.example.org/";

/// Whole seconds, so that HTTP dates (second resolution) equal the clock exactly.
pub fn start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// `secs` seconds after [`start`].
pub fn at(secs: u64) -> SystemTime {
    start() + Duration::from_secs(secs)
}

/// An [`Entropy`] that is poor but never repeats: each draw is a counter, big-endian, at the
/// end of an otherwise zero buffer.
#[derive(Debug, Default)]
pub struct CountingEntropy {
    next: AtomicU64,
}

impl Entropy for CountingEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyError> {
        let count = self.next.fetch_add(1, Ordering::SeqCst).to_be_bytes();
        buf.fill(0);
        let n = buf.len().min(count.len());
        let tail = buf.len() - n;
        buf[tail..].copy_from_slice(&count[count.len() - n..]);
        Ok(())
    }
}

/// One [`Service`] with a manual clock that starts at [`start`].
pub struct Harness {
    /// The clock every request is stamped with.
    pub clock: Arc<ManualClock>,
    /// The API under test, over its store.
    pub service: Service,
}

impl Harness {
    /// Default configuration, takeover routes, system entropy.
    pub fn new() -> Self {
        Self::build(
            Config::default(),
            Routes::takeover(),
            Arc::new(SystemEntropy),
            BASEURL,
        )
    }

    /// `config`, takeover routes, system entropy.
    pub fn with_config(config: Config) -> Self {
        Self::build(config, Routes::takeover(), Arc::new(SystemEntropy), BASEURL)
    }

    /// Default configuration with `capacity` live sessions at most.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_config(Config {
            capacity,
            ..Config::default()
        })
    }

    /// Default configuration with sessions living `secs` seconds.
    pub fn with_ttl(secs: u64) -> Self {
        Self::with_config(Config {
            ttl: Duration::from_secs(secs),
            ..Config::default()
        })
    }

    /// Default configuration, delegation routes.
    pub fn delegation() -> Self {
        Self::build(
            Config::default(),
            Routes::delegation(),
            Arc::new(SystemEntropy),
            BASEURL,
        )
    }

    /// Default configuration and routes, session URLs under `public_baseurl`.
    pub fn with_baseurl(public_baseurl: &str) -> Self {
        Self::build(
            Config::default(),
            Routes::takeover(),
            Arc::new(SystemEntropy),
            public_baseurl,
        )
    }

    /// Default configuration and routes, randomness from `entropy`.
    pub fn with_entropy(entropy: Arc<dyn Entropy>) -> Self {
        Self::build(Config::default(), Routes::takeover(), entropy, BASEURL)
    }

    /// `config` over `store` instead of a memory store of the configured capacity.
    pub fn with_store(config: Config, store: Arc<dyn Store>) -> Self {
        Self::build_on(
            config,
            Routes::takeover(),
            Arc::new(SystemEntropy),
            BASEURL,
            store,
        )
    }

    fn build(
        config: Config,
        routes: Routes,
        entropy: Arc<dyn Entropy>,
        public_baseurl: &str,
    ) -> Self {
        let store = Arc::new(MemoryStore::new(config.capacity));
        Self::build_on(config, routes, entropy, public_baseurl, store)
    }

    fn build_on(
        config: Config,
        routes: Routes,
        entropy: Arc<dyn Entropy>,
        public_baseurl: &str,
        store: Arc<dyn Store>,
    ) -> Self {
        let clock = Arc::new(ManualClock::new(start()));
        let rendezvous = Rendezvous::new(config, entropy, routes, public_baseurl);
        let service = Service::new(rendezvous, store, clock.clone());
        Self { clock, service }
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Moves the clock forward by `millis` milliseconds.
    pub fn advance_millis(&self, millis: u64) {
        self.clock.advance(Duration::from_millis(millis));
    }

    /// A request with no headers and no body, to complete and [`Req::send`].
    pub fn request(&self, method: Method, uri: &str) -> Req<'_> {
        Req {
            harness: self,
            method,
            uri: uri.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
            client: None,
        }
    }

    /// `POST` on the standard create path with a well-formed `text/plain` upload.
    pub fn post(&self, body: &str) -> Reply {
        self.request(Method::POST, CREATE_PATH)
            .text(Bytes::copy_from_slice(body.as_bytes()))
            .send()
    }

    /// A session created with `body`, asserting the 201.
    pub fn create(&self, body: &str) -> Created {
        let reply = self.post(body);
        reply.assert_status(StatusCode::CREATED);
        Created::from_reply(&reply)
    }

    /// `GET` with an optional `If-None-Match`.
    pub fn get(&self, url: &str, if_none_match: Option<&str>) -> Reply {
        self.request(Method::GET, url)
            .maybe_header("if-none-match", if_none_match)
            .send()
    }

    /// `HEAD` with an optional `If-None-Match`.
    pub fn head(&self, url: &str, if_none_match: Option<&str>) -> Reply {
        self.request(Method::HEAD, url)
            .maybe_header("if-none-match", if_none_match)
            .send()
    }

    /// `PUT` of a well-formed `text/plain` upload with an optional `If-Match`.
    pub fn put(&self, url: &str, body: &str, if_match: Option<&str>) -> Reply {
        self.request(Method::PUT, url)
            .text(Bytes::copy_from_slice(body.as_bytes()))
            .maybe_header("if-match", if_match)
            .send()
    }

    /// `DELETE`.
    pub fn delete(&self, url: &str) -> Reply {
        self.request(Method::DELETE, url).send()
    }

    /// One maintenance run at the clock's time, which must not fail on the memory store.
    pub fn maintain(&self) -> Maintenance {
        self.service.maintain().expect("maintain")
    }

    /// How many sessions are live, by a maintenance run.
    pub fn live_count(&self) -> usize {
        self.maintain().live
    }

    /// How many ended sessions a maintenance run removed.
    pub fn reclaim_expired(&self) -> usize {
        self.maintain().expired
    }

    /// Every counter of the API.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.service.metrics()
    }
}

/// Runs `check` once against a create (`POST`) and once against a write (`PUT` with
/// `If-Match: *` on a live session), each time on a fresh default harness. The request comes
/// with its method, path and (for the write) `If-Match`; `check` adds the rest and sends.
pub fn for_each_upload(check: impl Fn(Req<'_>)) {
    let harness = Harness::new();
    check(harness.request(Method::POST, CREATE_PATH));

    let harness = Harness::new();
    let session = harness.create("before");
    check(
        harness
            .request(Method::PUT, &session.path)
            .header("if-match", "*"),
    );
}

/// What a successful create gave back.
#[derive(Debug, Clone)]
pub struct Created {
    /// The absolute session URL from the body.
    pub url: String,
    /// Its path, to address requests with.
    pub path: String,
    /// The id at its end.
    pub id: String,
    /// The `ETag` header of the 201.
    pub etag: String,
}

impl Created {
    fn from_reply(reply: &Reply) -> Self {
        let url = reply.json()["url"]
            .as_str()
            .expect("201 body has a string url")
            .to_owned();
        let path = url
            .parse::<http::Uri>()
            .expect("the url is a URI")
            .path()
            .to_owned();
        let id = url.rsplit('/').next().expect("url has an id").to_owned();
        Self {
            url,
            path,
            id,
            etag: reply.etag().to_owned(),
        }
    }

    /// The parsed id.
    pub fn session_id(&self) -> SessionId {
        self.id.parse().expect("the id parses as a SessionId")
    }
}

/// The path of the session with id `id` (valid or not).
pub fn session_path(id: &str) -> String {
    format!("{SESSION_PREFIX}/{id}")
}

/// A request being built.
pub struct Req<'h> {
    harness: &'h Harness,
    method: Method,
    uri: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    client: Option<ClientKey>,
}

impl Req<'_> {
    /// Sends the request as from `address`, as the binding does with Synapse's client IP.
    #[must_use]
    pub fn from(mut self, address: &str) -> Self {
        self.client = Some(ClientKey::new(address.parse().expect("an IP address")));
        self
    }

    /// Adds a header line (repeatable).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a header line if `value` is given.
    #[must_use]
    pub fn maybe_header(self, name: &str, value: Option<&str>) -> Self {
        match value {
            Some(value) => self.header(name, value),
            None => self,
        }
    }

    /// Sets the body alone, without any header.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the body with a matching `Content-Length` and no `Content-Type`.
    #[must_use]
    pub fn sized(self, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        let length = body.len().to_string();
        self.header("content-length", &length).body(body)
    }

    /// Sets the body with a matching `Content-Length` and `Content-Type: text/plain`.
    #[must_use]
    pub fn text(self, body: impl Into<Bytes>) -> Self {
        self.header("content-type", "text/plain").sized(body)
    }

    /// Answers the request.
    pub fn send(self) -> Reply {
        let label = format!("{} {}", self.method, self.uri);
        let mut builder = Request::builder().method(self.method).uri(&self.uri);
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(client) = self.client {
            builder = builder.extension(client);
        }
        let request = builder.body(self.body).expect("a valid request");
        Reply {
            label,
            now: self.harness.clock.now(),
            response: self.harness.service.handle(&request),
        }
    }
}

/// A response, with what it answered and when.
pub struct Reply {
    /// Method and URI of the request, for assertion messages.
    pub label: String,
    /// The clock when the request was answered.
    pub now: SystemTime,
    /// The response itself.
    pub response: Response<Bytes>,
}

impl Reply {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// Every header.
    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        self.response.body()
    }

    /// The only value of header `name`, as text; `None` when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers().get_all(name).iter();
        let value = values.next()?;
        assert!(
            values.next().is_none(),
            "{}: header {name} is repeated",
            self.label
        );
        Some(value.to_str().expect("header value is text"))
    }

    /// The only value of header `name`, which must be present.
    pub fn must_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("{}: {} has no {name} header", self.label, self.status()))
    }

    /// The `ETag` header.
    pub fn etag(&self) -> &str {
        self.must_header("etag")
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(self.body())
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {:?}", self.label, self.body()))
    }

    /// A typed date header as a time.
    pub fn date_of<H>(&self) -> SystemTime
    where
        H: Header + Into<SystemTime>,
    {
        let name = H::name();
        let text = self.must_header(name.as_str());
        assert_http_date(&self.label, name.as_str(), text);
        self.headers()
            .typed_get::<H>()
            .unwrap_or_else(|| panic!("{}: {name} is not an HTTP date: {text}", self.label))
            .into()
    }

    /// `Expires` as a time.
    pub fn expires(&self) -> SystemTime {
        self.date_of::<Expires>()
    }

    /// `Last-Modified` as a time.
    pub fn last_modified(&self) -> SystemTime {
        self.date_of::<LastModified>()
    }

    /// `Date` as a time.
    pub fn date(&self) -> SystemTime {
        self.date_of::<Date>()
    }

    /// `Content-Length` as a number.
    pub fn content_length(&self) -> u64 {
        let text = self.must_header("content-length");
        text.parse()
            .unwrap_or_else(|_| panic!("{}: Content-Length {text:?} is not a number", self.label))
    }

    /// Asserts the status.
    #[track_caller]
    pub fn assert_status(&self, status: StatusCode) -> &Self {
        assert_eq!(
            self.status(),
            status,
            "{}: unexpected status; body {:?}",
            self.label,
            String::from_utf8_lossy(self.body())
        );
        self
    }

    /// Asserts a Matrix JSON error with this status and errcode.
    #[track_caller]
    pub fn assert_error(&self, status: u16, errcode: &str) -> &Self {
        self.assert_status(StatusCode::from_u16(status).expect("a status code"));
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}: errors are JSON",
            self.label
        );
        let json = self.json();
        assert_eq!(
            json["errcode"], errcode,
            "{}: errcode in {json}",
            self.label
        );
        assert!(
            json["error"].as_str().is_some_and(|text| !text.is_empty()),
            "{}: an error has human text: {json}",
            self.label
        );
        self
    }

    /// Asserts the headers every response carries: caching, CORS, an explicit length that
    /// matches the body, and a `Date` equal to the clock.
    #[track_caller]
    pub fn assert_common_headers(&self) -> &Self {
        let label = &self.label;
        assert_eq!(
            self.header("cache-control"),
            Some("no-store, no-transform"),
            "{label}"
        );
        assert_eq!(self.header("pragma"), Some("no-cache"), "{label}");
        assert_eq!(
            self.header("access-control-allow-origin"),
            Some("*"),
            "{label}"
        );
        let exposed = self.must_header("access-control-expose-headers");
        assert!(
            list_contains(exposed, "etag"),
            "{label}: ETag is not exposed: {exposed:?}"
        );
        let length = self.content_length();
        if self.status() != StatusCode::NOT_MODIFIED && !self.label.starts_with("HEAD ") {
            assert_eq!(
                length,
                self.body().len() as u64,
                "{label}: Content-Length is the body's"
            );
        }
        assert_eq!(self.date(), self.now, "{label}: Date is the clock");
        self
    }

    /// Asserts `ETag` (strong, quoted), `Expires` and `Last-Modified` (HTTP dates).
    #[track_caller]
    pub fn assert_validators(&self) -> &Self {
        assert_strong_etag(&self.label, self.etag());
        self.expires();
        self.last_modified();
        self
    }
}

/// Whether the comma-separated header value `list` names `item`, case-insensitively.
pub fn list_contains(list: &str, item: &str) -> bool {
    list.split(',').any(|x| x.trim().eq_ignore_ascii_case(item))
}

/// Asserts a strong quoted entity tag.
#[track_caller]
pub fn assert_strong_etag(label: &str, etag: &str) {
    assert!(
        etag.len() >= 2
            && etag.starts_with('"')
            && etag.ends_with('"')
            && !etag[1..etag.len() - 1].contains('"'),
        "{label}: ETag {etag:?} is not a strong quoted tag"
    );
}

/// Asserts the preferred HTTP date format, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
#[track_caller]
pub fn assert_http_date(label: &str, name: &str, text: &str) {
    assert!(
        text.len() == 29 && text.ends_with(" GMT") && text.as_bytes()[3] == b',',
        "{label}: {name} {text:?} is not an IMF-fixdate"
    );
}

/// The 80 random bits of a ULID.
pub fn random_part(id: SessionId) -> u128 {
    u128::from_be_bytes(id.to_bytes()) & ((1u128 << 80) - 1)
}
