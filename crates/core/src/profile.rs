//! Migration profiles: the TOML files in `migration-profiles/` that describe a move.
//!
//! A profile says how the source is read (`[source]`: IMAP connections and read-ahead
//! window, Maildir name encoding), which folders move and under which names
//! (`[folders]`), which
//! messages are left out by date or size (`[filter]`), how many bad and large items a
//! move tolerates (`[limits]`), how fast it may read (`[throttle]`), how many mailboxes
//! move at once (`[concurrency]`), when it starts and completes (`[schedule]`), and how
//! the wire and the store batch work (`[transport]`, `[commit]`, `[store]`).
//!
//! Parsing is pure (a string in, a [`Profile`] or every problem out). Unknown keys,
//! wrong types, bad patterns and contradictory values are all reported at once, each
//! with its dotted key, so an admin fixes a profile in one go. Reading the file is the
//! caller's job. [`Profile::load`] also records where each effective value came from
//! (the code default, the file, or a command-line override) for `profile show`.

mod folders;
mod values;

pub use folders::{glob_to_regex, FolderRules, Pattern, Rename, Role, SPECIAL_USE};
pub use values::{format_rfc3339, parse_rfc3339, ByteSize, DateBound, Timestamp};

use crate::{CoreError, FolderName};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The embedded default profile (`migration-profiles/default.toml`).
pub const DEFAULT_PROFILE: &str = include_str!("../../../migration-profiles/default.toml");

/// A parsed migration profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Profile {
    /// Short name, shown in reports.
    pub name: String,
    /// What the profile is for.
    pub description: String,
    /// Source selection (exact folder names; kept for older profiles, see `[folders]`).
    pub source: SourceSettings,
    /// Folder selection and renaming.
    pub folders: FolderSettings,
    /// Messages left out by date or size.
    pub filter: FilterSettings,
    /// Bad and large items a move tolerates before it fails.
    pub limits: LimitSettings,
    /// Read rate limits and server backoff.
    pub throttle: ThrottleSettings,
    /// Mailboxes moved at once.
    pub concurrency: ConcurrencySettings,
    /// When a move may start and complete.
    pub schedule: ScheduleSettings,
    /// Wire settings.
    pub transport: TransportSettings,
    /// Group-commit thresholds.
    pub commit: CommitSettings,
    /// Store settings.
    pub store: StoreSettings,
}

/// Which folders move (exact names).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSettings {
    /// Folders left out, matched exactly (same effect as a wildcard-free entry of
    /// `folders.exclude`).
    pub exclude_folders: Vec<String>,
    /// How a Maildir source's folder directory names are encoded: `auto` (per name:
    /// modified UTF-7 if it decodes, else UTF-8), `mutf7` or `utf8` (Dovecot's
    /// `maildir:...:UTF-8`). `mailferry move --maildir-names` overrides it.
    pub maildir_names: MaildirNames,
    /// IMAP sources: connections one move reads with at once, 1 to
    /// [`MAX_SOURCE_CONNECTIONS`]. `mailferry move --source-connections` and an
    /// endpoint's `connections` win over it; unset: the agent's default (4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// IMAP sources: bytes fetched ahead of the reader on each connection, within
    /// [`WINDOW_BYTES_RANGE`]; unset: the agent's default (16 MiB each, 64 MiB for all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_bytes: Option<ByteSize>,
}

/// Most IMAP connections one move may read with (`source.connections`). The agent's
/// `source::connections::MAX_CONNECTIONS` is the same number: mailferry-core cannot
/// name it (the agent depends on core), so a test in mailferry-control holds the two
/// equal.
pub const MAX_SOURCE_CONNECTIONS: usize = 64;

/// The sizes `source.window_bytes` may take: 64 KiB (less is a round trip per small
/// message again) to 1 GiB (the window is held in memory, per connection).
pub const WINDOW_BYTES_RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);

/// The encoding of folder directory names in a Maildir tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaildirNames {
    /// Reading: per name, modified UTF-7 if it decodes as such, otherwise UTF-8 as is.
    #[default]
    Auto,
    /// IMAP modified UTF-7 (RFC 3501 §5.1.3), Dovecot's default (`.Entw&APw-rfe`).
    Mutf7,
    /// Raw UTF-8, as Dovecot's `maildir:~/Maildir:UTF-8` writes it (`.Entwürfe`).
    Utf8,
}

