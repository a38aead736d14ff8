use super::*;

#[test]
fn tenant_key_file_round_trip_is_0600_create_new_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenant.key");
    let k = TenantSecret::generate("Example.COM");
    assert_eq!(k.tenant(), "example.com");
    k.write_new(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = k.write_new(&path).unwrap_err().to_string();
    assert!(again.contains("exists already"), "{again}");
    let back = TenantSecret::load(&path).unwrap();
    assert_eq!(back.public(), k.public());
    assert_eq!(back.tenant(), "example.com");
    assert_eq!(format!("{back:?}"), "[redacted]");
    // An edited secret no longer matches its fingerprint line.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let last = lines.pop().unwrap();
    let flipped = if last.ends_with('0') { "1" } else { "0" };
    lines.push(format!("{}{flipped}", &last[..last.len() - 1]));
    let edited = dir.path().join("edited.key");
    std::fs::write(&edited, lines.join("\n")).unwrap();
    let e = TenantSecret::load(&edited).unwrap_err().to_string();
    assert!(e.contains("does not match"), "{e}");
}

#[test]
fn flags_overlay_and_leaf_round_trip_and_bind_their_row() {
    let g = Key::from_bytes([7; 32]);
    let vid = [1u8; 16];
    let o = seal_flags(&g, 9, [3; 32], &vid, 4, 5, "RS $Junk");
    assert_eq!(flags_key_id(&o), Some(9));
    assert_eq!(open_flags(&g, &vid, 4, 5, &o).as_deref(), Some("RS $Junk"));
    assert_eq!(open_flags(&g, &vid, 4, 6, &o), None);
    let base = Key::from_bytes([8; 32]);
    let l = seal_leaf(&base, [0; 12], &vid, 4, 5, &[9; 32]);
    assert_eq!(open_leaf(&base, &vid, 4, 5, &l), Some([9; 32]));
    assert_eq!(open_leaf(&base, &vid, 3, 5, &l), None);
}

// === the volume with a customer-key tenant ===

use crate::volume::tests::{
    addr, body, check_no_markers, fixture, open, open_again, put, read_all,
};
use crate::{Finished, StoreError};
use mailferry_core::profile::CommitSettings;
use mailferry_core::{Flags, FolderName, SourceId};

fn events(v: &Volume, event: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    mailferry_audit::read_records(v.dir().join(crate::audit_trail::AUDIT_FILE))
        .unwrap()
        .into_iter()
        .filter(|e| e.event == event)
        .map(|e| e.data)
        .collect()
}

const SECRET_FOLDER: &str = "Zephyrine-Projects";

fn marked_body(n: u8) -> Vec<u8> {
    let mut b =
        format!("Subject: quasar-subject-{n}\r\n\r\nquasar-body-marker-{n}\r\n").into_bytes();
    b.extend(body(70_000, n));
    b
}

