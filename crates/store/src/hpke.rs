//! RFC 9180 HPKE, base mode, single shot: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! AES-256-GCM (suite `0x0020, 0x0001, 0x0002`), for wrapping 32-byte keys to a tenant's
//! or a grant's X25519 public key.
//!
//! Pure functions over bytes (the ephemeral key is an argument, so the vectors in
//! docs/vectors/volume/ pin every byte); X25519 from x25519-dalek, HKDF and AES-GCM from
//! ring. Only what wrapping a key needs: no PSK or auth modes, no export interface, one
//! message per context. AES-128-GCM (`0x0001`) is here only so the test can recompute
//! RFC 9180's own vector A.1 and show this is the standard construction.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use ring::{hkdf, hmac};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// KEM id of DHKEM(X25519, HKDF-SHA256).
const KEM_ID: u16 = 0x0020;
/// KDF id of HKDF-SHA256.
const KDF_ID: u16 = 0x0001;
/// Length of an encapsulated key (`enc`): an X25519 public key.
pub const ENC_LEN: usize = 32;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;

/// The AEAD of a suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aead {
    /// AES-128-GCM, id 0x0001 (test vector A.1 only).
    #[cfg_attr(not(test), allow(dead_code))]
    Aes128Gcm,
    /// AES-256-GCM, id 0x0002: what mailferry uses.
    Aes256Gcm,
}

impl Aead {
    fn id(self) -> u16 {
        match self {
            Aead::Aes128Gcm => 1,
            Aead::Aes256Gcm => 2,
        }
    }
    fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm => 16,
            Aead::Aes256Gcm => 32,
        }
    }
    fn alg(self) -> &'static ring::aead::Algorithm {
        match self {
            Aead::Aes128Gcm => &AES_128_GCM,
            Aead::Aes256Gcm => &AES_256_GCM,
        }
    }
}

fn kem_suite() -> Vec<u8> {
    [&b"KEM"[..], &KEM_ID.to_be_bytes()].concat()
}

fn hpke_suite(aead: Aead) -> Vec<u8> {
    [
        &b"HPKE"[..],
        &KEM_ID.to_be_bytes(),
        &KDF_ID.to_be_bytes(),
        &aead.id().to_be_bytes(),
    ]
    .concat()
}

/// HKDF-Extract (RFC 5869) = HMAC-SHA256(salt, ikm); an empty salt is HMAC's
/// zero-length key, the same as 32 zero bytes.
fn extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let mut ctx = hmac::Context::with_key(&k);
    for p in ikm {
        ctx.update(p);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    extract(salt, &[b"HPKE-v1", suite, label, ikm])
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn labeled_expand(suite: &[u8], prk: &[u8; 32], label: &[u8], info: &[u8], out: &mut [u8]) {
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk);
    let len = (out.len() as u16).to_be_bytes();
    prk.expand(&[&len, b"HPKE-v1", suite, label, info], Len(out.len()))
        .expect("lengths within HKDF-SHA256 limits")
        .fill(out)
        .expect("lengths within HKDF-SHA256 limits");
}

/// RFC 9180 §7.1.3 DeriveKeyPair for X25519: the private key derived from `ikm`
/// (vectors only; keys in use are random).
#[cfg_attr(not(test), allow(dead_code))]
pub fn derive_secret(ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let suite = kem_suite();
    let dkp = labeled_extract(&suite, b"", b"dkp_prk", ikm);
    let mut sk = Zeroizing::new([0u8; 32]);
    labeled_expand(&suite, &dkp, b"sk", b"", &mut sk[..]);
    sk
}

/// The X25519 public key of a private key.
pub fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// DH(sk, pk) refusing the all-zero result of a small-order public key (RFC 9180 §7.1.4).
fn dh(secret: &[u8; 32], public: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
    let shared = StaticSecret::from(*secret).diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return None;
    }
    Some(Zeroizing::new(shared.to_bytes()))
}

/// DHKEM ExtractAndExpand: the KEM shared secret of `dh` and `enc || pkR`.
fn kem_shared(dh: &[u8; 32], enc: &[u8; 32], pk_r: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let suite = kem_suite();
    let eae = labeled_extract(&suite, b"", b"eae_prk", dh);
    let mut ss = Zeroizing::new([0u8; 32]);
    labeled_expand(
        &suite,
        &eae,
        b"shared_secret",
        &[&enc[..], &pk_r[..]].concat(),
        &mut ss[..],
    );
    ss
}

