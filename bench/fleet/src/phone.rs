//! One simulated phone's boot: DHCP (through the relay), TFTP factory file, DNS of the
//! option-66 name at the option-6 server, HTTPS profile with its own certificate and
//! User-Agent, firmware by two Range requests, syslog. Every step is checked.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::clients;
use crate::dhcp::Relay;
use crate::setup::{self, PROV_NAME, Persona};

/// What every phone checks against, shared.
pub struct Expect {
    /// Per persona: factory file bytes, firmware length and sha256.
    pub factory: Vec<Vec<u8>>,
    pub firmware: Vec<(usize, [u8; 32])>,
    pub pool: (Ipv4Addr, u8),
    pub ports: Ports,
    pub step_timeout: Duration,
}

pub struct Ports {
    pub tftp: u16,
    pub dns: u16,
    pub https: u16,
    pub syslog: u16,
}

pub struct Phone {
    pub index: usize,
    pub persona: usize,
    pub mac: [u8; 6],
    pub tls: Arc<rustls::ClientConfig>,
}

fn in_pool(ip: Ipv4Addr, (net, bits): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Runs the boot, pushing each finished step's duration; `Err((step, why))` at the first
/// failure. Returns the leased address.
pub async fn boot(
    ph: &Phone,
    relay: &Relay,
    ex: &Expect,
    steps: &mut Vec<Duration>,
    ip_out: &mut Option<Ipv4Addr>,
) -> Result<(), (usize, String)> {
    let persona: &Persona = &setup::PERSONAS[ph.persona];
    let hex = setup::mac_hex(&ph.mac);
    let mut step = 0usize;
    let mut at = Instant::now();
    macro_rules! check {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err((step, format!("{e:#}"))),
            }
        };
    }
    macro_rules! done {
        () => {{
            let now = Instant::now();
            steps.push(now - at);
            at = now;
            step += 1;
        }};
    }
    let deadline = || Instant::now() + ex.step_timeout;

    // DHCP
    let xid = 0x5000_0000u32 ^ ph.index as u32;
    let lease = check!(
        relay
            .lease(xid, &ph.mac, persona.vendor_class, deadline())
            .await
    );
    if !in_pool(lease.ip, ex.pool) {
        return Err((step, format!("lease {} outside the pool", lease.ip)));
    }
    if lease.tftp_name != PROV_NAME {
        return Err((step, format!("option 66 is {:?}", lease.tftp_name)));
    }
    *ip_out = Some(lease.ip);
    let ip = lease.ip;
    done!();

    // TFTP: the persona's factory file from the DHCP server.
    let got = check!(
        clients::tftp_get(
            ip,
            SocketAddr::from((lease.server_id, ex.ports.tftp)),
            persona.factory,
            deadline()
        )
        .await
    );
    if got != ex.factory[ph.persona] {
        return Err((
            step,
            format!("{}: {} bytes differ", persona.factory, got.len()),
        ));
    }
    done!();

    // DNS: the option-66 name at the option-6 server.
    let server = check!(
        clients::resolve(
            ip,
            SocketAddr::from((lease.dns, ex.ports.dns)),
            &lease.tftp_name,
            ph.index as u16,
            deadline()
        )
        .await
    );
    done!();

    // HTTPS: own certificate and User-Agent; exactly this phone's profile.
    let https = SocketAddr::from((server, ex.ports.https));
    let profile = async {
        let mut c = clients::https_connect(
            ip,
            https,
            &lease.tftp_name,
            persona.user_agent(&ph.mac),
            ph.tls.clone(),
        )
        .await?;
        let r = c.get(&setup::profile_path(&ph.mac), None).await?;
        if r.status != 200 {
            bail!("profile: HTTP {}", r.status);
        }
        if r.body != setup::profile_body(ph.index).as_bytes() {
            bail!("profile: not this phone's ({} bytes)", r.body.len());
        }
        Ok(c)
    };
    let mut conn = check!(
        tokio::time::timeout(ex.step_timeout, profile)
            .await
            .map_err(|_| anyhow::anyhow!("timeout"))
            .and_then(|r| r)
    );
    done!();

    // Firmware: two Range requests on the same connection, checked by sha256.
    let (len, sha) = ex.firmware[ph.persona];
    let half = len / 2;
    let path = persona.firmware_path();
    let fw = async {
        let mut image = Vec::with_capacity(len);
        for range in [format!("0-{}", half - 1), format!("{half}-")] {
            let r = conn.get(&path, Some(&range)).await?;
            if r.status != 206 {
                bail!("firmware {range}: HTTP {}", r.status);
            }
            image.extend(r.body);
        }
        if image.len() != len || Sha256::digest(&image)[..] != sha[..] {
            bail!("firmware sha256 mismatch ({} bytes)", image.len());
        }
        Ok(())
    };
    check!(
        tokio::time::timeout(ex.step_timeout, fw)
            .await
            .map_err(|_| anyhow::anyhow!("timeout"))
            .and_then(|r| r)
    );
    done!();

    // Syslog: what the phone reports once its profile is applied.
    let url = format!("https://{PROV_NAME}/{}", setup::profile_path(&ph.mac));
    let lines = [
        format!("<134>{} {hex} -- Requesting resync {url}", persona.model),
        format!("<134>{} {hex} -- Successful resync {url}", persona.model),
    ];
    check!(clients::syslog(ip, SocketAddr::from((server, ex.ports.syslog)), &lines).await);
    done!();
    let _ = (step, at);
    Ok(())
}
