//! The first-run banner on stdout: where provbox listens, where its state is, and what to
//! type into a phone or a DHCP server so that phones find it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::netif::local_ipv4;

/// The address a phone should use for a listener bound to `bound`.
fn reachable(bound: SocketAddr, host: Ipv4Addr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(host), bound.port())
    } else {
        bound
    }
}

/// A profile phones would fetch: the first `.cfg`/`.xml` at the top of a catalog root.
fn example_profile(roots: &[PathBuf]) -> Option<String> {
    for root in roots {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".cfg") || n.ends_with(".xml"))
            .collect();
        names.sort();
        if let Some(n) = names.into_iter().next() {
            return Some(n);
        }
    }
    None
}

pub(crate) struct Inputs<'a> {
    pub cfg: &'a Config,
    /// `kind  url` lines from the front ends that bound sockets.
    pub listening: &'a [String],
    pub lab_ca: Option<&'a Path>,
    /// The address phones reach this machine on (first non-loopback IPv4 if any).
    pub host: Ipv4Addr,
}

/// Log the lab CA and print the banner on stdout (journald and `podman logs` keep it).
pub(crate) fn print(cfg: &Config, listening: &[String], lab_ca: Option<PathBuf>) {
    if let Some(ca) = &lab_ca {
        tracing::info!(ca = %ca.display(), "https: serving a certificate from the lab CA (phones install this CA)");
    }
    let host = local_ipv4()
        .into_iter()
        .next()
        .unwrap_or(Ipv4Addr::LOCALHOST);
    // Absolute paths: the banner is read from a journal, not from the config's directory.
    let lab_ca = lab_ca.map(|p| std::fs::canonicalize(&p).unwrap_or(p));
    print!(
        "{}",
        render(&Inputs {
            cfg,
            listening,
            lab_ca: lab_ca.as_deref(),
            host,
        })
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

pub(crate) fn render(i: &Inputs<'_>) -> String {
    let cfg = i.cfg;
    let mut s = format!("provbox {} ready\n", env!("CARGO_PKG_VERSION"));
    for l in i.listening {
        s.push_str(&format!("  listening  {l}\n"));
    }
    let data_dir = std::fs::canonicalize(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
    s.push_str(&format!("  data dir   {}\n", data_dir.display()));
    let roots: Vec<PathBuf> = cfg.catalog.roots.iter().map(|r| r.value.clone()).collect();
    let file = example_profile(&roots).unwrap_or_else(|| "$PSN.cfg".into());
    s.push_str("Give phones:\n");
    let mut any = false;
    if cfg.http.enabled
        && let Some(a) = cfg.http.listen.first()
    {
        let a = reachable(a.value, i.host);
        s.push_str(&format!("  Profile Rule     http://{a}/{file}\n"));
        s.push_str(&format!(
            "  DHCP option 160  http://{a}/{file}   (provisioning URL)\n"
        ));
        any = true;
    }
    if cfg.https.enabled
        && let Some(a) = cfg.https.listen.first()
    {
        let a = reachable(a.value, i.host);
        s.push_str(&format!("  Profile Rule     https://{a}/{file}\n"));
        any = true;
    }
    if cfg.tftp.enabled {
        let a = reachable(cfg.tftp.listen.value, i.host);
        s.push_str(&format!(
            "  DHCP option 66   {}   (TFTP server name)\n",
            a.ip()
        ));
        s.push_str(&format!(
            "  DHCP option 150  {}   (TFTP server addresses)\n",
            a.ip()
        ));
        if a.port() != 69 {
            s.push_str(&format!(
                "  (TFTP is on port {}; phones ask on 69: use deploy/config.yaml for that)\n",
                a.port()
            ));
        }
        s.push_str(&format!("  Profile Rule     tftp://{}/{file}\n", a.ip()));
        any = true;
    } else {
        s.push_str("  DHCP option 66/150: TFTP is off (tftp.enabled), so none to give\n");
    }
    if let Some(ca) = i.lab_ca {
        s.push_str(&format!(
            "  Lab CA           {}   (install on phones as a custom CA)\n",
            ca.display()
        ));
    }
    if !any {
        s.push_str("  nothing yet: enable http, https or tftp in the config\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_names_listeners_and_phone_settings() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("files")).unwrap();
        std::fs::write(d.path().join("files/CP-8831-3PCC.cfg"), "x").unwrap();
        let cfg = Config::parse(
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"0.0.0.0:8080\"]\n",
            &d.path().join("config.yaml"),
        )
        .unwrap();
        let text = render(&Inputs {
            cfg: &cfg,
            listening: &["http    http://0.0.0.0:8080/".into()],
            lab_ca: Some(Path::new("/var/lib/provbox/tls/ca.pem")),
            host: Ipv4Addr::new(192, 0, 2, 10),
        });
        assert!(
            text.contains("Profile Rule     http://192.0.2.10:8080/CP-8831-3PCC.cfg"),
            "{text}"
        );
        assert!(
            text.contains("listening  http    http://0.0.0.0:8080/"),
            "{text}"
        );
        assert!(text.contains("/var/lib/provbox/tls/ca.pem"), "{text}");
        assert!(text.contains("TFTP is off"), "{text}");
    }

    #[test]
    fn finds_loopback_at_least() {
        assert!(local_ipv4().contains(&Ipv4Addr::LOCALHOST));
    }
}
