//! Identifiers of moves, mailboxes, folders and source items, validated at the edge.
//!
//! Validation here is what keeps hostile folder names (`../x`, NUL bytes, control
//! characters) from ever reaching a path on disk; nothing below trusts a raw string.

use crate::CoreError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The impls a validated string newtype shares: `TryFrom<String>` through its `parse`
/// (what serde reads), `From<_> for String` (what serde writes) and, with `display`,
/// `Display` as the text itself.
macro_rules! string_id {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = CoreError;
            fn try_from(s: String) -> Result<Self, CoreError> {
                $t::parse(&s)
            }
        }

        impl From<$t> for String {
            fn from(m: $t) -> String {
                m.0
            }
        }
    };
    ($t:ident, display) => {
        string_id!($t);

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// A move's identifier: 16 random bytes, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct MoveId(pub [u8; 16]);

impl MoveId {
    /// A fresh random move id.
    pub fn random() -> Self {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .expect("the OS random number generator failed");
        MoveId(b)
    }
}

impl fmt::Display for MoveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for MoveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MoveId({self})")
    }
}

impl From<MoveId> for String {
    fn from(m: MoveId) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for MoveId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let mut b = [0u8; 16];
        hex::decode_to_slice(&s, &mut b).map_err(|e| format!("move id {s:?}: {e}"))?;
        Ok(MoveId(b))
    }
}

/// A destination mailbox address, lower-cased, `local@domain`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub struct MailboxAddr(String);

impl MailboxAddr {
    /// Validates and normalises an address (ASCII case folded; UTF-8 local parts kept).
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let bad = |reason| CoreError::BadMailbox {
            addr: s.to_string(),
            reason,
        };
        if s.is_empty() || s.len() > 254 {
            return Err(bad("it must be 1 to 254 bytes long"));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(bad("it contains spaces or control characters"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(bad("it has no '@' (expected local@domain)"));
        };
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            return Err(bad("expected local@domain"));
        }
        if s.contains('/') || s.contains('\\') {
            return Err(bad("it contains a slash"));
        }
        Ok(MailboxAddr(s.to_ascii_lowercase()))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The domain part, used as the default tenant.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

string_id!(MailboxAddr, display);

/// A folder path inside a mailbox, `/`-separated (`INBOX`, `Archive/2024`).
///
/// Every component is non-empty, is not `.` or `..`, has no control characters and no
/// backslash, so a folder can always become a directory under an export root without
/// escaping it.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub struct FolderName(String);

impl FolderName {
    /// The folder every mailbox has.
    pub fn inbox() -> Self {
        FolderName("INBOX".into())
    }

    /// Validates a `/`-separated folder path.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let bad = |reason| CoreError::BadFolder {
            name: s.to_string(),
            reason,
        };
        if s.is_empty() || s.len() > 1024 {
            return Err(bad("it must be 1 to 1024 bytes long"));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(bad("it contains control characters"));
        }
        if s.contains('\\') {
            return Err(bad("it contains a backslash"));
        }
        for part in s.split('/') {
            if part.is_empty() {
                return Err(bad(
                    "it has an empty component (leading, trailing or double '/')",
                ));
            }
            if part == "." || part == ".." {
                return Err(bad("it has a '.' or '..' component"));
            }
            if part.starts_with('.') {
                return Err(bad("a component starts with '.', which Maildir++ reserves"));
            }
        }
        Ok(FolderName(s.to_string()))
    }

    /// The folder path as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Path components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// True for the INBOX (case-insensitive, as IMAP says).
    pub fn is_inbox(&self) -> bool {
        self.0.eq_ignore_ascii_case("INBOX")
    }
}

string_id!(FolderName, display);

/// The source's own identity of a message inside its folder: the Maildir unique name,
/// an mbox offset, an IMAP `UIDVALIDITY:UID`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId(String);

impl SourceId {
    /// Validates a source id: 1 to 255 bytes, no `/`, no `:`, no control characters,
    /// so it can become a Maildir file name on export.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let bad = |reason| CoreError::BadSourceId {
            id: s.to_string(),
            reason,
        };
        if s.is_empty() || s.len() > 255 {
            return Err(bad("it must be 1 to 255 bytes long"));
        }
        if s.chars()
            .any(|c| c.is_control() || c == '/' || c == ':' || c == '\\')
        {
            return Err(bad("it contains '/', ':', '\\' or control characters"));
        }
        if s == "." || s == ".." || s.starts_with('.') {
            return Err(bad("it starts with '.'"));
        }
        Ok(SourceId(s.to_string()))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_id!(SourceId, display);

