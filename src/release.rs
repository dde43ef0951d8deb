//! Releases: where they live and what a host's release state says (what is live, prepared, ready,
//! locked, and which releases pruning removes). The scripts that read and change the state on
//! a host, and the layout there, are in [`crate::remote`].

use std::collections::BTreeSet;

use crate::history::Record;
use crate::inventory::Host;
use crate::release_id::ReleaseId;

pub fn release_path(host: &Host, id: &str) -> String {
    format!("{}/releases/{id}", host.deploy_to)
}

/// What `prepare` records on a host once everything there succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub release: ReleaseId,
    pub commit: String,
    pub reference: String,
    pub time: String,
}

/// `.deployr/activating`: written on a host when its switch is armed, removed by `finish` (or
/// when the host goes back). Found later, it means a deployr stopped between the switch and
/// the end of the activation; `activate` finishes that activation and `rollback` undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    pub release: String,
    /// What the host served before (none on a first activation).
    pub previous: Option<String>,
}

/// A host's release state, read in one command before anything changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    pub current: Option<String>,
    /// `current` exists but is a real directory: an error that names the fix.
    pub current_is_directory: bool,
    pub prepared: Option<Prepared>,
    /// Release ids on disk with their commits, oldest first.
    pub releases: Vec<(String, String)>,
    /// The last records of `.deployr/history`, oldest first.
    pub history: Vec<Record>,
    /// Who holds the deploy lock: its owner line.
    pub lock: Option<String>,
    /// Something is at the lock's path that no deployr wrote whole (a plain file, a directory
    /// without an owner): what it is.
    pub lock_malformed: Option<String>,
    /// This invocation took the lock in the same round trip.
    pub lock_taken: bool,
    /// Why the lock could not be taken although nobody holds it (a read-only or full disk).
    pub lock_error: Option<String>,
    /// Releases whose prepare succeeded on this host.
    pub ready: BTreeSet<String>,
    /// An activation that was switched but never finished.
    pub activating: Option<Journal>,
    /// Checksums of the uploaded artifacts kept on the host (`strategy = "upload"`).
    pub artifacts: Vec<String>,
}

impl HostState {
    pub fn commit_of(&self, release: &str) -> Option<&str> {
        self.releases
            .iter()
            .find(|(id, _)| id == release)
            .map(|(_, commit)| commit.as_str())
    }

    /// What a prepare that just succeeded wrote on the host, without reading it again.
    pub fn note_prepared(&mut self, prepared: &Prepared) {
        if !self.has_release(&prepared.release) {
            let release = (prepared.release.to_string(), prepared.commit.clone());
            self.releases.push(release);
        }
        self.ready.insert(prepared.release.to_string());
        self.prepared = Some(prepared.clone());
    }

    pub fn has_release(&self, release: &str) -> bool {
        self.releases.iter().any(|(id, _)| id == release)
    }

    /// The release is on disk and complete: its prepare succeeded here, or it has been live
    /// (releases from before the `ready` markers existed count by their history).
    pub fn is_complete(&self, release: &str) -> bool {
        self.has_release(release)
            && (self.ready.contains(release)
                || self
                    .prepared
                    .as_ref()
                    .is_some_and(|p| p.release.as_str() == release)
                || self.current.as_deref() == Some(release)
                || self
                    .history
                    .iter()
                    .any(|record| record.made_live() == Some(release)))
    }

    /// The release that was live before the current one was last activated: where a rollback
    /// goes.
    pub fn previous(&self) -> Option<&str> {
        let current = self.current.as_deref()?;
        self.history
            .iter()
            .rev()
            .find(|record| record.activated(current))
            .and_then(|record| record.previous.as_deref())
    }

    /// Release directories that pruning removes once `current` is live (with `previous` before
    /// it): releases that were live, beyond the `keep` most recently live, and releases older than current that
    /// were never activated (a failed prepare). Never current, previous, or a prepared release.
    pub fn prunable(&self, current: &str, previous: Option<&str>, keep: usize) -> Vec<String> {
        // Most recently live first: a rollback makes its release live again.
        let mut activated: Vec<&str> = vec![current];
        for live in self.history.iter().rev().filter_map(Record::made_live) {
            if !activated.contains(&live) {
                activated.push(live);
            }
        }
        let mut kept: BTreeSet<&str> = activated.iter().take(keep).copied().collect();
        kept.insert(current);
        kept.extend(previous);
        if let Some(prepared) = &self.prepared {
            kept.insert(&prepared.release);
        }
        self.releases
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| !kept.contains(id))
            .filter(|id| activated.contains(id) || *id < current)
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_current_previous_prepared_and_the_newest_activated() {
        let ids = [
            "20260101T000001Z",
            "20260101T000002Z",
            "20260101T000003Z",
            "20260101T000004Z",
            "20260101T000005Z",
        ];
        let mut state = HostState {
            releases: ids.iter().map(|i| (i.to_string(), String::new())).collect(),
            ..HostState::default()
        };
        // 1, 3, 4 were activated in that order; 2 was a failed prepare; 5 is prepared.
        let mut previous = None;
        for id in [ids[0], ids[2], ids[3]] {
            let line = format!(
                "t activate {id} previous={}",
                previous.as_deref().unwrap_or("-")
            );
            state.history.extend(Record::parse(&line));
            previous = Some(id.to_string());
        }
        state.prepared = Some(Prepared {
            release: ReleaseId::parse(ids[4]).unwrap(),
            commit: String::new(),
            reference: String::new(),
            time: String::new(),
        });
        // Activating 4 again after a rollback to 3: keep 4 (current) and 3 (previous).
        assert_eq!(state.prunable(ids[3], Some(ids[2]), 1), [ids[0], ids[1]]);
        assert_eq!(state.prunable(ids[3], Some(ids[2]), 3), [ids[1]]);
    }
}
