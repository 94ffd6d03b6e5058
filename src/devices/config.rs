//! The `devices:` section: where the inventory is, which identities are trusted, what a
//! template with a missing variable answers, encryption and retail PIN binding.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::confkit::{At, Problems};

/// Every key is optional: a missing one takes its value from [`Config::default`].
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// YAML (`.yaml`/`.yml`) or CSV (`.csv`) file mapping MAC/serial to variables.
    /// Re-read when it changes. Must not be inside a catalog root (it holds secrets).
    pub inventory: Option<At<PathBuf>>,
    pub trust: Trust,
    /// Path prefixes whose files belong to one device (its MAC is in the path) and are
    /// served only to that device, proven.
    pub private: Vec<At<String>>,
    /// Any path naming a MAC (`SEP00562B043615.cnf.xml`) is that device's file.
    pub mac_in_path: bool,
    /// HTTP status for a template the device lacks a variable for: 404 or 403.
    pub missing_variable: At<u16>,
    pub encryption: Encryption,
    pub binding: Binding,
    pub http_auth: HttpAuth,
    /// Cisco/SPA configuration reports (`Report_Rule`), compared with what was served.
    pub reports: crate::devices::verify::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            inventory: None,
            trust: Trust::default(),
            private: vec![At::new("devices/".to_string())],
            mac_in_path: true,
            missing_variable: At::new(404),
            encryption: Encryption::default(),
            binding: Binding::default(),
            http_auth: HttpAuth::default(),
            reports: crate::devices::verify::Config::default(),
        }
    }
}

/// Which identities prove a device. A verified client certificate always does.
/// Every key is optional and off unless set.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Trust {
    /// A lease provbox itself granted (IP→MAC) proves the device: right on a staging LAN
    /// where nobody else hands out addresses.
    pub lease: bool,
    /// The MAC in the User-Agent proves the device. Anyone can send any User-Agent: only
    /// on an isolated staging LAN.
    pub user_agent: bool,
    /// A device asking for a file named with a MAC is that device (Polycom phones send no
    /// MAC in their User-Agent). As spoofable as the User-Agent: staging only.
    pub path: bool,
    /// A lease granted or renewed through a DHCP relay that named the switch port
    /// (option 82, from `dhcp.trusted_relays`) proves the device at that lease's
    /// address: the relay wrote the port, not the phone. For relayed bench LANs where
    /// `lease` cannot work (the neighbour table shows the relay).
    pub relay: bool,
    /// HTTP Basic or Digest credentials prove a device: a device's own (`http_user` and
    /// `http_password` in its inventory record) prove that device; an account's (from
    /// `devices.http_auth.accounts`) prove the MAC the path or User-Agent names.
    pub http_auth: bool,
}

/// A Digest algorithm provbox offers (RFC 7616; the `-sess` variants are not offered).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    #[serde(rename = "SHA-256")]
    Sha256,
    #[serde(rename = "MD5")]
    Md5,
}

/// HTTP authentication of phones (with `devices.trust.http_auth`).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct HttpAuth {
    /// The realm in challenges (part of every Digest hash: changing it needs no new
    /// passwords, as they are kept in clear).
    pub realm: At<String>,
    /// A password file of `user:password` lines (accounts several phones share). Never
    /// inside a catalog root.
    pub accounts: Option<At<PathBuf>>,
    /// Digest algorithms offered, in the order challenged.
    pub digest: Vec<At<DigestAlgorithm>>,
    /// Also offer and take Basic (the password in the clear: over HTTPS only, ideally).
    pub basic: bool,
    /// How long a nonce is good for; an older one gets `stale=true`.
    pub nonce_lifetime: At<crate::confkit::Dur>,
}

