//! The `Authorization` header parser (Basic and Digest): never panics, and what it takes
//! from a Digest header survives being written back quoted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provbox::devices::pipeline::httpauth::{Credentials, parse_authorization};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for h in [text.to_string(), format!("Digest {text}")] {
        if let Some(Credentials::Digest(d)) = parse_authorization(&h) {
            let q = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
            let again = format!(
                "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\"",
                q(&d.username),
                q(&d.realm),
                q(&d.nonce),
                q(&d.uri),
                q(&d.response)
            );
            let Some(Credentials::Digest(e)) = parse_authorization(&again) else {
                // Only a header over the parser's length cap may not come back.
                assert!(again.len() > 4096, "{again:?}");
                return;
            };
            assert_eq!(
                (&e.username, &e.realm, &e.nonce, &e.uri, &e.response),
                (&d.username, &d.realm, &d.nonce, &d.uri, &d.response)
            );
        }
    }
});
