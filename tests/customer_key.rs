//! Issue 21, customer keys: a volume operator holding only the volume key stores,
//! checks, compacts, replicates and shreds a customer-key tenant's mail through the real
//! binary, and cannot read it; the tenant's key exports it byte for byte.

use crate::util::*;
use std::path::Path;

const MARKERS: [&str; 3] = ["QZSUBJ21", "QZBODY21", "Zephyrine21"];

/// A Maildir++ source with an INBOX and a folder whose name is a marker.
fn source(root: &Path) {
    for (dir, n) in [(root.to_path_buf(), 3), (root.join(".Zephyrine21"), 2)] {
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for i in 0..n {
            std::fs::write(
                dir.join("cur")
                    .join(format!("17000000{i:02}.M{i}P1.host:2,S")),
                format!("Subject: QZSUBJ21 {i}\r\nFrom: a@example.org\r\n\r\nQZBODY21 {i}\r\n"),
            )
            .unwrap();
        }
    }
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", describe(o));
}

fn vol(env: &Env, args: &[&str]) -> std::process::Output {
    run(mailferry()
        .args(args)
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()))
}

fn no_markers(what: &str, files: Vec<(std::path::PathBuf, Vec<u8>)>) {
    assert!(!files.is_empty(), "{what}: no files");
    for (p, bytes) in files {
        for m in MARKERS {
            assert!(
                !contains(&bytes, m.as_bytes()),
                "{what}: {} holds {m}",
                p.display()
            );
        }
    }
}

#[test]
fn issue21_customer_key_tenant_is_write_only_for_the_volume_operator() {
    let env = Env::new();
    init_volume(&env);
    let src = env.path("src");
    source(&src);
    let tkey = env.path("example.com.key");
    let o = vol(
        &env,
        &[
            "tenant",
            "key",
            "init",
            "--tenant",
            "example.com",
            "--out",
            tkey.to_str().unwrap(),
        ],
    );
    ok(&o);
    let fp = String::from_utf8_lossy(&o.stdout)
        .split("fingerprint ")
        .nth(1)
        .unwrap()
        .chars()
        .take(32)
        .collect::<String>();

    // Two passes through the real move: the second finds only duplicates.
    let (code, _, o) = move_maildir(&env, &src, "alice@example.com");
    assert_eq!(code, 0, "{}", describe(&o));
    let (code, report, o) = move_maildir(&env, &src, "alice@example.com");
    assert_eq!(code, 0, "{}", describe(&o));
    let mut out_text = format!(
        "{}{}",
        describe(&o),
        report.map(|r| r.to_string()).unwrap_or_default()
    );

    // The operator's commands work without the tenant key.
    let o = vol(&env, &["volume", "verify", "--json"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["messages_checked"], 5, "{v}");
    assert_eq!(v["sealed_for_tenant"], 5, "{v}");
    out_text += &describe(&o);
    let o = vol(&env, &["volume", "compact"]);
    ok(&o);
    out_text += &describe(&o);
    let replica = env.path("replica");
    let o = run(mailferry()
        .args(["volume", "replicate", "--volume"])
        .arg(env.volume())
        .arg("--to")
        .arg(&replica));
    ok(&o);
    out_text += &describe(&o);

    // Export without the tenant key: refused, naming the tenant and the fingerprint.
    let refused_out = env.path("refused");
    let o = export(&env, "alice@example.com", &refused_out);
    assert!(!o.status.success(), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("example.com") && err.contains(&fp), "{err}");
    out_text += &describe(&o);
    let audit = std::fs::read_to_string(env.volume().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"access.refused\""), "{audit}");
    assert!(audit.contains("\"tenant.key.registered\""), "{audit}");
    assert!(!audit.contains("\"tenant.key.used\""), "{audit}");

    // A wrong tenant key is refused clearly.
    let wrong = env.path("wrong.key");
    ok(&run(mailferry()
        .args(["tenant", "key", "init", "--tenant", "example.com", "--out"])
        .arg(&wrong)));
    let o = export_with(
        &env,
        "alice@example.com",
        &env.path("wrong-out"),
        Some(&wrong),
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&fp),
        "{}",
        describe(&o)
    );

    // No plaintext marker anywhere the operator reaches.
    no_markers("volume", all_files(&env.volume()));
    no_markers("replica", all_files(&replica));
    for m in MARKERS {
        assert!(
            !out_text.contains(m),
            "operator output holds {m}:\n{out_text}"
        );
    }

    // With the tenant key the export is byte-identical to the source.
    let out = env.path("export");
    let o = export_with(&env, "alice@example.com", &out, Some(&tkey));
    ok(&o);
    let got: Vec<Vec<u8>> = read_maildir(&out).into_values().map(|(_, b)| b).collect();
    let want: Vec<Vec<u8>> = read_maildir(&src).into_values().map(|(_, b)| b).collect();
    let (mut got, mut want) = (got, want);
    got.sort();
    want.sort();
    assert_eq!(got.len(), 5);
    assert_eq!(got, want);
    assert!(out.join(".Zephyrine21").exists());
    // The read with the tenant's key is in the volume's trail, with the key's fingerprint.
    let audit = std::fs::read_to_string(env.volume().join("audit.jsonl")).unwrap();
    let used: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"tenant.key.used\""))
        .collect();
    assert_eq!(used.len(), 1, "{audit}");
    assert!(used[0].contains(&fp), "{}", used[0]);

    // Shredding needs no tenant key either.
    let o = vol(&env, &["volume", "shred", "--mailbox", "alice@example.com"]);
    ok(&o);
}

