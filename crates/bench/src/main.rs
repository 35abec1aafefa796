//! The `bench` command. Each subcommand measures one component and merges its figures into
//! target/bench/summary.json, then prints the whole summary:
//! - `emulator`: the azure-emulator's IMDS token throughput (rate limiting off);
//! - `nmi` (issue 4): NMI's cached-token throughput and latency, IMDS calls per 10k requests, memory;
//! - `mic` (issue 5): MIC's convergence, ARM writes and 429s, memory at 1,000 and 10,000 pods;
//! - `soak` (issue 7 §4): MIC and NMI under pod churn and steady token load, memory over time;
//! - `churn` (issue 13): short-lived pods on shared VMs and scale sets; every bound pod must get
//!   its token, no other pod any, and Azure must end with exactly what is needed.
//! - `ready` (issue 22): pod Running to `IdentityReady` True, the first token once Ready, IMDS
//!   calls per pod of NMI's prefetch.

mod churn;
mod cluster;
mod fed_bench;
mod mic_bench;
mod nmi_bench;
mod pinned;
mod ready_bench;
mod soak;

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
    /// Only merge the figures; do not print the table (`make bench` prints it once at the end).
    #[arg(long, global = true)]
    no_table: bool,
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
    /// NMI (release binary) for one node with 100 bound pods: cached tokens, IMDS calls, memory.
    Nmi {
        /// Measuring time of each throughput run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Federated mode (issue 17): pod Running to first token through a TokenRequest and an Entra
    /// exchange, and cached tokens against standard mode in the same NMI.
    Fed {
        /// Measuring time of each throughput run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Delay the emulator's Entra adds to every answer (see fed_bench::ENTRA_LATENCY_MS).
        #[arg(long, default_value_t = fed_bench::ENTRA_LATENCY_MS)]
        entra_latency_ms: u64,
    },
    /// MIC (release binary): 1,000 pods on 100 nodes in 10 scale sets, then `--pods`.
    Mic {
        /// Pods of the memory measurement at scale (the first 1,000 included).
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
    },
    /// MIC and NMI under pod churn and steady token requests.
    Soak {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Token requests per second against NMI.
        #[arg(long, default_value_t = 2000.0)]
        rps: f64,
        /// Pods created (and deleted) per minute.
        #[arg(long, default_value_t = 100.0)]
        churn_per_min: f64,
    },
    /// Short-lived pods coming and going on two scale sets and a VM (MIC and one NMI per node).
    /// Exits non-zero, naming the seed, when a bound pod got no token, an unbound pod got one,
    /// or Azure ended with other identities than needed.
    Churn {
        /// Stop after this long, or after `--pods` lifecycles, whichever comes first.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 500)]
        pods: usize,
        /// ARM operation latency of every VM and scale set (L).
        #[arg(long, default_value_t = 2000)]
        arm_latency_ms: u64,
        /// Replays a run; a random seed otherwise (printed first).
        #[arg(long, env = "CHURN_SEED")]
        seed: Option<u64>,
        /// Every this many ms on average, remove an identity from a VM or scale set behind MIC's
        /// back, as `az vmss identity remove` does (0: never; the test in `make test` does).
        #[arg(long, default_value_t = 0)]
        remove_behind_ms: u64,
        /// Every this many ms on average, pause MIC (SIGSTOP) for 0.5-3 s so that its watches
        /// lag (0: never; the test in `make test` does).
        #[arg(long, default_value_t = 0)]
        pause_mic_ms: u64,
        /// MIC's watch events arrive up to this many ms late (a lag drawn anew every 1-5 s)
        /// while its writes go through at once (0: never; the test in `make test` does).
        #[arg(long, default_value_t = 0)]
        slow_watch_ms: u64,
    },
    /// Readiness (issue 22): pods of a rollout, pod Running to `IdentityReady` True with MIC's
    /// ARM operations taking `--arm-latency-ms`, the first token once Ready, IMDS calls per pod.
    Ready {
        #[arg(long, default_value_t = 40)]
        pods: usize,
        /// ARM operation latency of the scale set (L).
        #[arg(long, default_value_t = 2000)]
        arm_latency_ms: u64,
    },
    /// Print the summary table without measuring anything.
    Show,
    /// Internal: runs one load spec (JSON on stdin) and prints its report (see `pinned`).
    #[command(hide = true)]
    LoadWorker,
}