#[test]
fn customer_key_mailbox_is_write_only_for_the_operator() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let key_path = tmp.path().join("tenant.key");
    let tk = TenantSecret::generate("example.com");
    tk.write_new(&key_path).unwrap();
    let mb = addr("alice@example.com");
    let mut v = open(&f);
    let out = v.register_tenant_key("example.com", &tk.public()).unwrap();
    assert!(out.finished);
    assert_eq!(out.mailboxes, 0);
    assert_eq!(
        events(&v, "tenant.key.registered")[0]["fingerprint"],
        tk.public().fingerprint()
    );
    // A second registration is refused.
    assert!(v.register_tenant_key("example.com", &tk.public()).is_err());

    // Pass 1: two messages.
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    put(&mut s, 1, SECRET_FOLDER, "1", &marked_body(1)).unwrap();
    put(&mut s, 2, "INBOX", "2", &marked_body(2)).unwrap();
    assert_eq!(s.commit().unwrap().len(), 2);
    drop(s);
    // Pass 2: a new session is a new generation, and still deduplicates.
    let mut s = v.session(&mb, &CommitSettings::default()).unwrap();
    assert_eq!(
        put(&mut s, 1, SECRET_FOLDER, "1", &marked_body(1)).unwrap(),
        Finished::Duplicate { seq: 1 }
    );
    put(&mut s, 2, "INBOX", "3", &marked_body(3)).unwrap();
    s.commit().unwrap();
    // Mirror pass: FLAGS of a message of generation 1, DELETE of another.
    s.set_flags(
        3,
        FolderName::parse(SECRET_FOLDER).unwrap(),
        SourceId::parse("1").unwrap(),
        Flags::from_maildir("FS").unwrap(),
    )
    .unwrap();
    s.delete(
        4,
        FolderName::parse("INBOX").unwrap(),
        SourceId::parse("2").unwrap(),
    )
    .unwrap();
    let o = s.commit_outcome().unwrap();
    assert!(o.rejected.is_empty(), "{o:?}");
    assert_eq!(
        o.acks.iter().map(|a| a.1).collect::<Vec<_>>(),
        [mailferry_core::frame::AckStatus::Applied; 2]
    );
    drop(s);

    // Without the tenant key: verify authenticates the ciphertext, listing is refused.
    let rep = v.verify().unwrap();
    assert!(rep.damaged.is_empty(), "{rep:?}");
    assert_eq!((rep.messages_checked, rep.sealed_for_tenant), (2, 2));
    let (root_sealed, n) = v.receipt_root_incremental(&mb).unwrap();
    assert_eq!(n, 2);
    match v.list_messages(&mb) {
        Err(StoreError::CustomerKeyNeeded {
            tenant,
            fingerprint,
            ..
        }) => {
            assert_eq!(tenant, "example.com");
            assert_eq!(fingerprint, tk.public().fingerprint());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(events(&v, "access.refused").len(), 1);
    assert_eq!(
        v.key_level(&mb).unwrap(),
        KeyLevel::Customer {
            tenant: "example.com".into(),
            fingerprint: tk.public().fingerprint()
        }
    );
    v.compact().unwrap();
    let v = open_again(v, &f);
    check_no_markers(
        &f.dir,
        &[
            b"quasar-subject",
            b"quasar-body-marker",
            SECRET_FOLDER.as_bytes(),
        ],
        false,
    );

    // The wrong tenant key is refused and unlocks nothing.
    let wrong = TenantSecret::generate("example.com");
    let e = v
        .unlock(ReadAccess::TenantKey(wrong))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&tk.public().fingerprint()), "{e}");
    assert!(v.list_messages(&mb).is_err());

    // A grant made with the tenant key opens the mailbox until it expires.
    let gs = GrantSecret::generate();
    let bundle = v
        .grant_bundle(
            &mb,
            &TenantSecret::load(&key_path).unwrap(),
            &gs.public(),
            "g-1",
            4_000_000_000,
        )
        .unwrap();
    assert_eq!(bundle.keys.len(), 2);
    let expired = ReadAccess::Grant {
        secret: GrantSecret::from_bytes(*gs.to_bytes()),
        bundle: bundle.clone(),
        now: 4_000_000_000,
    };
    assert!(v.unlock(expired).is_err());
    let mut altered = bundle.clone();
    altered.expires += 1;
    assert!(v
        .unlock(ReadAccess::Grant {
            secret: GrantSecret::from_bytes(*gs.to_bytes()),
            bundle: altered,
            now: 1
        })
        .is_err());
    v.unlock(ReadAccess::Grant {
        secret: gs,
        bundle,
        now: 1,
    })
    .unwrap();
    let got: Vec<(String, String, Vec<u8>)> = v
        .list_messages(&mb)
        .unwrap()
        .into_iter()
        .map(|m| {
            let m = m.unwrap();
            (
                format!("{}/{}", m.meta.folder, m.meta.source_id),
                m.meta.flags.as_str().to_string(),
                read_all(&v, &m),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                format!("{SECRET_FOLDER}/1"),
                "FS".to_string(),
                marked_body(1)
            ),
            ("INBOX/3".to_string(), "RS".to_string(), marked_body(3)),
        ]
    );
    // The receipt recomputed from decrypted metadata equals the sealed leaves' root.
    assert_eq!(v.receipt_root(&mb).unwrap().0, root_sealed);
    let rep = v.verify().unwrap();
    assert!(rep.damaged.is_empty(), "{rep:?}");
    assert_eq!(rep.sealed_for_tenant, 0);

    // With the tenant key, a fresh open reads the same.
    let v = open_again(v, &f);
    v.unlock(ReadAccess::TenantKey(
        TenantSecret::load(&key_path).unwrap(),
    ))
    .unwrap();
    assert_eq!(v.list_messages(&mb).unwrap().len(), 2);
}

