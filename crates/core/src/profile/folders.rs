//! A profile's folder rules, compiled: which source folders move (include and exclude
//! patterns) and under which name they arrive (explicit map and special-use names).
//!
//! Pure: folder names in, decisions out. Rules speak of *source* folder names, the
//! names an admin sees in the old system; what a rule decides for a whole listing
//! (merges, clashes, renamed ids) is the agent's `filter` module's job.

use super::FolderSettings;
use crate::FolderName;
use regex::{Regex, RegexBuilder};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Well-known folder names and the name they get with `folders.special_use = true`.
///
/// Exchange and Outlook (`Sent Items`, `Deleted Items`, `Junk E-mail`), Outlook.com and
/// Apple Mail variants, and Gmail's `[Gmail]/...` folders in both spellings Google uses
/// (`[Google Mail]` in the UK and Germany; `Bin` is the UK name of `Trash`).
///
/// `[Gmail]/All Mail` becomes `Archive`. In Gmail every message is in All Mail, and a
/// labelled message is *also* in one folder per label; a message archived without a
/// label is only in All Mail. Moving All Mail to `Archive` is the only way not to lose
/// those, at the price of labelled messages arriving in `Archive` as well as in their
/// label folders. A profile that prefers one copy of everything excludes the label
/// folders instead (see `migration-profiles/gmail-imap.toml`).
pub const SPECIAL_USE: &[(&str, &str)] = &[
    ("Sent Items", "Sent"),
    ("Sent Messages", "Sent"),
    ("Deleted Items", "Trash"),
    ("Deleted Messages", "Trash"),
    ("Junk E-mail", "Junk"),
    ("Junk Email", "Junk"),
    ("[Gmail]/Sent Mail", "Sent"),
    ("[Gmail]/Trash", "Trash"),
    ("[Gmail]/Bin", "Trash"),
    ("[Gmail]/Spam", "Junk"),
    ("[Gmail]/Drafts", "Drafts"),
    ("[Gmail]/All Mail", "Archive"),
    ("[Google Mail]/Sent Mail", "Sent"),
    ("[Google Mail]/Trash", "Trash"),
    ("[Google Mail]/Bin", "Trash"),
    ("[Google Mail]/Spam", "Junk"),
    ("[Google Mail]/Drafts", "Drafts"),
    ("[Google Mail]/All Mail", "Archive"),
];

// === Role ===

/// A folder's role as the server announces it (RFC 6154 special-use attributes on
/// `LIST`), independent of its name: `Gesendete Objekte` announced `\Sent` is the Sent
/// folder.
///
/// With `folders.special_use = true` a folder with the role of a real folder arrives
/// under the role's usual name ([`Role::destination`]), like a well-known name of
/// [`SPECIAL_USE`]. The *virtual* roles (`\All`, `\Flagged`: views over the real
/// folders, such as Gmail's All Mail and Starred) are handled whatever `special_use`
/// says: such a folder is not copied as a folder of its own; the messages found only
/// there arrive in `Archive` (or where `folders.map` sends the folder), see the agent's
/// `filter` module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// `\Sent`.
    Sent,
    /// `\Drafts`.
    Drafts,
    /// `\Trash`.
    Trash,
    /// `\Junk`.
    Junk,
    /// `\Archive`.
    Archive,
    /// `\All`: a view of every message (virtual).
    All,
    /// `\Flagged`: a view of the flagged messages (virtual).
    Flagged,
}

impl Role {
    /// The role of a special-use attribute (`\Sent`, case-insensitive); `None` for any
    /// other attribute.
    pub fn from_attribute(attr: &str) -> Option<Role> {
        let a = attr.strip_prefix('\\')?;
        Some(match a.to_ascii_lowercase().as_str() {
            "sent" => Role::Sent,
            "drafts" => Role::Drafts,
            "trash" => Role::Trash,
            "junk" => Role::Junk,
            "archive" => Role::Archive,
            "all" => Role::All,
            "flagged" => Role::Flagged,
            _ => return None,
        })
    }

