//! mbox splitter and unquoter (`mailferry_agent::source::mbox`): splits arbitrary bytes
//! (as the tail of a file that starts with a `From ` line), never panics, lists only
//! ranges inside the input, and each message reads back at exactly its listed size;
//! quoting the unquoted bytes and unquoting them again gives them back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry_agent::source::mbox::{scan, MessageReader, QuotingWriter, Unquoter};
use std::io::{Read, Write};

fuzz_target!(|data: &[u8]| {
    let mut file = b"From a Mon Jan  1 00:00:00 2024\n".to_vec();
    file.extend_from_slice(data);
    let Ok(found) = scan(&file[..]) else {
        return;
    };
    for m in found {
        let (start, end) = (m.start as usize, (m.start + m.len) as usize);
        assert!(start <= end && end <= file.len());
        let mut body = Vec::new();
        MessageReader::new(&file[start..end], m.len, None, 7)
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body.len() as u64, m.size);
        let mut quoted = Vec::new();
        let mut q = QuotingWriter::new(&mut quoted);
        q.write_all(&body).unwrap();
        q.finish().unwrap();
        assert_eq!(Unquoter::unquote_all(&quoted), body);
    }
});
