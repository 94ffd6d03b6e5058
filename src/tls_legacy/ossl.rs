//! The OpenSSL side of the legacy listener: context building (security level 0, so the
//! system library allows the old phones' TLS 1.0 handshakes for this listener only),
//! client-certificate verification, certificate reload, the lab RSA certificate, and
//! what a finished handshake says (version, cipher, client identity).

use std::fs;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow};
use arc_swap::ArcSwap;
use openssl::dh::Dh;
use openssl::pkey::{Id, PKey};
use openssl::rsa::Rsa;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslOptions, SslRef,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

use super::{Config, Effective, MinProtocol};
use crate::acceptor::Idle;
use crate::confkit::{At, ClientAuth, HttpsConfig};
use crate::frontend::{Context, bind_tcp};
use crate::http::{self, Handshake, HandshakeError};
use crate::metrics::Protocol;
use crate::tls;

/// RFC 7919 ffdhe2048, for the DHE-RSA suites (fixed, well-known parameters: nothing to
/// generate at start-up, and no small or weak groups).
const FFDHE2048: &[u8] = b"-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
";

/// Every entry of an OpenSSL cipher string must select something in this library, so a
/// typo or a suite the system OpenSSL lacks (RC4 on most current builds) is refused at
/// `provbox check` instead of silently narrowing what phones can use.
pub(super) fn check_ciphers(list: &At<String>) -> Result<(), String> {
    let probe = |s: &str| -> bool {
        let Ok(mut b) = SslContext::builder(SslMethod::tls_server()) else {
            return false;
        };
        b.set_security_level(0);
        b.set_cipher_list(s).is_ok()
    };
    if list.trim().is_empty() {
        return Err(
            "is empty; expected an OpenSSL cipher list such as AES256-SHA:AES128-SHA".into(),
        );
    }
    for entry in list.split([':', ',', ' ']).filter(|e| !e.is_empty()) {
        // Modifiers remove or reorder; they cannot "match nothing".
        if entry.starts_with(['!', '-', '+', '@']) {
            continue;
        }
        if probe(entry) {
            continue;
        }
        if entry.to_ascii_uppercase().contains("RC4") {
            return Err(format!(
                "`{entry}`: RC4 is not available in the system OpenSSL ({}); it was left out \
                 of this build of the library. Remove it (phones that offer RC4 also offer \
                 AES128-SHA or AES256-SHA)",
                openssl::version::version()
            ));
        }
        return Err(format!(
            "`{entry}` matches no cipher in the system OpenSSL ({}); expected OpenSSL names \
             such as AES256-SHA, DHE-RSA-AES128-SHA, ECDHE-RSA-AES128-GCM-SHA256 \
             (`openssl ciphers -v 'ALL@SECLEVEL=0'` lists them)",
            openssl::version::version()
        ));
    }
    if !probe(list) {
        return Err("selects no cipher; expected an OpenSSL cipher list".into());
    }
    Ok(())
}

/// The files one legacy listener set reads (re-read when they change).
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_auth: ClientAuth,
    client_ca: Option<PathBuf>,
    min_protocol: MinProtocol,
    ciphers: String,
}

impl Files {
    fn watched(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        if let Some(ca) = &self.client_ca {
            v.push(ca);
        }
        v
    }
}