    /// The attribute as IMAP spells it (`\Sent`).
    pub fn attribute(self) -> &'static str {
        match self {
            Role::Sent => "\\Sent",
            Role::Drafts => "\\Drafts",
            Role::Trash => "\\Trash",
            Role::Junk => "\\Junk",
            Role::Archive => "\\Archive",
            Role::All => "\\All",
            Role::Flagged => "\\Flagged",
        }
    }

    /// The destination folder of a folder with this role: `Sent`, `Drafts`, `Trash`,
    /// `Junk`, `Archive`; the virtual roles' messages (those found nowhere else) also
    /// arrive in `Archive`.
    pub fn destination(self) -> &'static str {
        match self {
            Role::Sent => "Sent",
            Role::Drafts => "Drafts",
            Role::Trash => "Trash",
            Role::Junk => "Junk",
            Role::Archive | Role::All | Role::Flagged => "Archive",
        }
    }

    /// True for the views over other folders (`\All`, `\Flagged`).
    pub fn is_virtual(self) -> bool {
        matches!(self, Role::All | Role::Flagged)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.attribute())
    }
}

// === Pattern ===

/// A folder pattern of `folders.include` / `folders.exclude`.
///
/// A glob by default, matched against the whole `/`-separated folder path: `*` matches
/// within one level (no `/`), `**` across levels, `?` one character other than `/`;
/// every other character is literal, so `[Gmail]/Spam` means exactly that folder.
/// With the prefix `re:` the rest is a regular expression (Rust `regex` syntax),
/// matched against the whole path (it is anchored for you).
#[derive(Clone)]
pub struct Pattern {
    text: String,
    re: Regex,
}

impl Pattern {
    /// Compiles a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let source = match text.strip_prefix("re:") {
            Some(re) => re.to_string(),
            None => {
                if text.is_empty() {
                    return Err("an empty pattern matches no folder".into());
                }
                glob_to_regex(text)
            }
        };
        let re = RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                // The syntax error comes as a drawing over the pattern; its last line
                // ("error: unclosed group") is the part that reads well inline.
                let msg = e.to_string();
                let why = msg
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().strip_prefix("error: "))
                    .unwrap_or(msg.trim());
                format!(
                    "invalid regex {:?}: {why}",
                    text.strip_prefix("re:").unwrap_or(text)
                )
            })?;
        Ok(Pattern {
            text: text.to_string(),
            re,
        })
    }

    /// True if the whole folder path matches.
    pub fn matches(&self, folder: &str) -> bool {
        self.re.is_match(folder)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for a glob without wildcards: it names exactly one folder.
    pub fn is_literal(&self) -> bool {
        !self.text.starts_with("re:") && !self.text.contains(['*', '?'])
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

/// Translates a glob (`*`, `**`, `?`; everything else literal) into a regex body.
pub fn glob_to_regex(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() * 2);
    let mut chars = glob.chars().peekable();
    let mut lit = String::new();
    let flush = |lit: &mut String, out: &mut String| {
        out.push_str(&regex::escape(lit));
        lit.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                flush(&mut lit, &mut out);
                if chars.peek() == Some(&'*') {
                    while chars.peek() == Some(&'*') {
                        chars.next();
                    }
                    out.push_str(".*");
                } else {
                    out.push_str("[^/]*");
                }
            }
            '?' => {
                flush(&mut lit, &mut out);
                out.push_str("[^/]");
            }
            c => lit.push(c),
        }
    }
    flush(&mut lit, &mut out);
    out
}

// === FolderRules ===

/// Why a folder gets another name at the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rename {
    /// `folders.map` says so.
    Explicit,
    /// A well-known name ([`SPECIAL_USE`]) and `folders.special_use = true`.
    SpecialUse,
    /// The server announced the folder's [`Role`] (and `folders.special_use = true`,
    /// or the role is virtual).
    Role,
}

/// The compiled folder rules of a profile.
#[derive(Clone, Debug)]
pub struct FolderRules {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
    exclude_exact: BTreeSet<String>,
    map: BTreeMap<String, FolderName>,
    special_use: bool,
    merge: bool,
}