// === rotation, re-encryption, reconciliation, conversion crash ===

const TENANT: &str = "example.com";
const ALICE: &str = "alice@example.com";

/// `tenant key init --json` for TENANT into the test volume; returns (key file,
/// fingerprint). Checks the JSON output against its schema snapshot.
fn tenant_key_init(env: &Env) -> (std::path::PathBuf, String) {
    let tkey = env.path("example.com.key");
    let o = vol(
        env,
        &[
            "tenant",
            "key",
            "init",
            "--tenant",
            TENANT,
            "--out",
            tkey.to_str().unwrap(),
            "--json",
        ],
    );
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_json_schema("tenant-key-init.schema.json", &v);
    assert_eq!(v["tenant"], TENANT, "{v}");
    assert_eq!(v["registered"], true, "{v}");
    assert_eq!(v["out"], tkey.to_str().unwrap(), "{v}");
    let fp = v["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fp.len(), 32, "{v}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&tkey).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(std::fs::read_to_string(&tkey).unwrap().contains(&fp));
    (tkey, fp)
}

/// A volume with ALICE moved into a customer-key TENANT: (env, source, key file, fingerprint).
fn customer_key_volume() -> (Env, std::path::PathBuf, std::path::PathBuf, String) {
    let env = Env::new();
    init_volume(&env);
    let src = env.path("src");
    source(&src);
    let (tkey, fp) = tenant_key_init(&env);
    let (code, _, o) = move_maildir(&env, &src, ALICE);
    assert_eq!(code, 0, "{}", describe(&o));
    (env, src, tkey, fp)
}

/// `args` on the test volume, with `--tenant-key` if `tkey` is given.
fn with_key(env: &Env, args: &[&str], tkey: Option<&Path>) -> std::process::Output {
    let mut c = mailferry();
    c.args(args)
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key());
    if let Some(k) = tkey {
        c.arg("--tenant-key").arg(k);
    }
    run(&mut c)
}

/// A refusal for want of the tenant key: exit 1, naming the tenant, its key's
/// fingerprint and the flag that fixes it.
fn refused(o: &std::process::Output, fp: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", describe(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(TENANT) && err.contains(fp) && err.contains("--tenant-key"),
        "{}",
        describe(o)
    );
}

fn refusals(env: &Env) -> usize {
    std::fs::read_to_string(env.volume().join("audit.jsonl"))
        .unwrap()
        .matches("\"access.refused\"")
        .count()
}

/// Every message body of a Maildir tree, with its folder, sorted.
fn bodies(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = read_maildir(root)
        .into_iter()
        .map(|((folder, _), (_, b))| (folder, b))
        .collect();
    v.sort();
    v
}

fn export_with(env: &Env, mailbox: &str, out: &Path, tkey: Option<&Path>) -> std::process::Output {
    let out = out.to_str().unwrap();
    with_key(
        env,
        &[
            "export",
            "--mailbox",
            mailbox,
            "--format",
            "maildir",
            "--out",
            out,
        ],
        tkey,
    )
}