fn context(f: &Files) -> Result<SslContext> {
    let mut b = SslContextBuilder::new(SslMethod::tls_server())?;
    // At its default security level (Debian: 2) OpenSSL 3 refuses the SHA-1 and MD5+SHA-1
    // signatures that TLS 1.0/1.1 use for DHE key exchange and client certificates, and
    // the short keys old phones carry; level 0 here, per context, leaves the rest alone.
    b.set_security_level(0);
    let min = match f.min_protocol {
        MinProtocol::Tls10 => SslVersion::TLS1,
        MinProtocol::Tls11 => SslVersion::TLS1_1,
        MinProtocol::Tls12 => SslVersion::TLS1_2,
        MinProtocol::Tls13 => SslVersion::TLS1_3,
    };
    b.set_min_proto_version(Some(min))?;
    b.set_cipher_list(&f.ciphers)
        .with_context(|| format!("cipher list `{}`", f.ciphers))?;
    // The operator's order wins: ECDHE first for clients that can, CBC/RSA for old phones.
    b.set_options(SslOptions::CIPHER_SERVER_PREFERENCE | SslOptions::NO_RENEGOTIATION);
    let dh = Dh::params_from_pem(FFDHE2048)?;
    b.set_tmp_dh(&dh)?;
    b.set_certificate_chain_file(&f.cert)
        .with_context(|| format!("reading certificate {}", f.cert.display()))?;
    b.set_private_key_file(&f.key, SslFiletype::PEM)
        .with_context(|| format!("reading private key {}", f.key.display()))?;
    b.check_private_key()
        .context("certificate and key do not match")?;
    // Resumed sessions with client verification need a context id, or OpenSSL aborts them.
    b.set_session_id_context(b"provbox-legacy")?;
    match (f.client_auth, &f.client_ca) {
        (ClientAuth::None, _) | (_, None) => b.set_verify(SslVerifyMode::NONE),
        (policy, Some(ca)) => {
            let pem =
                fs::read(ca).with_context(|| format!("reading client CA {}", ca.display()))?;
            let cas = X509::stack_from_pem(&pem)
                .with_context(|| format!("parsing client CA {}", ca.display()))?;
            if cas.is_empty() {
                anyhow::bail!("{} holds no PEM certificate", ca.display());
            }
            for c in cas {
                b.add_client_ca(&c)?;
                b.cert_store_mut().add_cert(c)?;
            }
            let mode = if policy == ClientAuth::Required {
                SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT
            } else {
                SslVerifyMode::PEER
            };
            b.set_verify(mode);
        }
    }
    Ok(b.build())
}

fn classify(e: &openssl::ssl::Error) -> &'static str {
    if let Some(stack) = e.ssl_error() {
        let reasons: Vec<&str> = stack.errors().iter().filter_map(|x| x.reason()).collect();
        let has = |s: &str| reasons.iter().any(|r| r.contains(s));
        return if has("peer did not return a certificate") {
            "no_client_cert"
        } else if has("certificate verify failed") {
            "bad_client_cert"
        } else if has("no shared cipher")
            || has("unsupported protocol")
            || has("version too low")
            || has("no protocols available")
            || has("no suitable")
        {
            "incompatible"
        } else if has("alert") {
            "alert_received"
        } else if has("unexpected eof") {
            "eof"
        } else {
            "protocol"
        };
    }
    match e.code() {
        ErrorCode::ZERO_RETURN => "eof",
        ErrorCode::SYSCALL if e.io_error().is_none() => "eof",
        _ => "io",
    }
}

/// The current OpenSSL context of one legacy listener set, swapped when its files change
/// on disk or a reloaded configuration changes its policy.
pub struct Acceptor {
    current: ArcSwap<SslContext>,
    files: ArcSwap<Files>,
}

impl Acceptor {
    fn new(files: Files) -> Result<Arc<Acceptor>> {
        let ctx = context(&files)?;
        Ok(Arc::new(Acceptor {
            current: ArcSwap::from_pointee(ctx),
            files: ArcSwap::from_pointee(files),
        }))
    }

    /// Apply new settings (SIGHUP): only a context that builds replaces the old one.
    fn reconfigure(&self, files: Files) -> Result<()> {
        let ctx = context(&files)?;
        self.current.store(Arc::new(ctx));
        self.files.store(Arc::new(files));
        Ok(())
    }

