//! `address = "local"`: the same scripts run with `sh -c` on this machine, no SSH involved.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::transport::{Cancel, LineSplitter, Outcome, Stream, interrupted};

pub async fn exec(
    script: &str,
    timeout: Option<Duration>,
    mut cancel: Cancel,
    on_line: &mut (dyn FnMut(Stream, String) + Send),
) -> Outcome {
    let mut child = match Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => return Outcome::Lost(format!("cannot start sh: {error}")),
    };
    let pid = child.id();
    let mut stdout_pipe = child.stdout.take().expect("piped stdout");
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let mut stdout = LineSplitter::default();
    let mut stderr = LineSplitter::default();
    let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 8192]);
    let (mut out_open, mut err_open) = (true, true);
    let deadline =
        tokio::time::Instant::now() + timeout.unwrap_or(Duration::from_secs(u32::MAX as u64));
    while out_open || err_open {
        tokio::select! {
            read = stdout_pipe.read(&mut out_buf), if out_open => match read {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => stdout.push(&out_buf[..n], &mut |line| on_line(Stream::Stdout, line)),
            },
            read = stderr_pipe.read(&mut err_buf), if err_open => match read {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => stderr.push(&err_buf[..n], &mut |line| on_line(Stream::Stderr, line)),
            },
            _ = tokio::time::sleep_until(deadline) => {
                kill_group(pid);
                let _ = child.wait().await;
                return Outcome::TimedOut(timeout.unwrap_or_default());
            }
            _ = cancel.cancelled() => {
                kill_group(pid);
                let _ = child.wait().await;
                return interrupted();
            }
        }
    }
    stdout.finish(&mut |line| on_line(Stream::Stdout, line));
    stderr.finish(&mut |line| on_line(Stream::Stderr, line));
    let status = tokio::select! {
        status = child.wait() => status,
        _ = tokio::time::sleep_until(deadline) => {
            kill_group(pid);
            let _ = child.wait().await;
            return Outcome::TimedOut(timeout.unwrap_or_default());
        }
        _ = cancel.cancelled() => {
            kill_group(pid);
            let _ = child.wait().await;
            return interrupted();
        }
    };
    match status {
        Ok(status) => match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => Outcome::Exited(code as u32),
            (None, Some(signal)) => Outcome::Signaled(signal_name(signal)),
            (None, None) => Outcome::Lost("sh ended without a status".into()),
        },
        Err(error) => Outcome::Lost(format!("cannot wait for sh: {error}")),
    }
}

/// The script may have started children of its own; a timeout stops all of them.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
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
