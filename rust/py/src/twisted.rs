//! Conversions between a Twisted `IRequest` and the `http` types the core speaks.
//!
//! Reads `method`, `uri`, `requestHeaders.getAllRawHeaders()` and `content`; writes with
//! `setResponseCode`, `responseHeaders.setRawHeaders`, `write` and `finish`.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, DATE};
use http::{Method, Request, Response, Uri};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use synapse_rendezvous_core::rate_limit::{ClientKey, RateLimitConfig};

/// Reads a Twisted request into an `http::Request`.
///
/// Bytes the `http` crate refuses are made harmless rather than fatal: a request line
/// with raw non-ASCII bytes is percent-encoded (so an odd id becomes an unknown id), an
/// unusable method becomes one no route allows, and an unusable header line is dropped.
///
/// Only uploads (POST, PUT) have their body read, and at most `max_body + 1` bytes of it,
/// none when the declared `Content-Length` is already larger: that is enough for the core
/// to answer 413, and a huge body is never copied.
///
/// The client is identified only when `limits` is given (rate limits are on), since asking
/// Twisted for it costs a few Python calls per request: with trusted proxies configured, from
/// the TCP peer and `X-Forwarded-For` (the core decides), else as Synapse reports it.
///
/// # Errors
/// A Python exception when the object does not behave like a Twisted request.
pub(crate) fn read_request(
    request: &Bound<'_, PyAny>,
    limits: Option<&RateLimitConfig>,
    max_body: usize,
) -> PyResult<Request<Bytes>> {
    let py = request.py();
    let method = request.getattr(intern!(py, "method"))?;
    let uri = request.getattr(intern!(py, "uri"))?;
    let method = Method::from_bytes(method.cast::<PyBytes>()?.as_bytes())
        .unwrap_or_else(|_| unusable_method());
    let upload = method == Method::POST || method == Method::PUT;
    let mut builder = Request::builder()
        .method(method)
        .uri(parse_uri(uri.cast::<PyBytes>()?.as_bytes()));
    let mut declared_too_large = false;
    if let Some(headers) = builder.headers_mut() {
        let raw = request
            .getattr(intern!(py, "requestHeaders"))?
            .call_method0(intern!(py, "getAllRawHeaders"))?;
        for item in raw.try_iter()? {
            let item = item?;
            let (name, values) = item
                .cast::<PyTuple>()?
                .extract::<(Bound<'_, PyBytes>, Bound<'_, PyAny>)>()?;
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            for value in values.try_iter()? {
                let value = value?;
                if let Ok(value) = HeaderValue::from_bytes(value.cast::<PyBytes>()?.as_bytes()) {
                    headers.append(name.clone(), value);
                }
            }
        }
        declared_too_large = headers
            .get_all(CONTENT_LENGTH)
            .iter()
            .filter_map(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
            .any(|declared| declared > u64::try_from(max_body).unwrap_or(u64::MAX));
    }
    if let Some(limits) = limits {
        let client = if limits.trusts_proxies() {
            match builder.headers_ref() {
                Some(headers) => limits.client_of(host_of(request, "client"), headers),
                None => ClientKey::unknown(),
            }
        } else {
            host_of(request, "synapse").map_or_else(ClientKey::unknown, ClientKey::new)
        };
        builder = builder.extension(client);
    }
    let body = if upload && !declared_too_large {
        read_body(request, max_body.saturating_add(1))?
    } else {
        Bytes::new()
    };
    builder
        .body(body)
        .map_err(|error| pyo3::exceptions::PyValueError::new_err(error.to_string()))
}

/// At most `limit` bytes of the body Twisted buffered.
fn read_body(request: &Bound<'_, PyAny>, limit: usize) -> PyResult<Bytes> {
    let py = request.py();
    let content = request.getattr(intern!(py, "content"))?;
    if content.is_none() {
        return Ok(Bytes::new());
    }
    content.call_method1(intern!(py, "seek"), (0,))?;
    let data = content.call_method1(intern!(py, "read"), (limit,))?;
    Ok(Bytes::copy_from_slice(data.cast::<PyBytes>()?.as_bytes()))
}

/// Whether the client of a Twisted request has gone (Twisted raises on writing to it).
pub(crate) fn is_disconnected(request: &Bound<'_, PyAny>) -> bool {
    request
        .getattr(intern!(request.py(), "_disconnected"))
        .and_then(|disconnected| disconnected.is_truthy())
        .unwrap_or(false)
}

/// Writes `response` to the Twisted request and finishes it, unless the client is gone.
///
/// # Errors
/// A Python exception raised by the request's methods.
pub(crate) fn write_response(
    request: &Bound<'_, PyAny>,
    response: &Response<Bytes>,
    names: &HeaderNames,
) -> PyResult<()> {
    let py = request.py();
    // Twisted raises on finish() after a disconnect; the client will never read it anyway.
    if is_disconnected(request) {
        return Ok(());
    }
    request.call_method1(
        intern!(py, "setResponseCode"),
        (response.status().as_u16(),),
    )?;
    let headers = request.getattr(intern!(py, "responseHeaders"))?;
    let raw = headers.getattr(intern!(py, "_rawHeaders")).ok();
    let raw = raw.as_ref().and_then(|raw| raw.cast::<PyDict>().ok());
    for name in response.headers().keys() {
        // Twisted has already set Date for this request, from the same clock.
        if name == DATE {
            continue;
        }
        let values = response
            .headers()
            .get_all(name)
            .iter()
            .map(|value| PyBytes::new(py, value.as_bytes()));
        let values = PyList::new(py, values)?;
        match (raw, names.canonical(py, name)) {
            // Our values never hold line breaks (HeaderValue refuses them), so what
            // setRawHeaders would do is exactly this store under the canonical name.
            (Some(raw), Some(canonical)) => raw.set_item(canonical, values)?,
            _ => {
                headers.call_method1(
                    intern!(py, "setRawHeaders"),
                    (PyBytes::new(py, name.as_str().as_bytes()), values),
                )?;
            }
        }
    }
    if !response.body().is_empty() {
        request.call_method1(intern!(py, "write"), (PyBytes::new(py, response.body()),))?;
    }
    request.call_method0(intern!(py, "finish"))?;
    Ok(())
}

/// Twisted's own spelling of the header names the core writes.
///
/// Setting headers through `Headers.setRawHeaders` is Python code and was a large part of the
/// cost of answering; storing into its `_rawHeaders` dict directly is one C call. That is only
/// right under the name Twisted itself would use (else a header set twice would go out twice),
/// so each name is asked of Twisted once, through its public API, when the handler is built.
/// Where `_rawHeaders` is not a dict, headers go through `setRawHeaders` as before.
pub(crate) struct HeaderNames {
    canonical: Vec<(HeaderName, Py<PyBytes>)>,
}

impl HeaderNames {
    /// Learns Twisted's spelling of `names`.
    ///
    /// # Errors
    /// A Python exception when Twisted's `Headers` cannot be used.
    pub(crate) fn learn(py: Python<'_>, names: &[HeaderName]) -> PyResult<Self> {
        let headers_class = py.import("twisted.web.http_headers")?.getattr("Headers")?;
        let mut canonical = Vec::with_capacity(names.len());
        for name in names {
            let headers = headers_class.call0()?;
            headers.call_method1(
                "setRawHeaders",
                (
                    PyBytes::new(py, name.as_str().as_bytes()),
                    vec![PyBytes::new(py, b"")],
                ),
            )?;
            let spelled = headers.call_method0("getAllRawHeaders")?.try_iter()?.next();
            if let Some(item) = spelled {
                let (key, _): (Bound<'_, PyBytes>, Bound<'_, PyAny>) = item?.extract()?;
                canonical.push((name.clone(), key.unbind()));
            }
        }
        Ok(Self { canonical })
    }

    fn canonical<'py>(&self, py: Python<'py>, name: &HeaderName) -> Option<&Bound<'py, PyBytes>> {
        self.canonical
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, spelled)| spelled.bind(py))
    }
}

