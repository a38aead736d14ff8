//! `mailferry profile show`: the effective values of a migration profile and where each
//! came from (the built-in default, the file, or a `--set` flag), as a table or JSON.
//!
//! Reading the file is all the I/O here; parsing and provenance live in
//! `mailferry_core::profile`.

use crate::AppError;
use mailferry_core::profile::{Effective, Profile};
use std::path::Path;

/// Loads `file` (or the built-in defaults) with `overrides` applied on top.
pub fn load(file: Option<&Path>, overrides: &[(String, String)]) -> Result<Effective, AppError> {
    let text = match file {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| AppError::io(p, e))?),
        None => None,
    };
    let origin = file.map(|p| p.display().to_string());
    let file = text.as_deref().zip(origin.as_deref());
    Ok(Profile::load(file, overrides)?)
}

/// Parses a `--set KEY=VALUE` argument.
pub fn parse_set(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!(
            "{s:?}: expected KEY=VALUE, e.g. limits.bad_item_limit=5"
        )),
    }
}

/// A table on stdout: key, where it came from, value (`-` when unset).
pub fn render_text(e: &Effective) -> String {
    let settings = e.settings();
    let width = settings.iter().map(|s| s.key.len()).max().unwrap_or(3);
    let mut out = format!(
        "profile {:?} from {}\n{:width$}  {:7}  VALUE\n",
        e.profile.name,
        e.file.as_deref().unwrap_or("the built-in defaults"),
        "KEY",
        "FROM",
    );
    for s in settings {
        let value = s.value.map_or_else(|| "-".to_string(), |v| v.to_string());
        out.push_str(&format!(
            "{:width$}  {:7}  {value}\n",
            s.key,
            s.from.to_string()
        ));
    }
    out
}

/// `{"name", "file", "settings": {KEY: {"value", "from"}}}`; unset values are `null`.
pub fn to_json(e: &Effective) -> serde_json::Value {
    let settings: serde_json::Map<String, serde_json::Value> = e
        .settings()
        .into_iter()
        .map(|s| {
            (
                s.key,
                serde_json::json!({
                    "value": s.value.map(|v| serde_json::to_value(v).expect("TOML values are JSON")),
                    "from": s.from,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "name": e.profile.name,
        "file": e.file,
        "settings": settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json_carry_provenance() {
        let e = Profile::load(
            Some(("name = \"x\"\n[limits]\nbad_item_limit = 3\n", "x.toml")),
            &[parse_set("filter.after=30d").unwrap()],
        )
        .unwrap();
        let text = render_text(&e);
        assert!(text.starts_with("profile \"x\" from x.toml\n"), "{text}");
        let line = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{key} ")))
                .unwrap_or_else(|| panic!("{key} missing in {text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            line("limits.bad_item_limit"),
            "limits.bad_item_limit file 3"
        );
        assert_eq!(line("filter.after"), "filter.after flag \"30d\"");
        assert_eq!(line("filter.before"), "filter.before default -");
        assert_eq!(
            line("commit.max_messages"),
            "commit.max_messages default 100"
        );
        let j = to_json(&e);
        assert_eq!(j["file"], "x.toml");
        assert_eq!(j["settings"]["limits.bad_item_limit"]["value"], 3);
        assert_eq!(j["settings"]["limits.bad_item_limit"]["from"], "file");
        assert_eq!(j["settings"]["filter.after"]["from"], "flag");
        assert!(j["settings"]["filter.before"]["value"].is_null());
    }

    #[test]
    fn set_needs_a_key_and_an_equals_sign() {
        assert!(parse_set("nothing").is_err());
        assert!(parse_set("=5").is_err());
        assert_eq!(
            parse_set("folders.map={ \"A\" = \"B\" }").unwrap().1,
            "{ \"A\" = \"B\" }"
        );
    }
}
