//! The machine's IPv4 interface addresses (getifaddrs, through nix): one walk for the
//! banner (addresses to show phones) and DHCP (the addresses of a served interface).

use std::net::Ipv4Addr;

use nix::net::if_::InterfaceFlags;

pub(crate) struct Ipv4If {
    pub iface: String,
    pub ip: Ipv4Addr,
    /// Netmask length (32 when the kernel reports none).
    pub prefix: u8,
    pub up: bool,
}

/// Every IPv4 address on every interface; empty if the kernel will not list them.
pub(crate) fn ipv4() -> Vec<Ipv4If> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    list.filter_map(|a| {
        let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
        let prefix = a
            .netmask
            .as_ref()
            .and_then(|m| m.as_sockaddr_in())
            .map_or(32, |m| m.ip().to_bits().count_ones() as u8);
        Some(Ipv4If {
            iface: a.interface_name,
            ip,
            prefix,
            up: a.flags.contains(InterfaceFlags::IFF_UP),
        })
    })
    .collect()
}

/// IPv4 addresses of interfaces that are up, loopback last.
pub(crate) fn local_ipv4() -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = ipv4().into_iter().filter(|a| a.up).map(|a| a.ip).collect();
    out.sort_by_key(|a| (a.is_loopback(), *a));
    out.dedup();
    out
}
