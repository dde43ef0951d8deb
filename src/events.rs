//! What the executor tells the reporter: typed events, sent through [`Events`]. Host tasks
//! never print; they send these, and the reporter (the one owner of the screen) shows them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::transport::{Outcome, Stream};

#[derive(Debug, Clone)]
pub struct Event {
    pub time: DateTime<Utc>,
    /// The wave of a canary activation the event belongs to; none outside one.
    pub wave: Option<Wave>,
    pub kind: EventKind,
}

/// The two waves of `activate --canary`: the canaries, then every other host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wave {
    Canary,
    Rest,
}

impl Wave {
    pub fn name(self) -> &'static str {
        match self {
            Wave::Canary => "canary",
            Wave::Rest => "rest",
        }
    }
}

#[derive(Debug, Clone)]
pub enum EventKind {
    /// The first event of a command that connects.
    RunStarted {
        command: String,
        hosts: Vec<String>,
    },
    Connected {
        host: String,
        duration: Duration,
    },
    ConnectFailed {
        host: String,
        error: String,
    },
    /// A line the login shell's start-up files printed before deployr's shell was ready: no
    /// step's output, so it is shown only with `-v`.
    StartUpOutput {
        host: String,
        line: String,
    },
    StepStarted {
        host: String,
        step: String,
    },
    /// Lines a step printed on one host, in order: what one read from the host brought. Host
    /// and step are shared, not copied, and lines travel together: a step may print millions.
    Output {
        host: Arc<str>,
        step: Arc<str>,
        lines: Vec<(Stream, String)>,
    },
    /// `--dry-run`: what a step would send to a host (or run on this machine), instead of
    /// sending it.
    WouldRun {
        host: String,
        step: String,
        script: String,
    },
    /// Bytes of an upload sent so far: at most one event per MiB, and one at the end.
    Transferred {
        host: String,
        step: String,
        sent: u64,
        total: u64,
    },
    StepFinished {
        host: String,
        step: String,
        outcome: Outcome,
        duration: Duration,
    },
    /// A step whose roles match no selected host.
    StepSkipped {
        step: String,
    },
    /// A sentence for the operator that belongs to no single step.
    Notice {
        text: String,
    },
    /// The deploy lock is held on `host`; deployr tries again (`--lock-wait`) for at most
    /// `remaining`.
    LockWaiting {
        host: String,
        holder: String,
        remaining: Duration,
    },
    /// One release on a host, for `deployr releases`.
    Release {
        host: String,
        release: String,
        commit: String,
        /// Which of `current`, `previous`, `prepared`, `incomplete` it is.
        marks: Vec<&'static str>,
    },
    /// An activation or rollback completed on every host.
    Activated {
        release: String,
        hosts: usize,
        /// From the start of the first activate step to the last host done (health checked).
        window: Duration,
        /// From the first to the last host switched.
        skew: Duration,
    },
    /// What `deployr diff` found for one live commit.
    Diff(Box<crate::diff::Diff>),
    /// One command of `deployr history`'s merged timeline.
    History(Box<crate::history::Entry>),
    /// What `deployr check` found on a host, one (name, finding) pair per column.
    Probed {
        host: String,
        facts: Vec<(String, String)>,
    },
}

/// Where output lines come from: one host's step.
pub struct Source {
    host: Arc<str>,
    step: Arc<str>,
}

impl Source {
    pub fn new(host: &str, step: &str) -> Source {
        Source {
            host: host.into(),
            step: step.into(),
        }
    }
}

/// How host tasks talk to the reporter. Sending never blocks and never fails the run: a reporter
/// that has gone away only means nobody is watching.
#[derive(Clone)]
pub struct Events {
    sender: mpsc::UnboundedSender<Event>,
    /// The wave running now, shared by every handle: waves run one after the other, and every
    /// event sent meanwhile, from any task, belongs to it.
    wave: Arc<Mutex<Option<Wave>>>,
}

impl Events {
    /// A new channel to one reporter: its sending handle and the receiving end.
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let events = Events {
            sender,
            wave: Arc::new(Mutex::new(None)),
        };
        (events, receiver)
    }

    pub fn send(&self, kind: EventKind) {
        let wave = *self.wave.lock().expect("wave");
        self.send_in(wave, kind);
    }

    /// Sends an event that belongs to `wave`, whichever wave is running.
    pub fn send_in(&self, wave: Option<Wave>, kind: EventKind) {
        let _ = self.sender.send(Event {
            time: Utc::now(),
            wave,
            kind,
        });
    }

    /// Marks every event from now on as part of `wave` (none: outside the waves).
    pub fn set_wave(&self, wave: Option<Wave>) {
        *self.wave.lock().expect("wave") = wave;
    }

    pub fn step_started(&self, host: &str, step: &str) {
        self.send(EventKind::StepStarted {
            host: host.to_string(),
            step: step.to_string(),
        });
    }

    pub fn output(&self, host: &str, step: &str, stream: Stream, line: String) {
        self.output_of(&Source::new(host, step), stream, line);
    }

    /// A line printed by `source`, which a host task makes once per step.
    pub fn output_of(&self, source: &Source, stream: Stream, line: String) {
        self.output_lines(source, vec![(stream, line)]);
    }

    /// Lines printed by `source`, together.
    pub fn output_lines(&self, source: &Source, lines: Vec<(Stream, String)>) {
        if lines.is_empty() {
            return;
        }
        crate::lines::BACKLOG.queued(&lines);
        let wave = *self.wave.lock().expect("wave");
        let event = Event {
            time: Utc::now(),
            wave,
            kind: EventKind::Output {
                host: source.host.clone(),
                step: source.step.clone(),
                lines,
            },
        };
        if let Err(unsent) = self.sender.send(event)
            && let EventKind::Output { lines, .. } = &unsent.0.kind
        {
            crate::lines::BACKLOG.shown(lines);
        }
    }

    /// What `source` would run, in a dry run.
    pub fn would_run(&self, source: &Source, script: &str) {
        self.send(EventKind::WouldRun {
            host: source.host.to_string(),
            step: source.step.to_string(),
            script: script.to_string(),
        });
    }

    pub fn step_finished(&self, host: &str, step: &str, outcome: &Outcome, duration: Duration) {
        self.send(EventKind::StepFinished {
            host: host.to_string(),
            step: step.to_string(),
            outcome: outcome.clone(),
            duration,
        });
    }
}