/// Message flags: Maildir info letters (`D` draft, `F` flagged, `P` passed, `R` replied,
/// `S` seen, `T` trashed; kept sorted and de-duplicated) and IMAP keywords (`$Junk`,
/// `$Label1`, `ProjectX`, ...; kept sorted by bytes and de-duplicated).
///
/// One canonical text form is used everywhere a set of flags is written (wire frames,
/// sealed metadata, the agent's checkpoint): the letters, then one space and the keyword
/// for each keyword. Flags without keywords are therefore written exactly as before
/// keywords existed, so old volumes and checkpoints read unchanged.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Flags(String);

/// Longest keyword accepted, in bytes (Dovecot's limit is far above what any client
/// sets; this bounds a hostile source).
pub const MAX_KEYWORD_LEN: usize = 255;
/// Most keywords accepted on one message.
pub const MAX_KEYWORDS: usize = 256;

impl Flags {
    /// Parses the letters after `:2,` in a Maildir file name (no keywords).
    pub fn from_maildir(s: &str) -> Result<Self, CoreError> {
        Flags::new(s, std::iter::empty::<&str>())
    }

    /// Flags from letters and keywords, in any order and with repeats; the result is
    /// canonical. Refuses a letter that is not an ASCII letter and a keyword that is not
    /// a valid keyword ([`Flags::keyword_ok`]).
    pub fn new<K: AsRef<str>>(
        letters: &str,
        keywords: impl IntoIterator<Item = K>,
    ) -> Result<Self, CoreError> {
        if !letters.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(CoreError::BadFlags {
                flags: letters.to_string(),
            });
        }
        let mut v: Vec<u8> = letters.bytes().collect();
        v.sort_unstable();
        v.dedup();
        let mut out = String::from_utf8(v).expect("ASCII letters");
        let mut kws: Vec<&str> = Vec::new();
        let owned: Vec<K> = keywords.into_iter().collect();
        for k in &owned {
            let k = k.as_ref();
            if let Err(why) = Flags::keyword_ok(k) {
                return Err(CoreError::BadKeyword {
                    keyword: k.to_string(),
                    reason: why,
                });
            }
            kws.push(k);
        }
        kws.sort_unstable();
        kws.dedup();
        if kws.len() > MAX_KEYWORDS {
            return Err(CoreError::BadKeyword {
                keyword: format!("{} keywords", kws.len()),
                reason: "more than 256 keywords on one message",
            });
        }
        for k in kws {
            out.push(' ');
            out.push_str(k);
        }
        Ok(Flags(out))
    }

    /// Parses the canonical text form (letters, then ` keyword` for each keyword), also
    /// accepting it unsorted or with repeats.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        let mut parts = s.split(' ');
        let letters = parts.next().unwrap_or("");
        Flags::new(letters, parts)
    }

    /// Whether `k` can be carried as a keyword: 1 to [`MAX_KEYWORD_LEN`] bytes of UTF-8
    /// with no space, control character or IMAP atom-special (`( ) { % * " \ ]`), so it
    /// can be written back as an IMAP atom, on a Maildir `dovecot-keywords` line and in an
    /// mbox `X-Keywords` header.
    pub fn keyword_ok(k: &str) -> Result<(), &'static str> {
        if k.is_empty() {
            return Err("empty keyword");
        }
        if k.len() > MAX_KEYWORD_LEN {
            return Err("keyword longer than 255 bytes");
        }
        if k.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "(){%*\"\\]".contains(c))
        {
            return Err("keyword holds a space, a control character or one of ( ) { % * \" \\ ]");
        }
        Ok(())
    }

    /// The canonical text form (see the type's docs).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The sorted flag letters.
    pub fn letters(&self) -> &str {
        self.0.split(' ').next().unwrap_or("")
    }

    /// The keywords, sorted by bytes.
    pub fn keywords(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split(' ').skip(1)
    }

    /// True if the message has at least one keyword.
    pub fn has_keywords(&self) -> bool {
        self.0.contains(' ')
    }

    /// True if the message was seen.
    pub fn seen(&self) -> bool {
        self.letters().contains('S')
    }
}

string_id!(Flags);

/// What the store keeps about a message besides its body; stored encrypted at rest.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MessageMeta {
    /// Folder the message was in at the source.
    pub folder: FolderName,
    /// The source's identity of the message in that folder.
    pub source_id: SourceId,
    /// Flags at the source.
    pub flags: Flags,
    /// The source's internal (delivery) date, Unix seconds.
    pub internal_date: i64,
    /// Exact size of the message in bytes.
    pub size: u64,
    /// SHA-256 of the exact bytes, hex.
    pub sha256: String,
}

#[cfg(test)]
mod tests;
