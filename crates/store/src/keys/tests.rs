use super::*;

#[test]
fn key_debug_is_redacted() {
    let k = Key::from_bytes([7; 32]);
    assert_eq!(format!("{k:?}"), "[redacted]");
}

#[test]
fn hkdf_matches_rfc5869_shape() {
    // RFC 5869 test case 1 (first 32 bytes of OKM).
    let ikm = [0x0b; 22];
    let salt: Vec<u8> = (0x00..=0x0c).collect();
    let info: Vec<u8> = (0xf0..=0xf9).collect();
    let okm = hkdf32(&ikm, &salt, &info);
    assert_eq!(
        hex::encode(okm.expose()),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
    );
}

#[test]
fn wrap_binds_aad() {
    let kek = Key::random();
    let k = Key::random();
    let w = wrap_key(&kek, random_nonce(), b"a", &k);
    assert_eq!(unwrap_key(&kek, b"a", &w).unwrap().expose(), k.expose());
    assert!(unwrap_key(&kek, b"b", &w).is_none());
    assert!(unwrap_key(&Key::random(), b"a", &w).is_none());
    assert!(unwrap_key(&kek, b"a", &w[..20]).is_none());
}

#[test]
fn names_round_trip_and_bind_kind() {
    let vk = VolumeKeys::new(Key::random());
    let id = [1u8; 16];
    let s = vk.seal_name(&id, b'm', "a@b.example");
    assert_eq!(vk.open_name(&id, b'm', &s).as_deref(), Some("a@b.example"));
    assert!(vk.open_name(&id, b't', &s).is_none());
    assert!(vk.open_name(&[2; 16], b'm', &s).is_none());
    assert_ne!(vk.name_mac(b'm', "x"), vk.name_mac(b't', "x"));
}

mod decoders {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Wrapped keys and encrypted index metadata from a hostile or damaged index:
        /// arbitrary bytes are refused (None / Err), never a panic, never a key.
        #[test]
        fn wrapped_keys_and_metadata_never_panic(
            b in proptest::collection::vec(any::<u8>(), 0..200),
            mailbox in any::<u64>(),
            message in any::<u64>(),
        ) {
            let k = Key::from_bytes([9; 32]);
            prop_assert!(unwrap_key(&k, b"aad", &b).is_none());
            prop_assert!(open_small(&k, b"aad", &b).is_none());
            prop_assert!(open_meta(&k, &[1; 16], mailbox, message, &b).is_err());
        }
    }

    #[test]
    fn a_wrapped_key_opens_only_with_its_aad() {
        let kek = Key::from_bytes([1; 32]);
        let key = Key::from_bytes([2; 32]);
        let w = wrap_key(&kek, random_nonce(), b"right", &key);
        assert_eq!(
            unwrap_key(&kek, b"right", &w).unwrap().expose(),
            key.expose()
        );
        assert!(unwrap_key(&kek, b"wrong", &w).is_none());
    }
}
