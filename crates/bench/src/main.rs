//! `bench emulator`: measures the azure-emulator's IMDS token throughput (rate limiting off) and
//! merges the figures into target/bench/summary.json, then prints the whole summary.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use azure_emulator::{Emulator, World};
use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(about = "pod-identity benchmarks")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Summary file to merge figures into.
    #[arg(long, global = true)]
    summary: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// IMDS token throughput of the azure-emulator, in-process, over loopback.
    Emulator {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// World file (the example world by default).
        #[arg(long)]
        world: Option<PathBuf>,
    },
    /// Print the summary table without measuring anything.
    Show,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let summary = args.summary.unwrap_or_else(bench::default_summary_path);
    match args.cmd {
        Cmd::Show => {
            let all = bench::merge_into(&summary, &[])?;
            bench::print_table(&all);
        }
        Cmd::Emulator {
            seconds,
            connections,
            world,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = rt.block_on(emulator(seconds, connections, world))?;
            if report.non_2xx > 0 || report.errors > 0 {
                bail!(
                    "the emulator answered {} non-2xx and {} failed requests: {report:?}",
                    report.non_2xx,
                    report.errors
                );
            }
            let all = bench::merge_into(
                &summary,
                &[
                    (
                        "emulator_imds_rps",
                        json!((report.requests_per_sec * 10.0).round() / 10.0),
                    ),
                    ("emulator_imds_p50_ms", json!(report.p50_ms)),
                    ("emulator_imds_p99_ms", json!(report.p99_ms)),
                    ("emulator_imds_connections", json!(connections)),
                    ("emulator_imds_seconds", json!(seconds)),
                ],
            )?;
            bench::print_table(&all);
            println!("(written to {})", summary.display());
        }
    }
    Ok(())
}

async fn emulator(
    seconds: u64,
    connections: usize,
    world: Option<PathBuf>,
) -> anyhow::Result<bench::LoadReport> {
    let path = world.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/emulator/world.yaml")
    });
    let mut world = World::from_file(&path).with_context(|| format!("reading {}", path.display()))?;
    // The benchmark measures the emulator itself, not IMDS's per-VM limits.
    world.imds.rate_limit = false;
    let client_id = world
        .identities
        .first()
        .context("the world needs an identity")?
        .client_id
        .clone();
    let node = world.vms.first().context("the world needs a VM")?.node.clone();
    let emu = Emulator::start(world).await?;
    let spec = bench::LoadSpec {
        addr: emu.imds_addr(&node).context("node has an IMDS")?,
        path_and_query: format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F&client_id={client_id}"
        ),
        headers: vec![("Metadata".into(), "true".into())],
        connections,
        duration: Duration::from_secs(seconds),
        warmup: Duration::from_secs(1),
    };
    Ok(bench::run(spec).await?)
}
