//! Stage benchmarks, each calling the library code the pipeline runs:
//! - `chunk_64k`: sealing and opening one 64 KiB chunk (ring, which the store uses,
//!   against the `aes-gcm` crate, used only here for comparison);
//! - `ingest`: 100 messages of 58 KiB, and 1,000 of 2 KiB, through an `IngestSession`
//!   with one durable commit (segment append, fdatasync, one SQLite batch, audit);
//! - `frames`: encoding and decoding the MESSAGE, DATA (256 KiB) and END frames of a
//!   message, as agent and proxy do;
//! - `sources`: listing and reading a Maildir and an mbox of 500 sample messages (the
//!   corpus writers of `mailferry bench`);
//! - `header_parse`: mail-parser on the same messages, headers only and in full.
//!
//! Run: `cargo bench --bench stages -- --warm-up-time 1 --measurement-time 3`; CI runs
//! it with `-- --test` (each once, no timing). End to end: `mailferry bench`.
//! Figures are recorded in docs/volume-format.md ("Performance") and benches/RESULTS.md.

// criterion_group! generates an undocumented `pub fn benches`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mailferry_bench::sample::{self, SampleSpec, SizeModel};
use mailferry_core::frame::{Frame, FrameBuffer, MessageHeader};
use mailferry_core::profile::{CommitSettings, StoreSettings};
use mailferry_core::{Flags, FolderName, MailboxAddr, SourceId};
use mailferry_store::chunk::{self, ChunkContext, ChunkKey, CHUNK_SIZE};
use mailferry_store::Volume;
use std::hint::black_box;

const CTX: ChunkContext = ChunkContext {
    volume_id: [7; 16],
    mailbox_id: 1,
    message_id: 1,
};

/// The same STREAM chunk as `chunk::seal_chunk`, through the `aes-gcm` crate (bench only).
fn seal_chunk_aes_gcm(
    cipher: &aes_gcm::Aes256Gcm,
    index: u64,
    last: bool,
    data: &mut [u8],
) -> [u8; 16] {
    use aes_gcm::aead::AeadInPlace;
    let nonce = chunk::chunk_nonce(index, last);
    let aad = chunk::chunk_aad(&CTX, index, last);
    let tag = cipher
        .encrypt_in_place_detached(aes_gcm::Nonce::from_slice(&nonce), &aad, data)
        .expect("64 KiB is within AES-GCM limits");
    tag.into()
}

fn chunk_crypto(c: &mut Criterion) {
    use aes_gcm::KeyInit;
    let key_bytes = [0x42u8; 32];
    let ring_key = ChunkKey::from_bytes(&key_bytes);
    let rc = aes_gcm::Aes256Gcm::new_from_slice(&key_bytes).expect("32-byte key");
    let mut buf = vec![0xa5u8; CHUNK_SIZE];

    let mut g = c.benchmark_group("chunk_64k");
    g.throughput(Throughput::Bytes(CHUNK_SIZE as u64));
    g.bench_function("seal_ring", |b| {
        b.iter(|| {
            black_box(chunk::seal_chunk(
                &ring_key,
                &CTX,
                3,
                false,
                black_box(&mut buf),
            ))
        })
    });
    g.bench_function("seal_aes_gcm_crate", |b| {
        b.iter(|| black_box(seal_chunk_aes_gcm(&rc, 3, false, black_box(&mut buf))))
    });
    // Check the two agree, then bench opening (ring).
    let mut a = vec![0x11u8; CHUNK_SIZE];
    let mut b2 = a.clone();
    assert_eq!(
        chunk::seal_chunk(&ring_key, &CTX, 0, true, &mut a),
        seal_chunk_aes_gcm(&rc, 0, true, &mut b2)
    );
    assert_eq!(a, b2);
    let mut sealed = vec![0x11u8; CHUNK_SIZE];
    let tag = chunk::seal_chunk(&ring_key, &CTX, 0, true, &mut sealed);
    sealed.extend_from_slice(&tag);
    let mut work = sealed.clone();
    g.bench_function("open_ring", |b| {
        b.iter(|| {
            work.copy_from_slice(&sealed);
            let p = chunk::open_chunk(&ring_key, &CTX, 0, true, &mut work).expect("authentic");
            black_box(p.len())
        })
    });
    g.finish();
}

fn ingest(c: &mut Criterion) {
    ingest_batch(c, "100x58KiB_commit", 100, 58 * 1024);
    // The small-message case: the cost per message (index rows, audit records) shows.
    ingest_batch(c, "1000x2KiB_commit", 1000, 2 * 1024);
}

