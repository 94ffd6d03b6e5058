//! Device registry: what provbox knows about each device, starting with IP→MAC from its
//! own DHCP leases, so a TFTP request from a leased address is tied to a MAC.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock};

use super::Observer;

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `00562b043615`: the `$MA` form phones put in file names.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Find a MAC in free text: six pairs split by `:`, `-` or `.`, or 12 hex digits in a
    /// row, not part of a longer hex run. Works on bytes: any text (syslog lines carry
    /// non-ASCII) is safe, and nothing is allocated per position.
    pub fn find_in(text: &str) -> Option<Mac> {
        let b = text.as_bytes();
        let is_hex = |i: usize| b.get(i).is_some_and(u8::is_ascii_hexdigit);
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        for start in 0..b.len() {
            if start > 0 && is_hex(start - 1) {
                continue;
            }
            // (bytes per pair including its separator, length of the whole form)
            for (step, len) in [(3, 17), (2, 12)] {
                let Some(w) = b.get(start..start + len) else {
                    continue;
                };
                if is_hex(start + len) {
                    continue;
                }
                let mut out = [0u8; 6];
                let whole = (0..6).all(|i| {
                    let at = i * step;
                    let sep_ok = step == 2 || i == 5 || matches!(w[at + 2], b':' | b'-' | b'.');
                    match (nibble(w[at]), nibble(w[at + 1])) {
                        (Some(h), Some(l)) if sep_ok => {
                            out[i] = (h << 4) | l;
                            true
                        }
                        _ => false,
                    }
                });
                if whole {
                    return Some(Mac(out));
                }
            }
        }
        None
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let digits: String = s
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        if digits.len() != 12 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "`{s}` is not a MAC address; expected e.g. 00:0e:08:12:34:56"
            ));
        }
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&digits[i * 2..i * 2 + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Mac(out))
    }
}

/// What a lease tells about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub mac: Mac,
    pub hostname: Option<String>,
    pub vendor_class: Option<String>,
}

#[cfg(test)]
impl LeaseInfo {
    /// A lease of `mac` with neither host name nor vendor class.
    pub(crate) fn of(mac: Mac) -> LeaseInfo {
        LeaseInfo {
            mac,
            hostname: None,
            vendor_class: None,
        }
    }
}

/// Leases by address, and the addresses of each lease hostname (as a DNS label), kept
/// together under one lock so the two never disagree.
#[derive(Default)]
struct Leases {
    by_ip: HashMap<IpAddr, LeaseInfo>,
    /// DNS answers lease names from this: one hash lookup, no copy of the leases.
    by_name: HashMap<String, Vec<IpAddr>>,
}

impl Leases {
    fn unindex(&mut self, ip: IpAddr, info: &LeaseInfo) {
        let Some(name) = info.hostname.as_deref().and_then(dns_label) else {
            return;
        };
        if let Some(ips) = self.by_name.get_mut(&name) {
            ips.retain(|i| *i != ip);
            if ips.is_empty() {
                self.by_name.remove(&name);
            }
        }
    }
}

/// A DHCP hostname as one DNS label: letters, digits and hyphens, lowercased; anything
/// else (spaces, dots, underscores from odd firmware) makes it unanswerable.
pub fn dns_label(hostname: &str) -> Option<String> {
    let h = hostname.trim().to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 63
        && !h.starts_with('-')
        && !h.ends_with('-')
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(h)
}

/// A switch port as a DHCP relay agent names it in option 82, as text. Only the DHCP
/// server makes these, and only from a relay it trusts (the relay writes option 82, the
/// phone cannot): see `dhcp.trusted_relays`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Port {
    /// Sub-option 1, circuit-id (`bench-3/port-12`; dhcrelay `-a`: the interface name).
    pub circuit: Option<String>,
    /// Sub-option 2, remote-id (which switch or relay).
    pub remote_id: Option<String>,
    /// The relay's address (`giaddr`).
    pub relay: std::net::Ipv4Addr,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.circuit, &self.remote_id) {
            (Some(c), Some(r)) => write!(f, "{c} (remote-id {r})"),
            (Some(c), None) => write!(f, "{c}"),
            (None, Some(r)) => write!(f, "remote-id {r}"),
            (None, None) => write!(f, "relay {}", self.relay),
        }
    }
}

/// What binding a device to a port changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortChange {
    /// The device was already bound to this port (a renewal).
    Same,
    /// The port had no device, or the device came from another port.
    New,
    /// The port had this other device; it is no longer bound anywhere.
    Replaced(Mac),
}

/// Switch port ↔ MAC, both ways. At most one device per port and one port per device,
/// so the maps are bounded by the ports the trusted relays name.
#[derive(Default)]
struct Ports {
    by_port: HashMap<Port, Mac>,
    by_mac: HashMap<Mac, (Port, IpAddr)>,
}

