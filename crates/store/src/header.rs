//! The volume header `volume.hdr`: magic, format version, volume id and key slots that
//! each wrap the volume master key (docs/volume-format.md, "Header").
//!
//! This module encodes and parses the header and unwraps the master key; it does not
//! open the index or any segment. Writing is atomic (temp file, fsync, rename, dir fsync).

use crate::keys::{self, Key};
use crate::StoreError;
use std::io::Write;
use std::path::Path;

/// Header magic.
pub const MAGIC: &[u8; 8] = b"MFVOLHDR";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of one key slot.
pub const SLOT_LEN: usize = 128;
/// Most key slots a header may carry.
pub const MAX_SLOTS: usize = 4;
/// KDF id: raw 32-byte key file through HKDF-SHA256.
pub const KDF_KEY_FILE: u8 = 1;
/// KDF id reserved for an Argon2id passphrase (not implemented yet).
pub const KDF_ARGON2ID: u8 = 2;
/// Slot role: the primary key.
pub const ROLE_PRIMARY: u8 = 0;
/// Slot role reserved for a recovery key.
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

/// The parsed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
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
        let kek = keys::kek_from_key_file(key_file, &salt);
        let wrapped = keys::wrap_key(
            &kek,
            nonce,
            &keys::wrap_aad(keys::AAD_VMK, &volume_id, None),
            vmk,
        );
        Header {
            volume_id,
            slots: vec![KeySlot {
                kdf: KDF_KEY_FILE,
                role: ROLE_PRIMARY,
                kdf_params: [0; 16],
                salt,
                wrapped: wrapped.try_into().expect("60-byte wrapped key"),
            }],
        }
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
        if version != VERSION {
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
        Ok(Header { volume_id, slots })
    }

    /// Unwraps the VMK with a key file: tries every key-file slot.
    pub fn unlock(&self, dir: &Path, key_file: &[u8; 32]) -> Result<Key, StoreError> {
        let aad = keys::wrap_aad(keys::AAD_VMK, &self.volume_id, None);
        let mut known = false;
        for s in self.slots.iter().filter(|s| s.kdf == KDF_KEY_FILE) {
            known = true;
            let kek = keys::kek_from_key_file(key_file, &s.salt);
            if let Some(vmk) = keys::unwrap_key(&kek, &aad, &s.wrapped) {
                return Ok(vmk);
            }
        }
        if !known {
            let ids: Vec<String> = self.slots.iter().map(|s| s.kdf.to_string()).collect();
            return Err(StoreError::UnsupportedKdf {
                path: dir.to_path_buf(),
                kdf: ids.join(", "),
            });
        }
        Err(StoreError::WrongKey {
            path: dir.to_path_buf(),
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
    pub fn write_atomic(&self, dir: &Path) -> Result<(), StoreError> {
        let tmp = dir.join("volume.hdr.tmp");
        let path = dir.join(crate::HEADER_FILE);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| StoreError::io(&tmp, e))?;
        f.write_all(&self.encode())
            .and_then(|_| f.sync_all())
            .map_err(|e| StoreError::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
        crate::sync_dir(dir)
    }
}

#[cfg(test)]
mod tests;
