use super::*;
use proptest::prelude::*;

/// Writes messages the way `mailferry export --format mbox` does.
fn write_mbox(msgs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (from_line, body) in msgs {
        out.extend_from_slice(from_line);
        let q = QuotingWriter::new(&mut out);
        let mut q = q;
        q.write_all(body).unwrap();
        let (out2, nl) = q.finish().unwrap();
        if !nl {
            out2.push(b'\n');
        }
        out2.push(b'\n');
    }
    out
}

/// A reader that hands out at most `k` bytes per call.
struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.len().min(self.1).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fn read_message(file: &[u8], m: &Scanned, buf: usize, out_chunk: usize) -> Vec<u8> {
    let raw = &file[m.start as usize..(m.start + m.len) as usize];
    let mut r = MessageReader::new(
        Trickle(raw, buf.max(1)),
        m.len,
        Some(digest8(&m.sha256)),
        buf,
    );
    let mut out = Vec::new();
    let mut chunk = vec![0u8; out_chunk.max(1)];
    loop {
        let n = r.read(&mut chunk).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

fn digest8(sha: &[u8; 32]) -> [u8; 8] {
    sha[..8].try_into().unwrap()
}

#[test]
fn asctime_vectors() {
    assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
    assert_eq!(asctime(1_704_067_200), "Mon Jan  1 00:00:00 2024");
    assert_eq!(asctime(951_782_400 + 86_399), "Tue Feb 29 23:59:59 2000");
    assert_eq!(asctime(-1), "Wed Dec 31 23:59:59 1969");
    assert_eq!(asctime(-62_167_219_200), "Sat Jan  1 00:00:00 0000");
    assert_eq!(asctime(253_402_300_799), "Fri Dec 31 23:59:59 9999");
}

#[test]
fn odd_envelope_dates_read_as_before() {
    // Names in any case, a leap second, a zone name that is not a zone, day 0 refused.
    assert_eq!(
        parse_envelope_date("mon JAN 1 00:00:00 2024"),
        Some(1_704_067_200)
    );
    assert_eq!(
        parse_envelope_date("Sun Dec 31 23:59:60 2023"),
        Some(1_704_067_200)
    );
    assert_eq!(
        parse_envelope_date("Mon, Jan 1 00:00:00 XYZ 2024"),
        Some(1_704_067_200)
    );
    assert_eq!(
        parse_envelope_date("Thu Feb 29 00:00:00 2024"),
        Some(1_709_164_800)
    );
    assert_eq!(
        parse_envelope_date("Sat Jan  1 00:00:00 0000"),
        Some(-62_167_219_200)
    );
    for bad in [
        "Mon Jan  0 00:00:00 2024",
        "Thu Feb 29 00:00:00 2023",
        "Mon Jan  1 00:00:00 +2400 2024",
        "Mon Jan  1 00:00:00 +0060 2024",
        "Mon Jan  1 00:00:00 24",
        "Mon Jan  1 00:00:00 02024",
        "Mon Jan  1 0:0:0:0 2024",
        "Mon Jan  1 000:00 2024",
    ] {
        assert_eq!(parse_envelope_date(bad), None, "{bad:?}");
    }
}

#[test]
fn envelope_dates_are_read_liberally() {
    let jan1 = Some(1_704_067_200);
    assert_eq!(parse_envelope_date("Mon Jan  1 00:00:00 2024"), jan1);
    assert_eq!(parse_envelope_date("Mon Jan 01 00:00:00 +0000 2024"), jan1);
    assert_eq!(parse_envelope_date("Mon Jan 1 01:00:00 2024 +0100"), jan1);
    assert_eq!(parse_envelope_date("Jan 1 00:00 2024"), jan1);
    assert_eq!(parse_envelope_date("Mon Jan  1 00:00:00 GMT 2024"), jan1);
    assert_eq!(
        parse_envelope_date("Mon Jan  1 00:00:00 2024 remote from x"),
        jan1
    );
    assert_eq!(parse_envelope_date("Sat Feb 31 00:00:00 2024"), None);
    assert_eq!(parse_envelope_date("here on, the plan is"), None);
    assert_eq!(parse_envelope_date("Mon Jan  1 25:00:00 2024"), None);
    assert_eq!(parse_envelope_date(""), None);
    assert_eq!(
        parse_separator(b"From alice@example.com Mon Jan  1 00:00:00 2024\r\n"),
        Envelope {
            sender: Some(b"alice@example.com".to_vec()),
            date: jan1
        }
    );
    assert_eq!(
        parse_separator(b"From \n"),
        Envelope {
            sender: None,
            date: None
        }
    );
}

#[test]
fn splits_strips_the_separating_blank_line_and_unquotes() {
    let file = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: one\n\n>From here\n>>From there\nFrom-less\n\nFrom b@x Tue Jan  2 00:00:00 2024\nStatus: RO\nX-Status: AF\nDate: Wed, 3 Jan 2024 00:00:00 +0000\n\nbody\n\n\n";
    let ms = scan(&file[..]).unwrap();
    assert_eq!(ms.len(), 2);
    let one = read_message(file, &ms[0], 7, 3);
    assert_eq!(one, b"Subject: one\n\nFrom here\n>From there\nFrom-less\n");
    assert_eq!(ms[0].size, one.len() as u64);
    assert_eq!(ms[0].len, one.len() as u64 + 2);
    assert_eq!(ms[0].envelope.date, Some(1_704_067_200));
    let two = read_message(file, &ms[1], 4096, 4096);
    // Only the last blank line separates; the one before is the message's own.
    assert!(
        two.ends_with(b"body\n\n"),
        "{:?}",
        String::from_utf8_lossy(&two)
    );
    assert_eq!(ms[1].flags, "SRF");
    assert_eq!(ms[1].date_header, Some(1_704_240_000));
    assert!(ms.iter().all(|m| m.problem.is_none()));
}

#[test]
fn separators_need_a_blank_line_or_a_date() {
    // After a blank line any `From ` line separates; without one it needs a date.
    let file = b"From a Mon Jan  1 00:00:00 2024\nA: 1\n\nbody\nFrom here on we go\nFrom b Mon Jan  1 00:00:00 2024\nB: 2\n\nx\n\nFrom c\nC: 3\n\n";
    let ms = scan(&file[..]).unwrap();
    assert_eq!(ms.len(), 3, "{ms:?}");
    assert_eq!(
        read_message(file, &ms[0], 10, 10),
        b"A: 1\n\nbody\nFrom here on we go\n"
    );
    assert_eq!(ms[2].envelope.sender.as_deref(), Some(&b"c"[..]));
    assert_eq!(ms[2].envelope.date, None);
}

#[test]
fn truncation_and_emptiness_are_named() {
    let ok = b"From a Mon Jan  1 00:00:00 2024\nA: 1\n\nbody\n\n";
    let problem = |file: &[u8]| -> Vec<Option<String>> {
        scan(file).unwrap().into_iter().map(|m| m.problem).collect()
    };
    assert_eq!(problem(ok), [None]);
    let mut f = ok.to_vec();
    f.extend_from_slice(b"From b Mon Jan  1 00:00:00 2024\nA: 2\n\nbody without newline");
    let p = problem(&f);
    assert_eq!(p[0], None);
    assert!(
        p[1].as_deref().unwrap().contains("no final newline"),
        "{p:?}"
    );
    let mut f = ok.to_vec();
    f.extend_from_slice(b"From b Mon Jan  1 00:00:00 2024\nA: 2\nB: 3\n");
    assert!(problem(&f)[1]
        .as_deref()
        .unwrap()
        .contains("inside the header"));
    // A last message without a header block has no header to end inside of: whole
    // (stored, with a warning from the pass).
    let mut f = ok.to_vec();
    f.extend_from_slice(b"From b Mon Jan  1 00:00:00 2024\nand the rest of the digest.\nB: 3\n");
    assert_eq!(problem(&f), [None, None]);
    let mut f = ok.to_vec();
    f.extend_from_slice(b"From b Mon Jan  1 00:00");
    let p = problem(&f);
    assert_eq!(p[0], None, "the message before a cut separator is whole");
    assert!(p[1]
        .as_deref()
        .unwrap()
        .contains("inside its \"From \" line"));
    let mut f = ok.to_vec();
    f.extend_from_slice(b"From b Mon Jan  1 00:00:00 2024\n");
    assert!(problem(&f)[1].as_deref().unwrap().contains("right after"));
    let f = b"From a Mon Jan  1 00:00:00 2024\n\nFrom b Mon Jan  1 00:00:00 2024\nA: 1\n\nx\n\n";
    let p = problem(f);
    assert!(p[0].as_deref().unwrap().starts_with("empty"), "{p:?}");
    assert_eq!(p[1], None);
    // A headers-only last message followed by the usual blank line is whole.
    assert_eq!(
        problem(b"From a Mon Jan  1 00:00:00 2024\nA: 1\n\n"),
        [None]
    );
}

#[test]
fn not_an_mbox() {
    for f in [
        &b"Subject: x\n\nbody\n"[..],
        b"Fro",
        b"\nFrom a Mon Jan  1 00:00:00 2024\n",
    ] {
        assert!(matches!(scan(f), Err(ScanError::NotMbox(_))), "{f:?}");
    }
    let long = [&b"From "[..], &[b'x'; 2000][..], b"\n"].concat();
    assert!(matches!(scan(&long[..]), Err(ScanError::NotMbox(_))));
    assert_eq!(scan(&b""[..]).unwrap(), []);
}

#[test]
fn long_lines_and_long_quote_runs_stream() {
    let mut body = b"A: 1\n\n".to_vec();
    body.extend(std::iter::repeat_n(b'>', 5000));
    body.extend_from_slice(b"From x\n");
    body.extend(std::iter::repeat_n(b'y', 300_000));
    body.extend_from_slice(b"\nFrom Mon Jan  1 00:00:00 2024 is a long line ");
    body.extend(std::iter::repeat_n(b'z', 2000));
    body.extend_from_slice(b"\n");
    let file = write_mbox(&[(b"From a Mon Jan  1 00:00:00 2024\n", &body)]);
    let ms = scan(&file[..]).unwrap();
    assert_eq!(ms.len(), 1, "a quoted From line is never a separator");
    assert_eq!(read_message(&file, &ms[0], 1000, 777), body);
    assert_eq!(ms[0].size, body.len() as u64);
}

#[test]
fn a_changed_file_fails_the_read() {
    let file = write_mbox(&[(b"From a Mon Jan  1 00:00:00 2024\n", b"A: 1\n\nx\n")]);
    let m = &scan(&file[..]).unwrap()[0];
    let mut changed = file.clone();
    changed[m.start as usize + 3] = b'2';
    let raw = &changed[m.start as usize..(m.start + m.len) as usize];
    let mut r = MessageReader::new(raw, m.len, Some(digest8(&m.sha256)), 64);
    let mut out = Vec::new();
    let e = r.read_to_end(&mut out).unwrap_err();
    assert!(e.to_string().contains("changed since it was listed"), "{e}");
}

#[test]
fn source_ids_carry_the_sender_and_count_duplicates() {
    let sha = [0xabu8; 32];
    let (d, s) = id_parts(&sha, Some(b"a b/c:d%"));
    let one = assemble_source_id(&d, 1, s.as_deref());
    let two = assemble_source_id(&d, 2, s.as_deref());
    assert_eq!(one.as_str(), "abababababababab~a%20b%2Fc%3Ad%25");
    assert_eq!(two.as_str(), "abababababababab-2~a%20b%2Fc%3Ad%25");
    assert_eq!(
        envelope_sender(&two),
        None,
        "whitespace is never an envelope sender"
    );
    let (d, s) = id_parts(&sha, Some("MAILER-DAEMON@ü".as_bytes()));
    let id = assemble_source_id(&d, 3, s.as_deref());
    assert_eq!(
        envelope_sender(&id).as_deref(),
        Some("MAILER-DAEMON@ü".as_bytes())
    );
    let (d, s) = id_parts(&sha, Some(&[b'x'; 300]));
    assert_eq!(s, None, "too long to keep");
    assert_eq!(assemble_source_id(&d, 1, None).as_str(), "abababababababab");
    for other in [
        "1700000000.M1P2.host",
        "abababababababab-x~y",
        "ABABABABABABABAB~y",
    ] {
        assert_eq!(envelope_sender(&SourceId::parse(other).unwrap()), None);
    }
}

fn touch(p: &Path, body: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

const M1: &[u8] = b"From a@x Mon Jan  1 00:00:00 2024\nSubject: 1\n\none\n\n";
const M2: &[u8] = b"From b@x Tue Jan  2 00:00:00 2024\nSubject: 2\n\ntwo\n\n";
const M3: &[u8] = b"From MAILER-DAEMON Wed Jan  3 00:00:00 2024\nSubject: 3\n\nthree\n\n";

fn list(root: &Path) -> Listing {
    Mbox::new(root.to_path_buf())
        .list(&crate::source::Prior::default())
        .unwrap()
}

/// issue 17: keywords come from `X-Keywords:` / `Keywords:`, and the bytes moved are
/// the file's, headers included.
#[test]
fn keywords_headers_are_read_as_they_are_issue17() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("box");
    let m1 = &b"From a@x Mon Jan  1 00:00:00 2024\nStatus: RO\nX-Keywords: $Junk, ProjectX\n\t$Label1\nSubject: 1\n\none\n\n"[..];
    let m2 = &b"From b@x Tue Jan  2 00:00:00 2024\nKeywords: Work,,Work bad\"q\nX-Status: F\n\nX-Keywords: body-not-header\n\n"[..];
    touch(&f, &[m1, m2].concat());
    let l = list(&f);
    let flags: Vec<&str> = l.items.iter().map(|i| i.flags.as_str()).collect();
    assert_eq!(flags, ["S $Junk $Label1 ProjectX", "F Work"]);
    assert!(l.bad.is_empty(), "{:?}", l.bad);
    let src = Mbox::new(f.clone());
    let mut got = Vec::new();
    src.open(&l.items[0])
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got, &m1[34..m1.len() - 1], "message bytes as in the file");
}

#[test]
fn ids_survive_deletions_and_appends() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("mbox");
    touch(&p, &[M1, M2, M3, M2].concat());
    let ids = |l: &Listing| -> Vec<String> { l.items.iter().map(|i| i.name()).collect() };
    let first = ids(&list(&p));
    assert_eq!(first.len(), 4);
    assert!(first[3].contains("-2~b@x"), "{first:?}");
    assert!(first.iter().all(|n| n.starts_with("INBOX/")));
    touch(&p, &[M2, M3, M2, M1].concat());
    let second = ids(&list(&p));
    assert_eq!(
        second,
        [
            first[1].clone(),
            first[2].clone(),
            first[3].clone(),
            first[0].clone()
        ]
    );
    let l = list(&p);
    assert_eq!(l.items[1].internal_date, 1_704_240_000);
    for item in &l.items {
        let mut out = Vec::new();
        Mbox::new(p.clone())
            .open(item)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len() as u64, item.size);
        assert!(out.starts_with(b"Subject: "));
    }
}

