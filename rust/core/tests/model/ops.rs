//! The operations a random sequence is made of, hostile ones included.

use http::Method;

/// Picks one of the elements of a list, whatever its length; shrinks towards the first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pick(pub(crate) u16);

impl Pick {
    pub(crate) fn of(self, len: usize) -> usize {
        usize::from(self.0) % len
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
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
    /// What the module's periodic task does: free ended sessions, count live ones.
    Maintain,
}

#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub(crate) body: Vec<u8>,
    pub(crate) length: Length,
    pub(crate) content_type: ContentTypeChoice,
}

#[derive(Debug, Clone)]
pub(crate) enum Length {
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

pub(crate) const MALFORMED_LENGTHS: &[&str] = &[
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
pub(crate) enum ContentTypeChoice {
    Valid(&'static str),
    Invalid(&'static str),
    Missing,
    Twice,
}

pub(crate) const VALID_TYPES: &[&str] = &[
    "text/plain",
    "TEXT/Plain",
    "text/plain; charset=utf-8",
    "text/plain;charset=UTF-8",
];
pub(crate) const INVALID_TYPES: &[&str] = &[
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
pub(crate) enum Target {
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
pub(crate) const GARBAGE_IDS: &[&str] = &[
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
pub(crate) enum Condition {
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

pub(crate) const MALFORMED_TAGS: &[&str] = &[
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
pub(crate) enum OtherMethod {
    Patch,
    Post,
    Options,
    Trace,
    Custom,
}

impl OtherMethod {
    pub(crate) fn method(self) -> Method {
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
pub(crate) enum Advance {
    Millis(u64),
    Seconds(u64),
    /// Beyond the TTL: every session alive now has ended.
    PastTtl(u64),
    /// To the exact instant a session ends (when that is still ahead).
    ToExpiry(Pick),
    /// One millisecond before it.
    JustBeforeExpiry(Pick),
}
