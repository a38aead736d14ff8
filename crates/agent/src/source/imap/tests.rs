use super::*;
use crate::source::Prior;

/// A message in memory served in pieces, failing on chosen calls the way a dropped
/// connection surfaces once the retries are spent.
struct Fake {
    body: Vec<u8>,
    calls: Vec<(u64, u64)>,
    fail_on: Vec<usize>,
}

impl Pieces for &mut Fake {
    fn piece(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let n = self.calls.len();
        self.calls.push((offset, len));
        if self.fail_on.contains(&n) {
            return Err(io::Error::other("connection lost"));
        }
        let start = (offset as usize).min(self.body.len());
        let end = (start + len as usize).min(self.body.len());
        Ok(self.body[start..end].to_vec())
    }
}

fn fake(len: usize) -> Fake {
    Fake {
        body: (0..len).map(|i| (i * 7 % 251) as u8).collect(),
        calls: Vec::new(),
        fail_on: Vec::new(),
    }
}

fn read_all(r: &mut impl Read, chunk: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn piece_reader_reads_exactly_the_message_in_bounded_pieces() {
    for (len, piece) in [
        (0, 10),
        (1, 10),
        (9, 10),
        (10, 10),
        (11, 10),
        (35, 10),
        (1000, 64),
    ] {
        let mut f = fake(len);
        let body = f.body.clone();
        let got = read_all(&mut PieceReader::new(&mut f, len as u64, piece), 7).unwrap();
        assert_eq!(got, body, "len {len} piece {piece}");
        assert!(f.calls.iter().all(|&(_, l)| l <= piece), "{:?}", f.calls);
        // No round trip beyond the one that shows the end.
        assert_eq!(f.calls.len(), len / piece as usize + 1, "{:?}", f.calls);
    }
}

#[test]
fn piece_reader_shows_a_message_larger_or_smaller_than_listed() {
    let mut f = fake(25);
    let got = read_all(&mut PieceReader::new(&mut f, 20, 10), 64).unwrap();
    assert!(
        got.len() > 20,
        "a larger message yields more than its listed size"
    );
    let mut f = fake(15);
    let got = read_all(&mut PieceReader::new(&mut f, 20, 10), 64).unwrap();
    assert_eq!(got.len(), 15);
}

#[test]
fn piece_reader_resumes_at_the_offset_it_reached_after_an_error() {
    let mut f = fake(45);
    f.fail_on = vec![2];
    let body = f.body.clone();
    let mut r = PieceReader::new(&mut f, 45, 10);
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    let err = loop {
        match r.read(&mut buf) {
            Ok(0) => panic!("ended before the injected failure"),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(err.to_string(), "connection lost");
    out.extend(read_all(&mut r, 64).unwrap());
    assert_eq!(out, body);
    drop(r);
    assert_eq!(f.calls[2], f.calls[3], "the retry asks for the same range");
}

#[test]
fn server_specs_parse_and_refuse_passwords() {
    let s = ServerSpec::parse("imaps://alice@mail.example.com").unwrap();
    assert_eq!(
        (s.implicit_tls, s.port, s.host.as_str()),
        (true, 993, "mail.example.com")
    );
    let s = ServerSpec::parse("imap://alice%40example.com@127.0.0.1:1143/").unwrap();
    assert_eq!((s.implicit_tls, s.port), (false, 1143));
    assert_eq!(s.user, "alice@example.com");
    assert_eq!(s.url(), "imap://alice%40example.com@127.0.0.1:1143");
    let s = ServerSpec::parse("imaps://bob@[::1]:9993").unwrap();
    assert_eq!((s.host.as_str(), s.port), ("::1", 9993));
    assert_eq!(s.url(), "imaps://bob@[::1]:9993");
    let e = ServerSpec::parse("imaps://alice:hunter2@host").unwrap_err();
    assert!(
        !e.contains("hunter2") && e.contains("--password-file"),
        "{e}"
    );
    assert!(!redact("imaps://alice:hunter2@host").contains("hunter2"));
    for bad in [
        "imaps://host",
        "imaps://a@",
        "imaps://a@h:0",
        "imaps://a@h:x",
        "imaps://a@h/INBOX",
        "pop3://a@h",
    ] {
        assert!(ServerSpec::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn internal_dates_parse_with_zones() {
    assert_eq!(parse_internal_date("01-Jan-1970 00:00:00 +0000"), Some(0));
    assert_eq!(
        parse_internal_date("17-Jul-1996 02:44:25 -0700"),
        Some(837_596_665)
    );
    assert_eq!(
        parse_internal_date(" 3-Mar-2024 10:00:00 +0100"),
        Some(1_709_456_400)
    );
    assert_eq!(
        parse_internal_date("29-Feb-2000 12:00:00 +0000"),
        Some(951_825_600)
    );
    for bad in [
        "",
        "32-Jan-2000 00:00:00 +0000",
        "01-Foo-2000 00:00:00 +0000",
        "01-Jan-2000 00:00 +0000",
        "01-Jan-2000 00:00:00 0000",
    ] {
        assert_eq!(parse_internal_date(bad), None, "{bad:?}");
    }
}

#[test]
fn odd_internal_dates_read_as_before() {
    // A day past the month's end runs on into the next month (1709337600 is 2 March
    // 2024, 1677801600 is 3 March 2023); the month's case does not matter; the zone's
    // digits are not range-checked; a leap second counts as the next second.
    assert_eq!(
        parse_internal_date("31-Feb-2024 00:00:00 +0000"),
        Some(1_709_337_600)
    );
    assert_eq!(
        parse_internal_date("31-feb-2023 00:00:00 +0000"),
        Some(1_677_801_600)
    );
    assert_eq!(
        parse_internal_date("01-JAN-1970 00:00:00 -9999"),
        Some(99 * 3600 + 99 * 60)
    );
    assert_eq!(parse_internal_date("31-Dec-1969 23:59:60 +0000"), Some(0));
    assert_eq!(
        parse_internal_date("01-Jan-0000 00:00:00 +0000"),
        Some(-62_167_219_200)
    );
    for bad in [
        "00-Jan-2000 00:00:00 +0000",
        "01-Jan-2000 24:00:00 +0000",
        "01-Jan-2000 00:60:00 +0000",
        "01-Jan-2000 00:00:61 +0000",
        "01-Jan-2000 00:00:00 +000",
        "01-Jan-2000 00:00:00 +0000 x",
        "01-Jan-2000 00:00:00 GMT",
    ] {
        assert_eq!(parse_internal_date(bad), None, "{bad:?}");
    }
}

#[test]
fn flags_map_to_maildir_letters() {
    let f = flags_from_imap([
        "\\Seen",
        "\\Answered",
        "\\Flagged",
        "\\Deleted",
        "\\Draft",
        "\\Recent",
        "$Forwarded",
        "$Junk",
        "\\Unknown",
        "ProjectX",
    ]);
    assert_eq!(f.as_str(), "DFPRST $Junk ProjectX");
    assert_eq!(f.letters(), "DFPRST");
    assert_eq!(f.keywords().collect::<Vec<_>>(), ["$Junk", "ProjectX"]);
    assert_eq!(flags_from_imap([]).as_str(), "");
    assert_eq!(flags_from_imap(["$MDNSent"]).as_str(), " $MDNSent");
}

#[test]
fn message_id_is_unfolded_and_trimmed() {
    assert_eq!(message_id(b"Message-ID: <a@b>\r\n\r\n"), "<a@b>");
    assert_eq!(message_id(b"message-id:\r\n <long@x>\r\n\r\n"), "<long@x>");
    assert_eq!(message_id(b"\r\n"), "");
    assert_ne!(ident("<a@b>", 1, 2), ident("<a@b>", 1, 3));
}

#[test]
fn folder_names_decode_or_are_refused() {
    assert_eq!(
        folder_from_imap("INBOX", Some(".")).unwrap(),
        FolderName::inbox()
    );
    assert_eq!(
        folder_from_imap("inbox", None).unwrap(),
        FolderName::inbox()
    );
    assert_eq!(
        folder_from_imap("Archive.2024", Some("."))
            .unwrap()
            .as_str(),
        "Archive/2024"
    );
    assert_eq!(
        folder_from_imap("Entw&APw-rfe", Some("/"))
            .unwrap()
            .as_str(),
        "Entwürfe"
    );
    for (raw, delim) in [
        ("a.&AC8-b", Some(".")), // decodes to a component containing '/'
        ("..", Some("/")),
        ("x/../y", Some("/")),
        ("bad&Jjo", Some(".")),
        ("ctl&AAE-", Some(".")),
        ("a\\b", Some(".")),
    ] {
        assert!(folder_from_imap(raw, delim).is_err(), "{raw:?}");
    }
    assert!(folder_from_imap(&"x".repeat(1100), None).is_err());
    assert!(quote("a\"b\\c").unwrap() == r#""a\"b\\c""#);
    assert!(quote("a\r\nb").is_err());
}

#[test]
fn uid_sets_compress_and_split() {
    assert_eq!(uid_sets(&[1, 2, 3, 5, 7, 8], 10), vec!["1:3,5,7:8"]);
    assert_eq!(uid_sets(&[1, 3, 5, 7], 2), vec!["1,3", "5,7"]);
    assert!(uid_sets(&[], 5).is_empty());
    assert_eq!(
        uid_sets(&[u32::MAX - 1, u32::MAX], 5),
        vec![format!("{}:{}", u32::MAX - 1, u32::MAX)]
    );
}

#[test]
fn cursors_round_trip_and_source_ids_parse() {
    let c = Cursor {
        uidvalidity: 7,
        highestmodseq: 99,
        uidnext: 12,
        exists: 10,
    };
    assert_eq!(Cursor::parse(&c.to_string()), Some(c));
    assert_eq!(Cursor::parse("1:2:3"), None);
    assert_eq!(parse_source_id(&source_id(7, 42)), Some((7, 42)));
    assert_eq!(
        parse_source_id(&SourceId::parse("maildir-name").unwrap()),
        None
    );
}

#[test]
fn backoff_grows_is_capped_and_jittered() {
    let b = Backoff {
        retries: 8,
        base: Duration::from_millis(100),
        cap: Duration::from_secs(2),
    };
    assert!(
        b.wait(1, 0) >= Duration::from_millis(50)
            && b.wait(1, u64::MAX) <= Duration::from_millis(100)
    );
    assert!(b.wait(3, 0) >= Duration::from_millis(200));
    assert!(b.wait(30, u64::MAX) <= Duration::from_secs(2));
    assert_ne!(b.wait(5, 1), b.wait(5, 12345));
}

#[test]
fn busy_codes_are_recognised() {
    assert!(is_busy("[THROTTLED] slow down"));
    assert!(is_busy(" [unavailable] try later"));
    assert!(!is_busy("[AUTHENTICATIONFAILED] no"));
    assert!(is_busy(
        "Request is throttled. Suggested Backoff Time: 169 milliseconds"
    ));
}

// === A scripted server, for what Dovecot will not do on demand ===

/// How the scripted server behaves.
#[derive(Default)]
struct Script {
    /// Answer this many body fetches with `NO [THROTTLED]` first.
    throttle: std::sync::atomic::AtomicUsize,
    /// Answer EXAMINE with bytes that are not IMAP.
    garbage_on_examine: bool,
    /// The SASL payload the server accepts (base64-decoded).
    accept: Vec<u8>,
    connections: std::sync::atomic::AtomicUsize,
    /// Listing FETCHes served.
    meta_fetches: std::sync::atomic::AtomicUsize,
    body: Vec<u8>,
    /// More messages after `body` (UIDs 2, 3, ...).
    more: Vec<Vec<u8>>,
    /// Refuse (NO) a body fetch that names this UID among others; alone it is served
    /// (a server that fails a whole command for one message).
    refuse_in_group: Option<u32>,
    /// Refuse every body fetch of this UID.
    refuse: Option<u32>,
    /// The most UIDs one body fetch named.
    widest_fetch: std::sync::atomic::AtomicUsize,
    /// A second folder, `Archive` (UIDVALIDITY 88), with these messages as UIDs 1, 2, ...
    archive: Vec<Vec<u8>>,
    /// Every EXAMINE of `Archive` after the first (the listing's) reports this
    /// UIDVALIDITY: the folder was recreated between listing and fetching.
    archive_uidvalidity_later: Option<u32>,
    /// Every EXAMINE of `Archive` after the first is refused (NO).
    refuse_archive_later: bool,
    archive_examines: std::sync::atomic::AtomicUsize,
    /// Body fetches read while an EXAMINE was already waiting behind them, sent without
    /// waiting for their answers.
    examine_behind_fetch: std::sync::atomic::AtomicUsize,
}

impl Script {
    /// The body of `uid`.
    fn message(&self, uid: u32) -> Option<&[u8]> {
        match uid {
            1 => Some(&self.body),
            n => self.more.get(n as usize - 2).map(|b| b.as_slice()),
        }
    }

    fn count(&self) -> usize {
        1 + self.more.len()
    }

    /// The body of `uid` in `Archive`.
    fn archived(&self, uid: u32) -> Option<&[u8]> {
        self.archive
            .get((uid as usize).checked_sub(1)?)
            .map(|b| b.as_slice())
    }
}

/// The scripted server's answer to `UID FETCH uids (UID BODY.PEEK[]<o.l>)`, without its
/// tagged line: one piece per UID that `body` knows, none for the others.
fn pieces<'a>(
    out: &mut Vec<u8>,
    uids: &[u32],
    o: usize,
    l: usize,
    body: impl Fn(u32) -> Option<&'a [u8]>,
) {
    for &uid in uids {
        let Some(body) = body(uid) else {
            continue;
        };
        let data = &body[o.min(body.len())..(o + l).min(body.len())];
        out.extend(
            format!(
                "* {uid} FETCH (UID {uid} BODY[]<{o}> {{{}}}\r\n",
                data.len()
            )
            .bytes(),
        );
        out.extend(data);
        out.extend(b")\r\n");
    }
}

/// The folder an EXAMINE names (`INBOX`, `"Archive" (CONDSTORE)`).
fn examined_name(args: &str) -> &str {
    let name = args.split(" (").next().unwrap_or(args);
    name.trim_matches('"')
}

/// Starts a TLS IMAP server on loopback that follows `script`; returns its port and
/// the PEM of the CA its certificate chains to.
fn scripted_server(script: Arc<Script>) -> (u16, String) {
    let ca = mailferry_core::tls::LocalCa::generate("scripted").unwrap();
    let id = ca.issue_server(&["127.0.0.1"]).unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(mailferry_core::tls::server_config(&id).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            for _ in 0..50 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                script
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (acceptor, script) = (acceptor.clone(), script.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, &script).await;
                    }
                });
            }
        });
    });
    (port, ca.cert_pem())
}

