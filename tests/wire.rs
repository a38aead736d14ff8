//! The wire protocol against the real proxy over real TLS on loopback, with hand-made
//! frames: what a hostile or broken client gets, and that nothing it sends is stored;
//! mirror frames (DELETE, FLAGS) checked with `mailferry export`; one agent per mailbox.

use mailferry_agent::client::Endpoint;
use mailferry_agent::AgentError;
use mailferry_core::frame::{AckStatus, Frame, FrameBuffer, MessageHeader, PROTOCOL_VERSION};
use mailferry_core::profile::Profile;
use mailferry_core::secret::SecretBytes;
use mailferry_core::{Flags, FolderName, MailboxAddr, MoveId, SourceId};
use mailferry_proxy::{Proxy, ProxyConfig, StoreStats, TokenSet};
use mailferry_store::Volume;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Harness {
    _dir: tempfile::TempDir,
    volume: Arc<Volume>,
    url: String,
    ca: rustls::pki_types::CertificateDer<'static>,
    _stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// Stops the proxy (its sessions drain) and closes the volume, so that the real
    /// CLI can open it; returns the temp dir holding `v` (the volume) and `k` (its key).
    async fn shut_down(self) -> tempfile::TempDir {
        let Harness {
            _dir,
            volume,
            _stop,
            serving,
            ..
        } = self;
        drop(_stop);
        serving.await.unwrap();
        drop(volume);
        _dir
    }
}

const TOKEN: &str = "test-token-0123456789";

async fn start() -> Harness {
    start_with(Default::default()).await
}

const TOKEN2: &str = "second-token-0123456789";
const TOKEN3: &str = "third-token-0123456789";

async fn start_with(limits: mailferry_proxy::Limits) -> Harness {
    start_full(limits, Profile::default().commit).await
}

async fn start_full(
    limits: mailferry_proxy::Limits,
    commit: mailferry_core::profile::CommitSettings,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("v");
    Volume::init(&vol, &dir.path().join("k")).unwrap();
    let volume =
        Arc::new(Volume::open(&vol, &dir.path().join("k"), &Profile::default().store).unwrap());
    let ca = mailferry_core::tls::LocalCa::generate("test").unwrap();
    let id = ca.issue_server(&["127.0.0.1"]).unwrap();
    let mut tokens = TokenSet::default();
    for t in [TOKEN, TOKEN2, TOKEN3] {
        tokens.allow(&SecretBytes::new(t.as_bytes().to_vec()));
    }
    let proxy = Proxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        ProxyConfig {
            tls: mailferry_core::tls::server_config(&id).unwrap(),
            backend: mailferry_proxy::Backend::Local {
                tokens,
                volume: volume.clone(),
            },
            commit,
            stats: Arc::new(StoreStats::default()),
            header_timeout: mailferry_proxy::server::HANDSHAKE_TIMEOUT,
            limits,
        },
    )
    .await
    .unwrap();
    let url = format!("https://127.0.0.1:{}", proxy.local_addr().port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(proxy.serve(async {
        let _ = rx.await;
    }));
    Harness {
        _dir: dir,
        volume,
        url,
        ca: ca.cert_der(),
        _stop: tx,
        serving,
    }
}

fn mailbox() -> MailboxAddr {
    MailboxAddr::parse("bob@example.org").unwrap()
}

fn other_mailbox() -> MailboxAddr {
    MailboxAddr::parse("carol@example.org").unwrap()
}

fn endpoint(h: &Harness, token: &str) -> Endpoint {
    Endpoint::new(
        &h.url,
        std::slice::from_ref(&h.ca),
        SecretBytes::new(token.as_bytes().to_vec()),
    )
    .unwrap()
}

fn header(seq: u64, size: u64) -> Frame {
    Frame::Message(MessageHeader {
        seq,
        folder: FolderName::inbox(),
        source_id: SourceId::parse(&format!("m{seq}")).unwrap(),
        flags: Flags::from_maildir("S").unwrap(),
        internal_date: 1_700_000_000,
        size,
    })
}

fn sha(b: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .try_into()
        .unwrap()
}

async fn send(io: &mut (impl AsyncWriteExt + Unpin), frames: &[Frame]) {
    let mut buf = Vec::new();
    for f in frames {
        f.encode(&mut buf);
    }
    io.write_all(&buf).await.unwrap();
    io.flush().await.unwrap();
}

/// Reads server frames until CLOSED, ERROR or end of stream.
async fn read_all(io: &mut (impl AsyncReadExt + Unpin)) -> Vec<Frame> {
    let mut fb = FrameBuffer::new();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), io.read(&mut buf))
            .await
            .expect("server answers within 20 s")
            .unwrap_or(0);
        if n == 0 {
            return out;
        }
        fb.push(&buf[..n]);
        while let Some(f) = fb.next_frame().unwrap() {
            let end = matches!(f, Frame::Closed | Frame::Error { .. });
            out.push(f);
            if end {
                return out;
            }
        }
    }
}

