//! Issue 20: volumes on S3-compatible object storage (`--volume s3://bucket/prefix`),
//! against the real S3 server of the test environment (moto, `MAILFERRY_TEST_S3`;
//! `tests/services/services.sh` starts it, test.sh in CI). Each test makes its own bucket.
//!
//! The main one: a move into `serve --volume s3://...` whose `serve` is killed -9 in the
//! middle; the bucket alone (a fresh, empty working copy) holds every message the agent
//! had acknowledged; a new `serve` from an empty directory lets the move resume and
//! complete exactly once; and no object in the bucket holds a plaintext marker. Then a
//! directory volume replicated to a bucket: verify, export, shred and compact there.

use crate::serve::issue_token_at;
use crate::util::*;
use mailferry_bench::sample::{write_maildir, Markers, SampleSpec, SizeModel};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The S3 endpoint, or `None` (skip, with a note) outside CI.
fn endpoint() -> Option<String> {
    match std::env::var("MAILFERRY_TEST_S3") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "MAILFERRY_TEST_S3 is not set in CI (test.sh starts moto)"
            );
            eprintln!(
                "skipped: MAILFERRY_TEST_S3 is not set (tests/services/services.sh start DIR)"
            );
            None
        }
    }
}

/// One plain HTTP/1.0 request to the S3 server (moto takes these unsigned): status and
/// body.
fn http(endpoint: &str, method: &str, path: &str) -> (u16, Vec<u8>) {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(hostport).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let status = String::from_utf8_lossy(&resp[9..12]).parse().unwrap();
    (status, resp[split + 4..].to_vec())
}

