//! A provbox serving DNS on a loopback port, asked with real clients (`dig`, `kdig`).

use super::{Provbox, run};

pub struct Dns {
    /// Kept so the server runs (and its log prints on failure) as long as the test.
    pub _pb: Provbox,
    pub port: u16,
}

/// Start provbox with this `dns:` body (keys indented two spaces); the port comes from
/// its log.
pub fn start(dns: &str) -> Dns {
    let cfg = format!(
        "catalog:\n  roots: [files]\ndns:\n  enabled: true\n  listen: [\"127.0.0.1:0\"]\n{dns}"
    );
    let pb = Provbox::start(Provbox::dir(), &cfg);
    let port = port_of(&pb);
    Dns { _pb: pb, port }
}

/// The DNS port a provbox started on port 0 bound, read from its log.
pub fn port_of(pb: &Provbox) -> u16 {
    let log = pb.log();
    let line = log
        .lines()
        .find(|l| l.contains("dns    udp+tcp"))
        .unwrap_or_else(|| panic!("no dns listener in the log:\n{log}"));
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

impl Dns {
    /// `program` (dig or kdig) at this server, bounded by its own timeout and tries.
    pub fn ask(&self, program: &str, args: &[&str]) -> String {
        let port = self.port.to_string();
        let bound = if program == "kdig" {
            ["+time=3", "+retry=1"]
        } else {
            ["+time=3", "+tries=2"]
        };
        let mut all = vec!["@127.0.0.1", "-p", &port, bound[0], bound[1]];
        all.extend_from_slice(args);
        let out = run(program, &all);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
