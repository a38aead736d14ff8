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