impl std::str::FromStr for MaildirNames {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(MaildirNames::Auto),
            "mutf7" => Ok(MaildirNames::Mutf7),
            "utf8" => Ok(MaildirNames::Utf8),
            other => Err(format!("{other:?}: expected auto, mutf7 or utf8")),
        }
    }
}

impl std::fmt::Display for MaildirNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MaildirNames::Auto => "auto",
            MaildirNames::Mutf7 => "mutf7",
            MaildirNames::Utf8 => "utf8",
        })
    }
}

/// Folder selection and renaming. Patterns and map keys are *source* folder names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FolderSettings {
    /// Rename well-known folders ([`SPECIAL_USE`]: `Sent Items` → `Sent`,
    /// `[Gmail]/All Mail` → `Archive`, ...).
    pub special_use: bool,
    /// Explicit renames, source name → destination name; wins over `special_use`.
    pub map: BTreeMap<String, String>,
    /// Allow several source folders to arrive in one destination folder. Without it, a
    /// profile mapping two names to one folder is refused, and a folder whose new name
    /// another source folder already has keeps its own name.
    pub merge: bool,
    /// Folders that move (patterns, see [`Pattern`]); empty: all.
    pub include: Vec<String>,
    /// Folders that do not move (patterns); wins over `include`.
    pub exclude: Vec<String>,
}

/// Messages left out by date or size; each is listed as skipped with its reason.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterSettings {
    /// Only messages whose internal date is at or after this (a date, or an age such
    /// as `"365d"` counted back from the start of each pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<DateBound>,
    /// Only messages whose internal date is before this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<DateBound>,
    /// Messages larger than this are large items: skipped, listed, and counted against
    /// `limits.large_item_limit`. Absent: no size limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<ByteSize>,
}

/// How many bad and large items a move tolerates (Exchange's BadItemLimit and
/// LargeItemLimit): over a limit the move fails, keeping what it copied.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Corrupt or unreadable items tolerated (Exchange's default, 0).
    pub bad_item_limit: u64,
    /// Large items (over `filter.max_message_bytes`) tolerated; absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub large_item_limit: Option<u64>,
}

/// Read rate limits of one move, and how long it waits when a server says "slow down".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// Source bytes read per second (token bucket); absent: unthrottled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_second: Option<ByteSize>,
    /// Messages read per second (token bucket); absent: unthrottled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages_per_second: Option<f64>,
    /// First wait after a throttling answer that gives no hint, milliseconds.
    pub backoff_initial_ms: u64,
    /// Longest single wait, milliseconds, whatever a server suggests.
    pub backoff_max_ms: u64,
}

/// How many mailboxes move at once (a batch's throttles, named as Exchange names them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConcurrencySettings {
    /// Mailboxes in their initial copy at once.
    pub max_concurrent_moves: usize,
    /// Mailboxes in an incremental pass at once (at most `max_concurrent_moves`).
    pub max_concurrent_incremental_syncs: usize,
}

/// When a move may start and complete.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSettings {
    /// Do not start before this instant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_after: Option<Timestamp>,
    /// Run the final pass and complete the move at or after this instant
    /// (Exchange's CompleteAfter); absent: complete when told to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete_after: Option<Timestamp>,
    /// Stop at Synced after the initial copy and wait for `move complete`.
    pub suspend_when_ready: bool,
}

/// Wire settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSettings {
    /// Body bytes per DATA frame.
    pub frame_bytes: usize,
}

/// Group-commit thresholds of the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitSettings {
    /// Messages (and deletions, flag changes) per batch at most. A batch closes at the
    /// first limit it reaches (messages, bytes, delay) or at the agent's FLUSH.
    pub max_messages: usize,
    /// Body bytes per batch at most.
    pub max_bytes: u64,
    /// Longest a stored message waits for its batch to commit, milliseconds.
    pub max_delay_ms: u64,
}

