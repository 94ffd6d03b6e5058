//! Who is asking: the device's MAC, model and firmware, and how sure we are.
//!
//! Vendor knowledge is data: each vendor's User-Agent formats live in its file under
//! [`crate::vendors`]. Adding a vendor means adding that file, never a branch here.

use std::net::IpAddr;
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelValue;
use regex::Regex;

use super::config::Trust;
use super::{ClientIdentity, Inventory, Mac, Record, Registry};
use crate::vendors::{self, Vendor};

/// Where a device's MAC came from, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Source {
    /// A client certificate the TLS layer verified.
    client_cert,
    /// HTTP Basic or Digest credentials (`devices.trust.http_auth`).
    http_auth,
    /// A DHCP lease provbox granted to the peer's address.
    lease,
    /// The User-Agent header.
    user_agent,
    /// The MAC in the requested path (a device asking for its own file).
    path,
    /// Nothing: the request could be from anyone.
    none,
}

/// Every vendor's User-Agent formats, in [`vendors::VENDORS`] order, compiled once.
fn compiled() -> &'static [(&'static Vendor, Regex)] {
    static C: OnceLock<Vec<(&'static Vendor, Regex)>> = OnceLock::new();
    C.get_or_init(|| {
        vendors::VENDORS
            .iter()
            .flat_map(|v| v.user_agents.iter().map(move |f| (*v, f)))
            .map(|(v, f)| {
                let re = Regex::new(f.pattern).expect("vendor User-Agent patterns are valid");
                (v, re)
            })
            .collect()
    })
}

/// What a User-Agent says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UaInfo {
    pub vendor: &'static str,
    pub model: Option<String>,
    pub version: Option<String>,
    pub mac: Option<Mac>,
    pub serial: Option<String>,
}

/// The first vendor format (see [`vendors`]) the User-Agent matches.
pub fn parse_user_agent(ua: &str) -> Option<UaInfo> {
    for (v, re) in compiled() {
        if let Some(c) = re.captures(ua) {
            let get = |n: &str| c.name(n).map(|m| m.as_str().to_string());
            return Some(UaInfo {
                vendor: v.name,
                model: get("model"),
                version: get("version"),
                mac: c.name("mac").and_then(|m| m.as_str().parse().ok()),
                serial: get("serial"),
            });
        }
    }
    None
}

/// The requesting device as far as this request shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub mac: Option<Mac>,
    pub source: Source,
    /// The source is one the configuration trusts to prove who is asking.
    pub proven: bool,
    /// Why a source the configuration trusts did not prove it this time (a metric reason
    /// label): a lease whose address the kernel's neighbour table does not show at the
    /// leased MAC.
    pub doubt: Option<&'static str>,
    pub vendor: Option<&'static str>,
    pub model: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
}

/// Combine every identity source for one request. A verified certificate beats our own
/// lease, which beats the User-Agent, which beats the MAC in the path. Whether the result
/// proves who is asking depends on `trust` (a certificate always does). A trusted lease
/// proves its MAC only when `neighbour` (the kernel's table) shows that same MAC at the
/// peer's address: anyone can write a victim's MAC into a DHCP request's `chaddr`, but
/// frames for the address still go to the sender's own MAC. `neighbour` is asked only then.
pub fn identify(
    peer: IpAddr,
    user_agent: Option<&str>,
    client: Option<&ClientIdentity>,
    path_mac: Option<Mac>,
    registry: &Registry,
    trust: &Trust,
    neighbour: &dyn Fn(IpAddr) -> Option<Mac>,
) -> Identity {
    let ua = user_agent.and_then(parse_user_agent);
    let mut doubt = None;
    let (mac, source, proven) = if let Some(m) = client.and_then(|c| c.mac) {
        (Some(m), Source::client_cert, true)
    } else if let Some(l) = registry.by_ip(peer) {
        // Behind a relay the neighbour table shows the relay, never the phone; there the
        // trusted relay's word on the switch port stands in (`trust.relay`), for the
        // address it leased through that port only.
        let relayed = trust.relay
            && registry
                .port_of(l.mac)
                .is_some_and(|(_, ip)| ip.to_canonical() == peer.to_canonical());
        let proven = relayed
            || trust.lease
                && match neighbour(peer) {
                    Some(n) if n == l.mac => true,
                    Some(_) => {
                        doubt = Some("lease_neighbour_mismatch");
                        false
                    }
                    None => {
                        doubt = Some("lease_no_neighbour");
                        false
                    }
                };
        (Some(l.mac), Source::lease, proven)
    } else if let Some(m) = ua.as_ref().and_then(|u| u.mac) {
        (Some(m), Source::user_agent, trust.user_agent)
    } else if let Some(m) = path_mac {
        (Some(m), Source::path, trust.path)
    } else {
        (None, Source::none, false)
    };
    Identity {
        mac,
        source,
        proven,
        doubt,
        vendor: ua.as_ref().map(|u| u.vendor),
        model: ua.as_ref().and_then(|u| u.model.clone()),
        version: ua.as_ref().and_then(|u| u.version.clone()),
        serial: ua.and_then(|u| u.serial),
    }
}

