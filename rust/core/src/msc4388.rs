//! What MSC4388 (the 2025 rendezvous API) fixes, and the request checks that need no store:
//! its limits, the caller's authentication as the glue reports it, its JSON bodies, and the
//! browser-navigation rule of its GET.

use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;

use crate::error::ErrorKind;

/// The unstable prefix MSC4388's paths live under (discovery and create on the prefix
/// itself, sessions at `/{id}` below it).
pub const MSC4388_PREFIX: &str = "/_matrix/client/unstable/io.element.msc4388/rendezvous";

/// The most UTF-8 bytes a session's `data` may hold (MSC4388: "MUST enforce a maximum `data`
/// field size of 4096 bytes"); fixed by the MSC, so not tied to `max_payload_bytes`.
pub const MSC4388_MAX_DATA_BYTES: usize = 4096;

/// The largest raw JSON body accepted on an MSC4388 create or write, checked before parsing.
///
/// JSON escaping can make an honest body much longer than its `data`: the worst case is
/// `\u00XX` for a control character, six bytes for one, so 4096 bytes of data can take
/// 24 576 bytes of string. 2048 more leave room for the keys, a `sequence_token` (at most 64
/// bytes as issued, 384 if escaped the same way) and whitespace. Anything longer cannot be
/// both honest and within the data limit, and is answered 413 without being parsed.
pub const MSC4388_MAX_BODY_BYTES: usize = MSC4388_MAX_DATA_BYTES * 6 + 2048;

/// Shortest `ttl` allowed with MSC4388 on: MSC4388's minimum timeout ("SHOULD be 120
/// seconds for usability").
pub const MSC4388_MIN_TTL: std::time::Duration = std::time::Duration::from_secs(120);
/// Longest `ttl` allowed with MSC4388 on: MSC4388's maximum timeout ("SHOULD be 300 seconds
/// for security").
pub const MSC4388_MAX_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether and for whom MSC4388 is served (Synapse's `experimental_features.msc4388_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Msc4388Mode {
    /// Not served: its paths answer 404 `M_UNRECOGNIZED`, as any unknown path.
    #[default]
    Off,
    /// Anyone may create a session.
    Open,
    /// Only a caller with a valid access token may create a session (the request carries
    /// the [`Authenticated`] extension); everything else is open, as MSC4388 says.
    Authenticated,
}

impl Msc4388Mode {
    /// The configuration's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Open => "open",
            Self::Authenticated => "authenticated",
        }
    }

    /// Whether MSC4388 is served at all.
    pub fn is_on(self) -> bool {
        self != Self::Off
    }
}

/// The mark the glue puts in a request's extensions when it carries a valid access token
/// (checked through Synapse's module API; the standalone server, which cannot check tokens,
/// never inserts it). Only an MSC4388 create in [`Msc4388Mode::Authenticated`], and its
/// discovery, look at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Authenticated;

/// Whether a GET is a browser navigation (MSC4388's unsafe-content rule), which must not be
/// handed a payload: `Sec-Fetch-Dest` present and not `empty`, `Sec-Fetch-Mode: navigate`,
/// `Sec-Fetch-User: ?1` or `Sec-Fetch-Site: none`. A script's `fetch` sends `empty`, `cors`
/// or `same-origin`, no `Sec-Fetch-User`, and a site other than `none`.
pub(crate) fn is_navigation(headers: &HeaderMap) -> bool {
    let any = |name: &str, test: &dyn Fn(&[u8]) -> bool| {
        headers
            .get_all(name)
            .iter()
            .any(|value| test(value.as_bytes().trim_ascii()))
    };
    any("sec-fetch-dest", &|v| !v.eq_ignore_ascii_case(b"empty"))
        || any("sec-fetch-mode", &|v| v.eq_ignore_ascii_case(b"navigate"))
        || any("sec-fetch-user", &|v| v == b"?1")
        || any("sec-fetch-site", &|v| v.eq_ignore_ascii_case(b"none"))
}