/// Store settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Size at which a segment file is closed.
    pub segment_max_bytes: u64,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            name: "default".into(),
            description: String::new(),
            source: SourceSettings::default(),
            folders: FolderSettings::default(),
            filter: FilterSettings::default(),
            limits: LimitSettings::default(),
            throttle: ThrottleSettings::default(),
            concurrency: ConcurrencySettings::default(),
            schedule: ScheduleSettings::default(),
            transport: TransportSettings::default(),
            commit: CommitSettings::default(),
            store: StoreSettings::default(),
        }
    }
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            max_bytes_per_second: None,
            max_messages_per_second: None,
            backoff_initial_ms: 1_000,
            // Exchange Online suggests waits of about five minutes ("Suggested Backoff
            // Time: 299609 milliseconds"); the cap must let such a hint be honoured.
            backoff_max_ms: 600_000,
        }
    }
}

impl Default for ConcurrencySettings {
    fn default() -> Self {
        ConcurrencySettings {
            max_concurrent_moves: 4,
            max_concurrent_incremental_syncs: 2,
        }
    }
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings {
            frame_bytes: 256 * 1024,
        }
    }
}

impl Default for CommitSettings {
    fn default() -> Self {
        CommitSettings {
            max_messages: 1000,
            max_bytes: 8 << 20,
            max_delay_ms: 50,
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            segment_max_bytes: 1 << 30,
        }
    }
}

/// Every key a profile may set, per table (`""`: the top level). Checked against the
/// structs above by a test, so the two cannot drift.
pub const KNOWN: &[(&str, &[&str])] = &[
    ("", &["name", "description"]),
    (
        "source",
        &[
            "exclude_folders",
            "maildir_names",
            "connections",
            "window_bytes",
        ],
    ),
    (
        "folders",
        &["special_use", "map", "merge", "include", "exclude"],
    ),
    ("filter", &["after", "before", "max_message_bytes"]),
    ("limits", &["bad_item_limit", "large_item_limit"]),
    (
        "throttle",
        &[
            "max_bytes_per_second",
            "max_messages_per_second",
            "backoff_initial_ms",
            "backoff_max_ms",
        ],
    ),
    (
        "concurrency",
        &["max_concurrent_moves", "max_concurrent_incremental_syncs"],
    ),
    (
        "schedule",
        &["start_after", "complete_after", "suspend_when_ready"],
    ),
    ("transport", &["frame_bytes"]),
    ("commit", &["max_messages", "max_bytes", "max_delay_ms"]),
    ("store", &["segment_max_bytes"]),
];

/// Where an effective value of a profile came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// Nobody set it: the built-in default.
    Default,
    /// The profile file set it.
    File,
    /// A command-line override set it.
    Flag,
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provenance::Default => "default",
            Provenance::File => "file",
            Provenance::Flag => "flag",
        })
    }
}

/// One effective setting, for `profile show`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Setting {
    /// Dotted key (`limits.bad_item_limit`).
    pub key: String,
    /// The value, as TOML would write it; `None` when unset (no limit, no date).
    pub value: Option<toml::Value>,
    /// Where it came from.
    pub from: Provenance,
}

/// A profile together with where each of its values came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Effective {
    /// The profile in force.
    pub profile: Profile,
    /// The file it was read from (as given), or `None` for the built-in defaults.
    pub file: Option<String>,
    /// Keys set by the file or by an override; every other key is a default.
    pub set: BTreeMap<String, Provenance>,
}

impl Effective {
    /// Where `key` (dotted) came from.
    pub fn provenance(&self, key: &str) -> Provenance {
        self.set.get(key).copied().unwrap_or(Provenance::Default)
    }

    /// Every key of [`KNOWN`] with its effective value and provenance, in that order.
    pub fn settings(&self) -> Vec<Setting> {
        let table = match toml::Value::try_from(&self.profile) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        let mut out = Vec::new();
        for (section, keys) in KNOWN {
            for key in *keys {
                let value = if section.is_empty() {
                    table.get(*key)
                } else {
                    table.get(*section).and_then(|s| s.get(*key))
                };
                let dotted = dotted(section, key);
                out.push(Setting {
                    from: self.provenance(&dotted),
                    key: dotted,
                    value: value.cloned(),
                });
            }
        }
        out
    }
}

fn dotted(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}

impl Profile {
    /// The embedded default profile.
    pub fn embedded_default() -> Profile {
        Profile::parse(DEFAULT_PROFILE, "embedded default")
            .expect("the embedded default profile is tested to parse")
    }

