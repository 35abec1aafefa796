//! Drawing free loopback ports for the processes the testbed starts: a small policy of its own
//! (stay below the kernel's outgoing range), apart from running etcd and the apiserver.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Result, io_err};

/// A loopback port nothing listens on right now, for a process started next to bind.
///
/// Drawn below the kernel's range of ports for outgoing connections when there is room there.
/// A port from that range (what binding port 0 gives) can be taken by any outgoing connection
/// before the process it was drawn for binds it, which then fails with "Address already in use";
/// a CI run of the NMI benchmark failed so. Ports below the range are only ever taken by
/// listeners, which the trial bind sees.
pub fn free_port() -> Result<u16> {
    const LOWEST: u16 = 20_000;
    static DRAWN: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low().unwrap_or(32_768);
    if low > LOWEST + 1_000 {
        let span = u64::from(low - LOWEST);
        // Another process drawing at the same time starts elsewhere; threads of this one take
        // turns.
        let start = u64::from(std::process::id()) * 2_654_435_761;
        for _ in 0..256 {
            let n = u64::from(DRAWN.fetch_add(1, Ordering::Relaxed)) * 7_919;
            let port = LOWEST + ((start + n) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free loopback port"))?;
    Ok(l.local_addr().map_err(io_err("reading a bound address"))?.port())
}

/// The first port of the kernel's range for outgoing connections.
pub(super) fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
