//! The only source of randomness for the core. Session ids and `ETag` nonces must be
//! unguessable, so production draws from a cryptographically secure generator.

use std::fmt;

use rand::Rng;

/// The operating system could not provide random bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntropyError;

impl fmt::Display for EntropyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the system random number generator failed")
    }
}

impl std::error::Error for EntropyError {}

/// A source of cryptographically secure random bytes.
pub trait Entropy: Send + Sync {
    /// Fills `buf` with random bytes.
    ///
    /// # Errors
    /// [`EntropyError`] when no randomness is available.
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// A CSPRNG: `rand`'s thread-local generator (`ChaCha12`, seeded from the operating system and
/// reseeded periodically). Drawing from it costs nanoseconds where a `getrandom` system call
/// costs about a microsecond, twice per create.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyError> {
        rand::rng().fill_bytes(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_entropy_differs_between_draws() {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        SystemEntropy.fill(&mut a).unwrap();
        SystemEntropy.fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