#[test]
fn issue21_customer_key_rotation_and_reencryption_through_the_binary() {
    let (env, src, tkey, fp) = customer_key_volume();
    let tkey = Some(tkey.as_path());

    // --mailbox: a new generation wrapped to the public key; no tenant key needed.
    let o = with_key(&env, &["volume", "rotate", "--mailbox", ALICE], None);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("new messages use key id"));

    // --tenant and --reencrypt read metadata or messages: refused without the key.
    for args in [
        &["volume", "rotate", "--tenant", TENANT][..],
        &["volume", "rotate", "--mailbox", ALICE, "--reencrypt"][..],
        &["volume", "rotate", "--tenant", TENANT, "--reencrypt"][..],
    ] {
        refused(&with_key(&env, args, None), &fp);
    }

    // With the tenant key each works.
    let o = with_key(&env, &["volume", "rotate", "--tenant", TENANT], tkey);
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("5 message(s)"),
        "{}",
        describe(&o)
    );
    let o = with_key(
        &env,
        &["volume", "rotate", "--mailbox", ALICE, "--reencrypt"],
        tkey,
    );
    ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("5 message(s)"), "{}", describe(&o));
    assert!(
        !text.contains(" 0 earlier key generation(s) dropped"),
        "{text}"
    );
    let o = with_key(
        &env,
        &["volume", "rotate", "--tenant", TENANT, "--reencrypt"],
        tkey,
    );
    ok(&o);

    // The operator still verifies everything without the key; a second pass still
    // deduplicates (the index key changed under it).
    let (code, _, o) = move_maildir(&env, &src, ALICE);
    assert_eq!(code, 0, "{}", describe(&o));
    let o = with_key(&env, &["volume", "verify", "--json"], None);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["messages_checked"], 5, "{v}");
    assert_eq!(v["sealed_for_tenant"], 5, "{v}");
    assert_eq!(v["damaged"].as_array().unwrap().len(), 0, "{v}");
    no_markers("volume", all_files(&env.volume()));

    // The export with the tenant key is byte-identical to the source.
    let out = env.path("export");
    ok(&export_with(&env, ALICE, &out, tkey));
    assert_eq!(bodies(&out), bodies(&src));
    let audit = std::fs::read_to_string(env.volume().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"index_key_rotated\":true"), "{audit}");
    assert!(audit.contains("\"messages.reencrypted\""), "{audit}");
}

