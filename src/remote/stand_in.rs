//! What `--dry-run` answers when a command reads a host it does not contact: a stand-in host,
//! the same on every selected host, written in the very lines the read scripts print, so that
//! the command's own parsing and decisions run as in a real run.
//!
//! The stand-in host is set up and not locked. It serves `current`, made a day before this
//! invocation, activated from `kept` (two days before), which it still keeps; `prepared`, made an
//! hour before, is prepared and complete but not live. A release the command line names
//! (`activate --release`, `rollback --to`) is on it and complete too. A ref resolves to
//! [`RESOLVED`]; the probe of `deployr check` finds nothing wrong; `diff` finds nothing to
//! compare. So `activate` switches to `prepared`, `rollback` to `kept`, `prepare` and `deploy`
//! make a release named by the invocation's own time, and `catch-up` finds nothing behind.

use crate::history::{Outcome, Record};
use crate::release_id::new_id;
use crate::remote::protocol::{prepared as marker, probe, state as key};

/// Which of deployr's own reads a step is: its standard output goes back to the command,
/// which parses it; a dry run answers it from the stand-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The state script (`remote::state`).
    State,
    /// The lock script: takes the lock, then prints the state.
    Lock,
    /// `resolve`: the commit a ref names (and, with uploads, its time).
    Commit,
    /// `deployr check`'s probe (`remote::check`).
    Probe,
    /// `deployr diff`'s comparison (`remote::diff`).
    Diff,
}

/// The commit every ref resolves to in a dry run.
pub const RESOLVED: &str = "4444444444444444444444444444444444444444";

#[derive(Debug, Clone)]
pub struct StandIn {
    /// What the state script prints on the stand-in host.
    state: Vec<String>,
}

impl StandIn {
    /// The stand-in for an invocation started at `now`, whose source deploys `reference` and
    /// whose command line names `named`, if it names a release.
    pub fn new(now: chrono::DateTime<chrono::Utc>, reference: &str, named: Option<&str>) -> Self {
        let id = |ago: chrono::Duration| new_id(now - ago);
        let kept = (id(chrono::Duration::days(2)), "1".repeat(40));
        let current = (id(chrono::Duration::days(1)), "2".repeat(40));
        let prepared = (id(chrono::Duration::hours(1)), "3".repeat(40));
        let mut releases = vec![kept.clone(), current.clone(), prepared.clone()];
        if let Some(named) = named.filter(|n| !releases.iter().any(|(id, _)| id == n)) {
            releases.push((named.to_string(), "5".repeat(40)));
            releases.sort();
        }
        // The activation that made `current` live, from `kept`.
        let activated = Record {
            time: (now - chrono::Duration::days(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            id: String::new(),
            command: "deploy".into(),
            release: Some(current.0.clone()),
            commit: Some(current.1),
            reference: Some(reference.to_string()),
            previous: Some(kept.0),
            result: Outcome::Ok,
            failed_step: None,
            failed_host: None,
            error: None,
            duration_ms: 0,
            actor: "stand-in".into(),
            machine: "stand-in".into(),
        };
        let mut state = vec![format!("{}=releases/{}", key::CURRENT, current.0)];
        let (prepared, commit) = &prepared;
        for (name, value) in [
            (marker::RELEASE, prepared),
            (marker::COMMIT, commit),
            (marker::REF, &reference.to_string()),
            (marker::TIME, prepared),
        ] {
            state.push(format!("{}{name}={value}", key::PREPARED_PREFIX));
        }
        for (id, commit) in &releases {
            state.push(format!("{}={id} {commit}", key::RELEASE));
            state.push(format!("{}={id}", key::READY));
        }
        state.push(format!("{}={}", key::HISTORY, activated.to_line()));
        StandIn { state }
    }

    /// What the stand-in host prints for `read`.
    pub fn answer(&self, read: Read) -> Vec<String> {
        match read {
            Read::State => self.state.clone(),
            Read::Lock => {
                let mut lines = vec![format!("{}=yes", key::LOCK_TAKEN)];
                lines.extend(self.state.iter().cloned());
                lines
            }
            Read::Commit => vec![RESOLVED.to_string(), "0".to_string()],
            Read::Probe => vec![
                format!("{}=ok (dry run: not checked)", probe::DEPLOY_TO),
                format!("{}=ok (dry run: not checked)", probe::TOOLS),
            ],
            Read::Diff => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stand_in_reads_back_as_a_host_that_activates_prepared_and_rolls_back_to_kept() {
        let now = chrono::Utc::now();
        let named = new_id(now - chrono::Duration::days(30));
        let stand_in = StandIn::new(now, "main", Some(&named));
        let state = crate::remote::state::parse(&stand_in.answer(Read::State));
        let current = new_id(now - chrono::Duration::days(1));
        assert_eq!(state.current.as_deref(), Some(current.as_str()));
        assert_eq!(
            state.previous(),
            Some(new_id(now - chrono::Duration::days(2)).as_str())
        );
        let prepared = state.prepared.as_ref().expect("a prepared release");
        assert_eq!(
            prepared.release.as_str(),
            new_id(now - chrono::Duration::hours(1))
        );
        assert!(state.is_complete(&prepared.release));
        assert!(state.is_complete(&named));
        assert!(state.lock.is_none() && !state.lock_taken);
        let locked = crate::remote::state::parse(&stand_in.answer(Read::Lock));
        assert!(locked.lock_taken);
    }
}
