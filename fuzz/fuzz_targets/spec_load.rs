//! The spec loader on arbitrary text: YAML limits, deserialization and every
//! validation rule, against the real NSE calendar. It must return (Ok or
//! diagnostics), never panic, hang or blow up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn nse() -> &'static muhurat::calendar::Calendar {
    static CAL: OnceLock<muhurat::calendar::Calendar> = OnceLock::new();
    CAL.get_or_init(|| {
        muhurat::calendar::parse("nse.yaml", include_str!("../../rollouts/calendars/nse.yaml"))
            .expect("the shipped calendar loads")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = muhurat::spec::load("fuzz.yaml", text, |_| Ok(nse().clone()));
    }
});
