//! Every kind of response and its header set, built in one place so that no response can
//! miss the headers clients and proxies depend on.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use headers::{ContentLength, ContentType, Date, Expires, HeaderMapExt, LastModified};
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, CACHE_CONTROL, ETAG, PRAGMA, RETRY_AFTER,
};
use http::{HeaderValue, Response, StatusCode};
use serde_json::json;

use crate::error::{ErrorKind, CONCURRENT_WRITE, MSC4108_ERRCODE_KEY};
use crate::session::Session;
use crate::store::Meta;

/// A problem worth an operator's attention, attached to a response's extensions for the
/// binding to log; the client only sees a generic error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

/// Something an operator should hear about, attached to a response's extensions for the
/// binding to log as a warning; the client is not affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

/// Builds responses stamped with the time of the request.
pub(crate) struct Responder {
    now: SystemTime,
}

impl Responder {
    pub(crate) fn new(now: SystemTime) -> Self {
        Self { now }
    }

    /// 201 with the session URL, after a create.
    pub(crate) fn created(&self, meta: &Meta, url: &str) -> Response<Bytes> {
        let body = json!({ "url": url }).to_string();
        let mut response = self.base(StatusCode::CREATED, Bytes::from(body), ContentType::json());
        with_validators(&mut response, meta);
        response
    }

    /// 200 with the payload (the caller drops the body of a HEAD).
    pub(crate) fn payload(&self, session: &Session) -> Response<Bytes> {
        // Both SDKs compare the type exactly, so never echo a charset back.
        let mut response = self.base(StatusCode::OK, session.payload.clone(), ContentType::text());
        with_validators(&mut response, &Meta::from(session));
        response
    }

    /// 304 for a GET whose `If-None-Match` names the current version.
    pub(crate) fn not_modified(&self, meta: &Meta, length: usize) -> Response<Bytes> {
        let mut response = self.base(StatusCode::NOT_MODIFIED, Bytes::new(), ContentType::text());
        // RFC 9110 (8.6) allows a Content-Length on a 304 only if it is the 200's length.
        response
            .headers_mut()
            .typed_insert(ContentLength(length as u64));
        with_validators(&mut response, meta);
        response
    }

    /// 202 after a write: empty, but typed and with a length, because some CDNs strip the
    /// `ETag` of untyped responses and nginx chunks (and weakens the `ETag` of) length-less ones.
    pub(crate) fn accepted(&self, meta: &Meta) -> Response<Bytes> {
        let mut response = self.base(StatusCode::ACCEPTED, Bytes::new(), ContentType::text());
        with_validators(&mut response, meta);
        response
    }

    /// 412 for a write whose `If-Match` is stale, with the current validators.
    pub(crate) fn precondition_failed(&self, meta: &Meta) -> Response<Bytes> {
        let body = json!({
            "errcode": "M_UNKNOWN",
            "error": "The session has changed since the given ETag",
            MSC4108_ERRCODE_KEY: CONCURRENT_WRITE,
        });
        let mut response = self.base(
            StatusCode::PRECONDITION_FAILED,
            Bytes::from(body.to_string()),
            ContentType::json(),
        );
        with_validators(&mut response, meta);
        response
    }

    /// 204 after a delete.
    pub(crate) fn deleted(&self) -> Response<Bytes> {
        let mut response = self.base(StatusCode::NO_CONTENT, Bytes::new(), ContentType::text());
        response.headers_mut().remove(http::header::CONTENT_TYPE);
        response
    }

    /// 204 for a CORS preflight that reaches us (Synapse usually answers those itself).
    pub(crate) fn preflight(&self) -> Response<Bytes> {
        let mut response = self.deleted();
        let headers = response.headers_mut();
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "Authorization, Content-Type, If-Match, If-None-Match, X-Requested-With",
            ),
        );
        response
    }

    /// A Matrix JSON error.
    pub(crate) fn error(&self, kind: &ErrorKind) -> Response<Bytes> {
        let (status, body) = error_body(kind);
        let mut response = self.base(status, Bytes::from(body.to_string()), ContentType::json());
        with_retry_after(&mut response, kind);
        response
    }

    /// An MSC4388 answer: a JSON object with Synapse's ordinary JSON headers, and no
    /// validators (MSC4388 has no conditional requests).
    pub(crate) fn json(&self, status: StatusCode, body: &serde_json::Value) -> Response<Bytes> {
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = status;
        let length = response.body().len() as u64;
        let headers = response.headers_mut();
        headers.typed_insert(ContentType::json());
        headers.typed_insert(ContentLength(length));
        headers.typed_insert(Date::from(self.now));
        // What Synapse sends with every JSON answer.
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-store, must-revalidate"),
        );
        // The same CORS as the MSC4108 JSON answers, minus the ETag MSC4388 does not have.
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
        response
    }

    /// A Matrix JSON error on an MSC4388 path, with the MSC4388 headers.
    pub(crate) fn json_error(&self, kind: &ErrorKind) -> Response<Bytes> {
        let (status, body) = error_body(kind);
        let mut response = self.json(status, &body);
        with_retry_after(&mut response, kind);
        response
    }

    fn base(&self, status: StatusCode, body: Bytes, content_type: ContentType) -> Response<Bytes> {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let length = response.body().len() as u64;
        let headers = response.headers_mut();
        headers.typed_insert(content_type);
        headers.typed_insert(ContentLength(length));
        headers.typed_insert(Date::from(self.now));
        // no-transform stops proxies from compressing, which is what weakens ETags.
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("no-store, no-transform"),
        );
        headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        // Browsers hide ETag from scripts unless exposed; matrix-js-sdk then gives up.
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("ETag, Retry-After"),
        );
        response
    }
}

/// The status and Matrix body of an error.
fn error_body(kind: &ErrorKind) -> (StatusCode, serde_json::Value) {
    let (status, errcode, message) = kind.describe();
    let mut body = json!({ "errcode": errcode, "error": message });
    if let Some(wait) = kind
        .retry_after()
        .filter(|_| status == StatusCode::TOO_MANY_REQUESTS)
    {
        // The Matrix spec's field, beside the standard header.
        body["retry_after_ms"] = json!(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    }
    (status, body)
}

fn with_retry_after(response: &mut Response<Bytes>, kind: &ErrorKind) {
    if let Some(wait) = kind.retry_after() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, retry_after_seconds(wait));
    }
}

fn with_validators(response: &mut Response<Bytes>, meta: &Meta) {
    let headers = response.headers_mut();
    headers.insert(ETAG, meta.etag.header_value());
    headers.typed_insert(Expires::from(meta.expires));
    headers.typed_insert(LastModified::from(meta.last_modified));
}

/// Whole seconds, rounded up so that a client retrying on time finds room.
fn retry_after_seconds(wait: Duration) -> HeaderValue {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}
