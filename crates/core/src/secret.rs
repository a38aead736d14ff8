//! Secret bytes: zeroized on drop, never printed.
//!
//! Keys and tokens travel as [`SecretBytes`]; `Debug` shows `[redacted]` so a stray
//! `{:?}` in a log line cannot leak them. Exposing the bytes is an explicit
//! [`SecretBytes::expose`] call at the one place that needs them.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes that must not outlive their use or reach a log.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// `n` bytes from the OS random number generator.
    pub fn random(n: usize) -> Self {
        use ring::rand::SecureRandom;
        let mut v = vec![0u8; n];
        ring::rand::SystemRandom::new()
            .fill(&mut v)
            .expect("the OS random number generator failed");
        SecretBytes(v)
    }

    /// The secret itself; callers must not copy it anywhere that outlives the call.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = SecretBytes::new(b"hunter2-secret".to_vec());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(s.expose(), b"hunter2-secret");
    }
}
