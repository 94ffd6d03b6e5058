//! The CSV inventory parser, and the export of what it read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provbox::devices::inventory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match inventory::parse_csv(text) {
        Ok(records) => {
            let csv = inventory::to_csv(&records);
            // The export reads back as many records.
            let again = inventory::parse_csv(&csv).expect("our own export parses");
            assert_eq!(again.len(), records.len());
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
