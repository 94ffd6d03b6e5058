//! The DNS records a SIP lab needs (SRV, NAPTR, CNAME, TXT, PTR), asked with `dig` over
//! UDP and TCP and checked field by field; zone mistakes refused with file and line.

use crate::support::dedupe::check_config;
use crate::support::dns::{self, Dns};
use crate::support::{check_refuses, provbox};

const LONG: usize = 300;

fn lab() -> String {
    format!(
        r#"  zones:
    - name: lab.test
      records:
        - name: prov
          a: [127.0.0.1, 127.0.0.2]
        - name: sip
          cname: pbx
        - name: pbx
          cname: prov
        - name: _sip._udp
          srv:
            - {{ priority: 10, weight: 100, port: 5060, target: prov }}
            - {{ priority: 20, weight: 5, port: 5062, target: backup.example.org. }}
        - name: _sips._tcp
          srv: [{{ priority: 10, weight: 100, port: 5061, target: prov.lab.test. }}]
        - name: "@"
          naptr:
            - {{ order: 10, preference: 10, flags: S, service: "SIPS+D2T", replacement: _sips._tcp }}
            - {{ order: 20, preference: 10, flags: S, service: "SIP+D2U", replacement: _sip._udp }}
          txt: ["v=provbox lab", "{}"]
    - name: 0.18.198.in-addr.arpa
      records:
        - name: "7"
          ptr: [gw.lab.test.]
"#,
        "x".repeat(LONG)
    )
}

