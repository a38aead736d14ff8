//! The key hierarchy: key file → KEK → volume master key → tenant keys → mailbox keys →
//! per-message keys, and the derived keys for names, metadata and dedup.
//!
//! Every derivation and wrapping is a small pure function taking its nonce or salt as an
//! argument, so docs/vectors/volume/ can pin them byte for byte. This module holds no
//! state and touches no file; secrets live in [`Key`] (zeroized on drop, never printed).

use crate::StoreError;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::SecureRandom;
use ring::{hkdf, hmac};
use zeroize::Zeroizing;

/// A 256-bit secret key, zeroized on drop; its `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Key {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Key(Zeroizing::new(b))
    }

    /// 32 bytes from the OS random number generator.
    pub fn random() -> Self {
        let mut k = Key(Zeroizing::new([0u8; 32]));
        fill_random(&mut k.0[..]);
        k
    }

    /// The secret bytes; do not copy them anywhere that outlives the call.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// An AES-256-GCM key for ring. (ring does not zeroize its expanded key schedule;
    /// keep the result short-lived.)
    pub fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0[..]).expect("32-byte AES-256 key"))
    }
}

/// Fills `buf` from the OS random number generator.
pub fn fill_random(buf: &mut [u8]) {
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the OS random number generator failed");
}

/// 32 random bytes (salts, not secrets).
pub fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    fill_random(&mut b);
    b
}

// === HKDF labels (docs/volume-format.md, "Key hierarchy") ===

/// HKDF info of the KEK derived from a raw key file.
pub const INFO_KEK: &[u8] = b"mailferry kek v1";
/// HKDF info of the per-message body key.
pub const INFO_MESSAGE: &[u8] = b"mailferry message v1";
/// HKDF info of the per-message metadata key (derived from the message key).
pub const INFO_META: &[u8] = b"mailferry meta v1";
/// HKDF info of the mailbox's dedup HMAC key (derived from the mailbox key).
pub const INFO_DEDUP: &[u8] = b"mailferry dedup v1";
/// HKDF info of the mailbox's locator HMAC key (derived from the mailbox key), which
/// finds the messages of a folder and source id for DELETE and FLAGS.
pub const INFO_LOCATOR: &[u8] = b"mailferry locator v1";
/// HKDF info of the name encryption key (derived from the VMK).
pub const INFO_NAME_ENC: &[u8] = b"mailferry name enc v1";
/// HKDF info of the name lookup HMAC key (derived from the VMK).
pub const INFO_NAME_MAC: &[u8] = b"mailferry name mac v1";

// === AAD labels ===

/// AAD label of the wrapped volume master key.
pub const AAD_VMK: &[u8] = b"MFK1vmk";
/// AAD label of a wrapped tenant key.
pub const AAD_TENANT: &[u8] = b"MFK1tenant";
/// AAD label of a wrapped mailbox key.
pub const AAD_MAILBOX: &[u8] = b"MFK1mailbox";
/// AAD label of an encrypted tenant or mailbox name.
pub const AAD_NAME: &[u8] = b"MFN1";
/// AAD label of encrypted message metadata.
pub const AAD_META: &[u8] = b"MFM1";

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256(ikm, salt, info) → 32 bytes.
pub fn hkdf32(ikm: &[u8], salt: &[u8], info: &[u8]) -> Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = Key(Zeroizing::new([0u8; 32]));
    prk.expand(&[info], Len(32))
        .expect("32 bytes is a valid HKDF-SHA256 length")
        .fill(&mut out.0[..])
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// The key-encryption key of a raw 32-byte key file (KDF id 1).
pub fn kek_from_key_file(key_file: &[u8; 32], salt: &[u8; 32]) -> Key {
    hkdf32(key_file, salt, INFO_KEK)
}

/// Argon2id cost parameters of a passphrase key slot (KDF id 2), stored in the slot's
/// 16 parameter bytes as `m_cost KiB (u32) || t_cost (u32) || lanes (u32) || argon2
/// version (u32, 0x13)`, all big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes over memory.
    pub t: u32,
    /// Lanes (parallelism).
    pub p: u32,
}

