//! mbox and .eml sources through the real binary: moves, exports that round-trip
//! byte-identical, bad input named, and kill -9 at random points then resume.

use crate::util::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

const MB: &str = "alice@example.com";

fn move_source(env: &Env, spec: &str, mailbox: &str) -> (i32, Option<serde_json::Value>, Output) {
    let o = run(mailferry()
        .arg("move")
        .arg("--source")
        .arg(spec)
        .args(["--mailbox", mailbox, "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .arg("--state")
        .arg(env.path(&format!("state-{mailbox}")))
        .arg("--json"));
    let report = serde_json::from_slice(&o.stdout).ok();
    (o.status.code().unwrap_or(-1), report, o)
}

fn export_as(env: &Env, mailbox: &str, format: &str, out: &Path) -> Output {
    run(mailferry()
        .arg("export")
        .arg("--volume")
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key())
        .args(["--mailbox", mailbox, "--format", format, "--out"])
        .arg(out))
}

/// Every file under `dir` by relative path (skipping `skip` suffixes), read directly.
fn tree(dir: &Path, skip: &[&str]) -> BTreeMap<String, Vec<u8>> {
    all_files(dir)
        .into_iter()
        .filter(|(p, _)| !skip.iter().any(|s| p.to_string_lossy().ends_with(s)))
        .map(|(p, b)| {
            (
                p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(),
                b,
            )
        })
        .collect()
}

fn write(p: &Path, body: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

fn moved_ok(env: &Env, spec: &str) -> serde_json::Value {
    let (code, r, o) = move_source(env, spec, MB);
    assert_eq!(code, 0, "{}", describe(&o));
    r.unwrap()
}

/// A small deterministic generator (xorshift64*), so failures replay by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A message body as an mbox holds it after its `From ` line (already mboxrd-quoted),
/// with body lines that start with `From ` and `>From ` among others.
fn sample_message(rng: &mut Rng, i: usize) -> Vec<u8> {
    let mut m = format!(
        "From: sender{i}@example.org\nTo: alice@example.com\nSubject: message {i}\n\
         Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <{i}.{}@example.org>\n",
        rng.next()
    )
    .into_bytes();
    if rng.below(3) == 0 {
        m.extend_from_slice(b"Status: RO\nX-Status: A\n");
    }
    m.push(b'\n');
    for _ in 0..rng.below(40) + 1 {
        let line: &[u8] = match rng.below(8) {
            0 => b">From the quoted start",
            1 => b">>From twice quoted",
            2 => b"",
            3 => b"> an ordinary quote",
            _ => b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
        };
        m.extend_from_slice(line);
        m.push(b'\n');
    }
    m
}

/// An mbox of `n` messages, each followed by a blank line, with `From ` lines in the
/// canonical `From <sender> <asctime>` form that the export reproduces.
fn sample_mbox(rng: &mut Rng, n: usize, first: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in first..first + n {
        let sender = match i % 3 {
            0 => "MAILER-DAEMON".to_string(),
            1 => format!("bounce+{i}@lists.example.org"),
            _ => format!("sender{i}@example.org"),
        };
        let date = mailferry_agent::source::mbox::asctime(1_700_000_000 + i as i64 * 3607);
        out.extend_from_slice(format!("From {sender} {date}\n").as_bytes());
        out.extend_from_slice(&sample_message(rng, i));
        out.push(b'\n');
    }
    out
}

#[test]
fn mbox_file_moves_and_exports_byte_identical() {
    let env = Env::new();
    init_volume(&env);
    let mut rng = Rng(7);
    let mut file = sample_mbox(&mut rng, 30, 0);
    // An identical copy of a message, and a message with CRLF lines inside.
    let first_two = file
        .windows(6)
        .skip(1)
        .position(|w| w == b"\n\nFrom")
        .unwrap();
    file.extend_from_within(..first_two + 3);
    file.extend_from_slice(
        b"From x@y Mon Jan  1 00:00:00 2024\nSubject: crlf\r\n\r\nline\r\n>From x\r\n\n",
    );
    let src = env.path("alice.mbox");
    write(&src, &file);
    let r = moved_ok(&env, &format!("mbox:{}", src.display()));
    assert_eq!(r["items_moved"], 32, "{r}");

    let out = env.path("export");
    let o = export_as(&env, MB, "mbox", &out);
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(tree(&out, &[]).keys().collect::<Vec<_>>(), ["INBOX"]);
    let back = fs::read(out.join("INBOX")).unwrap();
    assert!(back == file, "the exported mbox differs from the source");

    // Flags come from Status:/X-Status:, and the stored messages are unquoted.
    let md = env.path("export-maildir");
    assert!(export_as(&env, MB, "maildir", &md).status.success());
    let msgs = read_maildir(&md);
    assert_eq!(msgs.len(), 32);
    let answered = msgs
        .values()
        .filter(|(_, b)| contains(b, b"Status: RO\nX-Status: A\n"))
        .collect::<Vec<_>>();
    assert!(!answered.is_empty());
    assert!(
        answered.iter().all(|(flags, _)| flags == "RS"),
        "{answered:?}"
    );
    assert!(msgs
        .values()
        .any(|(_, b)| contains(b, b"\nFrom the quoted start\n")));
    assert!(msgs
        .values()
        .any(|(_, b)| contains(b, b"\n>From twice quoted\n")));
    assert!(
        msgs.keys().any(|(_, id)| id.contains("-2~")),
        "the copy is kept"
    );
}

#[test]
fn mbox_directory_round_trips_with_nested_folders() {
    let env = Env::new();
    init_volume(&env);
    let mut rng = Rng(11);
    let src = env.path("mail");
    let files = [
        ("INBOX", 12),
        ("Archive/2023", 5),
        ("Archive/2024", 7),
        ("Work", 4),
        ("Work.sbd/Clients", 3),
        ("Sent Items", 2),
    ];
    let mut first = 0;
    for (name, n) in files {
        write(&src.join(name), &sample_mbox(&mut rng, n, first));
        first += n;
    }
    write(
        &src.join("Work.msf"),
        b"// <!-- <mdb:mork:z v=\"1.4\"/> -->\n",
    );
    write(&src.join("Trash"), b""); // an empty folder
    let r = moved_ok(&env, &format!("mbox:{}", src.display()));
    assert_eq!(r["items_moved"], first as u64, "{r}");
    assert!(r["per_folder"]["Work/Clients"].is_object(), "{r}");

    let out = env.path("export");
    let o = export_as(&env, MB, "mbox", &out);
    assert!(o.status.success(), "{}", describe(&o));
    let want = tree(&src, &[".msf", "Trash"]);
    assert_eq!(want.len(), files.len());
    assert!(
        tree(&out, &[]) == want,
        "the exported tree differs from the source"
    );
}

#[test]
fn mboxo_and_mboxrd_inputs() {
    let env = Env::new();
    init_volume(&env);
    // mboxo quotes `From ` only, so `>From ` in the original body is indistinguishable
    // from a quoted `From `: both are read as mboxrd and lose one `>`.
    let mboxo = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: o\n\n>From me\n>From you (was >From)\nFrom-ish\n\n";
    let mboxrd = b"From b@x Tue Jan  2 00:00:00 2024\nSubject: rd\n\n>From me\n>>From you\n\n";
    let src = env.path("mail");
    write(&src.join("o"), mboxo);
    write(&src.join("rd"), mboxrd);
    moved_ok(&env, &format!("mbox:{}", src.display()));
    let md = env.path("export-maildir");
    assert!(export_as(&env, MB, "maildir", &md).status.success());
    let bodies: BTreeMap<String, Vec<u8>> = read_maildir(&md)
        .into_iter()
        .map(|((f, _), (_, b))| (f, b))
        .collect();
    assert_eq!(
        bodies[".o"],
        b"Subject: o\n\nFrom me\nFrom you (was >From)\nFrom-ish\n"
    );
    assert_eq!(bodies[".rd"], b"Subject: rd\n\nFrom me\n>From you\n");
    // Either way the mbox written back is the file that was read.
    let out = env.path("export");
    assert!(export_as(&env, MB, "mbox", &out).status.success());
    assert_eq!(fs::read(out.join("o")).unwrap(), mboxo);
    assert_eq!(fs::read(out.join("rd")).unwrap(), mboxrd);
}

#[test]
fn truncated_last_message_is_a_named_bad_item() {
    let env = Env::new();
    init_volume(&env);
    let mut rng = Rng(3);
    let mut file = sample_mbox(&mut rng, 5, 0);
    file.extend_from_slice(b"From cut@x Mon Jan  1 00:00:00 2024\nSubject: cut\nX-Half: a");
    let src = env.path("alice.mbox");
    write(&src, &file);
    let (code, r, o) = move_source(&env, &format!("mbox:{}", src.display()), MB);
    assert_eq!(
        code,
        3,
        "bad items over the bad-item limit (0) exit 3: {}",
        describe(&o)
    );
    let r = r.unwrap();
    assert_eq!(r["items_moved"], 5, "{r}");
    let bad = r["bad_items"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{r}");
    let item = bad[0]["item"].as_str().unwrap();
    assert!(
        item.starts_with("INBOX/") && item.ends_with("~cut@x"),
        "{item}"
    );
    assert!(
        bad[0]["reason"].as_str().unwrap().contains("truncated"),
        "{r}"
    );

    // Once the writer finishes it, the next pass moves it and nothing else.
    file.extend_from_slice(b"\n\nbody\n\n");
    write(&src, &file);
    let r = moved_ok(&env, &format!("mbox:{}", src.display()));
    assert_eq!(r["items_moved"], 1, "{r}");
    let out = env.path("export");
    assert!(export_as(&env, MB, "mbox", &out).status.success());
    assert!(fs::read(out.join("INBOX")).unwrap() == file);
}

#[test]
fn mbox_without_from_line_is_a_clear_error() {
    let env = Env::new();
    init_volume(&env);
    let src = env.path("mail.txt");
    write(&src, b"Subject: hello\n\nnot an mbox\n");
    let (code, _, o) = move_source(&env, &format!("mbox:{}", src.display()), MB);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code, 1, "{}", describe(&o));
    assert!(err.contains("not an mbox"), "{err}");
    assert!(err.contains("mail.txt"), "{err}");

    // In a directory it is one named bad item; the real mboxes move.
    let dir = env.path("dir");
    write(&dir.join("notes"), b"Subject: hello\n\nnot an mbox\n");
    write(&dir.join("INBOX"), &sample_mbox(&mut Rng(5), 3, 0));
    let (code, r, o) = move_source(&env, &format!("mbox:{}", dir.display()), "bob@example.com");
    assert_eq!(
        code,
        3,
        "a bad item hits the bad-item limit: {}",
        describe(&o)
    );
    let r = r.unwrap();
    assert_eq!(r["items_moved"], 3, "{r}");
    assert_eq!(r["bad_items"][0]["item"], "notes", "{r}");
    assert!(r["bad_items"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("not an mbox"));
}

fn sample_eml_tree(root: &Path, rng: &mut Rng, n: usize) -> usize {
    let dirs = ["", "Archive", "Archive/2024", "Projects/Löwe"];
    for i in 0..n {
        let dir = dirs[i % dirs.len()];
        let mut m = sample_message(rng, i);
        m.extend(std::iter::repeat_n(b'x', rng.below(3000) as usize));
        m.push(b'\n');
        write(&root.join(dir).join(format!("msg-{i:04}.eml")), &m);
    }
    n
}

/// What a Maildir export of an .eml tree must hold, in [`read_maildir`]'s terms.
fn expected_maildir(root: &Path) -> BTreeMap<(String, String), (String, Vec<u8>)> {
    all_files(root)
        .into_iter()
        .map(|(p, b)| {
            let rel = p.strip_prefix(root).unwrap();
            let name = rel.file_name().unwrap().to_string_lossy().into_owned();
            let folder = rel
                .parent()
                .unwrap()
                .iter()
                .map(|c| format!(".{}", mailferry_core::mutf7::encode(&c.to_string_lossy())))
                .collect::<String>();
            ((folder, name), (String::new(), b))
        })
        .collect()
}

#[test]
fn eml_tree_moves_and_exports_as_maildir() {
    let env = Env::new();
    init_volume(&env);
    let src = env.path("eml");
    let n = sample_eml_tree(&src, &mut Rng(9), 40);
    let r = moved_ok(&env, &format!("eml:{}", src.display()));
    assert_eq!(r["items_moved"], n as u64, "{r}");
    let out = env.path("export");
    assert!(export_as(&env, MB, "maildir", &out).status.success());
    assert_eq!(read_maildir(&out), expected_maildir(&src));
}

#[test]
fn hostile_names_are_named_and_nothing_escapes() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    init_volume(&env);
    let mut rng = Rng(13);
    // mbox: a non-UTF-8 name, a backslash, a symlink out of the tree, a path too long
    // to be a folder name (five nested 250-byte directories).
    let src = env.path("mail");
    write(&src.join("INBOX"), &sample_mbox(&mut rng, 2, 0));
    write(
        &src.join(std::ffi::OsStr::from_bytes(b"Latin-1 \xe9t\xe9")),
        &sample_mbox(&mut rng, 1, 2),
    );
    write(&src.join("a\\b"), &sample_mbox(&mut rng, 1, 3));
    let outside = env.path("outside");
    write(&outside, &sample_mbox(&mut rng, 1, 4));
    std::os::unix::fs::symlink(&outside, src.join("link")).unwrap();
    let deep: PathBuf = (0..5).map(|i| format!("{i}{}", "d".repeat(249))).collect();
    write(&src.join(&deep).join("x"), &sample_mbox(&mut rng, 1, 5));
    let (code, r, o) = move_source(&env, &format!("mbox:{}", src.display()), MB);
    assert_eq!(
        code,
        3,
        "bad items hit the bad-item limit: {}",
        describe(&o)
    );
    let r = r.unwrap();
    assert_eq!(r["items_moved"], 2, "{r}");
    let bad: Vec<(String, String)> = r["bad_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["item"].as_str().unwrap().to_string(),
                b["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(bad.len(), 4, "{bad:?}");
    assert!(bad
        .iter()
        .any(|(i, r)| i.starts_with("Latin-1") && r.contains("UTF-8")));
    assert!(bad
        .iter()
        .any(|(i, r)| i == "a\\b" && r.contains("backslash")));
    assert!(bad
        .iter()
        .any(|(i, r)| i == "link" && r.contains("symbolic link")));
    assert!(bad.iter().any(|(_, r)| r.contains("1024 bytes")), "{bad:?}");

    // eml: a directory named like a Thunderbird subfolder directory moves (it is a
    // legal folder name) but cannot be an mbox file: the export names it and writes
    // everything else, inside the export directory only.
    let eml = env.path("eml");
    write(&eml.join("ok.eml"), b"Subject: ok\n\nfine\n");
    write(&eml.join("evil.sbd/x.eml"), b"Subject: evil\n\nx\n");
    std::os::unix::fs::symlink("/etc", eml.join("etc")).unwrap();
    let mb2 = "carol@example.com";
    let (code, r, o) = move_source(&env, &format!("eml:{}", eml.display()), mb2);
    assert_eq!(
        code,
        3,
        "a bad item hits the bad-item limit: {}",
        describe(&o)
    );
    let r = r.unwrap();
    assert_eq!(r["items_moved"], 2, "{r}");
    assert_eq!(r["bad_items"][0]["item"], "INBOX/etc", "{r}");
    let root = env.path("exports");
    fs::create_dir(&root).unwrap();
    let out = root.join("carol");
    let o = export_as(&env, mb2, "mbox", &out);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("evil.sbd/x.eml") && err.contains(".sbd"),
        "{err}"
    );
    assert_eq!(tree(&root, &[]).keys().collect::<Vec<_>>(), ["carol/INBOX"]);
}

/// Kills the move at `kills` random points, then lets it finish; returns the final
/// report. Every kill point is after the previous one, so each pass gets further.
fn kill_resume(env: &Env, spec: &str, n: usize, seed: u64, kills: usize) -> serde_json::Value {
    let mut rng = Rng(seed);
    let mut points: Vec<usize> = (0..kills).map(|_| rng.below(n as u64) as usize).collect();
    points.sort_unstable();
    let mut killed = Vec::new();
    for p in points {
        let jitter = std::time::Duration::from_micros(rng.below(20_000));
        if let Some(at) = move_spec_and_kill(env, spec, MB, p, jitter) {
            killed.push(at);
        }
    }
    assert!(
        killed.len() >= 3 && killed.iter().any(|&at| at > 0 && at < n),
        "seed {seed}: too few kills hit a running move ({killed:?} acknowledged at each)"
    );
    eprintln!("seed {seed}: killed with {killed:?} messages acknowledged");
    let (code, r, o) = move_source(env, spec, MB);
    assert_eq!(code, 0, "seed {seed}: {}", describe(&o));
    let r = r.unwrap();
    let moved = r["items_moved"].as_u64().unwrap();
    let skipped = r["items_skipped_duplicate"].as_u64().unwrap();
    assert_eq!(moved + skipped, n as u64, "seed {seed}: {r}");
    let o = run(mailferry()
        .args(["volume", "verify", "--volume"])
        .arg(env.volume())
        .arg("--key-file")
        .arg(env.key()));
    assert!(o.status.success(), "seed {seed}: {}", describe(&o));
    r
}

#[test]
fn mbox_kill9_at_random_points_then_resume_stores_each_message_once() {
    for seed in [1u64, 2, 3] {
        let env = Env::new();
        init_volume(&env);
        let mut rng = Rng(seed * 7919);
        let src = env.path("mail");
        write(&src.join("INBOX"), &sample_mbox(&mut rng, 500, 0));
        write(&src.join("Archive/2024"), &sample_mbox(&mut rng, 300, 500));
        let spec = format!("mbox:{}", src.display());
        kill_resume(&env, &spec, 800, seed, 4);
        // The export holds each message once, in file order: it is the source again.
        let out = env.path("export");
        let o = export_as(&env, MB, "mbox", &out);
        assert!(o.status.success(), "seed {seed}: {}", describe(&o));
        assert!(
            tree(&out, &[]) == tree(&src, &[]),
            "seed {seed}: export differs from the source"
        );
        // A rerun of the finished move stores nothing.
        let r = moved_ok(&env, &spec);
        assert_eq!(r["items_moved"], 0, "seed {seed}: {r}");
        assert_eq!(r["items_skipped_duplicate"], 800, "seed {seed}: {r}");
    }
}

#[test]
fn eml_kill9_at_random_points_then_resume_stores_each_message_once() {
    for seed in [4u64, 5] {
        let env = Env::new();
        init_volume(&env);
        let src = env.path("eml");
        let n = sample_eml_tree(&src, &mut Rng(seed * 104_729), 800);
        let spec = format!("eml:{}", src.display());
        kill_resume(&env, &spec, n, seed, 4);
        let out = env.path("export");
        assert!(export_as(&env, MB, "maildir", &out).status.success());
        assert_eq!(
            read_maildir(&out),
            expected_maildir(&src),
            "seed {seed}: export differs from the source"
        );
        let r = moved_ok(&env, &spec);
        assert_eq!(r["items_moved"], 0, "seed {seed}: {r}");
    }
}

/// SHA-256 of a file, read in blocks.
fn file_digest(p: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut f = fs::File::open(p).unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return ctx.finish().as_ref().to_vec();
        }
        ctx.update(&buf[..n]);
    }
}

#[test]
fn a_256_mib_mbox_message_moves_and_exports_in_bounded_memory() {
    use mailferry_agent::source::mbox::QuotingWriter;
    use std::io::Write;
    let env = Env::new();
    init_volume(&env);
    let src = env.path("big.mbox");
    let mut file = std::io::BufWriter::new(fs::File::create(&src).unwrap());
    let f = &mut file;
    f.write_all(&sample_mbox(&mut Rng(17), 2, 0)).unwrap();
    f.write_all(b"From big@example.org Mon Jan  1 00:00:00 2024\n")
        .unwrap();
    let mut q = QuotingWriter::new(f);
    q.write_all(b"From: a@example.org\nSubject: big\n\n")
        .unwrap();
    // Random lines, with quoted and to-be-quoted `From ` lines among them, so the
    // unquoting state machine runs across every read-buffer boundary.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut line = Vec::with_capacity(5000);
    let mut written = 0u64;
    while written < 256 << 20 {
        line.clear();
        match rng.below(50) {
            0 => line.extend_from_slice(b"From the middle of a long message"),
            1 => line.extend_from_slice(b">>From deeper"),
            _ => {
                for _ in 0..rng.below(4000) {
                    let b = (rng.next() >> 24) as u8;
                    line.push(if b == b'\n' { b'.' } else { b });
                }
            }
        }
        line.push(b'\n');
        q.write_all(&line).unwrap();
        written += line.len() as u64;
    }
    let (f, _) = q.finish().unwrap();
    f.write_all(b"\n").unwrap();
    f.write_all(&sample_mbox(&mut Rng(19), 1, 2)).unwrap();
    file.flush().unwrap();
    drop(file);
    let (code, r, o) = move_source(&env, &format!("mbox:{}", src.display()), MB);
    assert_eq!(code, 0, "{}", describe(&o));
    let r = r.unwrap();
    assert_eq!(r["items_moved"], 4, "{r}");
    let rss = r["peak_rss_bytes"].as_u64().unwrap();
    assert!(rss > 0 && rss < 160 << 20, "peak RSS {} MiB", rss >> 20);
    let out = env.path("export");
    let o = export_as(&env, MB, "mbox", &out);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        file_digest(&out.join("INBOX")) == file_digest(&src),
        "the exported mbox differs from the source"
    );
}

#[test]
fn maildir_kill9_at_random_points_then_resume_stores_each_message_once() {
    for seed in [6u64, 7] {
        let env = Env::new();
        init_volume(&env);
        let src = env.path("maildir");
        let n = mailferry_bench::sample::write_maildir(
            &src,
            &mailferry_bench::sample::SampleSpec {
                seed,
                messages: 800,
                folders: 4,
                size: mailferry_bench::sample::SizeModel::Small,
                markers: None,
            },
        )
        .unwrap()
        .messages;
        let spec = format!("maildir:{}", src.display());
        kill_resume(&env, &spec, n, seed, 4);
        let out = env.path("export");
        assert!(export_as(&env, MB, "maildir", &out).status.success());
        assert_eq!(
            read_maildir(&out),
            read_maildir(&src),
            "seed {seed}: export differs from the source"
        );
        let r = moved_ok(&env, &spec);
        assert_eq!(r["items_moved"], 0, "seed {seed}: {r}");
    }
}
