//! Keyed pseudonyms for values that must not appear in a log in plain text.
//!
//! The destination-side log must never hold subjects, addresses or folder names: the
//! store that writes it keeps mail encrypted, and its log must not undo that. Plain
//! SHA-256 would not do, since a folder name or address is easy to guess and hash;
//! an HMAC-SHA256 under a secret key gives the same pseudonym for the same value (so
//! records can be correlated) without letting anyone who lacks the key test guesses.
//!
//! This module does not choose or keep the key; the store derives one from its own
//! key material and keeps it secret.

use ring::hmac;

/// Bytes of a pseudonym before hex encoding (128 bits).
const PSEUDONYM_BYTES: usize = 16;

/// Turns sensitive values into keyed pseudonyms: `hex(HMAC-SHA256(key, kind || 0x00 ||
/// value)[..16])`, 32 hex digits.
pub struct Pseudonymizer {
    key: hmac::Key,
}

impl Pseudonymizer {
    /// A pseudonymizer with a 256-bit secret key.
    pub fn new(key: &[u8; 32]) -> Self {
        Pseudonymizer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The pseudonym of `value` as a `kind` of thing (`"folder"`, `"mailbox"`,
    /// `"subject"`): the kind is mixed in, so equal strings of different kinds do not
    /// share a pseudonym. `kind` must not contain a NUL byte (it is a constant in code).
    pub fn pseudonym(&self, kind: &str, value: &str) -> String {
        debug_assert!(
            !kind.contains('\0'),
            "pseudonym kinds are NUL-free constants"
        );
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(kind.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        hex::encode(&ctx.sign().as_ref()[..PSEUDONYM_BYTES])
    }
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer([redacted])")
    }
}

#[cfg(test)]
mod tests;
