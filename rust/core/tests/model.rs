//! Random sequences of operations, hostile ones included, driven through
//! [`Rendezvous::handle`] and checked response by response against a small reference model of
//! MSC4108 sessions (a map of id to payload, tag and expiry).
//!
//! The model is generic over the store ([`check_model`] takes a store factory), so that every
//! store gives the same observable behaviour. It runs for the memory store, and for the Redis
//! store against a `redis-server` the test starts itself on a free loopback port (it fails,
//! rather than skipping, when `redis-server` is not installed; `REDIS_SERVER` may name
//! another binary). `PROPTEST_CASES` sets the number of random sequences per store.
//!
//! Also home to the replay of the fuzz target's seed corpus (`rust/core/fuzz`, whose harness
//! is compiled into this test too) and to regression tests of what the fuzzer found.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use headers::{Date, Expires, Header, LastModified};
use http::header::{
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, PRAGMA,
    RETRY_AFTER, TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::Value;
use synapse_rendezvous_core::rate_limit::RateLimitConfig;
use synapse_rendezvous_core::{
    Config, CreateOutcome, EntityTagList, Entropy, EntropyError, ManualClock, MemoryStore,
    RedisConfig, RedisStore, Rendezvous, ReplaceOutcome, Routes, Session, SessionId, Store,
    StoreError, Version, CREATE_PATH, SESSION_PREFIX,
};

// ---------------------------------------------------------------------------------------
// The system under test
// ---------------------------------------------------------------------------------------

/// Small, so that capacity refusals happen often.
const CAPACITY: usize = 3;
/// Short, so that random clock moves cross it often.
const TTL: Duration = Duration::from_secs(30);
/// Small, so that bodies at and over the limit are cheap.
const MAX_PAYLOAD: usize = 64;
const BASEURL: &str = "https://matrix.example.org/";
/// Well formed, never issued.
const UNKNOWN_ID: &str = "01KQ3ZZZZZZZZZZZZZZZZZZZZZ";

/// Makes a fresh, empty store holding at most `capacity` live sessions.
type StoreFactory<'a> = &'a dyn Fn(usize) -> Arc<dyn Store>;

/// Poor but never-repeating randomness, so that a failing sequence replays identically:
/// every draw is a counter at the end of an otherwise zero buffer.
#[derive(Debug, Default)]
struct CountingEntropy {
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

struct Harness {
    clock: Arc<ManualClock>,
    rendezvous: Rendezvous,
}

impl Harness {
    fn new(store: Arc<dyn Store>, start: SystemTime) -> Self {
        let config = Config {
            ttl: TTL,
            max_payload_bytes: MAX_PAYLOAD,
            capacity: CAPACITY,
            // Requests here carry no client address, so no limit applies anyway; off makes
            // sure that the model only has to know about capacity.
            rate_limit: RateLimitConfig {
                enabled: false,
                ..RateLimitConfig::default()
            },
            ..Config::default()
        };
        let clock = Arc::new(ManualClock::new(start));
        let rendezvous = Rendezvous::new(
            config,
            store,
            clock.clone(),
            Arc::new(CountingEntropy::default()),
            Routes::takeover(),
            BASEURL,
        );
        Self { clock, rendezvous }
    }
}

/// A fixed start on a whole second, so that the second-resolution HTTP dates of the first
/// requests equal the clock exactly.
fn fixed_start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

/// Picks one of the elements of a list, whatever its length; shrinks towards the first.
#[derive(Debug, Clone, Copy)]
struct Pick(u16);

impl Pick {
    fn of(self, len: usize) -> usize {
        usize::from(self.0) % len
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(Upload),
    Get {
        target: Target,
        condition: Condition,
        head: bool,
    },
    Put {
        target: Target,
        condition: Condition,
        upload: Upload,
    },
    Delete(Target),
    /// A method the API does not serve on a path, or a preflight.
    Other(Target, OtherMethod),
    Advance(Advance),
    /// What the module's periodic task does.
    Reclaim,
}

#[derive(Debug, Clone)]
struct Upload {
    body: Vec<u8>,
    length: Length,
    content_type: ContentTypeChoice,
}

#[derive(Debug, Clone)]
enum Length {
    /// The body's length, as every real client sends.
    Exact,
    Missing,
    /// A well-formed length that may disagree with the body.
    Declared(u64),
    Malformed(&'static str),
    /// The exact length twice, or the exact length and another one.
    Twice {
        agreeing: bool,
    },
    /// `Transfer-Encoding: chunked`, with or without a length beside it.
    Chunked {
        with_length: bool,
    },
}

const MALFORMED_LENGTHS: &[&str] = &[
    "",
    "-1",
    "abc",
    " 5",
    "1.0",
    "+3",
    "0x10",
    "1e3",
    "99999999999999999999999",
];

#[derive(Debug, Clone)]
enum ContentTypeChoice {
    Valid(&'static str),
    Invalid(&'static str),
    Missing,
    Twice,
}

const VALID_TYPES: &[&str] = &[
    "text/plain",
    "TEXT/Plain",
    "text/plain; charset=utf-8",
    "text/plain;charset=UTF-8",
];
const INVALID_TYPES: &[&str] = &[
    "application/json",
    "text/html",
    "text/plain; charset=latin1",
    "text/plain; format=flowed",
    "text/plainx",
    "text",
    "",
    "text/plain, text/plain",
];

/// Which URL an operation addresses.
#[derive(Debug, Clone)]
enum Target {
    /// A session created earlier in the sequence (live, expired or deleted).
    Known(Pick),
    /// The same, with a query string.
    KnownWithQuery(Pick),
    /// The same, with its first character percent-encoded.
    KnownEscaped(Pick),
    /// The same in lower case: not the canonical form, so never found.
    KnownLowercase(Pick),
    /// The same with a path segment after it.
    KnownNested(Pick),
    /// A well-formed id that was never issued.
    Unknown,
    Garbage(&'static str),
    /// The create endpoint.
    Create,
}

/// Session path suffixes that cannot name a session; `""` is not even a session path.
const GARBAGE_IDS: &[&str] = &[
    "",
    "not-an-id",
    "%zz",
    "%",
    "..%2F..",
    "%C3%A9",
    "0000000000000000000000000I",
    "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
    "01KQ3ZZZZZZZZZZZZZZZZZZZZZZ",
];

/// An `If-Match` or `If-None-Match` header.
#[derive(Debug, Clone)]
enum Condition {
    Missing,
    Current,
    CurrentWeak,
    /// An earlier tag of the same session.
    Stale(Pick),
    /// Any tag issued so far, most likely another session's.
    Issued(Pick),
    Star,
    /// Several tags, the current one (weak) among them.
    ListWithCurrent,
    /// A well-formed tag that was never issued.
    Fresh(String),
    Malformed(&'static str),
    /// A quoted tag with bytes outside ASCII (obs-text).
    NonAscii,
}

const MALFORMED_TAGS: &[&str] = &[
    "abc",
    "\"unterminated",
    "*, \"a\"",
    "W/abc",
    "\"a b\"",
    "",
    ",",
    "w/\"abc\"",
];

#[derive(Debug, Clone, Copy)]
enum OtherMethod {
    Patch,
    Post,
    Options,
    Trace,
    Custom,
}

impl OtherMethod {
    fn method(self) -> Method {
        match self {
            Self::Patch => Method::PATCH,
            Self::Post => Method::POST,
            Self::Options => Method::OPTIONS,
            Self::Trace => Method::TRACE,
            Self::Custom => Method::from_bytes(b"FROB").unwrap(),
        }
    }
}

#[derive(Debug, Clone)]
enum Advance {
    Millis(u64),
    Seconds(u64),
    /// Beyond the TTL: every session alive now has ended.
    PastTtl(u64),
    /// To the exact instant a session ends (when that is still ahead).
    ToExpiry(Pick),
    /// One millisecond before it.
    JustBeforeExpiry(Pick),
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

fn pick() -> impl Strategy<Value = Pick> {
    any::<u16>().prop_map(Pick)
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        6 => prop::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
        2 => "[ -~]{0,40}".prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), MAX_PAYLOAD),
        2 => prop::collection::vec(any::<u8>(), MAX_PAYLOAD + 1),
        1 => prop::collection::vec(any::<u8>(), MAX_PAYLOAD + 2..=MAX_PAYLOAD * 3),
        1 => Just(vec![0xff, 0xfe, 0x00, 0xc3, 0x28]),
    ]
}

fn length_strategy() -> impl Strategy<Value = Length> {
    prop_oneof![
        24 => Just(Length::Exact),
        1 => Just(Length::Missing),
        1 => (0..=MAX_PAYLOAD as u64 * 2).prop_map(Length::Declared),
        1 => prop::sample::select(MALFORMED_LENGTHS).prop_map(Length::Malformed),
        1 => any::<bool>().prop_map(|agreeing| Length::Twice { agreeing }),
        1 => any::<bool>().prop_map(|with_length| Length::Chunked { with_length }),
    ]
}

fn content_type_strategy() -> impl Strategy<Value = ContentTypeChoice> {
    prop_oneof![
        16 => prop::sample::select(VALID_TYPES).prop_map(ContentTypeChoice::Valid),
        1 => prop::sample::select(INVALID_TYPES).prop_map(ContentTypeChoice::Invalid),
        1 => Just(ContentTypeChoice::Missing),
        1 => Just(ContentTypeChoice::Twice),
    ]
}

fn upload_strategy() -> impl Strategy<Value = Upload> {
    (body_strategy(), length_strategy(), content_type_strategy()).prop_map(
        |(body, length, content_type)| Upload {
            body,
            length,
            content_type,
        },
    )
}

fn target_strategy() -> impl Strategy<Value = Target> {
    prop_oneof![
        24 => pick().prop_map(Target::Known),
        1 => pick().prop_map(Target::KnownWithQuery),
        1 => pick().prop_map(Target::KnownEscaped),
        1 => pick().prop_map(Target::KnownLowercase),
        1 => pick().prop_map(Target::KnownNested),
        1 => Just(Target::Unknown),
        1 => prop::sample::select(GARBAGE_IDS).prop_map(Target::Garbage),
        1 => Just(Target::Create),
    ]
}

fn condition_strategy() -> impl Strategy<Value = Condition> {
    prop_oneof![
        4 => Just(Condition::Missing),
        8 => Just(Condition::Current),
        3 => Just(Condition::CurrentWeak),
        4 => pick().prop_map(Condition::Stale),
        2 => pick().prop_map(Condition::Issued),
        2 => Just(Condition::Star),
        1 => Just(Condition::ListWithCurrent),
        1 => "[a-z0-9]{1,12}".prop_map(Condition::Fresh),
        2 => prop::sample::select(MALFORMED_TAGS).prop_map(Condition::Malformed),
        1 => Just(Condition::NonAscii),
    ]
}

fn advance_strategy() -> impl Strategy<Value = Advance> {
    prop_oneof![
        3 => (0..=3_000u64).prop_map(Advance::Millis),
        2 => (1..=10u64).prop_map(Advance::Seconds),
        1 => (0..=2_000u64).prop_map(Advance::PastTtl),
        1 => pick().prop_map(Advance::ToExpiry),
        1 => pick().prop_map(Advance::JustBeforeExpiry),
    ]
}

fn other_method_strategy() -> impl Strategy<Value = OtherMethod> {
    prop::sample::select(
        &[
            OtherMethod::Patch,
            OtherMethod::Post,
            OtherMethod::Options,
            OtherMethod::Trace,
            OtherMethod::Custom,
        ][..],
    )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => upload_strategy().prop_map(Op::Create),
        8 => (target_strategy(), condition_strategy(), any::<bool>()).prop_map(
            |(target, condition, head)| {
                let head = head && target_is_plain(&target);
                Op::Get { target, condition, head }
            }
        ),
        8 => (target_strategy(), condition_strategy(), upload_strategy()).prop_map(
            |(target, condition, upload)| Op::Put { target, condition, upload }
        ),
        1 => target_strategy().prop_map(Op::Delete),
        1 => (target_strategy(), other_method_strategy()).prop_map(|(t, m)| Op::Other(t, m)),
        3 => advance_strategy().prop_map(Op::Advance),
        1 => Just(Op::Reclaim),
    ]
}

/// HEAD only on plain session URLs, so that most HEADs reach a session.
fn target_is_plain(target: &Target) -> bool {
    matches!(target, Target::Known(_))
}

fn ops_strategy(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 1..=max_len)
}

// ---------------------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ModelSession {
    payload: Vec<u8>,
    /// The current tag, without quotes.
    etag: String,
    expires: SystemTime,
    last_modified: SystemTime,
}

/// What the API must hold, as plainly as possible.
#[derive(Debug, Default)]
struct Model {
    /// Every session ever created, in order, whether it still exists or not.
    ids: Vec<String>,
    /// Sessions not deleted; those past their expiry are dead but kept for their expiry.
    sessions: HashMap<String, ModelSession>,
    /// Every tag each session ever had, the current one last.
    history: HashMap<String, Vec<String>>,
    /// Every tag ever issued, in order.
    issued: Vec<String>,
    issued_set: HashSet<String>,
}

/// What a path addresses, by the model's reading.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ModelRoute {
    Create,
    /// `None`: a session path whose id cannot be one the server issued.
    Session(Option<String>),
    Unknown,
}

/// What a conditional header says, by the model's reading.
#[derive(Debug, Clone)]
enum Precondition {
    Absent,
    Malformed,
    Any,
    Tags(Vec<String>),
}

impl Precondition {
    fn matches(&self, current: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|tag| tag == current),
            Self::Absent | Self::Malformed => false,
        }
    }
}

