//! The HTTPS bench the device tests share: a test dir whose lab CA is made before
//! provbox starts (so `https.client_ca` exists), the files it serves, free ports for
//! HTTP, HTTPS and metrics with the config that listens on them, curl as a phone with
//! its client certificate, metric values checked by series, the CLI beside a running
//! instance and a response header read from curl's.

use std::path::Path;

use super::{Provbox, Reply, curl, free_tcp_port, metric, provbox};

/// The lab's two phones by MAC and by the User-Agent that names each: a Cisco 3PCC and
/// a Yealink.
pub const CISCO: &str = "00562b043615";
pub const CISCO_UA: &str = "Cisco-CP-8831-3PCC/9.3.3 (00562b043615)";
pub const YEALINK: &str = "0015654aa937";
pub const YEALINK_UA: &str = "Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37";

/// The ports of one running instance: plain HTTP, HTTPS and metrics.
pub struct Ports {
    pub http: u16,
    pub https: u16,
    pub metrics: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            http: free_tcp_port(),
            https: free_tcp_port(),
            metrics: free_tcp_port(),
        }
    }

    /// The `catalog`, `http`, `https` and `metrics` sections listening on these ports;
    /// with `client_certs`, HTTPS asks for optional client certificates of the lab CA.
    pub fn config(&self, client_certs: bool) -> String {
        let client_auth = if client_certs {
            "  client_auth: optional\n  client_ca: data/tls/ca.pem\n"
        } else {
            ""
        };
        format!(
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:{}\"]\n\
https:\n  enabled: true\n  listen: [\"127.0.0.1:{}\"]\n{client_auth}\
metrics:\n  enabled: true\n  listen: 127.0.0.1:{}\n",
            self.http, self.https, self.metrics
        )
    }
}

/// provbox running on its own ports.
pub struct Running {
    pub pb: Provbox,
    pub ports: Ports,
}

impl Running {
    /// provbox started on test dir `dir` with fresh ports: the served sections (see
    /// `Ports::config`), then `rest`.
    pub fn start(dir: tempfile::TempDir, client_certs: bool, rest: &str) -> Running {
        let ports = Ports::free();
        let pb = Provbox::start(dir, &(ports.config(client_certs) + rest));
        Running { pb, ports }
    }
}

/// A test dir with the lab CA (for localhost and 127.0.0.1) already in `data/tls`.
pub fn lab_dir() -> tempfile::TempDir {
    let d = Provbox::dir();
    provbox::tls::LabCa::ensure(
        &d.path().join("data/tls"),
        &["localhost".into(), "127.0.0.1".into()],
    )
    .unwrap();
    d
}

/// Writes each `(name, body)` under `dir/files`, making the directories on the way.
pub fn serve_files<B: AsRef<[u8]> + ?Sized>(dir: &Path, files: &[(&str, &B)]) {
    for (name, body) in files {
        let p = dir.join("files").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

/// curl over HTTPS trusting the lab CA `ca`, as the phone holding `cert` (certificate,
/// key) or, with `None`, as no one; `extra` goes before the URL.
pub fn curl_as(
    max_secs: u32,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
    extra: &[&str],
    url: &str,
) -> Reply {
    let mut args = vec!["--cacert", ca.to_str().unwrap()];
    if let Some((c, k)) = cert {
        args.extend(["--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap()]);
    }
    args.extend(extra);
    curl(max_secs, &args, url)
}

/// Asserts the value of each series in the metrics text `m`.
pub fn assert_metrics(m: &str, want: &[(&str, f64)]) {
    for (series, value) in want {
        assert_eq!(metric(m, series), *value, "{series}\n{m}");
    }
}

/// Asserts `family{label="value"}` in the metrics text `m` for each `(value, count)`.
pub fn assert_labelled(m: &str, family: &str, label: &str, want: &[(&str, f64)]) {
    for (value, count) in want {
        let series = format!("{family}{{{label}=\"{value}\"}}");
        assert_eq!(metric(m, &series), *count, "{series}\n{m}");
    }
}

/// `provbox <args> --config <config>`: the CLI beside the instance `config` starts, as an
/// operator runs it; (exit code, output).
pub fn provbox_with(config: &Path, args: &[&str]) -> (i32, String) {
    let mut all = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    provbox(&all)
}

/// The value of header `name` (lowercase) in curl's lowercased response `headers`, or ""
/// when there is none.
pub fn header<'a>(headers: &'a str, name: &str) -> &'a str {
    headers
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or("")
        .trim()
}
