//! Helpers shared by the syslog and dashboard tests: a provbox with syslog, HTTP and the
//! dashboard on free loopback ports, real `logger` and `curl` clients, bounded waits.

use std::time::{Duration, Instant};

use crate::support::{Provbox, free_tcp_port, free_udp_port, http_and_metrics, run};

pub struct Bench {
    pub p: Provbox,
    pub http: u16,
    pub udp: u16,
    pub tcp: u16,
    pub dash: u16,
    pub metrics: u16,
    pub token: Option<String>,
}

pub fn config(http: u16, udp: u16, tcp: u16, dash: u16, metrics: u16, extra: &str) -> String {
    let served = http_and_metrics(http, metrics);
    format!(
        "data_dir: data
# Per-device file names tie requests to phones here without being access-controlled.
devices:
  mac_in_path: false
{served}syslog:
  enabled: true
  listen: 127.0.0.1:{udp}
  tcp_listen: 127.0.0.1:{tcp}
  forward_file: syslog.log
dashboard:
  enabled: true
  listen: 127.0.0.1:{dash}
{extra}"
    )
}

impl Bench {
    /// `dashboard_extra` is appended inside the `dashboard:` section (indent 2).
    pub fn start(files: &[(&str, &str)], dashboard_extra: &str) -> Bench {
        let dir = Provbox::dir();
        for (name, body) in files {
            std::fs::write(dir.path().join("files").join(name), body).unwrap();
        }
        let (http, udp, tcp, dash, metrics) = (
            free_tcp_port(),
            free_udp_port(),
            free_tcp_port(),
            free_tcp_port(),
            free_tcp_port(),
        );
        let p = Provbox::start(dir, &config(http, udp, tcp, dash, metrics, dashboard_extra));
        // The configured token, or the one provbox made (the dashboard always has one).
        let token = dashboard_extra
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .map(str::to_string)
            .or_else(|| {
                std::fs::read_to_string(p.path().join("data/dashboard.token"))
                    .ok()
                    .map(|t| t.trim().to_string())
            });
        Bench {
            p,
            http,
            udp,
            tcp,
            dash,
            metrics,
            token,
        }
    }

    /// Send one line with util-linux `logger` over UDP; `framing` is `--rfc3164` or
    /// `--rfc5424`.
    pub fn logger(&self, framing: &str, line: &str) {
        let port = self.udp.to_string();
        let out = run(
            "logger",
            &[
                "-n",
                "127.0.0.1",
                "-P",
                &port,
                "-d",
                framing,
                "-t",
                "phone",
                "--",
                line,
            ],
        );
        assert!(out.status.success(), "logger failed: {out:?}");
    }

    /// The same over TCP (`octet` true: RFC 6587 octet counting, else newline framing).
    pub fn logger_tcp(&self, octet: bool, line: &str) {
        let port = self.tcp.to_string();
        let mut args = vec![
            "-n",
            "127.0.0.1",
            "-P",
            &port,
            "-T",
            "--rfc5424",
            "-t",
            "phone",
        ];
        if octet {
            args.push("--octet-count");
        }
        args.extend(["--", line]);
        let out = run("logger", &args);
        assert!(out.status.success(), "logger failed: {out:?}");
    }

    fn auth_args(&self) -> Vec<String> {
        match &self.token {
            Some(t) => vec!["-H".into(), format!("Authorization: Bearer {t}")],
            None => vec![],
        }
    }

    /// GET on the dashboard with curl: (status, body).
    pub fn dash_get(&self, path: &str) -> (u16, String) {
        self.dash_curl(Vec::new(), path)
    }

    pub fn dash_post(&self, path: &str) -> (u16, String) {
        self.dash_curl(
            vec![
                "-X".into(),
                "POST".into(),
                // A state change must come from the dashboard's own origin, as the page's do.
                "-H".into(),
                format!("Origin: http://127.0.0.1:{}", self.dash),
            ],
            path,
        )
    }

    /// curl on the dashboard with `extra` args and the admin token: (status, body).
    fn dash_curl(&self, extra: Vec<String>, path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.dash);
        let mut args: Vec<String> = vec!["-s".into(), "-w".into(), "\n%{http_code}".into()];
        args.extend(extra);
        args.extend(self.auth_args());
        args.push(url);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run("curl", &a);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    pub fn device(&self, mac: &str) -> Option<serde_json::Value> {
        let (code, body) = self.dash_get(&format!("/api/devices/{mac}"));
        (code == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    /// Wait (bounded) until the device exists and `pred` holds; returns it.
    pub fn wait_device(
        &self,
        mac: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let d = self.device(mac);
            if let Some(d) = &d
                && pred(d)
            {
                return d.clone();
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!(
                    "{mac}: {what} did not happen; last record: {d:#?}\n{}",
                    self.p.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn metrics_text(&self) -> String {
        crate::support::scrape(self.metrics)
    }

    /// Value of one metric line (`name{labels}`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        crate::support::metric(&self.metrics_text(), series)
    }

    /// curl a file from the HTTP front end as a phone would.
    pub fn fetch(&self, path: &str, user_agent: &str) -> u16 {
        let url = format!("http://127.0.0.1:{}{path}", self.http);
        crate::support::http_code(&["-A", user_agent], &url)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

pub fn last_event(d: &serde_json::Value) -> (String, String) {
    let e = d["events"].as_array().unwrap().last().unwrap();
    (
        e["kind"].as_str().unwrap().to_string(),
        e["detail"].as_str().unwrap().to_string(),
    )
}

pub fn kinds(d: &serde_json::Value) -> Vec<String> {
    d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}