async fn serve(tls: tokio_rustls::server::TlsStream<TcpStream>, script: &Script) -> io::Result<()> {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt as _};
    let (r, mut w) = tokio::io::split(tls);
    let mut r = tokio::io::BufReader::new(r);
    w.write_all(b"* OK scripted server ready\r\n").await?;
    let mut line = String::new();
    // This connection's selected folder: `Some(true)` Archive, `Some(false)` INBOX.
    let mut in_archive: Option<bool> = None;
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let (tag, cmd) = line.trim_end().split_once(' ').unwrap_or(("*", ""));
        let mut out: Vec<u8> = Vec::new();
        if cmd.starts_with("UID FETCH ")
            && !cmd.starts_with("UID FETCH 1:*")
            && String::from_utf8_lossy(r.buffer()).contains(" EXAMINE ")
        {
            script.examine_behind_fetch.fetch_add(1, Ordering::SeqCst);
        }
        if cmd == "CAPABILITY" {
            out.extend(
                format!("* CAPABILITY IMAP4rev1 CONDSTORE AUTH=XOAUTH2\r\n{tag} OK\r\n").bytes(),
            );
        } else if let Some(mech) = cmd.strip_prefix("AUTHENTICATE ") {
            w.write_all(b"+ \r\n").await?;
            let mut answer = String::new();
            r.read_line(&mut answer).await?;
            let got = base64::engine::general_purpose::STANDARD
                .decode(answer.trim_end())
                .unwrap_or_default();
            if mech == "XOAUTH2" && got == script.accept {
                out.extend(format!("{tag} OK logged in\r\n").bytes());
            } else {
                out.extend(format!("{tag} NO [AUTHENTICATIONFAILED] no\r\n").bytes());
            }
        } else if cmd.starts_with("LIST ") {
            out.extend(b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n");
            if !script.archive.is_empty() {
                out.extend(b"* LIST (\\HasNoChildren) \"/\" Archive\r\n");
            }
            out.extend(format!("{tag} OK\r\n").bytes());
        } else if cmd.strip_prefix("EXAMINE ").map(examined_name) == Some("Archive") {
            let later = script.archive_examines.fetch_add(1, Ordering::SeqCst) > 0;
            if later && script.refuse_archive_later {
                in_archive = None;
                out.extend(
                    format!("{tag} NO [NONEXISTENT] Mailbox doesn't exist: Archive\r\n").bytes(),
                );
            } else {
                in_archive = Some(true);
                let v = match script.archive_uidvalidity_later {
                    Some(v) if later => v,
                    _ => 88,
                };
                let n = script.archive.len();
                out.extend(
                    format!(
                        "* {n} EXISTS\r\n* OK [UIDVALIDITY {v}] v\r\n* OK [UIDNEXT {}] n\r\n\
                         {tag} OK [READ-ONLY] done\r\n",
                        n + 1
                    )
                    .bytes(),
                );
            }
        } else if cmd.starts_with("EXAMINE ") {
            in_archive = Some(false);
            if script.garbage_on_examine {
                out.extend(b"* \x01\x02 ))) not imap at all\r\n");
            } else {
                let n = script.count();
                out.extend(
                    format!(
                        "* {n} EXISTS\r\n* OK [UIDVALIDITY 77] v\r\n* OK [UIDNEXT {}] n\r\n\
                         * OK [HIGHESTMODSEQ 5] m\r\n{tag} OK [READ-ONLY] done\r\n",
                        n + 1
                    )
                    .bytes(),
                );
            }
        } else if cmd.starts_with("UID FETCH 1:* (UID FLAGS INTERNALDATE") {
            script.meta_fetches.fetch_add(1, Ordering::SeqCst);
            let hdr = b"Message-ID: <s@x>\r\n\r\n";
            let archive = in_archive == Some(true);
            let count = if archive {
                script.archive.len()
            } else {
                script.count()
            };
            for uid in 1..=count as u32 {
                let body = if archive {
                    script.archived(uid)
                } else {
                    script.message(uid)
                };
                out.extend(
                    format!(
                        "* {uid} FETCH (UID {uid} FLAGS (\\Seen $Forwarded \\Recent) \
                         INTERNALDATE \"01-Jan-2020 00:00:00 +0000\" RFC822.SIZE {} \
                         BODY[HEADER.FIELDS (MESSAGE-ID)] {{{}}}\r\n",
                        body.unwrap_or_default().len(),
                        hdr.len()
                    )
                    .bytes(),
                );
                out.extend(hdr);
                out.extend(b")\r\n");
            }
            out.extend(format!("{tag} OK\r\n").bytes());
        } else if let Some((set, range)) = cmd
            .strip_prefix("UID FETCH ")
            .and_then(|c| c.split_once(" (UID BODY.PEEK[]<"))
        {
            let (o, l) = range.trim_end_matches(">)").split_once('.').unwrap();
            let (o, l): (usize, usize) = (o.parse().unwrap(), l.parse().unwrap());
            let uids: Vec<u32> = set.split(',').map(|u| u.parse().unwrap()).collect();
            script.widest_fetch.fetch_max(uids.len(), Ordering::SeqCst);
            if in_archive != Some(false) {
                if in_archive.is_none() {
                    out.extend(format!("{tag} BAD No mailbox selected\r\n").bytes());
                } else {
                    pieces(&mut out, &uids, o, l, |u| script.archived(u));
                    out.extend(format!("{tag} OK\r\n").bytes());
                }
                w.write_all(&out).await?;
                continue;
            }
            let refused = uids.iter().any(|u| {
                Some(*u) == script.refuse || (uids.len() > 1 && Some(*u) == script.refuse_in_group)
            });
            if refused {
                out.extend(format!("{tag} NO the message cannot be read\r\n").bytes());
            } else if uids != [1] {
                pieces(&mut out, &uids, o, l, |u| script.message(u));
                out.extend(format!("{tag} OK\r\n").bytes());
            } else if script
                .throttle
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                // Exchange's wording: no response code, a suggested wait.
                out.extend(
                    format!(
                        "{tag} NO Request is throttled. Suggested Backoff Time: 40 milliseconds\r\n"
                    )
                    .bytes(),
                );
            } else {
                let data = &script.body[o.min(script.body.len())..(o + l).min(script.body.len())];
                out.extend(format!("* 1 FETCH (UID 1 BODY[]<{o}> {{{}}}\r\n", data.len()).bytes());
                out.extend(data);
                out.extend(format!(")\r\n{tag} OK\r\n").bytes());
            }
        } else {
            out.extend(format!("{tag} BAD unknown command\r\n").bytes());
        }
        w.write_all(&out).await?;
    }
}

