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
mod tests;