impl Model {
    fn live(&self, id: &str, now: SystemTime) -> Option<&ModelSession> {
        self.sessions.get(id).filter(|s| now < s.expires)
    }

    fn live_count(&self, now: SystemTime) -> usize {
        self.sessions.values().filter(|s| now < s.expires).count()
    }

    fn pick(&self, index: Pick) -> Option<&str> {
        (!self.ids.is_empty()).then(|| self.ids[index.of(self.ids.len())].as_str())
    }

    fn resolve_target(&self, target: &Target) -> (String, ModelRoute) {
        let session = |suffix: &str| format!("{SESSION_PREFIX}/{suffix}");
        let known = |index: Pick| self.pick(index).unwrap_or(UNKNOWN_ID).to_owned();
        match target {
            Target::Known(index) => {
                let id = known(*index);
                (session(&id), ModelRoute::Session(Some(id)))
            }
            Target::KnownWithQuery(index) => {
                let id = known(*index);
                (
                    format!("{}?x=1&If-Match=*", session(&id)),
                    ModelRoute::Session(Some(id)),
                )
            }
            Target::KnownEscaped(index) => {
                let id = known(*index);
                let escaped = format!("%{:02X}{}", id.as_bytes()[0], &id[1..]);
                (session(&escaped), ModelRoute::Session(Some(id)))
            }
            Target::KnownLowercase(index) => {
                let id = known(*index);
                let lower = id.to_lowercase();
                let route = if lower == id {
                    ModelRoute::Session(Some(id))
                } else {
                    ModelRoute::Session(None)
                };
                (session(&lower), route)
            }
            Target::KnownNested(index) => (
                session(&format!("{}/x", known(*index))),
                ModelRoute::Unknown,
            ),
            Target::Unknown => (
                session(UNKNOWN_ID),
                ModelRoute::Session(Some(UNKNOWN_ID.to_owned())),
            ),
            Target::Garbage("") => (session(""), ModelRoute::Unknown),
            Target::Garbage(garbage) => (session(garbage), ModelRoute::Session(None)),
            Target::Create => (CREATE_PATH.to_owned(), ModelRoute::Create),
        }
    }