fn scripted_source(script: Arc<Script>, dir: &Path, retries: u32) -> Imap {
    let (port, ca) = scripted_server(script);
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(dir.join("token"), "tok3n\n").unwrap();
    let options = SourceOptions {
        oauth_token_file: Some(dir.join("token")),
        source_ca: Some(dir.join("ca.pem")),
        ..Default::default()
    };
    let backoff = Backoff {
        retries,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(20),
    };
    Imap::with_backoff(
        &format!("imaps://alice@127.0.0.1:{port}"),
        &options,
        backoff,
    )
    .unwrap()
}

#[test]
fn xoauth2_and_throttled_fetches_are_retried_until_the_message_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..(2 * PIECE_BYTES as usize + 12345))
        .map(|i| (i % 253) as u8)
        .collect();
    let script = Arc::new(Script {
        throttle: 3.into(),
        accept: b"user=alice\x01auth=Bearer tok3n\x01\x01".to_vec(),
        body: body.clone(),
        ..Default::default()
    });
    let src = scripted_source(script.clone(), dir.path(), 5);
    let listing = src.list(&Prior::default()).unwrap();
    assert!(listing.bad.is_empty(), "{:?}", listing.bad);
    assert_eq!(listing.items.len(), 1);
    let item = &listing.items[0];
    assert_eq!(item.source_id.as_str(), "77-1");
    assert_eq!(item.flags.as_str(), "PS");
    assert_eq!(item.internal_date, 1_577_836_800);
    assert_eq!(item.size, body.len() as u64);
    assert_eq!(
        item.ident,
        Some(ident("<s@x>", 1_577_836_800, body.len() as u64))
    );
    assert_eq!(listing.cursors[&FolderName::inbox()], "77:5:2:1");
    let got = read_all(&mut src.open(item).unwrap(), 64 * 1024).unwrap();
    assert!(got == body, "the message read back differs");
    let throttled = script.throttle.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(throttled, 0, "every throttled fetch was retried");
    // Three waits of the suggested 40 ms (plus at most 10 % jitter), all reported.
    let waited = src.server_backoff();
    assert!(
        waited >= Duration::from_millis(120) && waited <= Duration::from_millis(135),
        "{waited:?}"
    );
    assert_eq!(
        script.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a throttle keeps the connection"
    );

    // Unchanged cursor and every item known: the folder is listed as a delta with
    // nothing in it, with no FETCH (the script would serve one, but the listing must not
    // need it).
    let mut prior = Prior::default();
    let pf = prior.folders.entry(FolderName::inbox()).or_default();
    pf.cursor = Some("77:5:2:1".into());
    pf.items.insert(
        item.source_id.clone(),
        PriorItem {
            flags: item.flags.clone(),
            internal_date: item.internal_date,
            size: item.size,
            ident: item.ident.clone(),
        },
    );
    let again = src.list(&prior).unwrap();
    assert!(again.items.is_empty(), "{:?}", again.items);
    assert_eq!(
        again.delta.get(&FolderName::inbox()),
        Some(&crate::source::DeltaFolder {
            acknowledged: 1,
            bytes: item.size
        })
    );
    let fetches = script
        .meta_fetches
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(fetches, 1, "the unchanged folder was fetched again");
}

