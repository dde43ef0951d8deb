//! The command line. Flags common to every command are global, so they may come before or after
//! the command name (`deployr --hosts web1 run backup` and `deployr run backup --hosts web1`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `deployr --version`: the version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DEPLOYR_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "deployr",
    version = VERSION,
    about = "Deploy applications to many servers over SSH: prepare in parallel, activate at once.",
    after_help = "Examples:\n  deployr check\n  deployr run backup --roles db\n  deployr --dry-run run backup"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The deployfile to read.
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        default_value = "deployfile.toml",
        env = "DEPLOYR_FILE"
    )]
    pub file: PathBuf,
    /// The deployfile's [stages.NAME] to work on (required when it has stages).
    #[arg(long, global = true, value_name = "NAME", env = "DEPLOYR_STAGE")]
    pub stage: Option<String>,
    /// Work only on these hosts (comma-separated names from [hosts]).
    #[arg(long, global = true, value_delimiter = ',', value_name = "HOST,...")]
    pub hosts: Vec<String>,
    /// Work only on hosts with any of these roles.
    #[arg(long, global = true, value_delimiter = ',', value_name = "ROLE,...")]
    pub roles: Vec<String>,
    /// Print every command for every host without connecting to any.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Hosts worked on at once (overrides [ssh] concurrency).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Wait this long for a deploy lock held by someone else (e.g. "5m") instead of failing.
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_wait: Option<std::time::Duration>,
    /// Write one JSON event per line to stdout (human output goes to stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Plain lines even on a terminal (no live progress bars).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Colour on a terminal: auto (unless NO_COLOR is set), always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Show connection times too, and every output line under the progress bars.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Show only failures.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a [tasks.NAME] entry on its hosts (suitable for cron).
    #[command(after_help = "Example:\n  deployr run backup\n  deployr run backup --dry-run")]
    Run {
        /// The task's name, as in [tasks.NAME].
        task: String,
    },
    /// Fetch the code into a new release on every host and run the [[prepare]] steps; `current`
    /// is not touched.
    #[command(after_help = "Examples:\n  deployr prepare\n  deployr prepare --ref hotfix/1.2.1")]
    Prepare {
        /// Branch, tag or commit to deploy (default: [source] ref).
        #[arg(long = "ref", value_name = "REF")]
        reference: Option<String>,
        /// With strategy = "upload": build and prepare anew even if this commit is already
        /// prepared on every host.
        #[arg(long)]
        force: bool,
        /// Leave out up to N (or P%) of the selected hosts that cannot be connected to or
        /// authenticated, and exit 6 when any was left out (default: none; exit 3).
        #[arg(long, value_name = "N|P%")]
        allow_unreachable: Option<Portion>,
    },
    /// Run the [[activate]] steps (migrate once), switch every host to the prepared release at
    /// once, run the after-switch steps and the health check.
    #[command(after_help = "Examples:\n  deployr activate\n  deployr activate --canary 1")]
    Activate {
        /// Activate this release (present on every host) instead of the prepared one.
        #[arg(long, value_name = "ID")]
        release: Option<String>,
        /// Switch the first N (or P%) selected hosts first, run their after-switch steps and
        /// health check, and only then switch the others.
        #[arg(long, value_name = "N|P%")]
        canary: Option<Portion>,
        /// Leave out up to N (or P%) of the selected hosts that cannot be connected to or
        /// authenticated, and exit 6 when any was left out (default: none; exit 3).
        #[arg(long, value_name = "N|P%")]
        allow_unreachable: Option<Portion>,
    },
    /// Prepare, then activate.
    #[command(after_help = "Example:\n  deployr deploy --ref v1.4.0")]
    Deploy {
        /// Branch, tag or commit to deploy (default: [source] ref).
        #[arg(long = "ref", value_name = "REF")]
        reference: Option<String>,
        /// With strategy = "upload": build and prepare anew even if this commit is already
        /// prepared on every host.
        #[arg(long)]
        force: bool,
        /// Switch the first N (or P%) selected hosts first, run their after-switch steps and
        /// health check, and only then switch the others.
        #[arg(long, value_name = "N|P%")]
        canary: Option<Portion>,
        /// Leave out up to N (or P%) of the selected hosts that cannot be connected to or
        /// authenticated, and exit 6 when any was left out (default: none; exit 3).
        #[arg(long, value_name = "N|P%")]
        allow_unreachable: Option<Portion>,
    },
    /// Switch every host back to the previous (or the given) release and run the after-switch
    /// steps.
    #[command(
        after_help = "Examples:\n  deployr rollback\n  deployr rollback --to 20261124T154100Z"
    )]
    Rollback {
        /// The release to go back to (default: the one before the current release).
        #[arg(long, value_name = "ID")]
        to: Option<String>,
        /// Leave out up to N (or P%) of the selected hosts that cannot be connected to or
        /// authenticated, and exit 6 when any was left out (default: none; exit 3).
        #[arg(long, value_name = "N|P%")]
        allow_unreachable: Option<Portion>,
    },
    /// Bring every selected host that is not on the release most hosts serve (drift) to that
    /// release: prepare its commit there and switch it; the other hosts are not touched.
    #[command(after_help = "Examples:\n  deployr catch-up --dry-run\n  deployr catch-up")]
    CatchUp,
    /// Current and prepared release per host, the lock holder, and drift between hosts.
    #[command(after_help = "Example:\n  deployr status")]
    Status,
    /// Every release on every host.
    #[command(after_help = "Example:\n  deployr releases --hosts web1")]
    Releases,
    /// Remove a stale deploy lock (left by a killed deployr), saying whose it was.
    #[command(after_help = "Example:\n  deployr unlock")]
    Unlock {
        /// Remove it even if its holder is a deployr still running on this machine.
        #[arg(long)]
        force: bool,
    },
    /// What deploying REF would change: per commit the hosts serve now, the commits, the files,
    /// and the files that [app] watch names. Changes nothing on the hosts, takes no lock.
    #[command(after_help = "Examples:\n  deployr diff\n  deployr diff --ref v2.1.0 --json")]
    Diff {
        /// A branch, tag or commit (default: [source] ref).
        #[arg(long = "ref", value_name = "REF")]
        reference: Option<String>,
    },
    /// Who deployed what, when, and how it ended: every selected host's history, merged into
    /// one timeline (one line per command; hosts whose records disagree are flagged).
    #[command(after_help = "Examples:\n  deployr history\n  deployr history -n 50 --json")]
    History {
        /// How many commands to show, most recent last.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        count: usize,
    },
    /// Write a commented starter deployfile (never overwrites one).
    #[command(after_help = "Example:\n  deployr init && $EDITOR deployfile.toml")]
    Init,
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  deployr completions bash > /etc/bash_completion.d/deployr")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Connect, authenticate and verify host keys, check that deploy_to is writable and git is
    /// present, and run the [[check]] entries. Changes nothing.
    #[command(after_help = "Example:\n  deployr check --roles web")]
    Check,
}

