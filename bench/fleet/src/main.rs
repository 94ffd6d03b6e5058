//! provbox-fleet: N simulated phones through the whole boot from one process, against any
//! server set (provbox, or dnsmasq + nginx) configured over the same `setup` tree.
//!
//!   provbox-fleet setup --dir D --phones N
//!   provbox-fleet run --dir D --phones N [--rate R] [--pids P,...] [--svg F]
//!   provbox-fleet plot --out F.svg LABEL=TIMES ...
//!
//! `run` acts as the DHCP relay for the pool (giaddr = the pool's first address) and binds
//! each phone's sockets to its leased address, so the pool must be local to the
//! simulator's namespace (`ip route add local <pool> dev lo`).

mod clients;
mod dhcp;
mod os;
mod phone;
mod report;
mod setup;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Phone-fleet simulator for provbox capacity runs")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write served files, inventory and PKI for N phones.
    Setup {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        phones: usize,
        #[arg(long, default_value_t = 64)]
        firmware_kib: usize,
    },
    /// Boot N phones and report.
    Run(RunArgs),
    /// Draw several runs' completion times (files from `run --times`) in one SVG.
    Plot {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "phones fully provisioned over time")]
        title: String,
        /// LABEL=PATH
        series: Vec<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    phones: usize,
    /// Phones arriving per second; 0 = all at once.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// The DHCP server the relay forwards to.
    #[arg(long, default_value = "198.18.0.1")]
    server: Ipv4Addr,
    /// The lease pool's network (CIDR); its first address is the relay's giaddr.
    #[arg(long, default_value = "198.18.64.0/18")]
    pool: String,
    #[arg(long, default_value_t = 69)]
    tftp_port: u16,
    #[arg(long, default_value_t = 53)]
    dns_port: u16,
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    #[arg(long, default_value_t = 514)]
    syslog_port: u16,
    /// Seconds each step may take.
    #[arg(long, default_value_t = 120)]
    step_timeout: u64,
    /// Server processes (comma-separated) whose CPU and peak RSS to report.
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Name of the run in the report and plot.
    #[arg(long, default_value = "server")]
    label: String,
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Completion times, one per line (for `plot`).
    #[arg(long)]
    times: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup {
            dir,
            phones,
            firmware_kib,
        } => {
            if firmware_kib < 1 {
                bail!("--firmware-kib must be at least 1");
            }
            setup::setup(&dir, phones, firmware_kib)
        }
        Cmd::Run(a) => {
            os::raise_nofile();
            let rt = tokio::runtime::Runtime::new()?;
            let ok = rt.block_on(run(a))?;
            // Exit at once: stray sockets and timers need no orderly shutdown.
            std::process::exit(if ok { 0 } else { 1 });
        }
        Cmd::Plot { out, title, series } => {
            let mut all = Vec::new();
            for s in series {
                let (label, path) = s.split_once('=').context("series is LABEL=PATH")?;
                let text = std::fs::read_to_string(path).with_context(|| path.to_string())?;
                let times: Vec<f64> = text.lines().filter_map(|l| l.parse().ok()).collect();
                all.push((label.to_string(), times));
            }
            std::fs::write(&out, report::svg(&title, &all))?;
            Ok(())
        }
    }
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let (ip, bits) = s.split_once('/').context("pool as A.B.C.D/N")?;
    let bits: u8 = bits.parse()?;
    if !(8..=30).contains(&bits) {
        bail!("pool prefix /{bits}: expected /8 to /30");
    }
    Ok((ip.parse()?, bits))
}

fn client_tls(
    roots: &Arc<rustls::RootCertStore>,
    cert: Vec<u8>,
    key: Vec<u8>,
) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