impl Argon2Params {
    /// What `volume init` and `volume rekey` write: 64 MiB, 3 passes, 1 lane (about a
    /// quarter of a second on the 2-vCPU development machine; see docs/volume-format.md).
    pub const DEFAULT: Argon2Params = Argon2Params {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };
    /// Largest memory cost a reader agrees to spend (a header asking for more is refused
    /// rather than exhausting the machine): 4 GiB.
    pub const MAX_M_KIB: u32 = 4 * 1024 * 1024;
    /// Largest pass count a reader agrees to run.
    pub const MAX_T: u32 = 64;
    /// Largest lane count a reader agrees to use.
    pub const MAX_P: u32 = 16;

    /// The 16 parameter bytes of a key slot.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&self.m_kib.to_be_bytes());
        b[4..8].copy_from_slice(&self.t.to_be_bytes());
        b[8..12].copy_from_slice(&self.p.to_be_bytes());
        b[12..16].copy_from_slice(&0x13u32.to_be_bytes());
        b
    }

    /// Parses and bounds-checks slot parameter bytes; the error says what is wrong.
    pub fn decode(b: &[u8; 16]) -> Result<Argon2Params, String> {
        let at = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let (m_kib, t, p, v) = (at(0), at(4), at(8), at(12));
        if v != 0x13 {
            return Err(format!("Argon2 version {v:#x} is not supported (0x13 is)"));
        }
        if p == 0 || p > Self::MAX_P || t == 0 || t > Self::MAX_T {
            return Err(format!("Argon2id passes {t} / lanes {p} out of range"));
        }
        if m_kib < 8 * p || m_kib > Self::MAX_M_KIB {
            return Err(format!("Argon2id memory {m_kib} KiB out of range"));
        }
        Ok(Argon2Params { m_kib, t, p })
    }
}

/// The key-encryption key of a passphrase (KDF id 2): Argon2id(passphrase, salt) → 32
/// bytes, with the slot's parameters.
pub fn kek_from_passphrase(
    passphrase: &[u8],
    salt: &[u8; 32],
    params: &Argon2Params,
) -> Result<Key, String> {
    let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|e| format!("Argon2id parameters refused: {e}"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Key(Zeroizing::new([0u8; 32]));
    a.hash_password_into(passphrase, salt, &mut out.0[..])
        .map_err(|e| format!("Argon2id failed: {e}"))?;
    Ok(out)
}

/// The per-message body key.
pub fn message_key(mailbox_key: &Key, salt: &[u8; 32]) -> Key {
    hkdf32(mailbox_key.expose(), salt, INFO_MESSAGE)
}

/// The per-message metadata key, derived from the message key.
pub fn meta_key(message_key: &Key) -> Key {
    hkdf32(message_key.expose(), &[], INFO_META)
}

/// HMAC-SHA256 with `key` over the concatenation of `parts`.
pub fn hmac32(key: &Key, parts: &[&[u8]]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    let tag = ctx.sign();
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The mailbox's dedup HMAC key.
pub fn dedup_mac_key(mailbox_key: &Key) -> Key {
    hkdf32(mailbox_key.expose(), &[], INFO_DEDUP)
}

/// The dedup identity of a message inside its mailbox:
/// `HMAC(dedup key, folder || 0 || source id || 0 || sha256)`.
pub fn dedup_key(
    dedup_mac_key: &Key,
    folder: &str,
    source_id: &str,
    sha256: &[u8; 32],
) -> [u8; 32] {
    hmac32(
        dedup_mac_key,
        &[folder.as_bytes(), &[0], source_id.as_bytes(), &[0], sha256],
    )
}

/// The mailbox's locator HMAC key.
pub fn locator_mac_key(mailbox_key: &Key) -> Key {
    hkdf32(mailbox_key.expose(), &[], INFO_LOCATOR)
}

/// The locator of every message with this folder and source id inside its mailbox,
/// whatever its content: `HMAC(locator key, folder || 0 || source id)`.
pub fn locator(locator_mac_key: &Key, folder: &str, source_id: &str) -> [u8; 32] {
    hmac32(
        locator_mac_key,
        &[folder.as_bytes(), &[0], source_id.as_bytes()],
    )
}

/// AES-256-GCM seal of a short value: returns `nonce(12) || ciphertext || tag(16)`.
pub fn seal_small(key: &Key, nonce: [u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(12 + plain.len() + 16);
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(plain);
    let tag = key
        .aead()
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf[12..],
        )
        .expect("short values are within AES-GCM limits");
    buf.extend_from_slice(tag.as_ref());
    buf
}

/// Opens a value made by [`seal_small`]; `None` if it fails authentication.
pub fn open_small(key: &Key, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < 12 + 16 {
        return None;
    }
    let nonce: [u8; 12] = sealed[..12].try_into().ok()?;
    open_copy(&key.aead(), nonce, aad, &sealed[12..])
}

/// Opens `ciphertext || tag` into a new zeroizing buffer; `None` if it fails
/// authentication.
pub(crate) fn open_copy(
    key: &LessSafeKey,
    nonce: [u8; 12],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(ciphertext_and_tag.to_vec());
    let n = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf[..],
        )
        .ok()?
        .len();
    buf.truncate(n);
    Some(buf)
}

/// A random 96-bit nonce for wrapping.
pub fn random_nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    fill_random(&mut n);
    n
}

