//! provbox: one process that provisions IP phones (DHCP, DNS, TFTP, HTTP(S), metrics).

use provbox::{config, server};
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
            let cfg = match config::Config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
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
        Command::Serve { config } => {
            let cfg = match config::Config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            server::init_logging(&cfg);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("provbox: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
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
