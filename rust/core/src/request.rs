//! Validation of the headers and body of a create or a write, in the order MSC4108 clients
//! rely on: length, size, then type.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::HeaderMap;
use mime::Mime;

use crate::error::ErrorKind;

/// Checks `Content-Length`, the size limit and `Content-Type` of an upload.
///
/// # Errors
/// The [`ErrorKind`] of the first check that fails.
pub(crate) fn check_upload(
    headers: &HeaderMap,
    body: &Bytes,
    max_payload_bytes: usize,
) -> Result<(), ErrorKind> {
    let declared = content_length(headers)?;
    let max = u64::try_from(max_payload_bytes).unwrap_or(u64::MAX);
    let received = u64::try_from(body.len()).unwrap_or(u64::MAX);
    if declared > max || received > max {
        return Err(ErrorKind::PayloadTooLarge {
            max: max_payload_bytes,
        });
    }
    if declared != received {
        return Err(ErrorKind::InvalidHeader("Content-Length"));
    }
    check_content_type(headers)
}

fn content_length(headers: &HeaderMap) -> Result<u64, ErrorKind> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        // A chunked upload has no length: refused, as MSC4108 requires a length.
        return Err(ErrorKind::MissingHeader("Content-Length"));
    };
    if headers.contains_key(TRANSFER_ENCODING) {
        return Err(ErrorKind::InvalidHeader("Content-Length"));
    }
    let length = parse_length(first.as_bytes())?;
    // Repeated lines are tolerated only when they agree (RFC 9110, 8.6).
    for other in values {
        if parse_length(other.as_bytes())? != length {
            return Err(ErrorKind::InvalidHeader("Content-Length"));
        }
    }
    Ok(length)
}

fn parse_length(value: &[u8]) -> Result<u64, ErrorKind> {
    let invalid = ErrorKind::InvalidHeader("Content-Length");
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(invalid);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(invalid)
}

/// `text/plain`, any case, optionally with `charset=utf-8` (what browsers add).
fn check_content_type(headers: &HeaderMap) -> Result<(), ErrorKind> {
    let invalid = ErrorKind::InvalidHeader("Content-Type");
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let value = values
        .next()
        .ok_or(ErrorKind::MissingHeader("Content-Type"))?;
    if values.next().is_some() {
        return Err(invalid);
    }
    let mime: Mime = value
        .to_str()
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| invalid.clone())?;
    let plain_text = mime.type_() == mime::TEXT && mime.subtype() == mime::PLAIN;
    let utf8_only = mime
        .params()
        .all(|(name, value)| name == mime::CHARSET && value.as_str().eq_ignore_ascii_case("utf-8"));
    if plain_text && utf8_only {
        Ok(())
    } else {
        Err(invalid)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn check(pairs: &[(&'static str, &str)], body: &'static [u8]) -> Result<(), ErrorKind> {
        check_upload(&headers(pairs), &Bytes::from_static(body), 4)
    }

    #[test]
    fn well_formed_upload_passes() {
        assert_eq!(
            check(
                &[("content-length", "4"), ("content-type", "text/plain")],
                b"abcd"
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &[("content-length", "0"), ("content-type", "TEXT/Plain")],
                b""
            ),
            Ok(())
        );
        let utf8 = [
            ("content-length", "1"),
            ("content-type", "text/plain; charset=UTF-8"),
        ];
        assert_eq!(check(&utf8, b"a"), Ok(()));
    }

    #[test]
    fn length_is_checked_first() {
        assert_eq!(
            check(&[], b""),
            Err(ErrorKind::MissingHeader("Content-Length"))
        );
        for bad in ["-1", "abc", "1.0", "", " 1", "99999999999999999999999"] {
            assert_eq!(
                check(&[("content-length", bad)], b""),
                Err(ErrorKind::InvalidHeader("Content-Length")),
                "{bad:?}"
            );
        }
        let disagreeing = [("content-length", "1"), ("content-length", "2")];
        assert_eq!(
            check(&disagreeing, b"a"),
            Err(ErrorKind::InvalidHeader("Content-Length"))
        );
        let chunked = [("content-length", "1"), ("transfer-encoding", "chunked")];
        assert_eq!(
            check(&chunked, b"a"),
            Err(ErrorKind::InvalidHeader("Content-Length"))
        );
    }

    #[test]
    fn size_is_checked_before_type() {
        assert_eq!(
            check(&[("content-length", "5")], b"abcde"),
            Err(ErrorKind::PayloadTooLarge { max: 4 })
        );
        assert_eq!(
            check(&[("content-length", "1")], b"abcde"),
            Err(ErrorKind::PayloadTooLarge { max: 4 })
        );
        assert_eq!(
            check(&[("content-length", "3")], b"ab"),
            Err(ErrorKind::InvalidHeader("Content-Length"))
        );
    }

    #[test]
    fn content_type_must_be_plain_text() {
        let length = ("content-length", "0");
        assert_eq!(
            check(&[length], b""),
            Err(ErrorKind::MissingHeader("Content-Type"))
        );
        for bad in [
            "application/json",
            "text/plain; charset=latin1",
            "text/plain; format=flowed",
            "text/plainx",
            "text",
            "",
        ] {
            assert_eq!(
                check(&[length, ("content-type", bad)], b""),
                Err(ErrorKind::InvalidHeader("Content-Type")),
                "{bad:?}"
            );
        }
        let twice = [
            length,
            ("content-type", "text/plain"),
            ("content-type", "text/plain"),
        ];
        assert_eq!(
            check(&twice, b""),
            Err(ErrorKind::InvalidHeader("Content-Type"))
        );
    }
}
