//! Entity tags: generated unique per session and per write, and compared the way proxies
//! force us to (weakly) in `If-Match` and `If-None-Match` (RFC 9110, section 13.1).

use std::fmt;

use http::header::{GetAll, HeaderValue};
use sha2::{Digest, Sha256};

use crate::entropy::{Entropy, EntropyError};
use crate::id::SessionId;

/// A strong entity tag this server issued, without its quotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityTag(String);

impl EntityTag {
    /// The tag of one version of a session.
    ///
    /// Hashing the session id and a random per-write nonce makes the tag differ between
    /// sessions holding the same bytes, and between two writes of the same bytes, so a
    /// polling peer always sees a write (Synapse hashes the payload alone). The payload is
    /// not hashed: the nonce already makes every version's tag unique, and hashing 4 KiB
    /// took a sixth of the standalone server's CPU per write (docs/performance.md).
    pub fn for_version(id: SessionId, nonce: &[u8; 16]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(id.to_bytes());
        hasher.update(nonce);
        let digest = hasher.finalize();
        let mut hex = String::with_capacity(32);
        for byte in &digest[..16] {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        Self(hex)
    }

    /// The tag of a new version of session `id`, with a fresh random nonce.
    ///
    /// # Errors
    /// [`EntropyError`] when no randomness is available.
    pub fn generate(id: SessionId, entropy: &dyn Entropy) -> Result<Self, EntropyError> {
        let mut nonce = [0u8; 16];
        entropy.fill(&mut nonce)?;
        Ok(Self::for_version(id, &nonce))
    }

    /// Rebuilds a tag read back from a store.
    ///
    /// Returns `None` unless `opaque` is valid inside a quoted entity tag.
    pub fn from_opaque(opaque: &str) -> Option<Self> {
        // Visible ASCII only, so that the header value is always valid.
        opaque
            .bytes()
            .all(|b| is_etagc(b) && b.is_ascii())
            .then(|| Self(opaque.to_owned()))
    }

    /// A tag the core built itself from visible ASCII (an MSC4388 sequence token).
    pub(crate) fn from_issued(opaque: String) -> Self {
        debug_assert!(opaque.bytes().all(|b| is_etagc(b) && b.is_ascii()));
        Self(opaque)
    }

    /// The tag without quotes.
    pub fn opaque(&self) -> &str {
        &self.0
    }

    /// The `ETag` header value: the tag in quotes.
    pub fn header_value(&self) -> HeaderValue {
        // Only etagc bytes are ever stored, so the value is always valid.
        HeaderValue::from_str(&format!("\"{}\"", self.0))
            .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The value of an `If-Match` or `If-None-Match` header: `*` or a list of tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityTagList {
    /// `*`: any current version.
    Any,
    /// The opaque parts of the listed tags; whether each was weak does not matter to us.
    Tags(Vec<String>),
}

/// The header is not a valid entity-tag list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedEntityTagList;

impl EntityTagList {
    /// Parses every field line of the header together, as one comma-separated list.
    ///
    /// Returns `Ok(None)` when the header is absent.
    ///
    /// # Errors
    /// [`MalformedEntityTagList`] for unquoted tags, bad characters, a `*` mixed with tags,
    /// or an empty list.
    pub fn from_headers(
        values: GetAll<'_, HeaderValue>,
    ) -> Result<Option<Self>, MalformedEntityTagList> {
        let mut tags = Vec::new();
        let mut any = false;
        let mut present = false;
        for value in values {
            present = true;
            parse_list(value.as_bytes(), &mut tags, &mut any)?;
        }
        match (present, any, tags.is_empty()) {
            (false, _, _) => Ok(None),
            (true, true, true) => Ok(Some(Self::Any)),
            (true, false, false) => Ok(Some(Self::Tags(tags))),
            _ => Err(MalformedEntityTagList),
        }
    }

    /// Weak comparison (RFC 9110, 8.8.3.2): `W/"x"` matches `"x"`. Safe for `If-Match` too,
    /// because our tags change on every write, so a weak tag still names exactly one version.
    pub fn matches(&self, current: &EntityTag) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|tag| tag == current.opaque()),
        }
    }
}