#[test]
fn converting_an_existing_tenant_resumes_after_a_stop_at_each_mailbox() {
    for stop in 0..=2 {
        let f = fixture();
        let (a, b) = (addr("ann@example.net"), addr("bob@example.net"));
        let v = open(&f);
        for (i, mb) in [&a, &b].into_iter().enumerate() {
            let mut s = v.session(mb, &CommitSettings::default()).unwrap();
            put(&mut s, 1, "INBOX", "1", &marked_body(i as u8)).unwrap();
            put(&mut s, 2, SECRET_FOLDER, "2", &marked_body(10 + i as u8)).unwrap();
            s.commit().unwrap();
        }
        v.rotate_mailbox(&a).unwrap();
        let tk = TenantSecret::generate("example.net");
        // Register without converting past `stop` mailboxes (a crash there).
        {
            let inner = &v.inner;
            let mut ix = inner.index().unwrap();
            let tid = ix
                .tenant_id_by_mac(&inner.keys.name_mac(b't', "example.net"))
                .unwrap()
                .unwrap();
            let ik = Key::random();
            let aad = keys::wrap_aad(AAD_CK_INDEX, &inner.volume_id, Some(tid));
            let row = TenantKeyRow {
                public: tk.public().0,
                fingerprint: tk.public().fingerprint(),
                index_key_wrapped: keys::wrap_key(&inner.keys.vmk, keys::random_nonce(), &aad, &ik),
            };
            ix.insert_tenant_key(tid, &row, 0, true).unwrap();
        }
        let partial = v.convert_tenant_until("example.net", Some(stop)).unwrap();
        assert_eq!(partial.finished, stop >= 2, "stop {stop}");
        // A session is refused while the conversion is unfinished.
        if !partial.finished {
            assert!(v.session(&a, &CommitSettings::default()).is_err());
        }
        let v = open_again(v, &f);
        let done = v.convert_tenant("example.net").unwrap();
        assert!(done.finished);
        assert!(v.list_messages(&a).is_err());
        let rep = v.verify().unwrap();
        assert!(rep.damaged.is_empty(), "{rep:?}");
        assert_eq!(rep.sealed_for_tenant, 4);
        // A second pass after the conversion deduplicates against converted rows.
        let mut s = v.session(&b, &CommitSettings::default()).unwrap();
        assert_eq!(
            put(&mut s, 1, "INBOX", "1", &marked_body(1)).unwrap(),
            Finished::Duplicate { seq: 1 }
        );
        drop(s);
        v.unlock(ReadAccess::TenantKey(tk)).unwrap();
        for (i, mb) in [&a, &b].into_iter().enumerate() {
            let got: Vec<Vec<u8>> = v
                .list_messages(mb)
                .unwrap()
                .into_iter()
                .map(|m| read_all(&v, &m.unwrap()))
                .collect();
            assert_eq!(
                got,
                vec![marked_body(i as u8), marked_body(10 + i as u8)],
                "stop {stop}"
            );
        }
    }
}

// === vectors (docs/vectors/volume/customer-key.json) ===

