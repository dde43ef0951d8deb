//! `deployr diff`: what going live with a commit would change, per commit that hosts serve
//! now: the commits it adds (or takes away: a rollback in disguise), the files it changes, and
//! those of them that `[app] watch` names (migrations, requirements), so that "this deploy
//! migrates the database" shows before anyone presses enter.

use serde::Serialize;

/// How the target commit stands to a live one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Relation {
    Same,
    /// The target is the live commit plus more: a plain deploy.
    Ahead,
    /// The target is older than the live commit: deploying it takes commits away.
    Behind,
    /// Neither contains the other: both sides have commits of their own.
    Diverged,
    /// The repository no longer has the live commit (a force-push), so nothing can be compared.
    Unknown,
}

/// The comparison of one live commit with the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// The hosts that serve `live`.
    pub hosts: Vec<String>,
    /// The live commit, or `None` where nothing is live yet.
    pub live: Option<String>,
    pub live_release: Option<String>,
    pub target: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub relation: Relation,
    /// `git log --oneline` of what the target adds, newest first.
    pub commits: Vec<String>,
    /// What going to the target takes away (behind or diverged).
    pub dropped: Vec<String>,
    /// `git diff --stat`.
    pub stat: Vec<String>,
    pub files: Vec<String>,
    /// The changed files that `[app] watch` matches.
    pub watched: Vec<String>,
}

/// What the diff script printed, read into the parts of a [`Diff`].
pub struct Parsed {
    pub relation: Relation,
    pub commits: Vec<String>,
    pub dropped: Vec<String>,
    pub stat: Vec<String>,
    pub files: Vec<String>,
}

pub fn parse(lines: &[String]) -> Parsed {
    let mut parsed = Parsed {
        relation: Relation::Unknown,
        commits: Vec::new(),
        dropped: Vec::new(),
        stat: Vec::new(),
        files: Vec::new(),
    };
    for line in lines {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.to_string();
        match key {
            "relation" => {
                parsed.relation = match value.as_str() {
                    "same" => Relation::Same,
                    "ahead" => Relation::Ahead,
                    "behind" => Relation::Behind,
                    "diverged" => Relation::Diverged,
                    _ => Relation::Unknown,
                }
            }
            "commit" => parsed.commits.push(value),
            "dropped" => parsed.dropped.push(value),
            "stat" => parsed.stat.push(value.trim_end().to_string()),
            "file" => parsed.files.push(value),
            _ => {}
        }
    }
    parsed
}

/// The files that any of `watch` matches (`*` matches across `/` too, as in `*/migrations/*`).
pub fn watched(files: &[String], watch: &[glob::Pattern]) -> Vec<String> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    files
        .iter()
        .filter(|file| watch.iter().any(|p| p.matches_with(file, options)))
        .cloned()
        .collect()
}

impl Diff {
    /// The comparison as text, for a terminal or a log.
    pub fn lines(&self) -> Vec<String> {
        let short = |commit: &str| commit.chars().take(12).collect::<String>();
        let live = match (&self.live, &self.live_release) {
            (Some(commit), Some(release)) => format!("{} ({release})", short(commit)),
            (Some(commit), None) => short(commit),
            _ => "nothing yet".to_string(),
        };
        let target = format!("{} ({})", short(&self.target), self.reference);
        let mut lines = vec![format!("{}: {live} -> {target}", self.hosts.join(", "))];
        let count = |n: usize| format!("{n} commit{}", if n == 1 { "" } else { "s" });
        lines.push(match self.relation {
            _ if self.live.is_none() => "  nothing is live there yet: all of it is new".to_string(),
            Relation::Same => "  already live: nothing changes".to_string(),
            Relation::Ahead => format!("  {} to deploy:", count(self.commits.len())),
            Relation::Behind => format!(
                "  NOTE: the target is BEHIND what is live: this is a rollback in disguise; {} would go away:",
                count(self.dropped.len())
            ),
            Relation::Diverged => format!(
                "  NOTE: the target has DIVERGED from what is live: {} would be added and {} would go away:",
                count(self.commits.len()),
                count(self.dropped.len())
            ),
            Relation::Unknown => "  the repository does not have the live commit (force-pushed away?), so nothing can be compared".to_string(),
        });
        lines.extend(self.commits.iter().map(|c| format!("    + {c}")));
        lines.extend(self.dropped.iter().map(|c| format!("    - {c}")));
        if !self.stat.is_empty() {
            lines.push("  files changed:".into());
            lines.extend(self.stat.iter().map(|s| format!("   {s}")));
        }
        if !self.watched.is_empty() {
            lines.push("  WATCHED FILES CHANGED ([app] watch):".into());
            lines.extend(self.watched.iter().map(|f| format!("    {f}")));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_patterns_match_across_directories() {
        let files: Vec<String> = [
            "shop/migrations/0042_orders.py",
            "requirements.txt",
            "shop/views.py",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let watch = [
            glob::Pattern::new("*/migrations/*").unwrap(),
            glob::Pattern::new("requirements.txt").unwrap(),
        ];
        assert_eq!(
            watched(&files, &watch),
            ["shop/migrations/0042_orders.py", "requirements.txt"]
        );
    }

    #[test]
    fn parses_what_the_script_prints() {
        let lines: Vec<String> = [
            "relation=ahead",
            "commit=abc1234 Add orders",
            "stat= a.py | 2 +-",
            "file=a.py",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let parsed = parse(&lines);
        assert_eq!(parsed.relation, Relation::Ahead);
        assert_eq!(parsed.commits, ["abc1234 Add orders"]);
        assert_eq!(parsed.stat, [" a.py | 2 +-"]);
        assert_eq!(parsed.files, ["a.py"]);
    }
}