    /// The header value to send, and what it means.
    fn resolve_condition(
        &self,
        condition: &Condition,
        route: &ModelRoute,
    ) -> (Option<HeaderValue>, Precondition) {
        let id = match route {
            ModelRoute::Session(Some(id)) => Some(id.as_str()),
            _ => None,
        };
        let history = id.and_then(|id| self.history.get(id));
        // The latest tag this session had, live or not; a never-issued one otherwise.
        let current = history
            .and_then(|tags| tags.last())
            .cloned()
            .unwrap_or_else(|| "never-issued".to_owned());
        let tags = |opaque: String, header: String| {
            (
                Some(HeaderValue::from_str(&header).unwrap()),
                Precondition::Tags(vec![opaque]),
            )
        };
        match condition {
            Condition::Missing => (None, Precondition::Absent),
            Condition::Current => tags(current.clone(), format!("\"{current}\"")),
            Condition::CurrentWeak => tags(current.clone(), format!("W/\"{current}\"")),
            Condition::Stale(index) => {
                let earlier = history.filter(|tags| tags.len() > 1).map_or_else(
                    || "stale".to_owned(),
                    |tags| tags[index.of(tags.len() - 1)].clone(),
                );
                tags(earlier.clone(), format!("\"{earlier}\""))
            }
            Condition::Issued(index) => {
                let tag = if self.issued.is_empty() {
                    "none-yet".to_owned()
                } else {
                    self.issued[index.of(self.issued.len())].clone()
                };
                tags(tag.clone(), format!("\"{tag}\""))
            }
            Condition::Star => (Some(HeaderValue::from_static("*")), Precondition::Any),
            Condition::ListWithCurrent => (
                Some(HeaderValue::from_str(&format!("\"x\", W/\"{current}\" , \"y\"")).unwrap()),
                Precondition::Tags(vec!["x".to_owned(), current, "y".to_owned()]),
            ),
            Condition::Fresh(opaque) => tags(opaque.clone(), format!("\"{opaque}\"")),
            Condition::Malformed(value) => (
                Some(HeaderValue::from_static(value)),
                Precondition::Malformed,
            ),
            // Well-formed (obs-text is allowed in a tag), but never issued: it cannot match.
            Condition::NonAscii => (
                Some(HeaderValue::from_bytes(b"\"\xc3\xa9t\xc3\xa9\"").unwrap()),
                Precondition::Tags(vec!["\u{e9}t\u{e9}".to_owned()]),
            ),
        }
    }

    /// Records the tag of a successful write; false if it was ever issued before.
    fn issue(&mut self, id: &str, etag: &str) -> bool {
        self.history
            .entry(id.to_owned())
            .or_default()
            .push(etag.to_owned());
        self.issued.push(etag.to_owned());
        self.issued_set.insert(etag.to_owned())
    }
}

