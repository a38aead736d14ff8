//! The move receipt: a Merkle root over every message present in a mailbox, computed the
//! same way on both sides so an auditor can compare one 64-hex-digit value.
//!
//! Leaves are `SHA-256(0x00 || item || 0x00 || sha256-hex)` for each message, where
//! `item` is `folder/source-id`, sorted by their bytes (duplicates kept, so a message
//! stored twice changes the root); inner nodes are `SHA-256(0x01 || left || right)`; an
//! odd node at the end of a level is carried up unchanged. The root of no messages is
//! SHA-256 of the empty string. Specified in docs/audit-log.md.

use ring::digest::{digest, Context, SHA256};

/// The receipt root of `items` (`(folder/source-id, content sha256 hex)`), hex.
pub fn receipt_root<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    root_of_leaves(
        items
            .into_iter()
            .map(|(item, sha)| leaf(item, sha))
            .collect(),
    )
}

/// The leaf of one message: `SHA-256(0x00 || item || 0x00 || sha256-hex)`. A caller
/// that keeps leaves between passes (an incremental receipt) hands them to
/// [`root_of_leaves`] instead of recomputing every one.
pub fn leaf(item: &str, sha: &str) -> [u8; 32] {
    let mut c = Context::new(&SHA256);
    c.update(&[0]);
    c.update(item.as_bytes());
    c.update(&[0]);
    c.update(sha.as_bytes());
    c.finish().as_ref().try_into().expect("32 bytes")
}

/// The receipt root over `leaves` in any order (they are sorted here), hex.
pub fn root_of_leaves(mut leaves: Vec<[u8; 32]>) -> String {
    leaves.sort_unstable();
    if leaves.is_empty() {
        return hex::encode(digest(&SHA256, b""));
    }
    while leaves.len() > 1 {
        leaves = leaves
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => {
                    let mut c = Context::new(&SHA256);
                    c.update(&[1]);
                    c.update(l);
                    c.update(r);
                    c.finish().as_ref().try_into().expect("32 bytes")
                }
                [one] => *one,
                _ => unreachable!("chunks(2)"),
            })
            .collect();
    }
    hex::encode(leaves[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_content_and_duplicates_do() {
        let a = receipt_root([("INBOX/1", "aa"), ("INBOX/2", "bb"), ("Sent/3", "cc")]);
        let b = receipt_root([("Sent/3", "cc"), ("INBOX/1", "aa"), ("INBOX/2", "bb")]);
        assert_eq!(a, b);
        assert_ne!(
            a,
            receipt_root([("INBOX/1", "aa"), ("INBOX/2", "bx"), ("Sent/3", "cc")])
        );
        assert_ne!(a, receipt_root([("INBOX/1", "aa"), ("INBOX/2", "bb")]));
        assert_ne!(
            a,
            receipt_root([
                ("INBOX/1", "aa"),
                ("INBOX/2", "bb"),
                ("Sent/3", "cc"),
                ("Sent/3", "cc")
            ])
        );
    }

    #[test]
    fn vector() {
        // docs/audit-log.md, "Move receipt": the empty root and a two-leaf root.
        assert_eq!(
            receipt_root([]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let two = receipt_root([("INBOX/1", "00"), ("INBOX/2", "11")]);
        let l1 = digest(&SHA256, b"\x00INBOX/1\x0000");
        let l2 = digest(&SHA256, b"\x00INBOX/2\x0011");
        let (lo, hi) = if l1.as_ref() < l2.as_ref() {
            (l1, l2)
        } else {
            (l2, l1)
        };
        let mut inner = vec![1u8];
        inner.extend_from_slice(lo.as_ref());
        inner.extend_from_slice(hi.as_ref());
        assert_eq!(two, hex::encode(digest(&SHA256, &inner)));
    }
}
