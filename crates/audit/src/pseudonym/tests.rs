use super::*;

/// The key of the vectors in docs/audit-log.md and docs/vectors/audit/.
const VECTOR_KEY: [u8; 32] = [0x42; 32];

#[test]
fn pseudonyms_match_the_documented_vectors() {
    let p = Pseudonymizer::new(&VECTOR_KEY);
    assert_eq!(
        p.pseudonym("folder", "INBOX"),
        "6973023b94cae417ab818d28a6927ced"
    );
    assert_eq!(
        p.pseudonym("mailbox", "alice@example.com"),
        "c9d3b5858176f2016d612e546dbfd597"
    );
}

#[test]
fn kind_and_key_change_the_pseudonym() {
    let p = Pseudonymizer::new(&VECTOR_KEY);
    assert_ne!(
        p.pseudonym("folder", "INBOX"),
        p.pseudonym("subject", "INBOX")
    );
    // The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert_ne!(p.pseudonym("ab", "c"), p.pseudonym("a", "bc"));
    let q = Pseudonymizer::new(&[0x43; 32]);
    assert_ne!(
        p.pseudonym("folder", "INBOX"),
        q.pseudonym("folder", "INBOX")
    );
}

#[test]
fn debug_does_not_show_the_key() {
    assert_eq!(
        format!("{:?}", Pseudonymizer::new(&VECTOR_KEY)),
        "Pseudonymizer([redacted])"
    );
}
