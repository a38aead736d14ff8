//! Migration profile parser: any text gives a profile or a list of problems, never a
//! panic; a profile that parses writes back to TOML that parses to the same profile,
//! and its folder patterns compile.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry_core::profile::Profile;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Profile::parse(text, "fuzz") {
        p.folder_rules().expect("a parsed profile's patterns compile");
        let again = toml::to_string(&p).expect("a profile serializes");
        assert_eq!(Profile::parse(&again, "again").ok(), Some(p), "round trip");
    }
});
