//! A connection to one host, SSH or this machine, and a command on it that waits for `go`: the
//! two look the same from here, so both get the same semantics and output. A third transport,
//! the dry run's, sends nothing: it shows each script where its output would go and answers
//! deployr's own reads from a stand-in host ([`StandIn`]).

use std::sync::Arc;
use std::time::Duration;

use crate::connect_error::ConnectError;
use crate::inventory::{Address, Host};
use crate::local;
use crate::remote::command::Interpreter;
use crate::remote::protocol::{ARMED, DONE, GO, STOP, SWITCHED};
use crate::remote::stand_in::{Read, StandIn};
use crate::ssh;
use crate::transport::{Cancel, Outcome, Sink, Stream, interrupted};

/// A command that is running and waiting for `go` on its standard input.
pub enum Armed {
    /// A local command, and the bound on each wait for it.
    Local(Box<local::Running>, Duration),
    Ssh(ssh::Armed),
    /// A dry run's: it acts at once, and ends well.
    DryRun,
}

impl Armed {
    pub async fn fire(&mut self) -> bool {
        self.tell(GO).await
    }

    /// Reads a fired command until it says it has acted (`None`), or to its end if it stops
    /// first (`Some`: it failed before acting, or acted and ended).
    pub async fn acted(&mut self, on_line: &mut dyn Sink) -> Option<Outcome> {
        match self {
            Armed::Ssh(armed) => armed.wait_for(SWITCHED, on_line).await,
            Armed::DryRun => None,
            Armed::Local(running, bound) => {
                running
                    .pump(Some(SWITCHED), Some(*bound), Cancel::never(), on_line)
                    .await
            }
        }
    }

    /// Lets a command that has acted finish (its checks and exit).
    pub async fn done(&mut self) -> bool {
        self.tell(DONE).await
    }

    /// Calls an armed command off: it reads something other than `go`, undoes its
    /// preparation and exits without acting.
    pub async fn disarm(mut self, on_line: &mut dyn Sink) -> Outcome {
        self.tell(STOP).await;
        self.finish(on_line).await
    }

    /// Reads a fired command to its end.
    pub async fn finish(self, on_line: &mut dyn Sink) -> Outcome {
        match self {
            Armed::Ssh(armed) => armed.finish(on_line).await,
            Armed::DryRun => Outcome::Exited(0),
            Armed::Local(mut running, bound) => running
                .pump(None, Some(bound), Cancel::never(), on_line)
                .await
                .unwrap_or_else(|| Outcome::Lost("stopped early".into())),
        }
    }

    /// Sends one protocol word as a line.
    async fn tell(&mut self, word: &str) -> bool {
        let line = format!("{word}\n");
        match self {
            Armed::Ssh(armed) => armed.tell(line.as_bytes()).await,
            Armed::Local(running, _) => running.send(line.as_bytes()).await,
            Armed::DryRun => true,
        }
    }
}

pub enum Connection {
    Local,
    Ssh(ssh::Session),
    /// `--dry-run`'s transport, for a host or for this machine.
    DryRun(Arc<StandIn>),
}

impl Connection {
    pub async fn open(host: &Host, bastions: &ssh::Bastions) -> Result<Connection, ConnectError> {
        match &host.address {
            Address::Local => Ok(Connection::Local),
            Address::Remote(_) => Ok(Connection::Ssh(ssh::connect(&host.ssh, bastions).await?)),
        }
    }

    /// Runs `script` in the host's shell; `interpreter` says whether it hands a command to
    /// the login shell, whose start-up output is then no step's. `reads` says which of
    /// deployr's reads it is, for a dry run to answer.
    pub async fn exec(
        &self,
        script: &str,
        reads: Option<Read>,
        interpreter: Interpreter,
        timeout: Option<Duration>,
        cancel: Cancel,
        on_line: &mut dyn Sink,
    ) -> Outcome {
        if cancel.is_cancelled() {
            return interrupted();
        }
        match self {
            Connection::Local => local::exec(script, interpreter, timeout, cancel, on_line).await,
            Connection::Ssh(session) => {
                session
                    .exec(script, interpreter, timeout, cancel, on_line)
                    .await
            }
            Connection::DryRun(stand_in) => {
                on_line.would_send(script);
                for line in reads.map(|read| stand_in.answer(read)).unwrap_or_default() {
                    on_line.line(Stream::Stdout, line);
                }
                on_line.flush();
                Outcome::Exited(0)
            }
        }
    }

    /// Starts `script` and waits until it prints `armed`: it is then ready to act the moment
    /// [`Armed::fire`] sends it `go`, with no connection, channel or process to set up. Each
    /// wait on it (getting ready, acting, ending) is bounded by `bound`.
    pub async fn arm(
        &self,
        script: &str,
        bound: Duration,
        cancel: Cancel,
        on_line: &mut dyn Sink,
    ) -> Result<Armed, Outcome> {
        match self {
            Connection::Local => {
                let mut running = local::start(script, true)?;
                match running
                    .pump(Some(ARMED), Some(bound), cancel, on_line)
                    .await
                {
                    None => Ok(Armed::Local(Box::new(running), bound)),
                    Some(outcome) => Err(outcome),
                }
            }
            Connection::Ssh(session) => Ok(Armed::Ssh(
                session.arm(script, ARMED, bound, cancel, on_line).await?,
            )),
            Connection::DryRun(_) => {
                on_line.would_send(script);
                Ok(Armed::DryRun)
            }
        }
    }

    /// Puts a local file at `to` on the host, as a whole or not at all; a dry run shows the
    /// transfer on `on_line`.
    pub async fn upload(
        &self,
        from: &std::path::Path,
        to: &str,
        bound: Duration,
        progress: &mut (dyn FnMut(u64) + Send),
        on_line: &mut dyn Sink,
    ) -> Result<(), String> {
        match self {
            Connection::Local => local::copy(from, to, progress).await,
            Connection::Ssh(session) => session.upload(from, to, bound, progress).await,
            Connection::DryRun(_) => {
                on_line.would_send(&format!("sftp put {} {to}", from.display()));
                Ok(())
            }
        }
    }

    /// What the login shell's start-up files printed before deployr's shell was ready.
    pub fn start_up(&self) -> &[String] {
        match self {
            Connection::Local | Connection::DryRun(_) => &[],
            Connection::Ssh(session) => &session.start_up,
        }
    }

    /// Why this host was cut off (it missed a deadline it could not recover from), if it was.
    pub fn cut_off(&self) -> Option<Outcome> {
        match self {
            Connection::Local | Connection::DryRun(_) => None,
            Connection::Ssh(session) => session.cut_off(),
        }
    }

    pub async fn close(&self) {
        if let Connection::Ssh(session) = self {
            session.close().await;
        }
    }
}