#[test]
fn issue21_reconcile_and_receipt_of_a_customer_key_mailbox_need_the_tenant_key() {
    let (env, _src, tkey, fp) = customer_key_volume();
    let state = env.path(&format!("state-{ALICE}"));
    let state = state.to_str().unwrap();
    for cmd in [&["audit", "reconcile"][..], &["receipt", "verify"][..]] {
        let args: Vec<&str> = cmd
            .iter()
            .copied()
            .chain(["--json", "--state", state])
            .collect();
        let before = refusals(&env);
        let o = with_key(&env, &args, None);
        refused(&o, &fp);
        assert_eq!(
            refusals(&env),
            before + 1,
            "{cmd:?}: refusal not audit-logged"
        );
        let o = with_key(&env, &args, Some(&tkey));
        ok(&o);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if cmd[0] == "audit" {
            assert_eq!(v["agreeing"], 5, "{v}");
        } else {
            assert_eq!(v["matches"], true, "{v}");
            assert_eq!(v["destination_items"], 5, "{v}");
        }
        assert_eq!(refusals(&env), before + 1);
    }
    // The move record with the volume: its reconciliation reads folder names too.
    let args = ["report", "--state", state, "--format", "json", "--out", "-"];
    let before = refusals(&env);
    refused(&with_key(&env, &args, None), &fp);
    assert_eq!(
        refusals(&env),
        before + 1,
        "report: refusal not audit-logged"
    );
    let o = with_key(&env, &args, Some(&tkey));
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["reconciliation"]["agreeing"], 5, "{v}");
    // `audit verify --key-file` checks what it can of a mailbox it cannot read.
    let o = run(mailferry()
        .args(["audit", "verify"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    ok(&o);
}

/// Copies a (closed) volume directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Starts `tenant key init` on `env`'s volume (a tenant with mailboxes: a conversion)
/// and SIGKILLs it as soon as it reports `after` mailboxes converted. Returns false if
/// it ended by itself first.
fn init_and_kill(env: &Env, tenant: &str, out: &Path, after: usize) -> bool {
    use std::io::BufRead;
    let mut child = mailferry()
        .env("RUST_LOG", "mailferry_store=info")
        .args(["tenant", "key", "init", "--tenant", tenant, "--out"])
        .arg(out)
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mailferry starts");
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = 0;
    for line in stderr.lines() {
        if line.unwrap().contains("mailbox moved to the customer key") {
            seen += 1;
            if seen == after {
                let _ = child.kill(); // SIGKILL
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    !status.success() && status.code().is_none()
}

#[test]
fn issue21_conversion_killed_mid_way_resumes_and_exports_byte_identical() {
    use mailferry_bench::sample::{write_maildir, SampleSpec, SizeModel};
    const TENANT_B: &str = "example.org";
    let base = Env::new();
    init_volume(&base);
    let mailboxes: Vec<(String, std::path::PathBuf)> = (0..6)
        .map(|i| {
            let src = base.path(&format!("src{i}"));
            write_maildir(
                &src,
                &SampleSpec {
                    seed: 40 + i,
                    messages: 12,
                    folders: 3,
                    size: SizeModel::Small,
                    markers: None,
                },
            )
            .unwrap();
            let mb = format!("u{i}@{TENANT_B}");
            let (code, _, o) = move_maildir(&base, &src, &mb);
            assert_eq!(code, 0, "{}", describe(&o));
            (mb, src)
        })
        .collect();
    // A mailbox of another tenant stays readable with the volume key throughout.
    let other = base.path("other");
    source(&other);
    let (code, _, o) = move_maildir(&base, &other, "zed@example.net");
    assert_eq!(code, 0, "{}", describe(&o));

    let mut mid_way = 0;
    for after in 1..=3 {
        let env = Env::new();
        copy_dir(&base.volume(), &env.volume());
        std::fs::copy(base.key(), env.key()).unwrap();
        let tkey = env.path("example.org.key");
        assert!(
            init_and_kill(&env, TENANT_B, &tkey, after),
            "after {after}: the conversion was not killed"
        );
        let audit = std::fs::read_to_string(env.volume().join("audit.jsonl")).unwrap();
        assert!(audit.contains("\"tenant.key.registered\""), "after {after}");
        let finished_before_kill = audit.contains("\"tenant.key.converted\"");
        if !finished_before_kill {
            mid_way += 1;
        }

        // `tenant key convert` finishes it; a second run has nothing left to do.
        let o = with_key(
            &env,
            &["tenant", "key", "convert", "--tenant", TENANT_B, "--json"],
            None,
        );
        ok(&o);
        let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_json_schema("tenant-key-convert.schema.json", &c);
        assert_eq!(c["finished"], true, "{c}");
        // Resumed: the mailboxes converted before the kill are not converted again.
        let converted = c["mailboxes"].as_u64().unwrap();
        assert!(converted <= 6 - after as u64, "after {after}: {c}");
        eprintln!(
            "killed after {after} mailbox(es) (finished before the kill: {finished_before_kill}); convert did {converted}"
        );
        let o = with_key(
            &env,
            &["tenant", "key", "convert", "--tenant", TENANT_B, "--json"],
            None,
        );
        ok(&o);
        let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            (c["mailboxes"].as_u64(), c["finished"].as_bool()),
            (Some(0), Some(true)),
            "{c}"
        );

        // The operator verifies every message without the key.
        let o = with_key(&env, &["volume", "verify", "--json"], None);
        ok(&o);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["sealed_for_tenant"], 6 * 12, "{v}");
        assert_eq!(v["messages_checked"], 6 * 12 + 5, "{v}");
        assert_eq!(v["damaged"].as_array().unwrap().len(), 0, "{v}");

        // Every mailbox: refused without the tenant key, byte-identical with it.
        for (mb, src) in &mailboxes {
            let o = export_with(&env, mb, &env.path(&format!("no-{mb}")), None);
            assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(TENANT_B), "{err}");
            let out = env.path(&format!("out-{mb}"));
            ok(&export_with(&env, mb, &out, Some(&tkey)));
            assert_eq!(bodies(&out), bodies(src), "after {after}: {mb}");
        }
        let out = env.path("out-zed");
        ok(&export_with(&env, "zed@example.net", &out, None));
        assert_eq!(bodies(&out), bodies(&other));
    }
    assert!(
        mid_way >= 1,
        "no kill landed before the conversion had finished"
    );
}
