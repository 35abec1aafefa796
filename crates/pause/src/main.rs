//! The pod sandbox container's program (what `registry.k8s.io/pause` is elsewhere): it holds the
//! pod's namespaces open and does nothing until it is told to stop. No image can be pulled in the
//! sandbox, so `make images` packs this one as `docker.io/pod-identity/pause`.
//!
//! As PID 1 of its container it must handle SIGTERM/SIGINT itself: the kernel ignores signals
//! without a handler for a namespace's init process, and the runtime would wait out its grace.

use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
