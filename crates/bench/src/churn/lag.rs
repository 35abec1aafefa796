//! MIC falling behind while pods come and go (`--pause-mic-ms`): the process is stopped
//! (SIGSTOP) for 0.5–3 s at seeded random moments, then continued. Its watches lag meanwhile, and
//! it then meets a burst of events at once, as after a long GC pause, a CPU-starved node or an
//! apiserver that answers late. Every bound pod must still get its token: the SDK's retries and
//! NMI's wait outlast the pause.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::moments::Moments;

/// The longest a pause lasts.
const MAX_PAUSE: Duration = Duration::from_millis(3000);
/// The shortest.
const MIN_PAUSE: Duration = Duration::from_millis(500);

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill {sig} {pid} failed: {status}");
    }
    Ok(())
}

/// Until `deadline` or `stop`, every `mean` on average (drawn from `seed`), pauses process `pid`.
/// Returns how many pauses it made; the process is always left running.
pub(super) async fn run(
    pid: u32,
    seed: u64,
    mean: Duration,
    deadline: Instant,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<usize> {
    let mut moments = Moments::new(seed ^ 0x006c_6167_6769_6e67, mean, deadline, stop);
    let mut pauses = 0;
    while moments.next().await {
        let pause = MIN_PAUSE + (MAX_PAUSE - MIN_PAUSE).mul_f64(moments.rng.f64());
        signal(pid, "-STOP")?;
        tokio::time::sleep(pause).await;
        signal(pid, "-CONT")?;
        pauses += 1;
    }
    Ok(pauses)
}
