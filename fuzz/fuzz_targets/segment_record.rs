//! Segment file parsers: the segment header, the record header, and a whole record
//! opened in memory. Any bytes give a value or an error, never a panic or an allocation
//! larger than the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry_store::keys::Key;
use mailferry_store::segment::{open_record, RecordHeader, SegmentHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = SegmentHeader::parse(data) {
        assert_eq!(SegmentHeader::parse(&h.encode()).ok(), Some(h));
    }
    if let Ok(h) = RecordHeader::parse(data) {
        assert_eq!(RecordHeader::parse(&h.encode()).ok(), Some(h));
    }
    let _ = open_record(&[0x40; 16], &Key::from_bytes([0x11; 32]), data);
});