/// The base-mode key schedule: `(key, base_nonce)`.
fn key_schedule(aead: Aead, shared: &[u8; 32], info: &[u8]) -> (Zeroizing<Vec<u8>>, [u8; 12]) {
    let suite = hpke_suite(aead);
    let psk_id_hash = labeled_extract(&suite, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(&suite, b"", b"info_hash", info);
    let ctx = [&[0u8][..], &psk_id_hash[..], &info_hash[..]].concat();
    let secret = labeled_extract(&suite, shared, b"secret", b"");
    let mut key = Zeroizing::new(vec![0u8; aead.key_len()]);
    labeled_expand(&suite, &secret, b"key", &ctx, &mut key[..]);
    let mut nonce = [0u8; 12];
    labeled_expand(&suite, &secret, b"base_nonce", &ctx, &mut nonce);
    (key, nonce)
}

/// What a seal produced, and the values the vectors pin.
pub struct Sealed {
    /// `enc || ciphertext || tag`.
    pub bytes: Vec<u8>,
    /// The KEM shared secret (vectors only).
    #[cfg_attr(not(test), allow(dead_code))]
    pub shared_secret: Zeroizing<[u8; 32]>,
}

/// Single-shot base-mode seal of `plain` to `pk_r` with the ephemeral private key
/// `sk_e` (random in use, fixed in vectors). Returns `None` only if `pk_r` is a
/// small-order point (the DH result is zero).
pub fn seal_with(
    aead: Aead,
    pk_r: &[u8; 32],
    sk_e: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plain: &[u8],
) -> Option<Sealed> {
    let enc = public_of(sk_e);
    let dh = dh(sk_e, pk_r)?;
    let shared = kem_shared(&dh, &enc, pk_r);
    let (key, nonce) = key_schedule(aead, &shared, info);
    let k = LessSafeKey::new(UnboundKey::new(aead.alg(), &key).expect("key length of the suite"));
    let mut bytes = Vec::with_capacity(ENC_LEN + plain.len() + TAG_LEN);
    bytes.extend_from_slice(&enc);
    bytes.extend_from_slice(plain);
    let tag = k
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut bytes[ENC_LEN..],
        )
        .expect("short values are within AES-GCM limits");
    bytes.extend_from_slice(tag.as_ref());
    Some(Sealed {
        bytes,
        shared_secret: shared,
    })
}

/// [`seal_with`] with a fresh random ephemeral key.
pub fn seal(pk_r: &[u8; 32], info: &[u8], aad: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
    let mut sk_e = Zeroizing::new([0u8; 32]);
    crate::keys::fill_random(&mut sk_e[..]);
    seal_with(Aead::Aes256Gcm, pk_r, &sk_e, info, aad, plain).map(|s| s.bytes)
}

/// Opens what [`seal_with`] made; `None` if it fails authentication (wrong private key,
/// other AAD or info, altered bytes).
pub fn open(
    aead: Aead,
    sk_r: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < ENC_LEN + TAG_LEN {
        return None;
    }
    let enc: [u8; 32] = sealed[..ENC_LEN].try_into().ok()?;
    let pk_r = public_of(sk_r);
    let dh = dh(sk_r, &enc)?;
    let shared = kem_shared(&dh, &enc, &pk_r);
    let (key, nonce) = key_schedule(aead, &shared, info);
    let k = LessSafeKey::new(UnboundKey::new(aead.alg(), &key).ok()?);
    crate::keys::open_copy(&k, nonce, aad, &sealed[ENC_LEN..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }
    fn h32(s: &str) -> [u8; 32] {
        h(s).try_into().expect("32 bytes")
    }

    /// RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM,
    /// base mode, sequence number 0. Recomputing it shows the labels, the key schedule
    /// and the KEM are the standard's; the AES-256-GCM suite differs only in the AEAD id
    /// (in the suite id) and the key length.
    #[test]
    fn rfc9180_a1_base_vector() {
        let sk_e = derive_secret(&h(
            "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
        ));
        assert_eq!(
            hex::encode(*sk_e),
            "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736"
        );
        let sk_r = derive_secret(&h(
            "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
        ));
        assert_eq!(
            hex::encode(*sk_r),
            "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8"
        );
        let pk_r = public_of(&sk_r);
        assert_eq!(
            pk_r,
            h32("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
        );
        let info = h("4f6465206f6e2061204772656369616e2055726e");
        let aad = h("436f756e742d30");
        let pt = h("4265617574792069732074727574682c20747275746820626561757479");
        let s = seal_with(Aead::Aes128Gcm, &pk_r, &sk_e, &info, &aad, &pt).expect("seal");
        assert_eq!(
            hex::encode(*s.shared_secret),
            "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc"
        );
        assert_eq!(
            hex::encode(&s.bytes[..32]),
            "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431"
        );
        assert_eq!(
            hex::encode(&s.bytes[32..]),
            "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
        );
        let back = open(Aead::Aes128Gcm, &sk_r, &info, &aad, &s.bytes).expect("opens");
        assert_eq!(&back[..], &pt[..]);
    }

    #[test]
    fn wrong_key_aad_or_info_do_not_open() {
        let sk = derive_secret(b"recipient");
        let other = derive_secret(b"other");
        let sealed = seal(&public_of(&sk), b"info", b"aad", b"key bytes").expect("seal");
        assert!(open(Aead::Aes256Gcm, &sk, b"info", b"aad", &sealed).is_some());
        assert!(open(Aead::Aes256Gcm, &other, b"info", b"aad", &sealed).is_none());
        assert!(open(Aead::Aes256Gcm, &sk, b"info", b"aaD", &sealed).is_none());
        assert!(open(Aead::Aes256Gcm, &sk, b"inf0", b"aad", &sealed).is_none());
        let mut bad = sealed.clone();
        bad[40] ^= 1;
        assert!(open(Aead::Aes256Gcm, &sk, b"info", b"aad", &bad).is_none());
        // A small-order public key (all zero) is refused, not sealed to.
        assert!(seal(&[0u8; 32], b"info", b"aad", b"x").is_none());
    }
}
