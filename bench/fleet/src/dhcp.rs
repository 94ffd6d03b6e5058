//! The simulator as a DHCP relay agent: one socket on port 67 forwards every phone's
//! messages to the server with `giaddr` set and hands each reply to the phone whose
//! transaction it answers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

pub struct Relay {
    sock: UdpSocket,
    server: SocketAddr,
    giaddr: Ipv4Addr,
    waiting: Mutex<HashMap<u32, mpsc::Sender<Message>>>,
}

/// What a phone's ACK gave it.
pub struct Lease {
    pub ip: Ipv4Addr,
    pub server_id: Ipv4Addr,
    pub dns: Ipv4Addr,
    /// Option 66.
    pub tftp_name: String,
}

impl Relay {
    pub async fn bind(server: SocketAddr, giaddr: Ipv4Addr) -> Result<Arc<Relay>> {
        let std = std::net::UdpSocket::bind("0.0.0.0:67")?;
        std.set_nonblocking(true)?;
        crate::os::big_buffers(&std);
        let relay = Arc::new(Relay {
            sock: UdpSocket::from_std(std)?,
            server,
            giaddr,
            waiting: Mutex::new(HashMap::new()),
        });
        let r = relay.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let Ok((n, _)) = r.sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(msg) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                    continue;
                };
                if msg.opcode() != Opcode::BootReply {
                    continue;
                }
                let tx = r.waiting.lock().unwrap().get(&msg.xid()).cloned();
                if let Some(tx) = tx {
                    let _ = tx.try_send(msg);
                }
            }
        });
        Ok(relay)
    }

    /// DISCOVER → OFFER → REQUEST → ACK for one MAC, retransmitting (2 s, doubling to 16 s)
    /// until `deadline`.
    pub async fn lease(
        &self,
        xid: u32,
        mac: &[u8; 6],
        vendor_class: &str,
        deadline: Instant,
    ) -> Result<Lease> {
        let (tx, mut rx) = mpsc::channel(8);
        self.waiting.lock().unwrap().insert(xid, tx);
        let r = self
            .exchange(xid, mac, vendor_class, deadline, &mut rx)
            .await;
        self.waiting.lock().unwrap().remove(&xid);
        r
    }

    async fn exchange(
        &self,
        xid: u32,
        mac: &[u8; 6],
        vendor_class: &str,
        deadline: Instant,
        rx: &mut mpsc::Receiver<Message>,
    ) -> Result<Lease> {
        loop {
            let discover = self.message(xid, mac, vendor_class, MessageType::Discover, None);
            let offer = self
                .ask(&discover, MessageType::Offer, deadline, rx)
                .await?;
            let sid = match offer.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(a)) => *a,
                _ => bail!("OFFER without server identifier"),
            };
            let request = self.message(
                xid,
                mac,
                vendor_class,
                MessageType::Request,
                Some((offer.yiaddr(), sid)),
            );
            let ack = self.ask(&request, MessageType::Ack, deadline, rx).await;
            let ack = match ack {
                Ok(a) => a,
                Err(e) if e.to_string().contains("NAK") => continue,
                Err(e) => return Err(e),
            };
            if ack.yiaddr() != offer.yiaddr() {
                bail!("ACK for {} after OFFER of {}", ack.yiaddr(), offer.yiaddr());
            }
            let dns = match ack.opts().get(OptionCode::DomainNameServer) {
                Some(DhcpOption::DomainNameServer(v)) if !v.is_empty() => v[0],
                _ => bail!("ACK without option 6"),
            };
            let tftp_name = match ack.opts().get(OptionCode::TFTPServerName) {
                Some(DhcpOption::TFTPServerName(v)) => String::from_utf8_lossy(v)
                    .trim_end_matches('\0')
                    .to_string(),
                _ => bail!("ACK without option 66"),
            };
            return Ok(Lease {
                ip: ack.yiaddr(),
                server_id: sid,
                dns,
                tftp_name,
            });
        }
    }

    fn message(
        &self,
        xid: u32,
        mac: &[u8; 6],
        vendor_class: &str,
        kind: MessageType,
        requested: Option<(Ipv4Addr, Ipv4Addr)>,
    ) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, z, z, z, self.giaddr, mac);
        m.set_hops(1);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::TFTPServerName,
        ]));
        o.insert(DhcpOption::ClassIdentifier(
            vendor_class.as_bytes().to_vec(),
        ));
        if let Some((ip, sid)) = requested {
            o.insert(DhcpOption::RequestedIpAddress(ip));
            o.insert(DhcpOption::ServerIdentifier(sid));
        }
        m.to_vec().expect("encodable DHCP message")
    }

    async fn ask(
        &self,
        packet: &[u8],
        want: MessageType,
        deadline: Instant,
        rx: &mut mpsc::Receiver<Message>,
    ) -> Result<Message> {
        let mut wait = Duration::from_secs(2);
        loop {
            self.sock.send_to(packet, self.server).await?;
            let until = (Instant::now() + wait).min(deadline);
            loop {
                match timeout_at(until, rx.recv()).await {
                    Ok(Some(m)) => match m.opts().msg_type() {
                        Some(t) if t == want => return Ok(m),
                        Some(MessageType::Nak) => bail!("NAK"),
                        // A late answer to an earlier retransmission: keep waiting.
                        _ => continue,
                    },
                    Ok(None) => bail!("relay closed"),
                    Err(_) => break,
                }
            }
            if Instant::now() >= deadline {
                bail!("no {want:?} before the step timeout");
            }
            wait = (wait * 2).min(Duration::from_secs(16));
        }
    }
}
