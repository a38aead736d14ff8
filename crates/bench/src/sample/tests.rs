use super::*;
use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

fn spec(seed: u64, messages: usize, folders: usize, size: SizeModel) -> SampleSpec {
    SampleSpec {
        seed,
        messages,
        folders,
        size,
        markers: None,
    }
}

fn markers() -> Markers {
    Markers {
        subject: "zqxSUBJECTmarker71".into(),
        body: "zqxBODYmarker72".into(),
        address: "zqx-address-73@example.org".into(),
        folder: "Zqx Folder 74".into(),
    }
}

/// Every file under `root`: relative path → (contents, mtime).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mtime = fs::metadata(&path).unwrap().modified().unwrap();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, (fs::read(&path).unwrap(), mtime));
            }
        }
    }
    out
}

/// Message files only (those in `cur/` or `new/`), with the folder's on-disk name.
fn messages(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| {
            p.parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d == "cur" || d == "new")
        })
        .map(|(p, (bytes, _))| (p, bytes))
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let head = msg.split("\n\n").next().unwrap_or(msg);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[test]
fn same_spec_same_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s = spec(7, 300, 6, SizeModel::Realistic);
    s.markers = Some(markers());
    let sa = write_maildir(a.path(), &s).unwrap();
    let sb = write_maildir(b.path(), &s).unwrap();
    assert_eq!(sa, sb);
    let (ta, tb) = (snapshot(a.path()), snapshot(b.path()));
    assert!(ta.len() >= 300);
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (path, a) in &ta {
        assert!(*a == tb[path], "{path:?} differs");
    }

    let c = tempfile::tempdir().unwrap();
    s.seed = 8;
    write_maildir(c.path(), &s).unwrap();
    assert_ne!(
        ta,
        snapshot(c.path()),
        "another seed must give another tree"
    );
}

#[test]
fn counts_layout_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let summary = write_maildir(dir.path(), &spec(3, 500, 5, SizeModel::Small)).unwrap();
    assert_eq!(summary.messages, 500);
    assert_eq!(
        summary.folders,
        ["INBOX", "Entwürfe", "Archive/2024", "Sent", "Archive"]
    );
    let root = dir.path();
    for d in ["", ".Entw&APw-rfe", ".Archive.2024", ".Sent", ".Archive"] {
        for sub in ["cur", "new", "tmp"] {
            assert!(root.join(d).join(sub).is_dir(), "{d}/{sub}");
        }
        assert_eq!(root.join(d).join("maildirfolder").is_file(), !d.is_empty());
    }

    let msgs = messages(root);
    assert_eq!(msgs.len(), 500);
    assert_eq!(
        msgs.iter().map(|(_, b)| b.len() as u64).sum::<u64>(),
        summary.bytes
    );
    let mut in_cur = 0;
    let mut per_folder: HashMap<&Path, usize> = HashMap::new();
    for (path, bytes) in &msgs {
        let name = path.file_name().unwrap().to_str().unwrap();
        let in_new = path.parent().unwrap().ends_with("new");
        let (base, info) = match name.split_once(":2,") {
            Some((base, flags)) => (base, Some(flags)),
            None => (name, None),
        };
        assert_eq!(info.is_none(), in_new, "{name}");
        if let Some(flags) = info {
            in_cur += 1;
            let mut sorted: Vec<char> = flags.chars().collect();
            sorted.sort_unstable();
            assert_eq!(flags.chars().collect::<Vec<_>>(), sorted, "{name}");
            assert!(flags.chars().all(|c| "DFPRST".contains(c)), "{name}");
        }
        assert!(base.contains(".mailferry-sample,S="), "{name}");
        let size: usize = base
            .split(",S=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(size, bytes.len(), "{name}: S= must be the file size");
        let folder = path.parent().unwrap().parent().unwrap();
        *per_folder.entry(folder).or_default() += 1;
        assert!(bytes.len() <= 13 * 1024, "{name}: Small is 1-12 KiB");
    }
    assert!((300..=400).contains(&in_cur), "about 70% in cur/: {in_cur}");
    assert_eq!(
        per_folder.len(),
        5,
        "every folder gets mail: {per_folder:?}"
    );
}

