//! `azure-emulator --config world.yaml`: serves IMDS, ARM and Entra as the world file describes,
//! prints one JSON line with every endpoint on stdout, and runs until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use azure_emulator::{Emulator, World};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser)]
#[command(
    version,
    about = "Emulates Azure IMDS, ARM (VM/VMSS identities) and Entra ID on loopback"
)]
struct Args {
    /// World file (see examples/emulator/world.yaml).
    #[arg(long, env = "AZURE_EMULATOR_CONFIG")]
    config: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Turn off IMDS's per-VM limits (20 req/s, 5 concurrent), e.g. for benchmarks.
    #[arg(long)]
    no_imds_rate_limit: bool,
    /// Turn off ARM's subscription token buckets.
    #[arg(long)]
    no_arm_throttling: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match args.log_format {
        // One line per event, whatever a request put in it (see `upstream_flags::OneLine`).
        LogFormat::Text => {
            use tracing_subscriber::util::SubscriberInitExt;
            let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
            upstream_flags::text_subscriber(filter, colours, std::io::stderr).init()
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    let mut world =
        World::from_file(&args.config).with_context(|| format!("reading {}", args.config.display()))?;
    if args.no_imds_rate_limit {
        world.imds.rate_limit = false;
    }
    if args.no_arm_throttling {
        world.arm.throttling = false;
    }
    let emu = Emulator::start(world).await.context("starting the emulator")?;
    println!("{}", emu.endpoints_json());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    emu.stop();
    Ok(())
}
