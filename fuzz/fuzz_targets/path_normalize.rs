//! The request-path normaliser every protocol goes through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provbox::catalog::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = normalize(raw) else {
        return;
    };
    assert!(
        !key.is_empty() && !key.starts_with('/') && !key.ends_with('/'),
        "{key:?}"
    );
    assert!(
        !key.contains('\\') && !key.chars().any(char::is_control),
        "{key:?}"
    );
    for seg in key.split('/') {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "{key:?}");
    }
    let first = key.split('/').next().unwrap_or("");
    assert!(
        !(first.len() == 2 && first.ends_with(':')),
        "drive letter in {key:?}"
    );
    // A key is already normal.
    assert_eq!(
        normalize(&key).as_deref(),
        Ok(key.as_str()),
        "not stable: {raw:?}"
    );
});