impl FolderRules {
    /// Compiles `[folders]` plus the exact names of `source.exclude_folders`; every
    /// problem is returned, each naming its key.
    pub fn compile(
        folders: &FolderSettings,
        exclude_exact: &[String],
    ) -> Result<FolderRules, Vec<String>> {
        let mut problems = Vec::new();
        let mut patterns = |key: &str, list: &[String]| -> Vec<Pattern> {
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                match Pattern::parse(p) {
                    Ok(p) => out.push(p),
                    Err(e) => problems.push(format!("`folders.{key}[{i}]` = {p:?}: {e}")),
                }
            }
            out
        };
        let include = patterns("include", &folders.include);
        let exclude = patterns("exclude", &folders.exclude);
        let mut map = BTreeMap::new();
        let mut by_target: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (from, to) in &folders.map {
            let key = format!("`folders.map.{}`", quote_key(from));
            if let Err(e) = FolderName::parse(from) {
                problems.push(format!("{key}: the source folder: {e}"));
            }
            match FolderName::parse(to) {
                Ok(t) => {
                    by_target.entry(to).or_default().push(from);
                    map.insert(from.clone(), t);
                }
                Err(e) => problems.push(format!("{key}: the destination folder: {e}")),
            }
        }
        if !folders.merge {
            for (to, froms) in &by_target {
                if froms.len() > 1 {
                    problems.push(format!(
                        "`folders.map`: {} all map to {to:?}; set `folders.merge = true` to \
                         merge them into one folder",
                        froms
                            .iter()
                            .map(|f| format!("{f:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(FolderRules {
                include,
                exclude,
                exclude_exact: exclude_exact.iter().cloned().collect(),
                map,
                special_use: folders.special_use,
                merge: folders.merge,
            })
        } else {
            Err(problems)
        }
    }

    /// True if the source folder does not move: it is named in
    /// `source.exclude_folders`, matches an exclude pattern, or there are include
    /// patterns and it matches none.
    pub fn is_excluded(&self, source: &str) -> bool {
        self.exclude_exact.contains(source)
            || self.exclude.iter().any(|p| p.matches(source))
            || (!self.include.is_empty() && !self.include.iter().any(|p| p.matches(source)))
    }

    /// The name the rules give a source folder at the destination, if it differs.
    /// Applied once, not transitively: with `A → B` and `B → C`, `A` arrives as `B`.
    pub fn rename(&self, source: &FolderName) -> Option<(FolderName, Rename)> {
        self.rename_with_role(source, None)
    }

    /// [`FolderRules::rename`] for a folder the server announced with `role`: an
    /// explicit map wins, then the role (virtual roles always; the others with
    /// `folders.special_use = true`), then a well-known name.
    pub fn rename_with_role(
        &self,
        source: &FolderName,
        role: Option<Role>,
    ) -> Option<(FolderName, Rename)> {
        if let Some(to) = self.map.get(source.as_str()) {
            return (to != source).then(|| (to.clone(), Rename::Explicit));
        }
        if let Some(role) = role.filter(|r| self.special_use || r.is_virtual()) {
            let to = FolderName::parse(role.destination()).expect("role names are valid folders");
            return (to != *source).then_some((to, Rename::Role));
        }
        if self.special_use {
            if let Some((_, to)) = SPECIAL_USE
                .iter()
                .find(|(from, _)| *from == source.as_str())
            {
                let to = FolderName::parse(to).expect("special-use names are valid folders");
                return Some((to, Rename::SpecialUse));
            }
        }
        None
    }

    /// Every source name these rules rename into `dest` (the candidates a renamed id
    /// in `dest` may have come from).
    pub fn renamed_into(&self, dest: &FolderName) -> Vec<FolderName> {
        self.renamed_into_with_roles(dest, &BTreeMap::new())
    }

    /// [`FolderRules::renamed_into`], counting the folders `roles` rename into `dest`.
    pub fn renamed_into_with_roles(
        &self,
        dest: &FolderName,
        roles: &BTreeMap<FolderName, Role>,
    ) -> Vec<FolderName> {
        let mut out: BTreeSet<FolderName> = BTreeSet::new();
        for (source, role) in roles {
            if source != dest
                && !self.map.contains_key(source.as_str())
                && self
                    .rename_with_role(source, Some(*role))
                    .is_some_and(|(to, _)| to == *dest)
            {
                out.insert(source.clone());
            }
        }
        for (from, to) in &self.map {
            if to == dest && from != dest.as_str() {
                if let Ok(f) = FolderName::parse(from) {
                    out.insert(f);
                }
            }
        }
        if self.special_use {
            for (from, to) in SPECIAL_USE {
                if *to == dest.as_str() && !self.map.contains_key(*from) {
                    out.insert(FolderName::parse(from).expect("special-use names are valid"));
                }
            }
        }
        out.into_iter().collect()
    }

    /// True if several source folders may arrive in one destination folder.
    pub fn merge(&self) -> bool {
        self.merge
    }

    /// Source folders excluded by exact name (`source.exclude_folders` and wildcard-free
    /// exclude globs): excluded even when the listing does not show them.
    pub fn excluded_by_name(&self) -> impl Iterator<Item = &str> {
        self.exclude_exact.iter().map(String::as_str).chain(
            self.exclude
                .iter()
                .filter(|p| p.is_literal())
                .map(Pattern::as_str),
        )
    }
}

/// A TOML key, quoted when it is not a bare key.
pub(crate) fn quote_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}
