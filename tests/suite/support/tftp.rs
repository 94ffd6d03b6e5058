//! A provbox serving TFTP (with its metrics) for the TFTP suites, the real clients
//! (tftp-hpa, atftp, busybox) pointed at it, and raw requests for what they will not send.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::{Provbox, free_tcp_port, free_udp_port, run};

pub struct TftpServer {
    pub pb: Provbox,
    pub port: u16,
    pub metrics_port: u16,
}

impl TftpServer {
    /// provbox with TFTP on `host` (a free port), metrics on 127.0.0.1, serving `files`
    /// (paths under `files/`), with extra `tftp:` keys.
    pub fn start(host: &str, files: &[(&str, &[u8])], tftp_extra: &str) -> TftpServer {
        let dir = Provbox::serving(files);
        let port = free_udp_port();
        let metrics_port = free_tcp_port();
        let yaml = format!(
            "data_dir: data\ncatalog:\n  roots: [files]\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:{metrics_port}\ntftp:\n  enabled: true\n  listen: {host}:{port}\n{tftp_extra}"
        );
        TftpServer {
            pb: Provbox::start(dir, &yaml),
            port,
            metrics_port,
        }
    }

    /// Where a client on this host reaches the server.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A path in the test dir for a client to write what it fetched to.
    pub fn out(&self, name: &str) -> PathBuf {
        self.pb.path().join(name)
    }

    /// tftp-hpa: `tftp 127.0.0.1 <port> <args>`.
    pub fn hpa(&self, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut a = vec!["127.0.0.1", port.as_str()];
        a.extend_from_slice(args);
        run("tftp", &a)
    }

    /// tftp-hpa fetching `remote` into `local` in transfer `mode` ("octet", "netascii").
    pub fn hpa_get(&self, mode: &str, remote: &str, local: &Path) -> Output {
        self.hpa(&["-m", mode, "-c", "get", remote, local.to_str().unwrap()])
    }

    /// `atftp <args> 127.0.0.1 <port>`.
    pub fn atftp(&self, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut a = args.to_vec();
        a.extend_from_slice(&["127.0.0.1", port.as_str()]);
        run("atftp", &a)
    }

    /// atftp fetching `remote` into `local`, asking for each of `options` (e.g.
    /// "blksize 1468") with `--option`.
    pub fn atftp_get(&self, options: &[&str], remote: &str, local: &Path) -> Output {
        let mut a = Vec::new();
        for o in options {
            a.extend(["--option", o]);
        }
        a.extend(["-g", "-r", remote, "-l", local.to_str().unwrap()]);
        self.atftp(&a)
    }

    /// busybox's tftp fetching `remote` into `local`.
    pub fn busybox_get(&self, remote: &str, local: &Path) -> Output {
        let port = self.port.to_string();
        let local = local.to_str().unwrap();
        run(
            "busybox",
            &["tftp", "-g", "-r", remote, "-l", local, "127.0.0.1", &port],
        )
    }

    pub fn metrics(&self) -> String {
        super::scrape(self.metrics_port)
    }

    /// Wait (bounded) for a finished transfer's log line containing every needle (lines
    /// are written when the server sees the end, a moment after the client may have
    /// exited).
    pub fn wait_log_line(&self, needles: &[&str]) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self
                .pb
                .log()
                .lines()
                .find(|l| l.contains("tftp transfer") && needles.iter().all(|n| l.contains(n)))
            {
                return l.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no transfer line with {needles:?}:\n{}",
                self.pb.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for the transfer log line of `file` that contains `needle`.
    pub fn wait_transfer(&self, file: &str, needle: &str) -> String {
        self.wait_log_line(&[&format!("file={file} "), needle])
    }
}

/// A read request (RRQ) for `file` in `mode` with `opts`.
pub fn rrq(file: &str, mode: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    provbox::tftp::packet::request_bytes(1, file, mode, opts)
}

/// What a client wrote to `p` (nothing when it wrote no file).
pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

/// A raw UDP client on 127.0.0.1 (5 s read timeout) for what real clients will not send.
pub fn raw_client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}
