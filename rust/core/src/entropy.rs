//! The only source of randomness for the core. Session ids and `ETag` nonces must be
//! unguessable, so production draws from a cryptographically secure generator.

use std::fmt;

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

/// The operating system's generator (`getrandom(2)` on Linux). A user-space generator
/// would cost nanoseconds instead of about a microsecond per draw, but one seeded before
/// a `fork` hands every child process the same stream, hence the same session ids.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(buf).map_err(|_| EntropyError)
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