/// The answer section as records, each split into its fields: name, TTL, class, type, data...
fn records(d: &Dns, args: &[&str], tcp: bool) -> Vec<Vec<String>> {
    let mut all = args.to_vec();
    all.extend(["+noall", "+answer", "+comments"]);
    if tcp {
        all.push("+tcp");
    }
    let out = d.ask("dig", &all);
    assert!(out.contains("status: NOERROR"), "{args:?}:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(";; flags:") && l.contains(" aa")),
        "not authoritative {args:?}:\n{out}"
    );
    out.lines()
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

fn fields(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn sip_records_srv_naptr_cname_txt_ptr_over_udp_and_tcp() {
    crate::support::needs!("dig");
    let d = dns::start(&lab());
    for tcp in [false, true] {
        let srv = records(&d, &["_sip._udp.lab.test", "SRV"], tcp);
        assert_eq!(
            srv,
            [
                fields("_sip._udp.lab.test. 60 IN SRV 10 100 5060 prov.lab.test."),
                fields("_sip._udp.lab.test. 60 IN SRV 20 5 5062 backup.example.org."),
            ],
            "tcp={tcp}"
        );
        let sips = records(&d, &["_sips._tcp.lab.test", "SRV"], tcp);
        assert_eq!(
            sips,
            [fields(
                "_sips._tcp.lab.test. 60 IN SRV 10 100 5061 prov.lab.test."
            )]
        );

        let naptr = records(&d, &["lab.test", "NAPTR"], tcp);
        assert_eq!(
            naptr,
            [
                fields(r#"lab.test. 60 IN NAPTR 10 10 "S" "SIPS+D2T" "" _sips._tcp.lab.test."#),
                fields(r#"lab.test. 60 IN NAPTR 20 10 "S" "SIP+D2U" "" _sip._udp.lab.test."#),
            ],
            "tcp={tcp}"
        );

        // An alias chain, then the target's addresses in the same answer.
        let alias = records(&d, &["sip.lab.test", "A"], tcp);
        assert_eq!(alias.len(), 4, "{alias:?}");
        assert_eq!(alias[0], fields("sip.lab.test. 60 IN CNAME pbx.lab.test."));
        assert_eq!(alias[1], fields("pbx.lab.test. 60 IN CNAME prov.lab.test."));
        let mut addrs: Vec<&str> = alias[2..]
            .iter()
            .map(|r| {
                assert_eq!(r[..4], ["prov.lab.test.", "60", "IN", "A"], "{r:?}");
                r[4].as_str()
            })
            .collect();
        addrs.sort();
        assert_eq!(addrs, ["127.0.0.1", "127.0.0.2"]);
        let cname = records(&d, &["sip.lab.test", "CNAME"], tcp);
        assert_eq!(cname, [fields("sip.lab.test. 60 IN CNAME pbx.lab.test.")]);

        let txt = records(&d, &["lab.test", "TXT"], tcp);
        assert_eq!(txt.len(), 2, "{txt:?}");
        assert_eq!(txt[0], fields(r#"lab.test. 60 IN TXT "v=provbox lab""#));
        // 300 bytes: two character-strings of 255 and 45 in one record.
        assert_eq!(txt[1][..4], ["lab.test.", "60", "IN", "TXT"]);
        let long = format!("\"{}\"", "x".repeat(255));
        let rest = format!("\"{}\"", "x".repeat(LONG - 255));
        assert_eq!(txt[1][4..], [long, rest], "tcp={tcp}");

        // PTR for a configured address (no reverse zone needed), and an explicit one.
        let ptr = records(&d, &["-x", "127.0.0.2"], tcp);
        assert_eq!(
            ptr,
            [fields("2.0.0.127.in-addr.arpa. 60 IN PTR prov.lab.test.")]
        );
        let gw = records(&d, &["-x", "198.18.0.7"], tcp);
        assert_eq!(
            gw,
            [fields("7.0.18.198.in-addr.arpa. 60 IN PTR gw.lab.test.")]
        );
    }

    // The alias answer keeps rotating, cached or not: both orders show up.
    let mut orders = std::collections::HashSet::new();
    for _ in 0..8 {
        let r = records(&d, &["sip.lab.test", "A"], false);
        orders.insert(r[2][4].clone());
    }
    assert_eq!(orders.len(), 2, "{orders:?}");
}

#[test]
fn bad_zone_records_are_refused_with_file_and_line() {
    let (_dir, cfg, out) = check_refuses(
        r#"catalog:
  roots: [files]
dns:
  enabled: true
  listen: ["127.0.0.1:5353"]
  zones:
    - name: lab.test
      records:
        - name: prov
          a: [127.0.0.1]
        - name: loop1
          cname: loop2
        - name: loop2
          cname: loop1
        - name: alias
          cname: nowhere
        - name: both
          cname: prov
          a: [127.0.0.2]
        - name: sip._udp
          srv: [{ priority: 10, weight: 100, port: 5060, target: prov }]
        - name: _sip._tcp
          srv: [{ priority: 10, weight: 100, port: 5060, target: alias2 }]
        - name: alias2
          cname: prov
        - name: "@"
          naptr: [{ order: 10, preference: 10, flags: "S+", service: "SIP+D2U", replacement: _sip._udp }]
        - name: _sips._tcp
          srv: [{ priority: 1, weight: 1, port: 0, target: prov }]
        - name: rx
          naptr: [{ order: 1, preference: 1, regexp: "!^.*$!sip:x@y!", replacement: prov }]
        - name: bad-ptr
          ptr: ["a..b"]
"#,
    );
    let file = cfg.to_str().unwrap();
    let expect = [
        (12, "dns.zones[0].records[1].cname", "loops back"),
        (14, "dns.zones[0].records[2].cname", "loops back"),
        (
            16,
            "dns.zones[0].records[3].cname",
            "nowhere.lab.test. has no records",
        ),
        (
            18,
            "dns.zones[0].records[4].cname",
            "can have no other records",
        ),
        (20, "dns.zones[0].records[5].name", "_service._proto"),
        (23, "dns.zones[0].records[6].srv[0].target", "is an alias"),
        (
            27,
            "dns.zones[0].records[8].naptr[0].flags",
            "letters and digits",
        ),
        (29, "dns.zones[0].records[9].srv[0].port", "is 0"),
        (
            31,
            "dns.zones[0].records[10].naptr[0].regexp",
            "one of them",
        ),
        (
            33,
            "dns.zones[0].records[11].ptr[0]",
            "not a valid DNS name",
        ),
    ];
    for (line, field, why) in expect {
        assert!(
            out.lines().any(|l| l.contains(&format!("{file}:{line}:"))
                && l.contains(field)
                && l.contains(why)),
            "no `{file}:{line}: {field} ... {why}` in:\n{out}"
        );
    }
    assert_eq!(
        out.lines().filter(|l| l.contains(file)).count(),
        expect.len(),
        "exactly these mistakes:\n{out}"
    );

    // A wrong type inside an SRV entry names its line too.
    let (code, out) = check_config(
        &cfg,
        "catalog:\n  roots: [files]\ndns:\n  enabled: true\n  zones:\n    - name: lab.test\n      records:\n        - name: _sip._udp\n          srv:\n            - { priority: 10, weight: 100, port: 70000, target: prov }\n",
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains(&format!("{file}:10:")), "{out}");

    // The shipped config's SIP example is valid.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml");
    let (code, out) = provbox(&["check", "--config", shipped]);
    assert_eq!(code, 0, "{out}");
}
