//! What the runner needs from a host: run a script, stream its lines, report how it ended.
//! SSH and local hosts look the same from here, so both get the same semantics and output.

use std::fmt;
use std::time::Duration;

use crate::inventory::{Address, Host};
use crate::local;
use crate::remote::command::Interpreter;
use crate::remote::frame::START_UP_FILES;
use crate::remote::protocol::{ARMED, BEGINS, DONE, GO, STOP, SWITCHED};
use crate::ssh::{self, ConnectError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(u32),
    Signaled(String),
    TimedOut(Duration),
    /// The connection or process broke before an exit status arrived.
    Lost(String),
}

impl Outcome {
    pub fn success(&self) -> bool {
        *self == Outcome::Exited(0)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Outcome::Exited(0) => write!(f, "ok"),
            Outcome::Exited(code) => write!(f, "exit status {code}"),
            Outcome::Signaled(signal) => write!(f, "killed by signal {signal}"),
            Outcome::TimedOut(after) => {
                write!(f, "timed out after {}", humantime::format_duration(*after))
            }
            Outcome::Lost(reason) => write!(f, "{reason}"),
        }
    }
}

/// Lets Ctrl-C stop running commands: a command that sees it stops its remote process and
/// returns `Outcome::Lost("interrupted")`.
#[derive(Clone)]
pub struct Cancel(Option<tokio::sync::watch::Receiver<bool>>);

impl Cancel {
    pub fn new(receiver: tokio::sync::watch::Receiver<bool>) -> Cancel {
        Cancel(Some(receiver))
    }

    /// For steps that must finish once started, such as switching hosts back.
    pub fn never() -> Cancel {
        Cancel(None)
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|receiver| *receiver.borrow())
    }

    /// Resolves when cancelled; never, for `Cancel::never()`.
    pub async fn cancelled(&mut self) {
        if let Some(receiver) = &mut self.0
            && receiver.wait_for(|cancelled| *cancelled).await.is_ok()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}

/// The signals that stop deployr the careful way: Ctrl-C, a CI system cancelling the job, a
/// closed terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
    Hangup,
}

impl Signal {
    /// The signal's number: the exit code is 128 plus it, as a shell reports a killed command.
    pub fn number(self) -> i32 {
        match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
            Signal::Hangup => libc::SIGHUP,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
        }
    }
}

pub fn interrupted() -> Outcome {
    Outcome::Lost("interrupted".into())
}

/// A command that is running and waiting for `go` on its standard input.
pub enum Armed {
    /// A local command, and the bound on each wait for it.
    Local(Box<local::Running>, Duration),
    Ssh(ssh::Armed),
}

impl Armed {
    pub async fn fire(&mut self) -> bool {
        self.tell(GO).await
    }

