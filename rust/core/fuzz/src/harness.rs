//! The fuzz harness of [`Service::handle`]: turns any bytes into a short sequence of
//! requests against one fresh API over a memory store on a manual clock, and panics when a response breaks an
//! invariant that holds for every request, hostile or not.
//!
//! Shared by the libFuzzer target (`fuzz_targets/handle_request.rs`) and by
//! `tests/model/main.rs`, which replays the seed corpus and every crash found, so that the
//! harness builds and its seeds pass on every `cargo test`.
//!
//! # Input format
//!
//! Text-like, so that seeds can be written by hand and libFuzzer's mutations stay meaningful.
//! Requests are separated by a line `===`. Each request is a head, an empty line, then the
//! body (the rest of the request, byte for byte):
//!
//! ```text
//! +1500                     optional: move the clock forward 1500 ms first
//! !                         optional: run maintenance (reclaim ended sessions) first
//! PUT /_synapse/client/rendezvous/$1
//! Content-Length: $L
//! If-Match: $W1
//!
//! body bytes
//! ```
//!
//! Substitutions, in the request line and in header values: `$0` to `$9` the id of a
//! session (two are created before the input runs, every 201 adds one; the digit is taken
//! modulo their number), `$U` a well-formed id never issued, `$T0`..`$T9` the current `ETag`
//! of a session, `$W0`..`$W9` the same as a weak tag, `$L` the body's length. The
//! pseudo-header `X-Client: n` makes the request come from one of a few client addresses,
//! so that rate limits and per-client quotas apply to it.
//!
//! [`Service::handle`]: synapse_rendezvous_core::Service::handle

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CONTENT_LENGTH, CONTENT_TYPE, DATE, ETAG, EXPIRES, LAST_MODIFIED,
    RETRY_AFTER,
};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::Value;
use synapse_rendezvous_core::rate_limit::{BucketConfig, ClientKey, RateLimitConfig};
use synapse_rendezvous_core::{
    Clock, Config, Entropy, EntropyError, ManualClock, MemoryStore, Rendezvous, Routes, Service,
    CREATE_PATH, SESSION_PREFIX,
};

/// Most requests run per input, so that every input stays fast.
const MAX_REQUESTS: usize = 16;
const MAX_PAYLOAD: usize = 64;
const TTL: Duration = Duration::from_secs(30);
const BASEURL: &str = "https://matrix.example.org/";
/// Well formed, never issued.
const UNKNOWN_ID: &str = "01KQ3ZZZZZZZZZZZZZZZZZZZZZ";
/// The session URL prefix of 201 answers.
const URL_PREFIX: &str = "https://matrix.example.org/_synapse/client/rendezvous/";

/// Every status the API may answer with a working memory store.
const STATUSES: &[u16] = &[200, 201, 202, 204, 304, 400, 404, 405, 412, 413, 429];
const ERRCODES: &[&str] = &[
    "M_MISSING_PARAM",
    "M_INVALID_PARAM",
    "M_TOO_LARGE",
    "M_NOT_FOUND",
    "M_UNRECOGNIZED",
    "M_LIMIT_EXCEEDED",
    "M_UNKNOWN",
];

/// Deterministic randomness, so that a crash replays exactly.
#[derive(Debug, Default)]
struct CountingEntropy {
    next: AtomicU64,
}

impl Entropy for CountingEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyError> {
        let count = self.next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        buf.fill(0);
        let n = buf.len().min(count.len());
        let tail = buf.len() - n;
        buf[tail..].copy_from_slice(&count[count.len() - n..]);
        Ok(())
    }
}

/// What the harness knows of one session from the answers it got.
struct Known {
    payload: Bytes,
    /// As in the `ETag` header: quoted.
    etag: String,
    expires: HeaderValue,
    expires_at: SystemTime,
    deleted: bool,
}

struct Harness {
    clock: Arc<ManualClock>,
    api: Service,
    ids: Vec<String>,
    sessions: HashMap<String, Known>,
    issued: HashSet<String>,
}

