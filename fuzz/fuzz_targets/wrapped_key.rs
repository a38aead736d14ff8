//! Wrapped tenant/mailbox key (`nonce || ciphertext || tag`): any bytes and AAD either
//! unwrap or are refused, never panic. Input: AAD length (1 byte), AAD, wrapped key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry_store::keys::{unwrap_key, Key};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize).min(rest.len());
    let (aad, wrapped) = rest.split_at(n);
    let kek = Key::from_bytes([0x42; 32]);
    let _ = unwrap_key(&kek, aad, wrapped);
});