#[derive(Default)]
pub struct Registry {
    leases: RwLock<Leases>,
    ports: RwLock<Ports>,
    /// Who else wants to hear about leases and transfers (the device status book).
    observer: OnceLock<Arc<dyn Observer>>,
    /// The running DHCP server's lease desk (release, list), for the API.
    desk: OnceLock<Arc<dyn crate::devices::desk::LeaseDesk>>,
}

impl Registry {
    /// Set once at start; later calls are ignored.
    pub fn set_observer(&self, o: Arc<dyn Observer>) {
        let _ = self.observer.set(o);
    }

    pub fn observer(&self) -> Option<&Arc<dyn Observer>> {
        self.observer.get()
    }

    /// Set by the DHCP server when it starts (once; later calls are ignored).
    pub fn set_desk(&self, d: Arc<dyn crate::devices::desk::LeaseDesk>) {
        let _ = self.desk.set(d);
    }

    pub fn desk(&self) -> Option<&Arc<dyn crate::devices::desk::LeaseDesk>> {
        self.desk.get()
    }

    /// A note on the timeline of the device with `mac`, told to the observer (nothing
    /// without one).
    pub fn note(&self, mac: Mac, kind: &str, detail: &str) {
        if let Some(o) = self.observer.get() {
            o.note(mac, kind, detail);
        }
    }