/// The first check of an upload that fails, in the order of the spec (length, size, type),
/// as a status and errcode.
fn upload_error(upload: &Upload) -> Option<(StatusCode, &'static str)> {
    const MISSING: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    const INVALID: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "M_INVALID_PARAM");
    let received = upload.body.len() as u64;
    let declared = match upload.length {
        Length::Exact | Length::Twice { agreeing: true } => received,
        Length::Missing | Length::Chunked { with_length: false } => return Some(MISSING),
        Length::Malformed(_)
        | Length::Twice { agreeing: false }
        | Length::Chunked { with_length: true } => return Some(INVALID),
        Length::Declared(declared) => declared,
    };
    let max = MAX_PAYLOAD as u64;
    if declared > max || received > max {
        return Some((StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"));
    }
    if declared != received {
        return Some(INVALID);
    }
    match upload.content_type {
        ContentTypeChoice::Valid(_) => None,
        ContentTypeChoice::Missing => Some(MISSING),
        ContentTypeChoice::Invalid(_) | ContentTypeChoice::Twice => Some(INVALID),
    }
}

fn upload_request(
    method: Method,
    path: &str,
    upload: &Upload,
    condition: Option<HeaderValue>,
) -> Request<Bytes> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Bytes::from(upload.body.clone()))
        .unwrap();
    let headers = request.headers_mut();
    let exact = HeaderValue::from(upload.body.len());
    match upload.length {
        Length::Exact => {
            headers.insert(CONTENT_LENGTH, exact);
        }
        Length::Missing => {}
        Length::Declared(length) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        }
        Length::Malformed(value) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static(value));
        }
        Length::Twice { agreeing } => {
            headers.append(CONTENT_LENGTH, exact);
            let other = upload.body.len() + usize::from(!agreeing);
            headers.append(CONTENT_LENGTH, HeaderValue::from(other));
        }
        Length::Chunked { with_length } => {
            if with_length {
                headers.insert(CONTENT_LENGTH, exact);
            }
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
    }
    match upload.content_type {
        ContentTypeChoice::Valid(value) | ContentTypeChoice::Invalid(value) => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
        }
        ContentTypeChoice::Missing => {}
        ContentTypeChoice::Twice => {
            headers.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            headers.append(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
    }
    if let Some(value) = condition {
        headers.insert(IF_MATCH, value);
    }
    request
}

fn plain_request(method: Method, path: &str, if_none_match: Option<HeaderValue>) -> Request<Bytes> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Bytes::new())
        .unwrap();
    if let Some(value) = if_none_match {
        request.headers_mut().insert(IF_NONE_MATCH, value);
    }
    request
}

/// What the model says a response must be.
#[derive(Debug)]
enum Expected {
    Error(StatusCode, &'static str),
    /// 429 for lack of room, with how long until the oldest live session ends.
    Full(Duration),
    Created,
    Payload(ModelSession, bool),
    NotModified(ModelSession),
    Accepted(ModelSession),
    PreconditionFailed(ModelSession),
    Deleted,
    Preflight,
}

impl Expected {
    fn label(&self) -> &'static str {
        match self {
            Self::Error(_, errcode) => errcode,
            Self::Full(_) => "429 capacity",
            Self::Created => "201",
            Self::Payload(_, false) => "200 GET",
            Self::Payload(_, true) => "200 HEAD",
            Self::NotModified(_) => "304",
            Self::Accepted(_) => "202",
            Self::PreconditionFailed(_) => "412",
            Self::Deleted => "204 DELETE",
            Self::Preflight => "204 OPTIONS",
        }
    }
}

/// Every label of [`Expected::label`]: a long enough random run must see each.
const EVERY_OUTCOME: &[&str] = &[
    "M_MISSING_PARAM",
    "M_INVALID_PARAM",
    "M_TOO_LARGE",
    "M_NOT_FOUND",
    "M_UNRECOGNIZED",
    "429 capacity",
    "201",
    "200 GET",
    "200 HEAD",
    "304",
    "202",
    "412",
    "204 DELETE",
    "204 OPTIONS",
];

