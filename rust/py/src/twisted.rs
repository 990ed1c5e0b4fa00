//! Conversions between a Twisted `IRequest` and the `http` types the core speaks.
//!
//! Reads `method`, `uri`, `requestHeaders.getAllRawHeaders()` and `content`; writes with
//! `setResponseCode`, `responseHeaders.setRawHeaders`, `write` and `finish`.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use synapse_rendezvous_core::rate_limit::ClientKey;

/// Reads a Twisted request into an `http::Request`.
///
/// Bytes the `http` crate refuses are made harmless rather than fatal: a request line
/// with raw non-ASCII bytes is percent-encoded (so an odd id becomes an unknown id), an
/// unusable method becomes one no route allows, and an unusable header line is dropped.
///
/// # Errors
/// A Python exception when the object does not behave like a Twisted request.
pub(crate) fn read_request(request: &Bound<'_, PyAny>) -> PyResult<Request<Bytes>> {
    let method: Vec<u8> = request.getattr("method")?.extract()?;
    let uri: Vec<u8> = request.getattr("uri")?.extract()?;
    let content = request.getattr("content")?;
    let body: Vec<u8> = if content.is_none() {
        Vec::new()
    } else {
        content.call_method1("seek", (0,))?;
        content.call_method0("read")?.extract()?
    };

    let mut builder = Request::builder()
        .method(Method::from_bytes(&method).unwrap_or_else(|_| unusable_method()))
        .uri(parse_uri(&uri));
    builder = builder.extension(client_key(request));
    if let Some(headers) = builder.headers_mut() {
        let raw = request
            .getattr("requestHeaders")?
            .call_method0("getAllRawHeaders")?;
        for item in raw.try_iter()? {
            let (name, values): (Vec<u8>, Vec<Vec<u8>>) = item?.extract()?;
            let Ok(name) = HeaderName::from_bytes(&name) else {
                continue;
            };
            for value in values {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    headers.append(name.clone(), value);
                }
            }
        }
    }
    builder
        .body(Bytes::from(body))
        .map_err(|error| pyo3::exceptions::PyValueError::new_err(error.to_string()))
}

/// Writes `response` to the Twisted request and finishes it, unless the client is gone.
///
/// # Errors
/// A Python exception raised by the request's methods.
pub(crate) fn write_response(
    request: &Bound<'_, PyAny>,
    response: &Response<Bytes>,
) -> PyResult<()> {
    // Twisted raises on finish() after a disconnect; the client will never read it anyway.
    if request
        .getattr("_disconnected")
        .and_then(|d| d.is_truthy())
        .unwrap_or(false)
    {
        return Ok(());
    }
    let py = request.py();
    request.call_method1("setResponseCode", (response.status().as_u16(),))?;
    let headers = request.getattr("responseHeaders")?;
    for name in response.headers().keys() {
        let values = PyList::empty(py);
        for value in response.headers().get_all(name) {
            values.append(PyBytes::new(py, value.as_bytes()))?;
        }
        headers.call_method1(
            "setRawHeaders",
            (PyBytes::new(py, name.as_str().as_bytes()), values),
        )?;
    }
    if !response.body().is_empty() {
        request.call_method1("write", (PyBytes::new(py, response.body()),))?;
    }
    request.call_method0("finish")?;
    Ok(())
}

/// The client's address as Synapse reports it (already taken from `X-Forwarded-For` on
/// listeners with `x_forwarded: true`). Clients without a usable address (a UNIX socket, junk
/// in `X-Forwarded-For`) share one budget: skipping the limits for them would let anyone
/// escape every limit with a forged header.
fn client_key(request: &Bound<'_, PyAny>) -> ClientKey {
    let host: Option<String> = request
        .call_method0("getClientAddress")
        .and_then(|address| address.getattr("host"))
        .and_then(|host| host.extract())
        .ok();
    host.and_then(|host| {
        let without_zone = host.split('%').next().unwrap_or_default();
        without_zone.parse::<IpAddr>().ok()
    })
    .map_or_else(ClientKey::unknown, ClientKey::new)
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
