//! TLS for the HTTPS listener: certificates from PEM files (re-read when they change), the
//! client-certificate policy, the lab CA used when no certificate is configured, and the
//! identity a verified client certificate carries.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::confkit::ClientAuth;
use crate::devices::{ClientIdentity, Mac};

/// Where the HTTPS listener's key material comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_auth: ClientAuth,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn watched(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        if let Some(ca) = &self.client_ca {
            v.push(ca);
        }
        v
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build a rustls server configuration from the files as they are now.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading certificate {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", files.cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading private key {}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (policy, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading client CA {}", ca.display()))?
            {
                roots
                    .add(c.with_context(|| format!("parsing client CA {}", ca.display()))?)
                    .with_context(|| format!("client CA {}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if policy == ClientAuth::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().context("client certificate verifier")?)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The current server configuration, swapped when the PEM files change on disk.
pub struct Reloading {
    current: ArcSwap<ServerConfig>,
    files: TlsFiles,
}

impl Reloading {
    pub fn new(files: TlsFiles) -> Result<Arc<Reloading>> {
        let cfg = server_config(&files)?;
        Ok(Arc::new(Reloading {
            current: ArcSwap::new(cfg),
            files,
        }))
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Poll the files' modification times; a broken new file keeps the old config serving.
    pub fn watch(self: Arc<Self>, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let stamp = |files: &TlsFiles| file_stamps(&files.watched());
        tokio::spawn(async move {
            let mut last = stamp(&self.files);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let now = stamp(&self.files);
                if now == last {
                    continue;
                }
                last = now;
                match server_config(&self.files) {
                    Ok(cfg) => {
                        self.current.store(cfg);
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => tracing::error!(
                        "TLS files changed but cannot be used, keeping the old ones: {e:#}"
                    ),
                }
            }
        });
    }
}

/// Modification times of certificate files, compared between polls to notice a change
/// (both TLS doors re-read their files this way).
pub fn file_stamps(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// What a verified client certificate says about the device.
pub fn client_identity(der: &CertificateDer<'_>) -> Option<ClientIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject().to_string();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mac = Mac::find_in(&subject);
    Some(ClientIdentity {
        subject,
        common_name,
        mac,
    })
}

/// The machine's names, for a generated server certificate.
pub fn machine_names(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(h) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    names.extend(extra.iter().cloned());
    names.push("127.0.0.1".into());
    names.push("::1".into());
    names.sort();
    names.dedup();
    names
}

/// Paths of the lab CA and the server certificate it issued.
pub struct LabCa {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Write `data` to `path` readable by its owner only, through a synced temporary file so
/// a crash leaves the old file or the new one, never half of one.
pub fn write_private(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data.as_ref())?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

impl LabCa {
    /// Create (once) a lab CA and a server certificate for `names` under `dir`. Phones
    /// that should trust provbox install `ca.pem` as a custom CA.
    pub fn ensure(dir: &Path, names: &[String]) -> Result<LabCa> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let lab = LabCa {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        };
        if !lab.ca_cert.exists() || !lab.ca_key.exists() {
            let key = KeyPair::generate()?;
            let cert = ca_params("provbox lab CA").self_signed(&key)?;
            write_private(&lab.ca_key, key.serialize_pem())?;
            write_private(&lab.ca_cert, cert.pem())?;
            // A new CA invalidates any server certificate the old one issued.
            let _ = fs::remove_file(&lab.server_cert);
        }
        if !lab.server_cert.exists() || !lab.server_key.exists() {
            let (cert, key) = lab.issue(names, false)?;
            write_private(&lab.server_key, &key)?;
            write_private(&lab.server_cert, &cert)?;
        }
        Ok(lab)
    }

    /// Issue a leaf certificate from this CA: a server certificate for `names`, or a client
    /// certificate whose CN is `names[0]`. Returns (cert PEM, key PEM).
    pub fn issue(&self, names: &[String], client: bool) -> Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&fs::read_to_string(&self.ca_key)?)?;
        let ca_pem = fs::read_to_string(&self.ca_cert)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = if client {
            CertificateParams::new(Vec::<String>::new())?
        } else {
            CertificateParams::new(names.to_vec())?
        };
        let cn = names.first().cloned().unwrap_or_else(|| "provbox".into());
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "provbox lab");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "provbox lab");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_ca_issues_a_usable_server_config_and_client_identity() {
        let d = tempfile::tempdir().unwrap();
        let lab = LabCa::ensure(d.path(), &["prov.lab.test".into(), "127.0.0.1".into()]).unwrap();
        let files = TlsFiles {
            cert: lab.server_cert.clone(),
            key: lab.server_key.clone(),
            client_auth: ClientAuth::Required,
            client_ca: Some(lab.ca_cert.clone()),
        };
        server_config(&files).unwrap();
        let (pem, _) = lab.issue(&["SEP00562B043615".into()], true).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let id = client_identity(&der).unwrap();
        assert_eq!(id.common_name.as_deref(), Some("SEP00562B043615"));
        assert_eq!(id.mac.unwrap().to_hex(), "00562b043615");
        // A second call keeps the same CA.
        let before = fs::read(&lab.ca_cert).unwrap();
        LabCa::ensure(d.path(), &[]).unwrap();
        assert_eq!(before, fs::read(&lab.ca_cert).unwrap());
    }
}