impl Default for HttpAuth {
    fn default() -> Self {
        HttpAuth {
            realm: At::new("provbox".into()),
            accounts: None,
            digest: vec![
                At::new(DigestAlgorithm::Sha256),
                At::new(DigestAlgorithm::Md5),
            ],
            basic: false,
            nonce_lifetime: At::new(crate::confkit::Dur(std::time::Duration::from_secs(300))),
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Digest {
    /// `openssl enc -md md5`: what Cisco SPA/3PCC `--key` profile rules expect.
    #[default]
    Md5,
    /// `openssl enc -md sha256`: OpenSSL's default since 1.1.0.
    Sha256,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Encryption {
    /// Encrypt per-device responses for devices whose inventory record has a `key`.
    pub enabled: bool,
    /// Key derivation digest (a device's `digest` variable overrides it).
    pub digest: Digest,
    /// gzip the profile before encrypting (`openssl enc -d ... | gunzip`).
    pub gzip: bool,
}

impl Default for Encryption {
    fn default() -> Self {
        Encryption {
            enabled: true,
            digest: Digest::Md5,
            gzip: false,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Binding {
    /// `GET <init_prefix>/<PIN>` binds the asking device to the account holding PIN.
    /// Unset: binding is off.
    pub init_prefix: Option<At<String>>,
    /// Template (catalog path) answered after a successful binding, rendered for the
    /// device with its account's variables. It points the phone at its permanent URL.
    pub profile: At<String>,
    /// How many devices may bind to one PIN.
    pub devices_per_pin: At<u32>,
    /// Wrong PINs allowed from all devices and addresses together per 15 minutes, beside
    /// the per-device and per-address limit: fresh MACs and fresh leases cost nothing, so
    /// without it a PIN of a few digits falls to a loop that rotates them.
    pub wrong_pins_budget: At<u32>,
}

impl Default for Binding {
    fn default() -> Self {
        Binding {
            init_prefix: None,
            profile: At::new("init.cfg.tmpl".into()),
            devices_per_pin: At::new(1),
            wrong_pins_budget: At::new(50),
        }
    }
}

impl Config {
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &mut self.inventory
            && p.value.is_relative()
        {
            p.value = base.join(&p.value);
        }
        if let Some(p) = &mut self.http_auth.accounts
            && p.value.is_relative()
        {
            p.value = base.join(&p.value);
        }
    }

    pub fn validate(&self, p: &mut Problems) {
        if let Some(inv) = &self.inventory {
            match inv.extension().and_then(|e| e.to_str()) {
                Some("yaml" | "yml" | "csv") => {}
                _ => p.add(
                    "devices.inventory",
                    inv,
                    format!(
                        "{} has no known extension; expected a .yaml, .yml or .csv file",
                        inv.display()
                    ),
                ),
            }
            if !inv.is_file() {
                p.add(
                    "devices.inventory",
                    inv,
                    format!(
                        "{} is not a readable file; expected an inventory file (an empty one is fine)",
                        inv.display()
                    ),
                );
            }
        }
        if !matches!(self.missing_variable.value, 403 | 404) {
            p.add(
                "devices.missing_variable",
                &self.missing_variable,
                format!("is {}; expected 403 or 404", self.missing_variable.value),
            );
        }
        for (i, pre) in self.private.iter().enumerate() {
            if crate::catalog::path::normalize(pre).is_err() {
                p.add(
                    format!("devices.private[{i}]"),
                    pre,
                    format!(
                        "`{}` is not a usable path prefix; expected e.g. devices/",
                        pre.value
                    ),
                );
            }
        }
        if let Some(pre) = &self.binding.init_prefix
            && crate::catalog::path::normalize(pre).is_err()
        {
            p.add(
                "devices.binding.init_prefix",
                pre,
                format!(
                    "`{}` is not a usable path prefix; expected e.g. /init",
                    pre.value
                ),
            );
        }
        let b = &self.binding;
        p.check_not_zero("devices.binding.devices_per_pin", &b.devices_per_pin, "");
        let budget = " (wrong PINs allowed from everyone per 15 minutes)";
        p.check_not_zero(
            "devices.binding.wrong_pins_budget",
            &b.wrong_pins_budget,
            budget,
        );
        self.reports.validate(p);
        let ha = &self.http_auth;
        if ha.realm.is_empty()
            || ha.realm.contains(['"', '\\'])
            || ha.realm.chars().any(char::is_control)
        {
            p.add(
                "devices.http_auth.realm",
                &ha.realm,
                format!(
                    "`{}` cannot be a realm; expected a non-empty name without quotes, backslashes or control characters",
                    ha.realm.value.escape_debug()
                ),
            );
        }
        if let Some(acc) = &ha.accounts
            && let Err(e) = std::fs::read_to_string(&acc.value)
                .map_err(|e| e.to_string())
                .and_then(|t| crate::devices::pipeline::httpauth::parse_accounts(&t).map(drop))
        {
            p.add(
                "devices.http_auth.accounts",
                acc,
                format!(
                    "{}: {e}; expected a readable file of `user:password` lines",
                    acc.display()
                ),
            );
        }
        if ha.nonce_lifetime.0.is_zero() {
            p.add(
                "devices.http_auth.nonce_lifetime",
                &ha.nonce_lifetime,
                "is 0; expected a duration such as 5m",
            );
        }
        if !self.binding.profile.ends_with(".tmpl")
            || crate::catalog::path::normalize(&self.binding.profile).is_err()
        {
            p.add(
                "devices.binding.profile",
                &self.binding.profile,
                format!(
                    "`{}` is not a template path; expected a catalog path ending in .tmpl",
                    self.binding.profile.value
                ),
            );
        }
    }
}
