//! Chunk opener: any sealed bytes at any chunk index either authenticate or are refused
//! with an error, never panic. Input: index (8 bytes), last flag (1 byte), sealed chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry_store::chunk::{open_chunk, ChunkContext, ChunkKey};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let index = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
    let last = data[8] & 1 == 1;
    let mut sealed = data[9..].to_vec();
    let key = ChunkKey::from_bytes(&[0x24; 32]);
    let ctx = ChunkContext {
        volume_id: [0x40; 16],
        mailbox_id: 3,
        message_id: 7,
    };
    let _ = open_chunk(&key, &ctx, index, last, &mut sealed);
});
