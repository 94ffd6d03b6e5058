//! Lease-journal recovery: any file provbox might find at start. Whatever it recovers,
//! a rewrite of it (compaction) reads back as the same leases with no damage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provbox::dhcp::store;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = store::parse_bytes(data) else {
        return;
    };
    assert!(c.good_len as usize + c.torn as usize <= data.len());
    let (mut leases, _bad) = c.leases();
    let image = c.rewritten([7; 8]);
    let again = store::parse_bytes(&image).expect("a rewrite parses");
    assert_eq!((again.damaged, again.torn), (0, 0));
    let (mut back, bad) = again.leases();
    assert_eq!(bad, 0, "a rewrite holds only readable records");
    leases.sort_by_key(|l| l.ip);
    back.sort_by_key(|l| l.ip);
    assert_eq!(leases, back);
});
