//! Human durations: no panic, at most ten years, and what `format` writes
//! parses back to the same duration.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = muhurat::duration::parse(text) {
        assert!(d.num_seconds() >= 0 && d.num_seconds() <= 366 * 86_400 * 10);
        assert_eq!(muhurat::duration::parse(&muhurat::duration::format(d)), Ok(d));
    }
});
