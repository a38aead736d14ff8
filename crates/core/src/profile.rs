//! Migration profiles: the TOML files in `migration-profiles/` that describe a move.
//!
//! Parsing is pure (a string in, a [`Profile`] or every problem out). Unknown keys and
//! wrong types are all reported at once, each with its dotted key, so an admin fixes a
//! profile in one go. Reading the file is the caller's job.

use crate::{CoreError, FolderName};
use serde::{Deserialize, Serialize};

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
    /// Source selection.
    pub source: SourceSettings,
    /// Wire settings.
    pub transport: TransportSettings,
    /// Group-commit thresholds.
    pub commit: CommitSettings,
    /// Store settings.
    pub store: StoreSettings,
}

/// Which folders move.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSettings {
    /// Folders left out, matched exactly.
    pub exclude_folders: Vec<String>,
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
    /// Messages per batch.
    pub max_messages: usize,
    /// Bytes per batch.
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
            transport: TransportSettings::default(),
            commit: CommitSettings::default(),
            store: StoreSettings::default(),
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
            max_messages: 100,
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

/// Known keys per table, for reporting every unknown key rather than the first.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "name",
            "description",
            "source",
            "transport",
            "commit",
            "store",
        ],
    ),
    ("source", &["exclude_folders"]),
    ("transport", &["frame_bytes"]),
    ("commit", &["max_messages", "max_bytes", "max_delay_ms"]),
    ("store", &["segment_max_bytes"]),
];

impl Profile {
    /// The embedded default profile.
    pub fn embedded_default() -> Profile {
        Profile::parse(DEFAULT_PROFILE, "embedded default")
            .expect("the embedded default profile is tested to parse")
    }

    /// Parses a profile; `origin` names it in errors (a path, or "embedded default").
    pub fn parse(text: &str, origin: &str) -> Result<Profile, CoreError> {
        let fail = |problems: Vec<String>| CoreError::Profile {
            origin: origin.to_string(),
            problems,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| fail(vec![e.to_string()]))?;
        let mut problems = Vec::new();
        for (key, value) in &table {
            let known_top = KNOWN[0].1.contains(&key.as_str());
            if !known_top {
                problems.push(format!("unknown key `{key}`"));
                continue;
            }
            if let Some((_, keys)) = KNOWN.iter().find(|(t, _)| t == key) {
                match value.as_table() {
                    Some(sub) => {
                        for k in sub.keys() {
                            if !keys.contains(&k.as_str()) {
                                problems.push(format!(
                                    "unknown key `{key}.{k}` (known: {})",
                                    keys.join(", ")
                                ));
                            }
                        }
                    }
                    None => problems.push(format!("`{key}` must be a table ([{key}])")),
                }
            }
        }
        // Type errors: deserialize each section on its own so one bad section does not
        // hide the others.
        let mut profile = Profile::default();
        macro_rules! section {
            ($name:literal, $field:ident) => {
                if let Some(v) = table.get($name).filter(|v| v.is_table()) {
                    match v.clone().try_into() {
                        Ok(s) => profile.$field = s,
                        Err(e) => {
                            if !problems
                                .iter()
                                .any(|p| p.starts_with(concat!("unknown key `", $name, ".")))
                            {
                                problems.push(format!("[{}]: {}", $name, e.to_string().trim()));
                            }
                        }
                    }
                }
            };
        }
        section!("source", source);
        section!("transport", transport);
        section!("commit", commit);
        section!("store", store);
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
            Err(fail(problems))
        }
    }

    /// Range checks, each problem with its key.
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
        for f in &self.source.exclude_folders {
            if let Err(e) = FolderName::parse(f) {
                p.push(format!("`source.exclude_folders`: {e}"));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests;
