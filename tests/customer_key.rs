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

    // A wrong tenant key is refused clearly.
    let wrong = env.path("wrong.key");
    ok(&run(mailferry()
        .args(["tenant", "key", "init", "--tenant", "example.com", "--out"])
        .arg(&wrong)));
    let o = run(mailferry()
        .args(["export", "--mailbox", "alice@example.com", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--tenant-key")
        .arg(&wrong)
        .arg("--out")
        .arg(env.path("wrong-out")));
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
    let o = run(mailferry()
        .args(["export", "--mailbox", "alice@example.com", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--tenant-key")
        .arg(&tkey)
        .arg("--out")
        .arg(&out));
    ok(&o);
    let got: Vec<Vec<u8>> = read_maildir(&out).into_values().map(|(_, b)| b).collect();
    let want: Vec<Vec<u8>> = read_maildir(&src).into_values().map(|(_, b)| b).collect();
    let (mut got, mut want) = (got, want);
    got.sort();
    want.sort();
    assert_eq!(got.len(), 5);
    assert_eq!(got, want);
    assert!(out.join(".Zephyrine21").exists());

    // Shredding needs no tenant key either.
    let o = vol(&env, &["volume", "shred", "--mailbox", "alice@example.com"]);
    ok(&o);
}
