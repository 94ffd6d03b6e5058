//! The two socket calls tokio does not offer: receiving a request together with the
//! address it was sent to (IP_PKTINFO / IPV6_PKTINFO, so a transfer on a 0.0.0.0 listener
//! answers from the address the client talked to, as clients check), and sending a DATA
//! header plus a slice of the file in one datagram without copying the slice.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Ask the kernel to report each datagram's destination address. Only needed, and only
/// done, when the listener is bound to the unspecified address.
pub(super) fn enable_pktinfo(sock: &UdpSocket, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt(sock, sockopt::Ipv6RecvPacketInfo, &true)?;
    } else {
        setsockopt(sock, sockopt::Ipv4PacketInfo, &true)?;
    }
    Ok(())
}

/// One received datagram: its length, sender, and the local address it reached (when
/// pktinfo is on).
pub(super) struct Received {
    pub len: usize,
    pub peer: SocketAddr,
    pub local: Option<IpAddr>,
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

pub(super) async fn recv_with_dst(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    sock.async_io(Interest::READABLE, || {
        let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
        let mut iov = [IoSliceMut::new(&mut *buf)];
        let msg = recvmsg::<SockaddrStorage>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        let mut local = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    // ipi_spec_dst is the local address replies should come from; ipi_addr
                    // would be the broadcast address for a broadcast request.
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            info.ipi_spec_dst.s_addr,
                        ))));
                    }
                    ControlMessageOwned::Ipv6PacketInfo(info) => {
                        let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                        local = Some(match ip.to_ipv4_mapped() {
                            Some(v4) => IpAddr::V4(v4),
                            None => IpAddr::V6(ip),
                        });
                    }
                    _ => {}
                }
            }
        }
        let peer = msg
            .address
            .as_ref()
            .and_then(to_std)
            .ok_or_else(|| io::Error::other("datagram without a sender address"))?;
        Ok(Received {
            len: msg.bytes,
            peer,
            local,
        })
    })
    .await
}

/// Send `head` followed by `body` as one datagram on a connected socket.
pub(super) async fn send_parts(sock: &UdpSocket, head: &[u8], body: &[u8]) -> io::Result<()> {
    sock.async_io(Interest::WRITABLE, || {
        let iov = [IoSlice::new(head), IoSlice::new(body)];
        sendmsg::<SockaddrStorage>(sock.as_raw_fd(), &iov, &[], MsgFlags::empty(), None)
            .map(|_| ())
            .map_err(io::Error::from)
    })
    .await
}
