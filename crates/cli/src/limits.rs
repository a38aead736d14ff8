//! Bad-item and large-item limits of a move (Exchange's BadItemLimit and LargeItemLimit)
//! and the list of skipped items they are counted on.
//!
//! Every item a pass leaves behind is listed as a [`SkippedItem`] with its folder, source
//! id, size (when the source could tell it) and reason, in the pass's `report.json`. A
//! bad item (damaged, unreadable, refused by the store) counts against the bad-item
//! limit, a large item (over the large-item size; not sent) against the large-item
//! count. Items an admin approved (`--approve-skipped`) count against nothing. This
//! module only counts and judges; the lifecycle decides what a verdict does to the move.

use mailferry_core::profile::{ByteSize, Profile};
use mailferry_core::report::{BadItem, SkipKind, SkippedItem};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The limits a move runs under.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Unapproved bad items tolerated (Exchange's default: 0).
    pub bad_item_limit: u64,
    /// Messages larger than this many bytes are large items: not sent, listed.
    pub large_item_bytes: Option<u64>,
    /// Unapproved large items tolerated; `None`: any number (they are still listed, and
    /// a final pass still needs them approved).
    pub large_item_count: Option<u64>,
}

impl Limits {
    /// The profile's limits, with the move's own settings (flags) over them.
    pub fn effective(
        profile: &Profile,
        bad_item_limit: Option<u64>,
        large_item_bytes: Option<u64>,
    ) -> Limits {
        Limits {
            bad_item_limit: bad_item_limit.unwrap_or(profile.limits.bad_item_limit),
            large_item_bytes: large_item_bytes.or(profile.filter.max_message_bytes.map(|b| b.0)),
            large_item_count: profile.limits.large_item_limit,
        }
    }

    /// The profile a pass runs with: the large-item size becomes the profile's
    /// `filter.max_message_bytes`, which the agent applies while listing.
    pub fn apply(&self, profile: &mut Profile) {
        profile.filter.max_message_bytes = self.large_item_bytes.map(ByteSize);
    }
}

/// What the limits say about a pass's skipped items.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Bad items nobody approved.
    pub bad: u64,
    /// Large items nobody approved.
    pub large: u64,
    /// Skipped items an admin approved.
    pub approved: u64,
    /// Which limit was exceeded, in words; `None` when the pass is within its limits.
    pub exceeded: Option<String>,
}

impl Verdict {
    /// Skipped items nobody approved.
    pub fn unapproved(&self) -> u64 {
        self.bad + self.large
    }
}

/// Counts `skipped` against `limits`.
pub fn judge(skipped: &[SkippedItem], limits: &Limits) -> Verdict {
    let mut v = Verdict::default();
    for s in skipped {
        match (s.approved, s.kind) {
            (true, _) => v.approved += 1,
            (false, SkipKind::BadItem) => v.bad += 1,
            (false, SkipKind::LargeItem) => v.large += 1,
        }
    }
    let mut over = Vec::new();
    if v.bad > limits.bad_item_limit {
        over.push(format!(
            "{} bad item(s), the bad-item limit is {}",
            v.bad, limits.bad_item_limit
        ));
    }
    if let Some(max) = limits.large_item_count {
        if v.large > max {
            over.push(format!(
                "{} large item(s), the large-item limit is {max}",
                v.large
            ));
        }
    }
    if !over.is_empty() {
        v.exceeded = Some(over.join("; "));
    }
    v
}

/// Marks the items named in `approved` as approved.
pub fn mark_approved(skipped: &mut [SkippedItem], approved: &BTreeSet<String>) {
    for s in skipped {
        s.approved = approved.contains(&s.item);
    }
}

/// The bad items of a pass as skipped items (the pass adds the large items its profile's
/// size filter left out, which know their size).
pub fn skipped_items(bad_items: &[BadItem]) -> Vec<SkippedItem> {
    bad_items.iter().map(from_bad_item).collect()
}

/// A bad item as a skipped item (its size is not known).
pub fn from_bad_item(b: &BadItem) -> SkippedItem {
    let (folder, source_id) = split_item(&b.item);
    SkippedItem {
        item: b.item.clone(),
        folder,
        source_id,
        size: None,
        kind: SkipKind::BadItem,
        reason: b.reason.clone(),
        approved: false,
    }
}

/// `folder/source-id` into its parts (source ids never hold a `/`; folder names may).
fn split_item(item: &str) -> (String, String) {
    match item.rsplit_once('/') {
        Some((f, id)) => (f.to_string(), id.to_string()),
        None => (String::new(), item.to_string()),
    }
}

/// Parses a size such as `25MB`, `25 MiB`, `1.5G` or `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    ByteSize::parse(s).map(|b| b.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, kind: SkipKind, approved: bool) -> SkippedItem {
        let (folder, source_id) = split_item(name);
        SkippedItem {
            item: name.into(),
            folder,
            source_id,
            size: None,
            kind,
            reason: "r".into(),
            approved,
        }
    }

    #[test]
    fn approved_items_count_against_nothing() {
        let limits = Limits {
            bad_item_limit: 1,
            large_item_bytes: Some(10),
            large_item_count: Some(0),
        };
        let mut s = vec![
            item("INBOX/a", SkipKind::BadItem, false),
            item("INBOX/b", SkipKind::BadItem, false),
            item("Archive/2024/c", SkipKind::LargeItem, false),
        ];
        let v = judge(&s, &limits);
        assert_eq!((v.bad, v.large, v.approved), (2, 1, 0));
        let why = v.exceeded.unwrap();
        assert!(
            why.contains("2 bad item(s), the bad-item limit is 1"),
            "{why}"
        );
        assert!(
            why.contains("1 large item(s), the large-item limit is 0"),
            "{why}"
        );
        mark_approved(&mut s, &["INBOX/a".into(), "Archive/2024/c".into()].into());
        let v = judge(&s, &limits);
        assert_eq!((v.bad, v.large, v.approved, v.unapproved()), (1, 0, 2, 1));
        assert_eq!(v.exceeded, None);
    }

    #[test]
    fn items_split_at_the_last_slash() {
        assert_eq!(
            split_item("Archive/2024/x.y"),
            ("Archive/2024".into(), "x.y".into())
        );
        assert_eq!(split_item("notes"), (String::new(), "notes".into()));
    }

    #[test]
    fn flags_win_over_the_profile() {
        let mut p = Profile::default();
        p.limits.bad_item_limit = 5;
        p.filter.max_message_bytes = Some(ByteSize(100));
        assert_eq!(Limits::effective(&p, None, None).bad_item_limit, 5);
        let l = Limits::effective(&p, Some(0), Some(25_000_000));
        assert_eq!(
            (l.bad_item_limit, l.large_item_bytes),
            (0, Some(25_000_000))
        );
        assert_eq!(parse_size("25MB"), Ok(25_000_000));
        assert!(parse_size("lots").is_err());
    }
}
