//! Bearer-token authentication and tenant isolation.
//!
//! Tokens come from two places: a fixed set given at start (the one-time token of the
//! embedded `mailferry move`, valid for every tenant), or the volume's `tokens` table,
//! read at every request so that `mailferry token revoke` takes effect without a
//! restart. Either way only SHA-256 digests are compared or kept, so a memory dump or a
//! log line of this structure reveals nothing usable. A token bound to a tenant (a mail
//! domain) opens streams only for mailboxes of that domain.

use crate::ProxyError;
use mailferry_core::secret::SecretBytes;
use mailferry_core::MailboxAddr;
use mailferry_store::{token_digest, Volume};
use std::collections::HashMap;

/// What an accepted token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's id in the volume (`None` for a fixed token), for the access log.
    pub token_id: Option<u64>,
    /// The tenant (mail domain) it is bound to; `None`: every tenant.
    pub tenant: Option<String>,
}

impl Grant {
    /// Ok if this grant may open a stream for `mailbox`, else [`ProxyError::Forbidden`].
    pub fn authorize(&self, mailbox: &MailboxAddr) -> Result<(), ProxyError> {
        match &self.tenant {
            Some(t) if t != mailbox.domain() => Err(ProxyError::Forbidden {
                mailbox: mailbox.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// The tokens the proxy accepts.
#[derive(Default)]
pub struct TokenSet {
    fixed: HashMap<[u8; 32], Grant>,
    from_volume: bool,
}

impl TokenSet {
    /// A set that also accepts the volume's tokens (looked up at every request).
    pub fn from_volume() -> TokenSet {
        TokenSet {
            fixed: HashMap::new(),
            from_volume: true,
        }
    }

    /// Accepts `token` for every tenant.
    pub fn allow(&mut self, token: &SecretBytes) {
        self.fixed.insert(
            token_digest(token.expose()),
            Grant {
                token_id: None,
                tenant: None,
            },
        );
    }

    /// Accepts `token` for mailboxes of `tenant` only.
    pub fn allow_tenant(&mut self, token: &SecretBytes, tenant: &str) {
        self.fixed.insert(
            token_digest(token.expose()),
            Grant {
                token_id: None,
                tenant: Some(tenant.to_ascii_lowercase()),
            },
        );
    }

    /// What `presented` grants, or [`ProxyError::Unauthorized`] if it is unknown or
    /// revoked. Comparing digests rather than tokens keeps the comparison's timing
    /// independent of how much of a guess was right. Blocking when the set reads the
    /// volume (one SQLite lookup): call it off the async threads.
    pub fn check(&self, presented: &[u8], volume: &Volume) -> Result<Grant, ProxyError> {
        if let Some(g) = self.fixed.get(&token_digest(presented)) {
            return Ok(g.clone());
        }
        if self.from_volume {
            if let Some(g) = volume.token_grant(presented)? {
                return Ok(Grant {
                    token_id: Some(g.id),
                    tenant: Some(g.tenant),
                });
            }
        }
        Err(ProxyError::Unauthorized)
    }
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenSet({} fixed tokens, from volume: {})",
            self.fixed.len(),
            self.from_volume
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_tenants() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let key = tmp.path().join("k");
        Volume::init(&dir, &key).unwrap();
        let v = Volume::open(&dir, &key, &Default::default()).unwrap();
        let mut t = TokenSet::default();
        t.allow(&SecretBytes::new(b"abc".to_vec()));
        t.allow_tenant(&SecretBytes::new(b"xyz".to_vec()), "Example.com");
        let a = MailboxAddr::parse("a@example.com").unwrap();
        let b = MailboxAddr::parse("b@example.org").unwrap();
        let any = t.check(b"abc", &v).unwrap();
        any.authorize(&a).unwrap();
        any.authorize(&b).unwrap();
        let one = t.check(b"xyz", &v).unwrap();
        one.authorize(&a).unwrap();
        assert!(matches!(
            one.authorize(&b),
            Err(ProxyError::Forbidden { .. })
        ));
        assert!(matches!(t.check(b"abd", &v), Err(ProxyError::Unauthorized)));
        assert!(matches!(t.check(b"", &v), Err(ProxyError::Unauthorized)));
        assert!(!format!("{t:?}").contains("abc"));
        // Volume tokens only when asked for.
        let issued = v.issue_token("example.org").unwrap();
        assert!(t.check(issued.token.expose(), &v).is_err());
        let vt = TokenSet::from_volume();
        let g = vt.check(issued.token.expose(), &v).unwrap();
        assert_eq!(g.token_id, Some(issued.id));
        g.authorize(&b).unwrap();
        assert!(g.authorize(&a).is_err());
        v.revoke_token(issued.id).unwrap();
        assert!(matches!(
            vt.check(issued.token.expose(), &v),
            Err(ProxyError::Unauthorized)
        ));
    }
}