#[test]
fn directories_nest_and_bad_entries_are_named() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    touch(&r.join("Inbox"), M1);
    touch(&r.join("Inbox.msf"), b"// <!-- <mdb:mork:z v=\"1.4\"/> -->");
    touch(&r.join("Inbox.sbd/Receipts"), M2);
    touch(&r.join("Archive/2024"), &[M1, M3].concat());
    touch(&r.join("empty"), b"");
    touch(&r.join("notes.txt"), b"not mail\n");
    touch(&r.join(".hidden"), b"x");
    touch(&r.join("back\\slash"), M1);
    std::os::unix::fs::symlink("/etc/passwd", r.join("link")).unwrap();
    {
        use std::os::unix::ffi::OsStrExt;
        touch(&r.join(std::ffi::OsStr::from_bytes(b"bad\xff")), M1);
    }
    let l = list(r);
    let folders: Vec<String> = l.items.iter().map(|i| i.folder.to_string()).collect();
    assert_eq!(
        folders,
        ["Archive/2024", "Archive/2024", "Inbox", "Inbox/Receipts"]
    );
    let bad: BTreeMap<&str, &str> = l
        .bad
        .iter()
        .map(|b| (b.item.as_str(), b.reason.as_str()))
        .collect();
    assert_eq!(bad.len(), 4, "{bad:?}");
    assert!(bad["notes.txt"].contains("not an mbox"), "{bad:?}");
    assert!(bad["link"].contains("symbolic link"), "{bad:?}");
    assert!(bad["back\\slash"].contains("backslash"), "{bad:?}");
    assert!(bad["bad\u{fffd}"].contains("UTF-8"), "{bad:?}");
    assert!(l
        .incomplete
        .contains(&FolderName::parse("notes.txt").unwrap()));
}

