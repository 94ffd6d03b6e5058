//! The `https_legacy` listener: a second TLS front door, on OpenSSL, for phones that only
//! speak TLS 1.0 with CBC suites and RSA key exchange (rustls has none of those). It feeds
//! the same HTTP service as the rustls listener (`http::Listener` with a
//! [`crate::http::TlsDoor::OpenSsl`]); only the handshake lives here.
//!
//! The configuration is always parsed so a config file means the same in every build;
//! without the `legacy-tls` cargo feature the section can only stay disabled.

#[cfg(feature = "legacy-tls")]
mod ossl;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::confkit::{At, ClientAuth, HttpLimits, HttpsConfig, ListenerSpec, Problems, Transport};

#[cfg(feature = "legacy-tls")]
pub use self::ossl::{Acceptor, lab_rsa_cert};

/// What old phones offer (Cisco SPA/3PCC, Yealink T2x, Polycom SoundPoint provisioning
/// guides), after ECDHE suites so that modern clients still get forward secrecy and GCM.
/// The server's order wins.
pub const DEFAULT_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
DHE-RSA-AES256-SHA:AES256-SHA:DHE-RSA-AES128-SHA:AES128-SHA";

/// The oldest protocol version the listener accepts.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
pub enum MinProtocol {
    #[default]
    #[serde(rename = "tls1.0")]
    Tls10,
    #[serde(rename = "tls1.1")]
    Tls11,
    #[serde(rename = "tls1.2")]
    Tls12,
    #[serde(rename = "tls1.3")]
    Tls13,
}

/// Every key is optional: a missing one takes its value from [`Config::default`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub enabled: bool,
    pub listen: Vec<At<SocketAddr>>,
    pub min_protocol: At<MinProtocol>,
    /// OpenSSL cipher string for TLS 1.0-1.2 (TLS 1.3 suites are OpenSSL's defaults).
    pub ciphers: At<String>,
    /// Unset: `https.cert`/`https.key`, or with those unset an RSA certificate from the
    /// lab CA (RSA key exchange needs an RSA key; the lab CA's default is ECDSA).
    pub cert: Option<At<PathBuf>>,
    pub key: Option<At<PathBuf>>,
    /// Unset: the same policy as `https.client_auth`.
    pub client_auth: Option<At<ClientAuth>>,
    /// Unset: `https.client_ca`.
    pub client_ca: Option<At<PathBuf>>,
    pub limits: HttpLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: false,
            listen: Vec::new(),
            min_protocol: At::default(),
            ciphers: At::new(DEFAULT_CIPHERS.to_string()),
            cert: None,
            key: None,
            client_auth: None,
            client_ca: None,
            limits: HttpLimits::default(),
        }
    }
}

/// The settings one legacy listener set runs with, after inheriting from `https:`.
#[derive(Debug, Clone)]
pub struct Effective {
    /// None: issue an RSA certificate from the lab CA.
    pub cert_key: Option<(PathBuf, PathBuf)>,
    pub client_auth: ClientAuth,
    pub client_ca: Option<PathBuf>,
    pub min_protocol: MinProtocol,
    pub ciphers: String,
}

impl Config {
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.cert, &mut self.key, &mut self.client_ca]
            .into_iter()
            .flatten()
        {
            if p.value.is_relative() {
                p.value = base.join(&p.value);
            }
        }
    }

    /// The settings in force: own values first, then the `https:` section's.
    pub fn effective(&self, https: &HttpsConfig) -> Effective {
        let cert_key = match (&self.cert, &self.key, &https.cert, &https.key) {
            (Some(c), Some(k), _, _) => Some((c.value.clone(), k.value.clone())),
            (None, None, Some(c), Some(k)) => Some((c.value.clone(), k.value.clone())),
            _ => None,
        };
        Effective {
            cert_key,
            client_auth: self
                .client_auth
                .as_ref()
                .map_or(https.client_auth.value, |a| a.value),
            client_ca: self
                .client_ca
                .as_ref()
                .or(https.client_ca.as_ref())
                .map(|p| p.value.clone()),
            min_protocol: self.min_protocol.value,
            ciphers: self.ciphers.value.clone(),
        }
    }

    pub fn validate(&self, https: &HttpsConfig, p: &mut Problems) {
        if !self.enabled {
            return;
        }
        if cfg!(not(feature = "legacy-tls")) {
            p.add_at(
                "https_legacy.enabled",
                0,
                0,
                "this provbox was built without the `legacy-tls` feature (OpenSSL); expected false",
            );
            return;
        }
        p.check_listen("https_legacy.listen", true, &self.listen, "0.0.0.0:8444");
        self.limits.validate("https_legacy.limits", p);
        crate::confkit::check_cert_pair("https_legacy", &self.cert, &self.key, p);
        let eff = self.effective(https);
        if let Some(ca) = &self.client_ca {
            p.check_file("https_legacy.client_ca", ca, "a PEM CA bundle");
        }
        if eff.client_auth != ClientAuth::None && eff.client_ca.is_none() {
            let at = self
                .client_auth
                .clone()
                .unwrap_or_else(|| https.client_auth.clone());
            p.add(
                "https_legacy.client_auth",
                &at,
                "asks for client certificates but neither https_legacy.client_ca nor https.client_ca is set; expected a PEM CA bundle",
            );
        }
        #[cfg(feature = "legacy-tls")]
        if let Err(e) = ossl::check_ciphers(&self.ciphers) {
            p.add("https_legacy.ciphers", &self.ciphers, e);
        }
    }

    pub fn listeners(&self) -> Vec<ListenerSpec> {
        if !self.enabled {
            return Vec::new();
        }
        ListenerSpec::list("https_legacy.listen", Transport::Tcp, &self.listen)
    }
}

