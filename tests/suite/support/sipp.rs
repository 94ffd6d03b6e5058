//! sipp playing a phone that expects one SIP NOTIFY (resync, reboot, report).

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_udp_port, require};

/// sipp as the phone: a UAS scenario expecting one NOTIFY whose Event header matches.
pub struct Sipp {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Sipp {
    pub fn start(dir: &Path, event_regexp: &str) -> Sipp {
        require("sipp");
        let scenario = include_str!("../data/notify_uas.xml").replace("EVENT_RE", event_regexp);
        let file = dir.join(format!("uas-{}.xml", free_udp_port()));
        std::fs::write(&file, scenario).unwrap();
        let port = free_udp_port();
        let log = dir.join(format!("sipp-{port}.log"));
        let child = Command::new("sipp")
            .args([
                "-sf",
                file.to_str().unwrap(),
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .args(["-m", "1", "-nostdin", "-timeout", "30", "-timeout_error"])
            .args(["-trace_logs", "-log_file", log.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sipp");
        // Ready once it holds the port.
        let start = Instant::now();
        while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sipp did not bind {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sipp { child, port, log }
    }

    /// Wait for sipp to finish its one call; returns what it logged.
    pub fn finish(mut self) -> String {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("sipp never finished its call");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            status.success(),
            "sipp: the NOTIFY was missing or wrong ({status}); log: {log}"
        );
        log
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