/// Runs `data` as a sequence of requests; panics on the first broken invariant.
pub fn run(data: &[u8]) {
    let mut harness = Harness::new();
    for payload in [&b"first"[..], b""] {
        let mut request = Request::new(Bytes::copy_from_slice(payload));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = http::Uri::from_static(CREATE_PATH);
        let headers = request.headers_mut();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(payload.len()));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let response = harness.send(&request);
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "setup create failed"
        );
    }
    for chunk in split(data, b"\n===\n").take(MAX_REQUESTS) {
        harness.step(chunk);
    }
}

impl Harness {
    fn new() -> Self {
        let config = Config {
            ttl: TTL,
            max_payload_bytes: MAX_PAYLOAD,
            capacity: 4,
            rate_limit: RateLimitConfig {
                create: BucketConfig {
                    per_second: 0.5,
                    burst: 3,
                },
                session: BucketConfig {
                    per_second: 2.0,
                    burst: 6,
                },
                max_sessions_per_ip: 2,
                ..RateLimitConfig::default()
            },
            ..Config::default()
        };
        let clock = Arc::new(ManualClock::new(
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        ));
        let store = Arc::new(MemoryStore::new(config.capacity));
        let rendezvous = Rendezvous::new(
            config,
            Arc::new(CountingEntropy::default()),
            Routes::takeover(),
            BASEURL,
        );
        let api = Service::new(rendezvous, store, clock.clone());
        Self {
            clock,
            api,
            ids: Vec::new(),
            sessions: HashMap::new(),
            issued: HashSet::new(),
        }
    }

