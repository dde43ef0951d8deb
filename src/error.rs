//! The errors a command can end with. Each says what went wrong in the operator's words; `main`
//! maps them to the exit codes of the design in one place.

use crate::deployfile::DeployfileError;
use crate::executor::{ConnectFailure, StepFailure};
use crate::inventory::SelectionError;
use crate::plan::QuoteError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Deployfile(#[from] DeployfileError),
    #[error("{0}")]
    Selection(#[from] SelectionError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Quote(#[from] QuoteError),
    #[error("{}", connect_failures(.0))]
    Connect(Vec<ConnectFailure>),
    #[error("{}", step_failures(.0))]
    StepFailed(Vec<StepFailure>),
    #[error("{what} failed on {}", .hosts.join(", "))]
    CheckFailed { what: String, hosts: Vec<String> },
    #[error("{0}")]
    InvalidRef(#[from] crate::refname::InvalidRef),
    #[error("{0}")]
    InvalidRelease(#[from] crate::release_id::InvalidId),
    /// A precondition does not hold (hosts disagree, nothing to roll back to); nothing changed.
    #[error("{0}")]
    Refused(String),
    /// Something failed after the switch had begun, and every host that may have switched went
    /// back.
    #[error("switching to {release} failed, so every host that had switched was switched back to the release it served before\n{}{}",
        step_failures(.failures), restore_problems(.restore_failures))]
    RolledBack {
        release: String,
        failures: Vec<StepFailure>,
        restore_failures: Vec<StepFailure>,
    },
    #[error("the deploy lock is held: {}; nothing was changed. Wait, pass --lock-wait 5m, or clear a stale lock with `deployr unlock`",
        .holders.iter().map(|(host, holder)| format!("{host} by {holder}")).collect::<Vec<_>>().join(", "))]
    Locked { holders: Vec<(String, String)> },
    #[error(
        "interrupted by {}; the commands that were running were stopped, nothing was switched, and the deploy lock released", .0.name()
    )]
    Interrupted(crate::transport::Signal),
    /// Hosts are on different releases and deployr could not bring them together.
    #[error("switching to {release} failed, and not every host could be switched back: the hosts are on DIFFERENT RELEASES now\n{}\n  switched back: {}\n  not switched back:\n{}\nMake them agree with:\n  {fix}",
        step_failures(.failures),
        if .back.is_empty() { "none".to_string() } else { .back.join(", ") },
        .left.iter().map(|(host, state)| format!("    {host}: {state}")).collect::<Vec<_>>().join("\n"))]
    Diverged {
        release: String,
        failures: Vec<StepFailure>,
        back: Vec<String>,
        /// Each host that did not go back, and what is known of it.
        left: Vec<(String, String)>,
        fix: String,
    },
    /// Every host is on the release and healthy, but recording it failed somewhere.
    #[error("{release} is live on every selected host, but recording the activation (history, journal, lock) failed:\n  {}\nThe next `deployr activate` finishes the record; if a lock remains, `deployr unlock` removes it",
        .failures.iter().map(|f| format!("{}: {}", f.host, f.outcome)).collect::<Vec<_>>().join("\n  "))]
    Unrecorded {
        release: String,
        failures: Vec<StepFailure>,
    },
    /// `deployr unlock` found a lock whose holder is still running on this machine.
    #[error("{0}")]
    HolderAlive(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Done on every host that could be reached; `--allow-unreachable` let these be left out.
    #[error("done on the reachable hosts, but {} unreachable host{} {} LEFT OUT (--allow-unreachable): {}\nWhen they answer again, `deployr status` shows whether they need `deployr catch-up`",
        .0.len(), if .0.len() == 1 { "" } else { "s" }, if .0.len() == 1 { "was" } else { "were" },
        .0.iter().map(|f| format!("{}: {}", f.host, f.error)).collect::<Vec<_>>().join("; "))]
    LeftOut(Vec<ConnectFailure>),
}

impl Error {
    /// Whether this is only that the reader of deployr's output went away (a closed pipe): the
    /// command did its work, and there is no one left to tell anything.
    pub fn is_closed_output(&self) -> bool {
        matches!(self, Error::Io(error) if error.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// The exit codes of the design, in one place.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::StepFailed(_)
            | Error::CheckFailed { .. }
            | Error::Refused(_)
            | Error::Unrecorded { .. }
            | Error::Io(_) => 1,
            Error::Deployfile(_)
            | Error::Selection(_)
            | Error::Usage(_)
            | Error::Quote(_)
            | Error::InvalidRef(_)
            | Error::InvalidRelease(_) => 2,
            Error::Connect(_) => 3,
            Error::Locked { .. } | Error::HolderAlive(_) => 4,
            Error::RolledBack { .. } => 5,
            Error::LeftOut(_) => 6,
            Error::Diverged { .. } => 7,
            Error::Interrupted(signal) => 128 + signal.number() as u8,
        }
    }
}

fn restore_problems(failures: &[StepFailure]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    format!(
        "\nWARNING: restoring failed too; these hosts need a look:\n{}",
        step_failures(failures)
    )
}

fn connect_failures(failures: &[ConnectFailure]) -> String {
    let lines: Vec<String> = failures
        .iter()
        .map(|f| format!("{}: {}", f.host, f.error))
        .collect();
    format!(
        "cannot connect to {} of the selected hosts; nothing was run anywhere\n  {}",
        failures.len(),
        lines.join("\n  ")
    )
}

fn step_failures(failures: &[StepFailure]) -> String {
    let step = failures.first().map_or("", |f| f.step.as_str());
    let lines: Vec<String> = failures
        .iter()
        .map(|f| format!("{}: {}", f.host, f.outcome))
        .collect();
    let on = match failures {
        [only] if only.host == crate::executor::Target::ThisMachine => {
            "this machine (a local step)".to_string()
        }
        _ => format!(
            "{} host{}",
            failures.len(),
            if failures.len() == 1 { "" } else { "s" }
        ),
    };
    format!(
        "step `{step}` failed on {on}; later steps did not run\n  {}",
        lines.join("\n  ")
    )
}
