//! Reading the versioned JSON records the control plane keeps beside its moves
//! (`lifecycle.json`, `batch.json`, the admin service's job records).
//!
//! Every such file carries a top-level `version`; a file of another version is a usage
//! error that names the file and both versions, never a half-read record. Changes are
//! serialised by a lock file beside the record ([`lock`]). This module only reads and
//! locks: each owner writes its own file (atomically) and decides what a missing file
//! means.

use crate::AppError;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads the record at `path` if its `version` is `version`; `Ok(None)` if there is no
/// file (what that means is the caller's business). A file without `version` reads as
/// version 0.
pub fn load<T: DeserializeOwned>(path: &Path, version: u32) -> Result<Option<T>, AppError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AppError::io(path, e)),
    };
    let unreadable =
        |e: serde_json::Error| AppError::Failed(format!("{}: unreadable: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(unreadable)?;
    let found = v.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if found != u64::from(version) {
        return Err(AppError::Usage(format!(
            "{}: format version {found}, this mailferry reads version {version}",
            path.display()
        )));
    }
    serde_json::from_value(v).map(Some).map_err(unreadable)
}

/// Opens (creating it, private to the owner) the lock file at `path` and waits for its
/// exclusive lock, held until the file is dropped.
pub fn lock(path: &Path) -> Result<std::fs::File, AppError> {
    let f = mailferry_audit::private::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| AppError::io(path, e))?;
    f.lock().map_err(|e| AppError::io(path, e))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Rec {
        version: u32,
        name: String,
    }

    #[test]
    fn reads_its_version_refuses_others_and_leaves_a_missing_file_to_the_caller() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("rec.json");
        assert!(load::<Rec>(&path, 1).unwrap().is_none());

        std::fs::write(&path, br#"{"version":1,"name":"a"}"#).unwrap();
        let r: Rec = load(&path, 1).unwrap().unwrap();
        assert_eq!(r.name, "a");

        std::fs::write(&path, br#"{"version":2,"name":"a"}"#).unwrap();
        let e = load::<Rec>(&path, 1).unwrap_err();
        assert!(matches!(e, AppError::Usage(_)), "{e}");
        assert!(
            e.to_string()
                .ends_with("rec.json: format version 2, this mailferry reads version 1"),
            "{e}"
        );

        std::fs::write(&path, b"{not json").unwrap();
        let e = load::<Rec>(&path, 1).unwrap_err();
        assert!(matches!(e, AppError::Failed(_)), "{e}");
        assert!(e.to_string().contains("rec.json: unreadable: "), "{e}");
    }
}
