//! Test vectors of docs/vectors/volume/: recomputed from their fixed inputs and compared
//! byte for byte, then decrypted. `MAILFERRY_WRITE_VECTORS=1 cargo test -p
//! mailferry-store vectors` rewrites them (only when the format changes on purpose).

use crate::header::{Header, KeySlot, ROLE_RECOVERY};
use crate::keys::{self, Key};
use crate::segment::{self, RecordHeader};
use mailferry_core::{Flags, FolderName, MessageMeta, SourceId};
use serde_json::{json, Value};
use std::path::PathBuf;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/volume")
}

fn pattern(start: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| start.wrapping_add(i as u8)).collect()
}

fn arr<const N: usize>(v: Vec<u8>) -> [u8; N] {
    v.try_into().expect("fixed length")
}

/// Recomputes every vector from the fixed inputs.
fn compute() -> (Value, Vec<u8>) {
    let key_file: [u8; 32] = arr(pattern(0x00, 32));
    let kdf_salt: [u8; 32] = arr(pattern(0x20, 32));
    let volume_id: [u8; 16] = arr(pattern(0x40, 16));
    let vmk = Key::from_bytes(arr(pattern(0x50, 32)));
    let vmk_nonce: [u8; 12] = arr(pattern(0x70, 12));
    let tenant_id = 1u64;
    let tenant_key = Key::from_bytes(arr(pattern(0x80, 32)));
    let tenant_nonce: [u8; 12] = arr(pattern(0xa0, 12));
    let mailbox_id = 3u64;
    let mailbox_key = Key::from_bytes(arr(pattern(0xb0, 32)));
    let mailbox_nonce: [u8; 12] = arr(pattern(0xd0, 12));
    let message_id = 7u64;
    let message_salt: [u8; 32] = arr(pattern(0xe0, 32));
    let plain: Vec<u8> = (0..65536 + 100).map(|i| (i % 251) as u8).collect();
    let sha: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &plain)
        .as_ref()
        .try_into()
        .unwrap();

    let kek = keys::kek_from_key_file(&key_file, &kdf_salt);
    let header = Header::with_key_file(volume_id, &key_file, &vmk, kdf_salt, vmk_nonce);
    // Version 2 additions: a passphrase slot, a recovery slot, a rotated mailbox key.
    let passphrase = b"correct horse battery staple";
    let argon2 = keys::Argon2Params {
        m_kib: 256,
        t: 2,
        p: 1,
    };
    let pass_salt: [u8; 32] = arr(pattern(0x10, 32));
    let pass_nonce: [u8; 12] = arr(pattern(0x30, 12));
    let recovery_key: [u8; 32] = arr(pattern(0x90, 32));
    let recovery_salt: [u8; 32] = arr(pattern(0x38, 32));
    let recovery_nonce: [u8; 12] = arr(pattern(0x60, 12));
    let pass_kek = keys::kek_from_passphrase(passphrase, &pass_salt, &argon2).unwrap();
    let header3 = Header {
        version: crate::header::VERSION,
        volume_id,
        slots: vec![
            KeySlot::passphrase_with(&volume_id, passphrase, &argon2, &vmk, pass_salt, pass_nonce)
                .unwrap(),
            KeySlot::key_file_with(
                &volume_id,
                ROLE_RECOVERY,
                &recovery_key,
                &vmk,
                recovery_salt,
                recovery_nonce,
            ),
        ],
    };
    let mailbox_key_2 = Key::from_bytes(arr(pattern(0xc0, 32)));
    let mailbox_nonce_2: [u8; 12] = arr(pattern(0xf0, 12));
    let tenant_wrapped = keys::wrap_key(
        &vmk,
        tenant_nonce,
        &keys::wrap_aad(keys::AAD_TENANT, &volume_id, Some(tenant_id)),
        &tenant_key,
    );
    let mailbox_wrapped = keys::wrap_key(
        &tenant_key,
        mailbox_nonce,
        &keys::wrap_aad(keys::AAD_MAILBOX, &volume_id, Some(mailbox_id)),
        &mailbox_key,
    );
    let mailbox_wrapped_2 = keys::wrap_key(
        &tenant_key,
        mailbox_nonce_2,
        &keys::mailbox_wrap_aad(&volume_id, mailbox_id, 2),
        &mailbox_key_2,
    );
    let message_key = keys::message_key(&mailbox_key, &message_salt);
    let meta = MessageMeta {
        folder: FolderName::parse("INBOX").unwrap(),
        source_id: SourceId::parse("1700000000.M1P1.host").unwrap(),
        flags: Flags::from_maildir("SR").unwrap(),
        internal_date: 1_700_000_000,
        size: plain.len() as u64,
        sha256: hex::encode(sha),
    };
    let meta_enc = keys::seal_meta(&message_key, &volume_id, mailbox_id, message_id, &meta);
    let dedup = keys::dedup_key(
        &keys::dedup_mac_key(&mailbox_key),
        meta.folder.as_str(),
        meta.source_id.as_str(),
        &sha,
    );
    // Schema 4 (mirror passes): the locator, and metadata sealed again with new flags
    // under the same meta key and a (here fixed, normally random) nonce.
    let locator = keys::locator(
        &keys::locator_mac_key(&mailbox_key),
        meta.folder.as_str(),
        meta.source_id.as_str(),
    );
    let reseal_nonce: [u8; 12] = arr(pattern(0x44, 12));
    let mut meta_flagged = meta.clone();
    meta_flagged.flags = Flags::from_maildir("FS").unwrap();
    let meta_resealed = keys::seal_meta_with(
        &message_key,
        reseal_nonce,
        &volume_id,
        mailbox_id,
        message_id,
        &meta_flagged,
    );
    // Keywords (issue 17): the same reseal with flags that carry IMAP keywords, so the
    // keywords are inside the sealed JSON and nowhere else.
    let reseal_kw_nonce: [u8; 12] = arr(pattern(0x54, 12));
    let mut meta_keywords = meta.clone();
    meta_keywords.flags = Flags::new("S", ["$Junk", "ProjectX"]).unwrap();
    let meta_resealed_keywords = keys::seal_meta_with(
        &message_key,
        reseal_kw_nonce,
        &volume_id,
        mailbox_id,
        message_id,
        &meta_keywords,
    );
    let rh = RecordHeader {
        key_id: 1,
        message_id,
        mailbox_id,
        salt: message_salt,
        plain_len: plain.len() as u64,
        chunk_count: 2,
    };
    let record = segment::seal_record(&rh, &volume_id, &mailbox_key, &plain);
    let h = |b: &[u8]| hex::encode(b);
    let v = json!({
        "about": "mailferry volume format v2 test vectors (docs/volume-format.md). Inputs are fixed byte patterns; every other field is derived. The 2-chunk record is in message-record.hex.",
        "inputs": {
            "key_file": h(&key_file),
            "kdf_salt": h(&kdf_salt),
            "volume_id": h(&volume_id),
            "vmk": h(vmk.expose()),
            "vmk_wrap_nonce": h(&vmk_nonce),
            "tenant_id": tenant_id,
            "tenant_key": h(tenant_key.expose()),
            "tenant_wrap_nonce": h(&tenant_nonce),
            "mailbox_id": mailbox_id,
            "mailbox_key": h(mailbox_key.expose()),
            "mailbox_wrap_nonce": h(&mailbox_nonce),
            "message_id": message_id,
            "message_key_id": 1,
            "message_salt": h(&message_salt),
            "plaintext": "65636 bytes, byte i = i mod 251",
            "passphrase": std::str::from_utf8(passphrase).unwrap(),
            "argon2id": {"m_kib": argon2.m_kib, "t": argon2.t, "p": argon2.p},
            "passphrase_salt": h(&pass_salt),
            "passphrase_wrap_nonce": h(&pass_nonce),
            "recovery_key": h(&recovery_key),
            "recovery_salt": h(&recovery_salt),
            "recovery_wrap_nonce": h(&recovery_nonce),
            "mailbox_key_2": h(mailbox_key_2.expose()),
            "mailbox_wrap_nonce_2": h(&mailbox_nonce_2),
            "meta": serde_json::to_value(&meta).unwrap(),
            "meta_reseal_nonce": h(&reseal_nonce),
            "meta_reseal_flags": meta_flagged.flags.as_str(),
            "meta_reseal_keywords_nonce": h(&reseal_kw_nonce),
            "meta_reseal_keywords_flags": meta_keywords.flags.as_str(),
        },
        "derived": {
            "kek": h(kek.expose()),
            "header": h(&header.encode()),
            "passphrase_kek": h(pass_kek.expose()),
            "header_passphrase_recovery": h(&header3.encode()),
            "mailbox_key_2_wrapped": h(&mailbox_wrapped_2),
            "tenant_key_wrapped": h(&tenant_wrapped),
            "mailbox_key_wrapped": h(&mailbox_wrapped),
            "message_key": h(message_key.expose()),
            "meta_key": h(keys::meta_key(&message_key).expose()),
            "meta_enc": h(&meta_enc),
            "dedup": h(&dedup),
            "locator": h(&locator),
            "meta_enc_resealed": h(&meta_resealed),
            "meta_enc_resealed_keywords": h(&meta_resealed_keywords),
            "plaintext_sha256": h(&sha),
            "record_len": record.len(),
            "record_sha256": h(ring::digest::digest(&ring::digest::SHA256, &record).as_ref()),
        }
    });
    (v, record)
}

