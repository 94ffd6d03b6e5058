//! The fleet's world: personas, MACs, the served files (for provbox a template and an
//! inventory, for nginx the same profiles pre-rendered) and the test PKI. `setup` writes it
//! once; `run` derives every expected byte from the same functions and files.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The provisioning name DHCP hands out (option 66) and the server certificate carries.
pub const PROV_NAME: &str = "prov.lab.test";

/// How one phone model boots, as the project's tests model it (tests/suite/devices.rs).
pub struct Persona {
    pub name: &'static str,
    pub oui: [u8; 3],
    /// DHCP option 60.
    pub vendor_class: &'static str,
    /// The factory file fetched over TFTP before the phone knows its profile URL.
    pub factory: &'static str,
    /// `$PN`, first word of its syslog lines.
    pub model: &'static str,
}

pub const PERSONAS: [Persona; 3] = [
    Persona {
        name: "cisco-3pcc",
        oui: [0x00, 0x56, 0x2b],
        vendor_class: "CP-8831-3PCC",
        factory: "CP-8831-3PCC.cfg",
        model: "CP-8831-3PCC",
    },
    Persona {
        name: "yealink",
        oui: [0x00, 0x15, 0x65],
        vendor_class: "yealink",
        factory: "y000000000028.cfg",
        model: "SIP-T46G",
    },
    Persona {
        name: "polycom",
        oui: [0x00, 0x04, 0xf2],
        vendor_class: "Polycom-VVX400",
        factory: "000000000000.cfg",
        model: "VVX_400",
    },
];

impl Persona {
    pub fn user_agent(&self, mac: &[u8; 6]) -> String {
        let hex = mac_hex(mac);
        match self.name {
            "cisco-3pcc" => format!("Cisco-CP-8831-3PCC/9.3.3 ({hex})"),
            "yealink" => format!("Yealink SIP-T46G 28.72.0.1 {}", mac_colons(mac)),
            _ => format!(
                "FileTransport PolycomVVX-VVX_400-UA/5.9.5.0614 (SN:{hex}) Type/Application"
            ),
        }
    }

    pub fn firmware_path(&self) -> String {
        format!("fw/{}.bin", self.name)
    }

    fn factory_body(&self) -> String {
        format!(
            "# {} factory profile\nProfile_Rule=https://{PROV_NAME}/cfg/$MA.xml\nUpgrade_Rule=https://{PROV_NAME}/{}\n",
            self.name,
            self.firmware_path()
        )
    }
}

/// Phone `i` (0-based): its persona and MAC (the persona's OUI, then i+1).
pub fn phone(i: usize) -> (&'static Persona, [u8; 6]) {
    let p = &PERSONAS[i % PERSONAS.len()];
    let n = (i + 1) as u32;
    let mac = [
        p.oui[0],
        p.oui[1],
        p.oui[2],
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ];
    (p, mac)
}

pub fn mac_hex(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn mac_colons(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn profile_path(mac: &[u8; 6]) -> String {
    format!("cfg/{}.xml", mac_hex(mac))
}

/// provbox renders this per device; nginx serves it pre-rendered.
const TEMPLATE: &str = "<flat-profile>\n  <Mac>$MA</Mac>\n  <Extension>$extension</Extension>\n  <Profile_Rule>https://prov.lab.test/cfg/$MA.xml</Profile_Rule>\n</flat-profile>\n";

fn extension(i: usize) -> String {
    (10000 + i + 1).to_string()
}

/// The profile phone `i` must receive, byte for byte.
pub fn profile_body(i: usize) -> String {
    let (_, mac) = phone(i);
    TEMPLATE
        .replace("$MA", &mac_hex(&mac))
        .replace("$extension", &extension(i))
}

/// Firmware image bytes: deterministic noise (incompressible, like a real image).
fn firmware(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// Write the world for `phones` phones under `dir`:
/// `files/` + `inventory.csv` (provbox), `www/` (nginx and dnsmasq's TFTP), `pki/`.
pub fn setup(dir: &Path, phones: usize, firmware_kib: usize) -> Result<()> {
    for (k, p) in PERSONAS.iter().enumerate() {
        let fw = firmware(k as u64 + 1, firmware_kib * 1024);
        for root in ["files", "www"] {
            write(&dir.join(root).join(p.factory), p.factory_body())?;
            write(&dir.join(root).join(p.firmware_path()), &fw)?;
        }
    }
    write(&dir.join("files/cfg/$MA.xml.tmpl"), TEMPLATE)?;
    let mut inv = String::from("mac,extension\n");
    for i in 0..phones {
        let (_, mac) = phone(i);
        inv.push_str(&format!("{},{}\n", mac_hex(&mac), extension(i)));
        write(&dir.join("www").join(profile_path(&mac)), profile_body(i))?;
    }
    write(&dir.join("inventory.csv"), inv)?;
    pki(&dir.join("pki"))
}

fn pki(dir: &Path) -> Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fleet test phone CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = rcgen::date_time_ymd(2020, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let ca_cert = ca.self_signed(&ca_key)?;
    write(&dir.join("ca.pem"), ca_cert.pem())?;
    write(&dir.join("ca.key"), ca_key.serialize_pem())?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(vec![PROV_NAME.to_string(), "198.18.0.1".to_string()])?;
    p.distinguished_name.push(DnType::CommonName, PROV_NAME);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let cert = p.signed_by(&key, &issuer)?;
    write(&dir.join("server.pem"), cert.pem())?;
    write(&dir.join("server.key"), key.serialize_pem())?;
    Ok(())
}

/// The CA that issues each phone's client certificate, read back from `dir/pki`.
pub fn issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let pem = fs::read_to_string(dir.join("pki/ca.pem")).context("pki/ca.pem (run setup)")?;
    let key = KeyPair::from_pem(&fs::read_to_string(dir.join("pki/ca.key"))?)?;
    Ok(Issuer::from_ca_cert_pem(&pem, key)?)
}

/// A phone's own client certificate: CN `SEP<MAC>` as Cisco phones carry it.
/// Returns (certificate DER, PKCS#8 key DER).
pub fn client_cert(issuer: &Issuer<'_, KeyPair>, mac: &[u8; 6]) -> Result<(Vec<u8>, Vec<u8>)> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(
        DnType::CommonName,
        format!("SEP{}", mac_hex(mac).to_uppercase()),
    );
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let cert = p.signed_by(&key, issuer)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}