    /// Parses a profile; `origin` names it in errors (a path, or "embedded default").
    pub fn parse(text: &str, origin: &str) -> Result<Profile, CoreError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| CoreError::Profile {
            origin: origin.to_string(),
            problems: vec![e.to_string().trim().to_string()],
        })?;
        Profile::from_table(&table).map_err(|problems| CoreError::Profile {
            origin: origin.to_string(),
            problems,
        })
    }

    /// Builds the effective profile from an optional file (`(text, origin)`) and
    /// command-line overrides (`("limits.bad_item_limit", "5")`; a value is read as a
    /// TOML value, or as a string when it is not one), recording where each value came
    /// from. Overrides win over the file, the file over the defaults.
    pub fn load(
        file: Option<(&str, &str)>,
        overrides: &[(String, String)],
    ) -> Result<Effective, CoreError> {
        let origin = file.map_or("built-in defaults", |(_, o)| o);
        let fail = |problems: Vec<String>| CoreError::Profile {
            origin: origin.to_string(),
            problems,
        };
        let mut table: toml::Table = match file {
            Some((text, _)) => {
                toml::from_str(text).map_err(|e| fail(vec![e.to_string().trim().to_string()]))?
            }
            None => toml::Table::new(),
        };
        let mut set = BTreeMap::new();
        for (section, keys) in KNOWN {
            for key in *keys {
                let present = if section.is_empty() {
                    table.contains_key(*key)
                } else {
                    table
                        .get(*section)
                        .and_then(toml::Value::as_table)
                        .is_some_and(|t| t.contains_key(*key))
                };
                if present {
                    set.insert(dotted(section, key), Provenance::File);
                }
            }
        }
        let mut problems = Vec::new();
        for (key, raw) in overrides {
            let Some((section, leaf)) = split_known(key) else {
                problems.push(format!(
                    "override `{key}`: unknown key (see `mailferry profile show` for the keys)"
                ));
                continue;
            };
            let value = parse_override(raw);
            let target = if section.is_empty() {
                Some(&mut table)
            } else {
                match table
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                {
                    toml::Value::Table(t) => Some(t),
                    _ => None,
                }
            };
            match target {
                Some(t) => {
                    t.insert(leaf.to_string(), value);
                    set.insert(key.clone(), Provenance::Flag);
                }
                None => problems.push(format!("override `{key}`: `{section}` is not a table")),
            }
        }
        match Profile::from_table(&table) {
            Ok(profile) if problems.is_empty() => Ok(Effective {
                profile,
                file: file.map(|(_, o)| o.to_string()),
                set,
            }),
            Ok(_) => Err(fail(problems)),
            Err(more) => {
                problems.extend(more);
                Err(fail(problems))
            }
        }
    }

    /// The compiled folder rules (patterns, map); every problem named by its key.
    pub fn folder_rules(&self) -> Result<FolderRules, CoreError> {
        FolderRules::compile(&self.folders, &self.source.exclude_folders).map_err(|problems| {
            CoreError::Profile {
                origin: format!("{:?}", self.name),
                problems,
            }
        })
    }

    /// Builds a profile from a parsed TOML table, collecting every problem.
    fn from_table(table: &toml::Table) -> Result<Profile, Vec<String>> {
        let mut problems = Vec::new();
        for (key, value) in table {
            if KNOWN[0].1.contains(&key.as_str()) {
                continue;
            }
            match KNOWN.iter().find(|(t, _)| !t.is_empty() && t == key) {
                None => problems.push(format!(
                    "unknown key `{key}` (known: {})",
                    known_top_level().join(", ")
                )),
                Some((_, keys)) => match value.as_table() {
                    Some(sub) => {
                        for k in sub.keys() {
                            if !keys.contains(&k.as_str()) {
                                problems.push(format!(
                                    "unknown key `{key}.{}` (known: {})",
                                    folders::quote_key(k),
                                    keys.join(", ")
                                ));
                            }
                        }
                    }
                    None => problems.push(format!("`{key}` must be a table ([{key}])")),
                },
            }
        }
        let mut profile = Profile::default();
        section(table, "source", &mut profile.source, &mut problems);
        section(table, "folders", &mut profile.folders, &mut problems);
        section(table, "filter", &mut profile.filter, &mut problems);
        section(table, "limits", &mut profile.limits, &mut problems);
        section(table, "throttle", &mut profile.throttle, &mut problems);
        section(
            table,
            "concurrency",
            &mut profile.concurrency,
            &mut problems,
        );
        section(table, "schedule", &mut profile.schedule, &mut problems);
        section(table, "transport", &mut profile.transport, &mut problems);
        section(table, "commit", &mut profile.commit, &mut problems);
        section(table, "store", &mut profile.store, &mut problems);
        for key in ["name", "description"] {
            if let Some(v) = table.get(key) {
                match v.as_str() {
                    Some(s) if key == "name" => profile.name = s.to_string(),
                    Some(s) => profile.description = s.to_string(),
                    None => problems.push(format!("`{key}` must be a string")),
                }
            }
        }
        problems.extend(profile.check());
        if problems.is_empty() {
            Ok(profile)
        } else {
            Err(problems)
        }
    }

    /// Range checks and contradictions, each problem with its key.
    fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        let fb = self.transport.frame_bytes;
        if !(4096..=crate::frame::MAX_PAYLOAD).contains(&fb) {
            p.push(format!(
                "`transport.frame_bytes` = {fb}: must be between 4096 and {}",
                crate::frame::MAX_PAYLOAD
            ));
        }
        if self.commit.max_messages == 0 || self.commit.max_messages > 100_000 {
            p.push("`commit.max_messages` must be between 1 and 100000".into());
        }
        if self.commit.max_bytes < 65536 {
            p.push("`commit.max_bytes` must be at least 65536".into());
        }
        if self.commit.max_delay_ms > 60_000 {
            p.push("`commit.max_delay_ms` must be at most 60000".into());
        }
        if self.store.segment_max_bytes < (1 << 20) {
            p.push("`store.segment_max_bytes` must be at least 1048576".into());
        }
        self.check_source(&mut p);
        if let Err(problems) = FolderRules::compile(&self.folders, &[]) {
            p.extend(problems);
        }
        self.check_filter(&mut p);
        self.check_rates(&mut p);
        let c = &self.concurrency;
        if !(1..=1000).contains(&c.max_concurrent_moves) {
            p.push(format!(
                "`concurrency.max_concurrent_moves` = {}: must be between 1 and 1000",
                c.max_concurrent_moves
            ));
        }
        if c.max_concurrent_incremental_syncs == 0 {
            p.push("`concurrency.max_concurrent_incremental_syncs` must be at least 1".into());
        } else if c.max_concurrent_incremental_syncs > c.max_concurrent_moves {
            p.push(format!(
                "`concurrency.max_concurrent_incremental_syncs` ({}) is more than \
                 `concurrency.max_concurrent_moves` ({}): an incremental pass is a move too",
                c.max_concurrent_incremental_syncs, c.max_concurrent_moves
            ));
        }
        if let (Some(start), Some(complete)) =
            (self.schedule.start_after, self.schedule.complete_after)
        {
            if complete < start {
                p.push(format!(
                    "`schedule.complete_after` ({complete}) is before `schedule.start_after` \
                     ({start})"
                ));
            }
        }
        p
    }

    fn check_source(&self, p: &mut Vec<String>) {
        let s = &self.source;
        for (i, f) in s.exclude_folders.iter().enumerate() {
            if let Err(e) = FolderName::parse(f) {
                p.push(format!("`source.exclude_folders[{i}]`: {e}"));
            }
        }
        if let Some(n) = s.connections {
            if !(1..=MAX_SOURCE_CONNECTIONS).contains(&n) {
                p.push(format!(
                    "`source.connections` = {n}: must be between 1 and {MAX_SOURCE_CONNECTIONS} \
                     (IMAP connections one move reads with); leave it out for the default, 4"
                ));
            }
        }
        if let Some(ByteSize(w)) = s.window_bytes {
            if !WINDOW_BYTES_RANGE.contains(&w) {
                p.push(format!(
                    "`source.window_bytes` = {w}: must be between {} (64 KiB) and {} (1 GiB); \
                     leave it out for the default, 16 MiB (64 MiB for all connections)",
                    WINDOW_BYTES_RANGE.start(),
                    WINDOW_BYTES_RANGE.end()
                ));
            }
        }
    }

    fn check_filter(&self, p: &mut Vec<String>) {
        let f = &self.filter;
        let empty = match (&f.after, &f.before) {
            (Some(DateBound::At(a)), Some(DateBound::At(b))) => a >= b,
            // Ages count back from the same instant: an older "after" than "before" is
            // the only non-empty window.
            (Some(DateBound::Ago { secs: a, .. }), Some(DateBound::Ago { secs: b, .. })) => a <= b,
            _ => false,
        };
        if empty {
            p.push(format!(
                "`filter.after` ({}) is not before `filter.before` ({}): no message could move",
                f.after.as_ref().expect("checked"),
                f.before.as_ref().expect("checked"),
            ));
        }
        if f.max_message_bytes == Some(ByteSize(0)) {
            p.push(
                "`filter.max_message_bytes` = 0 would skip every message; leave it out for \
                 no size limit"
                    .into(),
            );
        }
    }

    fn check_rates(&self, p: &mut Vec<String>) {
        let t = &self.throttle;
        if t.max_bytes_per_second == Some(ByteSize(0)) {
            p.push(
                "`throttle.max_bytes_per_second` must be positive; leave it out for no throttle"
                    .into(),
            );
        }
        if let Some(m) = t.max_messages_per_second {
            if !(m.is_finite() && m > 0.0) {
                p.push(format!(
                    "`throttle.max_messages_per_second` = {m}: must be a positive number; \
                     leave it out for no throttle"
                ));
            }
        }
        if t.backoff_initial_ms == 0 {
            p.push("`throttle.backoff_initial_ms` must be at least 1".into());
        }
        if t.backoff_max_ms > 3_600_000 {
            p.push("`throttle.backoff_max_ms` must be at most 3600000 (one hour)".into());
        }
        if t.backoff_initial_ms > t.backoff_max_ms {
            p.push(format!(
                "`throttle.backoff_initial_ms` ({}) is more than `throttle.backoff_max_ms` ({})",
                t.backoff_initial_ms, t.backoff_max_ms
            ));
        }
    }
}

