//! `provbox cert`: the server-certificate steps an operator would otherwise do with
//! openssl. `csr` writes a private key and a certificate signing request for a vendor or
//! company CA; `lab-ca` makes (or reuses) the lab CA under the data directory, a server
//! certificate for the configured names and client certificates for test phones.
//!
//! RSA keys come from the `rsa` crate: rcgen signs with RSA keys through ring but can
//! generate them only with aws-lc-rs, a second large crypto build for one command.
//! rsa 0.10 is the constant-time rewrite (crypto-bigint), so the RUSTSEC-2023-0071 timing
//! issue of 0.9 does not apply; it only generates the key here, ring does the signing.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rcgen::{CertificateParams, DnType, KeyPair};

use crate::devices::Mac;
use crate::tls::{self, LabCa};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: small, fast, what current phones and CAs accept.
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// RSA 2048 with SHA-256: for CAs and older phones that accept nothing else.
    #[value(name = "rsa2048")]
    Rsa2048,
}

pub fn generate_key(kind: KeyType) -> Result<KeyPair> {
    match kind {
        KeyType::EcdsaP256 => Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?),
        KeyType::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)
                .context("generating an RSA key")?;
            let der = key.to_pkcs8_der().context("encoding the RSA key")?;
            let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
            Ok(KeyPair::from_pkcs8_der_and_sign_algo(
                &pkcs8,
                &rcgen::PKCS_RSA_SHA256,
            )?)
        }
    }
}

/// Where `cert csr` wrote its files.
pub struct CsrFiles {
    pub key: PathBuf,
    pub csr: PathBuf,
}

/// A private key and a CSR for `cn` (also the first subject alternative name) and `sans`.
pub fn write_csr(
    out: &Path,
    cn: &str,
    sans: &[String],
    org: Option<&str>,
    kind: KeyType,
) -> Result<CsrFiles> {
    if cn.trim().is_empty() {
        bail!("--cn is empty; expected the server's name, e.g. prov.example.com");
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut names = vec![cn.to_string()];
    names.extend(sans.iter().filter(|s| s.as_str() != cn).cloned());
    let mut params = CertificateParams::new(names)
        .with_context(|| format!("{cn} is not a valid DNS name or IP address"))?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(o) = org {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    let key = generate_key(kind)?;
    let csr = params.serialize_request(&key)?;
    let files = CsrFiles {
        key: out.join(format!("{cn}.key")),
        csr: out.join(format!("{cn}.csr")),
    };
    tls::write_private(&files.key, key.serialize_pem())?;
    fs::write(&files.csr, csr.pem()?)
        .with_context(|| format!("writing {}", files.csr.display()))?;
    Ok(files)
}

/// The two settings `cert lab-ca` needs (data_dir, https.names), read without the full
/// validation: the CA is often made precisely so that a `client_ca` path starts to exist.
pub fn lab_settings(config: &Path) -> Result<(PathBuf, Vec<String>)> {
    #[derive(serde::Deserialize, Default)]
    struct Https {
        #[serde(default)]
        names: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Lenient {
        data_dir: Option<PathBuf>,
        #[serde(default)]
        https: Option<Https>,
    }
    let text = fs::read_to_string(config)
        .with_context(|| format!("cannot read the configuration file {}", config.display()))?;
    let l: Lenient = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", config.display(), e.render().trim_end()))?;
    let base = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Relative to the config file, as everywhere else.
    let data_dir = base.join(l.data_dir.unwrap_or_else(|| PathBuf::from("data")));
    Ok((data_dir, l.https.unwrap_or_default().names))
}

/// What `cert lab-ca` made.
pub struct LabFiles {
    pub lab: LabCa,
    pub clients: Vec<(Mac, PathBuf, PathBuf)>,
}

/// Make (or reuse) the lab CA in `dir`, issue a fresh server certificate for `names`, and
/// a client certificate for each MAC (CN `SEP<MAC>`, the form Cisco phone certificates
/// use, so the HTTPS identity layer finds the MAC in it).
pub fn lab_ca(dir: &Path, names: &[String], clients: &[String]) -> Result<LabFiles> {
    let macs: Vec<Mac> = clients
        .iter()
        .map(|c| {
            c.parse::<Mac>().map_err(|_| {
                anyhow::anyhow!(
                    "--clients: `{c}` is not a MAC address; expected e.g. 00:56:2b:04:36:15"
                )
            })
        })
        .collect::<Result<_>>()?;
    let lab = LabCa::ensure(dir, names)?;
    // Names may have changed since the certificate was made: always issue it again.
    let (cert, key) = lab.issue(names, false)?;
    tls::write_private(&lab.server_key, &key)?;
    tls::write_private(&lab.server_cert, &cert)?;
    let client_dir = dir.join("clients");
    let mut out = Vec::new();
    for mac in macs {
        fs::create_dir_all(&client_dir)?;
        let cn = format!("SEP{}", mac.to_hex().to_uppercase());
        let (cert, key) = lab.issue(&[cn], true)?;
        let c = client_dir.join(format!("{}.pem", mac.to_hex()));
        let k = client_dir.join(format!("{}.key", mac.to_hex()));
        tls::write_private(&k, &key)?;
        tls::write_private(&c, &cert)?;
        out.push((mac, c, k));
    }
    Ok(LabFiles { lab, clients: out })
}

/// `store.backend: postgres`: every box serves certificates from one lab CA, kept in the
/// database. The first box to offer its CA (made here if it has none) wins; a box whose
/// own CA lost takes the shared one and drops its server certificate, which the HTTPS
/// listener then issues again from the shared CA.
pub async fn share_lab_ca(pg: &crate::store::postgres::Pg, dir: &Path) -> Result<()> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let read = || -> Option<(String, String)> {
        Some((
            fs::read_to_string(&cert_path).ok()?,
            fs::read_to_string(&key_path).ok()?,
        ))
    };
    let drop_server = || {
        let _ = fs::remove_file(dir.join("server.pem"));
        let _ = fs::remove_file(dir.join("server.key"));
    };
    let local = match read() {
        Some(l) => l,
        None => {
            LabCa::ensure(dir, &[])?;
            drop_server();
            read().ok_or_else(|| anyhow::anyhow!("lab CA: cannot read {}", cert_path.display()))?
        }
    };
    let shared = pg.lab_ca_offer(&local.0, &local.1).await?;
    if shared != local {
        tls::write_private(&key_path, &shared.1)?;
        tls::write_private(&cert_path, &shared.0)?;
        drop_server();
        tracing::info!("lab CA: taken from the shared store (every box issues from one CA)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_for_both_key_types_parses() {
        let d = tempfile::tempdir().unwrap();
        for kind in [KeyType::EcdsaP256, KeyType::Rsa2048] {
            let f = write_csr(d.path(), "prov.example.com", &[], Some("Lab"), kind).unwrap();
            let pem = fs::read_to_string(&f.csr).unwrap();
            let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
                .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
                .unwrap();
            use x509_parser::prelude::FromDer;
            let (_, req) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                    .unwrap();
            let subject = req.certification_request_info.subject.to_string();
            assert!(subject.contains("prov.example.com"), "{subject}");
        }
    }

    #[test]
    fn bad_mac_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let Err(e) = lab_ca(d.path(), &["localhost".into()], &["nope".into()]) else {
            panic!("a bad MAC was accepted");
        };
        assert!(e.to_string().contains("not a MAC"), "{e}");
    }
}