/// The reload hook: applies a new `https_legacy` section (which reads `https` for what it
/// inherits).
pub type Reload = Box<dyn Fn(&Config, &HttpsConfig) -> anyhow::Result<()> + Send + Sync>;

/// Bind the enabled legacy listeners (all sockets first, like every front end) and return
/// them ready to run with their reload hook; adds a banner line per socket.
pub async fn bind(
    ctx: &crate::frontend::Context,
    cfg: &Config,
    https: &HttpsConfig,
    banner: &mut Vec<String>,
) -> anyhow::Result<(Vec<crate::http::Listener>, Reload)> {
    if !cfg.enabled {
        return Ok((Vec::new(), Box::new(|_: &Config, _: &HttpsConfig| Ok(()))));
    }
    #[cfg(not(feature = "legacy-tls"))]
    {
        let _ = (ctx, https, banner);
        anyhow::bail!("https_legacy: this provbox was built without the `legacy-tls` feature");
    }
    #[cfg(feature = "legacy-tls")]
    ossl::bind(ctx, cfg, https, banner).await
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(yaml: &str) -> Result<Config, crate::confkit::ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        Config::parse(yaml, &dir.path().join("config.yaml"))
    }

    const BASE: &str = "catalog:\n  roots: [files]\n";

    /// An enabled `https_legacy` section listening on 127.0.0.1:8444 (its keys on lines 4
    /// to 5), then `extra` keys from line 6.
    fn enabled_with(extra: &str) -> Result<Config, crate::confkit::ConfigErrors> {
        parse(&format!(
            "{BASE}https_legacy:\n  enabled: true\n  listen: [\"127.0.0.1:8444\"]\n{extra}"
        ))
    }

    /// The first error of [`enabled_with`] `extra`, which must name `field` on line 6.
    #[cfg(feature = "legacy-tls")]
    fn refused_on_line_6(extra: &str, field: &str) -> crate::confkit::ConfigError {
        let err = enabled_with(extra).unwrap_err();
        assert_eq!(err.0[0].field, field);
        assert_eq!(err.0[0].line, 6);
        err.0[0].clone()
    }

    #[test]
    fn off_by_default_and_inherits_https_policy() {
        let cfg = parse(&format!(
            "{BASE}https:\n  client_auth: optional\n  client_ca: ca.pem\nhttps_legacy:\n  listen: [\"127.0.0.1:8444\"]\n"
        ))
        .unwrap();
        assert!(!cfg.https_legacy.enabled);
        assert!(cfg.https_legacy.listeners().is_empty());
        let eff = cfg.https_legacy.effective(&cfg.https);
        assert_eq!(eff.client_auth, crate::confkit::ClientAuth::Optional);
        assert!(eff.client_ca.unwrap().ends_with("ca.pem"));
        assert!(eff.cert_key.is_none());
        assert_eq!(eff.ciphers, super::DEFAULT_CIPHERS);
    }

    #[test]
    fn port_conflict_with_rustls_listener_is_refused() {
        let err = parse(&format!(
            "{BASE}https:\n  enabled: true\n  listen: [\"127.0.0.1:8443\"]\nhttps_legacy:\n  enabled: true\n  listen: [\"0.0.0.0:8443\"]\n"
        ))
        .unwrap_err();
        let e = err
            .0
            .iter()
            .find(|e| e.field == "https_legacy.listen[0]")
            .unwrap();
        assert_eq!(e.line, 8);
        assert!(e.message.contains("https.listen[0]"), "{err}");
    }

    #[test]
    fn bad_min_protocol_names_line() {
        let err = enabled_with("  min_protocol: ssl3\n").unwrap_err();
        assert_eq!(err.0[0].line, 6, "{err}");
        assert!(err.to_string().contains("tls1.0"), "{err}");
    }

    #[cfg(feature = "legacy-tls")]
    #[test]
    fn client_auth_without_any_ca_is_refused() {
        refused_on_line_6("  client_auth: required\n", "https_legacy.client_auth");
    }

    #[cfg(feature = "legacy-tls")]
    #[test]
    fn unknown_and_rc4_ciphers_are_refused_clearly() {
        let e = refused_on_line_6(
            "  ciphers: \"AES256-SHA:NOPE-CIPHER\"\n",
            "https_legacy.ciphers",
        );
        assert!(e.message.contains("NOPE-CIPHER"), "{e}");
        // Whether RC4 exists depends on how the system OpenSSL was built: either it is
        // accepted, or refused with a message that says so.
        match enabled_with("  ciphers: \"AES128-SHA:RC4-SHA\"\n") {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains("RC4 is not available"), "{e}"),
        }
    }

    #[cfg(not(feature = "legacy-tls"))]
    #[test]
    fn enabled_without_the_feature_is_refused() {
        let err = enabled_with("").unwrap_err();
        assert!(err.to_string().contains("legacy-tls"), "{err}");
    }
}