/// The fields of a create (`data`) or a write (`sequence_token` and `data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Body {
    pub(crate) sequence_token: Option<String>,
    pub(crate) data: Bytes,
}

/// Parses an MSC4388 body: bounded, then JSON, then the fields, then the data's size.
///
/// # Errors
/// 413 over [`MSC4388_MAX_BODY_BYTES`] raw or [`MSC4388_MAX_DATA_BYTES`] of data; 400
/// `M_INVALID_PARAM` for anything but a JSON object with the string fields asked for.
pub(crate) fn parse_body(body: &[u8], with_token: bool) -> Result<Body, ErrorKind> {
    if body.len() > MSC4388_MAX_BODY_BYTES {
        return Err(ErrorKind::PayloadTooLarge {
            max: MSC4388_MAX_DATA_BYTES,
        });
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ErrorKind::InvalidBody("Body is not valid JSON"))?;
    let Value::Object(mut fields) = value else {
        return Err(ErrorKind::InvalidBody("Body must be a JSON object"));
    };
    let mut string = |name: &str, missing: &'static str| match fields.remove(name) {
        Some(Value::String(text)) => Ok(text),
        _ => Err(ErrorKind::InvalidBody(missing)),
    };
    let sequence_token = if with_token {
        Some(string(
            "sequence_token",
            "`sequence_token` must be present and a string",
        )?)
    } else {
        None
    };
    let data = string("data", "`data` must be present and a string")?;
    if data.len() > MSC4388_MAX_DATA_BYTES {
        return Err(ErrorKind::PayloadTooLarge {
            max: MSC4388_MAX_DATA_BYTES,
        });
    }
    Ok(Body {
        sequence_token,
        data: Bytes::from(data),
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn bodies_are_checked_in_order() {
        let ok = parse_body(br#"{"data": "x\u00e9", "other": 1}"#, false).unwrap();
        assert_eq!(ok.data.as_ref(), "xé".as_bytes());
        assert_eq!(ok.sequence_token, None);
        for (bad, with_token) in [
            (&b"{"[..], false),
            (b"[]", false),
            (b"\"data\"", false),
            (b"{}", false),
            (br#"{"data": 1}"#, false),
            (br#"{"data": null}"#, false),
            (br#"{"data": "x"}"#, true),
            (br#"{"data": "x", "sequence_token": 5}"#, true),
            (b"{\"data\": \"\xff\"}", false),
        ] {
            assert!(
                matches!(parse_body(bad, with_token), Err(ErrorKind::InvalidBody(_))),
                "{bad:?}"
            );
        }
        let big = format!("{{\"data\": \"{}\"}}", "a".repeat(4097));
        assert_eq!(
            parse_body(big.as_bytes(), false),
            Err(ErrorKind::PayloadTooLarge { max: 4096 })
        );
        let huge = vec![b' '; MSC4388_MAX_BODY_BYTES + 1];
        assert_eq!(
            parse_body(&huge, false),
            Err(ErrorKind::PayloadTooLarge { max: 4096 })
        );
        // Fully escaped data at the limit still fits the raw bound.
        let escaped = format!("{{\"data\": \"{}\"}}", "\\u0001".repeat(4096));
        assert_eq!(
            parse_body(escaped.as_bytes(), false).unwrap().data.len(),
            4096
        );
    }

    #[test]
    fn navigation_is_recognised() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(!is_navigation(&headers(&[])));
        assert!(!is_navigation(&headers(&[
            ("sec-fetch-dest", "empty"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-site", "cross-site"),
        ])));
        for pairs in [
            &[("sec-fetch-dest", "document")][..],
            &[("sec-fetch-dest", "iframe")],
            &[("sec-fetch-mode", "navigate")],
            &[("sec-fetch-user", "?1")],
            &[("sec-fetch-site", "none")],
        ] {
            assert!(is_navigation(&headers(pairs)), "{pairs:?}");
        }
    }
}
