//! Owner-only files and directories: what every volume, agent state directory and audit
//! log is made of (directories 0700, files 0600, whatever the process's umask), and the
//! check that warns when one of them can be read or written by others.
//!
//! The audit log names folders and mailboxes, and a volume's index and segments are
//! worth nothing to others even encrypted: nobody but their owner has a reason to read
//! them. This module only creates and inspects; it never changes the mode of a file
//! that exists (an admin may have opened it up on purpose), it warns instead.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the directories created here.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files created here.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each owner-only.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates `dir` (its parent must exist), owner-only.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(dir)
}

/// `OpenOptions` whose newly created files are owner-only.
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Opens `path` for writing like `File::create`: created owner-only, or truncated.
pub fn create(path: &Path) -> io::Result<File> {
    options().write(true).create(true).truncate(true).open(path)
}

/// Writes `bytes` to `path` (created owner-only, or truncated).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    create(path)?.write_all(bytes)
}

/// Creates `path` empty and owner-only if it does not exist, so that SQLite, which
/// creates files 0644 and gives a database's `-wal` and `-shm` its own mode, makes
/// owner-only files too.
pub fn precreate(path: &Path) -> io::Result<()> {
    match options().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why `path` (a volume or state directory, or a file in one) is not private, if
/// others can read or write it: the warning to show, with the command that fixes it.
pub fn exposed(path: &Path, what: &str) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{what} {} can be read or written by other users (mode {mode:04o}); make it \
             owner-only: chmod -R go-rwx {}",
            path.display(),
            path.display()
        )
    })
}

/// Logs [`exposed`]'s warning, if any.
pub fn warn_if_exposed(path: &Path, what: &str) {
    if let Some(w) = exposed(path, what) {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_owner_only_and_exposure_is_named() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_dir_all(&d).unwrap();
        assert_eq!(mode(&t.path().join("a")), 0o700);
        assert_eq!(mode(&d), 0o700);
        let f = d.join("f");
        write(&f, b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
        precreate(&d.join("db")).unwrap();
        assert_eq!(mode(&d.join("db")), 0o600);
        precreate(&f).unwrap();
        assert_eq!(
            std::fs::read(&f).unwrap(),
            b"x",
            "precreate keeps what is there"
        );
        assert!(exposed(&d, "volume").is_none());
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let w = exposed(&d, "volume").unwrap();
        assert!(
            w.contains("mode 0755") && w.contains("chmod -R go-rwx"),
            "{w}"
        );
    }
}