#[test]
fn a_single_file_that_is_not_an_mbox_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("mail");
    touch(&p, b"Subject: x\n\nbody\n");
    let e = Mbox::new(p)
        .list(&crate::source::Prior::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an mbox"), "{e}");
}

// === property tests ===

fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"From ".to_vec()),
        Just(b"From x Mon Jan  1 00:00:00 2024".to_vec()),
        Just(b">From y".to_vec()),
        Just(b">>>From z".to_vec()),
        Just(b">Fro".to_vec()),
        Just(b">".to_vec()),
        Just(b"Fro".to_vec()),
        Just(b"Subject: x".to_vec()),
        (1usize..3000).prop_map(|n| vec![b'>'; n]),
        (1usize..3000).prop_map(|n| {
            let mut v = vec![b'>'; n];
            v.extend_from_slice(b"From ");
            v
        }),
        proptest::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..80
        ),
    ]
}

fn message_strategy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(line_strategy(), 0..12).prop_map(|lines| {
        let mut m = b"Subject: t\n".to_vec();
        for l in lines {
            m.extend_from_slice(&l);
            m.push(b'\n');
        }
        m
    })
}

fn separator_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n".to_vec()),
        Just(b"From a@b Mon Jan 01 00:00:00 +0000 2024\n".to_vec()),
        Just(b"From -\n".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Quote then unquote is the identity for any bytes, cut anywhere.
    #[test]
    fn unquote_undoes_quote(tokens in proptest::collection::vec(
            prop_oneof![Just(&b">"[..]), Just(&b"From "[..]), Just(&b"Fro"[..]),
                        Just(&b"\n"[..]), Just(&b"m "[..]), Just(&b"x"[..]),
                        Just(&b"\r\n"[..]), Just(&b"\xff"[..])], 0..200),
        chunk in 1usize..50) {
        let data = tokens.concat();
        let mut quoted = Vec::new();
        let mut q = QuotingWriter::new(&mut quoted);
        for c in data.chunks(chunk) {
            q.write_all(c).unwrap();
        }
        q.finish().unwrap();
        prop_assert_eq!(Unquoter::unquote_all(&quoted), data.clone());
        let mut r = MessageReader::new(Trickle(&quoted, chunk), quoted.len() as u64, None, chunk);
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        prop_assert_eq!(back, data);
    }

    /// Messages written as mboxrd split back into exactly those messages, whatever the
    /// read sizes; the listed size is what the reader yields.
    #[test]
    fn split_and_unquote_round_trip(
        msgs in proptest::collection::vec((separator_strategy(), message_strategy()), 1..6),
        scan_chunk in 1usize..5000,
        read_buf in 1usize..300,
        out_chunk in 1usize..300,
    ) {
        let refs: Vec<(&[u8], &[u8])> =
            msgs.iter().map(|(s, m)| (s.as_slice(), m.as_slice())).collect();
        let file = write_mbox(&refs);
        let found = scan(Trickle(&file, scan_chunk)).unwrap();
        prop_assert_eq!(found.len(), msgs.len());
        for (m, (sep, body)) in found.iter().zip(&msgs) {
            prop_assert_eq!(&m.problem, &None);
            prop_assert_eq!(m.size, body.len() as u64);
            prop_assert_eq!(read_message(&file, m, read_buf, out_chunk), body.clone());
            prop_assert_eq!(&m.envelope, &parse_separator(sep));
        }
        // Nothing but the separators and their blank lines is outside the messages.
        let covered: u64 = found.iter().map(|m| m.len).sum::<u64>()
            + msgs.iter().map(|(s, _)| s.len() as u64 + 1).sum::<u64>();
        prop_assert_eq!(covered, file.len() as u64);
    }

    /// Whatever the bytes, splitting never panics and every listed range is inside the
    /// file and reads back at its listed size.
    #[test]
    fn arbitrary_input_splits_safely(tail in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'>'), Just(b'F'), any::<u8>()], 0..600),
        dated in any::<bool>()) {
        let mut file = b"From a Mon Jan  1 00:00:00 2024\n".to_vec();
        file.extend_from_slice(&tail);
        if dated {
            file.extend_from_slice(b"\nFrom b Mon Jan  1 00:00:00 2024\nX: y\n\n");
        }
        for m in scan(&file[..]).unwrap() {
            prop_assert!(m.start + m.len <= file.len() as u64);
            prop_assert_eq!(read_message(&file, &m, 7, 5).len() as u64, m.size);
        }
    }

    #[test]
    fn asctime_parses_back(t in -62_135_596_800i64..253_402_300_799) {
        prop_assert_eq!(parse_envelope_date(&asctime(t)), Some(t));
    }
}
