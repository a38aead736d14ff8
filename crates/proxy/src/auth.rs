//! Bearer-token authentication. Tokens are kept only as SHA-256 digests, so a memory
//! dump or a log line of this structure reveals nothing usable.

use mailferry_core::secret::SecretBytes;
use std::collections::HashSet;

/// The tokens the proxy accepts.
#[derive(Default)]
pub struct TokenSet {
    digests: HashSet<[u8; 32]>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

impl TokenSet {
    /// Accepts `token`.
    pub fn allow(&mut self, token: &SecretBytes) {
        self.digests.insert(digest(token.expose()));
    }

    /// True if `presented` is an accepted token. Comparing digests rather than tokens
    /// keeps the comparison's timing independent of how much of a guess was right.
    pub fn check(&self, presented: &[u8]) -> bool {
        self.digests.contains(&digest(presented))
    }
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({} tokens)", self.digests.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_tokens_pass() {
        let mut t = TokenSet::default();
        let tok = SecretBytes::new(b"abc".to_vec());
        t.allow(&tok);
        assert!(t.check(b"abc"));
        assert!(!t.check(b"abd"));
        assert!(!t.check(b""));
        assert!(!format!("{t:?}").contains("abc"));
    }
}