/// A number of hosts, or a percentage of the selected hosts (`--canary`, `--allow-unreachable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Portion {
    Hosts(usize),
    Percent(u32),
}

impl Portion {
    /// How many of `total` hosts: a percentage is rounded up.
    pub fn of(self, total: usize) -> usize {
        match self {
            Portion::Hosts(n) => n,
            Portion::Percent(p) => (total * p as usize).div_ceil(100),
        }
    }
}

impl std::str::FromStr for Portion {
    type Err = String;

    fn from_str(text: &str) -> Result<Portion, String> {
        let bad = || format!("`{text}` is neither a number of hosts (3) nor a percentage (10%)");
        match text.strip_suffix('%') {
            Some(percent) => match percent.parse::<u32>() {
                Ok(p) if p <= 100 => Ok(Portion::Percent(p)),
                Ok(_) => Err(format!("`{text}`: a percentage is at most 100%")),
                Err(_) => Err(bad()),
            },
            None => text.parse().map(Portion::Hosts).map_err(|_| bad()),
        }
    }
}

impl Command {
    /// `--allow-unreachable`, on the commands that take it.
    pub fn allow_unreachable(&self) -> Option<Portion> {
        match self {
            Command::Prepare {
                allow_unreachable, ..
            }
            | Command::Activate {
                allow_unreachable, ..
            }
            | Command::Deploy {
                allow_unreachable, ..
            }
            | Command::Rollback {
                allow_unreachable, ..
            } => *allow_unreachable,
            _ => None,
        }
    }

    /// Whether the command changes hosts, and so leaves a record in their history and runs
    /// the hooks.
    pub fn changes_hosts(&self) -> bool {
        matches!(
            self,
            Command::Prepare { .. }
                | Command::Activate { .. }
                | Command::Deploy { .. }
                | Command::Rollback { .. }
                | Command::CatchUp
        )
    }

    /// The release the command line names (`activate --release`, `rollback --to`), if any.
    pub fn named_release(&self) -> Option<&str> {
        match self {
            Command::Activate { release, .. } => release.as_deref(),
            Command::Rollback { to, .. } => to.as_deref(),
            _ => None,
        }
    }

    /// The ref the command line names (`--ref`), if any.
    pub fn reference(&self) -> Option<&str> {
        match self {
            Command::Prepare { reference, .. }
            | Command::Deploy { reference, .. }
            | Command::Diff { reference } => reference.as_deref(),
            _ => None,
        }
    }

    /// The command as typed, for events and the lock's owner line.
    pub fn name(&self) -> String {
        match self {
            Command::Run { task } => format!("run {task}"),
            Command::Prepare { .. } => "prepare".into(),
            Command::Activate { .. } => "activate".into(),
            Command::Deploy { .. } => "deploy".into(),
            Command::Rollback { .. } => "rollback".into(),
            Command::CatchUp => "catch-up".into(),
            Command::Status => "status".into(),
            Command::Releases => "releases".into(),
            Command::Unlock { .. } => "unlock".into(),
            Command::History { .. } => "history".into(),
            Command::Diff { .. } => "diff".into(),
            Command::Check => "check".into(),
            Command::Init => "init".into(),
            Command::Completions { .. } => "completions".into(),
        }
    }
}
