//! Load runs with the generator and the server on separate cores.
//!
//! On a two-core machine a load generator and the server it measures otherwise preempt each
//! other: four busy threads on two cores, so a request now and then waits out the other process's
//! time slice (milliseconds) and the tail measures the kernel's scheduler. Here the generator runs
//! as a child `bench load-worker` under `taskset -c <cpu>` with one thread, and the server is
//! started under `taskset` on the other core (tokio then sizes its runtime to that one core).

use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The cores for the generator and the server, when the machine has two or more.
pub fn cores() -> Option<(usize, usize)> {
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    (n >= 2).then_some((0, 1))
}

/// `cmd` prefixed with `taskset -c <cpu>`.
pub fn on_cpu(cpu: usize, program: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string()).arg(program);
    cmd
}

/// Runs `spec` in a child generator pinned to `cpu`.
pub async fn run(spec: &bench::LoadSpec, cpu: usize) -> anyhow::Result<bench::LoadReport> {
    let me = std::env::current_exe().context("locating the bench binary")?;
    let mut child = tokio::process::Command::from(on_cpu(cpu, &me))
        .arg("load-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the pinned load generator (taskset, from util-linux)")?;
    let mut stdin = child.stdin.take().context("generator stdin")?;
    stdin.write_all(&serde_json::to_vec(spec)?).await?;
    drop(stdin);
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .context("generator stdout")?
        .read_to_end(&mut out)
        .await?;
    let status = child.wait().await?;
    if !status.success() {
        bail!("the pinned load generator failed ({status})");
    }
    serde_json::from_slice(&out).context("reading the generator's report")
}

/// `bench load-worker`: one spec from stdin, its report to stdout, on a one-thread runtime.
pub fn worker() -> anyhow::Result<()> {
    let mut input = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)?;
    let spec: bench::LoadSpec = serde_json::from_slice(&input).context("reading the load spec")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(bench::run(spec))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
