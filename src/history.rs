//! `.deployr/history`: one JSON object per line, one line per command that changed the host
//! (who, what, when, how it ended), readable with `tail` and parseable; and the timeline that
//! `deployr history` merges from every host's records.
//!
//! Lines written before this format (`TIME ACTION RELEASE previous=ID by=USER@MACHINE`) are
//! read as records too, so a host's old history keeps counting for rollbacks and pruning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::release_id::validate_id;

/// How a command ended on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    Failed,
    /// The release was switched to, then taken back: `previous` serves again.
    RolledBack,
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One record of a host's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub time: String,
    /// The invocation that wrote it, the same on every host it touched; empty in old lines.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// What the host served before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub result: Outcome,
    /// For a failure: the step and the host where it failed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub machine: String,
}

impl Record {
    /// The line written to `.deployr/history`.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a record serialises")
    }

    /// Reads one line, in either format; `None` for anything else.
    pub fn parse(line: &str) -> Option<Record> {
        let line = line.trim();
        if line.starts_with('{') {
            return serde_json::from_str(line).ok();
        }
        let mut fields = line.split_whitespace();
        let time = fields.next()?.to_string();
        let command = fields.next()?.to_string();
        let release = fields.next()?.to_string();
        let rest: Vec<&str> = fields.collect();
        let previous = rest
            .iter()
            .find_map(|f| f.strip_prefix("previous="))
            .filter(|p| validate_id(p).is_ok())
            .map(str::to_string);
        let by = rest.iter().find_map(|f| f.strip_prefix("by="));
        let (actor, machine) = by
            .and_then(|by| by.split_once('@'))
            .map(|(a, m)| (a.to_string(), m.to_string()))
            .unwrap_or_default();
        Some(Record {
            time,
            id: String::new(),
            command,
            release: Some(release),
            commit: None,
            reference: None,
            previous,
            result: Outcome::Ok,
            failed_step: None,
            failed_host: None,
            error: None,
            duration_ms: 0,
            actor,
            machine,
        })
    }

    /// The release this record made live on its host, if it made one live: a good activation
    /// or rollback, or a failed activation whose host went back to what it served before.
    pub fn made_live(&self) -> Option<&str> {
        match (self.command.as_str(), self.result) {
            ("activate" | "deploy" | "rollback" | "catch-up", Outcome::Ok) => {
                self.release.as_deref()
            }
            (_, Outcome::RolledBack) => self.previous.as_deref(),
            _ => None,
        }
    }

    /// A good activation of `release` (not a rollback): where a rollback from it goes.
    pub fn activated(&self, release: &str) -> bool {
        matches!(self.command.as_str(), "activate" | "deploy" | "catch-up")
            && self.result == Outcome::Ok
            && self.release.as_deref() == Some(release)
    }
}

/// Who deployed: `DEPLOYR_ACTOR`, else the user a CI system names, else the login name.
pub fn actor() -> String {
    const NAMED_BY: [&str; 4] = [
        "DEPLOYR_ACTOR",
        "GITHUB_ACTOR",
        "GITLAB_USER_LOGIN",
        "BUILDKITE_BUILD_CREATOR",
    ];
    NAMED_BY
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(crate::owner::login_name)
}

/// One command in the merged timeline: its record as most hosts have it, the hosts that have
/// it, and the hosts whose record says something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub record: Record,
    pub hosts: Vec<String>,
    /// Each host whose record of this command differs (another result or release), and what
    /// its record says.
    pub disagreeing: Vec<(String, Record)>,
}

impl Entry {
    /// The entry as text: one line for the command, and one per host that disagrees.
    pub fn lines(&self) -> Vec<String> {
        let record = &self.record;
        let mut line = format!("{} {}", record.time, record.command);
        if let Some(release) = &record.release {
            line.push_str(&format!(" {release}"));
        }
        if let Some(commit) = &record.commit {
            line.push_str(&format!(" {}", commit.chars().take(12).collect::<String>()));
        }
        if let Some(reference) = &record.reference {
            line.push_str(&format!(" ({reference})"));
        }
        line.push_str(&format!(" {}", record.result.as_str()));
        if let (Some(step), Some(host)) = (&record.failed_step, &record.failed_host) {
            line.push_str(&format!(" at `{step}` on {host}"));
        }
        let who = match record.machine.as_str() {
            "" => record.actor.clone(),
            machine => format!("{}@{machine}", record.actor),
        };
        line.push_str(&format!(
            " by {who} in {:.1}s on {}",
            record.duration_ms as f64 / 1000.0,
            self.hosts.join(",")
        ));
        let mut lines = vec![line];
        for (host, other) in &self.disagreeing {
            lines.push(format!(
                "  ! {host} disagrees: {} {}",
                other.release.as_deref().unwrap_or("-"),
                other.result.as_str()
            ));
        }
        lines
    }
}

