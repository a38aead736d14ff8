//! Wire frame decoder (`mailferry_core::frame::Frame::decode`): decodes frames back to
//! back from arbitrary bytes; each call returns a frame, "need more bytes" or an error,
//! never panics, and never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry_core::frame::Frame;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((_frame, used))) = Frame::decode(rest) {
        assert!(
            used > 0 && used <= rest.len(),
            "decode consumed {used} of {}",
            rest.len()
        );
        rest = &rest[used..];
    }
});