fn fixed(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// Every customer-key value from fixed inputs, as the spec's vector file holds them.
fn customer_key_vectors() -> serde_json::Value {
    let volume_id: [u8; 16] = std::array::from_fn(|i| 0x40 + i as u8);
    let tenant = TenantSecret::from_bytes("example.com", fixed(0x70));
    let public = tenant.public();
    let mailbox_key = Key::from_bytes(fixed(0xa0));
    let (mailbox_row, key_id, message_id) = (3u64, 2u32, 7u64);
    let aad = ck_wrap_aad(&volume_id, mailbox_row, key_id);
    let wrapped =
        wrap_to_public_with(&public.0, &fixed(0x90), INFO_CK_WRAP, &aad, &mailbox_key).unwrap();
    let grant = GrantSecret::from_bytes(fixed(0xb0));
    let gaad = grant_aad(&volume_id, mailbox_row, key_id, "g-21", 1_900_000_000);
    let granted = wrap_to_public_with(
        &grant.public().0,
        &fixed(0xc0),
        INFO_GRANT,
        &gaad,
        &mailbox_key,
    )
    .unwrap();
    let index_key = Key::from_bytes(fixed(0xd0));
    let base = mailbox_index_key(&index_key, mailbox_row);
    let leaf = mailferry_audit::merkle::leaf("INBOX/1", &"ab".repeat(32));
    let leaf_enc = seal_leaf(
        &base,
        [0x11; 12],
        &volume_id,
        mailbox_row,
        message_id,
        &leaf,
    );
    let flags = seal_flags(
        &mailbox_key,
        key_id,
        fixed(0xe0),
        &volume_id,
        mailbox_row,
        message_id,
        "FS $Junk",
    );
    let mut dedup_sha = [0u8; 32];
    dedup_sha.copy_from_slice(&fixed(0x20));
    serde_json::json!({
        "inputs": {
            "volume_id": hex::encode(volume_id),
            "tenant": "example.com",
            "tenant_secret": hex::encode(fixed(0x70)),
            "mailbox_key": hex::encode(fixed(0xa0)),
            "mailbox_row": mailbox_row,
            "key_id": key_id,
            "message_id": message_id,
            "ephemeral_secret_ck": hex::encode(fixed(0x90)),
            "grant_secret": hex::encode(fixed(0xb0)),
            "grant_id": "g-21",
            "grant_expires": 1_900_000_000u64,
            "ephemeral_secret_grant": hex::encode(fixed(0xc0)),
            "tenant_index_key": hex::encode(fixed(0xd0)),
            "leaf_item": "INBOX/1",
            "leaf_sha256": "ab".repeat(32),
            "leaf_nonce": hex::encode([0x11u8; 12]),
            "flags": "FS $Junk",
            "flags_salt": hex::encode(fixed(0xe0)),
            "dedup_folder": "INBOX",
            "dedup_source_id": "1",
            "dedup_sha256": hex::encode(dedup_sha),
        },
        "tenant_public": hex::encode(public.0),
        "fingerprint": public.fingerprint(),
        "ck_wrap_aad": hex::encode(&aad),
        "ck_wrapped": hex::encode(&wrapped),
        "grant_public": grant.public().to_hex(),
        "grant_aad": hex::encode(&gaad),
        "grant_wrapped": hex::encode(&granted),
        "mailbox_index_key": hex::encode(base.expose()),
        "dedup": hex::encode(keys::dedup_key(&keys::dedup_mac_key(&base), "INBOX", "1", &dedup_sha)),
        "locator": hex::encode(keys::locator(&keys::locator_mac_key(&base), "INBOX", "1")),
        "leaf_enc": hex::encode(&leaf_enc),
        "flags_enc": hex::encode(&flags),
    })
}

#[test]
fn customer_key_vectors_match_docs() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/vectors/volume/customer-key.json");
    let got = customer_key_vectors();
    if std::env::var_os("MAILFERRY_WRITE_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        got,
        want,
        "recomputed customer-key vectors differ from {}",
        path.display()
    );
    // And they open again with the private halves.
    let h = |k: &str| hex::decode(want[k].as_str().unwrap()).unwrap();
    let k = unwrap_with_secret(
        &fixed(0x70),
        INFO_CK_WRAP,
        &h("ck_wrap_aad"),
        &h("ck_wrapped"),
    )
    .unwrap();
    assert_eq!(k.expose(), &fixed(0xa0));
    let k = unwrap_with_secret(
        &fixed(0xb0),
        INFO_GRANT,
        &h("grant_aad"),
        &h("grant_wrapped"),
    )
    .unwrap();
    assert_eq!(k.expose(), &fixed(0xa0));
    assert!(unwrap_with_secret(
        &fixed(0x71),
        INFO_CK_WRAP,
        &h("ck_wrap_aad"),
        &h("ck_wrapped")
    )
    .is_none());
}