#[test]
fn mtime_is_delivery_date() {
    let dir = tempfile::tempdir().unwrap();
    write_maildir(dir.path(), &spec(5, 50, 2, SizeModel::Small)).unwrap();
    for (rel, (_, mtime)) in snapshot(dir.path()) {
        if rel.file_name().unwrap() == "maildirfolder" {
            continue;
        }
        let name = rel.file_name().unwrap().to_str().unwrap();
        let secs: u64 = name.split('.').next().unwrap().parse().unwrap();
        assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(secs), "{name}");
        assert!((EPOCH..EPOCH + SPAN).contains(&secs));
    }
}

#[test]
fn every_message_parses() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(11, 400, 8, SizeModel::Small);
    s.markers = Some(markers());
    write_maildir(dir.path(), &s).unwrap();
    let big = tempfile::tempdir().unwrap();
    write_maildir(big.path(), &spec(12, 150, 4, SizeModel::Realistic)).unwrap();

    let all: Vec<_> = messages(dir.path())
        .into_iter()
        .chain(messages(big.path()))
        .collect();
    assert_eq!(all.len(), 550);
    let (mut crlf, mut lf, mut encoded, mut raw8, mut qp, mut b64, mut html, mut attach) =
        (0, 0, 0, 0, 0, 0, 0, 0);
    for (path, bytes) in &all {
        let msg = mail_parser::MessageParser::default()
            .parse(bytes.as_slice())
            .unwrap_or_else(|| panic!("{path:?} does not parse"));
        let from = msg.from().and_then(|a| a.first());
        assert!(
            from.and_then(|a| a.address())
                .is_some_and(|a| a.contains('@')),
            "{path:?}: From"
        );
        assert!(
            msg.subject().is_some_and(|s| !s.is_empty()),
            "{path:?}: Subject"
        );
        assert!(msg.date().is_some(), "{path:?}: Date");
        assert!(msg.message_id().is_some(), "{path:?}: Message-ID");
        assert!(!msg.return_path().is_empty(), "{path:?}: Return-Path");
        assert!(msg.received().is_some(), "{path:?}: Received");
        assert!(msg.body_text(0).is_some(), "{path:?}: a text body");

        let crlf_lines = bytes.windows(2).filter(|w| w == b"\r\n").count();
        let lf_lines = bytes.iter().filter(|&&b| b == b'\n').count();
        if crlf_lines == lf_lines {
            crlf += 1;
        } else {
            assert_eq!(crlf_lines, 0, "{path:?}: mixed line ends");
            lf += 1;
        }
        let text = String::from_utf8(bytes.clone()).unwrap();
        let head = text.split("\n\n").next().unwrap().replace('\r', "");
        assert!(head.lines().all(|l| l.len() < 998), "{path:?}: long line");
        encoded += usize::from(head.contains("=?UTF-8?B?") || head.contains("=?ISO-8859-1?Q?"));
        raw8 += usize::from(!head.is_ascii());
        qp += usize::from(text.contains("quoted-printable"));
        b64 += usize::from(text.contains("Content-Transfer-Encoding: base64"));
        html += usize::from(msg.body_html(0).is_some() && text.contains("text/html"));
        attach += usize::from(msg.attachment_count() > 0);
        // mail-parser must decode the encoded words back into text.
        assert!(!msg.subject().unwrap().contains("=?"), "{path:?}");
    }
    for (what, n) in [
        ("crlf", crlf),
        ("lf", lf),
        ("encoded words", encoded),
        ("raw 8-bit headers", raw8),
        ("quoted-printable", qp),
        ("base64", b64),
        ("html", html),
        ("attachments", attach),
    ] {
        assert!(n >= 10, "{what}: only {n} of {}", all.len());
    }
}

#[test]
fn base64_lines_are_76() {
    let dir = tempfile::tempdir().unwrap();
    write_maildir(dir.path(), &spec(13, 60, 1, SizeModel::Realistic)).unwrap();
    let mut checked = 0;
    for (_, bytes) in messages(dir.path()) {
        let text = String::from_utf8(bytes).unwrap().replace('\r', "");
        for part in text.split("Content-Transfer-Encoding: base64\n\n").skip(1) {
            let lines: Vec<&str> = part
                .lines()
                .take_while(|l| !l.is_empty() && !l.starts_with("--"))
                .collect();
            for l in &lines[..lines.len() - 1] {
                assert_eq!(l.len(), 76);
            }
            checked += lines.len();
        }
    }
    assert!(checked > 100, "only {checked} base64 lines seen");
}