    /// Run the server handshake on `io`.
    pub async fn accept<IO>(&self, io: IO) -> Result<SslStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let ctx = self.current.load_full();
        let setup = |e: openssl::error::ErrorStack| HandshakeError {
            reason: "other",
            detail: e.to_string(),
        };
        let ssl = Ssl::new(&ctx).map_err(setup)?;
        let mut stream = SslStream::new(ssl, io).map_err(setup)?;
        match Pin::new(&mut stream).accept().await {
            Ok(()) => Ok(stream),
            Err(e) => {
                let mut detail = e.to_string();
                let verify = stream.ssl().verify_result();
                if verify.as_raw() != 0 {
                    detail = format!("{detail} (client certificate: {})", verify.error_string());
                }
                Err(HandshakeError {
                    reason: classify(&e),
                    detail,
                })
            }
        }
    }

    /// Version, cipher (IANA name, as rustls reports it) and the verified client identity.
    pub fn describe(ssl: &SslRef) -> Handshake {
        let version = match ssl.version2() {
            Some(SslVersion::TLS1) => "TLSv1.0",
            Some(SslVersion::TLS1_1) => "TLSv1.1",
            Some(SslVersion::TLS1_2) => "TLSv1.2",
            Some(SslVersion::TLS1_3) => "TLSv1.3",
            _ => "other",
        };
        let cipher = ssl
            .current_cipher()
            .map(|c| c.standard_name().unwrap_or(c.name()).to_string())
            .unwrap_or_else(|| "none".into());
        // The peer certificate is only there after a successful verification (or with
        // verification off, in which case client auth is off and it is never asked for).
        let client = ssl
            .peer_certificate()
            .and_then(|c| c.to_der().ok())
            .and_then(|der| tls::client_identity(&CertificateDer::from(der)));
        Handshake {
            version,
            cipher,
            client,
        }
    }

    /// Poll the files' modification times; a broken new file keeps the old context.
    fn watch(self: Arc<Self>, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let stamp = |files: &Files| crate::tls::file_stamps(&files.watched());
        tokio::spawn(async move {
            let mut last = stamp(&self.files.load());
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let files = self.files.load_full();
                let now = stamp(&files);
                if now == last {
                    continue;
                }
                last = now;
                match context(&files) {
                    Ok(ctx) => {
                        self.current.store(Arc::new(ctx));
                        tracing::info!(cert = %files.cert.display(), "https_legacy: TLS certificate reloaded");
                    }
                    Err(e) => tracing::error!(
                        "https_legacy: TLS files changed but cannot be used, keeping the old ones: {e:#}"
                    ),
                }
            }
        });
    }
}

/// The OpenSSL door as `http` drives it: handshake, then the stream and what it negotiated.
impl http::Handshaker for Acceptor {
    fn handshake(&self, io: Idle<tokio::net::TcpStream>) -> http::HandshakeFuture<'_> {
        Box::pin(async move {
            let stream = self.accept(io).await?;
            let hs = Acceptor::describe(stream.ssl());
            Ok((Box::new(stream) as http::TlsStream, hs))
        })
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// An RSA server certificate from the lab CA (`server-rsa.pem`/`.key` beside the ECDSA
/// one): RSA key exchange and DHE-RSA need an RSA key. Issued again when the CA is newer.
pub fn lab_rsa_cert(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf)> {
    let lab = tls::LabCa::ensure(dir, names)?;
    let cert = dir.join("server-rsa.pem");
    let key = dir.join("server-rsa.key");
    let fresh = match (modified(&cert), modified(&key), modified(&lab.ca_cert)) {
        (Some(c), Some(_), Some(ca)) => c >= ca,
        _ => false,
    };
    if fresh {
        return Ok((cert, key));
    }
    // Generated with OpenSSL (already linked); rcgen signs with the lab CA's key.
    let rsa = PKey::from_rsa(Rsa::generate(2048)?)?;
    let key_pem = rsa.private_key_to_pem_pkcs8()?;
    let key_pair = rcgen::KeyPair::from_pem(std::str::from_utf8(&key_pem)?)
        .map_err(|e| anyhow!("loading the generated RSA key: {e}"))?;
    let ca_key = rcgen::KeyPair::from_pem(&fs::read_to_string(&lab.ca_key)?)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&fs::read_to_string(&lab.ca_cert)?, ca_key)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let cn = names.first().cloned().unwrap_or_else(|| "provbox".into());
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "provbox lab");
    // KeyEncipherment: RSA key exchange encrypts the premaster secret to this key.
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let signed = params.signed_by(&key_pair, &issuer)?;
    tls::write_private(&key, &key_pem)?;
    tls::write_private(&cert, signed.pem().as_bytes())?;
    Ok((cert, key))
}

