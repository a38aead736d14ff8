use super::*;
use proptest::prelude::*;

#[test]
fn round_trip_and_unlock() {
    let kf = [9u8; 32];
    let vmk = Key::random();
    let h = Header::create(&kf, &vmk);
    let b = h.encode();
    assert_eq!(b.len(), 27 + 128 + 32);
    let p = Header::parse(Path::new("v"), &b).unwrap();
    assert_eq!(p, h);
    assert_eq!(
        p.unlock(Path::new("v"), &kf).unwrap().expose(),
        vmk.expose()
    );
    assert!(matches!(
        p.unlock(Path::new("v"), &[8; 32]),
        Err(StoreError::WrongKey { .. })
    ));
}

#[test]
fn unknown_version_is_typed() {
    let mut b = Header::create(&[1; 32], &Key::random()).encode();
    b[9] = 3;
    assert!(matches!(
        Header::parse(Path::new("v"), &b),
        Err(StoreError::UnsupportedVersion {
            found: 3,
            supported: 2,
            ..
        })
    ));
}

#[test]
fn damaged_header_is_not_a_wrong_key() {
    let mut b = Header::create(&[1; 32], &Key::random()).encode();
    b[100] ^= 1;
    assert!(matches!(
        Header::parse(Path::new("v"), &b),
        Err(StoreError::HeaderDamaged { .. })
    ));
}

#[test]
fn unknown_kdf_is_typed() {
    let mut h = Header::create(&[1; 32], &Key::random());
    h.slots[0].kdf = 9;
    let p = Header::parse(Path::new("v"), &h.encode()).unwrap();
    assert!(matches!(
        p.unlock(Path::new("v"), &[1; 32]),
        Err(StoreError::UnsupportedKdf { .. })
    ));
}

/// Cheap Argon2id parameters for unit tests (the real ones are exercised in
/// `passphrase_slot_default_params`).
const FAST: Argon2Params = Argon2Params {
    m_kib: 64,
    t: 1,
    p: 1,
};

fn secret_pass(p: &[u8]) -> Secret {
    Secret::Passphrase(zeroize::Zeroizing::new(p.to_vec()))
}

#[test]
fn passphrase_and_recovery_slots_each_unlock_only_their_secret() {
    let vmk = Key::random();
    let id = [7u8; 16];
    let rk = [5u8; 32];
    let h = Header {
        version: VERSION,
        volume_id: id,
        slots: vec![
            KeySlot::passphrase(&id, b"correct horse", &FAST, &vmk).unwrap(),
            KeySlot::key_file(&id, ROLE_RECOVERY, &rk, &vmk),
        ],
    };
    let p = Header::parse(Path::new("v"), &h.encode()).unwrap();
    assert!(p.has_recovery());
    let (k, slot) = p
        .unlock_with(Path::new("v"), &secret_pass(b"correct horse"))
        .unwrap();
    assert_eq!((k.expose(), slot), (vmk.expose(), 0));
    let (k, slot) = p
        .unlock_with(
            Path::new("v"),
            &Secret::RecoveryKey(zeroize::Zeroizing::new(rk)),
        )
        .unwrap();
    assert_eq!((k.expose(), slot), (vmk.expose(), 1));
    // Wrong passphrase: WrongKey naming the passphrase.
    let e = p
        .unlock_with(Path::new("v"), &secret_pass(b"wrong horse"))
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::WrongKey { hint, .. } if hint.contains("passphrase does not match")),
        "{e}"
    );
    // The recovery key is not a key file (roles are separate), and there is no key-file slot.
    let e = p.unlock(Path::new("v"), &rk).unwrap_err();
    assert!(
        matches!(&e, StoreError::WrongKey { hint, .. } if hint.contains("no key-file slot")),
        "{e}"
    );
}

#[test]
fn passphrase_slot_default_params() {
    let vmk = Key::random();
    let slot = KeySlot::passphrase(&[1; 16], b"pw", &Argon2Params::DEFAULT, &vmk).unwrap();
    assert_eq!(
        Argon2Params::decode(&slot.kdf_params).unwrap(),
        Argon2Params::DEFAULT
    );
    let h = Header {
        version: VERSION,
        volume_id: [1; 16],
        slots: vec![slot],
    };
    assert_eq!(
        h.unlock_with(Path::new("v"), &secret_pass(b"pw"))
            .unwrap()
            .0
            .expose(),
        vmk.expose()
    );
}

#[test]
fn absurd_argon2_params_are_refused_not_run() {
    let vmk = Key::random();
    let mut slot = KeySlot::passphrase(&[1; 16], b"pw", &FAST, &vmk).unwrap();
    slot.kdf_params = Argon2Params {
        m_kib: u32::MAX,
        t: 1,
        p: 1,
    }
    .encode();
    let h = Header {
        version: VERSION,
        volume_id: [1; 16],
        slots: vec![slot],
    };
    assert!(matches!(
        h.unlock_with(Path::new("v"), &secret_pass(b"pw")),
        Err(StoreError::HeaderDamaged { .. })
    ));
}

#[test]
fn version_1_header_still_parses_and_unlocks() {
    let hexed = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/vectors/volume/header-v1.hex"),
    )
    .unwrap();
    let h = Header::parse(Path::new("v"), &hex::decode(hexed.trim()).unwrap()).unwrap();
    assert_eq!(h.version, 1);
    let kf: [u8; 32] = std::array::from_fn(|i| i as u8);
    let vmk = h.unlock(Path::new("v"), &kf).unwrap();
    let want: [u8; 32] = std::array::from_fn(|i| 0x50 + i as u8);
    assert_eq!(vmk.expose(), &want);
    // Re-encoding writes the current version.
    assert_eq!(&h.encode()[8..10], &VERSION.to_be_bytes());
}

#[test]
fn interrupted_header_writes_leave_old_or_new() {
    let dir = tempfile::tempdir().unwrap();
    let old = Header::create(&[1; 32], &Key::random());
    old.write_atomic(dir.path()).unwrap();
    let new = Header::create(&[2; 32], &Key::random());
    for stop in [WriteStep::TornTemp, WriteStep::TempSynced] {
        new.write_atomic_until(dir.path(), stop).unwrap();
        assert_eq!(Header::read(dir.path()).unwrap(), old, "{stop:?}");
    }
    new.write_atomic_until(dir.path(), WriteStep::Renamed)
        .unwrap();
    assert_eq!(Header::read(dir.path()).unwrap(), new);
    // A later write is not blocked by a leftover temp file.
    new.write_atomic_until(dir.path(), WriteStep::TempSynced)
        .unwrap();
    old.write_atomic(dir.path()).unwrap();
    assert_eq!(Header::read(dir.path()).unwrap(), old);
}

proptest! {
    #[test]
    fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Header::parse(Path::new("v"), &b);
    }
}