/// Issue 18 (CPU per message): small messages fetched ahead share a `UID FETCH`; each
/// still gets its own bytes, and a group the server refuses because of one message is
/// asked for again message by message, so only that one is bad.
#[test]
fn grouped_fetches_give_each_message_its_bytes_and_a_refused_group_goes_again_singly() {
    let dir = tempfile::tempdir().unwrap();
    let body = |uid: usize, len: usize| -> Vec<u8> {
        (0..len).map(|i| ((i * 7 + uid) % 251) as u8).collect()
    };
    let script = Arc::new(Script {
        accept: b"user=alice\x01auth=Bearer tok3n\x01\x01".to_vec(),
        body: body(1, 3000),
        more: (2..=6).map(|uid| body(uid, 1000 + uid * 500)).collect(),
        refuse_in_group: Some(2),
        refuse: Some(5),
        ..Default::default()
    });
    let src = scripted_source(script.clone(), dir.path(), 0);
    let listing = src.list(&Prior::default()).unwrap();
    assert_eq!(listing.items.len(), 6, "{:?}", listing.bad);
    src.prefetch(&listing.items);
    let mut read = 0;
    for item in &listing.items {
        let (_, uid) = parse_source_id(&item.source_id).unwrap();
        let opened = src.open_sized(item);
        if uid == 5 {
            let e = opened
                .err()
                .expect("UID 5 is refused whenever it is asked for");
            assert!(e.to_string().contains("cannot be read"), "{e}");
            continue;
        }
        let mut opened = opened.unwrap();
        let want = script.message(uid).unwrap();
        assert_eq!(opened.size, want.len() as u64, "UID {uid}");
        let got = read_all(&mut opened.reader, 4096).unwrap();
        assert!(got == want, "UID {uid}: other bytes than its own");
        read += 1;
    }
    assert_eq!(read, 5);
    let widest = script
        .widest_fetch
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(widest > 1, "no fetch named more than one message");
}

