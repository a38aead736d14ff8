//! Tokens: issue, lookup, revoke, audit records, and administration while another
//! process holds the volume.

use super::*;
use crate::Credential;

fn fixture() -> (tempfile::TempDir, std::path::PathBuf, Credential) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let key = tmp.path().join("volume.key");
    Volume::init(&dir, &key).unwrap();
    (tmp, dir, Credential::KeyFile(key))
}

fn audit_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(crate::audit_trail::AUDIT_FILE)).unwrap()
}

#[test]
fn issue_lookup_revoke_and_audit() {
    let (_t, dir, cred) = fixture();
    let v = Volume::open_with(&dir, &cred, &StoreSettings::default()).unwrap();
    let t = v.issue_token("Example.COM").unwrap();
    assert_eq!(t.tenant, "example.com");
    assert_eq!(t.token.len(), 64);
    let grant = v.token_grant(t.token.expose()).unwrap().unwrap();
    assert_eq!(
        grant,
        TokenGrant {
            id: t.id,
            tenant: "example.com".into()
        }
    );
    assert_eq!(v.token_grant(b"0000").unwrap(), None);
    let list = v.list_tokens().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].revoked, None);
    assert!(v.revoke_token(t.id).unwrap());
    assert!(
        !v.revoke_token(t.id).unwrap(),
        "second revoke changes nothing"
    );
    assert_eq!(v.token_grant(t.token.expose()).unwrap(), None);
    assert!(v.list_tokens().unwrap()[0].revoked.is_some());
    assert!(matches!(
        v.revoke_token(99),
        Err(StoreError::UnknownToken { id: 99 })
    ));
    assert!(matches!(
        v.issue_token("a@b.com"),
        Err(StoreError::BadTenant { .. })
    ));
    assert!(matches!(
        v.issue_token(""),
        Err(StoreError::BadTenant { .. })
    ));
    let log = audit_text(&dir);
    assert_eq!(log.matches("\"token.issued\"").count(), 1, "{log}");
    assert_eq!(log.matches("\"token.revoked\"").count(), 1, "{log}");
    assert!(
        !log.contains("example.com"),
        "tenant in clear in the audit log"
    );
    // Nothing about the token itself is anywhere in the volume.
    let hex = std::str::from_utf8(t.token.expose()).unwrap().to_string();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let b = std::fs::read(&p).unwrap();
            assert!(
                !b.windows(hex.len()).any(|w| w == hex.as_bytes()),
                "{}",
                p.display()
            );
        }
    }
}

#[test]
fn admin_while_volume_is_held_and_audit_flushed_by_holder() {
    let (_t, dir, cred) = fixture();
    let held = Volume::open_with(&dir, &cred, &StoreSettings::default()).unwrap();
    let admin = TokenAdmin::open(&dir, &cred, &StoreSettings::default()).unwrap();
    assert!(admin.shared());
    let t = admin.issue("example.org").unwrap();
    // The holder sees it at once.
    assert_eq!(
        held.token_grant(t.token.expose()).unwrap().unwrap().id,
        t.id
    );
    assert!(admin.revoke(t.id).unwrap());
    assert_eq!(held.token_grant(t.token.expose()).unwrap(), None);
    assert_eq!(admin.list().unwrap().len(), 1);
    assert!(!audit_text(&dir).contains("token."));
    assert_eq!(held.flush_token_audit().unwrap(), 2);
    assert_eq!(held.flush_token_audit().unwrap(), 0);
    let log = audit_text(&dir);
    assert!(
        log.contains("token.issued") && log.contains("token.revoked"),
        "{log}"
    );
}

#[test]
fn wrong_credential_is_refused_even_when_shared() {
    let (t, dir, cred) = fixture();
    let _held = Volume::open_with(&dir, &cred, &StoreSettings::default()).unwrap();
    let other = t.path().join("other.key");
    std::fs::write(&other, [7u8; 32]).unwrap();
    let r = TokenAdmin::open(&dir, &Credential::KeyFile(other), &StoreSettings::default());
    assert!(r.is_err());
}
