//! Session ids: ULIDs whose 80 random bits come from a CSPRNG, so that a session URL cannot
//! be guessed from another one.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use ulid::Ulid;

use crate::entropy::{Entropy, EntropyError};

/// The id of a rendezvous session: a ULID, written as 26 upper-case Crockford base32 chars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Ulid);

/// Characters of an id kept in logs.
pub(crate) const SHORT_LEN: usize = 12;

/// The text is not an id this server could have issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSessionId;

impl SessionId {
    /// A fresh id: the time part from `now`, the 80 random bits from `entropy`.
    ///
    /// # Errors
    /// [`EntropyError`] when no randomness is available.
    pub fn generate(now: SystemTime, entropy: &dyn Entropy) -> Result<Self, EntropyError> {
        let mut random = [0u8; 10];
        entropy.fill(&mut random)?;
        let random = random
            .iter()
            .fold(0u128, |acc, byte| (acc << 8) | u128::from(*byte));
        let millis = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(Self(Ulid::from_parts(millis, random)))
    }

    /// The id of a stored ULID, as read back from a snapshot or a shared store.
    pub fn from_ulid(ulid: Ulid) -> Self {
        Self(ulid)
    }

    /// The first 12 characters, for logs: the 10 of the creation time and 10 bits of the 80
    /// random ones, enough to tell sessions apart in a log, too few to reach one (an id is
    /// the only secret guarding a session).
    pub fn short(self) -> String {
        let mut text = self.0.to_string();
        text.truncate(SHORT_LEN);
        text.push('…');
        text
    }

    /// The 16 bytes of the ULID, for hashing.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }
}

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    /// Accepts exactly the canonical form this server issues: 26 upper-case chars. The ULID
    /// crate would also take lower case; refusing it keeps one URL per session.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != ulid::ULID_LEN
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            return Err(InvalidSessionId);
        }
        let ulid = Ulid::from_string(text).map_err(|_| InvalidSessionId)?;
        // Rejects the aliases Crockford decoding allows (I, L, O for 1, 1, 0).
        if ulid.to_string() == text {
            Ok(Self(ulid))
        } else {
            Err(InvalidSessionId)
        }
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SystemEntropy;

    fn fresh() -> SessionId {
        SessionId::generate(SystemTime::now(), &SystemEntropy).unwrap()
    }

    #[test]
    fn generated_ids_round_trip() {
        let id = fresh();
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<SessionId>(), Ok(id));
    }

    #[test]
    fn ids_are_not_sequential() {
        let (a, b) = (fresh(), fresh());
        let random = |id: SessionId| u128::from_be_bytes(id.to_bytes()) & ((1u128 << 80) - 1);
        let (ra, rb) = (random(a), random(b));
        assert_ne!(ra, rb);
        assert_ne!(ra.wrapping_add(1), rb);
    }

    #[test]
    fn only_canonical_text_parses() {
        let text = fresh().to_string();
        for bad in [
            text.to_lowercase(),
            text[..25].to_owned(),
            format!("{text}0"),
            String::new(),
            "../../etc/passwd".to_owned(),
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ".to_owned(),
            "0000000000000000000000000I".to_owned(),
            "É".repeat(13),
        ] {
            assert_eq!(bad.parse::<SessionId>(), Err(InvalidSessionId), "{bad:?}");
        }
    }
}
