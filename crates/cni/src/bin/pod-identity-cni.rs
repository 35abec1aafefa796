//! The plugin binary the container runtime executes (from the CNI bin directory, where NMI copies
//! it): the command from `CNI_COMMAND`, the network configuration from stdin, the answer on stdout
//! (the library's `plugin` module says what each command does).

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    // An unreadable stdin is an undecodable configuration: `run` answers that (and DEL still succeeds).
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let command = std::env::var("CNI_COMMAND").ok();
    let boot_id = cni::ready::boot_id();
    let reply = cni::plugin::run(command.as_deref(), &stdin, &|file| {
        cni::ready::check(file, &boot_id)
    });
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(reply.stdout.as_bytes());
    let _ = out.flush();
    ExitCode::from(reply.exit_code)
}
