//! provbox: one process that provisions IP phones (DHCP, DNS, TFTP, HTTP(S), metrics).

use provbox::cli::api as client;
use provbox::{certs, config, control, server, tls};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "provbox",
    version,
    about = "Provisioning appliance for IP phones"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every enabled front end in one process.
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Validate the configuration and print the effective listeners and roots; serve nothing.
    Check {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Ask phones to fetch their configuration again (SIP NOTIFY or the phone's web
    /// command, as `dashboard.resync` says). Devices are looked up through the running
    /// provbox's dashboard; an IP address works without it.
    Resync {
        /// A MAC address, an IP address, or `all`.
        target: String,
        /// Reboot instead of only resyncing.
        #[arg(long)]
        reboot: bool,
        /// Ask for the configuration report instead (SIP NOTIFY `Event: report`; Cisco/SPA
        /// phones POST it to their `Report_Rule`, `devices.reports.path`).
        #[arg(long, conflicts_with = "reboot")]
        report: bool,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Push firmware: send each phone its web command `/admin/upgrade?<firmware URL on
    /// this box>` through the running provbox's dashboard, at most `upgrade.max_parallel`
    /// at a time, and follow each phone until it reports (or `upgrade.timeout`).
    Upgrade {
        /// A MAC address, an IP address, or `all`.
        target: String,
        /// A file in the catalog (else `upgrade.firmware` for the phone's model/vendor).
        #[arg(long)]
        firmware: Option<String>,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// List the DHCP leases in the lease journal (also while provbox runs), or release one.
    Leases {
        #[arg(long, short, default_value = "config.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: Option<LeasesCommand>,
    },
    /// Retail PIN bindings (through the running provbox; its store when it is stopped).
    Bindings {
        #[command(subcommand)]
        command: BindingsCommand,
    },
    /// Edit one inventory record (through the running provbox, or the file when it is
    /// stopped).
    Inventory {
        #[command(subcommand)]
        command: InventoryCommand,
    },
    /// Make the running provbox re-read its configuration (like `systemctl reload`):
    /// validates the file first, signals the process, prints what it applied.
    Reload {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Keys, certificate signing requests and the lab CA.
    #[command(subcommand)]
    Cert(CertCommand),
    /// List the files a phone uploaded (`uploads:`), read from data_dir directly (also
    /// while provbox runs); `--export DIR` copies them there.
    Uploads {
        /// The phone's MAC address.
        mac: String,
        /// Copy the files into this directory (made if missing).
        #[arg(long)]
        export: Option<PathBuf>,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Device inventory tools.
    Devices {
        #[command(subcommand)]
        command: DevicesCommand,
    },
}

#[derive(Subcommand)]
enum DevicesCommand {
    /// Validate a scanned CSV (MAC or serial per line, plus columns) and merge it into the
    /// inventory named by `devices.inventory`. Errors name the line; nothing is written
    /// unless the whole file is valid. A running server picks the result up by itself.
    Import {
        /// The scan (CSV; header row optional).
        file: PathBuf,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// Validate and report only.
        #[arg(long)]
        dry_run: bool,
    },
    /// A device's status and timeline, from the running provbox.
    Show {
        mac: String,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Forget a device's status record and timeline in the running provbox.
    Forget {
        mac: String,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum LeasesCommand {
    /// End the lease at this address now: the phone is NAKed at its next renewal and gets
    /// another address (the old one is held until its lease would have ended).
    Release { ip: String },
}

#[derive(Subcommand)]
enum BindingsCommand {
    /// Every PIN and the devices bound to it.
    List {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Unbind a PIN: it can then bind another phone.
    Unbind {
        pin: String,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum InventoryCommand {
    /// Set variables on a record (MAC, serial or pin:<PIN>), or add it: `extension=1001
    /// display_name="Front desk"`; `name=` removes a variable.
    Set {
        key: String,
        #[arg(required = true)]
        vars: Vec<String>,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Delete a record.
    Delete {
        key: String,
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Write a private key and a certificate signing request to send to a CA.
    Csr {
        /// The server name phones use (common name and first subject alternative name).
        #[arg(long)]
        cn: String,
        /// More subject alternative names (DNS names or IP addresses).
        #[arg(long = "san", value_delimiter = ',')]
        sans: Vec<String>,
        /// Organisation (O=) in the subject.
        #[arg(long)]
        org: Option<String>,
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        key_type: certs::KeyType,
        /// Directory for <cn>.key and <cn>.csr.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Create (or reuse) a lab CA, issue a server certificate for the configured names and
    /// client certificates for test phones. Without --out it writes to data_dir/tls, which
    /// the HTTPS listener uses when no certificate is configured.
    LabCa {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
        /// Server names besides https.names and this machine's names.
        #[arg(long, value_delimiter = ',')]
        names: Vec<String>,
        /// MAC addresses of test phones that get a client certificate.
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn load(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })
}

fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("provbox: cannot start runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Loads the configuration, runs `f` on it on a small runtime, and exits as it says
/// (its error printed after `what`).
fn on_runtime<F, E>(
    what: &str,
    config: &std::path::Path,
    f: impl FnOnce(config::Config) -> F,
) -> ExitCode
where
    F: std::future::Future<Output = Result<bool, E>>,
    E: std::fmt::Display,
{
    let run = || -> Result<F::Output, ExitCode> {
        let cfg = load(config)?;
        let rt = runtime(tokio::runtime::Builder::new_current_thread())?;
        Ok(rt.block_on(f(cfg)))
    };
    match run() {
        Ok(r) => exit_code(what, r),
        Err(code) => code,
    }
}

/// A command's exit: success (`Ok(true)`), a failure it has told of (`Ok(false)`), or an
/// error printed after `what` ("provbox cert").
fn exit_code<E: std::fmt::Display>(what: &str, r: Result<bool, E>) -> ExitCode {
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An API command (`provbox devices forget`, ...): load the configuration, run it on a
/// small runtime, print its error.
fn api_command<F>(config: &std::path::Path, f: impl FnOnce(config::Config) -> F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    on_runtime("provbox", config, |cfg| async move {
        f(cfg).await.map(|()| true)
    })
}

fn cert(cmd: CertCommand) -> ExitCode {
    let result = match cmd {
        CertCommand::Csr {
            cn,
            sans,
            org,
            key_type,
            out,
        } => certs::write_csr(&out, &cn, &sans, org.as_deref(), key_type).map(|f| {
            println!("private key: {}", f.key.display());
            println!("request:     {}", f.csr.display());
            println!("Send the request to your CA; keep the key private (mode 0600).");
            println!(
                "Check it with: openssl req -verify -noout -text -in {}",
                f.csr.display()
            );
        }),
        CertCommand::LabCa {
            config,
            names,
            clients,
            out,
        } => {
            let (data_dir, https_names) = match certs::lab_settings(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("provbox cert: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            // The configured FQDN first: it becomes the certificate's CN.
            let mut all = https_names;
            all.extend(names);
            all.extend(tls::machine_names(&[]));
            let mut seen = std::collections::HashSet::new();
            all.retain(|n| seen.insert(n.clone()));
            let dir = out.unwrap_or_else(|| data_dir.join("tls"));
            certs::lab_ca(&dir, &all, &clients).map(|f| {
                println!(
                    "lab CA:       {}   (install on phones as a custom CA)",
                    f.lab.ca_cert.display()
                );
                println!(
                    "server cert:  {}   for {}",
                    f.lab.server_cert.display(),
                    all.join(", ")
                );
                println!("server key:   {}", f.lab.server_key.display());
                for (mac, c, k) in &f.clients {
                    println!("client {mac}: {} + {}", c.display(), k.display());
                }
                println!(
                    "Check with: openssl verify -CAfile {} {}",
                    f.lab.ca_cert.display(),
                    f.lab.server_cert.display()
                );
            })
        }
    };
    exit_code("provbox cert", result.map(|()| true))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::Config::load(&config) {
            Ok(cfg) => {
                print!("{}", cfg.summary());
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Devices {
            command:
                DevicesCommand::Import {
                    file,
                    config,
                    dry_run,
                },
        } => {
            let cfg = match load(&config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            let Some(inv) = &cfg.devices.inventory else {
                eprintln!(
                    "{}: devices.inventory is not set; expected the inventory file to merge into",
                    config.display()
                );
                return ExitCode::FAILURE;
            };
            match provbox::devices::inventory::import(&file, inv, dry_run) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Devices {
            command: DevicesCommand::Show { mac, config },
        } => api_command(
            &config,
            |c| async move { client::devices_show(&c, &mac).await },
        ),
        Command::Devices {
            command: DevicesCommand::Forget { mac, config },
        } => api_command(&config, |c| async move {
            client::devices_forget(&c, &mac).await
        }),
        Command::Leases {
            config,
            command: Some(LeasesCommand::Release { ip }),
        } => api_command(
            &config,
            |c| async move { client::leases_release(&c, &ip).await },
        ),
        Command::Bindings { command } => match command {
            BindingsCommand::List { config } => {
                api_command(&config, |c| async move { client::bindings_list(&c).await })
            }
            BindingsCommand::Unbind { pin, config } => api_command(&config, |c| async move {
                client::bindings_unbind(&c, &pin).await
            }),
        },
        Command::Inventory { command } => match command {
            InventoryCommand::Set { key, vars, config } => api_command(&config, |c| async move {
                client::inventory_set(&c, &key, &vars).await
            }),
            InventoryCommand::Delete { key, config } => api_command(&config, |c| async move {
                client::inventory_delete(&c, &key).await
            }),
        },
        Command::Cert(cmd) => cert(cmd),
        Command::Uploads {
            mac,
            export,
            config,
        } => {
            let cfg = match load(&config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            let r = provbox::uploads::cli(&cfg.data_dir, &mac, export.as_deref());
            exit_code(
                "provbox uploads",
                r.map(|text| print!("{text}")).map(|()| true),
            )
        }
        Command::Reload { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                // A bad file would be refused by the running process anyway; say so here.
                Err(code) => {
                    eprintln!("provbox reload: not sent; the running configuration stays");
                    return code;
                }
            };
            let r = control::signal_reload(&cfg.data_dir, std::time::Duration::from_secs(15));
            let r = r.map(|(result, text)| {
                println!("reload {result}: {text}");
                result == "ok"
            });
            exit_code("provbox reload", r)
        }
        Command::Resync {
            target,
            reboot,
            report,
            config,
        } => on_runtime("provbox resync", &config, |cfg| async move {
            provbox::cli::resync::cli(&cfg, &target, reboot, report).await
        }),
        Command::Upgrade {
            target,
            firmware,
            config,
        } => {
            let fw = firmware.as_deref();
            on_runtime("provbox upgrade", &config, |cfg| async move {
                provbox::cli::upgrade::cli(&cfg, &target, fw).await
            })
        }
        Command::Leases {
            config,
            command: None,
        } => match config::Config::load(&config) {
            Ok(cfg) => {
                let r = if *cfg.store.backend == provbox::store::Backend::Postgres {
                    provbox::dhcp::print_shared_leases(&cfg.store)
                } else {
                    provbox::dhcp::print_leases(&cfg.data_dir)
                };
                exit_code("provbox", r.map(|()| true))
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            let cfg = match load(&config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            server::init_logging(&cfg);
            let rt = match runtime(tokio::runtime::Builder::new_multi_thread()) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match rt.block_on(server::run(cfg, config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("provbox: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
