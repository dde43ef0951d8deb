//! What holds a login shell's start-up output back: a deployfile command says when it begins
//! ([`BEGINS`], printed by [`super::command`]'s wrapper), and what its shell printed before
//! that is no output of the step.

use crate::remote::command::Interpreter;
use crate::remote::frame::START_UP_FILES;
use crate::remote::protocol::BEGINS;
use crate::transport::{Outcome, Sink, Stream};

/// A step's output on its way out: a command in the login shell says when it begins, and what
/// came before on that stream is the shell's start-up output (a banner, a `motd`), not the
/// step's. deployr's own scripts have nothing to wait for.
pub struct Gate {
    /// Whether the step's output comes through the login shell, which says when the command
    /// begins: once per run of the shell (a health check runs it once per attempt).
    login_shell: bool,
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
            login_shell: !open,
            begun: [open, open],
            held: std::collections::VecDeque::new(),
        }
    }

    /// Passes `line` on, holds it back (start-up output), or takes it as a begin line (the
    /// first or a later attempt's), whose text before the marker (a banner with no newline)
    /// is start-up output too.
    pub fn pass(&mut self, stream: Stream, line: String, on_line: &mut dyn Sink) {
        let index = stream as usize;
        if self.login_shell && line.ends_with(BEGINS) {
            self.begun[index] = true;
            self.held.retain(|(held, _)| *held != stream);
            return;
        }
        if self.begun[index] {
            return on_line.line(stream, line);
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
    pub fn finish(&mut self, outcome: Outcome, on_line: &mut dyn Sink) -> Outcome {
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
    pub fn release(&mut self, on_line: &mut dyn Sink) {
        for (stream, line) in self.held.drain(..) {
            on_line.line(stream, line);
        }
    }
}

/// The most start-up output a [`Gate`] holds back.
const HELD_LINES: usize = 20;
