//! The calendar loader on arbitrary text: it must return (a calendar or
//! diagnostics), never panic, hang or blow up.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = muhurat::calendar::parse("fuzz.yaml", text);
    }
});
