//! `volume.hdr` parser: any bytes give a header or a typed error, never a panic; a
//! header that parses re-encodes to bytes that parse to the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry_store::header::Header;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::parse(Path::new("fuzz"), data) {
        // Key slots are not unlocked here: a forged Argon2 slot is bounded by the
        // parser, but running it would only measure Argon2.
        let again = Header::parse(Path::new("fuzz"), &h.encode()).ok();
        assert_eq!(again, Some(h), "parse/encode round trip");
    }
});