fn open() -> Frame {
    Frame::Open {
        version: PROTOCOL_VERSION,
        move_id: MoveId([1; 16]),
        fence: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_gets_401_and_stores_nothing() {
    let h = start().await;
    let e = endpoint(&h, "not-the-token")
        .open_stream(&mailbox())
        .await
        .unwrap_err();
    match e {
        AgentError::Refused {
            status, message, ..
        } => {
            assert_eq!(status, 401);
            assert!(message.contains("Bearer"), "{message}");
        }
        other => panic!("expected 401, got {other}"),
    }
    assert!(h.volume.mailboxes().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_rejects_a_bad_digest_and_goes_on_flush_is_always_answered() {
    let h = start().await;
    let mut io = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
    let good = b"Subject: ok\r\n\r\nbody\r\n".to_vec();
    send(
        &mut io,
        &[
            open(),
            Frame::Flush,
            header(1, 5),
            Frame::Data(b"hello".to_vec().into()),
            Frame::End {
                seq: 1,
                sha256: [0; 32],
            },
            header(2, good.len() as u64),
            Frame::Data(good.clone().into()),
            Frame::End {
                seq: 2,
                sha256: sha(&good),
            },
            header(3, 3),
            Frame::Data(b"toolong".to_vec().into()),
            Frame::End {
                seq: 3,
                sha256: sha(b"toolong"),
            },
            Frame::Close,
        ],
    )
    .await;
    let frames = read_all(&mut io).await;
    // The FLUSH came before any message: the first ACK answers it, empty. REJECTs are
    // sent as soon as END shows the problem, so they may come before it.
    let first_ack = frames.iter().find(|f| matches!(f, Frame::Ack(_)));
    assert_eq!(
        first_ack,
        Some(&Frame::Ack(vec![])),
        "FLUSH answered first: {frames:?}"
    );
    assert_eq!(frames.last(), Some(&Frame::Closed), "{frames:?}");
    let rejected: Vec<u64> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Reject { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(rejected, vec![1, 3], "{frames:?}");
    let acked: Vec<(u64, AckStatus)> = frames
        .iter()
        .flat_map(|f| match f {
            Frame::Ack(a) => a.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(acked, vec![(2, AckStatus::Stored)]);
    let listed = h.volume.list_messages(&mailbox()).unwrap();
    assert_eq!(listed.len(), 1);
    let msg = listed.into_iter().next().unwrap().unwrap();
    let mut back = Vec::new();
    h.volume.read_message(&msg, &mut back).unwrap();
    assert_eq!(back, good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_end_the_session_with_an_error() {
    let h = start().await;
    let cases: Vec<(Vec<Frame>, u16)> = vec![
        (
            vec![Frame::Open {
                version: 99,
                move_id: MoveId([0; 16]),
                fence: None,
            }],
            505,
        ),
        (vec![header(1, 1)], 400),
        (vec![open(), Frame::Data(b"x".to_vec().into())], 400),
        (
            vec![
                open(),
                header(2, 1),
                Frame::Data(b"x".to_vec().into()),
                Frame::End {
                    seq: 2,
                    sha256: sha(b"x"),
                },
                header(2, 1),
            ],
            400,
        ),
        (vec![open(), Frame::Ack(vec![])], 400),
    ];
    for (frames, code) in cases {
        let mut io = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
        send(&mut io, &frames).await;
        let got = read_all(&mut io).await;
        match got.last() {
            Some(Frame::Error { code: c, .. }) => assert_eq!(*c, code, "{frames:?} → {got:?}"),
            other => panic!("{frames:?}: expected ERROR {code}, got {other:?}"),
        }
    }
    // A hostile folder name is refused by the decoder itself.
    let mut io = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
    let mut raw = Vec::new();
    open().encode(&mut raw);
    let mut payload = Vec::new();
    payload.extend_from_slice(&9u64.to_be_bytes());
    payload.extend_from_slice(&0u64.to_be_bytes());
    payload.extend_from_slice(&1u64.to_be_bytes());
    for s in ["../../etc", "x", ""] {
        payload.extend_from_slice(&(s.len() as u16).to_be_bytes());
        payload.extend_from_slice(s.as_bytes());
    }
    raw.push(0x02);
    raw.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    raw.extend_from_slice(&payload);
    io.write_all(&raw).await.unwrap();
    let got = read_all(&mut io).await;
    assert!(
        matches!(got.last(), Some(Frame::Error { code: 400, message }) if message.contains("folder")),
        "{got:?}"
    );
    // Whatever the broken sessions sent that was complete, nothing of theirs is durable
    // except the one well-formed message of case 4 (seq 2 ended properly).
    let n = h
        .volume
        .list_messages(&mailbox())
        .map(|v| v.len())
        .unwrap_or(0);
    assert!(n <= 1, "{n} messages stored by broken sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_gets_no_http_answer() {
    let h = start().await;
    let addr = h.url.trim_start_matches("https://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /v1/mailboxes/bob%40example.org/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        tcp.read_to_end(&mut buf),
    )
    .await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert!(h.volume.mailboxes().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_a_server_certificate_it_does_not_trust() {
    let h = start().await;
    let other = mailferry_core::tls::LocalCa::generate("someone else").unwrap();
    let ep = Endpoint::new(
        &h.url,
        &[other.cert_der()],
        SecretBytes::new(TOKEN.as_bytes().to_vec()),
    )
    .unwrap();
    let e = ep.open_stream(&mailbox()).await.unwrap_err().to_string();
    assert!(e.contains("TLS handshake failed"), "{e}");
    assert!(Endpoint::new(
        &h.url.replace("https", "http"),
        std::slice::from_ref(&h.ca),
        SecretBytes::new(vec![b'x'])
    )
    .is_err());
}

fn refused(e: AgentError) -> (u16, Option<u64>) {
    match e {
        AgentError::Refused {
            status,
            retry_after,
            ..
        } => (status, retry_after),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limits_answer_429_and_503_with_retry_after_and_free_up() {
    let h = start_with(mailferry_proxy::Limits {
        max_streams: 2,
        max_streams_per_token: 1,
        max_message_bytes: 0,
        ..Default::default()
    })
    .await;
    let a = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
    // The same token again: over its own limit (checked before the mailbox is: 429, not
    // 409).
    let e = endpoint(&h, TOKEN)
        .open_stream(&mailbox())
        .await
        .unwrap_err();
    assert_eq!(refused(e), (429, Some(1)));
    // Another token fills the proxy (with another mailbox: one session per mailbox); a
    // third finds it full.
    let b = endpoint(&h, TOKEN2)
        .open_stream(&other_mailbox())
        .await
        .unwrap();
    let e = endpoint(&h, TOKEN3)
        .open_stream(&other_mailbox())
        .await
        .unwrap_err();
    assert_eq!(refused(e), (503, Some(1)));
    // A closed stream gives its slot back: the agent's retry gets in once it is free.
    drop(a);
    let io = endpoint(&h, TOKEN)
        .open_stream_retrying(&mailbox(), 10)
        .await
        .expect("a slot frees up once the stream is closed");
    drop((io, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_refused_from_its_header_and_the_session_goes_on() {
    let h = start_with(mailferry_proxy::Limits {
        max_message_bytes: 10,
        ..Default::default()
    })
    .await;
    let mut io = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
    let big = b"Subject: too big\r\n\r\n".to_vec();
    let small = b"S: ok\r\n".to_vec();
    send(
        &mut io,
        &[
            open(),
            header(1, big.len() as u64),
            Frame::Data(big.clone().into()),
            Frame::End {
                seq: 1,
                sha256: sha(&big),
            },
            header(2, small.len() as u64),
            Frame::Data(small.clone().into()),
            Frame::End {
                seq: 2,
                sha256: sha(&small),
            },
            Frame::Close,
        ],
    )
    .await;
    let frames = read_all(&mut io).await;
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Reject { seq: 1, reason } if reason.contains("limit"))),
        "{frames:?}"
    );
    assert!(
        frames.contains(&Frame::Ack(vec![(2, AckStatus::Stored)])),
        "{frames:?}"
    );
    assert_eq!(frames.last(), Some(&Frame::Closed));
    assert_eq!(h.volume.list_messages(&mailbox()).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_is_closed_and_frees_its_slot() {
    let h = start_with(mailferry_proxy::Limits {
        max_streams: 1,
        idle_timeout: std::time::Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut io = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
    send(&mut io, &[open()]).await;
    let got = read_all(&mut io).await;
    assert!(
        matches!(got.last(), Some(Frame::Error { code: 408, .. })),
        "{got:?}"
    );
    drop(io);
    // The only slot is free again.
    endpoint(&h, TOKEN2)
        .open_stream_retrying(&mailbox(), 10)
        .await
        .expect("the idle stream's slot was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_stream_stores_nothing_of_the_cut_message() {
    let h = start().await;
    let mut io = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
    let body = b"Subject: whole\r\n\r\nbody\r\n".to_vec();
    let mut raw = Vec::new();
    for f in [
        open(),
        header(1, body.len() as u64),
        Frame::Data(body.clone().into()),
        Frame::End {
            seq: 1,
            sha256: sha(&body),
        },
        header(2, 1000),
        Frame::Data(vec![b'x'; 400].into()),
    ] {
        f.encode(&mut raw);
    }
    raw.truncate(raw.len() - 100); // cut inside the last DATA frame
    io.write_all(&raw).await.unwrap();
    drop(io);
    // The complete message is kept (a later pass sees it as a duplicate); nothing of
    // the cut one is. Wait (bounded: 60 s, for a loaded machine) for the session to end
    // and commit.
    let mut n = 0;
    for _ in 0..1200 {
        n = h
            .volume
            .list_messages(&mailbox())
            .map(|v| v.len())
            .unwrap_or(0);
        if n == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(n, 1);
    let msg = h
        .volume
        .list_messages(&mailbox())
        .unwrap()
        .remove(0)
        .unwrap();
    let mut back = Vec::new();
    h.volume.read_message(&msg, &mut back).unwrap();
    assert_eq!(back, body);
    assert!(h.volume.verify().unwrap().damaged.is_empty());
}

fn message_frames(seq: u64, source_id: &str, flags: &str, body: &[u8]) -> Vec<Frame> {
    vec![
        Frame::Message(MessageHeader {
            seq,
            folder: FolderName::inbox(),
            source_id: SourceId::parse(source_id).unwrap(),
            flags: Flags::from_maildir(flags).unwrap(),
            internal_date: 1_700_000_000,
            size: body.len() as u64,
        }),
        Frame::Data(body.to_vec().into()),
        Frame::End {
            seq,
            sha256: sha(body),
        },
    ]
}

fn acks(frames: &[Frame]) -> Vec<(u64, AckStatus)> {
    frames
        .iter()
        .flat_map(|f| match f {
            Frame::Ack(a) => a.clone(),
            _ => vec![],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_flags_frames_mirror_the_source_and_export_shows_it() {
    let h = start().await;
    let bodies: Vec<Vec<u8>> = (1..=3)
        .map(|i| format!("Subject: m{i}\r\n\r\nbody {i}\r\n").into_bytes())
        .collect();
    // First pass: three messages.
    let mut io = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
    let mut frames = vec![open()];
    for (i, b) in bodies.iter().enumerate() {
        frames.extend(message_frames(i as u64 + 1, &format!("m{}", i + 1), "S", b));
    }
    frames.push(Frame::Close);
    send(&mut io, &frames).await;
    let got = read_all(&mut io).await;
    assert_eq!(got.last(), Some(&Frame::Closed), "{got:?}");
    assert_eq!(acks(&got).len(), 3, "{got:?}");

    // Mirror pass: m1 deleted and m2's flags changed at the source; two changes for
    // messages the store does not hold; and a new message whose flags change in the same
    // session, after it (applied in seq order).
    let mut io = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
    let new = b"Subject: m4\r\n\r\nnew\r\n".to_vec();
    let mut frames = vec![
        open(),
        Frame::Delete {
            seq: 1,
            folder: FolderName::inbox(),
            source_id: SourceId::parse("m1").unwrap(),
        },
        Frame::SetFlags {
            seq: 2,
            folder: FolderName::inbox(),
            source_id: SourceId::parse("m2").unwrap(),
            flags: Flags::from_maildir("FS").unwrap(),
        },
        Frame::Delete {
            seq: 3,
            folder: FolderName::inbox(),
            source_id: SourceId::parse("never-stored").unwrap(),
        },
        Frame::SetFlags {
            seq: 4,
            folder: FolderName::parse("Archive").unwrap(),
            source_id: SourceId::parse("m3").unwrap(),
            flags: Flags::from_maildir("R").unwrap(),
        },
    ];
    frames.extend(message_frames(5, "m4", "", &new));
    frames.push(Frame::SetFlags {
        seq: 6,
        folder: FolderName::inbox(),
        source_id: SourceId::parse("m4").unwrap(),
        flags: Flags::from_maildir("RS").unwrap(),
    });
    frames.push(Frame::Close);
    send(&mut io, &frames).await;
    let got = read_all(&mut io).await;
    assert_eq!(got.last(), Some(&Frame::Closed), "{got:?}");
    assert_eq!(
        acks(&got),
        vec![
            (1, AckStatus::Applied),
            (2, AckStatus::Applied),
            (3, AckStatus::NotFound),
            (4, AckStatus::NotFound),
            (5, AckStatus::Stored),
            (6, AckStatus::Applied),
        ]
    );
    // A change out of order is a protocol violation: seqs are shared with MESSAGE.
    let mut io = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
    let mut frames = vec![open()];
    frames.extend(message_frames(7, "m5", "", b"x"));
    frames.push(Frame::Delete {
        seq: 7,
        folder: FolderName::inbox(),
        source_id: SourceId::parse("m5").unwrap(),
    });
    send(&mut io, &frames).await;
    let got = read_all(&mut io).await;
    assert!(
        matches!(got.last(), Some(Frame::Error { code: 400, message }) if message.contains("seq")),
        "{got:?}"
    );
    drop(io);

    // What the real CLI exports from the volume once the proxy is gone.
    let dir = h.shut_down().await;
    let env = crate::util::Env { dir };
    let out = env.path("export");
    let mut cmd = crate::util::mailferry();
    cmd.args(["export", "--volume"])
        .arg(env.path("v"))
        .arg("--key-file")
        .arg(env.path("k"))
        .args([
            "--mailbox",
            "bob@example.org",
            "--format",
            "maildir",
            "--out",
        ])
        .arg(&out);
    let o = crate::util::run(&mut cmd);
    assert!(o.status.success(), "{}", crate::util::describe(&o));
    let exported = crate::util::read_maildir(&out);
    let flags_of = |id: &str| {
        exported
            .get(&(String::new(), id.to_string()))
            .map(|(f, b)| (f.clone(), b.clone()))
    };
    assert_eq!(flags_of("m1"), None, "deleted at the source: {exported:?}");
    assert_eq!(flags_of("m2"), Some(("FS".into(), bodies[1].clone())));
    assert_eq!(flags_of("m3"), Some(("S".into(), bodies[2].clone())));
    assert_eq!(flags_of("m4"), Some(("RS".into(), new)));
    // Message 7 (m5) ended before the violation: kept only if a commit came first.
    assert!(exported.len() <= 4, "{exported:?}");
    let mut cmd = crate::util::mailferry();
    cmd.args(["volume", "verify", "--volume"])
        .arg(env.path("v"))
        .arg("--key-file")
        .arg(env.path("k"));
    let o = crate::util::run(&mut cmd);
    assert!(o.status.success(), "{}", crate::util::describe(&o));
}

fn busy_message(e: AgentError) -> String {
    match e {
        AgentError::Refused {
            status, message, ..
        } => {
            assert_eq!(status, 409, "{message}");
            message
        }
        other => panic!("expected 409, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_a_mailbox_being_moved_gets_409_until_the_first_finishes() {
    let h = start().await;
    let mut first = endpoint(&h, TOKEN).open_stream(&mailbox()).await.unwrap();
    // Another agent, another token, the same mailbox: refused before the upgrade.
    let e = endpoint(&h, TOKEN2)
        .open_stream(&mailbox())
        .await
        .unwrap_err();
    let msg = busy_message(e);
    assert!(
        msg.contains(
            "another agent is already moving mailbox bob@example.org (session started at "
        ),
        "{msg}"
    );
    assert!(msg.contains("wait for it to finish or stop it"), "{msg}");
    // Other mailboxes are not held up.
    let other = endpoint(&h, TOKEN2)
        .open_stream(&other_mailbox())
        .await
        .unwrap();
    // The first session is still fine, and once it has said CLOSED the mailbox is free.
    send(&mut first, &[open(), Frame::Flush, Frame::Close]).await;
    let got = read_all(&mut first).await;
    assert_eq!(got, vec![Frame::Ack(vec![]), Frame::Closed]);
    let mut second = endpoint(&h, TOKEN2)
        .open_stream(&mailbox())
        .await
        .expect("the mailbox is free once the first session closed");
    // ... and after an ERROR too.
    send(&mut second, &[Frame::Close]).await;
    let got = read_all(&mut second).await;
    assert!(
        matches!(got.last(), Some(Frame::Error { code: 400, .. })),
        "{got:?}"
    );
    let third = endpoint(&h, TOKEN3).open_stream(&mailbox()).await;
    assert!(third.is_ok(), "{:?}", third.err().map(|e| e.to_string()));
    drop((other, third));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_node_that_owns_a_mailbox_refuses_a_second_agent_through_a_front_proxy() {
    let h = start_mtls_store().await;
    let front_ca = mailferry_core::tls::LocalCa::generate("front server").unwrap();
    let router = mailferry_proxy::forward::Router::new(
        std::slice::from_ref(&h.url),
        mailferry_core::tls::client_config_mtls(
            std::slice::from_ref(&h.ca),
            &h.client_ca.issue_client("front").unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let front = Proxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        ProxyConfig {
            tls: mailferry_core::tls::server_config(
                &front_ca.issue_server(&["127.0.0.1"]).unwrap(),
            )
            .unwrap(),
            backend: mailferry_proxy::Backend::Remote(Arc::new(router)),
            commit: Profile::default().commit,
            stats: Arc::new(StoreStats::default()),
            header_timeout: mailferry_proxy::server::HANDSHAKE_TIMEOUT,
            limits: Default::default(),
        },
    )
    .await
    .unwrap();
    let url = format!("https://127.0.0.1:{}", front.local_addr().port());
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(front.serve(async {
        let _ = rx.await;
    }));
    let ep = |token: &str| {
        Endpoint::new(
            &url,
            &[front_ca.cert_der()],
            SecretBytes::new(token.as_bytes().to_vec()),
        )
        .unwrap()
    };
    let first = ep(TOKEN).open_stream(&mailbox()).await.unwrap();
    let msg = busy_message(ep(TOKEN2).open_stream(&mailbox()).await.unwrap_err());
    assert!(
        msg.contains("another agent is already moving mailbox bob@example.org"),
        "{msg}"
    );
    drop(first);

    // Fencing through the front proxy: the header reaches the node that owns the
    // mailbox (without it the node could not fence off the holder, and the retry below
    // would meet 409 until it gave up), and OPEN travels end to end.
    let mut old = ep(TOKEN)
        .open_fenced_backoff(&mailbox(), Some(1), &quick_retries())
        .await
        .unwrap()
        .0;
    send(&mut old, &[fenced_open(1), Frame::Flush]).await;
    let mut buf = vec![0u8; 64];
    let n = old.read(&mut buf).await.unwrap();
    assert_eq!(
        Frame::decode(&buf[..n]).unwrap().unwrap().0,
        Frame::Ack(vec![])
    );
    let (mut new, waited) = ep(TOKEN2)
        .open_fenced_backoff(&mailbox(), Some(2), &quick_retries())
        .await
        .expect("the node fences off lease 1 and lets lease 2 in");
    assert!(!waited.is_zero(), "the first try met lease 1's session");
    assert!(matches!(
        read_all(&mut old).await.as_slice(),
        [Frame::Error { code: 412, .. }]
    ));
    send(&mut new, &[fenced_open(2), Frame::Close]).await;
    assert_eq!(read_all(&mut new).await, [Frame::Closed]);
    assert_eq!(h.inner.volume.fence_of(&mailbox()).unwrap(), Some(2));
    drop(h.inner._stop);
}

fn quick_retries() -> mailferry_agent::throttle::BackoffPolicy {
    mailferry_agent::throttle::BackoffPolicy {
        initial: std::time::Duration::from_millis(50),
        max: std::time::Duration::from_millis(500),
        attempts: 20,
    }
}

struct MtlsStore {
    inner: Harness,
    url: String,
    ca: rustls::pki_types::CertificateDer<'static>,
    client_ca: mailferry_core::tls::LocalCa,
}

/// A store node: the proxy with its volume, requiring client certificates of
/// `client_ca` (what `mailferry serve --client-ca` runs).
async fn start_mtls_store() -> MtlsStore {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("v");
    Volume::init(&vol, &dir.path().join("k")).unwrap();
    let volume =
        Arc::new(Volume::open(&vol, &dir.path().join("k"), &Profile::default().store).unwrap());
    let ca = mailferry_core::tls::LocalCa::generate("store").unwrap();
    let client_ca = mailferry_core::tls::LocalCa::generate("clients").unwrap();
    let id = ca.issue_server(&["127.0.0.1"]).unwrap();
    let mut tokens = TokenSet::default();
    for t in [TOKEN, TOKEN2] {
        tokens.allow(&SecretBytes::new(t.as_bytes().to_vec()));
    }
    let proxy = Proxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        ProxyConfig {
            tls: mailferry_core::tls::server_config_mtls(&id, &[client_ca.cert_der()]).unwrap(),
            backend: mailferry_proxy::Backend::Local {
                tokens,
                volume: volume.clone(),
            },
            commit: Profile::default().commit,
            stats: Arc::new(StoreStats::default()),
            header_timeout: mailferry_proxy::server::HANDSHAKE_TIMEOUT,
            limits: Default::default(),
        },
    )
    .await
    .unwrap();
    let url = format!("https://127.0.0.1:{}", proxy.local_addr().port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(proxy.serve(async {
        let _ = rx.await;
    }));
    MtlsStore {
        url: url.clone(),
        ca: ca.cert_der(),
        client_ca,
        inner: Harness {
            _dir: dir,
            volume,
            url,
            ca: ca.cert_der(),
            _stop: tx,
            serving,
        },
    }
}

// === fencing (issue 20): a worker's lease carries a fencing number the store checks ===

fn fenced_open(fence: u64) -> Frame {
    Frame::Open {
        version: PROTOCOL_VERSION,
        move_id: MoveId([1; 16]),
        fence: Some(fence),
    }
}

/// A message `INBOX/m{seq}` with body `body`: MESSAGE, DATA, END.
fn msg(seq: u64, body: &[u8]) -> Vec<Frame> {
    message_frames(seq, &format!("m{seq}"), "S", body)
}

/// The volume's audit records of `event`.
fn volume_events(h: &Harness, event: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    mailferry_audit::read_records(h.volume.dir().join("audit.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|e| e.event == event)
        .map(|e| e.data)
        .collect()
}

fn stored_ids(h: &Harness) -> Vec<String> {
    h.volume
        .list_messages(&mailbox())
        .unwrap()
        .into_iter()
        .map(|m| m.unwrap().meta.source_id.to_string())
        .collect()
}

const FENCED_2: &str = "a newer lease (fencing number 2) owns mailbox bob@example.org; this \
                        worker's lease was taken over: stop, another worker is moving it";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_2_then_fence_1_refuses_fence_1_with_the_fenced_error_and_stores_nothing() {
    let h = start().await;
    let ep = endpoint(&h, TOKEN);
    let mut io = ep.open_stream_fenced(&mailbox(), Some(2)).await.unwrap();
    let mut frames = vec![fenced_open(2)];
    frames.extend(msg(1, b"Subject: two\r\n\r\nfrom lease 2\r\n"));
    frames.push(Frame::Close);
    send(&mut io, &frames).await;
    assert_eq!(
        read_all(&mut io).await,
        [Frame::Ack(vec![(1, AckStatus::Stored)]), Frame::Closed]
    );

    // The worker of lease 1 wakes up: its OPEN is refused before anything is written.
    let mut io = ep.open_stream_fenced(&mailbox(), Some(1)).await.unwrap();
    let mut frames = vec![fenced_open(1)];
    frames.extend(msg(2, b"Subject: one\r\n\r\nfrom lease 1\r\n"));
    frames.push(Frame::Close);
    send(&mut io, &frames).await;
    assert_eq!(
        read_all(&mut io).await,
        [Frame::Error {
            code: 412,
            message: FENCED_2.into()
        }]
    );
    assert_eq!(stored_ids(&h), ["m1"], "nothing of lease 1 was stored");
    assert_eq!(h.volume.fence_of(&mailbox()).unwrap(), Some(2));
    let refused = volume_events(&h, "session.fenced");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["refused"], "open");
    assert_eq!(refused[0]["fence"], 2);
    assert_eq!(refused[0]["stale_fence"], 1);
    assert_eq!(
        refused[0]["mailbox"],
        h.volume.pseudonym_of_mailbox(&mailbox()).as_str()
    );
    let stored = volume_events(&h, "message.stored");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["fence"], 2);

    // The agent's view: the same refusal is typed, and permanent (not retried).
    let policy = mailferry_agent::throttle::BackoffPolicy {
        initial: std::time::Duration::from_millis(10),
        max: std::time::Duration::from_millis(50),
        attempts: 5,
    };
    let mut io = ep
        .open_fenced_backoff(&mailbox(), Some(1), &policy)
        .await
        .unwrap()
        .0;
    send(&mut io, &[fenced_open(1), Frame::Close]).await;
    assert!(matches!(
        read_all(&mut io).await.as_slice(),
        [Frame::Error { code: 412, .. }]
    ));

    // A session without a fence is not fenced: it behaves as it always did.
    let mut io = ep.open_stream(&mailbox()).await.unwrap();
    let mut frames = vec![open()];
    frames.extend(msg(3, b"Subject: plain\r\n\r\nno lease\r\n"));
    frames.push(Frame::Close);
    send(&mut io, &frames).await;
    assert_eq!(
        read_all(&mut io).await,
        [Frame::Ack(vec![(3, AckStatus::Stored)]), Frame::Closed]
    );
    let stored = volume_events(&h, "message.stored");
    assert!(stored[1].get("fence").is_none(), "{stored:?}");
    assert_eq!(volume_events(&h, "session.opened").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_lease_ends_the_open_session_nothing_more_of_it_is_acknowledged_and_gets_in() {
    // Batches close only at FLUSH here, so the old session has a message pending (not
    // committed) when the newer lease arrives.
    let commit = mailferry_core::profile::CommitSettings {
        max_delay_ms: 600_000,
        ..Profile::default().commit
    };
    let h = start_full(Default::default(), commit).await;
    let ep = endpoint(&h, TOKEN);
    let mut old = ep.open_stream_fenced(&mailbox(), Some(1)).await.unwrap();
    let mut frames = vec![fenced_open(1)];
    frames.extend(msg(1, b"Subject: a\r\n\r\ncommitted by lease 1\r\n"));
    frames.push(Frame::Flush);
    send(&mut old, &frames).await;
    let mut fb = FrameBuffer::new();
    let mut buf = vec![0u8; 4096];
    let first = loop {
        let n = old.read(&mut buf).await.unwrap();
        assert!(n > 0, "the session ended early");
        fb.push(&buf[..n]);
        if let Some(f) = fb.next_frame().unwrap() {
            break f;
        }
    };
    assert_eq!(first, Frame::Ack(vec![(1, AckStatus::Stored)]));
    // Still streaming: message 2 is ended, waiting for its batch to close.
    send(
        &mut old,
        &msg(2, b"Subject: b\r\n\r\nnever acknowledged\r\n"),
    )
    .await;

    // The lease is taken over: the new worker's first request finds the mailbox held
    // (409), which fences the old session off; the agent's retry of 409 then gets in.
    let policy = mailferry_agent::throttle::BackoffPolicy {
        initial: std::time::Duration::from_millis(50),
        max: std::time::Duration::from_millis(500),
        attempts: 20,
    };
    let (mut new, waited) = ep
        .open_fenced_backoff(&mailbox(), Some(2), &policy)
        .await
        .expect("the newer lease gets the mailbox once the old session has ended");
    assert!(!waited.is_zero(), "the first try met the old session (409)");

    // The old session heard nothing more but its end; it can send, nothing is taken.
    let mut rest = Vec::new();
    while let Some(f) = fb.next_frame().unwrap() {
        rest.push(f);
    }
    let _ = old
        .write_all(&{
            let mut b = Vec::new();
            Frame::Flush.encode(&mut b);
            b
        })
        .await;
    rest.extend(read_all(&mut old).await);
    assert_eq!(
        rest,
        [Frame::Error {
            code: 412,
            message: FENCED_2.into()
        }]
    );

    let mut frames = vec![fenced_open(2)];
    frames.extend(msg(3, b"Subject: c\r\n\r\nfrom lease 2\r\n"));
    frames.push(Frame::Close);
    send(&mut new, &frames).await;
    assert_eq!(
        read_all(&mut new).await,
        [Frame::Ack(vec![(3, AckStatus::Stored)]), Frame::Closed]
    );
    assert_eq!(
        stored_ids(&h),
        ["m1", "m3"],
        "m2 of the old lease was never stored"
    );
    let refused = volume_events(&h, "session.fenced");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["refused"], "takeover");
    // No move had two writers: per mailbox, the fences in the log never go down.
    let fences: Vec<u64> = mailferry_audit::read_records(h.volume.dir().join("audit.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|e| e.data.get("fence").and_then(|f| f.as_u64()))
        .collect();
    assert_eq!(
        fences,
        [1, 1, 2, 2, 2],
        "opened 1, stored 1, fenced, opened 2, stored 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_whose_fence_differs_from_its_header_is_a_protocol_violation() {
    let h = start().await;
    let mut io = endpoint(&h, TOKEN)
        .open_stream_fenced(&mailbox(), Some(3))
        .await
        .unwrap();
    send(&mut io, &[fenced_open(4), Frame::Close]).await;
    match read_all(&mut io).await.as_slice() {
        [Frame::Error { code: 400, message }] => {
            assert!(message.contains("fencing number (4)"), "{message}")
        }
        other => panic!("expected ERROR 400, got {other:?}"),
    }
    assert_eq!(
        h.volume.fence_of(&mailbox()).unwrap(),
        None,
        "nothing recorded"
    );
}

/// The control plane end to end: a pass with `PassHooks.fence` runs through the agent's
/// OPEN to the store; a later pass with a lower fence ends failed with
/// `AppError::Fenced` (the store's message, not retried) and moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_under_an_older_lease_ends_failed_with_the_fenced_error() {
    use mailferry_control::moving::{run_move_with, Destination, MoveArgs, PassHooks};
    let dir = tempfile::tempdir().unwrap();
    let (vol, key) = (dir.path().join("v"), dir.path().join("k"));
    Volume::init(&vol, &key).unwrap();
    let spec = |seed| mailferry_bench::sample::SampleSpec {
        seed,
        messages: 5,
        folders: 1,
        size: mailferry_bench::sample::SizeModel::Small,
        markers: None,
    };
    let args = |src: &str, state: &str| MoveArgs {
        source: format!("maildir:{}", dir.path().join(src).display()),
        mailbox: mailbox(),
        destination: Destination::Local {
            volume: vol.clone(),
            credential: mailferry_store::Credential::KeyFile(key.clone()),
            s3: Default::default(),
        },
        state: dir.path().join(state),
        profile: Profile::default(),
        source_options: Default::default(),
    };
    mailferry_bench::sample::write_maildir(&dir.path().join("a"), &spec(1)).unwrap();
    mailferry_bench::sample::write_maildir(&dir.path().join("b"), &spec(2)).unwrap();
    let fenced = |f| PassHooks {
        fence: Some(f),
        ..Default::default()
    };
    let report = run_move_with(&args("a", "sa"), fenced(5)).await.unwrap();
    assert_eq!(report.items_moved, 5);

    let err = run_move_with(&args("b", "sb"), fenced(4))
        .await
        .expect_err("an older lease may not write");
    match &err {
        mailferry_control::AppError::Fenced { fence, message, .. } => {
            assert_eq!(*fence, 4);
            assert_eq!(
                message,
                "a newer lease (fencing number 5) owns mailbox bob@example.org; this worker's \
                 lease was taken over: stop, another worker is moving it"
            );
        }
        other => panic!("expected AppError::Fenced, got {other:?}"),
    }
    assert_eq!(err.exit_code(), 1);
    let v = Volume::open(&vol, &key, &Profile::default().store).unwrap();
    assert_eq!(
        v.list_messages(&mailbox()).unwrap().len(),
        5,
        "nothing of lease 4"
    );
    assert_eq!(v.fence_of(&mailbox()).unwrap(), Some(5));
}
