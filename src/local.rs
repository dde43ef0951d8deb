//! `address = "local"`, local steps and the build: the same scripts run by `sh` on this machine,
//! no SSH involved. A script holds the exported `[env]`, secrets included, so it never goes into
//! `sh`'s arguments (`/proc/PID/cmdline` is readable by every local user): `sh` finds it in its
//! environment (`/proc/PID/environ` is readable only by its owner), takes it out and runs it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use crate::lines::LineSplitter;
use crate::remote::command::Interpreter;
use crate::remote::gate::Gate;
use crate::transport::{Cancel, Outcome, Sink, Stream, interrupted};

/// A started `sh -c`, read as it runs.
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout_pipe: ChildStdout,
    stderr_pipe: ChildStderr,
    stdout: LineSplitter,
    stderr: LineSplitter,
    out_open: bool,
    err_open: bool,
}

/// The variable that carries the script to `sh`; unset before the script runs, so that the
/// commands it starts do not inherit it.
const SCRIPT_VARIABLE: &str = "DEPLOYR_SCRIPT";

pub fn start(script: &str, with_stdin: bool) -> Result<Running, Outcome> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "deployr_script=${SCRIPT_VARIABLE}; unset {SCRIPT_VARIABLE}; eval \"$deployr_script\""
        ))
        .env(SCRIPT_VARIABLE, script)
        .stdin(if with_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| Outcome::Lost(format!("cannot start sh: {error}")))?;
    Ok(Running {
        stdin: child.stdin.take(),
        stdout_pipe: child.stdout.take().expect("piped stdout"),
        stderr_pipe: child.stderr.take().expect("piped stderr"),
        child,
        stdout: LineSplitter::default(),
        stderr: LineSplitter::default(),
        out_open: true,
        err_open: true,
    })
}

pub async fn exec(
    script: &str,
    interpreter: Interpreter,
    timeout: Option<Duration>,
    cancel: Cancel,
    on_line: &mut dyn Sink,
) -> Outcome {
    let mut running = match start(script, false) {
        Ok(running) => running,
        Err(outcome) => return outcome,
    };
    let mut gated = Gated {
        gate: Gate::new(interpreter),
        sink: on_line,
    };
    let outcome = running
        .pump(None, timeout, cancel, &mut gated)
        .await
        .unwrap_or_else(|| Outcome::Lost("stopped early".into()));
    gated.gate.finish(outcome, gated.sink)
}

/// A sink behind a [`Gate`]: lines pass through the gate, chunk ends go straight on.
struct Gated<'a> {
    gate: Gate,
    sink: &'a mut dyn Sink,
}

impl Sink for Gated<'_> {
    fn line(&mut self, stream: Stream, line: String) {
        self.gate.pass(stream, line, self.sink)
    }

    fn flush(&mut self) {
        self.sink.flush()
    }
}

impl Running {
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        match &mut self.stdin {
            Some(stdin) => stdin.write_all(bytes).await.is_ok() && stdin.flush().await.is_ok(),
            None => false,
        }
    }

    /// Reads the command's output until it ends (`Some`), or until it prints the line `until`
    /// (`None`; the command keeps running).
    pub async fn pump(
        &mut self,
        until: Option<&str>,
        timeout: Option<Duration>,
        mut cancel: Cancel,
        on_line: &mut dyn Sink,
    ) -> Option<Outcome> {
        let pid = self.child.id();
        let deadline =
            tokio::time::Instant::now() + timeout.unwrap_or(Duration::from_secs(u32::MAX as u64));
        let mut reached = false;
        let mut out_buf = [0u8; 8192];
        let mut err_buf = [0u8; 8192];
        while self.out_open || self.err_open {
            // Output the screen has not taken yet holds further reading back (see `BACKLOG`).
            tokio::select! {
                _ = crate::lines::BACKLOG.room() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Some(self.stop(pid, Outcome::TimedOut(timeout.unwrap_or_default())).await);
                }
                _ = cancel.cancelled() => return Some(self.stop(pid, interrupted()).await),
            }
            tokio::select! {
                read = self.stdout_pipe.read(&mut out_buf), if self.out_open => match read {
                    Ok(0) | Err(_) => self.out_open = false,
                    Ok(n) => self.stdout.push(&out_buf[..n], &mut |line| {
                        if until == Some(line.as_str()) {
                            reached = true;
                        } else {
                            on_line.line(Stream::Stdout, line)
                        }
                    }),
                },
                read = self.stderr_pipe.read(&mut err_buf), if self.err_open => match read {
                    Ok(0) | Err(_) => self.err_open = false,
                    Ok(n) => self.stderr.push(&err_buf[..n], &mut |line| on_line.line(Stream::Stderr, line)),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Some(self.stop(pid, Outcome::TimedOut(timeout.unwrap_or_default())).await);
                }
                _ = cancel.cancelled() => return Some(self.stop(pid, interrupted()).await),
            }
            // The lines of this read go on together.
            on_line.flush();
            if reached {
                return None;
            }
        }
        self.stdout
            .finish(&mut |line| on_line.line(Stream::Stdout, line));
        self.stderr
            .finish(&mut |line| on_line.line(Stream::Stderr, line));
        self.stdin = None;
        let status = tokio::select! {
            status = self.child.wait() => status,
            _ = tokio::time::sleep_until(deadline) => {
                return Some(self.stop(pid, Outcome::TimedOut(timeout.unwrap_or_default())).await);
            }
            _ = cancel.cancelled() => return Some(self.stop(pid, interrupted()).await),
        };
        Some(match status {
            Ok(status) => match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(code), _) => Outcome::Exited(code as u32),
                (None, Some(signal)) => Outcome::Signaled(signal_name(signal)),
                (None, None) => Outcome::Lost("sh ended without a status".into()),
            },
            Err(error) => Outcome::Lost(format!("cannot wait for sh: {error}")),
        })
    }

    /// The script may have started children of its own; a timeout or Ctrl-C stops all of them.
    async fn stop(&mut self, pid: Option<u32>, outcome: Outcome) -> Outcome {
        if let Some(pid) = pid {
            // SAFETY: kill(2) with a negative pid signals the process group made for the child.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
        let _ = self.child.wait().await;
        outcome
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGTERM => "TERM".into(),
        libc::SIGKILL => "KILL".into(),
        libc::SIGINT => "INT".into(),
        libc::SIGHUP => "HUP".into(),
        other => other.to_string(),
    }
}

/// The local host's upload: a copy, to `to.part` and then renamed, like an SFTP upload.
pub async fn copy(
    from: &std::path::Path,
    to: &str,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<(), String> {
    let partial = format!("{to}.part");
    if let Some(dir) = std::path::Path::new(to).parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    }
    let copied = tokio::fs::copy(from, &partial)
        .await
        .map_err(|error| format!("cannot copy {} to {partial}: {error}", from.display()))?;
    tokio::fs::rename(&partial, to)
        .await
        .map_err(|error| format!("cannot rename {partial} to {to}: {error}"))?;
    progress(copied);
    Ok(())
}
