//! Forwarding names outside the local zones to upstream resolvers: the client's query bytes
//! are sent as they are, over a fresh connected socket per query (random source port),
//! each upstream in turn with a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug)]
pub(super) enum ForwardError {
    Timeout,
    Io(std::io::Error),
    BadAnswer(String),
}

impl ForwardError {
    pub(super) fn reason(&self) -> &'static str {
        match self {
            ForwardError::Timeout => "timeout",
            ForwardError::Io(_) => "error",
            ForwardError::BadAnswer(_) => "bad_answer",
        }
    }
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::Timeout => write!(f, "timed out"),
            ForwardError::Io(e) => write!(f, "{e}"),
            ForwardError::BadAnswer(e) => write!(f, "unusable answer: {e}"),
        }
    }
}

impl From<std::io::Error> for ForwardError {
    fn from(e: std::io::Error) -> Self {
        ForwardError::Io(e)
    }
}

/// Ask each upstream in turn; the first usable answer wins.
pub(super) async fn exchange(
    upstreams: &[SocketAddr],
    timeout: Duration,
    query: &[u8],
    tcp: bool,
) -> Result<Message, ForwardError> {
    let mut last = ForwardError::Timeout;
    for up in upstreams {
        let once = async {
            let msg = if tcp {
                over_tcp(*up, query).await?
            } else {
                let m = over_udp(*up, query).await?;
                if m.metadata.truncation {
                    // Too big for UDP upstream: fetch it whole; our own encoder truncates
                    // again to what the client can take.
                    over_tcp(*up, query).await?
                } else {
                    m
                }
            };
            Ok::<Message, ForwardError>(msg)
        };
        match tokio::time::timeout(timeout, once).await {
            Ok(Ok(m)) => return Ok(m),
            Ok(Err(e)) => {
                tracing::debug!(upstream = %up, error = %e, "dns: upstream failed");
                last = e;
            }
            Err(_) => {
                tracing::debug!(upstream = %up, "dns: upstream timed out");
                last = ForwardError::Timeout;
            }
        }
    }
    Err(last)
}

fn parse(query: &[u8], answer: &[u8]) -> Option<Result<Message, ForwardError>> {
    // A stray datagram with another id is ignored, not taken as the answer.
    if answer.len() < 12 || answer[..2] != query[..2] {
        return None;
    }
    Some(Message::from_vec(answer).map_err(|e| ForwardError::BadAnswer(e.to_string())))
}

async fn over_udp(up: SocketAddr, query: &[u8]) -> Result<Message, ForwardError> {
    let bind: SocketAddr = if up.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if let Some(r) = parse(query, &buf[..n]) {
            return r;
        }
    }
}

async fn over_tcp(up: SocketAddr, query: &[u8]) -> Result<Message, ForwardError> {
    let mut s = TcpStream::connect(up).await?;
    let len =
        u16::try_from(query.len()).map_err(|_| ForwardError::BadAnswer("query too long".into()))?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    s.write_all(&out).await?;
    let n = s.read_u16().await? as usize;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    parse(query, &buf).unwrap_or_else(|| Err(ForwardError::BadAnswer("wrong id".into())))
}