fn publish(
    summary: &std::path::Path,
    figures: Vec<(&'static str, serde_json::Value)>,
    table: bool,
) -> anyhow::Result<()> {
    let all = bench::merge_into(summary, &figures)?;
    if table {
        bench::print_table(&all);
    }
    println!("(written to {})", summary.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if matches!(args.cmd, Cmd::LoadWorker) {
        return pinned::worker();
    }
    let summary = args.summary.unwrap_or_else(bench::default_summary_path);
    match args.cmd {
        Cmd::LoadWorker => unreachable!("handled above"),
        Cmd::Show => {
            let all = bench::merge_into(&summary, &[])?;
            bench::print_table(&all);
        }
        Cmd::Nmi { seconds } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let figures = rt.block_on(nmi_bench::run(seconds, &summary))?;
            publish(&summary, figures, !args.no_table)?;
        }
        Cmd::Fed {
            seconds,
            entra_latency_ms,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let figures = rt.block_on(fed_bench::run(seconds, entra_latency_ms, &summary))?;
            publish(&summary, figures, !args.no_table)?;
        }
        Cmd::Ready { pods, arm_latency_ms } => {
            let logs = cluster::log_dir(&summary)?;
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let figures = rt.block_on(ready_bench::run(pods.max(1), arm_latency_ms, &logs))?;
            publish(&summary, figures, !args.no_table)?;
        }
        Cmd::Mic { pods } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let figures = rt.block_on(mic_bench::run(pods.max(1000), &summary))?;
            publish(&summary, figures, !args.no_table)?;
        }
        Cmd::Soak {
            seconds,
            rps,
            churn_per_min,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let figures = rt.block_on(soak::run(seconds.max(20), rps, churn_per_min, &summary))?;
            publish(&summary, figures, !args.no_table)?;
        }
        Cmd::Churn {
            seconds,
            pods,
            arm_latency_ms,
            seed,
            remove_behind_ms,
            pause_mic_ms,
            slow_watch_ms,
        } => {
            let cfg = churn::Config {
                seed: seed.unwrap_or_else(|| fastrand::u64(..)),
                pods,
                seconds,
                arm_latency_ms,
                remove_behind: (remove_behind_ms > 0)
                    .then(|| std::time::Duration::from_millis(remove_behind_ms)),
                pause_mic: (pause_mic_ms > 0).then(|| std::time::Duration::from_millis(pause_mic_ms)),
                slow_watch: (slow_watch_ms > 0).then(|| std::time::Duration::from_millis(slow_watch_ms)),
            };
            let logs = cluster::log_dir(&summary)?;
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = rt.block_on(churn::run(&cfg, &logs))?;
            println!(
                "churn: {} pod lifecycles ({} bound), {} ARM writes, {} MIC pauses, {} watch events late to MIC, {} identities removed behind MIC's back{}",
                report.pods,
                report.bound_pods,
                report.arm_writes,
                report.mic_pauses,
                report.late_watch_events,
                report.removed_behind.len(),
                if report.removed_behind.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", report.removed_behind.join(", "))
                }
            );
            publish(&summary, report.figures(), !args.no_table)?;
            let failures = report.failures();
            if !failures.is_empty() {
                for f in &failures {
                    eprintln!("churn: FAILED: {f}");
                }
                bail!(
                    "{} churn failure(s) with seed {} (replay: bench churn --seed {}; logs in {})",
                    failures.len(),
                    cfg.seed,
                    cfg.seed,
                    logs.display()
                );
            }
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
            let figures = vec![
                (
                    "emulator_imds_rps",
                    json!((report.requests_per_sec * 10.0).round() / 10.0),
                ),
                ("emulator_imds_p50_ms", json!(report.p50_ms)),
                ("emulator_imds_p99_ms", json!(report.p99_ms)),
                ("emulator_imds_connections", json!(connections)),
                ("emulator_imds_seconds", json!(seconds)),
            ];
            publish(&summary, figures, !args.no_table)?;
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
    let spec = bench::LoadSpec::new(
        emu.imds_addr(&node).context("node has an IMDS")?,
        format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com%2F&client_id={client_id}"
        ),
        connections,
        Duration::from_secs(seconds),
    );
    Ok(bench::run(spec).await?)
}