const NOT_FOUND: Expected = Expected::Error(StatusCode::NOT_FOUND, "M_NOT_FOUND");
const UNRECOGNIZED: Expected = Expected::Error(StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
const NOT_ALLOWED: Expected = Expected::Error(StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED");

// ---------------------------------------------------------------------------------------
// Running a sequence
// ---------------------------------------------------------------------------------------

/// Fails the case with a message when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

struct Run {
    harness: Harness,
    model: Model,
    /// What kinds of answer the sequence got, so that a test can tell it covered them all.
    seen: Vec<&'static str>,
}

impl Run {
    fn now(&self) -> SystemTime {
        use synapse_rendezvous_core::Clock as _;
        self.harness.clock.now()
    }

    /// Runs one operation and checks its response; `Err` says what was wrong.
    fn step(&mut self, op: &Op) -> Result<(), String> {
        let now = self.now();
        let (request, expected) = match op {
            Op::Advance(advance) => return self.advance(advance),
            Op::Reclaim => {
                let reclaimed = self.harness.rendezvous.reclaim_expired();
                ensure!(reclaimed.is_ok(), "reclaim failed: {reclaimed:?}");
                return self.check_live_count();
            }
            Op::Create(upload) => {
                let request = upload_request(Method::POST, CREATE_PATH, upload, None);
                (request, self.expect_create(upload, now))
            }
            Op::Get {
                target,
                condition,
                head,
            } => {
                let (path, route) = self.model.resolve_target(target);
                let (value, precondition) = self.model.resolve_condition(condition, &route);
                let method = if *head { Method::HEAD } else { Method::GET };
                let expected = match route {
                    ModelRoute::Create => NOT_ALLOWED,
                    ModelRoute::Unknown => UNRECOGNIZED,
                    ModelRoute::Session(id) => match id.and_then(|id| self.model.live(&id, now)) {
                        None => NOT_FOUND,
                        // A malformed If-None-Match cannot name the current version.
                        Some(s) if precondition.matches(&s.etag) => {
                            Expected::NotModified(s.clone())
                        }
                        Some(s) => Expected::Payload(s.clone(), *head),
                    },
                };
                (plain_request(method, &path, value), expected)
            }
            Op::Put {
                target,
                condition,
                upload,
            } => {
                let (path, route) = self.model.resolve_target(target);
                let (value, precondition) = self.model.resolve_condition(condition, &route);
                let expected = self.expect_put(upload, &route, &precondition, now);
                (upload_request(Method::PUT, &path, upload, value), expected)
            }
            Op::Delete(target) => {
                let (path, route) = self.model.resolve_target(target);
                let expected = match route {
                    ModelRoute::Create => NOT_ALLOWED,
                    ModelRoute::Unknown => UNRECOGNIZED,
                    ModelRoute::Session(id) => {
                        match id.filter(|id| self.model.live(id, now).is_some()) {
                            Some(_) => Expected::Deleted,
                            None => NOT_FOUND,
                        }
                    }
                };
                (plain_request(Method::DELETE, &path, None), expected)
            }
            Op::Other(target, method) => {
                let (path, route) = self.model.resolve_target(target);
                let expected = match (route, method) {
                    (ModelRoute::Unknown, _) => UNRECOGNIZED,
                    (_, OtherMethod::Options) => Expected::Preflight,
                    // A create without any header.
                    (ModelRoute::Create, OtherMethod::Post) => {
                        Expected::Error(StatusCode::BAD_REQUEST, "M_MISSING_PARAM")
                    }
                    _ => NOT_ALLOWED,
                };
                (plain_request(method.method(), &path, None), expected)
            }
        };
        let response = self.harness.rendezvous.handle(&request);
        self.seen.push(expected.label());
        let context = || describe(&request, &response);
        self.check(&request, &response, expected, now)
            .map_err(|why| format!("{why}\n{}", context()))?;
        self.check_live_count()
    }

    fn expect_create(&self, upload: &Upload, now: SystemTime) -> Expected {
        if let Some((status, errcode)) = upload_error(upload) {
            return Expected::Error(status, errcode);
        }
        if self.model.live_count(now) >= CAPACITY {
            let oldest = self
                .model
                .sessions
                .values()
                .filter(|s| now < s.expires)
                .map(|s| s.expires)
                .min()
                .unwrap();
            return Expected::Full(oldest.duration_since(now).unwrap());
        }
        Expected::Created
    }

    fn expect_put(
        &self,
        upload: &Upload,
        route: &ModelRoute,
        precondition: &Precondition,
        now: SystemTime,
    ) -> Expected {
        let id = match route {
            ModelRoute::Create => return NOT_ALLOWED,
            ModelRoute::Unknown => return UNRECOGNIZED,
            ModelRoute::Session(id) => id,
        };
        if let Some((status, errcode)) = upload_error(upload) {
            return Expected::Error(status, errcode);
        }
        match precondition {
            Precondition::Absent => {
                return Expected::Error(StatusCode::BAD_REQUEST, "M_MISSING_PARAM")
            }
            Precondition::Malformed => {
                return Expected::Error(StatusCode::BAD_REQUEST, "M_INVALID_PARAM")
            }
            Precondition::Any | Precondition::Tags(_) => {}
        }
        match id.as_deref().and_then(|id| self.model.live(id, now)) {
            None => NOT_FOUND,
            Some(s) if precondition.matches(&s.etag) => Expected::Accepted(ModelSession {
                payload: upload.body.clone(),
                etag: String::new(),
                expires: s.expires,
                last_modified: now,
            }),
            Some(s) => Expected::PreconditionFailed(s.clone()),
        }
    }

    fn advance(&mut self, advance: &Advance) -> Result<(), String> {
        let now = self.now();
        let expiry = |index: Pick| {
            let id = self.model.pick(index)?;
            let expires = self.model.sessions.get(id)?.expires;
            (expires > now).then_some(expires)
        };
        let target = match advance {
            Advance::Millis(ms) => now + Duration::from_millis(*ms),
            Advance::Seconds(s) => now + Duration::from_secs(*s),
            Advance::PastTtl(ms) => now + TTL + Duration::from_millis(*ms),
            Advance::ToExpiry(index) => expiry(*index).unwrap_or(now),
            Advance::JustBeforeExpiry(index) => {
                expiry(*index).map_or(now, |at| (at - Duration::from_millis(1)).max(now))
            }
        };
        self.harness.clock.set(target);
        self.check_live_count()
    }

    fn check_live_count(&self) -> Result<(), String> {
        let now = self.now();
        let count = self.harness.rendezvous.live_count();
        let expected = self.model.live_count(now);
        ensure!(
            count == Ok(expected),
            "live_count is {count:?}, the model has {expected} live sessions"
        );
        Ok(())
    }

    /// Checks `response` against `expected`, then brings the model up to date.
    fn check(
        &mut self,
        request: &Request<Bytes>,
        response: &Response<Bytes>,
        expected: Expected,
        now: SystemTime,
    ) -> Result<(), String> {
        let head = request.method() == Method::HEAD;
        check_common(response, now, head)?;
        let status = response.status();
        match expected {
            Expected::Error(want, errcode) => {
                ensure!(status == want, "status {status}, want {want} {errcode}");
                if !(head && response.body().is_empty()) {
                    check_error_body(response, errcode)?;
                }
            }
            Expected::Full(wait) => check_full(response, wait)?,
            Expected::Created => self.check_created(request, response, now)?,
            Expected::Payload(session, head) => {
                ensure!(status == StatusCode::OK, "status {status}, want 200");
                check_validators(response, &session)?;
                let content_type = header_str(response, &CONTENT_TYPE)?;
                ensure!(content_type == "text/plain", "Content-Type {content_type}");
                let want: &[u8] = if head { b"" } else { &session.payload };
                ensure!(response.body() == want, "body differs from the payload");
                check_length(response, session.payload.len())?;
            }
            Expected::NotModified(session) => {
                ensure!(
                    status == StatusCode::NOT_MODIFIED,
                    "status {status}, want 304"
                );
                check_validators(response, &session)?;
                ensure!(response.body().is_empty(), "304 with a body");
                // A 304 may only carry the length of the 200 it stands for.
                if response.headers().contains_key(CONTENT_LENGTH) {
                    check_length(response, session.payload.len())?;
                }
            }
            Expected::Accepted(mut session) => {
                ensure!(status == StatusCode::ACCEPTED, "status {status}, want 202");
                ensure!(response.body().is_empty(), "202 with a body");
                let content_type = header_str(response, &CONTENT_TYPE)?;
                ensure!(content_type == "text/plain", "Content-Type {content_type}");
                let etag = new_etag(response)?;
                let id = session_id_of(request);
                ensure!(
                    self.model.issue(&id, &etag),
                    "reused ETag {etag} on a write"
                );
                session.etag = etag;
                check_validators(response, &session)?;
                self.model.sessions.insert(id, session);
            }
            Expected::PreconditionFailed(session) => {
                ensure!(
                    status == StatusCode::PRECONDITION_FAILED,
                    "status {status}, want 412"
                );
                let body = check_error_body(response, "M_UNKNOWN")?;
                ensure!(
                    body["org.matrix.msc4108.errcode"] == "M_CONCURRENT_WRITE",
                    "412 without M_CONCURRENT_WRITE: {body}"
                );
                check_validators(response, &session)?;
            }
            Expected::Deleted => {
                ensure!(
                    status == StatusCode::NO_CONTENT,
                    "status {status}, want 204"
                );
                ensure!(response.body().is_empty(), "204 with a body");
                self.model.sessions.remove(&session_id_of(request));
            }
            Expected::Preflight => {
                ensure!(
                    status == StatusCode::NO_CONTENT,
                    "status {status}, want 204"
                );
                let methods = header_str(response, &ACCESS_CONTROL_ALLOW_METHODS)?;
                for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"] {
                    ensure!(
                        list_contains(methods, method),
                        "preflight does not allow {method}: {methods}"
                    );
                }
            }
        }
        Ok(())
    }

    fn check_created(
        &mut self,
        request: &Request<Bytes>,
        response: &Response<Bytes>,
        now: SystemTime,
    ) -> Result<(), String> {
        let status = response.status();
        ensure!(status == StatusCode::CREATED, "status {status}, want 201");
        let body = json_body(response)?;
        let url = body["url"].as_str().ok_or("201 without a url")?.to_owned();
        ensure!(
            body.as_object().map(serde_json::Map::len) == Some(1),
            "201 body has more than the url: {body}"
        );
        let prefix = format!("{}{}/", BASEURL.trim_end_matches('/'), SESSION_PREFIX);
        let id = url
            .strip_prefix(&prefix)
            .ok_or_else(|| format!("session URL {url} is not under {prefix}"))?
            .to_owned();
        ensure!(
            id.len() == 26
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
            "id {id:?} is not an upper-case ULID"
        );
        ensure!(
            !self.model.history.contains_key(&id),
            "id {id} issued twice"
        );
        let etag = new_etag(response)?;
        let session = ModelSession {
            payload: request.body().to_vec(),
            etag: etag.clone(),
            expires: now + TTL,
            last_modified: now,
        };
        check_validators(response, &session)?;
        ensure!(
            self.model.issue(&id, &etag),
            "reused ETag {etag} on a create"
        );
        self.model.ids.push(id.clone());
        self.model.sessions.insert(id, session);
        Ok(())
    }
}

/// 429 for lack of room: the wait until the oldest live session ends, in the body (ms) and
/// in `Retry-After` (whole seconds, rounded up, at least one).
fn check_full(response: &Response<Bytes>, wait: Duration) -> Result<(), String> {
    let status = response.status();
    ensure!(
        status == StatusCode::TOO_MANY_REQUESTS,
        "status {status}, want 429 (capacity)"
    );
    let body = check_error_body(response, "M_LIMIT_EXCEEDED")?;
    let millis = u64::try_from(wait.as_millis()).unwrap();
    ensure!(
        body["retry_after_ms"] == millis,
        "retry_after_ms {}, want {millis}",
        body["retry_after_ms"]
    );
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let header = header_str(response, &RETRY_AFTER)?;
    ensure!(
        header == seconds.max(1).to_string(),
        "Retry-After {header}, want {}",
        seconds.max(1)
    );
    Ok(())
}

/// The session id a request addressed, as the model resolved it.
fn session_id_of(request: &Request<Bytes>) -> String {
    let segment = request
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    // Undo the escape of the first character (KnownEscaped).
    match segment.strip_prefix('%') {
        Some(rest) => {
            let byte = u8::from_str_radix(&rest[..2], 16).unwrap();
            format!("{}{}", char::from(byte), &rest[2..])
        }
        None => segment,
    }
}

/// Headers every response must carry, whatever it is.
fn check_common(response: &Response<Bytes>, now: SystemTime, head: bool) -> Result<(), String> {
    let status = response.status();
    // A 304 and a successful HEAD stand for a body they do not carry: checked with the
    // payload instead. A failed HEAD may carry the error's body (the core's choice today;
    // Twisted drops it) or none.
    let stands_for_payload = status == StatusCode::NOT_MODIFIED || (head && status.is_success());
    if !(stands_for_payload || (head && response.body().is_empty())) {
        check_length(response, response.body().len())?;
    }
    let origin = header_str(response, &ACCESS_CONTROL_ALLOW_ORIGIN)?;
    ensure!(origin == "*", "Access-Control-Allow-Origin {origin}");
    let exposed = header_str(response, &ACCESS_CONTROL_EXPOSE_HEADERS)?;
    ensure!(
        list_contains(exposed, "ETag"),
        "ETag not exposed: {exposed}"
    );
    let cache = header_str(response, &CACHE_CONTROL)?;
    ensure!(cache == "no-store, no-transform", "Cache-Control {cache}");
    let pragma = header_str(response, &PRAGMA)?;
    ensure!(pragma == "no-cache", "Pragma {pragma}");
    let date = http_date::<Date>(response.headers())?;
    ensure!(date == whole_seconds(now), "Date {date:?}, now {now:?}");
    if status == StatusCode::NO_CONTENT {
        ensure!(
            !response.headers().contains_key(CONTENT_TYPE),
            "204 with a Content-Type"
        );
    }
    Ok(())
}

fn check_length(response: &Response<Bytes>, want: usize) -> Result<(), String> {
    let values: Vec<_> = response.headers().get_all(CONTENT_LENGTH).iter().collect();
    ensure!(values.len() == 1, "{} Content-Length headers", values.len());
    ensure!(
        values[0].to_str().ok() == Some(want.to_string().as_str()),
        "Content-Length {:?}, want {want}",
        values[0]
    );
    Ok(())
}

/// A Matrix error: JSON with the errcode and a human message.
fn check_error_body(response: &Response<Bytes>, errcode: &str) -> Result<Value, String> {
    let content_type = header_str(response, &CONTENT_TYPE)?;
    ensure!(
        content_type == "application/json",
        "error with Content-Type {content_type}"
    );
    let body = json_body(response)?;
    ensure!(
        body["errcode"] == errcode,
        "errcode {}, want {errcode}",
        body["errcode"]
    );
    ensure!(body["error"].is_string(), "error without a message: {body}");
    Ok(body)
}

/// `ETag`, `Expires` and `Last-Modified` equal to the model's session.
fn check_validators(response: &Response<Bytes>, session: &ModelSession) -> Result<(), String> {
    let etag = header_str(response, &ETAG)?;
    ensure!(
        etag == format!("\"{}\"", session.etag),
        "ETag {etag}, want \"{}\"",
        session.etag
    );
    let expires = http_date::<Expires>(response.headers())?;
    ensure!(
        expires == whole_seconds(session.expires),
        "Expires {expires:?}, want {:?}",
        session.expires
    );
    let modified = http_date::<LastModified>(response.headers())?;
    ensure!(
        modified == whole_seconds(session.last_modified),
        "Last-Modified {modified:?}, want {:?}",
        session.last_modified
    );
    Ok(())
}

/// The opaque part of a strong, quoted tag the response issued.
fn new_etag(response: &Response<Bytes>) -> Result<String, String> {
    let etag = header_str(response, &ETAG)?;
    let opaque = etag
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .filter(|opaque| {
            !opaque.is_empty()
                && opaque
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
        })
        .ok_or_else(|| format!("ETag {etag} is not a strong quoted tag"))?;
    Ok(opaque.to_owned())
}

fn header_str<'r>(
    response: &'r Response<Bytes>,
    name: &http::HeaderName,
) -> Result<&'r str, String> {
    let mut values = response.headers().get_all(name).iter();
    let value = values.next().ok_or_else(|| format!("no {name} header"))?;
    ensure!(values.next().is_none(), "{name} header repeated");
    value
        .to_str()
        .map_err(|_| format!("{name} header is not visible ASCII"))
}