fn known_top_level() -> Vec<&'static str> {
    KNOWN[0]
        .1
        .iter()
        .copied()
        .chain(KNOWN[1..].iter().map(|(t, _)| *t))
        .collect()
}

/// Splits a dotted key into (table, key) if it is one of [`KNOWN`].
fn split_known(key: &str) -> Option<(&'static str, &'static str)> {
    let (section, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    KNOWN
        .iter()
        .find(|(t, _)| *t == section)
        .and_then(|(t, keys)| keys.iter().find(|k| **k == leaf).map(|k| (*t, *k)))
}

/// An override value: TOML if it parses as one (`5`, `true`, `["a"]`, `{ A = "B" }`),
/// else the text itself as a string (`365d`, `Sent Items`).
fn parse_override(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Deserializes one table of the profile into `out`. Each key is tried on its own
/// first, so every badly typed key is reported with its dotted path, not only the
/// first one serde meets.
fn section<T: DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    out: &mut T,
    problems: &mut Vec<String>,
) {
    let Some(sub) = table.get(name).and_then(toml::Value::as_table) else {
        return;
    };
    let known = KNOWN
        .iter()
        .find(|(t, _)| *t == name)
        .map_or(&[][..], |(_, k)| *k);
    // Keys that are unknown or badly typed are reported and left out; the others
    // still load, so the checks that follow see them and report their problems too.
    let mut good = toml::Table::new();
    for (key, value) in sub {
        if !known.contains(&key.as_str()) {
            continue; // already reported as unknown
        }
        let mut one = toml::Table::new();
        one.insert(key.clone(), value.clone());
        match toml::Value::Table(one).try_into::<T>() {
            Ok(_) => {
                good.insert(key.clone(), value.clone());
            }
            Err(e) => problems.push(format!("`{name}.{key}`: {}", clean(&e.to_string()))),
        }
    }
    match toml::Value::Table(good).try_into::<T>() {
        Ok(v) => *out = v,
        Err(e) => problems.push(format!("[{name}]: {}", clean(&e.to_string()))),
    }
}

/// toml's messages end with a newline and name the key again (`... in \`key\``), which
/// the dotted path already does; one line, without that.
fn clean(msg: &str) -> String {
    let one = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.rfind(" in `") {
        Some(i) if one.ends_with('`') => one[..i].to_string(),
        _ => one,
    }
}

#[cfg(test)]
mod tests;