/// AAD of a wrapped key: `label || volume id || row id (u64 BE)` (row id 0 for the VMK,
/// which has no row; its AAD is `label || volume id` only).
pub fn wrap_aad(label: &[u8], volume_id: &[u8; 16], row: Option<u64>) -> Vec<u8> {
    let mut a = Vec::with_capacity(label.len() + 24);
    a.extend_from_slice(label);
    a.extend_from_slice(volume_id);
    if let Some(r) = row {
        a.extend_from_slice(&r.to_be_bytes());
    }
    a
}

/// AAD of a wrapped mailbox key of generation `key_id`: generation 1 (the foundation's
/// format) is `"MFK1mailbox" || volume id || row id`; later generations append the key id
/// (u32 BE) so generations cannot be swapped.
pub fn mailbox_wrap_aad(volume_id: &[u8; 16], mailbox_id: u64, key_id: u32) -> Vec<u8> {
    let mut a = wrap_aad(AAD_MAILBOX, volume_id, Some(mailbox_id));
    if key_id != 1 {
        a.extend_from_slice(&key_id.to_be_bytes());
    }
    a
}

/// Wraps `key` under `kek`.
pub fn wrap_key(kek: &Key, nonce: [u8; 12], aad: &[u8], key: &Key) -> Vec<u8> {
    seal_small(kek, nonce, aad, key.expose())
}

/// Unwraps a key made by [`wrap_key`]; `None` if it fails authentication.
pub fn unwrap_key(kek: &Key, aad: &[u8], wrapped: &[u8]) -> Option<Key> {
    let plain = open_small(kek, aad, wrapped)?;
    let b: [u8; 32] = plain[..].try_into().ok()?;
    Some(Key::from_bytes(b))
}

/// Keys derived once from the volume master key.
pub struct VolumeKeys {
    /// The volume master key itself.
    pub vmk: Key,
    /// Encrypts tenant and mailbox names.
    pub name_enc: Key,
    /// HMAC key for looking names up.
    pub name_mac: Key,
}

impl VolumeKeys {
    /// Derives the name keys from the VMK.
    pub fn new(vmk: Key) -> Self {
        let name_enc = hkdf32(vmk.expose(), &[], INFO_NAME_ENC);
        let name_mac = hkdf32(vmk.expose(), &[], INFO_NAME_MAC);
        VolumeKeys {
            vmk,
            name_enc,
            name_mac,
        }
    }

    /// The lookup HMAC of a name; `kind` is `b't'` (tenant) or `b'm'` (mailbox).
    pub fn name_mac(&self, kind: u8, name: &str) -> [u8; 32] {
        hmac32(&self.name_mac, &[&[kind], name.as_bytes()])
    }