/// Per listed message: its folder, UID, and its bytes or the error reading it.
type ReadBack = Vec<(FolderName, u32, Result<Vec<u8>, String>)>;

/// A script with INBOX and `Archive`, the same UIDs (1 to 6) in both and other bytes in
/// each, and what the fetcher got for every listed message (in the listing's order):
/// its folder, UID and bytes, or the error.
fn two_folders(tweak: impl FnOnce(&mut Script)) -> (Arc<Script>, ReadBack) {
    let dir = tempfile::tempdir().unwrap();
    let body = |seed: usize, len: usize| -> Vec<u8> {
        (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect()
    };
    let mut script = Script {
        accept: b"user=alice\x01auth=Bearer tok3n\x01\x01".to_vec(),
        body: body(1, 3000),
        more: (2..=6).map(|uid| body(uid, 1000 + uid * 500)).collect(),
        archive: (1..=6)
            .map(|uid| body(100 + uid, 900 + uid * 300))
            .collect(),
        ..Default::default()
    };
    tweak(&mut script);
    let script = Arc::new(script);
    let src = scripted_source(script.clone(), dir.path(), 0);
    let listing = src.list(&Prior::default()).unwrap();
    assert!(listing.bad.is_empty(), "{:?}", listing.bad);
    assert_eq!(listing.items.len(), 12);
    src.prefetch(&listing.items);
    let mut got = Vec::new();
    for item in &listing.items {
        let (_, uid) = parse_source_id(&item.source_id).unwrap();
        let read = src
            .open_sized(item)
            .and_then(|mut o| read_all(&mut o.reader, 4096))
            .map_err(|e| e.to_string());
        got.push((item.folder.clone(), uid, read));
    }
    (script, got)
}

/// Issue 18 (folders over a long link): a connection goes on to the next folder
/// without waiting for its wire to empty (EXAMINE behind the fetches still out), and
/// the same UID in two folders still gets each message its own bytes.
#[test]
fn the_next_folder_is_opened_behind_the_fetches_on_the_wire_and_each_uid_gets_its_own_bytes() {
    let (script, got) = two_folders(|_| {});
    for (folder, uid, read) in &got {
        let want = if folder.as_str() == "Archive" {
            script.archived(*uid)
        } else {
            script.message(*uid)
        };
        let read = read
            .as_ref()
            .unwrap_or_else(|e| panic!("{folder} {uid}: {e}"));
        assert!(
            Some(read.as_slice()) == want,
            "{folder} UID {uid}: other bytes than its own"
        );
    }
    let behind = script
        .examine_behind_fetch
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(behind > 0, "no EXAMINE was sent behind a fetch on the wire");
}

/// Every `Archive` message failed with an error holding each of `words`, and every
/// INBOX message read back as its own bytes.
fn archive_fails_inbox_reads(script: &Script, got: &ReadBack, words: &[&str]) {
    for (folder, uid, read) in got {
        if folder.as_str() == "Archive" {
            let e = read.as_ref().expect_err("an Archive message was read");
            assert!(words.iter().all(|w| e.contains(w)), "{e}");
        } else {
            let read = read
                .as_ref()
                .unwrap_or_else(|e| panic!("{folder} {uid}: {e}"));
            assert!(
                Some(read.as_slice()) == script.message(*uid),
                "{folder} {uid}"
            );
        }
    }
}

/// A folder recreated between listing and fetching (another UIDVALIDITY): its UIDs may
/// name other messages, so none of its messages is read, each fails naming the change,
/// and the other folder's messages are read as they are.
#[test]
fn a_folder_whose_uidvalidity_changed_behind_the_wire_fails_its_messages_only() {
    let (script, got) = two_folders(|s| s.archive_uidvalidity_later = Some(99));
    archive_fails_inbox_reads(
        &script,
        &got,
        &["UIDVALIDITY changed from 88 to 99", "Archive"],
    );
}

/// A folder the server no longer opens: its messages fail with the server's words; the
/// fetches sent behind the refused EXAMINE (which the server answers BAD) do not make
/// anything else fail.
#[test]
fn a_folder_that_cannot_be_opened_behind_the_wire_fails_with_the_servers_words() {
    let (script, got) = two_folders(|s| s.refuse_archive_later = true);
    archive_fails_inbox_reads(&script, &got, &["EXAMINE refused", "Mailbox doesn't exist"]);
}

#[test]
fn a_server_that_sends_garbage_gives_a_named_incomplete_folder() {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(Script {
        garbage_on_examine: true,
        accept: b"user=alice\x01auth=Bearer tok3n\x01\x01".to_vec(),
        ..Default::default()
    });
    let src = scripted_source(script.clone(), dir.path(), 2);
    let listing = src.list(&Prior::default()).unwrap();
    assert!(listing.items.is_empty());
    assert!(listing.incomplete.contains(&FolderName::inbox()));
    assert_eq!(listing.bad.len(), 1);
    assert!(
        listing.bad[0].reason.contains("gave up after 3 attempts"),
        "{:?}",
        listing.bad
    );
    assert_eq!(
        script.connections.load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}

#[test]
fn a_refused_oauth_token_is_a_clear_error_without_retries() {
    let dir = tempfile::tempdir().unwrap();
    let script = Arc::new(Script {
        accept: b"something else".to_vec(),
        ..Default::default()
    });
    let src = scripted_source(script.clone(), dir.path(), 5);
    let err = src.list(&Prior::default()).unwrap_err().to_string();
    assert!(
        err.contains("refused the login") && err.contains("AUTHENTICATIONFAILED"),
        "{err}"
    );
    assert!(!err.contains("tok3n"), "{err}");
    assert_eq!(
        script.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

// === NAMESPACE, prefixes and roles ===

fn ns(prefix: &str, delimiter: &str) -> Namespace {
    Namespace {
        prefix: prefix.into(),
        delimiter: Some(delimiter.into()),
    }
}

#[test]
fn namespace_answers_parse() {
    // RFC 2342's examples, Courier's, and Dovecot's with a shared namespace.
    assert_eq!(
        parse_namespace(b"((\"\" \"/\")) NIL NIL\r\n"),
        Some(NamespaceInfo {
            personal: vec![ns("", "/")],
            ..Default::default()
        })
    );
    assert_eq!(
        parse_namespace(b"((\"INBOX.\" \".\")) NIL ((\"#shared.\" \".\")(\"shared.\" \".\"))"),
        Some(NamespaceInfo {
            personal: vec![ns("INBOX.", ".")],
            other_users: vec![],
            shared: vec![ns("#shared.", "."), ns("shared.", ".")],
        })
    );
    assert_eq!(
        parse_namespace(
            b"((\"\" \"/\")(\"Virtual/\" \"/\")) ((\"~\" \"/\")) ((\"#public/\" \"/\" \"X-PARAM\" (\"FLAG1\" \"FLAG2\")))\r\n"
        ),
        Some(NamespaceInfo {
            personal: vec![ns("", "/"), ns("Virtual/", "/")],
            other_users: vec![ns("~", "/")],
            shared: vec![ns("#public/", "/")],
        })
    );
    // A literal prefix and a NIL delimiter.
    assert_eq!(
        parse_namespace(b"(({6}\r\nINBOX. NIL)) NIL NIL"),
        Some(NamespaceInfo {
            personal: vec![Namespace {
                prefix: "INBOX.".into(),
                delimiter: None
            }],
            ..Default::default()
        })
    );
    for bad in [
        &b""[..],
        b"NIL NIL",
        b"((\"\" \"/\")) NIL NIL trailing",
        b"(\"\" \"/\") NIL NIL",
        b"((\"unclosed \"/\")) NIL NIL",
        b"((\"\" \"/)) NIL NIL",
    ] {
        assert_eq!(
            parse_namespace(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

fn entry(name: &str, delimiter: &str, role: Option<Role>) -> ListEntry {
    ListEntry {
        name: name.into(),
        delimiter: Some(delimiter.into()),
        selectable: true,
        role,
    }
}

fn folders(m: &Mapped) -> Vec<(String, String)> {
    m.folders
        .iter()
        .map(|(f, raw)| (f.to_string(), raw.clone()))
        .collect()
}

#[test]
fn the_personal_prefix_is_mapped_away_and_nothing_is_lost() {
    let info = NamespaceInfo {
        personal: vec![ns("INBOX.", ".")],
        other_users: vec![ns("#users.", ".")],
        shared: vec![ns("#shared.", ".")],
    };
    let map = NameMap::new(Some(&info), None, Namespaces::Personal);
    assert_eq!(map.prefix, "INBOX.");
    let m = map_folders(
        vec![
            entry("INBOX", ".", None),
            entry("INBOX.Sent", ".", Some(Role::Sent)),
            entry("INBOX.Archive.2019", ".", None),
            entry("INBOX.Entw&APw-rfe", ".", None),
            // A stray folder outside the prefix, and one its prefixed twin strips to.
            entry("Foo", ".", None),
            entry("INBOX.Foo", ".", None),
            // INBOX.INBOX cannot become INBOX.
            entry("INBOX.INBOX", ".", None),
            entry("#shared.team", ".", None),
            entry("#users.bob.INBOX", ".", None),
        ],
        &map,
    );
    assert!(m.bad.is_empty(), "{:?}", m.bad);
    let want: Vec<(String, String)> = [
        ("Archive/2019", "INBOX.Archive.2019"),
        ("Entwürfe", "INBOX.Entw&APw-rfe"),
        ("Foo", "Foo"),
        ("INBOX", "INBOX"),
        ("INBOX/Foo", "INBOX.Foo"),
        ("INBOX/INBOX", "INBOX.INBOX"),
        ("Sent", "INBOX.Sent"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(folders(&m), want);
    assert_eq!(
        m.roles.get(&FolderName::parse("Sent").unwrap()),
        Some(&Role::Sent)
    );

    // Asked for all namespaces: the shared ones move too, under their full names.
    let all = NameMap::new(Some(&info), None, Namespaces::All);
    let m = map_folders(
        vec![
            entry("INBOX.Sent", ".", None),
            entry("#shared.team", ".", None),
        ],
        &all,
    );
    assert_eq!(
        folders(&m),
        vec![
            ("#shared/team".to_string(), "#shared.team".to_string()),
            ("Sent".to_string(), "INBOX.Sent".to_string())
        ]
    );
}

#[test]
fn an_empty_prefix_changes_no_name() {
    // Dovecot's default: names as they always were, whatever --source-namespaces says.
    let info = NamespaceInfo {
        personal: vec![ns("", "/")],
        ..Default::default()
    };
    let entries = || {
        vec![
            entry("INBOX", "/", None),
            entry("INBOX/Sub", "/", None),
            entry("Archive/2024", "/", None),
        ]
    };
    for map in [
        NameMap::new(Some(&info), None, Namespaces::Personal),
        NameMap::new(None, None, Namespaces::Personal),
        NameMap::new(Some(&info), Some(""), Namespaces::All),
    ] {
        let m = map_folders(entries(), &map);
        let names: Vec<String> = m.folders.keys().map(|f| f.to_string()).collect();
        assert_eq!(names, ["Archive/2024", "INBOX", "INBOX/Sub"]);
    }
    // --source-prefix wins over the server, for servers without NAMESPACE.
    let map = NameMap::new(None, Some("INBOX/"), Namespaces::Personal);
    let m = map_folders(entries(), &map);
    let names: Vec<String> = m.folders.keys().map(|f| f.to_string()).collect();
    assert_eq!(names, ["Archive/2024", "INBOX", "Sub"]);
}

mod namespace_props {
    use super::*;
    use proptest::prelude::*;

    fn quoted(s: &str) -> String {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }

    proptest! {
        /// Whatever a hostile server sends after `* NAMESPACE `, the parser answers
        /// Some or None and never panics or loops.
        #[test]
        fn arbitrary_namespace_answers_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = parse_namespace(&bytes);
        }

        /// A well-formed answer built from any prefixes and delimiters reads back as
        /// built, each kind in order.
        #[test]
        fn generated_namespace_answers_read_back(
            kinds in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(
                    ("[A-Za-z0-9#./ _\"\\\\-]{0,12}", proptest::option::of("[./\\\\]")),
                    1..3,
                )),
                3,
            ),
        ) {
            let text: Vec<String> = kinds
                .iter()
                .map(|k| match k {
                    None => "NIL".to_string(),
                    Some(list) => format!(
                        "({})",
                        list.iter()
                            .map(|(p, d)| format!(
                                "({} {})",
                                quoted(p),
                                d.as_deref().map_or("NIL".to_string(), quoted)
                            ))
                            .collect::<String>()
                    ),
                })
                .collect();
            let got = parse_namespace(text.join(" ").as_bytes());
            let got = got.expect("a well-formed answer parses");
            let want = |k: &Option<Vec<(String, Option<String>)>>| -> Vec<Namespace> {
                k.iter()
                    .flatten()
                    .map(|(p, d)| Namespace { prefix: p.clone(), delimiter: d.clone() })
                    .collect()
            };
            prop_assert_eq!(got.personal, want(&kinds[0]));
            prop_assert_eq!(got.other_users, want(&kinds[1]));
            prop_assert_eq!(got.shared, want(&kinds[2]));
        }
    }
}
