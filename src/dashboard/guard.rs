//! Who may talk to the dashboard, before the token is even looked at:
//! - `Host` must name this listener (one of its own addresses, `localhost` on loopback, or
//!   a name in `dashboard.hosts`): a page on a rebound DNS name reaches the socket but
//!   names itself in `Host`, and gets 421;
//! - anything that changes state must come from the dashboard's own origin (`Origin`, or
//!   `Sec-Fetch-Site: same-origin`): a cross-site form or fetch gets 403 even though the
//!   browser attaches the login cookie.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header;

/// `host[:port]` as a request names it: (lower-case name or IP, port if given).
pub fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let host = host.trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (ip, None),
            p => (ip, Some(p.strip_prefix(':')?)),
        }
    } else {
        match host.split_once(':') {
            Some((_, p)) if p.contains(':') => return None,
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    Some((name, port))
}

/// Is `host` (the request's `Host`, or its URI authority) a name of this listener?
/// - an IP literal with the listener's port: the bound address, or, when it is bound to
///   0.0.0.0/[::], an address of this machine (`local_ips` is asked only then);
/// - `localhost` with the port, when the listener takes loopback connections;
/// - a configured name (any port: a proxy in front may use another).
pub fn host_allowed(
    host: &str,
    listener: SocketAddr,
    default_port: u16,
    names: &[String],
    local_ips: impl FnOnce() -> Vec<IpAddr>,
) -> bool {
    let Some((name, port)) = split_host(host) else {
        return false;
    };
    if names.contains(&name) {
        return true;
    }
    if port.unwrap_or(default_port) != listener.port() {
        return false;
    }
    let bound = listener.ip();
    match name.parse::<IpAddr>() {
        Ok(ip) if bound.is_unspecified() => ip.is_loopback() || local_ips().contains(&ip),
        Ok(ip) => ip == bound,
        Err(_) => name == "localhost" && (bound.is_loopback() || bound.is_unspecified()),
    }
}

/// Addresses of this machine's interfaces (for a listener on 0.0.0.0 or [::]).
pub fn machine_ips() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// A state-changing request's provenance: Ok when the browser says it comes from this
/// origin; Err(why) otherwise, including when it says nothing (no browser omits both on a
/// POST; a script sends `Origin` itself).
pub fn same_origin(headers: &HeaderMap, host: &str, tls: bool) -> Result<(), &'static str> {
    let site = headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or("").to_ascii_lowercase());
    if site.as_deref().is_some_and(|s| s != "same-origin") {
        return Err("Sec-Fetch-Site is not same-origin");
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or(""));
    if let Some(o) = origin {
        let scheme = if tls { "https://" } else { "http://" };
        let ok = o
            .strip_prefix(scheme)
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host));
        if !ok {
            return Err("Origin is not the dashboard's own");
        }
    }
    if site.is_none() && origin.is_none() {
        return Err("neither Origin nor Sec-Fetch-Site says where it comes from");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lo(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn hosts() {
        let none = || -> Vec<IpAddr> { panic!("only asked for 0.0.0.0") };
        let names = vec!["prov.lab.test".to_string()];
        // (Host, the address bound, allowed) with `dashboard.hosts: [prov.lab.test]`.
        for (host, local, allowed) in [
            ("127.0.0.1:8081", lo(8081), true),
            ("localhost:8081", lo(8081), true),
            ("PROV.lab.test.", lo(8081), true),
            ("prov.lab.test:443", lo(8081), true),
            ("127.0.0.1:8082", lo(8081), false),
            ("127.0.0.1", lo(8081), false),
            ("127.0.0.1", lo(80), true),
            ("127.0.0.2:8081", lo(8081), false),
            ("evil.example:8081", lo(8081), false),
            ("127.0.0.1.nip.io:8081", lo(8081), false),
            ("", lo(8081), false),
            ("127.0.0.1:8081:1", lo(8081), false),
        ] {
            assert_eq!(
                host_allowed(host, local, 80, &names, none),
                allowed,
                "Host `{host}` on {local}"
            );
        }
        let any = SocketAddr::from(([0, 0, 0, 0], 8081));
        let mine = || vec!["198.18.0.1".parse().unwrap()];
        assert!(host_allowed("198.18.0.1:8081", any, 80, &[], mine));
        assert!(host_allowed("127.0.0.1:8081", any, 80, &[], mine));
        assert!(!host_allowed("198.18.0.9:8081", any, 80, &[], mine));
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 8081));
        assert!(host_allowed("[::1]:8081", v6, 80, &[], none));
        assert!(!host_allowed("[::2]:8081", v6, 80, &[], none));
        assert!(!host_allowed(
            "localhost:8081",
            SocketAddr::from(([198, 18, 0, 1], 8081)),
            80,
            &[],
            none
        ));
    }

    proptest! {
        /// No name outside `dashboard.hosts` passes, whatever it looks like.
        #[test]
        fn only_listed_names_pass(name in "[a-z0-9.-]{1,30}", port in 1u16..) {
            prop_assume!(name.parse::<IpAddr>().is_err());
            let n = name.trim_end_matches('.');
            prop_assume!(n != "localhost" && !n.is_empty());
            let host = format!("{name}:{port}");
            let ok = host_allowed(&host, lo(port), 80, &["prov.lab.test".into()], Vec::new);
            prop_assert_eq!(ok, n == "prov.lab.test");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let host = "127.0.0.1:8081";
        let ok = |p: &[(&'static str, &'static str)]| same_origin(&headers(p), host, false).is_ok();
        assert!(ok(&[("origin", "http://127.0.0.1:8081")]));
        assert!(ok(&[("sec-fetch-site", "same-origin")]));
        assert!(ok(&[
            ("origin", "http://127.0.0.1:8081"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(!ok(&[]));
        assert!(!ok(&[("origin", "null")]));
        assert!(!ok(&[("origin", "http://evil.example")]));
        assert!(!ok(&[("origin", "http://127.0.0.1:8082")]));
        assert!(!ok(&[("origin", "https://127.0.0.1:8081")]));
        assert!(!ok(&[("sec-fetch-site", "cross-site")]));
        assert!(!ok(&[("sec-fetch-site", "same-site")]));
        assert!(!ok(&[
            ("origin", "http://127.0.0.1:8081"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(!ok(&[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(
            same_origin(
                &headers(&[("origin", "https://127.0.0.1:8081")]),
                host,
                true
            )
            .is_ok()
        );
    }
}
