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
    b[9] = 2;
    assert!(matches!(
        Header::parse(Path::new("v"), &b),
        Err(StoreError::UnsupportedVersion {
            found: 2,
            supported: 1,
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
    h.slots[0].kdf = KDF_ARGON2ID;
    let p = Header::parse(Path::new("v"), &h.encode()).unwrap();
    assert!(matches!(
        p.unlock(Path::new("v"), &[1; 32]),
        Err(StoreError::UnsupportedKdf { .. })
    ));
}

proptest! {
    #[test]
    fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Header::parse(Path::new("v"), &b);
    }
}