fn http_date<H>(headers: &HeaderMap) -> Result<SystemTime, String>
where
    H: Header + Into<SystemTime>,
{
    let mut values = headers.get_all(H::name()).iter();
    H::decode(&mut values)
        .map(Into::into)
        .map_err(|_| format!("{} missing or not an HTTP date", H::name()))
}

fn json_body(response: &Response<Bytes>) -> Result<Value, String> {
    serde_json::from_slice(response.body()).map_err(|e| format!("body is not JSON: {e}"))
}

fn whole_seconds(time: SystemTime) -> SystemTime {
    let since = time.duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

fn list_contains(list: &str, item: &str) -> bool {
    list.split(',')
        .any(|entry| entry.trim().eq_ignore_ascii_case(item))
}

fn describe(request: &Request<Bytes>, response: &Response<Bytes>) -> String {
    let mut text = format!("request: {} {}\n", request.method(), request.uri());
    for (name, value) in request.headers() {
        let _ = writeln!(text, "  {name}: {value:?}");
    }
    let _ = writeln!(text, "  body: {} bytes", request.body().len());
    let _ = writeln!(text, "response: {}", response.status());
    for (name, value) in response.headers() {
        let _ = writeln!(text, "  {name}: {value:?}");
    }
    let _ = writeln!(
        text,
        "  body: {:?}",
        String::from_utf8_lossy(response.body())
    );
    text
}

/// Runs `ops` from scratch on a fresh store; `Err` names the first operation whose
/// response the model refutes.
fn run_ops(
    factory: StoreFactory<'_>,
    start: SystemTime,
    ops: &[Op],
) -> Result<Vec<&'static str>, String> {
    let mut run = Run {
        harness: Harness::new(factory(CAPACITY), start),
        model: Model::default(),
        seen: Vec::new(),
    };
    run.check_live_count()?;
    for (i, op) in ops.iter().enumerate() {
        run.step(op)
            .map_err(|why| format!("operation {i} ({op:?}): {why}"))?;
    }
    Ok(run.seen)
}