async fn run(a: RunArgs) -> Result<bool> {
    let pool = parse_cidr(&a.pool)?;
    let giaddr = Ipv4Addr::from(u32::from(pool.0) + 1);
    // What every phone checks against, read from the tree `setup` wrote.
    let mut factory = Vec::new();
    let mut firmware = Vec::new();
    for p in &setup::PERSONAS {
        factory.push(std::fs::read(a.dir.join("www").join(p.factory)).context("www/ (run setup)")?);
        let fw = std::fs::read(a.dir.join("www").join(p.firmware_path()))?;
        firmware.push((fw.len(), Sha256::digest(&fw).into()));
    }
    let ex = Arc::new(phone::Expect {
        factory,
        firmware,
        pool,
        ports: phone::Ports {
            tftp: a.tftp_port,
            dns: a.dns_port,
            https: a.https_port,
            syslog: a.syslog_port,
        },
        step_timeout: Duration::from_secs(a.step_timeout),
    });
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(a.dir.join("pki/ca.pem"))? {
        roots.add(c?)?;
    }
    let roots = Arc::new(roots);
    // Each phone's own certificate, made before the clock starts.
    let issuer = setup::issuer(&a.dir)?;
    let mut phones = Vec::with_capacity(a.phones);
    for i in 0..a.phones {
        let (persona, mac) = setup::phone(i);
        let (cert, key) = setup::client_cert(&issuer, &mac)?;
        phones.push(phone::Phone {
            index: i,
            persona: setup::PERSONAS
                .iter()
                .position(|p| p.name == persona.name)
                .unwrap_or(0),
            mac,
            tls: client_tls(&roots, cert, key)?,
        });
    }
    let relay = dhcp::Relay::bind(SocketAddr::from((a.server, 67)), giaddr).await?;
    let cpu0 = os::cpu_seconds(&a.pids);
    eprintln!(
        "fleet: {} phones{} against {} ({})",
        a.phones,
        if a.rate > 0.0 {
            format!(" at {}/s", a.rate)
        } else {
            " at once".into()
        },
        a.server,
        a.label
    );
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for ph in phones {
        let (relay, ex) = (relay.clone(), ex.clone());
        let start = if a.rate > 0.0 {
            t0 + Duration::from_secs_f64(ph.index as f64 / a.rate)
        } else {
            t0
        };
        tasks.spawn(async move {
            tokio::time::sleep_until(start).await;
            let began = Instant::now();
            let mut steps = Vec::new();
            let mut ip = None;
            let r = phone::boot(&ph, &relay, &ex, &mut steps, &mut ip).await;
            let end = Instant::now();
            report::Outcome {
                index: ph.index,
                mac: setup::mac_colons(&ph.mac),
                steps,
                failed: r.err(),
                boot: end - began,
                done_at: end - t0,
                ip,
            }
        });
    }
    let mut outcomes = Vec::with_capacity(a.phones);
    while let Some(o) = tasks.join_next().await {
        outcomes.push(o.context("phone task panicked")?);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = os::cpu_seconds(&a.pids) - cpu0;
    let rss = os::peak_rss_mib(&a.pids);
    outcomes.sort_by_key(|o| o.index);

    // Leases must be distinct: a duplicate fails both phones at the DHCP step.
    let mut by_ip: std::collections::HashMap<Ipv4Addr, Vec<usize>> = Default::default();
    for o in &outcomes {
        if let Some(ip) = o.ip {
            by_ip.entry(ip).or_default().push(o.index);
        }
    }
    for (ip, v) in by_ip.iter().filter(|(_, v)| v.len() > 1) {
        for &i in v {
            outcomes[i].failed = Some((0, format!("lease {ip} shared by phones {v:?}")));
        }
    }
    let distinct = by_ip.len();
    for o in &outcomes {
        if let Some((k, why)) = &o.failed {
            println!(
                "FAIL phone={} mac={} step={}: {why}",
                o.index,
                o.mac,
                report::STEPS[*k]
            );
        }
    }
    let ok = outcomes.iter().filter(|o| o.failed.is_none()).count();
    let mut times: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.failed.is_none())
        .map(|o| o.done_at.as_secs_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    let last = times.last().copied().unwrap_or(wall);
    let pps = if last > 0.0 { ok as f64 / last } else { 0.0 };
    print!("{}", report::table(&outcomes));
    let per_1k = cpu / a.phones.max(1) as f64 * 1000.0;
    println!("failures by step: {}", report::failures_by_step(&outcomes));
    println!(
        "RESULT label={} phones={} ok={} failed={} distinct_leases={} wall_s={:.1} phones_per_s={:.1} cpu_s={:.2} cpu_s_per_1k={:.2} peak_rss_mib={:.0}",
        a.label,
        a.phones,
        ok,
        a.phones - ok,
        distinct,
        wall,
        pps,
        cpu,
        per_1k,
        rss
    );
    if let Some(p) = &a.times {
        let text: String = times.iter().map(|t| format!("{t:.4}\n")).collect();
        std::fs::write(p, text)?;
    }
    if let Some(p) = &a.svg {
        let title = format!(
            "{} phones, {}: phones fully provisioned over time",
            a.phones, a.label
        );
        std::fs::write(p, report::svg(&title, &[(a.label.clone(), times)]))?;
    }
    Ok(ok == a.phones)
}
