//! A webhook: the event as a JSON POST through [`crate::http_client`], signed with
//! HMAC-SHA256 of the body in `X-Provbox-Signature: sha256=<hex>`, retried with doubling
//! back-off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderName};

use super::{Event, Outcome};
use crate::http_client::{Client, Post, Scheme, Target};
use crate::secret::{hex, hmac_sha256};

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where to POST: `http://host[:port][/path]`, read by [`Target::parse`]; https is refused.
pub(crate) fn parse_url(url: &str) -> Result<Target, String> {
    let t = Target::parse(url).map_err(|e| format!("{e}; expected http://host:port/path"))?;
    if t.scheme == Scheme::Https {
        return Err(format!(
            "`{url}`: https is not supported for webhooks (sign with a secret instead); expected http://host:port/path"
        ));
    }
    Ok(t)
}

/// HMAC-SHA256 (RFC 2104).
pub(crate) struct Webhook {
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
    Error(String),
    Timeout,
}

impl Webhook {
    fn request(&self, ev: &Event, body: &[u8], delivery: &str) -> Result<Post, String> {
        let mut post = Post::new(self.target.clone(), body.to_vec())
            .header(CONTENT_TYPE, "application/json")
            .and_then(|p| {
                p.header(
                    HeaderName::from_static("x-provbox-event"),
                    ev.event.as_str(),
                )
            })
            .and_then(|p| p.header(HeaderName::from_static("x-provbox-delivery"), delivery));
        if let Some(s) = &self.secret {
            let sig = format!("sha256={}", hex(&hmac_sha256(s, body)));
            post =
                post.and_then(|p| p.header(HeaderName::from_static("x-provbox-signature"), &sig));
        }
        post.map_err(|e| e.to_string())
    }

    async fn attempt(&self, req: &Post) -> Attempt {
        // The timeout covers connect, request and the answer's status; its body is not read.
        match Client::new(self.timeout, 0).post_status(req).await {
            Ok(code) => Attempt::Status(code.as_u16()),
            Err(e) if e.is_timeout() => Attempt::Timeout,
            Err(e) => Attempt::Error(e.to_string()),
        }
    }

    pub(crate) async fn run(&self, ev: &Event, body: &[u8]) -> Outcome {
        let delivery = format!(
            "{}-{}-{}",
            self.name,
            ev.at,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let req = match self.request(ev, body, &delivery) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(hook = %self.name, delivery, "webhook not sent: {e}");
                return Outcome::Failed;
            }
        };
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
                Attempt::Error(e) => {
                    last = Outcome::Failed;
                    e
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
        let t = parse_url("http://tickets.lab:8080/hook?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path_and_query.as_str()),
            ("tickets.lab", 8080, "/hook?x=1")
        );
        let t = parse_url("http://[::1]:9/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert_eq!(t.host_header(), "[::1]:9");
        assert_eq!(parse_url("http://h").unwrap().port, 80);
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
            assert!(parse_url(bad).is_err(), "{bad}");
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
            target: parse_url(&format!("http://127.0.0.1:{port}/in")).unwrap(),
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