    /// Parses and sends one request of the input; a chunk that is not a valid HTTP request
    /// (bad method, URI or header) is sent without the offending part, or skipped.
    fn step(&mut self, chunk: &[u8]) {
        let (head, body) = match find(chunk, b"\n\n") {
            Some(at) => (&chunk[..at], &chunk[at + 2..]),
            None => (chunk, &b""[..]),
        };
        let body = Bytes::copy_from_slice(body);
        let mut lines = head.split(|&b| b == b'\n').peekable();
        while let Some(line) = lines.next_if(|line| line.starts_with(b"+") || *line == b"!") {
            if line == b"!" {
                assert!(self.api.maintain().is_ok(), "maintenance failed");
            } else {
                let millis = std::str::from_utf8(&line[1..])
                    .ok()
                    .and_then(|text| text.trim().parse::<u64>().ok())
                    .unwrap_or(1000)
                    .min(10_000_000);
                self.clock.advance(Duration::from_millis(millis));
            }
        }
        let Some(request_line) = lines.next() else {
            return;
        };
        let request_line = self.substitute(request_line, body.len());
        let mut parts = request_line.splitn(2, |&b| b == b' ');
        let Ok(method) = Method::from_bytes(parts.next().unwrap_or_default()) else {
            return;
        };
        let Ok(uri) = http::Uri::try_from(parts.next().unwrap_or_default()) else {
            return;
        };
        let mut request = Request::new(body.clone());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let value = self.substitute(line[colon + 1..].trim_ascii(), body.len());
            let name = &line[..colon];
            if name.eq_ignore_ascii_case(b"x-client") {
                let n = value.first().copied().unwrap_or_default();
                request.extensions_mut().insert(client(n));
                continue;
            }
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_bytes(&value),
            ) else {
                continue;
            };
            request.headers_mut().append(name, value);
        }
        self.send(&request);
    }

    /// Replaces the `$` placeholders of a request line or header value.
    fn substitute(&self, text: &[u8], body_len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            let digit = |at: usize| {
                rest.get(at)
                    .filter(|b| b.is_ascii_digit())
                    .map(|b| b - b'0')
            };
            let (replacement, used): (Option<Vec<u8>>, usize) = match rest {
                [b'$', b'L', ..] => (Some(body_len.to_string().into_bytes()), 2),
                [b'$', b'U', ..] => (Some(UNKNOWN_ID.as_bytes().to_vec()), 2),
                [b'$', b'T' | b'W', ..] if digit(2).is_some() => {
                    let tag = self.tag(digit(2).unwrap_or_default());
                    let weak = if rest[1] == b'W' { "W/" } else { "" };
                    (Some(format!("{weak}{tag}").into_bytes()), 3)
                }
                [b'$', ..] if digit(1).is_some() => {
                    (Some(self.id(digit(1).unwrap_or_default()).into_bytes()), 2)
                }
                _ => (None, 1),
            };
            match replacement {
                Some(bytes) => out.extend_from_slice(&bytes),
                None => out.push(text[i]),
            }
            i += used;
        }
        out
    }

    fn id(&self, n: u8) -> String {
        if self.ids.is_empty() {
            return UNKNOWN_ID.to_owned();
        }
        self.ids[usize::from(n) % self.ids.len()].clone()
    }

    /// The current `ETag` of a session, quoted as in the header.
    fn tag(&self, n: u8) -> String {
        self.sessions
            .get(&self.id(n))
            .map_or_else(|| "\"none\"".to_owned(), |known| known.etag.clone())
    }

    /// Sends `request`, checks every invariant of its response, and learns from it.
    fn send(&mut self, request: &Request<Bytes>) -> Response<Bytes> {
        let response = self.api.handle(request);
        let context = Context {
            request,
            response: &response,
        };
        check_every_response(&context);
        self.check_session(&context);
        response
    }

    /// What the answer says about the session the request addressed, against what the
    /// harness saw before.
    fn check_session(&mut self, context: &Context<'_>) {
        let (request, response) = (context.request, context.response);
        let status = response.status();
        if status == StatusCode::CREATED {
            self.learn_created(context);
            return;
        }
        let Some(id) = session_of(request.uri().path()) else {
            return;
        };
        let now = self.clock.now();
        let Some(known) = self.sessions.get_mut(&id) else {
            context.assert(
                (!status.is_success() && status != StatusCode::NOT_MODIFIED)
                    || request.method() == Method::OPTIONS,
                "a session never created answered",
            );
            return;
        };
        let gone = known.deleted || now >= known.expires_at;
        let about_session = matches!(status.as_u16(), 200 | 202 | 304 | 412)
            || (status == StatusCode::NO_CONTENT && request.method() == Method::DELETE);
        if !about_session {
            return;
        }
        context.assert(!gone, "a deleted or expired session answered");
        let etag = header(response, &ETAG);
        if status != StatusCode::NO_CONTENT {
            context.assert(
                header(response, &EXPIRES) == known.expires.to_str().ok(),
                "Expires changed",
            );
        }
        match status.as_u16() {
            202 => {
                let etag = etag.unwrap_or_default().to_owned();
                context.assert(etag != known.etag, "a write kept the ETag");
                context.assert(self.issued.insert(etag.clone()), "a write reused an ETag");
                known.etag = etag;
                known.payload = request.body().clone();
                self.read_back(&id, context);
            }
            204 => known.deleted = true,
            _ => {
                context.assert(etag == Some(&known.etag), "ETag changed without a write");
                if status == StatusCode::OK && request.method() == Method::GET {
                    context.assert(response.body() == &known.payload, "GET lost a write");
                }
            }
        }
    }

    fn learn_created(&mut self, context: &Context<'_>) {
        let response = context.response;
        context.assert(
            context.request.method() == Method::POST,
            "201 for a non-POST",
        );
        let body: Value = serde_json::from_slice(response.body()).unwrap_or_default();
        let url = body["url"].as_str().unwrap_or_default();
        let id = url.strip_prefix(URL_PREFIX).unwrap_or_default().to_owned();
        context.assert(id.len() == 26, "201 without a session URL");
        context.assert(!self.sessions.contains_key(&id), "an id was issued twice");
        let etag = header(response, &ETAG).unwrap_or_default().to_owned();
        context.assert(self.issued.insert(etag.clone()), "a create reused an ETag");
        let expires = response.headers().get(EXPIRES).cloned();
        let now = self.clock.now();
        self.sessions.insert(
            id.clone(),
            Known {
                payload: context.request.body().clone(),
                etag,
                expires: expires.unwrap_or_else(|| HeaderValue::from_static("")),
                expires_at: now + TTL,
                deleted: false,
            },
        );
        self.ids.push(id.clone());
        self.read_back(&id, context);
    }

    /// Reads a session just written, as a client without a rate limit: the write must show.
    fn read_back(&mut self, id: &str, context: &Context<'_>) {
        let request = Request::builder()
            .uri(format!("{SESSION_PREFIX}/{id}"))
            .body(Bytes::new())
            .unwrap_or_default();
        let response = self.api.handle(&request);
        check_every_response(&Context {
            request: &request,
            response: &response,
        });
        let known = &self.sessions[id];
        context.assert(
            response.status() == StatusCode::OK
                && response.body() == &known.payload
                && header(&response, &ETAG) == Some(&known.etag),
            "reading back a write did not return it",
        );
    }
}

