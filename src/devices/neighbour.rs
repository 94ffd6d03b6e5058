//! The kernel's neighbour table in provbox's own network namespace: which MAC the LAN
//! itself shows at an address. A DHCP `chaddr` is only what a client wrote into a packet;
//! the neighbour entry is where the kernel actually sends frames for that address, so a
//! lease proves a MAC only when the two agree, and the phone's admin credentials go out
//! only to the MAC they belong to.
//!
//! Only directly attached hosts have an entry for their own address: behind a DHCP relay
//! the neighbour is the relay, so nothing relayed can be proven this way (by design).

use std::net::{IpAddr, Ipv4Addr};

use super::Mac;

/// Where Linux shows the IPv4 neighbour (ARP) table.
pub const PROC_NET_ARP: &str = "/proc/net/arp";

/// `ATF_COM`: the entry is complete (it has a hardware address). Incomplete and failed
/// entries show `0x0` and an all-zero address.
const ATF_COM: u32 = 0x02;

/// A larger table than this is not read past (a /16 of phones is ~65k lines of ~80 bytes).
const MAX_READ: u64 = 8 * 1024 * 1024;

/// Complete entries of a `/proc/net/arp` text: (address, MAC, device). The header line and
/// anything malformed are skipped.
pub fn parse_arp(text: &str) -> impl Iterator<Item = (Ipv4Addr, Mac, &str)> {
    text.lines().filter_map(|line| {
        // IP address  HW type  Flags  HW address  Mask  Device
        let mut f = line.split_whitespace();
        let ip: Ipv4Addr = f.next()?.parse().ok()?;
        let _hw_type = f.next()?;
        let flags = u32::from_str_radix(f.next()?.strip_prefix("0x")?, 16).ok()?;
        let mac: Mac = f.next()?.parse().ok()?;
        let _mask = f.next()?;
        let dev = f.next()?;
        (flags & ATF_COM != 0 && mac.0 != [0; 6]).then_some((ip, mac, dev))
    })
}

/// The MAC the table shows at `ip`, when it shows exactly one (two interfaces disagreeing
/// prove nothing).
pub fn mac_at(text: &str, ip: Ipv4Addr) -> Option<Mac> {
    let mut found = None;
    for (a, m, _) in parse_arp(text) {
        if a != ip {
            continue;
        }
        match found {
            None => found = Some(m),
            Some(f) if f == m => {}
            Some(_) => return None,
        }
    }
    found
}

/// The MAC the kernel's neighbour table shows at `ip` right now. IPv6 neighbours are not
/// read (provbox's DHCP is IPv4): an IPv6 address proves nothing.
pub fn lookup(ip: IpAddr) -> Option<Mac> {
    use std::io::Read as _;
    // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d.
    let IpAddr::V4(v4) = ip.to_canonical() else {
        return None;
    };
    let mut text = String::new();
    std::fs::File::open(PROC_NET_ARP)
        .ok()?
        .take(MAX_READ)
        .read_to_string(&mut text)
        .ok()?;
    mac_at(&text, v4)
}

/// How a caller finds the neighbour MAC for an address: the kernel in production, a table
/// in unit tests.
pub type Lookup = std::sync::Arc<dyn Fn(IpAddr) -> Option<Mac> + Send + Sync>;

pub fn kernel() -> Lookup {
    std::sync::Arc::new(lookup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TABLE: &str = "\
IP address       HW type     Flags       HW address            Mask     Device
198.18.0.100     0x1         0x2         02:00:00:00:00:0a     *        br0
198.18.0.101     0x1         0x0         00:00:00:00:00:00     *        br0
198.18.0.102     0x1         0x6         02:00:00:00:00:0c     *        br0
10.0.0.1         0x1         0x2         aa:bb:cc:dd:ee:ff     *        eth1
10.0.0.1         0x1         0x2         aa:bb:cc:dd:ee:00     *        eth2
";

    #[test]
    fn complete_entries_only() {
        let all: Vec<_> = parse_arp(TABLE).collect();
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(
            mac_at(TABLE, "198.18.0.100".parse().unwrap()),
            Some("02:00:00:00:00:0a".parse().unwrap())
        );
        // Incomplete: the kernel does not know the MAC yet.
        assert_eq!(mac_at(TABLE, "198.18.0.101".parse().unwrap()), None);
        // Permanent (static) entries count.
        assert_eq!(
            mac_at(TABLE, "198.18.0.102".parse().unwrap()),
            Some("02:00:00:00:00:0c".parse().unwrap())
        );
        // Two interfaces, two MACs: nothing proven.
        assert_eq!(mac_at(TABLE, "10.0.0.1".parse().unwrap()), None);
        assert_eq!(mac_at(TABLE, "10.0.0.2".parse().unwrap()), None);
        assert_eq!(mac_at("", "10.0.0.2".parse().unwrap()), None);
    }

    #[test]
    fn this_hosts_table_parses() {
        // Whatever the machine has: readable, and every entry complete.
        let text = std::fs::read_to_string(PROC_NET_ARP).unwrap_or_default();
        for (_, m, dev) in parse_arp(&text) {
            assert_ne!(m.0, [0; 6]);
            assert!(!dev.is_empty());
        }
    }

    fn entry() -> impl Strategy<Value = (Ipv4Addr, u32, [u8; 6], String)> {
        (
            any::<u32>().prop_map(Ipv4Addr::from),
            prop_oneof![Just(0u32), Just(2), Just(4), Just(6), any::<u32>()],
            any::<[u8; 6]>(),
            "[a-z][a-z0-9]{0,14}",
        )
    }

    proptest! {
        /// Rendered the way the kernel prints them, entries come back exactly when they
        /// are complete, and lookups agree with a plain model of the table.
        #[test]
        fn rendered_tables_read_back(entries in proptest::collection::vec(entry(), 0..24)) {
            let mut text = String::from(
                "IP address       HW type     Flags       HW address            Mask     Device\n",
            );
            for (ip, flags, mac, dev) in &entries {
                text.push_str(&format!(
                    "{:<16} 0x1         {:<#11x} {:<21} *        {}\n",
                    ip.to_string(), flags, Mac(*mac).to_string(), dev
                ));
            }
            let want: Vec<(Ipv4Addr, Mac, &str)> = entries
                .iter()
                .filter(|(_, f, m, _)| f & ATF_COM != 0 && *m != [0; 6])
                .map(|(ip, _, m, d)| (*ip, Mac(*m), d.as_str()))
                .collect();
            let got: Vec<_> = parse_arp(&text).collect();
            prop_assert_eq!(&got, &want);
            for (ip, _, _, _) in &entries {
                let macs: std::collections::HashSet<Mac> =
                    want.iter().filter(|w| w.0 == *ip).map(|w| w.1).collect();
                let expect = (macs.len() == 1).then(|| *macs.iter().next().unwrap());
                prop_assert_eq!(mac_at(&text, *ip), expect);
            }
        }

        /// Arbitrary text never panics and yields only complete, non-zero entries.
        #[test]
        fn any_text_is_safe(text in ".{0,400}") {
            for (_, m, _) in parse_arp(&text) {
                prop_assert_ne!(m.0, [0; 6]);
            }
        }
    }
}
