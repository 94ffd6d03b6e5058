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
    /// List the DHCP leases in the store (provbox must not be running: redb allows one process).
    Leases {
        #[arg(long, short, default_value = "config.yaml")]
        config: PathBuf,
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
        Command::Leases { config } => match config::Config::load(&config) {
            Ok(cfg) => match provbox::dhcp::print_leases(&cfg.data_dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("provbox: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
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