    /// Encrypts a name for the index.
    pub fn seal_name(&self, volume_id: &[u8; 16], kind: u8, name: &str) -> Vec<u8> {
        let aad = [AAD_NAME, volume_id, &[kind]].concat();
        seal_small(&self.name_enc, random_nonce(), &aad, name.as_bytes())
    }

    /// Decrypts a name from the index.
    pub fn open_name(&self, volume_id: &[u8; 16], kind: u8, sealed: &[u8]) -> Option<String> {
        let aad = [AAD_NAME, volume_id, &[kind]].concat();
        let plain = open_small(&self.name_enc, &aad, sealed)?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// AAD of a message's encrypted metadata.
pub fn meta_aad(volume_id: &[u8; 16], mailbox_id: u64, message_id: u64) -> Vec<u8> {
    [
        AAD_META,
        volume_id,
        &mailbox_id.to_be_bytes(),
        &message_id.to_be_bytes(),
    ]
    .concat()
}

/// Encrypts metadata (padded JSON) under the message's metadata key. The key is unique to
/// the message (random salt), and this first seal of it uses the all-zero nonce; every
/// later seal under the same key ([`reseal_meta`]) uses a random one.
pub fn seal_meta(
    message_key: &Key,
    volume_id: &[u8; 16],
    mailbox_id: u64,
    message_id: u64,
    meta: &mailferry_core::MessageMeta,
) -> Vec<u8> {
    seal_meta_with(
        message_key,
        [0u8; 12],
        volume_id,
        mailbox_id,
        message_id,
        meta,
    )
}

/// Encrypts changed metadata (new flags) of a message whose metadata key already sealed
/// once with the all-zero nonce: the same key, a random 96-bit nonce (stored in front of
/// the ciphertext as always, so [`open_meta`] reads either). A message's flags change a
/// handful of times, far below the 2^32 random nonces one GCM key tolerates.
pub fn reseal_meta(
    message_key: &Key,
    volume_id: &[u8; 16],
    mailbox_id: u64,
    message_id: u64,
    meta: &mailferry_core::MessageMeta,
) -> Vec<u8> {
    seal_meta_with(
        message_key,
        random_nonce(),
        volume_id,
        mailbox_id,
        message_id,
        meta,
    )
}

pub(crate) fn seal_meta_with(
    message_key: &Key,
    nonce: [u8; 12],
    volume_id: &[u8; 16],
    mailbox_id: u64,
    message_id: u64,
    meta: &mailferry_core::MessageMeta,
) -> Vec<u8> {
    let mut json = serde_json::to_vec(meta).expect("MessageMeta serializes");
    // Pad to a multiple of 64 bytes with JSON whitespace so the ciphertext length says
    // less about folder and source id lengths.
    let padded = json.len().div_ceil(64) * 64;
    json.resize(padded, b' ');
    let out = seal_small(
        &meta_key(message_key),
        nonce,
        &meta_aad(volume_id, mailbox_id, message_id),
        &json,
    );
    json.iter_mut().for_each(|b| *b = 0);
    out
}

/// Decrypts metadata made by [`seal_meta`].
pub fn open_meta(
    message_key: &Key,
    volume_id: &[u8; 16],
    mailbox_id: u64,
    message_id: u64,
    sealed: &[u8],
) -> Result<mailferry_core::MessageMeta, String> {
    let plain = open_small(
        &meta_key(message_key),
        &meta_aad(volume_id, mailbox_id, message_id),
        sealed,
    )
    .ok_or_else(|| "failed authentication".to_string())?;
    serde_json::from_slice(&plain).map_err(|e| format!("decrypted but not valid metadata: {e}"))
}

/// Error for an unwrap failure of an index key or name.
pub(crate) fn unwrap_err(dir: &std::path::Path, what: String) -> StoreError {
    StoreError::KeyUnwrap {
        path: dir.to_path_buf(),
        what,
    }
}

#[cfg(test)]
mod tests;