/// Checks `cases` random sequences of at most `max_len` operations against the model, each
/// on a fresh store from `factory`, with the clock starting at `start()`. Returns how often
/// each kind of answer was seen.
fn check_model(
    name: &str,
    cases: u32,
    max_len: usize,
    factory: StoreFactory<'_>,
    start: fn() -> SystemTime,
) -> BTreeMap<&'static str, usize> {
    let seen = RefCell::new(BTreeMap::new());
    let config = ProptestConfig {
        cases,
        // Regressions live as #[test]s below rather than in files beside the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&ops_strategy(max_len), |ops| {
        let labels = run_ops(factory, start(), &ops).map_err(TestCaseError::fail)?;
        let mut seen = seen.borrow_mut();
        for label in labels {
            *seen.entry(label).or_default() += 1;
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{name}: the model refutes the core\n{failure}");
    }
    seen.into_inner()
}

/// The number of cases: `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// The stores
// ---------------------------------------------------------------------------------------

/// 512 sequences of up to 80 operations (about two seconds unoptimised);
/// `PROPTEST_CASES` overrides the count.
#[test]
fn memory_store_follows_the_model() {
    let seen = check_model(
        "memory store",
        cases(512),
        80,
        &|capacity| Arc::new(MemoryStore::new(capacity)),
        fixed_start,
    );
    let missed: Vec<_> = EVERY_OUTCOME
        .iter()
        .filter(|label| !seen.contains_key(*label))
        .collect();
    assert!(
        missed.is_empty(),
        "the random runs never produced {missed:?}; seen: {seen:?}"
    );
}

/// The same model against the Redis store on a `redis-server` of its own: fewer cases,
/// since each operation is a round trip. Each case gets a fresh key prefix, which is a fresh
/// store. Fails (does not skip) without `redis-server`; `REDIS_SERVER` may name the binary.
#[test]
fn redis_store_follows_the_model() {
    let server = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}/", server.port);
    let stores = AtomicU64::new(0);
    let factory = |capacity| -> Arc<dyn Store> {
        let config = RedisConfig {
            key_prefix: format!("model{}:", stores.fetch_add(1, Ordering::Relaxed)),
            timeout: Duration::from_secs(5),
            pool_size: 1,
            ..RedisConfig::default()
        };
        Arc::new(RedisStore::connect(&url, &config, capacity).expect("a Redis URL"))
    };
    check_model("Redis store", cases(96), 40, &factory, redis_start);
}

/// Whole seconds, a day ahead of the real clock, so that Redis's own key expiry (which
/// follows its real clock) never removes a session before the manual clock ends it.
fn redis_start() -> SystemTime {
    whole_seconds(SystemTime::now() + Duration::from_secs(86_400))
}

