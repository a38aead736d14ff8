//! Stage benchmarks of the store: sealing and opening one 64 KiB chunk (ring, which the
//! store uses, against the `aes-gcm` crate, used only here for comparison), and ingesting
//! 100 messages of 58 KiB through an `IngestSession` with one durable commit.
//!
//! Run: `cargo bench --bench stages -- --warm-up-time 1 --measurement-time 3`.
//! Figures are recorded in docs/volume-format.md ("Performance").

// criterion_group! generates an undocumented `pub fn benches`.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mailferry_core::profile::{CommitSettings, StoreSettings};
use mailferry_core::{Flags, FolderName, MailboxAddr, SourceId};
use mailferry_store::chunk::{self, ChunkContext, ChunkKey, CHUNK_SIZE};
use mailferry_store::{MessageStart, Volume};
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
    const MSGS: usize = 100;
    const SIZE: usize = 58 * 1024;
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("vol");
    let key = tmp.path().join("volume.key");
    Volume::init(&dir, &key).expect("init");
    let vol = Volume::open(&dir, &key, &StoreSettings::default()).expect("open");
    let mb = MailboxAddr::parse("bench@example.org").expect("address");
    let mut session = vol
        .session(&mb, &CommitSettings::default())
        .expect("session");
    let body: Vec<u8> = (0..SIZE).map(|i| (i * 13) as u8).collect();
    let sha: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &body)
        .as_ref()
        .try_into()
        .expect("32 bytes");
    let folder = FolderName::inbox();
    let mut n = 0u64;

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes((MSGS * SIZE) as u64));
    g.sample_size(10);
    g.bench_function("100x58KiB_commit", |b| {
        b.iter(|| {
            for _ in 0..MSGS {
                n += 1;
                session
                    .begin(MessageStart {
                        seq: n,
                        meta_folder: folder.clone(),
                        source_id: SourceId::parse(&format!("m{n}")).expect("source id"),
                        flags: Flags::default(),
                        internal_date: 0,
                        size: SIZE as u64,
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

criterion_group!(benches, chunk_crypto, ingest);
criterion_main!(benches);
