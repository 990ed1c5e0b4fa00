//! Checks of responses: headers every answer carries, errors, validators, and helpers.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use headers::{Date, Expires, Header, LastModified};
use http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, CACHE_CONTROL, CONTENT_LENGTH,
    CONTENT_TYPE, ETAG, PRAGMA, RETRY_AFTER,
};
use http::{HeaderMap, Request, Response, StatusCode};
use serde_json::Value;

use crate::reference::ModelSession;

/// 429 for lack of room: the wait until the oldest live session ends, in the body (ms) and
/// in `Retry-After` (whole seconds, rounded up, at least one).
pub(crate) fn check_full(response: &Response<Bytes>, wait: Duration) -> Result<(), String> {
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
pub(crate) fn session_id_of(request: &Request<Bytes>) -> String {
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
pub(crate) fn check_common(
    response: &Response<Bytes>,
    now: SystemTime,
    head: bool,
) -> Result<(), String> {
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

pub(crate) fn check_length(response: &Response<Bytes>, want: usize) -> Result<(), String> {
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
pub(crate) fn check_error_body(response: &Response<Bytes>, errcode: &str) -> Result<Value, String> {
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
pub(crate) fn check_validators(
    response: &Response<Bytes>,
    session: &ModelSession,
) -> Result<(), String> {
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
pub(crate) fn new_etag(response: &Response<Bytes>) -> Result<String, String> {
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

pub(crate) fn header_str<'r>(
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

pub(crate) fn http_date<H>(headers: &HeaderMap) -> Result<SystemTime, String>
where
    H: Header + Into<SystemTime>,
{
    let mut values = headers.get_all(H::name()).iter();
    H::decode(&mut values)
        .map(Into::into)
        .map_err(|_| format!("{} missing or not an HTTP date", H::name()))
}

pub(crate) fn json_body(response: &Response<Bytes>) -> Result<Value, String> {
    serde_json::from_slice(response.body()).map_err(|e| format!("body is not JSON: {e}"))
}

pub(crate) fn whole_seconds(time: SystemTime) -> SystemTime {
    let since = time.duration_since(UNIX_EPOCH).unwrap();
    UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

pub(crate) fn list_contains(list: &str, item: &str) -> bool {
    list.split(',')
        .any(|entry| entry.trim().eq_ignore_ascii_case(item))
}

pub(crate) fn describe(request: &Request<Bytes>, response: &Response<Bytes>) -> String {
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
