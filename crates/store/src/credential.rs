//! Credentials that unlock a volume: a key file, a passphrase file or a recovery key
//! file, and how each is read from disk into a zeroizing secret.
//!
//! Passphrases are only ever read from files (or handed in by a caller that prompted on
//! a terminal); they never come from the command line. This module reads the credential
//! file and nothing else; which key slot it opens is [`crate::header`]'s business.

use crate::keys;
use crate::StoreError;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Longest passphrase file accepted, in bytes.
pub const MAX_PASSPHRASE: usize = 1024;

/// Where the secret that unlocks a volume comes from. Holds paths only, no secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A key file: exactly 32 random bytes (`volume init` creates it).
    KeyFile(PathBuf),
    /// A file holding a passphrase (one trailing newline is ignored).
    Passphrase(PathBuf),
    /// A recovery key file written by `volume init` (64 hex digits).
    RecoveryKey(PathBuf),
}

/// A credential read into memory: zeroized on drop, `Debug` prints `[redacted]`.
pub enum Secret {
    /// Key file bytes.
    KeyFile(Zeroizing<[u8; 32]>),
    /// Passphrase bytes.
    Passphrase(Zeroizing<Vec<u8>>),
    /// Recovery key bytes.
    RecoveryKey(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Secret::KeyFile(_) => "KeyFile",
            Secret::Passphrase(_) => "Passphrase",
            Secret::RecoveryKey(_) => "RecoveryKey",
        };
        write!(f, "Secret::{kind}([redacted])")
    }
}

impl Credential {
    /// The file this credential is read from.
    pub fn path(&self) -> &Path {
        match self {
            Credential::KeyFile(p) | Credential::Passphrase(p) | Credential::RecoveryKey(p) => p,
        }
    }

    /// What the file is, in words (for messages).
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::KeyFile(_) => "key file",
            Credential::Passphrase(_) => "passphrase file",
            Credential::RecoveryKey(_) => "recovery key file",
        }
    }

    /// Reads the secret.
    pub fn load(&self) -> Result<Secret, StoreError> {
        match self {
            Credential::KeyFile(p) => read_key_file(p).map(Secret::KeyFile),
            Credential::Passphrase(p) => read_passphrase_file(p).map(Secret::Passphrase),
            Credential::RecoveryKey(p) => read_recovery_key_file(p).map(Secret::RecoveryKey),
        }
    }
}

fn bad(kind: &'static str, path: &Path, reason: String) -> StoreError {
    StoreError::KeyFile {
        kind,
        path: path.to_path_buf(),
        reason,
    }
}

fn read_limited(
    kind: &'static str,
    path: &Path,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let mut f =
        std::fs::File::open(path).map_err(|e| bad(kind, path, format!("cannot open: {e}")))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(max + 1));
    (&mut f)
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| bad(kind, path, format!("cannot read: {e}")))?;
    Ok(buf)
}

/// Reads a key file: exactly 32 bytes.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let buf = read_limited("key file", path, 32)?;
    if buf.len() != 32 {
        return Err(bad(
            "key file",
            path,
            format!(
                "must be exactly 32 bytes, found {}{} (use the key file created by `volume init`)",
                if buf.len() > 32 { "more than " } else { "" },
                buf.len().min(32)
            ),
        ));
    }
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(&buf);
    Ok(k)
}

/// Reads a passphrase file: the bytes up to one trailing `\n` or `\r\n`; must not be empty.
pub fn read_passphrase_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let kind = "passphrase file";
    let mut buf = read_limited(kind, path, MAX_PASSPHRASE + 2)?;
    if buf.ends_with(b"\n") {
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
    }
    if buf.is_empty() {
        return Err(bad(
            kind,
            path,
            "is empty; write the passphrase into it".into(),
        ));
    }
    if buf.len() > MAX_PASSPHRASE {
        return Err(bad(
            kind,
            path,
            format!("longer than {MAX_PASSPHRASE} bytes; is this the right file?"),
        ));
    }
    Ok(buf)
}

/// Reads a recovery key file: 64 hex digits, whitespace ignored.
pub fn read_recovery_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let kind = "recovery key file";
    let buf = read_limited(kind, path, 256)?;
    let digits: Zeroizing<Vec<u8>> = Zeroizing::new(
        buf.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    let mut k = Zeroizing::new([0u8; 32]);
    if digits.len() != 64 || hex::decode_to_slice(&digits[..], &mut k[..]).is_err() {
        return Err(bad(
            kind,
            path,
            "must hold the 64 hex digits written by `volume init` (is this the right file?)".into(),
        ));
    }
    Ok(k)
}

fn create_secret_file(path: &Path, content: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    f.write_all(content)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(path, e))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::sync_dir(parent)
}

/// Creates a key file with 32 random bytes, mode 0600 (never overwrites: create_new).
pub fn create_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut k = Zeroizing::new([0u8; 32]);
    keys::fill_random(&mut k[..]);
    create_secret_file(path, &k[..])?;
    Ok(k)
}

/// Creates a recovery key file (64 hex digits and a newline, mode 0600, create_new).
pub fn create_recovery_key_file(path: &Path) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let mut k = Zeroizing::new([0u8; 32]);
    keys::fill_random(&mut k[..]);
    let mut text = Zeroizing::new(hex::encode(&k[..]).into_bytes());
    text.push(b'\n');
    create_secret_file(path, &text)?;
    Ok(k)
}