/// A new bucket for this test.
fn bucket(endpoint: &str, name: &str) -> String {
    let b = format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000_000
    );
    let (status, body) = http(endpoint, "PUT", &format!("/{b}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    b
}

/// Every object under `prefix` of the bucket: (key relative to the prefix, bytes),
/// read with signed requests through the bucket crate's client.
fn objects(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let url = mailferry_bucket::S3Url::parse(&format!("s3://{bucket}/{prefix}")).unwrap();
    let opts = mailferry_bucket::S3Options {
        endpoint: Some(endpoint.into()),
        ..Default::default()
    };
    let c = mailferry_bucket::Client::new(&url, &opts).unwrap();
    c.list()
        .unwrap()
        .into_iter()
        .map(|(k, _)| {
            let body = c.read_object(&k).unwrap().expect("listed object exists");
            (k, body)
        })
        .collect()
}

/// Deletes every object of the bucket and the bucket (the test server keeps them).
fn remove_bucket(endpoint: &str, bucket: &str) {
    let url = mailferry_bucket::S3Url::parse(&format!("s3://{bucket}")).unwrap();
    let opts = mailferry_bucket::S3Options {
        endpoint: Some(endpoint.into()),
        ..Default::default()
    };
    let c = mailferry_bucket::Client::new(&url, &opts).unwrap();
    for (k, _) in c.list().unwrap() {
        c.remove_object(&k).unwrap();
    }
    let (status, body) = http(endpoint, "DELETE", &format!("/{bucket}"));
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
}

/// `mailferry` with the S3 endpoint set.
fn mf(endpoint: &str) -> Command {
    let mut c = mailferry();
    c.env("MAILFERRY_S3_ENDPOINT", endpoint);
    c
}

fn markers() -> Markers {
    Markers {
        subject: "ZQXS3SUBJECTMARKER".into(),
        body: "ZQXS3BODYMARKER".into(),
        address: "zqxs3addressmarker".into(),
        folder: "ZQXS3FOLDERMARKER".into(),
    }
}

/// Messages the agent recorded as acknowledged in its source-side audit log: stored,
/// or already there (a batch the bucket had taken when serve died, before its
/// acknowledgement reached the agent).
fn acked(state: &Path) -> usize {
    std::fs::read_to_string(state.join("audit.jsonl"))
        .map(|t| {
            t.matches("\"event\":\"message.stored\"").count()
                + t.matches("\"event\":\"message.duplicate\"").count()
        })
        .unwrap_or(0)
}

/// `export` of `mailbox` from `volume` (an s3:// URL) through the fresh working copy
/// `cache`.
fn export_s3(env: &Env, ep: &str, url: &str, cache: &Path, mailbox: &str, out: &Path) {
    let o = run(mf(ep)
        .args(["export", "--volume", url, "--cache-dir"])
        .arg(cache)
        .arg("--key-file")
        .arg(env.key())
        .args(["--mailbox", mailbox, "--format", "maildir", "--out"])
        .arg(out));
    assert!(o.status.success(), "export: {}", describe(&o));
}

/// `volume verify --json` of an s3:// volume: the number of messages checked.
fn verify_s3(env: &Env, ep: &str, url: &str, cache: &Path) -> u64 {
    let o = run(mf(ep)
        .args(["volume", "verify", "--json", "--volume", url, "--cache-dir"])
        .arg(cache)
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "verify: {}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["damaged"].as_array().map(Vec::len), Some(0), "{r}");
    r["messages_checked"].as_u64().unwrap()
}

fn start_serve_s3(env: &Env, ep: &str, url: &str, cache: &Path, profile: &Path) -> Daemon {
    let mut c = mf(ep);
    c.args(["serve", "--volume", url, "--cache-dir"])
        .arg(cache)
        .arg("--key-file")
        .arg(env.key())
        .arg("--profile")
        .arg(profile)
        .args(["--s3-lease-seconds", "2"])
        .arg("--tls-dir")
        .arg(env.path("tls"))
        .args(["--listen", "127.0.0.1:0"]);
    Daemon::start(c, "serve-s3")
}

/// A Maildir of small messages carrying the plaintext markers; returns its message count.
fn marked_maildir(src: &Path, seed: u64, messages: usize, folders: usize) -> usize {
    write_maildir(
        src,
        &SampleSpec {
            seed,
            messages,
            folders,
            size: SizeModel::Small,
            markers: Some(markers()),
        },
    )
    .unwrap()
    .messages
}

/// A profile with `max_messages` per commit (many upload rounds) and 1 MiB segments
/// (several are sealed and uploaded as objects during a move).
fn small_segments_profile(env: &Env, max_messages: u32) -> PathBuf {
    let profile = env.path("s3.toml");
    std::fs::write(
        &profile,
        format!(
            "[commit]\nmax_messages = {max_messages}\n\n[store]\nsegment_max_bytes = 1048576\n"
        ),
    )
    .unwrap();
    profile
}

/// `volume init --volume URL --cache-dir CACHE --no-recovery-key` with the test's key.
fn init_without_recovery_key(ep: &str, url: &str, cache: &Path, env: &Env) {
    let o = run(mf(ep)
        .args(["volume", "init", "--volume", url, "--cache-dir"])
        .arg(cache)
        .arg("--key-file")
        .arg(env.key())
        .arg("--no-recovery-key"));
    assert!(o.status.success(), "{}", describe(&o));
}

fn move_cmd(ep: &str, src: &Path, serve: &Daemon, token: &Path, state: &Path) -> Command {
    let mut c = mf(ep);
    c.arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src.display()))
        .args([
            "--mailbox",
            "alice@example.com",
            "--proxy",
            &serve.url(),
            "--ca",
        ])
        .arg(&serve.ca)
        .arg("--token-file")
        .arg(token)
        .arg("--state")
        .arg(state)
        .arg("--json");
    c
}

