//! The words every host connection speaks: which stream a line came on, how a command ended,
//! and how it is stopped (Ctrl-C, a signal).

use std::fmt;
use std::time::Duration;

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

/// Where a running command's lines go. They arrive a chunk at a time (what one read from the
/// host brought); `flush` ends a chunk, so a sink may pass the chunk's lines on together
/// instead of one by one. Any `FnMut(Stream, String)` is a sink that needs no flush.
pub trait Sink: Send {
    fn line(&mut self, stream: Stream, line: String);
    fn flush(&mut self) {}
    /// What a dry run would have sent (a script, a transfer), shown instead of sent.
    fn would_send(&mut self, _script: &str) {}
}

impl<F: FnMut(Stream, String) + Send> Sink for F {
    fn line(&mut self, stream: Stream, line: String) {
        self(stream, line)
    }
}

pub fn interrupted() -> Outcome {
    Outcome::Lost("interrupted".into())
}
