//! The phone's own small clients, each bound to the phone's leased address: TFTP (RFC 1350
//! read), a DNS A query, HTTP/1.1 GET over TLS with Range, and a syslog datagram.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::time::{Instant, timeout_at};

async fn udp_from(ip: Ipv4Addr) -> Result<UdpSocket> {
    UdpSocket::bind((ip, 0))
        .await
        .with_context(|| format!("bind {ip} (is the lease pool routed to lo?)"))
}

/// Read `file` from `server` over TFTP (octet, 512-byte blocks), retransmitting every 2 s.
pub async fn tftp_get(
    ip: Ipv4Addr,
    server: SocketAddr,
    file: &str,
    deadline: Instant,
) -> Result<Vec<u8>> {
    let sock = udp_from(ip).await?;
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.push(0);
    rrq.extend_from_slice(b"octet\0");
    let mut last = rrq;
    let mut dest = server;
    let mut peer: Option<SocketAddr> = None;
    let mut data = Vec::new();
    let mut next: u16 = 1;
    let mut buf = vec![0u8; 600];
    loop {
        sock.send_to(&last, dest).await?;
        let until = (Instant::now() + Duration::from_secs(2)).min(deadline);
        loop {
            let (n, from) = match timeout_at(until, sock.recv_from(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => break,
            };
            if peer.is_some_and(|p| p != from) || n < 4 {
                continue;
            }
            let op = u16::from_be_bytes([buf[0], buf[1]]);
            let block = u16::from_be_bytes([buf[2], buf[3]]);
            match op {
                3 if block == next => {
                    peer = Some(from);
                    dest = from;
                    data.extend_from_slice(&buf[4..n]);
                    last = vec![0, 4, buf[2], buf[3]];
                    if n - 4 < 512 {
                        sock.send_to(&last, dest).await?;
                        return Ok(data);
                    }
                    next = next.wrapping_add(1);
                    sock.send_to(&last, dest).await?;
                }
                3 => {} // duplicate of an earlier block
                5 => bail!(
                    "ERROR {block}: {}",
                    String::from_utf8_lossy(&buf[4..n]).trim_end_matches('\0')
                ),
                _ => bail!("unexpected opcode {op}"),
            }
        }
        if Instant::now() >= deadline {
            bail!("no block {next} before the step timeout");
        }
    }
}

/// An A query for `name` at `server`, retransmitted every 2 s; the first address.
pub async fn resolve(
    ip: Ipv4Addr,
    server: SocketAddr,
    name: &str,
    id: u16,
    deadline: Instant,
) -> Result<Ipv4Addr> {
    let sock = udp_from(ip).await?;
    sock.connect(server).await?;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut buf = vec![0u8; 1500];
    loop {
        sock.send(&q).await?;
        let until = (Instant::now() + Duration::from_secs(2)).min(deadline);
        loop {
            let n = match timeout_at(until, sock.recv(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => break,
            };
            if n < 12 || buf[..2] != id.to_be_bytes() {
                continue;
            }
            return first_a(&buf[..n]).with_context(|| format!("answer for {name}"));
        }
        if Instant::now() >= deadline {
            bail!("no answer for {name} before the step timeout");
        }
    }
}

fn skip_name(m: &[u8], mut at: usize) -> Result<usize> {
    loop {
        let len = *m.get(at).context("truncated name")? as usize;
        if len == 0 {
            return Ok(at + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Ok(at + 2);
        }
        at += 1 + len;
    }
}

fn first_a(m: &[u8]) -> Result<Ipv4Addr> {
    let rcode = m[3] & 0x0f;
    if rcode != 0 {
        bail!("rcode {rcode}");
    }
    let qd = u16::from_be_bytes([m[4], m[5]]);
    let an = u16::from_be_bytes([m[6], m[7]]);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(m, at)? + 4;
    }
    for _ in 0..an {
        at = skip_name(m, at)?;
        let h = m.get(at..at + 10).context("truncated answer")?;
        let (typ, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[8], h[9]]) as usize,
        );
        at += 10;
        let rdata = m.get(at..at + len).context("truncated rdata")?;
        if typ == 1 && len == 4 {
            return Ok(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]));
        }
        at += len;
    }
    bail!("no A record")
}

/// One phone's HTTPS connection, from its leased address, with its own certificate.
pub struct Https<S> {
    stream: S,
    buf: Vec<u8>,
    host: String,
    agent: String,
}

pub async fn https_connect(
    ip: Ipv4Addr,
    server: SocketAddr,
    host: &str,
    agent: String,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Https<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    let tcp = sock.connect(server).await.context("TCP connect")?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(host.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    Ok(Https {
        stream,
        buf: Vec::new(),
        host: host.to_string(),
        agent,
    })
}

/// A response: status and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Https<S> {
    pub async fn get(&mut self, path: &str, range: Option<&str>) -> Result<Response> {
        let mut req = format!(
            "GET /{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\n",
            self.host, self.agent
        );
        if let Some(r) = range {
            req.push_str(&format!("Range: bytes={r}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).await?;
        self.stream.flush().await?;
        let end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let (mut length, mut chunked) = (None, false);
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = Some(v.parse::<usize>().context("content-length")?);
            } else if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                chunked = true;
            }
        }
        let body = if chunked {
            self.chunked().await?
        } else {
            let len = length.context("response without length")?;
            self.take(len).await?
        };
        Ok(Response { status, body })
    }

    async fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed mid-response");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn take(&mut self, len: usize) -> Result<Vec<u8>> {
        while self.buf.len() < len {
            self.fill().await?;
        }
        Ok(self.buf.drain(..len).collect())
    }

    async fn line(&mut self) -> Result<String> {
        loop {
            if let Some(p) = find(&self.buf, b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                self.buf.drain(..p + 2);
                return Ok(l);
            }
            self.fill().await?;
        }
    }

    async fn chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size = self.line().await?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .context("chunk size")?;
            if size == 0 {
                // Trailers end with an empty line.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.take(size).await?);
            self.line().await?;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One syslog datagram from the phone's address.
pub async fn syslog(ip: Ipv4Addr, server: SocketAddr, lines: &[String]) -> Result<()> {
    let sock = udp_from(ip).await?;
    for l in lines {
        let n = sock.send_to(l.as_bytes(), server).await?;
        if n != l.len() {
            bail!("short send");
        }
    }
    Ok(())
}
