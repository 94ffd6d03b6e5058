//! One UDP socket per configured interface, bound with SO_BINDTODEVICE so DHCP is answered
//! only there, plus the ways a reply leaves (RFC 2131 4.1): broadcast, unicast to an
//! address the client already has, or unicast to a client that has no address yet (its
//! MAC is put in the ARP table first, as dnsmasq does, since it cannot answer ARP).
//!
//! That ARP entry is the server's own doing, not evidence: it is deleted as soon as the
//! reply is handed to the kernel, because the kernel's neighbour table is what proves a
//! lease's MAC elsewhere (an entry left behind would "prove" whatever `chaddr` a request
//! carried).

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use anyhow::{Result, anyhow};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

pub const CLIENT_PORT: u16 = 68;

/// An interface DHCP is served on.
pub struct Iface {
    pub name: String,
    /// IPv4 addresses with prefix length.
    pub addrs: Vec<(Ipv4Addr, u8)>,
    pub socket: UdpSocket,
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Broadcast,
    To(Ipv4Addr, u16),
    /// Unicast to an address the client does not answer ARP for yet.
    Hw(Ipv4Addr, [u8; 6]),
}

pub fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// The interface's IPv4 addresses and prefix lengths.
pub fn ipv4_addrs(name: &str) -> Vec<(Ipv4Addr, u8)> {
    crate::netif::ipv4()
        .into_iter()
        .filter(|a| a.iface == name)
        .map(|a| (a.ip, a.prefix))
        .collect()
}

/// Bind the server port on one interface.
pub fn bind(name: &str, port: u16, field: &str) -> Result<UdpSocket> {
    if !interface_exists(name) {
        return Err(anyhow!(
            "{field}: interface `{name}` does not exist on this machine (`ip link` lists them); \
             refusing to start DHCP"
        ));
    }
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // One socket per interface on the same port: the bound device tells them apart.
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    // Bursts (a whole floor of phones powering up) must queue, not be dropped by the
    // kernel: ask for a big receive buffer, beyond rmem_max when privileged.
    let want: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with a c_int value on our own socket.
    let forced = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &want as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced != 0 {
        let _ = s.set_recv_buffer_size(want as usize);
    }
    s.bind_device(Some(name.as_bytes())).map_err(|e| {
        anyhow!("{field}: cannot bind to interface `{name}`: {e} (needs root or CAP_NET_RAW)")
    })?;
    s.bind(&addr.into())
        .map_err(|e| crate::frontend::bind_error(field, addr, e))?;
    s.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// SIOCSARP (`Some(mac)`): put (ip, mac) in the ARP table of `ifname`, so a unicast
/// reply reaches a client that has no address yet. SIOCDARP (`None`): delete it again.
fn arp(sock: &UdpSocket, ifname: &str, ip: Ipv4Addr, mac: Option<[u8; 6]>) -> io::Result<()> {
    const SIOCDARP: libc::c_ulong = 0x8953;
    const SIOCSARP: libc::c_ulong = 0x8955;
    const ATF_COM: libc::c_int = 0x02;
    // SAFETY: arpreq is plain old data; every pointer cast targets a field of it.
    unsafe {
        let mut req: libc::arpreq = std::mem::zeroed();
        let pa = &mut req.arp_pa as *mut libc::sockaddr as *mut libc::sockaddr_in;
        (*pa).sin_family = libc::AF_INET as libc::sa_family_t;
        (*pa).sin_addr.s_addr = u32::from(ip).to_be();
        req.arp_ha.sa_family = libc::ARPHRD_ETHER;
        for (i, b) in ifname.bytes().take(15).enumerate() {
            req.arp_dev[i] = b as libc::c_char;
        }
        let op = match mac {
            Some(mac) => {
                for (i, b) in mac.iter().enumerate() {
                    req.arp_ha.sa_data[i] = *b as libc::c_char;
                }
                req.arp_flags = ATF_COM;
                SIOCSARP
            }
            None => SIOCDARP,
        };
        if libc::ioctl(sock.as_raw_fd(), op as _, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Set the entry, send, delete the entry: in one step under one lock, so two replies
/// for the same address (from different tasks) cannot swap entries between them. The
/// send does not wait: the frame is built (with the entry's MAC) inside `send_to`.
fn send_via_arp(iface: &Iface, bytes: &[u8], ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    arp(&iface.socket, &iface.name, ip, Some(mac))?;
    let sent = iface
        .socket
        .try_send_to(bytes, SocketAddr::V4(SocketAddrV4::new(ip, CLIENT_PORT)))
        .map(drop);
    if let Err(e) = arp(&iface.socket, &iface.name, ip, None) {
        tracing::warn!(iface = %iface.name, %ip, "dhcp: cannot delete the ARP entry set for a reply: {e}");
    }
    sent
}

/// Send a reply the way `dest` says.
pub async fn send(iface: &Iface, bytes: &[u8], dest: Dest) -> io::Result<()> {
    let bcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT);
    match dest {
        Dest::Broadcast => iface.socket.send_to(bytes, bcast).await.map(drop),
        Dest::To(ip, port) => iface
            .socket
            .send_to(bytes, SocketAddrV4::new(ip, port))
            .await
            .map(drop),
        Dest::Hw(ip, mac) => match send_via_arp(iface, bytes, ip, mac) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(iface = %iface.name, %ip, "dhcp: cannot set ARP entry or send through it ({e}); broadcasting");
                iface.socket.send_to(bytes, bcast).await.map(drop)
            }
        },
    }
}