/// Merges every host's records into one timeline, one entry per command (an invocation id, or
/// for old lines the time, command and release), oldest first.
pub fn timeline(hosts: &[(String, Vec<Record>)]) -> Vec<Entry> {
    let mut by_command: BTreeMap<String, Vec<(&str, &Record)>> = BTreeMap::new();
    for (host, records) in hosts {
        for record in records {
            let key = if record.id.is_empty() {
                format!(
                    "{} {} {}",
                    record.time,
                    record.command,
                    record.release.as_deref().unwrap_or("-")
                )
            } else {
                record.id.clone()
            };
            by_command.entry(key).or_default().push((host, record));
        }
    }
    let agree = |a: &Record, b: &Record| a.result == b.result && a.release == b.release;
    let mut entries: Vec<Entry> = by_command
        .into_values()
        .map(|records| {
            // The record most hosts share stands for the command, with the earliest time (the
            // hosts of one command write their records moments apart).
            let mut typical = records
                .iter()
                .max_by_key(|(_, r)| records.iter().filter(|(_, o)| agree(r, o)).count())
                .map(|(_, r)| (*r).clone())
                .expect("at least one record");
            if let Some(first) = records.iter().map(|(_, r)| &r.time).min() {
                typical.time = first.clone();
            }
            let mut hosts = Vec::new();
            let mut disagreeing = Vec::new();
            for (host, record) in &records {
                if agree(record, &typical) {
                    hosts.push(host.to_string());
                } else {
                    disagreeing.push((host.to_string(), (*record).clone()));
                }
            }
            Entry {
                record: typical,
                hosts,
                disagreeing,
            }
        })
        .collect();
    entries.sort_by(|a, b| a.record.time.cmp(&b.record.time));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, result: Outcome) -> Record {
        Record {
            time: "2026-12-03T10:00:00Z".into(),
            id: id.into(),
            command: "deploy".into(),
            release: Some("20261203T100000Z".into()),
            commit: Some("abc".into()),
            reference: Some("main".into()),
            previous: Some("20261202T100000Z".into()),
            result,
            failed_step: None,
            failed_host: None,
            error: None,
            duration_ms: 1200,
            actor: "alice".into(),
            machine: "ci".into(),
        }
    }

    #[test]
    fn records_round_trip_through_their_line() {
        let record = record("1", Outcome::RolledBack);
        let line = record.to_line();
        assert!(line.contains("\"result\":\"rolled-back\""), "{line}");
        assert!(line.contains("\"ref\":\"main\""), "{line}");
        assert_eq!(Record::parse(&line), Some(record));
    }

    #[test]
    fn old_lines_still_count() {
        let record = Record::parse(
            "2026-11-24T15:41:00Z activate 20261124T154100Z previous=20261123T100000Z by=bob@laptop",
        )
        .unwrap();
        assert_eq!(record.made_live(), Some("20261124T154100Z"));
        assert!(record.activated("20261124T154100Z"));
        assert_eq!(record.previous.as_deref(), Some("20261123T100000Z"));
        assert_eq!(
            (record.actor.as_str(), record.machine.as_str()),
            ("bob", "laptop")
        );
        let back = Record::parse(
            "2026-11-24T15:41:00Z rollback 20261123T100000Z previous=20261124T154100Z by=x@y",
        )
        .unwrap();
        assert_eq!(back.made_live(), Some("20261123T100000Z"));
        assert!(!back.activated("20261123T100000Z"));
    }

    #[test]
    fn a_rolled_back_activation_made_the_previous_release_live() {
        let back = record("1", Outcome::RolledBack);
        assert_eq!(back.made_live(), Some("20261202T100000Z"));
        assert_eq!(record("1", Outcome::Failed).made_live(), None);
    }

    #[test]
    fn the_timeline_has_one_entry_per_command_and_flags_disagreeing_hosts() {
        let hosts = vec![
            ("web1".to_string(), vec![record("1", Outcome::Ok)]),
            ("web2".to_string(), vec![record("1", Outcome::Ok)]),
            ("web3".to_string(), vec![record("1", Outcome::Failed)]),
        ];
        let entries = timeline(&hosts);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].hosts, ["web1", "web2"]);
        assert_eq!(entries[0].disagreeing.len(), 1);
        assert_eq!(entries[0].disagreeing[0].0, "web3");
    }
}
