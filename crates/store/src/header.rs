//! The volume header `volume.hdr`: magic, format version, volume id and key slots that
//! each wrap the volume master key (docs/volume-format.md, "Header").
//!
//! This module encodes and parses the header, builds key slots (key file, Argon2id
//! passphrase, recovery key) and unwraps the master key; it does not open the index or
//! any segment. Writing is atomic (temp file, fsync, rename, dir fsync), so a crash
//! leaves either the old or the new header, never a mix.

use crate::credential::Secret;
use crate::keys::{self, Argon2Params, Key};
use crate::StoreError;
use std::io::Write;
use std::path::Path;

/// Header magic.
pub const MAGIC: &[u8; 8] = b"MFVOLHDR";
/// The format version this build writes.
pub const VERSION: u16 = 2;
/// The oldest format version this build reads (the foundation's; see
/// docs/volume-format.md, "Versions and upgrade").
pub const MIN_VERSION: u16 = 1;
/// Bytes of one key slot.
pub const SLOT_LEN: usize = 128;
/// Most key slots a header may carry.
pub const MAX_SLOTS: usize = 4;
/// KDF id: raw 32-byte key file through HKDF-SHA256.
pub const KDF_KEY_FILE: u8 = 1;
/// KDF id: Argon2id passphrase (parameters in the slot).
pub const KDF_ARGON2ID: u8 = 2;
/// Slot role: the primary key.
pub const ROLE_PRIMARY: u8 = 0;
/// Slot role: the recovery key (a key file written once by `volume init`).
pub const ROLE_RECOVERY: u8 = 1;

const FIXED: usize = 27;

/// One key slot: how to derive a KEK, and the VMK wrapped under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySlot {
    /// KDF id.
    pub kdf: u8,
    /// Slot role.
    pub role: u8,
    /// KDF parameters (zero for KDF 1).
    pub kdf_params: [u8; 16],
    /// HKDF salt.
    pub salt: [u8; 32],
    /// `nonce(12) || AES-256-GCM(VMK)(32) || tag(16)`.
    pub wrapped: [u8; 60],
}

impl KeySlot {
    /// A key-file slot (KDF 1) of `role` wrapping `vmk`, with explicit salt and nonce.
    pub fn key_file_with(
        volume_id: &[u8; 16],
        role: u8,
        key_file: &[u8; 32],
        vmk: &Key,
        salt: [u8; 32],
        nonce: [u8; 12],
    ) -> KeySlot {
        let kek = keys::kek_from_key_file(key_file, &salt);
        KeySlot::wrap(
            volume_id,
            KDF_KEY_FILE,
            role,
            [0; 16],
            salt,
            nonce,
            &kek,
            vmk,
        )
    }

    /// A key-file slot with random salt and nonce.
    pub fn key_file(volume_id: &[u8; 16], role: u8, key_file: &[u8; 32], vmk: &Key) -> KeySlot {
        Self::key_file_with(
            volume_id,
            role,
            key_file,
            vmk,
            keys::random32(),
            keys::random_nonce(),
        )
    }

    /// A primary Argon2id passphrase slot (KDF 2), with explicit salt and nonce.
    pub fn passphrase_with(
        volume_id: &[u8; 16],
        passphrase: &[u8],
        params: &Argon2Params,
        vmk: &Key,
        salt: [u8; 32],
        nonce: [u8; 12],
    ) -> Result<KeySlot, String> {
        let kek = keys::kek_from_passphrase(passphrase, &salt, params)?;
        Ok(KeySlot::wrap(
            volume_id,
            KDF_ARGON2ID,
            ROLE_PRIMARY,
            params.encode(),
            salt,
            nonce,
            &kek,
            vmk,
        ))
    }