/// Scans one field line: `*` or quoted tags (optionally `W/`), separated by commas. Works on
/// bytes, since a tag may hold obs-text, and scans quoted strings whole, since a tag may hold a
/// comma.
fn parse_list(
    mut rest: &[u8],
    tags: &mut Vec<String>,
    any: &mut bool,
) -> Result<(), MalformedEntityTagList> {
    loop {
        rest = rest.trim_ascii_start();
        while let Some(after) = rest.strip_prefix(b",") {
            rest = after.trim_ascii_start();
        }
        if rest.is_empty() {
            return Ok(());
        }
        if let Some(after) = rest.strip_prefix(b"*") {
            *any = true;
            rest = after;
        } else {
            let quoted = rest.strip_prefix(b"W/").unwrap_or(rest);
            let inner = quoted.strip_prefix(b"\"").ok_or(MalformedEntityTagList)?;
            let end = inner
                .iter()
                .position(|byte| *byte == b'"')
                .ok_or(MalformedEntityTagList)?;
            let opaque = &inner[..end];
            if !opaque.iter().copied().all(is_etagc) {
                return Err(MalformedEntityTagList);
            }
            // Tags we issue are ASCII; a non-ASCII one can only ever fail to match.
            tags.push(String::from_utf8_lossy(opaque).into_owned());
            rest = &inner[end + 1..];
        }
        rest = rest.trim_ascii_start();
        if !rest.is_empty() && !rest.starts_with(b",") {
            return Err(MalformedEntityTagList);
        }
    }
}

/// `etagc` of RFC 9110: any visible byte but `"`, and obs-text.
fn is_etagc(byte: u8) -> bool {
    byte == 0x21 || (0x23..=0x7e).contains(&byte) || byte >= 0x80
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use http::HeaderMap;

    use super::*;
    use crate::entropy::SystemEntropy;

    fn id() -> SessionId {
        SessionId::generate(SystemTime::now(), &SystemEntropy).unwrap()
    }

    fn parse(lines: &[&str]) -> Result<Option<EntityTagList>, MalformedEntityTagList> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(http::header::IF_MATCH, HeaderValue::from_str(line).unwrap());
        }
        EntityTagList::from_headers(headers.get_all(http::header::IF_MATCH))
    }

    #[test]
    fn tags_differ_per_session_and_per_write() {
        let (a, b) = (id(), id());
        let nonce = [7u8; 16];
        assert_ne!(
            EntityTag::for_version(a, &nonce),
            EntityTag::for_version(b, &nonce)
        );
        assert_ne!(
            EntityTag::for_version(a, &[1; 16]),
            EntityTag::for_version(a, &[2; 16])
        );
        assert_eq!(EntityTag::for_version(a, &nonce).opaque().len(), 32);
    }

    #[test]
    fn weak_and_strong_forms_match() {
        let tag = EntityTag::for_version(id(), &[0; 16]);
        let strong = format!("\"{}\"", tag.opaque());
        let weak = format!("W/\"{}\"", tag.opaque());
        assert!(parse(&[&strong]).unwrap().unwrap().matches(&tag));
        assert!(parse(&[&weak]).unwrap().unwrap().matches(&tag));
        assert!(parse(&["\"other\", ", &weak])
            .unwrap()
            .unwrap()
            .matches(&tag));
        assert!(!parse(&["\"other\""]).unwrap().unwrap().matches(&tag));
    }

    #[test]
    fn star_matches_anything() {
        let tag = EntityTag::for_version(id(), &[0; 16]);
        assert_eq!(parse(&["*"]), Ok(Some(EntityTagList::Any)));
        assert!(EntityTagList::Any.matches(&tag));
    }

    #[test]
    fn absent_header_is_none() {
        assert_eq!(parse(&[]), Ok(None));
    }

    #[test]
    fn tags_may_hold_commas_and_obs_text() {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"\"a,b\", W/\"\xe9\"").unwrap();
        headers.append(http::header::IF_MATCH, value);
        let parsed = EntityTagList::from_headers(headers.get_all(http::header::IF_MATCH));
        assert_eq!(
            parsed,
            Ok(Some(EntityTagList::Tags(vec![
                "a,b".to_owned(),
                "\u{fffd}".to_owned()
            ])))
        );
    }

    #[test]
    fn malformed_lists_are_refused() {
        for bad in [
            &["abc"][..],
            &["\"abc"],
            &["*, \"a\""],
            &[""],
            &["\"a b\""],
            &["W/abc"],
        ] {
            assert_eq!(parse(bad), Err(MalformedEntityTagList), "{bad:?}");
        }
    }
}
