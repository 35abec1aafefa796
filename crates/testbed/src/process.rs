use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Result, io_err};

/// A long-running process (etcd, kube-apiserver, a service under test) that
/// cannot outlive the test process.
///
/// It runs under `sh`, which holds the read end of a pipe from us and kills
/// the process as soon as that pipe closes: when this value is dropped, when
/// a test panics, and when the test process exits or is killed. No signal
/// handling or unsafe `pre_exec` is needed for that.
///
/// The same shell removes the pid file afterwards and, when the process was
/// orphaned rather than stopped, the directory it was given to clean up (see
/// [`Supervised::spawn_cleaning`]).
#[derive(Debug)]
pub struct Supervised {
    name: String,
    shell: Child,
    lifeline: Option<ChildStdin>,
    pid_file: PathBuf,
    log: PathBuf,
}

// `read` succeeds on the newline `stop` writes and fails at end of file, which is how the shell
// learns that its owner died without stopping it. The shell exits with the process's status
// (128 + the signal for one killed), which `exit_code` reports.
const SUPERVISOR: &str = r#"pidf=$1; orphan_dir=$2; shift 2
"$@" </dev/null &
child=$!
echo "$child" > "$pidf"
if read -r _ignored; then orphan_dir=; fi
kill -TERM "$child" 2>/dev/null
# A process that does not stop within 10 s of SIGTERM (kube-apiserver waiting for an etcd
# that is already gone) is killed.
i=0
while kill -0 "$child" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
kill -KILL "$child" 2>/dev/null
wait "$child"
status=$?
rm -f "$pidf"
if [ -n "$orphan_dir" ]; then rm -rf "$orphan_dir"; fi
exit "$status""#;

impl Supervised {
    /// Starts `program args…`, sending its stdout and stderr to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self> {
        Self::spawn_with(name, Command::new(program).args(args), log)
    }

    /// Starts a prepared command (its program, arguments and environment are
    /// used; its stdio is replaced).
    pub fn spawn_with(name: &str, cmd: &Command, log: &Path) -> Result<Self> {
        Self::spawn_cleaning(name, cmd, log, None)
    }

    /// Like [`Supervised::spawn_with`], and when the owner dies without stopping the process
    /// (a test binary ending with the server in a `static`, or killed), `orphan_dir` is removed
    /// once the process has exited. A stopped process leaves it to its owner, which may restart
    /// the process on the same data.
    pub fn spawn_cleaning(name: &str, cmd: &Command, log: &Path, orphan_dir: Option<&Path>) -> Result<Self> {
        let pid_file = log.with_extension("pid");
        let out = File::create(log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("cloning a log handle"))?;
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(SUPERVISOR)
            .arg("podid-supervise")
            .arg(&pid_file)
            .arg(orphan_dir.unwrap_or(Path::new("")));
        sh.arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            sh.current_dir(dir);
        }
        let mut shell = sh
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(format!(
                "starting {name} ({})",
                cmd.get_program().to_string_lossy()
            )))?;
        let lifeline = shell.stdin.take();
        Ok(Self {
            name: name.to_owned(),
            shell,
            lifeline,
            pid_file,
            log: log.to_owned(),
        })
    }

    /// The process's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid of the supervised process itself (not of its shell), once it has started.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.shell.try_wait(), Ok(None))
    }

    /// How the process ended, once it has: its exit code, or 128 + the signal that ended it
    /// (143 for SIGTERM it did not handle, 137 for the SIGKILL sent 10 s after an unheeded
    /// SIGTERM). `None` while it runs, or after [`Supervised::kill`].
    pub fn exit_code(&mut self) -> Option<i32> {
        self.shell.try_wait().ok().flatten().and_then(|s| s.code())
    }

    /// The log so far (the last 8 KiB), for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(8192);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Asks the process to stop (SIGTERM), waits up to `grace`, then kills it.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut l) = self.lifeline.take() {
            // A newline wakes `read` at once; dropping the pipe does the same.
            let _ = l.write_all(b"\n");
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        self.lifeline.take();
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(dir: &Path) -> Supervised {
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let s = Supervised::spawn_cleaning("sleep", &cmd, &dir.join("sleep.log"), Some(dir)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.pid().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(s.pid().is_some(), "the process never started");
        s
    }

    #[test]
    fn an_orphaned_process_takes_its_directory_with_it_and_a_stopped_one_leaves_it() {
        let orphaned = tempfile::tempdir().unwrap().keep();
        let mut s = sleeper(&orphaned);
        // What the owner's death looks like to the shell: the pipe closes without a newline.
        drop(s.lifeline.take());
        let _ = s.shell.wait();
        assert!(!orphaned.exists(), "{} was left behind", orphaned.display());

        let kept = tempfile::tempdir().unwrap();
        let mut s = sleeper(kept.path());
        let pid_file = s.pid_file.clone();
        s.stop(Duration::from_secs(10));
        assert!(
            kept.path().join("sleep.log").exists(),
            "a stopped process's directory is its owner's"
        );
        assert!(!pid_file.exists(), "the pid file outlived the process");
        assert_eq!(s.exit_code(), Some(143), "sleep ends on the SIGTERM");
    }

    #[test]
    fn a_process_that_stops_on_sigterm_by_itself_reports_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"trap "exit 3" TERM; touch "$0"; while :; do sleep 0.05; done"#,
        ])
        .arg(&ready);
        let mut s = Supervised::spawn_with("trap", &cmd, &dir.path().join("trap.log")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "the shell never set its trap");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(s.exit_code(), None, "still running");
        s.stop(Duration::from_secs(30));
        assert_eq!(s.exit_code(), Some(3));
    }
}
