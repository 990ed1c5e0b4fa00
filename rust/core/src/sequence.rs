//! MSC4388 sequence tokens: the version stamp of a 2025 rendezvous session's payload, which
//! clients compare-and-swap on and bind into their encryption (HPKE AAD).
//!
//! # Format
//!
//! `{counter}.{digest}`: `counter` is the write number in decimal without leading zeros (0
//! for the payload of the create, then 1, 2, ...), and `digest` is the unpadded base64url
//! encoding (RFC 4648, section 5) of
//!
//! ```text
//! SHA-256("io.element.msc4388.sequence_token\0" || id (16 bytes) || counter (u64, big-endian) || data)
//! ```
//!
//! so a token is at most 20 + 1 + 43 = 64 bytes of `[0-9A-Za-z._-]`, within the opaque
//! identifier grammar and its 255 bytes.
//!
//! # Why this design
//!
//! - It changes on every successful write, identical data included (the counter moves), and
//!   differs between sessions holding the same data (the id), as MSC4388 requires.
//! - It is a pure function of the session's history, with no randomness and no clock: every
//!   process, and both stores, hand out byte-identical tokens for the same history, which
//!   clients need because the token is part of their AAD.
//! - It carries its own counter, so the core computes the token of the next write from the
//!   token a PUT presents, before the store is asked: if the presented token is the current
//!   one, its counter is the current counter. The store then only compares strings and never
//!   hashes (the Redis scripts stay hash-free). A presented token that does not parse cannot
//!   be current, so it gets no successor and can only be an idempotent retry or a conflict.
//! - The fixed-length id and counter before the data, and the domain prefix, make the hashed
//!   input unambiguous.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::etag::EntityTag;
use crate::id::SessionId;

/// Domain separation for the digest.
const DOMAIN: &[u8] = b"io.element.msc4388.sequence_token\0";
/// The base64url alphabet (RFC 4648, table 2).
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Length of the encoded digest: 32 bytes, unpadded.
const DIGEST_CHARS: usize = 43;

/// A sequence token this server issued (or could have issued), in its canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceToken {
    counter: u64,
    text: String,
}

impl SequenceToken {
    /// The token of write number `counter` of session `id`, holding `data`.
    pub fn new(id: SessionId, counter: u64, data: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN);
        hasher.update(id.to_bytes());
        hasher.update(counter.to_be_bytes());
        hasher.update(data);
        let digest = hasher.finalize();
        let mut text = counter.to_string();
        text.push('.');
        base64url(&digest, &mut text);
        Self { counter, text }
    }

    /// The token of a session's first payload, given at its creation.
    pub fn initial(id: SessionId, data: &[u8]) -> Self {
        Self::new(id, 0, data)
    }

    /// Reads a token a client presents. `None` unless it has the shape of one this server
    /// issues (a canonical counter, a dot, 43 base64url characters); such a token is never
    /// current, whatever it says.
    pub fn parse(text: &str) -> Option<Self> {
        let (counter, digest) = text.split_once('.')?;
        let canonical = !counter.is_empty()
            && counter.len() <= 20
            && counter.bytes().all(|b| b.is_ascii_digit())
            && (counter == "0" || !counter.starts_with('0'));
        if !canonical
            || digest.len() != DIGEST_CHARS
            || !digest.bytes().all(|b| BASE64URL.contains(&b))
        {
            return None;
        }
        Some(Self {
            counter: counter.parse().ok()?,
            text: text.to_owned(),
        })
    }

    /// The token the next write of `data` gets if this token is the current one; `None`
    /// once the counter cannot move (after 2^64 - 1 writes, which no session lives to see).
    pub fn successor(&self, id: SessionId, data: &[u8]) -> Option<Self> {
        Some(Self::new(id, self.counter.checked_add(1)?, data))
    }

    /// The write number the token carries.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// The token as sent to clients.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The token in the stores' version slot (stores keep it where MSC4108 keeps its `ETag`).
    pub fn to_entity_tag(&self) -> EntityTag {
        // Only [0-9A-Za-z._-]: always a valid opaque tag.
        EntityTag::from_issued(self.text.clone())
    }
}

impl fmt::Display for SequenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Appends the unpadded base64url encoding of `bytes` to `out`.
fn base64url(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(BASE64URL[index as usize]));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::entropy::SystemEntropy;

    fn id() -> SessionId {
        SessionId::generate(SystemTime::now(), &SystemEntropy).unwrap()
    }

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        for (input, expected) in [
            (&b""[..], ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff], "-_8"),
        ] {
            let mut out = String::new();
            base64url(input, &mut out);
            assert_eq!(out, expected, "{input:?}");
        }
    }

    #[test]
    fn tokens_follow_the_grammar_and_round_trip() {
        let id = id();
        let token = SequenceToken::new(id, u64::MAX, b"data");
        assert_eq!(token.as_str().len(), 64);
        assert!(token
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)));
        assert_eq!(SequenceToken::parse(token.as_str()), Some(token.clone()));
        assert_eq!(token.successor(id, b"data"), None);
        let first = SequenceToken::initial(id, b"x");
        assert!(first.as_str().starts_with("0."));
        assert_eq!(first.successor(id, b"x").unwrap().counter(), 1);
    }

    #[test]
    fn tokens_change_with_counter_id_and_data() {
        let (a, b) = (id(), id());
        let base = SequenceToken::new(a, 1, b"same");
        assert_eq!(base, SequenceToken::new(a, 1, b"same"));
        assert_ne!(base, SequenceToken::new(a, 2, b"same"));
        assert_ne!(base, SequenceToken::new(b, 1, b"same"));
        assert_ne!(base, SequenceToken::new(a, 1, b"other"));
    }

    #[test]
    fn foreign_shapes_do_not_parse() {
        let good = SequenceToken::initial(id(), b"").to_string();
        let digest = &good[2..];
        for bad in [
            String::new(),
            "1".to_owned(),
            format!("01.{digest}"),
            format!("-1.{digest}"),
            format!("1.{}", &digest[1..]),
            format!("1.{digest}="),
            format!("1.{}+", &digest[1..]),
            format!("99999999999999999999.{digest}"),
            format!("1 .{digest}"),
        ] {
            assert_eq!(SequenceToken::parse(&bad), None, "{bad:?}");
        }
    }
}
