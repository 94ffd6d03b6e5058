//! `ca`: the HTTPS bootstrap. A phone out of the box trusts no private CA, so its factory
//! profile, fetched in the clear, points its `Custom_CA_Rule` at provbox's CA and its
//! `Profile_Rule` at HTTPS. The CA is answered at the fixed keys [`CA_PEM`] and [`CA_DER`]
//! over every protocol, before the catalog is asked; templates get `$CA_URL` and
//! `$HTTPS_BASE`, built from the address the request reached (a phone reaches provbox on
//! that address, whatever the machine's other addresses).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{Ctx, Flow, Stage};
use crate::catalog::{Entry, Refusal};
use crate::devices::{FetchRequest, generated};
use crate::metrics::Protocol;

/// The CA certificate as PEM (what `Custom_CA_Rule` and curl's `--cacert` take).
pub const CA_PEM: &str = "provbox-ca.pem";
/// The same certificate as DER, for phones that want the binary form.
pub const CA_DER: &str = "provbox-ca.der";

/// What the HTTPS front end publishes for the bootstrap: its listeners and its CA.
#[derive(Default)]
pub struct Bootstrap {
    current: ArcSwapOption<Published>,
}

struct Published {
    https: Vec<SocketAddr>,
    /// PEM and DER entries; none when the served certificate's CA is unknown.
    ca: Option<(Arc<Entry>, Arc<Entry>)>,
}

impl Bootstrap {
    /// Publish the HTTPS listeners and the CA (PEM file) that issued their certificate.
    /// A CA that cannot be read or parsed is logged and not served.
    pub fn publish(&self, https: Vec<SocketAddr>, ca_pem: Option<&std::path::Path>) {
        let ca = ca_pem.and_then(|path| match load(path) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(path = %path.display(), "https bootstrap: CA not served: {e}");
                None
            }
        });
        self.current.store(Some(Arc::new(Published { https, ca })));
    }

    /// `$CA_URL` and `$HTTPS_BASE` for a request, those that can be built.
    pub fn vars(&self, req: &FetchRequest<'_>) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        let (Some(p), Some(local)) = (self.current.load_full(), req.local) else {
            return v;
        };
        if p.ca.is_some() {
            let (scheme, default_port) = match req.protocol {
                Protocol::tftp => ("tftp", 69),
                Protocol::https => ("https", 443),
                _ => ("http", 80),
            };
            let at = authority(local.ip(), local.port(), default_port);
            v.insert("CA_URL".into(), format!("{scheme}://{at}/{CA_PEM}"));
        }
        // The listener that takes connections on the address this request reached.
        let https = p.https.iter().find(|l| {
            l.ip() == local.ip() || (l.ip().is_unspecified() && l.is_ipv4() == local.is_ipv4())
        });
        if let Some(l) = https {
            let ip = if l.ip().is_unspecified() {
                local.ip()
            } else {
                l.ip()
            };
            v.insert(
                "HTTPS_BASE".into(),
                format!("https://{}", authority(ip, l.port(), 443)),
            );
        }
        v
    }

    fn entry(&self, key: &str) -> Option<Arc<Entry>> {
        let p = self.current.load();
        let (pem, der) = p.as_ref()?.ca.as_ref()?;
        Some(if key == CA_PEM {
            pem.clone()
        } else {
            der.clone()
        })
    }
}

fn authority(ip: IpAddr, port: u16, default_port: u16) -> String {
    let host = match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// The first certificate of a PEM file, as PEM and as DER entries.
fn load(path: &std::path::Path) -> anyhow::Result<(Arc<Entry>, Arc<Entry>)> {
    let pem = std::fs::read(path)?;
    let der = CertificateDer::from_pem_slice(&pem)
        .map_err(|e| anyhow::anyhow!("no certificate in the PEM file: {e}"))?;
    let modified = std::fs::metadata(path)?
        .modified()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Ok((
        Arc::new(generated(CA_PEM.into(), Bytes::from(pem), modified)),
        Arc::new(generated(
            CA_DER.into(),
            Bytes::from(der.to_vec()),
            modified,
        )),
    ))
}

/// Answers the CA keys, for anyone: a certificate is public.
pub struct Ca;

impl Stage for Ca {
    fn name(&self) -> &'static str {
        "ca"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        if ctx.key != CA_PEM && ctx.key != CA_DER {
            return Flow::Continue;
        }
        match ctx.pv.bootstrap.entry(&ctx.key) {
            Some(e) => Flow::Answer(e),
            None => Flow::Refuse(Refusal::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(protocol: Protocol, local: &str) -> FetchRequest<'static> {
        FetchRequest {
            protocol,
            peer: "198.18.0.20:40000".parse().unwrap(),
            local: Some(local.parse().unwrap()),
            path: "/x.cfg",
            user_agent: None,
            client: None,
            http: None,
        }
    }

    #[test]
    fn urls_are_built_from_the_address_the_request_reached() {
        let d = tempfile::tempdir().unwrap();
        let lab = crate::tls::LabCa::ensure(d.path(), &["localhost".into()]).unwrap();
        let b = Bootstrap::default();
        assert!(b.vars(&req(Protocol::http, "10.0.0.1:80")).is_empty());
        b.publish(
            vec![
                "0.0.0.0:8443".parse().unwrap(),
                "[::1]:443".parse().unwrap(),
            ],
            Some(&lab.ca_cert),
        );
        let v = b.vars(&req(Protocol::http, "10.0.0.1:80"));
        assert_eq!(v["CA_URL"], "http://10.0.0.1/provbox-ca.pem");
        assert_eq!(v["HTTPS_BASE"], "https://10.0.0.1:8443");
        let v = b.vars(&req(Protocol::tftp, "10.0.0.1:6969"));
        assert_eq!(v["CA_URL"], "tftp://10.0.0.1:6969/provbox-ca.pem");
        let v = b.vars(&req(Protocol::https, "[::1]:443"));
        assert_eq!(v["CA_URL"], "https://[::1]/provbox-ca.pem");
        assert_eq!(v["HTTPS_BASE"], "https://[::1]");
        // DER is the PEM's certificate.
        let pem = b.entry(CA_PEM).unwrap();
        let der = b.entry(CA_DER).unwrap();
        assert_eq!(
            CertificateDer::from_pem_slice(&pem.body).unwrap().as_ref(),
            &der.body[..]
        );
        // A configured certificate of unknown CA: no CA, still the HTTPS base.
        b.publish(vec!["10.0.0.1:443".parse().unwrap()], None);
        let v = b.vars(&req(Protocol::http, "10.0.0.1:8080"));
        assert_eq!(v.get("CA_URL"), None);
        assert_eq!(v["HTTPS_BASE"], "https://10.0.0.1");
        assert!(b.entry(CA_PEM).is_none());
    }
}