/// The inventory row of the switch port `mac` was last leased through (a trusted relay's
/// option 82), unless that row names another device's MAC.
pub fn port_record<'a>(registry: &Registry, inv: &'a Inventory, mac: Mac) -> Option<&'a Record> {
    let (port, _) = registry.port_of(mac)?;
    inv.by_port(&port)
        .filter(|r| r.mac.is_none_or(|m| m == mac))
}

/// The MAC a request path names (`/cfg/00562b043615.xml`, `SEP00562B043615.cnf.xml`),
/// with the byte range it occupies. Yealink's model files `y0000000000NN.cfg` look like
/// MACs with the all-zero OUI; no phone has that OUI, so such names are not devices.
pub fn mac_in_path(key: &str) -> Option<(Mac, std::ops::Range<usize>)> {
    let b = key.as_bytes();
    let mut i = 0;
    while i + 12 <= b.len() {
        let at_start = i == 0 || !b[i - 1].is_ascii_hexdigit();
        if at_start
            && b[i..i + 12].iter().all(u8::is_ascii_hexdigit)
            && (i + 12 == b.len() || !b[i + 12].is_ascii_hexdigit())
        {
            if let Ok(m) = key[i..i + 12].parse::<Mac>()
                && m.0[..3] != [0, 0, 0]
            {
                return Some((m, i..i + 12));
            }
            i += 12;
            continue;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::registry::LeaseInfo;

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    /// Each vendor's agent formats: User-Agent, vendor, model, version, MAC.
    #[rustfmt::skip]
    const AGENTS: &[[&str; 5]] = &[
        ["Cisco-CP-8831-3PCC/9.3.3 (00562b043615)", "cisco", "CP-8831-3PCC", "9.3.3", "00562b043615"],
        ["Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400FK)", "cisco", "SPA508G", "7.4.4", "0002fdff2103"],
        ["Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37", "yealink", "SIP-T46G", "28.72.0.1", "0015654aa937"],
        ["FileTransport PolycomVVX-VVX_400-UA/5.9.5.0614 Type/Application", "polycom", "VVX_400", "5.9.5.0614", ""],
        ["FileTransport PolycomVVX-VVX_410-UA/5.9.0.9373 (SN:64167f0a0b0c) Type/Application", "polycom", "VVX_410", "5.9.0.9373", "64167f0a0b0c"],
        ["Grandstream Model HW GXP2170 V2.4B SW 1.0.11.3 DevId c074ad2bd859", "grandstream", "GXP2170", "1.0.11.3", "c074ad2bd859"],
        ["Grandstream GXP1625 1.0.4.128 DevId c074ad2bd85a", "grandstream", "GXP1625", "1.0.4.128", "c074ad2bd85a"],
        ["Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 010.1.33.33 000413922D24)", "snom", "D785", "10.1.33.33", "000413922d24"],
    ];

    #[test]
    fn each_vendors_agents_give_vendor_model_version_and_mac() {
        for &[ua, vendor, model, version, m] in AGENTS {
            let u = parse_user_agent(ua).unwrap_or_else(|| panic!("not parsed: {ua}"));
            assert_eq!(u.vendor, vendor, "{ua}");
            assert_eq!(u.model.as_deref(), Some(model), "{ua}");
            assert_eq!(u.version.as_deref(), Some(version), "{ua}");
            // "" stands for an agent that carries no MAC.
            assert_eq!(u.mac, (!m.is_empty()).then(|| mac(m)), "{ua}");
        }
    }

    #[test]
    fn cisco_spa_serial() {
        let u = parse_user_agent("Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400FK)").unwrap();
        assert_eq!(u.serial.as_deref(), Some("CBT141400FK"));
    }

    #[test]
    fn unknown_agents() {
        assert_eq!(parse_user_agent("curl/8.5.0"), None);
        assert_eq!(parse_user_agent(""), None);
        // A truncated Cisco agent without its MAC is not half-parsed into a wrong MAC.
        assert_eq!(parse_user_agent("Cisco-CP-8831-3PCC/9.3.3"), None);
    }

    #[test]
    fn macs_in_paths() {
        let (m, r) = mac_in_path("cfg/00562b043615.xml").unwrap();
        assert_eq!(m, mac("00562b043615"));
        assert_eq!(r, 4..16);
        assert_eq!(
            mac_in_path("SEP00562B043615.cnf.xml").map(|x| x.0),
            Some(mac("00562b043615"))
        );
        assert_eq!(mac_in_path("y000000000028.cfg"), None);
        assert_eq!(mac_in_path("CP-8831-3PCC.cfg"), None);
        assert_eq!(mac_in_path("fw/1234567890abcdef.bin"), None);
    }

    #[test]
    fn lease_identity_from_the_registry() {
        let reg = Registry::default();
        let ip: IpAddr = "198.18.0.57".parse().unwrap();
        reg.lease_bound(
            ip,
            LeaseInfo {
                mac: mac("000e08aabbcc"),
                hostname: None,
                vendor_class: None,
            },
        );
        let trusting = Trust {
            lease: true,
            ..Trust::default()
        };
        // The kernel shows the leased MAC at the leased address.
        let at_lease = |a: IpAddr| (a == ip).then(|| mac("000e08aabbcc"));
        // The lease wins over what the User-Agent claims, and is proven when trusted.
        // A Yealink asking from `a`, with leases trusted.
        let yealink_at = |a: IpAddr| {
            let ua = Some("Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37");
            identify(a, ua, None, None, &reg, &trusting, &at_lease)
        };
        let id = yealink_at(ip);
        assert_eq!(id.mac, Some(mac("000e08aabbcc")));
        assert_eq!(id.source, Source::lease);
        assert!(id.proven);
        assert_eq!(id.model.as_deref(), Some("SIP-T46G"));
        let id = identify(ip, None, None, None, &reg, &Trust::default(), &at_lease);
        assert!(!id.proven);
        // Another address has no lease: the User-Agent is all there is, untrusted.
        let other: IpAddr = "198.18.0.58".parse().unwrap();
        let id = yealink_at(other);
        assert_eq!(id.source, Source::user_agent);
        assert!(!id.proven);
        // A verified certificate beats the lease.
        let cert = ClientIdentity {
            subject: "CN=SEP00562B043615".into(),
            common_name: None,
            mac: Some(mac("00562b043615")),
        };
        let id = identify(
            ip,
            None,
            Some(&cert),
            None,
            &reg,
            &Trust::default(),
            &at_lease,
        );
        assert_eq!(id.source, Source::client_cert);
        assert!(id.proven);
        // A Polycom agent has no MAC: the path's MAC is used, proven only when trusted.
        let polycom = "FileTransport PolycomVVX-VVX_400-UA/5.9.5.0614 Type/Application";
        let pm = Some(mac("0004f2abcdef"));
        let id = identify(other, Some(polycom), None, pm, &reg, &trusting, &at_lease);
        assert_eq!((id.source, id.proven), (Source::path, false));
        let t = Trust {
            path: true,
            ..Trust::default()
        };
        let id = identify(other, Some(polycom), None, pm, &reg, &t, &at_lease);
        assert_eq!((id.mac, id.proven), (pm, true));
        assert_eq!(id.model.as_deref(), Some("VVX_400"));
    }

    #[test]
    fn a_lease_proves_only_the_mac_the_neighbour_table_shows() {
        let reg = Registry::default();
        let ip: IpAddr = "198.18.0.57".parse().unwrap();
        let victim = mac("000e08aabbcc");
        // Someone asked for a lease with the victim's MAC in chaddr.
        reg.lease_bound(
            ip,
            LeaseInfo {
                mac: victim,
                hostname: None,
                vendor_class: None,
            },
        );
        let trusting = Trust {
            lease: true,
            ..Trust::default()
        };
        let attacker = |_: IpAddr| Some(mac("020000000666"));
        let id = identify(ip, None, None, None, &reg, &trusting, &attacker);
        assert_eq!((id.mac, id.source), (Some(victim), Source::lease));
        assert!(!id.proven);
        assert_eq!(id.doubt, Some("lease_neighbour_mismatch"));
        // No entry (off-link, e.g. behind a relay): nothing proven either.
        let id = identify(ip, None, None, None, &reg, &trusting, &|_| None);
        assert_eq!((id.proven, id.doubt), (false, Some("lease_no_neighbour")));
        // Lease trust off: the table is not even asked.
        let id = identify(ip, None, None, None, &reg, &Trust::default(), &|_| {
            panic!("asked")
        });
        assert_eq!((id.proven, id.doubt), (false, None));
        let id = identify(ip, None, None, None, &reg, &trusting, &|_| Some(victim));
        assert!(id.proven);
    }
}