#[test]
fn issue20_serve_on_s3_killed_mid_move_restarts_from_the_bucket_alone() {
    let Some(ep) = endpoint() else { return };
    let env = Env::new();
    let b = bucket(&ep, "mf-serve");
    let url = format!("s3://{b}/vol");
    let src = env.path("src");
    let n = marked_maildir(&src, 20, 400, 3);
    // Small batches (many upload rounds, the kill lands inside the move) and small
    // segments (several are sealed, so the restart reads them with ranged GETs).
    let profile = small_segments_profile(&env, 10);

    let c1 = env.path("cache1");
    init_without_recovery_key(&ep, &url, &c1, &env);
    // A token in the working copy; the serve below uploads it with its first round.
    let token = env.path("example.com.token");
    issue_token_at(&c1, &env.key(), "example.com", &token);

    // 1. A move into serve on the bucket; serve killed -9 once some batches were acked.
    let serve = start_serve_s3(&env, &ep, &url, &c1, &profile);
    let state = env.path("state");
    let mut agent = move_cmd(&ep, &src, &serve, &token, &state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..120_000 {
        if acked(&state) >= n / 3 || agent.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    drop(serve); // SIGKILL
    let _ = agent.wait();
    let acked_before = acked(&state);
    assert!(
        acked_before > 0 && acked_before < n,
        "the kill must land inside the move ({acked_before} of {n} acknowledged)"
    );

    // 2. The bucket alone, through an empty working copy: everything acknowledged is
    // there, byte for byte, and the volume verifies.
    let source = read_maildir(&src);
    let out1 = env.path("export-after-kill");
    export_s3(
        &env,
        &ep,
        &url,
        &env.path("cache-fresh1"),
        "alice@example.com",
        &out1,
    );
    let after_kill = read_maildir(&out1);
    assert!(
        after_kill.len() >= acked_before,
        "{} messages in the bucket, {acked_before} were acknowledged",
        after_kill.len()
    );
    for (k, v) in &after_kill {
        assert_eq!(
            source.get(k),
            Some(v),
            "exported message {k:?} differs from the source"
        );
    }
    assert_eq!(
        verify_s3(&env, &ep, &url, &env.path("cache-fresh2")),
        after_kill.len() as u64
    );

    // 3. A new serve from an EMPTY working copy (another machine): the move resumes
    // and completes exactly once.
    let c2 = env.path("cache2");
    assert!(!c2.exists());
    let serve = start_serve_s3(&env, &ep, &url, &c2, &profile);
    let o = run(&mut move_cmd(&ep, &src, &serve, &token, &state));
    assert!(o.status.success(), "resumed move: {}", describe(&o));
    assert_eq!(serve.stop(), Some(0), "serve exits 0 on SIGTERM");
    assert_eq!(acked(&state), n, "every message acknowledged once");

    let out2 = env.path("export-final");
    export_s3(
        &env,
        &ep,
        &url,
        &env.path("cache-fresh3"),
        "alice@example.com",
        &out2,
    );
    assert_eq!(
        read_maildir(&out2),
        source,
        "export differs from the source"
    );
    assert_eq!(
        verify_s3(&env, &ep, &url, &env.path("cache-fresh4")),
        n as u64
    );

    // 4. Only ciphertext and plaintext-free metadata in the bucket.
    let objs = objects(&ep, &b, "vol");
    // The index went up as deltas after each serve's first round: the export above was
    // restored from a checkpoint plus its deltas, each smaller than the checkpoint.
    let body = |key: &str| {
        &objs
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no object {key}"))
            .1
    };
    let manifest: serde_json::Value = serde_json::from_slice(body("MANIFEST")).unwrap();
    let deltas = manifest["index_deltas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!deltas.is_empty(), "no index deltas in {manifest}");
    let base = body(manifest["index"].as_str().unwrap()).len() as u64;
    for d in &deltas {
        let (key, len) = (d["key"].as_str().unwrap(), d["len"].as_u64().unwrap());
        assert_eq!(body(key).len() as u64, len, "{key}");
        assert!(len < base, "delta {key} of {len} bytes, checkpoint {base}");
    }
    assert!(
        objs.iter()
            .any(|(k, _)| k.starts_with("segments/") && k.ends_with(".seg")),
        "sealed segments uploaded whole"
    );
    let m = markers();
    for (k, body) in &objs {
        for needle in [
            &m.subject,
            &m.body,
            &m.address,
            &m.folder,
            &"alice@example.com".to_string(),
        ] {
            assert!(
                !contains(body, needle.as_bytes()),
                "object {k} holds the plaintext {needle}"
            );
        }
    }
    assert!(
        !objs.iter().any(|(k, _)| k.ends_with("LEASE")),
        "serve released its lease"
    );
    remove_bucket(&ep, &b);
}

#[test]
fn issue20_replicate_a_local_volume_to_s3_the_replica_verifies_exports_shreds_and_compacts() {
    let Some(ep) = endpoint() else { return };
    let env = Env::new();
    let b = bucket(&ep, "mf-replica");
    let url = format!("s3://{b}/replica");
    let src = env.path("src");
    let n = write_maildir(
        &src,
        &SampleSpec {
            seed: 21,
            messages: 60,
            folders: 2,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap()
    .messages;
    init_volume(&env);
    let (code, _, o) = move_maildir(&env, &src, "bob@example.com");
    assert_eq!(code, 0, "{}", describe(&o));
    for round in 0..2 {
        // The second run finds the replica up to date and writes a new generation only
        // if something changed.
        let o = run(mf(&ep)
            .args(["volume", "replicate", "--volume"])
            .arg(env.volume())
            .args(["--to", &url]));
        assert!(o.status.success(), "replicate {round}: {}", describe(&o));
    }
    assert_eq!(verify_s3(&env, &ep, &url, &env.path("rcache")), n as u64);
    let out = env.path("export");
    export_s3(
        &env,
        &ep,
        &url,
        &env.path("rcache2"),
        "bob@example.com",
        &out,
    );
    assert_eq!(read_maildir(&out), read_maildir(&src));
    // Shred and compact work on the bucket too: what a fresh working copy restores
    // shows the mailbox shredded, then compacted away, and the bucket's segment
    // objects shrink.
    let seg_bytes = || -> u64 {
        objects(&ep, &b, "replica")
            .iter()
            .filter(|(k, _)| k.starts_with("segments/"))
            .map(|(_, v)| v.len() as u64)
            .sum()
    };
    let before = seg_bytes();
    let o = run(mf(&ep)
        .args(["volume", "shred", "--volume", &url, "--cache-dir"])
        .arg(env.path("rcache3"))
        .arg("--key-file")
        .arg(env.key())
        .args(["--mailbox", "bob@example.com"]));
    assert!(o.status.success(), "shred: {}", describe(&o));
    let o = run(mf(&ep)
        .args([
            "volume",
            "verify",
            "--json",
            "--volume",
            &url,
            "--cache-dir",
        ])
        .arg(env.path("rcache4"))
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "verify: {}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["shredded"], n as u64, "{r}");
    let o = run(mf(&ep)
        .args(["volume", "compact", "--volume", &url, "--cache-dir"])
        .arg(env.path("rcache4"))
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "compact: {}", describe(&o));
    let o = run(mf(&ep)
        .args([
            "volume",
            "verify",
            "--json",
            "--volume",
            &url,
            "--cache-dir",
        ])
        .arg(env.path("rcache5"))
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "verify: {}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (r["shredded"].as_u64(), r["messages_checked"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    let after = seg_bytes();
    assert!(after < before, "segment objects {before} -> {after} bytes");

    // Another volume is refused at the same prefix.
    let other = env.path("other");
    let o = run(mailferry()
        .args(["volume", "init", "--no-recovery-key", "--volume"])
        .arg(&other)
        .arg("--key-file")
        .arg(env.path("other.key")));
    assert!(o.status.success());
    let o = run(mf(&ep)
        .args(["volume", "replicate", "--volume"])
        .arg(&other)
        .args(["--to", &url]));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds another volume"),
        "{}",
        describe(&o)
    );
    remove_bucket(&ep, &b);
}

/// `mailferry move --volume s3://...` (the embedded proxy, no `serve`): refused without a
/// recovery key (read from the bucket's header), then run; a fresh working copy made
/// from the bucket alone verifies every message and exports the source; a second pass
/// (a new writer lease) finds everything there.
#[test]
fn issue20_embedded_move_into_an_s3_volume_lands_in_the_bucket() {
    let Some(ep) = endpoint() else { return };
    let env = Env::new();
    let b = bucket(&ep, "mf-embedded");
    let url = format!("s3://{b}/vol");
    let src = env.path("src");
    let n = marked_maildir(&src, 22, 300, 2);
    // Small segments: several are sealed and uploaded as objects during the move.
    let profile = small_segments_profile(&env, 20);
    let c1 = env.path("cache1");
    init_without_recovery_key(&ep, &url, &c1, &env);
    let move_s3 = |extra: &[&str]| {
        run(mf(&ep)
            .arg("move")
            .arg("--source")
            .arg(format!("maildir:{}", src.display()))
            .args(["--mailbox", "carol@example.com", "--volume", &url])
            .arg("--cache-dir")
            .arg(&c1)
            .arg("--key-file")
            .arg(env.key())
            .arg("--profile")
            .arg(&profile)
            .arg("--state")
            .arg(env.path("state"))
            .arg("--json")
            .args(extra))
    };
    let o = move_s3(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", describe(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no recovery key"),
        "{}",
        describe(&o)
    );
    let o = move_s3(&["--no-recovery-key"]);
    assert!(o.status.success(), "move: {}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["items_moved"], n as u64, "{r}");
    assert_eq!(r["receipt"]["matches"], true, "{r}");
    let sealed = objects(&ep, &b, "vol")
        .iter()
        .filter(|(k, _)| k.starts_with("segments/"))
        .count();
    assert!(sealed >= 2, "{sealed} segment objects");

    // The bucket alone: a fresh working copy verifies and exports the source.
    assert_eq!(verify_s3(&env, &ep, &url, &env.path("cache2")), n as u64);
    let out = env.path("export");
    export_s3(
        &env,
        &ep,
        &url,
        &env.path("cache3"),
        "carol@example.com",
        &out,
    );
    assert_eq!(read_maildir(&out), read_maildir(&src));
    // The first move gave its writer lease up: a second pass takes it and finds
    // every message there.
    let o = move_s3(&["--no-recovery-key"]);
    assert!(o.status.success(), "second pass: {}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["items_moved"], 0, "{r}");

    // Compaction reaches sealed segments that are only in the bucket: a second mailbox
    // moved, shredded and compacted, each through a fresh working copy (which restores
    // no sealed segment); its records are gone from the bucket, carol's still export.
    let src2 = env.path("src2");
    let n2 = write_maildir(
        &src2,
        &SampleSpec {
            seed: 24,
            messages: 300,
            folders: 1,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap()
    .messages;
    let o = run(mf(&ep)
        .arg("move")
        .arg("--source")
        .arg(format!("maildir:{}", src2.display()))
        .args(["--mailbox", "dave@example.com", "--volume", &url])
        .arg("--cache-dir")
        .arg(&c1)
        .arg("--key-file")
        .arg(env.key())
        .arg("--profile")
        .arg(&profile)
        .arg("--state")
        .arg(env.path("state2"))
        .args(["--json", "--no-recovery-key"]));
    assert!(o.status.success(), "move dave: {}", describe(&o));
    assert_eq!(
        verify_s3(&env, &ep, &url, &env.path("cache4")),
        (n + n2) as u64
    );
    let seg_bytes = || -> u64 {
        objects(&ep, &b, "vol")
            .iter()
            .filter(|(k, _)| k.starts_with("segments/"))
            .map(|(_, v)| v.len() as u64)
            .sum()
    };
    let before = seg_bytes();
    let o = run(mf(&ep)
        .args(["volume", "shred", "--volume", &url, "--cache-dir"])
        .arg(env.path("cache5"))
        .arg("--key-file")
        .arg(env.key())
        .args(["--mailbox", "dave@example.com"]));
    assert!(o.status.success(), "shred: {}", describe(&o));
    let cache6 = env.path("cache6");
    let o = run(mf(&ep)
        .args([
            "volume",
            "compact",
            "--json",
            "--volume",
            &url,
            "--cache-dir",
        ])
        .arg(&cache6)
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "compact: {}", describe(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["messages_dropped"], n2 as u64, "{r}");
    assert_eq!(r["skipped"].as_array().map(Vec::len), Some(0), "{r}");
    assert!(r["segments_rewritten"].as_u64().unwrap() >= 2, "{r}");
    let after = seg_bytes();
    assert!(after < before, "segment objects {before} -> {after} bytes");
    let o = run(mf(&ep)
        .args([
            "volume",
            "verify",
            "--json",
            "--volume",
            &url,
            "--cache-dir",
        ])
        .arg(env.path("cache7"))
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "verify: {}", describe(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["shredded"].as_u64(), v["messages_checked"].as_u64()),
        (Some(0), Some(n as u64)),
        "{v}"
    );
    assert_eq!(v["damaged"].as_array().map(Vec::len), Some(0), "{v}");
    let out2 = env.path("export2");
    export_s3(
        &env,
        &ep,
        &url,
        &env.path("cache8"),
        "carol@example.com",
        &out2,
    );
    assert_eq!(read_maildir(&out2), read_maildir(&src));
    // Only ciphertext left the machine.
    for (k, v) in objects(&ep, &b, "vol") {
        let m = markers();
        for needle in [&m.subject, &m.body, &m.address, &m.folder] {
            assert!(
                !v.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{k} holds the plaintext marker {needle}"
            );
        }
    }
    remove_bucket(&ep, &b);
}

/// `token list --json` of an s3:// volume through the working copy `cache`: (id,
/// revoked) of every token.
fn tokens_s3(env: &Env, ep: &str, url: &str, cache: &Path) -> Vec<(u64, bool)> {
    let o = run(mf(ep)
        .args(["token", "list", "--json", "--volume", url, "--cache-dir"])
        .arg(cache)
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "token list: {}", describe(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_u64().unwrap(), !t["revoked"].is_null()))
        .collect()
}

/// `token issue|list|revoke --volume s3://...`: without a `serve`, the command opens
/// the volume from the bucket and the change is there for a fresh working copy (and for
/// a `serve` started from it); beside a `serve` on this machine, it goes through that
/// serve's working copy, takes effect at once, and reaches the bucket.
#[test]
fn issue20_tokens_on_an_s3_volume() {
    let Some(ep) = endpoint() else { return };
    let env = Env::new();
    let b = bucket(&ep, "mf-tokens");
    let url = format!("s3://{b}/vol");
    let src = env.path("src");
    write_maildir(
        &src,
        &SampleSpec {
            seed: 23,
            messages: 20,
            folders: 1,
            size: SizeModel::Small,
            markers: None,
        },
    )
    .unwrap();
    let profile = env.path("s3.toml");
    std::fs::write(&profile, "[commit]\nmax_messages = 10\n").unwrap();
    let c1 = env.path("cache1");
    init_without_recovery_key(&ep, &url, &c1, &env);
    let issue = |cache: &Path, out: &Path| {
        let o = run(mf(&ep)
            .args(["token", "issue", "--volume", &url, "--cache-dir"])
            .arg(cache)
            .arg("--key-file")
            .arg(env.key())
            .args(["--tenant", "example.com", "--out"])
            .arg(out));
        assert!(o.status.success(), "token issue: {}", describe(&o));
        let token = std::fs::read_to_string(out).unwrap();
        assert!(!String::from_utf8_lossy(&o.stderr).contains(token.trim()));
        o
    };
    // 1. No serve: issued through a working copy of its own, listed from a fresh one.
    let t1 = env.path("t1.token");
    issue(&env.path("cache2"), &t1);
    assert_eq!(
        tokens_s3(&env, &ep, &url, &env.path("cache3")),
        [(1, false)]
    );

    // 2. A serve restored from the bucket accepts it.
    let serve = start_serve_s3(&env, &ep, &url, &c1, &profile);
    let o = run(&mut move_cmd(&ep, &src, &serve, &t1, &env.path("state1")));
    assert!(o.status.success(), "move with t1: {}", describe(&o));

    // 3. Beside the serve (its working copy): a new token works at once, a revoked one
    //    is refused at once.
    let t2 = env.path("t2.token");
    let o = issue(&c1, &t2);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in use by a running `mailferry serve`"),
        "{}",
        describe(&o)
    );
    let o = run(mf(&ep)
        .args(["token", "revoke", "--volume", &url, "--cache-dir"])
        .arg(&c1)
        .arg("--key-file")
        .arg(env.key())
        .arg("1"));
    assert!(o.status.success(), "token revoke: {}", describe(&o));
    let o = run(&mut move_cmd(&ep, &src, &serve, &t1, &env.path("state2")));
    assert!(
        !o.status.success(),
        "revoked t1 still moves: {}",
        describe(&o)
    );
    let o = run(&mut move_cmd(&ep, &src, &serve, &t2, &env.path("state3")));
    assert!(o.status.success(), "move with t2: {}", describe(&o));
    assert_eq!(serve.stop(), Some(0));

    // 4. The bucket alone has both changes.
    assert_eq!(
        tokens_s3(&env, &ep, &url, &env.path("cache4")),
        [(1, true), (2, false)]
    );
    // And revoke without serve lands in the bucket too.
    let o = run(mf(&ep)
        .args(["token", "revoke", "--volume", &url, "--cache-dir"])
        .arg(env.path("cache5"))
        .arg("--key-file")
        .arg(env.key())
        .arg("2"));
    assert!(o.status.success(), "token revoke: {}", describe(&o));
    assert_eq!(
        tokens_s3(&env, &ep, &url, &env.path("cache6")),
        [(1, true), (2, true)]
    );
    remove_bucket(&ep, &b);
}