/// The IP address of a request's TCP peer (`client`) or of its client as Synapse reports it
/// (already taken from `X-Forwarded-For` on listeners with `x_forwarded: true`). `None` for a
/// UNIX socket or junk: such clients share one budget, since skipping the limits for them
/// would let anyone escape every limit with a forged header.
fn host_of(request: &Bound<'_, PyAny>, which: &str) -> Option<IpAddr> {
    let address = if which == "client" {
        // The TCP peer itself: Synapse's `getClientAddress` has already taken the first
        // X-Forwarded-For value on `x_forwarded` listeners.
        request.getattr("client")
    } else {
        request.call_method0("getClientAddress")
    };
    let host: String = address
        .and_then(|address| address.getattr("host"))
        .and_then(|host| host.extract())
        .ok()?;
    host.split('%').next().unwrap_or_default().parse().ok()
}

fn unusable_method() -> Method {
    Method::from_bytes(b"UNUSABLE").unwrap_or(Method::TRACE)
}

fn parse_uri(raw: &[u8]) -> Uri {
    // The `http` crate lets some raw non-ASCII through; escape first so the core only ever
    // sees a proper request target.
    let target = if raw.iter().copied().all(is_target_byte) {
        Uri::try_from(raw)
    } else {
        Uri::try_from(percent_encode_unsafe(raw))
    };
    target.unwrap_or_else(|_| Uri::from_static("/"))
}

fn is_target_byte(byte: u8) -> bool {
    byte.is_ascii_graphic()
        && !matches!(
            byte,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// Escapes every byte that may not appear in a request target as is.
fn percent_encode_unsafe(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for &byte in raw {
        if is_target_byte(byte) {
            out.push(byte);
        } else {
            out.extend_from_slice(format!("%{byte:02X}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_non_ascii_paths_become_escaped() {
        let uri = parse_uri("/_synapse/client/rendezvous/é".as_bytes());
        assert_eq!(uri.path(), "/_synapse/client/rendezvous/%C3%A9");
    }

    #[test]
    fn ordinary_uris_are_kept() {
        let uri = parse_uri(b"/_synapse/client/rendezvous/ABC?x=1");
        assert_eq!(uri.path(), "/_synapse/client/rendezvous/ABC");
    }
}