fn ingest_batch(c: &mut Criterion, name: &str, msgs: usize, size: usize) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("vol");
    let key = tmp.path().join("volume.key");
    Volume::init(&dir, &key).expect("init");
    let vol = Volume::open(&dir, &key, &StoreSettings::default()).expect("open");
    let mb = MailboxAddr::parse("bench@example.org").expect("address");
    let mut session = vol
        .session(&mb, &CommitSettings::default())
        .expect("session");
    let body: Vec<u8> = (0..size).map(|i| (i * 13) as u8).collect();
    let sha: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &body)
        .as_ref()
        .try_into()
        .expect("32 bytes");
    let folder = FolderName::inbox();
    let mut n = 0u64;

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes((msgs * size) as u64));
    g.sample_size(10);
    g.bench_function(name, |b| {
        b.iter(|| {
            for _ in 0..msgs {
                n += 1;
                session
                    .begin(MessageHeader {
                        seq: n,
                        folder: folder.clone(),
                        source_id: SourceId::parse(&format!("m{n}")).expect("source id"),
                        flags: Flags::default(),
                        internal_date: 0,
                        size: size as u64,
                    })
                    .expect("begin");
                // Frames of 16 KiB, as the proxy would hand them over.
                for piece in body.chunks(16 * 1024) {
                    session.write(piece).expect("write");
                }
                session.finish(sha).expect("finish");
            }
            black_box(session.commit().expect("commit").len())
        })
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    const BODY: usize = 256 * 1024;
    let body = bytes::Bytes::from(vec![0x5au8; BODY]);
    let header = MessageHeader {
        seq: 7,
        folder: FolderName::parse("Archive/2024").expect("folder"),
        source_id: SourceId::parse("1700000000.M1P2Q3.host,S=262144").expect("source id"),
        flags: Flags::default(),
        internal_date: 1_700_000_000,
        size: BODY as u64,
    };
    let mut wire = Vec::with_capacity(BODY + 1024);
    let encode = |wire: &mut Vec<u8>| {
        wire.clear();
        Frame::Message(header.clone()).encode(wire);
        Frame::Data(body.clone()).encode(wire);
        Frame::End {
            seq: 7,
            sha256: [1; 32],
        }
        .encode(wire);
    };
    encode(&mut wire);
    let mut g = c.benchmark_group("frames");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("encode_message_256KiB", |b| {
        b.iter(|| {
            encode(&mut wire);
            black_box(wire.len())
        })
    });
    g.bench_function("decode_message_256KiB", |b| {
        b.iter(|| {
            let mut fb = FrameBuffer::new();
            // As the proxy reads: 256 KiB at a time, into the buffer's spare room.
            let mut n = 0;
            for piece in wire.chunks(256 * 1024) {
                fb.read_space(piece.len()).extend_from_slice(piece);
                while let Some(f) = fb.next_frame().expect("valid frames") {
                    n += matches!(f, Frame::Data(_)) as usize;
                }
            }
            black_box(n)
        })
    });
    g.finish();
}

/// 500 messages of the `Small` model (1–12 KiB), as a Maildir and as an mbox.
fn corpus(tmp: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, u64) {
    let spec = SampleSpec {
        seed: 9,
        messages: 500,
        folders: 6,
        size: SizeModel::Small,
        markers: None,
    };
    let (maildir, mbox) = (tmp.join("maildir"), tmp.join("mbox"));
    let summary = sample::write_maildir(&maildir, &spec).expect("maildir corpus");
    sample::write_mbox(&mbox, &spec).expect("mbox corpus");
    (maildir, mbox, summary.bytes)
}

fn sources(c: &mut Criterion) {
    use mailferry_agent::source::{from_spec, Prior};
    let tmp = tempfile::tempdir().expect("temp dir");
    let (maildir, mbox, bytes) = corpus(tmp.path());
    let mut g = c.benchmark_group("sources");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(20);
    for (name, spec) in [
        (
            "maildir_list_read_500",
            format!("maildir:{}", maildir.display()),
        ),
        ("mbox_list_read_500", format!("mbox:{}", mbox.display())),
    ] {
        let src = from_spec(&spec, &Default::default()).expect("source");
        let mut buf = vec![0u8; 256 * 1024];
        g.bench_function(name, |b| {
            b.iter(|| {
                let listing = src.list(&Prior::default()).expect("listing");
                let mut total = 0u64;
                for item in &listing.items {
                    let mut r = src.open(item).expect("open");
                    loop {
                        let n = std::io::Read::read(&mut r, &mut buf).expect("read");
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                }
                assert_eq!(total, bytes);
                black_box(total)
            })
        });
    }
    g.finish();
}

fn header_parse(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (maildir, _, bytes) = corpus(tmp.path());
    let mut messages = Vec::new();
    let mut stack = vec![maildir];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("readable") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .parent()
                .is_some_and(|p| p.ends_with("cur") || p.ends_with("new"))
            {
                messages.push(std::fs::read(&path).expect("message"));
            }
        }
    }
    assert_eq!(messages.len(), 500);
    let parser = mail_parser::MessageParser::default();
    let mut g = c.benchmark_group("header_parse");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(20);
    g.bench_function("headers_only_500", |b| {
        b.iter(|| {
            let n: usize = messages
                .iter()
                .map(|m| parser.parse_headers(m).map_or(0, |p| p.headers().len()))
                .sum();
            black_box(n)
        })
    });
    g.bench_function("full_mime_500", |b| {
        b.iter(|| {
            let n: usize = messages
                .iter()
                .map(|m| parser.parse(m).map_or(0, |p| p.parts.len()))
                .sum();
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, chunk_crypto, ingest, frames, sources, header_parse);
criterion_main!(benches);