    /// Reads a fired command until it says it has acted (`None`), or to its end if it stops
    /// first (`Some`: it failed before acting, or acted and ended).
    pub async fn acted(
        &mut self,
        on_line: &mut (dyn FnMut(Stream, String) + Send),
    ) -> Option<Outcome> {
        match self {
            Armed::Ssh(armed) => armed.wait_for(SWITCHED, on_line).await,
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
    pub async fn disarm(mut self, on_line: &mut (dyn FnMut(Stream, String) + Send)) -> Outcome {
        self.tell(STOP).await;
        self.finish(on_line).await
    }

    /// Reads a fired command to its end.
    pub async fn finish(self, on_line: &mut (dyn FnMut(Stream, String) + Send)) -> Outcome {
        match self {
            Armed::Ssh(armed) => armed.finish(on_line).await,
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
        }
    }
}

/// A step's output on its way out: a command in the login shell says when it begins, and what
/// came before on that stream is the shell's start-up output (a banner, a `motd`), not the
/// step's. deployr's own scripts have nothing to wait for.
pub struct Gate {
    /// Whether the command began, on stdout and on stderr.
    begun: [bool; 2],
    /// Start-up output so far, the last [`HELD_LINES`] lines: shown if the command never
    /// began, to say why.
    held: std::collections::VecDeque<(Stream, String)>,
}

impl Gate {
    pub fn new(interpreter: Interpreter) -> Gate {
        let open = interpreter == Interpreter::DeployrSh;
        Gate {
            begun: [open, open],
            held: std::collections::VecDeque::new(),
        }
    }

    /// Passes `line` on, holds it back (start-up output), or takes it as the begin line, whose
    /// text before the marker (a banner with no newline) is start-up output too.
    pub fn pass(
        &mut self,
        stream: Stream,
        line: String,
        on_line: &mut (dyn FnMut(Stream, String) + Send),
    ) {
        let index = stream as usize;
        if self.begun[index] {
            return on_line(stream, line);
        }
        if line.ends_with(BEGINS) {
            self.begun[index] = true;
            self.held.retain(|(held, _)| *held != stream);
            return;
        }
        if self.held.len() == HELD_LINES {
            self.held.pop_front();
        }
        self.held.push_back((stream, line));
    }

    pub fn begun(&self) -> bool {
        self.begun == [true, true]
    }

    /// How the step ended, given how its shell did: a command that never began failed, even
    /// with exit status 0 (a start-up file that exits), and what was held back is shown.
    pub fn finish(
        &mut self,
        outcome: Outcome,
        on_line: &mut (dyn FnMut(Stream, String) + Send),
    ) -> Outcome {
        if self.begun() {
            return outcome;
        }
        self.release(on_line);
        match outcome {
            Outcome::Exited(0) => Outcome::Lost(format!(
                "the login shell ended before the command began: a start-up file ({}) exits",
                START_UP_FILES
            )),
            outcome => outcome,
        }
    }

    /// What was held back, passed on after all: the command never began.
    pub fn release(&mut self, on_line: &mut (dyn FnMut(Stream, String) + Send)) {
        for (stream, line) in self.held.drain(..) {
            on_line(stream, line);
        }
    }
}

/// The most start-up output a [`Gate`] holds back.
const HELD_LINES: usize = 20;

pub enum Connection {
    Local,
    Ssh(ssh::Session),
}

impl Connection {
    pub async fn open(host: &Host, bastions: &ssh::Bastions) -> Result<Connection, ConnectError> {
        match &host.address {
            Address::Local => Ok(Connection::Local),
            Address::Remote(_) => Ok(Connection::Ssh(ssh::connect(&host.ssh, bastions).await?)),
        }
    }

    /// Runs `script` in the host's shell; `interpreter` says whether it hands a command to
    /// the login shell, whose start-up output is then no step's.
    pub async fn exec(
        &self,
        script: &str,
        interpreter: Interpreter,
        timeout: Option<Duration>,
        cancel: Cancel,
        on_line: &mut (dyn FnMut(Stream, String) + Send),
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
        on_line: &mut (dyn FnMut(Stream, String) + Send),
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
        }
    }

    /// Puts a local file at `to` on the host, as a whole or not at all.
    pub async fn upload(
        &self,
        from: &std::path::Path,
        to: &str,
        bound: Duration,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(), String> {
        match self {
            Connection::Local => local::copy(from, to, progress).await,
            Connection::Ssh(session) => session.upload(from, to, bound, progress).await,
        }
    }

    /// What the login shell's start-up files printed before deployr's shell was ready.
    pub fn start_up(&self) -> &[String] {
        match self {
            Connection::Local => &[],
            Connection::Ssh(session) => &session.start_up,
        }
    }

    /// Why this host was cut off (it missed a deadline it could not recover from), if it was.
    pub fn cut_off(&self) -> Option<Outcome> {
        match self {
            Connection::Local => None,
            Connection::Ssh(session) => session.cut_off(),
        }
    }

    pub async fn close(&self) {
        if let Connection::Ssh(session) = self {
            session.close().await;
        }
    }
}