/// A throw-away `redis-server` on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    fn start() -> Self {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        for attempt in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            let dir = std::env::temp_dir().join(format!(
                "rendezvous-model-redis-{}-{attempt}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("a directory for redis-server");
            let child = Command::new(&binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run `{binary}` ({e}): the Redis model test needs a real Redis \
                         server; install it (apt-get install -y redis-server) or set REDIS_SERVER"
                    )
                });
            let mut server = Self { child, port, dir };
            if server.wait_ready() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Whether the server answers `PING` within ten seconds (false if it exited: the port
    /// was taken meanwhile).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            if let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) {
                let mut reply = [0u8; 7];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// The model itself: it must refute broken stores
// ---------------------------------------------------------------------------------------

/// A memory store with one deliberate bug.
struct Faulty {
    inner: MemoryStore,
    fault: Fault,
}

#[derive(Clone, Copy)]
enum Fault {
    /// Writes whatever `If-Match` says.
    IgnoresPrecondition,
    /// Keeps the creation time as `Last-Modified` on writes.
    KeepsLastModified,
    /// Keeps the old tag on writes of the same bytes (Synapse's weakness).
    TagsByPayload,
}

impl Store for Faulty {
    fn create(&self, session: Session, now: SystemTime) -> Result<CreateOutcome, StoreError> {
        self.inner.create(session, now)
    }

    fn get(&self, id: SessionId, now: SystemTime) -> Result<Option<Session>, StoreError> {
        self.inner.get(id, now)
    }

    fn replace(
        &self,
        id: SessionId,
        if_match: &EntityTagList,
        mut version: Version,
        now: SystemTime,
    ) -> Result<ReplaceOutcome, StoreError> {
        let current = self.inner.get(id, now)?;
        match (self.fault, current) {
            (Fault::IgnoresPrecondition, _) => {
                return self.inner.replace(id, &EntityTagList::Any, version, now)
            }
            (Fault::KeepsLastModified, Some(current)) => {
                version.last_modified = current.last_modified;
            }
            (Fault::TagsByPayload, Some(current)) if current.payload == version.payload => {
                version.etag = current.etag;
            }
            _ => {}
        }
        self.inner.replace(id, if_match, version, now)
    }

    fn delete(&self, id: SessionId, now: SystemTime) -> Result<bool, StoreError> {
        self.inner.delete(id, now)
    }

    fn live_count(&self, now: SystemTime) -> Result<usize, StoreError> {
        self.inner.live_count(now)
    }

    fn reclaim_expired(&self, now: SystemTime) -> Result<usize, StoreError> {
        self.inner.reclaim_expired(now)
    }

    fn expired_total(&self) -> u64 {
        self.inner.expired_total()
    }
}

/// Whether random runs find a sequence that the model refutes on stores from `factory`.
fn refuted(factory: StoreFactory<'_>) -> bool {
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    };
    TestRunner::new(config)
        .run(&ops_strategy(80), |ops| {
            run_ops(factory, fixed_start(), &ops)
                .map(drop)
                .map_err(TestCaseError::fail)
        })
        .is_err()
}

#[test]
fn model_refutes_broken_stores() {
    assert!(
        refuted(&|capacity| Arc::new(MemoryStore::new(capacity + 1))),
        "a store over capacity passed"
    );
    for (fault, what) in [
        (Fault::IgnoresPrecondition, "ignores If-Match"),
        (Fault::KeepsLastModified, "keeps Last-Modified"),
        (Fault::TagsByPayload, "tags by payload only"),
    ] {
        let factory = move |capacity| -> Arc<dyn Store> {
            Arc::new(Faulty {
                inner: MemoryStore::new(capacity),
                fault,
            })
        };
        assert!(refuted(&factory), "a store that {what} passed");
    }
}

// ---------------------------------------------------------------------------------------
// Regressions and fixed sequences
// ---------------------------------------------------------------------------------------

fn upload(body: &[u8]) -> Upload {
    Upload {
        body: body.to_vec(),
        length: Length::Exact,
        content_type: ContentTypeChoice::Valid("text/plain"),
    }
}

fn first() -> Pick {
    Pick(0)
}

/// A whole exchange with every kind of answer, so that the model itself is known to accept
/// a correct run (a model that refutes everything would fail here, not hide).
#[test]
fn scripted_exchange_follows_the_model() {
    let ops = vec![
        Op::Create(upload(b"")),
        Op::Get {
            target: Target::Known(first()),
            condition: Condition::Missing,
            head: false,
        },
        Op::Get {
            target: Target::Known(first()),
            condition: Condition::CurrentWeak,
            head: true,
        },
        Op::Put {
            target: Target::KnownEscaped(first()),
            condition: Condition::CurrentWeak,
            upload: upload(&[0xff; MAX_PAYLOAD]),
        },
        Op::Put {
            target: Target::Known(first()),
            condition: Condition::Stale(first()),
            upload: upload(b"late"),
        },
        Op::Put {
            target: Target::Known(first()),
            condition: Condition::Star,
            upload: upload(&[0xff; MAX_PAYLOAD]),
        },
        Op::Create(upload(b"b")),
        Op::Create(upload(b"c")),
        Op::Create(upload(b"d")),
        Op::Advance(Advance::JustBeforeExpiry(first())),
        Op::Create(upload(b"d")),
        Op::Advance(Advance::ToExpiry(first())),
        Op::Get {
            target: Target::Known(first()),
            condition: Condition::Missing,
            head: false,
        },
        Op::Create(upload(b"d")),
        Op::Delete(Target::Known(Pick(1))),
        Op::Delete(Target::Known(Pick(1))),
        Op::Other(Target::Known(first()), OtherMethod::Options),
        Op::Other(Target::Known(first()), OtherMethod::Patch),
        Op::Advance(Advance::PastTtl(0)),
        Op::Reclaim,
        Op::Delete(Target::Known(Pick(2))),
    ];
    let seen = run_ops(
        &|capacity| Arc::new(MemoryStore::new(capacity)),
        fixed_start(),
        &ops,
    )
    .unwrap();
    assert!(
        seen.contains(&"429 capacity") && seen.contains(&"412"),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The fuzz harness, replayed without libFuzzer
// ---------------------------------------------------------------------------------------

/// The harness of the fuzz target (`rust/core/fuzz`), built here too so that it cannot rot
/// while the fuzz crate stays outside the workspace.
#[path = "../fuzz/src/harness.rs"]
mod fuzz_harness;

/// Every seed of the fuzz corpus runs cleanly through the harness.
#[test]
fn fuzz_seed_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/handle_request");
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("the seed corpus") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| fuzz_harness::run(&data));
        assert!(
            outcome.is_ok(),
            "seed {} broke an invariant",
            path.display()
        );
        seeds += 1;
    }
    assert!(seeds >= 12, "only {seeds} seeds in {}", dir.display());
}

/// Inputs the fuzzer once found crashing or breaking an invariant, each with what it was.
const FUZZ_REGRESSIONS: &[&[u8]] = &[
    // A failed HEAD (404 on an unknown path) carries the JSON error body, where a
    // successful HEAD carries none: the harness had assumed every HEAD answer is empty.
    b"GET /_synapsen/client/rendezvous/$0\n\n===\nGET /_synapse/client/rendezvousDELETE \
      None-Match: $T0\n\n===\nHEAD /_synapse/client/rendezusvo/$1\nIf-None-Match: $W1\n\n",
    b"HEAD /_synapse/client/rendezvous/$U\n\n",
];

#[test]
fn fuzz_regressions_stay_fixed() {
    for data in FUZZ_REGRESSIONS {
        fuzz_harness::run(data);
    }
}
