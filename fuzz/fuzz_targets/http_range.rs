//! The HTTP Range header parser, against a file length from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provbox::http::files::parse_range;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_be_bytes(data[..8].try_into().unwrap()) >> (data[0] % 64);
    let Ok(value) = std::str::from_utf8(&data[8..]) else {
        return;
    };
    match parse_range(value, len) {
        Some(Some((a, b))) => assert!(a <= b && b < len, "{value:?} on {len}: {a}-{b}"),
        Some(None) | None => {}
    }
});