    /// Called by the DHCP server whenever a lease is granted or restored from its store.
    pub fn lease_bound(&self, ip: IpAddr, info: LeaseInfo) {
        if let Some(o) = self.observer.get() {
            o.lease_seen(ip, &info);
        }
        let name = info.hostname.as_deref().and_then(dns_label);
        // Told outside the lock (the observer reads leases back).
        let mut fresh = None;
        {
            let mut l = self.leases.write().unwrap_or_else(|e| e.into_inner());
            if self.observer.get().is_some() && l.by_ip.get(&ip).map(|o| o.mac) != Some(info.mac) {
                fresh = Some(info.clone());
            }
            if let Some(old) = l.by_ip.insert(ip, info) {
                l.unindex(ip, &old);
            }
            if let Some(name) = name {
                let ips = l.by_name.entry(name).or_default();
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        if let (Some(o), Some(info)) = (self.observer.get(), fresh) {
            o.lease_bound(ip, &info);
        }
    }

    /// Called by the DHCP server when a trusted relay's option 82 named the port a lease
    /// for `mac` at `ip` was granted or renewed through.
    pub fn port_bound(&self, port: &Port, mac: Mac, ip: IpAddr) -> PortChange {
        let mut p = self.ports.write().unwrap_or_else(|e| e.into_inner());
        let before = p.by_port.insert(port.clone(), mac);
        if let Some((old, _)) = p.by_mac.insert(mac, (port.clone(), ip))
            && old != *port
            && p.by_port.get(&old) == Some(&mac)
        {
            p.by_port.remove(&old);
        }
        match before {
            Some(m) if m == mac => PortChange::Same,
            Some(m) => {
                p.by_mac.remove(&m);
                PortChange::Replaced(m)
            }
            None => PortChange::New,
        }
    }

    /// The port `mac` was last leased through and the address leased then.
    pub fn port_of(&self, mac: Mac) -> Option<(Port, IpAddr)> {
        self.ports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_mac
            .get(&mac)
            .cloned()
    }

    /// Called when a lease is released, declined or expires.
    pub fn lease_ended(&self, ip: IpAddr) {
        let mut l = self.leases.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = l.by_ip.remove(&ip) {
            l.unindex(ip, &old);
            drop(l);
            if let Some(o) = self.observer.get() {
                o.lease_ended(ip, &old);
            }
        }
    }

    pub fn by_ip(&self, ip: IpAddr) -> Option<LeaseInfo> {
        self.leases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_ip
            .get(&ip)
            .cloned()
    }

    /// The lease hostname (as a DNS label) of an address, copying nothing else.
    pub fn hostname_label(&self, ip: IpAddr) -> Option<String> {
        self.leases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_ip
            .get(&ip)
            .and_then(|i| i.hostname.as_deref().and_then(dns_label))
    }

    /// The leased addresses whose hostname is this DNS label (lowercase), oldest first.
    pub fn by_hostname(&self, label: &str) -> Vec<IpAddr> {
        self.leases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_name
            .get(label)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_per_port_and_one_port_per_device() {
        let r = Registry::default();
        let port = |c: &str| Port {
            circuit: Some(c.into()),
            remote_id: None,
            relay: "198.18.1.1".parse().unwrap(),
        };
        let (a, b): (Mac, Mac) = (
            "02:00:00:00:00:0a".parse().unwrap(),
            "02:00:00:00:00:0b".parse().unwrap(),
        );
        let ip: IpAddr = "198.18.1.12".parse().unwrap();
        assert_eq!(r.port_bound(&port("p12"), a, ip), PortChange::New);
        assert_eq!(r.port_bound(&port("p12"), a, ip), PortChange::Same);
        assert_eq!(r.port_of(a), Some((port("p12"), ip)));
        // Another device takes the port: the first is bound nowhere now.
        assert_eq!(r.port_bound(&port("p12"), b, ip), PortChange::Replaced(a));
        assert_eq!(r.port_of(a), None);
        // It moves to another port: p12 is free again, so a's return there is new.
        assert_eq!(r.port_bound(&port("p13"), b, ip), PortChange::New);
        assert_eq!(r.port_bound(&port("p12"), a, ip), PortChange::New);
        assert_eq!(r.port_of(b).map(|(p, _)| p), Some(port("p13")));
        assert_eq!(r.ports.read().unwrap().by_port.len(), 2);
    }

    #[test]
    fn mac_forms() {
        let m: Mac = "00:56:2B:04:36:15".parse().unwrap();
        assert_eq!(m.to_hex(), "00562b043615");
        assert_eq!(m.to_string(), "00:56:2b:04:36:15");
        assert_eq!("00562b043615".parse::<Mac>().unwrap(), m);
        assert!("00562b04361".parse::<Mac>().is_err());
        assert_eq!(Mac::find_in("CN=SEP00562B043615, O=x"), Some(m));
        assert_eq!(
            Mac::find_in("Yealink SIP-T46G 28.72.0.1 00:56:2b:04:36:15"),
            Some(m)
        );
        assert_eq!(Mac::find_in("serial 1234567890abcdef"), None);
        // Non-ASCII around or inside the window (syslog lines): no panic, still found.
        assert_eq!(Mac::find_in("Registration – retrying in 30 seconds"), None);
        assert_eq!(Mac::find_in("–00-56-2b-04-36-15 ü"), Some(m));
        assert_eq!(Mac::find_in("\u{fffd}\u{fffd}ä00562b043615ö"), Some(m));
        assert_eq!(Mac::find_in("00:56:2b:04:36:1–"), None);
    }

    #[test]
    fn registry_maps_ip_to_mac() {
        let r = Registry::default();
        let ip: IpAddr = "198.18.0.57".parse().unwrap();
        let mac: Mac = "00:0e:08:aa:bb:cc".parse().unwrap();
        r.lease_bound(ip, LeaseInfo::of(mac));
        assert_eq!(r.by_ip(ip).unwrap().mac, mac);
        r.lease_ended(ip);
        assert!(r.by_ip(ip).is_none());
    }

    #[test]
    fn hostname_index_follows_leases() {
        let r = Registry::default();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let bind = |at: &str, host: Option<&str>, mac: &str| {
            let lease = LeaseInfo {
                hostname: host.map(String::from),
                ..LeaseInfo::of(mac.parse().unwrap())
            };
            r.lease_bound(ip(at), lease)
        };
        bind("198.18.0.57", Some("SEP000E08AABBCC"), "00:0e:08:aa:bb:cc");
        bind("198.18.0.58", Some("bad name"), "00:0e:08:aa:bb:cd");
        bind("198.18.0.59", None, "00:0e:08:aa:bb:ce");
        assert_eq!(r.by_hostname("sep000e08aabbcc"), [ip("198.18.0.57")]);
        assert_eq!(
            r.hostname_label(ip("198.18.0.57")).as_deref(),
            Some("sep000e08aabbcc")
        );
        assert_eq!(r.hostname_label(ip("198.18.0.58")), None, "not a DNS label");
        assert_eq!(r.leases.read().unwrap().by_name.len(), 1);

        // A second phone with the same name: both answered, in lease order.
        bind("198.18.0.60", Some("sep000e08aabbcc"), "00:0e:08:aa:bb:cf");
        assert_eq!(
            r.by_hostname("sep000e08aabbcc"),
            [ip("198.18.0.57"), ip("198.18.0.60")]
        );
        // Renewing under a new name moves the address; renewing unchanged adds nothing.
        bind("198.18.0.57", Some("desk-12"), "00:0e:08:aa:bb:cc");
        bind("198.18.0.57", Some("desk-12"), "00:0e:08:aa:bb:cc");
        assert_eq!(r.by_hostname("sep000e08aabbcc"), [ip("198.18.0.60")]);
        assert_eq!(r.by_hostname("desk-12"), [ip("198.18.0.57")]);
        // Ended leases leave the index, and an empty name leaves it entirely.
        r.lease_ended(ip("198.18.0.60"));
        r.lease_ended(ip("198.18.0.57"));
        assert!(r.by_hostname("sep000e08aabbcc").is_empty());
        assert!(r.by_hostname("desk-12").is_empty());
        assert!(r.leases.read().unwrap().by_name.is_empty());
        // Ending a lease that is not there, or one without a name, is harmless.
        r.lease_ended(ip("198.18.0.99"));
        r.lease_ended(ip("198.18.0.59"));
        assert_eq!(r.leases.read().unwrap().by_ip.len(), 1);
    }

    #[test]
    fn labels() {
        assert_eq!(
            dns_label("SEP00562B043615").as_deref(),
            Some("sep00562b043615")
        );
        assert_eq!(dns_label("yealink_t46"), None);
        assert_eq!(dns_label("a.b"), None);
        assert_eq!(dns_label(""), None);
    }
}
