//! Plain-HTTP bodies sent with sendfile(2), their headers queued with MSG_MORE in front of
//! the body: on one keep-alive connection every response still arrives whole, in order.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

/// One response off `r`: (status, Content-Length, body). HEAD answers have no body.
fn response(r: &mut impl BufRead, head: bool) -> (u16, usize, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; if head { 0 } else { len }];
    r.read_exact(&mut body).unwrap();
    (status, len, body)
}

#[test]
fn sendfile_bodies_on_one_keep_alive_connection_arrive_whole() {
    let dir = Provbox::dir();
    let big: Vec<u8> = (0..1usize << 20)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    std::fs::write(dir.path().join("files/big.bin"), &big).unwrap();
    let port = free_tcp_port();
    let _pb = Provbox::start(
        dir,
        &format!(
            "data_dir: data\ncatalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:{port}\"]\n"
        ),
    );
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Pipelined on one connection: whole file, a range past the sendfile threshold, HEAD,
    // the whole file again.
    let req = |method: &str, extra: &str| {
        format!("{method} /big.bin HTTP/1.1\r\nHost: provbox\r\n{extra}\r\n")
    };
    let all = [
        req("GET", ""),
        req("GET", "Range: bytes=100000-299999\r\n"),
        req("HEAD", ""),
        req("GET", ""),
    ]
    .concat();
    (&s).write_all(all.as_bytes()).unwrap();
    let mut r = BufReader::new(&s);
    let (code, len, body) = response(&mut r, false);
    assert_eq!((code, len), (200, big.len()));
    assert!(body == big, "first body differs");
    let (code, len, body) = response(&mut r, false);
    assert_eq!((code, len), (206, 200_000));
    assert!(body == big[100_000..300_000], "range body differs");
    let (code, len, _) = response(&mut r, true);
    assert_eq!((code, len), (200, big.len()));
    let (code, _, body) = response(&mut r, false);
    assert_eq!(code, 200);
    assert!(body == big, "second body differs");
}