/// The files and policy to build a context from; `lab` stands in for an unset cert/key.
fn files_of(eff: Effective, lab: Option<&(PathBuf, PathBuf)>) -> Result<Files> {
    let (cert, key) = eff
        .cert_key
        .or_else(|| lab.cloned())
        .ok_or_else(|| anyhow!("https_legacy: no certificate configured and no lab certificate was created at start; restart to create one"))?;
    let key_pem =
        fs::read(&key).with_context(|| format!("https_legacy: reading {}", key.display()))?;
    if PKey::private_key_from_pem(&key_pem).is_ok_and(|k| k.id() != Id::RSA) {
        tracing::warn!(
            key = %key.display(),
            "https_legacy: the key is not RSA, so the RSA and DHE-RSA suites old phones offer cannot be negotiated; set https_legacy.cert and key to an RSA certificate"
        );
    }
    Ok(Files {
        cert,
        key,
        client_auth: eff.client_auth,
        client_ca: eff.client_ca,
        min_protocol: eff.min_protocol,
        ciphers: eff.ciphers,
    })
}

pub(super) async fn bind(
    ctx: &Context,
    cfg: &Config,
    https: &HttpsConfig,
    banner: &mut Vec<String>,
) -> Result<(Vec<http::Listener>, super::Reload)> {
    let eff = cfg.effective(https);
    let lab = match &eff.cert_key {
        Some(_) => None,
        None => {
            let dir = ctx.data_dir.join("tls");
            let (c, k) = lab_rsa_cert(&dir, &tls::machine_names(&https.names))
                .context("https_legacy: creating the lab RSA certificate")?;
            tracing::info!(cert = %c.display(), "https_legacy: no certificate configured; serving an RSA one from the lab CA");
            Some((c, k))
        }
    };
    let files = files_of(eff, lab.as_ref())?;
    let (min_protocol, ciphers) = (files.min_protocol, files.ciphers.clone());
    let acceptor = Acceptor::new(files).context("https_legacy")?;
    // SIGHUP: new ciphers, minimum protocol, certificate paths or client policy apply to
    // the next handshake; the addresses stay until a restart (server.rs says so).
    let acc = acceptor.clone();
    let reload: super::Reload = Box::new(move |cfg: &Config, https: &HttpsConfig| {
        if !cfg.enabled {
            return Ok(());
        }
        let eff = cfg.effective(https);
        acc.reconfigure(files_of(eff, lab.as_ref())?)
    });
    acceptor
        .clone()
        .watch(Duration::from_secs(2), ctx.shutdown.clone());
    let handler = Arc::new(http::FileHandler {
        provisioner: ctx.provisioner.clone(),
        metrics: ctx.metrics.clone(),
        protocol: Protocol::https,
        uploads: ctx.uploads.clone(),
    });
    let mut out = Vec::new();
    for (i, a) in cfg.listen.iter().enumerate() {
        let socket = bind_tcp(&format!("https_legacy.listen[{i}]"), a.value).await?;
        banner.push(format!(
            "https  https://{}/ (legacy TLS)",
            socket.local_addr()?
        ));
        out.push(http::Listener {
            name: format!("https_legacy:{}", a.value),
            socket,
            tls: Some(http::TlsDoor::OpenSsl(acceptor.clone())),
            limits: cfg.limits.clone(),
            protocol: Protocol::https,
            handler: handler.clone(),
            metrics: ctx.metrics.clone(),
        });
    }
    tracing::warn!(
        listeners = cfg.listen.len(),
        min_protocol = ?min_protocol,
        %ciphers,
        "https_legacy is ON: old TLS versions and CBC/RSA key-exchange suites are accepted on these ports. Keep them on the staging LAN, and turn this off once no phone needs it (see provbox_tls_handshakes_total{{listener=\"https_legacy:…\"}})"
    );
    Ok((out, reload))
}
