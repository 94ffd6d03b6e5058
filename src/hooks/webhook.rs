//! A webhook: the event as a JSON POST over plain HTTP/1.1, written by hand on a tokio
//! `TcpStream` (provbox has no HTTP client), signed with HMAC-SHA256 of the body in
//! `X-Provbox-Signature: sha256=<hex>`, retried with doubling back-off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Event, Outcome};

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where to POST: `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// As written (a name, an IPv4 address, or an IPv6 literal without brackets).
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let expected = "; expected http://host:port/path";
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => {
                return Err(format!(
                    "`{url}`: https is not supported for webhooks (sign with a secret instead){expected}"
                ));
            }
            _ => return Err(format!("`{url}` is not an http URL{expected}")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') || authority.contains('@') {
            return Err(format!(
                "`{url}` has spaces, controls or credentials{expected}"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unclosed `[`{expected}"))?;
            (h, tail.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{url}`: `{p}` is not a port{expected}"))?,
        };
        if host.is_empty() {
            return Err(format!("`{url}` names no host{expected}"));
        }
        Ok(Target {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// HMAC-SHA256 (RFC 2104) over SHA-256 from `sha2`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub struct Webhook {
    pub name: String,
    pub target: Target,
    pub secret: Option<Vec<u8>>,
    /// For each attempt.
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    /// Numbers deliveries: retries of one event carry the same `X-Provbox-Delivery`.
    pub seq: AtomicU64,
}

/// What one attempt gave.
enum Attempt {
    Status(u16),
    Io(std::io::Error),
    Timeout,
}

impl Webhook {
    fn request(&self, ev: &Event, body: &[u8], delivery: &str) -> Vec<u8> {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: provbox/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Provbox-Event: {}\r\nX-Provbox-Delivery: {delivery}\r\nConnection: close\r\n",
            self.target.path,
            self.target.host_header(),
            env!("CARGO_PKG_VERSION"),
            body.len(),
            ev.event.as_str(),
        );
        if let Some(s) = &self.secret {
            head.push_str(&format!(
                "X-Provbox-Signature: sha256={}\r\n",
                hex(&hmac_sha256(s, body))
            ));
        }
        head.push_str("\r\n");
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        req
    }

    async fn attempt(&self, req: &[u8]) -> Attempt {
        let t = &self.target;
        let once = async {
            let mut s = tokio::net::TcpStream::connect((t.host.as_str(), t.port)).await?;
            s.write_all(req).await?;
            // Only the status line matters; read until it is complete.
            let mut buf = Vec::with_capacity(256);
            let mut chunk = [0u8; 512];
            while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let line = String::from_utf8_lossy(&buf);
            let code = line
                .strip_prefix("HTTP/1.")
                .and_then(|r| r.get(2..5))
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status line")
                })?;
            Ok::<u16, std::io::Error>(code)
        };
        match tokio::time::timeout(self.timeout, once).await {
            Ok(Ok(code)) => Attempt::Status(code),
            Ok(Err(e)) => Attempt::Io(e),
            Err(_) => Attempt::Timeout,
        }
    }

    pub async fn run(&self, ev: &Event, body: &[u8]) -> Outcome {
        let delivery = format!(
            "{}-{}-{}",
            self.name,
            ev.at,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let req = self.request(ev, body, &delivery);
        let mut wait = self.backoff;
        let mut last = Outcome::Failed;
        for n in 0..=self.retries {
            if n > 0 {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
            let why = match self.attempt(&req).await {
                Attempt::Status(c) if (200..300).contains(&c) => return Outcome::Ok,
                // The receiver refuses this request for good: sending it again won't help.
                Attempt::Status(c) if (400..500).contains(&c) && c != 408 && c != 429 => {
                    tracing::warn!(hook = %self.name, delivery, "webhook refused: HTTP {c}");
                    return Outcome::Failed;
                }
                Attempt::Status(c) => {
                    last = Outcome::Failed;
                    format!("HTTP {c}")
                }
                Attempt::Io(e) => {
                    last = Outcome::Failed;
                    e.to_string()
                }
                Attempt::Timeout => {
                    last = Outcome::Timeout;
                    format!("no answer within {:?}", self.timeout)
                }
            };
            tracing::warn!(
                hook = %self.name,
                delivery,
                attempt = n + 1,
                of = self.retries + 1,
                "webhook attempt failed: {why}"
            );
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn urls() {
        let t = Target::parse("http://tickets.lab:8080/hook?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("tickets.lab", 8080, "/hook?x=1")
        );
        let t = Target::parse("http://[::1]:9/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert_eq!(t.host_header(), "[::1]:9");
        assert_eq!(Target::parse("http://h").unwrap().port, 80);
        for bad in [
            "https://h/",
            "ftp://h/",
            "http://h:99999/",
            "http://h:0/",
            "http:///x",
            "http://u:p@h/",
            "http://h/a b",
            "h:80",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    /// A receiver that answers each connection with the next status from `codes`.
    fn receiver(codes: Vec<u16>) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for code in codes {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                // Head, then the body by Content-Length.
                loop {
                    let n = s.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if buf.len() >= i + 4 + len || n == 0 {
                            break;
                        }
                    }
                }
                write!(s, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").unwrap();
                tx.send(buf).unwrap();
            }
        });
        (port, rx)
    }

    fn hook(port: u16, retries: u32) -> Webhook {
        Webhook {
            name: "w".into(),
            target: Target::parse(&format!("http://127.0.0.1:{port}/in")).unwrap(),
            secret: Some(b"s3cret".to_vec()),
            timeout: Duration::from_secs(5),
            retries,
            backoff: Duration::from_millis(10),
            seq: AtomicU64::new(0),
        }
    }

    fn event() -> Event {
        Event {
            event: super::super::Kind::LeaseBound,
            at: 7,
            device: None,
            mac: None,
            ip: None,
            state: None,
            previous_state: None,
            reason: None,
            model: None,
            vendor_class: None,
            hostname: None,
        }
    }

    #[tokio::test]
    async fn a_5xx_is_retried_with_the_same_signed_delivery_and_a_4xx_is_not() {
        let (port, rx) = receiver(vec![503, 200]);
        let body = br#"{"event":"lease_bound"}"#;
        assert_eq!(hook(port, 3).run(&event(), body).await, Outcome::Ok);
        let (a, b) = (rx.recv().unwrap(), rx.recv().unwrap());
        assert_eq!(a, b, "a retry sends the same request");
        let text = String::from_utf8_lossy(&a);
        assert!(text.starts_with("POST /in HTTP/1.1\r\n"), "{text}");
        let sig = format!(
            "X-Provbox-Signature: sha256={}",
            hex(&hmac_sha256(b"s3cret", body))
        );
        assert!(text.contains(&sig), "{text}");
        assert!(text.ends_with(r#"{"event":"lease_bound"}"#), "{text}");

        let (port, rx) = receiver(vec![400, 200]);
        assert_eq!(hook(port, 3).run(&event(), body).await, Outcome::Failed);
        rx.recv().unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a 400 is not retried"
        );
    }
}