    /// A primary passphrase slot with random salt and nonce.
    pub fn passphrase(
        volume_id: &[u8; 16],
        passphrase: &[u8],
        params: &Argon2Params,
        vmk: &Key,
    ) -> Result<KeySlot, String> {
        Self::passphrase_with(
            volume_id,
            passphrase,
            params,
            vmk,
            keys::random32(),
            keys::random_nonce(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn wrap(
        volume_id: &[u8; 16],
        kdf: u8,
        role: u8,
        kdf_params: [u8; 16],
        salt: [u8; 32],
        nonce: [u8; 12],
        kek: &Key,
        vmk: &Key,
    ) -> KeySlot {
        let wrapped = keys::wrap_key(
            kek,
            nonce,
            &keys::wrap_aad(keys::AAD_VMK, volume_id, None),
            vmk,
        );
        KeySlot {
            kdf,
            role,
            kdf_params,
            salt,
            wrapped: wrapped.try_into().expect("60-byte wrapped key"),
        }
    }

    /// `"key file"`, `"passphrase"` or `"recovery key"`, for messages.
    pub fn describe(&self) -> String {
        match (self.kdf, self.role) {
            (KDF_KEY_FILE, ROLE_PRIMARY) => "key file".into(),
            (KDF_KEY_FILE, ROLE_RECOVERY) => "recovery key".into(),
            (KDF_ARGON2ID, ROLE_PRIMARY) => match Argon2Params::decode(&self.kdf_params) {
                Ok(p) => format!(
                    "passphrase (Argon2id m={} KiB t={} p={})",
                    p.m_kib, p.t, p.p
                ),
                Err(_) => "passphrase (bad parameters)".into(),
            },
            (k, r) => format!("KDF {k} role {r}"),
        }
    }
}

/// The parsed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version read from disk ([`VERSION`] for a header built in memory; writing
    /// always writes [`VERSION`]).
    pub version: u16,
    /// The volume id.
    pub volume_id: [u8; 16],
    /// Key slots, at least one.
    pub slots: Vec<KeySlot>,
}

impl Header {
    /// A header with one key-file slot wrapping `vmk`, with explicit salt and nonce (for
    /// vectors; [`Header::create`] picks them at random).
    pub fn with_key_file(
        volume_id: [u8; 16],
        key_file: &[u8; 32],
        vmk: &Key,
        salt: [u8; 32],
        nonce: [u8; 12],
    ) -> Header {
        Header {
            version: VERSION,
            volume_id,
            slots: vec![KeySlot::key_file_with(
                &volume_id,
                ROLE_PRIMARY,
                key_file,
                vmk,
                salt,
                nonce,
            )],
        }
    }

    /// True if a recovery slot is present.
    pub fn has_recovery(&self) -> bool {
        self.slots.iter().any(|s| s.role == ROLE_RECOVERY)
    }

    /// A fresh header with random volume id, salt and nonce.
    pub fn create(key_file: &[u8; 32], vmk: &Key) -> Header {
        let mut id = [0u8; 16];
        keys::fill_random(&mut id);
        Header::with_key_file(id, key_file, vmk, keys::random32(), keys::random_nonce())
    }

    /// The header bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + SLOT_LEN * self.slots.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.volume_id);
        out.push(self.slots.len() as u8);
        for s in &self.slots {
            let start = out.len();
            out.push(s.kdf);
            out.push(s.role);
            out.extend_from_slice(&s.kdf_params);
            out.extend_from_slice(&s.salt);
            out.extend_from_slice(&s.wrapped);
            out.resize(start + SLOT_LEN, 0);
        }
        let sum = ring::digest::digest(&ring::digest::SHA256, &out);
        out.extend_from_slice(sum.as_ref());
        out
    }

    /// Parses header bytes; `dir` names the volume in errors.
    pub fn parse(dir: &Path, b: &[u8]) -> Result<Header, StoreError> {
        let damaged = |reason: &str| StoreError::HeaderDamaged {
            path: dir.to_path_buf(),
            reason: reason.to_string(),
        };
        if b.len() < 10 || &b[..8] != MAGIC {
            return Err(damaged("bad magic (not a mailferry volume header)"));
        }
        let version = u16::from_be_bytes([b[8], b[9]]);
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(StoreError::UnsupportedVersion {
                path: dir.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        if b.len() < FIXED {
            return Err(damaged("truncated"));
        }
        let n = b[26] as usize;
        if n == 0 || n > MAX_SLOTS {
            return Err(damaged("key slot count out of range"));
        }
        let total = FIXED + SLOT_LEN * n + 32;
        if b.len() != total {
            return Err(damaged(&format!("length {} (expected {total})", b.len())));
        }
        let sum = ring::digest::digest(&ring::digest::SHA256, &b[..total - 32]);
        if sum.as_ref() != &b[total - 32..] {
            return Err(damaged("checksum mismatch"));
        }
        let volume_id: [u8; 16] = b[10..26].try_into().expect("16 bytes");
        let slots = (0..n)
            .map(|i| {
                let s = &b[FIXED + i * SLOT_LEN..FIXED + (i + 1) * SLOT_LEN];
                KeySlot {
                    kdf: s[0],
                    role: s[1],
                    kdf_params: s[2..18].try_into().expect("16 bytes"),
                    salt: s[18..50].try_into().expect("32 bytes"),
                    wrapped: s[50..110].try_into().expect("60 bytes"),
                }
            })
            .collect();
        Ok(Header {
            version,
            volume_id,
            slots,
        })
    }

    /// Unwraps the VMK with a key file: tries every primary key-file slot.
    pub fn unlock(&self, dir: &Path, key_file: &[u8; 32]) -> Result<Key, StoreError> {
        self.unlock_with(dir, &Secret::KeyFile(zeroize::Zeroizing::new(*key_file)))
            .map(|(k, _)| k)
    }

    /// Unwraps the VMK with any credential and returns it with the index of the slot
    /// that opened. A key file tries primary key-file slots, a recovery key recovery
    /// slots, a passphrase Argon2id slots. Only the header is used.
    pub fn unlock_with(&self, dir: &Path, secret: &Secret) -> Result<(Key, usize), StoreError> {
        let aad = keys::wrap_aad(keys::AAD_VMK, &self.volume_id, None);
        let wanted = |s: &KeySlot| match secret {
            Secret::KeyFile(_) => s.kdf == KDF_KEY_FILE && s.role == ROLE_PRIMARY,
            Secret::RecoveryKey(_) => s.kdf == KDF_KEY_FILE && s.role == ROLE_RECOVERY,
            Secret::Passphrase(_) => s.kdf == KDF_ARGON2ID,
        };
        let mut tried = 0;
        for (i, s) in self.slots.iter().enumerate().filter(|(_, s)| wanted(s)) {
            tried += 1;
            let kek = match secret {
                Secret::KeyFile(k) | Secret::RecoveryKey(k) => keys::kek_from_key_file(k, &s.salt),
                Secret::Passphrase(p) => {
                    let params = Argon2Params::decode(&s.kdf_params).map_err(|reason| {
                        StoreError::HeaderDamaged {
                            path: dir.to_path_buf(),
                            reason: format!("key slot {i}: {reason}"),
                        }
                    })?;
                    keys::kek_from_passphrase(p, &s.salt, &params).map_err(|reason| {
                        StoreError::HeaderDamaged {
                            path: dir.to_path_buf(),
                            reason: format!("key slot {i}: {reason}"),
                        }
                    })?
                }
            };
            if let Some(vmk) = keys::unwrap_key(&kek, &aad, &s.wrapped) {
                return Ok((vmk, i));
            }
        }
        let known = |s: &KeySlot| {
            matches!(
                (s.kdf, s.role),
                (KDF_KEY_FILE, ROLE_PRIMARY | ROLE_RECOVERY) | (KDF_ARGON2ID, _)
            )
        };
        if !self.slots.iter().any(known) {
            let ids: Vec<String> = self.slots.iter().map(|s| s.kdf.to_string()).collect();
            return Err(StoreError::UnsupportedKdf {
                path: dir.to_path_buf(),
                kdf: ids.join(", "),
            });
        }
        let have: Vec<String> = self.slots.iter().map(KeySlot::describe).collect();
        let hint = match (secret, tried) {
            (Secret::KeyFile(_), 0) => "this volume has no key-file slot".to_string(),
            (Secret::Passphrase(_), 0) => "this volume has no passphrase slot".to_string(),
            (Secret::RecoveryKey(_), 0) => "this volume has no recovery slot".to_string(),
            (Secret::KeyFile(_), _) => "the key file does not match this volume; use the key file created with `volume init`".to_string(),
            (Secret::Passphrase(_), _) => "the passphrase does not match this volume".to_string(),
            (Secret::RecoveryKey(_), _) => "the recovery key does not match this volume".to_string(),
        };
        Err(StoreError::WrongKey {
            path: dir.to_path_buf(),
            hint: format!("{hint}; it opens with: {}", have.join(", ")),
        })
    }

    /// Reads and parses `dir/volume.hdr`.
    pub fn read(dir: &Path) -> Result<Header, StoreError> {
        let path = dir.join(crate::HEADER_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoVolume {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(StoreError::io(path, e)),
        };
        Header::parse(dir, &bytes)
    }

    /// Writes `dir/volume.hdr` atomically: temp file, fsync, rename, directory fsync.
    /// A `volume.hdr.tmp` left by an interrupted write is replaced (it was never renamed,
    /// so it was never the header).
    pub fn write_atomic(&self, dir: &Path) -> Result<(), StoreError> {
        self.write_atomic_until(dir, WriteStep::Done)
    }

    /// [`Header::write_atomic`], stopping after `stop` (crash simulation in tests).
    pub(crate) fn write_atomic_until(&self, dir: &Path, stop: WriteStep) -> Result<(), StoreError> {
        let tmp = dir.join(TMP_FILE);
        let path = dir.join(crate::HEADER_FILE);
        let bytes = self.encode();
        let mut f = mailferry_audit::private::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        if stop == WriteStep::TornTemp {
            return f
                .write_all(&bytes[..bytes.len() / 2])
                .map_err(|e| StoreError::io(&tmp, e));
        }
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| StoreError::io(&tmp, e))?;
        drop(f);
        if stop == WriteStep::TempSynced {
            return Ok(());
        }
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
        if stop == WriteStep::Renamed {
            return Ok(());
        }
        crate::sync_dir(dir)
    }
}

/// Name of the temp file of an atomic header write.
pub const TMP_FILE: &str = "volume.hdr.tmp";

/// Where [`Header::write_atomic_until`] stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteStep {
    /// Half the temp file written, not synced, not renamed.
    TornTemp,
    /// Temp file complete and synced, not renamed.
    TempSynced,
    /// Renamed, directory not synced.
    Renamed,
    /// Everything.
    Done,
}

#[cfg(test)]
mod tests;
