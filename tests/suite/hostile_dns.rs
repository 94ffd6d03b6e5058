//! DNS against hostile clients: what a single host on the LAN can make provbox send.

use crate::support::dns;

/// A client offering a 64 KB EDNS buffer gets at most 1232 bytes over UDP: an answer
/// bigger than that is cut to header + question + OPT with TC, and the whole answer is
/// there over TCP. Before the cap, a 60-byte query drew a 1.6 KB answer (an amplifier).
#[test]
fn edns_payload_is_capped_at_1232_over_udp() {
    crate::support::needs!("kdig");
    // 120 addresses: about 1.9 KB of answer, well over 1232 and under 64 KB.
    let addrs: Vec<String> = (1..=120).map(|i| format!("10.9.0.{i}")).collect();
    let d = dns::start(&format!(
        "  zones:\n    - name: lab.test\n      records:\n        - name: big\n          a: [{}]\n        - name: small\n          a: [10.8.0.1]\n",
        addrs.join(", ")
    ));

    // kdig really sends 65000 (dig 9.18 quietly sends 1232 for any larger +bufsize).
    let out = d.ask("kdig", &["big.lab.test", "A", "+bufsize=65000", "+ignore"]);
    let received = received_bytes(&out);
    assert!(received <= 1232, "{received} bytes over UDP:\n{out}");
    let flags = header_flags(&out);
    assert!(flags.contains(&"tc".to_string()), "no TC: {flags:?}\n{out}");
    assert!(out.contains("ANSWER: 0"), "part of an answer sent:\n{out}");
    assert!(
        out.contains("UDP size: 1232 B"),
        "no OPT saying 1232:\n{out}"
    );
    assert!(
        out.contains(";; big.lab.test.") && out.contains("IN\tA"),
        "question kept:\n{out}"
    );

    // The same question over TCP gets every address.
    let tcp = d.ask(
        "kdig",
        &["big.lab.test", "A", "+bufsize=65000", "+tcp", "+short"],
    );
    assert_eq!(
        tcp.lines().filter(|l| l.starts_with("10.9.0.")).count(),
        120,
        "{tcp}"
    );

    // Small answers are unaffected, and say 1232 in their OPT whatever was offered.
    let small = d.ask("kdig", &["small.lab.test", "A", "+bufsize=65000"]);
    assert!(!header_flags(&small).contains(&"tc".to_string()), "{small}");
    assert!(
        small.contains("10.8.0.1") && small.contains("UDP size: 1232 B"),
        "{small}"
    );
}

/// `;; Received 1234 B` from kdig.
fn received_bytes(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.strip_prefix(";; Received "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in kdig output:\n{out}"))
}

/// kdig's `;; Flags: qr aa tc; QUERY: ...` as a list.
fn header_flags(out: &str) -> Vec<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(";; Flags: "))
        .map(|l| {
            l.split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_else(|| panic!("no flags in kdig output:\n{out}"))
}
