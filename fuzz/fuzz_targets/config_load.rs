//! The configuration loader: YAML → validated `Config`, with errors naming a line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use provbox::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/provbox-fuzz/config.yaml");
    if let Err(e) = Config::parse(text, path) {
        // Every error can be shown to the operator.
        let _ = e.to_string();
    }
});