#[test]
fn vectors_match_docs() {
    let (v, record) = compute();
    let dir = vectors_dir();
    let json_path = dir.join("vectors.json");
    let rec_path = dir.join("message-record.hex");
    if std::env::var_os("MAILFERRY_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&json_path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
        let hexed: String = hex::encode(&record)
            .as_bytes()
            .chunks(128)
            .map(|l| std::str::from_utf8(l).unwrap().to_string() + "\n")
            .collect();
        std::fs::write(&rec_path, hexed).unwrap();
    }
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("vectors.json exists"))
            .unwrap();
    assert_eq!(
        want, v,
        "docs/vectors/volume/vectors.json differs from what this build computes"
    );
    let rec_hex: String = std::fs::read_to_string(&rec_path)
        .expect("message-record.hex exists")
        .split_whitespace()
        .collect();
    let want_rec = hex::decode(rec_hex).unwrap();
    assert_eq!(want_rec.len(), 72 + 65536 + 100 + 32);
    assert!(
        want_rec == record,
        "message-record.hex differs from what this build computes"
    );
}

#[test]
fn vectors_decrypt() {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(vectors_dir().join("vectors.json")).unwrap())
            .unwrap();
    let hx = |p: &str| hex::decode(v.pointer(p).unwrap().as_str().unwrap()).unwrap();
    let key_file: [u8; 32] = arr(hx("/inputs/key_file"));
    let volume_id: [u8; 16] = arr(hx("/inputs/volume_id"));
    // Header → VMK → tenant key → mailbox key, all from the stored bytes.
    let header = Header::parse(std::path::Path::new("vector"), &hx("/derived/header")).unwrap();
    assert_eq!(header.volume_id, volume_id);
    let vmk = header
        .unlock(std::path::Path::new("vector"), &key_file)
        .unwrap();
    assert_eq!(&vmk.expose()[..], &hx("/inputs/vmk")[..]);
    let tenant_key = keys::unwrap_key(
        &vmk,
        &keys::wrap_aad(keys::AAD_TENANT, &volume_id, Some(1)),
        &hx("/derived/tenant_key_wrapped"),
    )
    .unwrap();
    let mailbox_key = keys::unwrap_key(
        &tenant_key,
        &keys::wrap_aad(keys::AAD_MAILBOX, &volume_id, Some(3)),
        &hx("/derived/mailbox_key_wrapped"),
    )
    .unwrap();
    assert_eq!(&mailbox_key.expose()[..], &hx("/inputs/mailbox_key")[..]);
    let rec_hex: String = std::fs::read_to_string(vectors_dir().join("message-record.hex"))
        .unwrap()
        .split_whitespace()
        .collect();
    let record = hex::decode(rec_hex).unwrap();
    let (h, plain) = segment::open_record(&volume_id, &mailbox_key, &record).unwrap();
    assert_eq!((h.message_id, h.mailbox_id, h.chunk_count), (7, 3, 2));
    assert!(plain.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    assert_eq!(plain.len(), 65636);
    let mk = keys::message_key(&mailbox_key, &h.salt);
    let meta = keys::open_meta(&mk, &volume_id, 3, 7, &hx("/derived/meta_enc")).unwrap();
    assert_eq!(meta.source_id.as_str(), "1700000000.M1P1.host");
    assert_eq!(
        meta.sha256,
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &plain))
    );
    // Schema 4: the re-sealed metadata opens under the same message key, with the new
    // flags and the nonce stored in front.
    let resealed = hx("/derived/meta_enc_resealed");
    let again = keys::open_meta(&mk, &volume_id, 3, 7, &resealed).unwrap();
    assert_eq!(again.flags.as_str(), "FS");
    assert_eq!(again.sha256, meta.sha256);
    assert_eq!(resealed[..12], hx("/inputs/meta_reseal_nonce")[..]);
    // Keywords ride in the sealed flags string; an older reader of this JSON sees a
    // string as before.
    let kw = hx("/derived/meta_enc_resealed_keywords");
    let with_kw = keys::open_meta(&mk, &volume_id, 3, 7, &kw).unwrap();
    assert_eq!(with_kw.flags.as_str(), "S $Junk ProjectX");
    assert_eq!(
        with_kw.flags.keywords().collect::<Vec<_>>(),
        ["$Junk", "ProjectX"]
    );
    assert!(!kw.windows(5).any(|w| w == b"$Junk"));
    // Version 2: passphrase and recovery slots, generation-2 mailbox key.
    let h3 = Header::parse(
        std::path::Path::new("vector"),
        &hx("/derived/header_passphrase_recovery"),
    )
    .unwrap();
    let pass = crate::credential::Secret::Passphrase(zeroize::Zeroizing::new(
        v.pointer("/inputs/passphrase")
            .unwrap()
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    ));
    let (k, slot) = h3
        .unlock_with(std::path::Path::new("vector"), &pass)
        .unwrap();
    assert_eq!((&k.expose()[..], slot), (&hx("/inputs/vmk")[..], 0));
    let rk = crate::credential::Secret::RecoveryKey(zeroize::Zeroizing::new(arr(hx(
        "/inputs/recovery_key",
    ))));
    let (k, slot) = h3.unlock_with(std::path::Path::new("vector"), &rk).unwrap();
    assert_eq!((&k.expose()[..], slot), (&hx("/inputs/vmk")[..], 1));
    let mk2 = keys::unwrap_key(
        &tenant_key,
        &keys::mailbox_wrap_aad(&volume_id, 3, 2),
        &hx("/derived/mailbox_key_2_wrapped"),
    )
    .unwrap();
    assert_eq!(&mk2.expose()[..], &hx("/inputs/mailbox_key_2")[..]);
    // Generation 2 does not unwrap under generation 1's AAD.
    assert!(keys::unwrap_key(
        &tenant_key,
        &keys::mailbox_wrap_aad(&volume_id, 3, 1),
        &hx("/derived/mailbox_key_2_wrapped"),
    )
    .is_none());
    // A wrong key file is refused.
    let mut wrong = key_file;
    wrong[0] ^= 1;
    assert!(matches!(
        header.unlock(std::path::Path::new("vector"), &wrong),
        Err(crate::StoreError::WrongKey { .. })
    ));
}