#[test]
fn exactly_one_duplicate_message_id() {
    let dir = tempfile::tempdir().unwrap();
    write_maildir(dir.path(), &spec(17, 200, 4, SizeModel::Small)).unwrap();
    let mut ids: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for (path, bytes) in messages(dir.path()) {
        let text = String::from_utf8(bytes).unwrap().replace('\r', "");
        let id = header(&text, "Message-ID").unwrap().to_owned();
        ids.entry(id).or_default().push(path);
    }
    let dups: Vec<_> = ids.values().filter(|v| v.len() > 1).collect();
    assert_eq!(dups.len(), 1, "{dups:?}");
    let pair = dups[0];
    assert_eq!(pair.len(), 2);
    assert_ne!(
        pair[0].parent().unwrap().parent(),
        pair[1].parent().unwrap().parent(),
        "the pair sits in two folders"
    );
}

#[test]
fn markers_planted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(19, 100, 3, SizeModel::Realistic);
    let m = markers();
    s.markers = Some(m.clone());
    let summary = write_maildir(dir.path(), &s).unwrap();
    assert_eq!(summary.folders.last().unwrap(), &m.folder);
    assert_eq!(summary.folders.len(), 4);
    let marker_dir = dir.path().join(".Zqx Folder 74");
    let msgs: Vec<_> = messages(dir.path())
        .into_iter()
        .filter(|(p, _)| p.starts_with(".Zqx Folder 74"))
        .collect();
    assert!(marker_dir.is_dir());
    assert!(!msgs.is_empty(), "the marker folder has mail");
    let all = messages(dir.path());
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap().replace('\r', "");
    assert!(all
        .iter()
        .any(|(_, b)| header(&text(b), "Subject").is_some_and(|s| s.contains(&m.subject))));
    assert!(all.iter().any(|(_, b)| {
        let t = text(b);
        t.split_once("\n\n").unwrap().1.contains(&m.body)
    }));
    assert!(all
        .iter()
        .any(|(_, b)| header(&text(b), "From")
            .is_some_and(|s| s.contains(&format!("<{}>", m.address)))));

    // A bare local part gets a domain; bad folder names are refused.
    let mut bare = m.clone();
    bare.address = "zqxlocal".into();
    s.markers = Some(bare);
    let d2 = tempfile::tempdir().unwrap();
    write_maildir(d2.path(), &s).unwrap();
    assert!(messages(d2.path())
        .iter()
        .any(|(_, b)| text(b).contains("<zqxlocal@example.net>")));
    for bad in ["a.b", "", "/x", "INBOX"] {
        let mut bm = m.clone();
        bm.folder = bad.into();
        s.markers = Some(bm);
        let err = write_maildir(tempfile::tempdir().unwrap().path(), &s).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn tiny_specs() {
    for n in [0, 1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(23, n, 1, SizeModel::Small);
        s.markers = Some(markers());
        let summary = write_maildir(dir.path(), &s).unwrap();
        assert_eq!(summary.messages, n);
        assert_eq!(messages(dir.path()).len(), n);
    }
    let err = write_maildir(
        tempfile::tempdir().unwrap().path(),
        &spec(1, 1, 0, SizeModel::Small),
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    // More folders than the name list still gives distinct, valid names.
    let dir = tempfile::tempdir().unwrap();
    let summary = write_maildir(dir.path(), &spec(2, 40, 20, SizeModel::Small)).unwrap();
    let unique: std::collections::HashSet<_> = summary.folders.iter().collect();
    assert_eq!(unique.len(), 20);
}

#[test]
fn realistic_sizes_match_perf_md() {
    let dir = tempfile::tempdir().unwrap();
    let summary = write_maildir(dir.path(), &spec(2024, 2000, 6, SizeModel::Realistic)).unwrap();
    let mut sizes: Vec<u64> = messages(dir.path())
        .iter()
        .map(|(_, b)| b.len() as u64)
        .collect();
    assert_eq!(sizes.len(), 2000);
    sizes.sort_unstable();
    let median = (sizes[999] + sizes[1000]) as f64 / 2.0;
    let mean = summary.bytes as f64 / 2000.0;
    let (want_median, want_mean) = (7.0 * 1024.0, 58.0 * 1024.0);
    assert!(
        (median / want_median - 1.0).abs() <= 0.15,
        "median {median} vs {want_median}"
    );
    assert!(
        (mean / want_mean - 1.0).abs() <= 0.15,
        "mean {mean} vs {want_mean}"
    );
    assert!(*sizes.last().unwrap() <= 8 * 1024 * 1024);
}

#[test]
fn quantile_table_is_monotonic() {
    assert!(REALISTIC_QUANTILES
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    assert_eq!(quantile_size(0), 1400);
    assert_eq!(quantile_size(500_000), 7168);
    assert_eq!(quantile_size(1_000_000), 8_000_000);
}

#[test]
fn dates_are_rfc5322() {
    assert_eq!(rfc5322_date(0, 0), "Thu, 1 Jan 1970 00:00:00 +0000");
    // 2024-03-05T09:12:03Z
    assert_eq!(
        rfc5322_date(1_709_629_923, 60),
        "Tue, 5 Mar 2024 10:12:03 +0100"
    );
    assert_eq!(
        rfc5322_date(1_709_629_923, -300),
        "Tue, 5 Mar 2024 04:12:03 -0500"
    );
    assert_eq!(
        rfc5322_date(951_782_400, 330),
        "Tue, 29 Feb 2000 05:30:00 +0530"
    );
}

#[test]
fn quoted_printable_and_encoded_words() {
    let qp = qp_encode(&format!("{}\nGrüße = x \n", "ä".repeat(40)));
    assert!(qp.lines().all(|l| l.len() <= 76), "{qp}");
    assert!(qp.contains("Gr=C3=BC=C3=9Fe =3D x=20"));
    assert_eq!(
        encoded_words_q_latin1("Jürgen Müller").unwrap(),
        "=?ISO-8859-1?Q?J=FCrgen_M=FCller?="
    );
    assert!(encoded_words_q_latin1("山田").is_none());
    let long = encoded_words_b(&"日本語".repeat(20));
    assert!(long.lines().count() > 1);
    assert!(long.lines().all(|l| l.trim().len() <= 75));
    assert_eq!(
        b64(b"any carnal pleas", B64_STD, true),
        "YW55IGNhcm5hbCBwbGVhcw=="
    );
}

/// Writes a sample Maildir for `benches/dovecot-compare.sh`:
/// `MAILFERRY_SAMPLE_DIR=/tmp/mf-sample MAILFERRY_SAMPLE_MESSAGES=2000 cargo test -p mailferry
/// --lib sample::tests::write_bench_sample -- --ignored`.
#[test]
#[ignore = "writes a sample for benches/dovecot-compare.sh; set MAILFERRY_SAMPLE_DIR"]
fn write_bench_sample() {
    let dir = std::env::var_os("MAILFERRY_SAMPLE_DIR").expect("set MAILFERRY_SAMPLE_DIR");
    let messages = std::env::var("MAILFERRY_SAMPLE_MESSAGES")
        .map_or(2000, |n| n.parse().expect("MAILFERRY_SAMPLE_MESSAGES"));
    let summary =
        write_maildir(Path::new(&dir), &spec(1, messages, 8, SizeModel::Realistic)).unwrap();
    println!(
        "messages={} bytes={} folders={}",
        summary.messages,
        summary.bytes,
        summary.folders.len()
    );
}

/// The mbox writer holds the same messages as the Maildir writer, as the mbox source reads
/// them back: same folders, same bytes (CRLF and LF ones, `From ` lines quoted and
/// unquoted), same delivery dates.
#[test]
fn mbox_corpus_reads_back_as_the_maildir_one() {
    use mailferry_agent::source::{from_spec, Prior};
    let (maildir, mbox) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = spec(31, 300, 8, SizeModel::Small);
    let a = write_maildir(maildir.path(), &s).unwrap();
    let b = write_mbox(mbox.path(), &s).unwrap();
    assert_eq!(a, b);
    let read = |spec: String| {
        let src = from_spec(&spec, &Default::default()).unwrap();
        let listing = src.list(&Prior::default()).unwrap();
        assert!(listing.bad.is_empty(), "{spec}: {:?}", listing.bad);
        let mut out: Vec<(String, i64, String)> = listing
            .items
            .iter()
            .map(|item| {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut src.open(item).unwrap(), &mut bytes).unwrap();
                assert_eq!(bytes.len() as u64, item.size);
                (
                    item.folder.to_string(),
                    item.internal_date,
                    mailferry_core::sha256_hex(&bytes),
                )
            })
            .collect();
        out.sort();
        out
    };
    let from_maildir = read(format!("maildir:{}", maildir.path().display()));
    let from_mbox = read(format!("mbox:{}", mbox.path().display()));
    assert_eq!(from_maildir.len(), 300);
    assert_eq!(from_maildir, from_mbox);
}