/// A request and its response, for messages.
struct Context<'a> {
    request: &'a Request<Bytes>,
    response: &'a Response<Bytes>,
}

impl Context<'_> {
    #[track_caller]
    fn assert(&self, holds: bool, what: &str) {
        assert!(
            holds,
            "{what}\nrequest: {:?}\nbody: {:?}\nresponse: {:?}\nbody: {:?}",
            self.request,
            String::from_utf8_lossy(self.request.body()),
            self.response,
            String::from_utf8_lossy(self.response.body())
        );
    }
}

/// What holds for every response, whatever the request.
fn check_every_response(context: &Context<'_>) {
    let (request, response) = (context.request, context.response);
    let status = response.status();
    let method = request.method();
    context.assert(STATUSES.contains(&status.as_u16()), "unexpected status");
    context.assert(
        header(response, &ACCESS_CONTROL_ALLOW_ORIGIN) == Some("*"),
        "no CORS header",
    );
    context.assert(header(response, &DATE).is_some(), "no Date");
    let length = header(response, &CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
    let head = method == Method::HEAD;
    if status == StatusCode::NOT_MODIFIED || head {
        // The length of the representation they stand for, without it.
        context.assert(response.body().is_empty(), "HEAD or 304 with a body");
        context.assert(length.is_some(), "HEAD or 304 without a Content-Length");
    } else {
        context.assert(
            length == Some(response.body().len()),
            "Content-Length differs from the body",
        );
    }
    let allowed: &[Method] = match status.as_u16() {
        201 => &[Method::POST],
        202 | 412 => &[Method::PUT],
        200 | 304 => &[Method::GET, Method::HEAD],
        204 => &[Method::DELETE, Method::OPTIONS],
        413 => &[Method::POST, Method::PUT],
        _ => &[],
    };
    context.assert(
        allowed.is_empty() || allowed.contains(method),
        "status impossible for this method",
    );
    if matches!(status.as_u16(), 200 | 201 | 202 | 304 | 412) {
        for name in [&ETAG, &EXPIRES, &LAST_MODIFIED] {
            context.assert(header(response, name).is_some(), "a validator is missing");
        }
        let etag = header(response, &ETAG).unwrap_or_default();
        context.assert(
            etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
            "ETag is not strong and quoted",
        );
    }
    if status.is_client_error() && !(head && response.body().is_empty()) {
        context.assert(
            header(response, &CONTENT_TYPE) == Some("application/json"),
            "error without JSON type",
        );
        let body: Value = serde_json::from_slice(response.body()).unwrap_or_default();
        let errcode = body["errcode"].as_str().unwrap_or_default();
        context.assert(ERRCODES.contains(&errcode), "error without a known errcode");
        context.assert(body["error"].is_string(), "error without a message");
        if status == StatusCode::TOO_MANY_REQUESTS {
            context.assert(
                body["retry_after_ms"].is_u64() && header(response, &RETRY_AFTER).is_some(),
                "429 without retry_after_ms and Retry-After",
            );
        }
    }
}

/// The id in a session path, percent-decoded; `None` for other paths.
fn session_of(path: &str) -> Option<String> {
    let segment = path.strip_prefix(SESSION_PREFIX)?.strip_prefix('/')?;
    let mut decoded = Vec::new();
    let mut bytes = segment.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let text = std::str::from_utf8(&hex).ok()?;
            decoded.push(u8::from_str_radix(text, 16).ok()?);
        } else {
            decoded.push(byte);
        }
    }
    String::from_utf8(decoded).ok()
}

fn header<'r>(response: &'r Response<Bytes>, name: &HeaderName) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn client(n: u8) -> ClientKey {
    let address = match n % 4 {
        0 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        1 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        2 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1)),
        _ => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2)),
    };
    ClientKey::new(address)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn split<'a>(data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        if let Some(at) = find(current, separator) {
            rest = Some(&current[at + separator.len()..]);
            Some(&current[..at])
        } else {
            rest = None;
            Some(current)
        }
    })
}
