//! One module per command, and what they share: the [`Context`] (the configuration, validated
//! once, and this invocation's run-time state) and the session (`session.rs`) that every
//! command that works on hosts runs its steps in, with a reporter watching.

mod activate;
mod catch_up;
mod check;
mod diff;
mod init;
mod prepare;
mod session;
mod status;
mod task;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::cli::{Cli, ColorChoice, Command, GlobalArgs, Portion};
use crate::deployfile::Deployfile;
use crate::error::Error;
use crate::inventory::{Host, Selection};
use crate::mask::Masker;
use crate::plan::{self, PlannedStep};
use crate::release_id;
use crate::remote::stand_in::StandIn;
use crate::report::{Reporter, Style, Verbosity};
use crate::transport::{Cancel, Signal};
use session::{Ending, Session};

/// A command's error, with what is needed to show it without leaking secrets.
pub struct Failed {
    pub error: Error,
    pub masker: Masker,
}

impl Failed {
    pub fn message(&self) -> String {
        self.masker.mask(&self.error.to_string())
    }
}

/// Everything a command needs: the configuration, validated once from the deployfile and the
/// command line, and this invocation's run-time state.
#[derive(Clone)]
pub struct Context {
    pub deployfile: Deployfile,
    /// The selected hosts, in deployfile order.
    pub hosts: Vec<Host>,
    pub masker: Masker,
    pub concurrency: usize,
    pub verbosity: Verbosity,
    /// `--dry-run`: what the dry run's transport answers for the hosts it does not contact.
    /// Every command runs the same code with or without it.
    pub stand_in: Option<Arc<StandIn>>,
    /// When this invocation started, who it is, and the signals it has had.
    pub invocation: Invocation,
    /// How long to wait for a held lock (`--lock-wait`); zero fails at once.
    pub lock_wait: Duration,
    pub style: Style,
    /// The command line's command, for the `run_started` event and the lock.
    pub command: String,
    /// Whether the command changes hosts: it leaves a record in their history and runs the
    /// hooks.
    pub changes_hosts: bool,
    /// `deployr` with the flags that choose this deployfile and stage: the start of a command
    /// that a message tells the operator to run.
    pub rerun: String,
    /// `--allow-unreachable`: how many selected hosts that cannot be reached may be left out.
    pub allow_unreachable: Option<Portion>,
}

/// This invocation's run-time state, apart from the configuration.
#[derive(Clone)]
pub struct Invocation {
    /// One UTC time for the whole invocation, as `{{timestamp}}`.
    pub timestamp: String,
    /// When this invocation started; new release ids derive from it.
    pub now: chrono::DateTime<chrono::Utc>,
    /// Identifies this invocation's deploy lock, so only its own lock is released.
    pub token: String,
    /// Who runs it and where, for history records: found once, not once per host (the
    /// password database may be a network lookup).
    pub actor: String,
    pub machine: String,
    /// Set by the first SIGINT, SIGTERM or SIGHUP.
    pub cancel: Cancel,
    /// What a second signal says deployr is still doing.
    pub busy: Arc<Mutex<String>>,
    /// The first signal that arrived, for the exit code.
    pub stopped_by: Arc<OnceLock<Signal>>,
}

impl Context {
    pub fn load(
        args: &GlobalArgs,
        command: &Command,
        interrupts: Interrupts,
    ) -> Result<Context, Error> {
        let deployfile = Deployfile::load(&args.file, args.stage.as_deref())?;
        let selection = Selection {
            hosts: args.hosts.clone(),
            roles: args.roles.clone(),
        };
        let hosts = selection
            .apply(&deployfile.hosts)?
            .into_iter()
            .cloned()
            .collect();
        let now = chrono::Utc::now();
        let mut rerun = "deployr".to_string();
        if args.file != std::path::Path::new("deployfile.toml") {
            let file = args.file.to_string_lossy();
            rerun.push_str(&format!(
                " -f {}",
                shlex::try_quote(&file).unwrap_or(file.clone())
            ));
        }
        if let Some(stage) = &args.stage {
            rerun.push_str(&format!(
                " --stage {}",
                shlex::try_quote(stage).unwrap_or(stage.into())
            ));
        }
        Ok(Context {
            rerun,
            masker: Masker::new(deployfile.secrets()),
            concurrency: args
                .concurrency
                .map_or(deployfile.concurrency, |n| n as usize),
            verbosity: if args.quiet {
                Verbosity::Quiet
            } else if args.verbose {
                Verbosity::Verbose
            } else {
                Verbosity::Normal
            },
            stand_in: None,
            invocation: Invocation {
                timestamp: release_id::new_id(now),
                now,
                cancel: interrupts.cancel,
                busy: interrupts.busy,
                stopped_by: interrupts.stopped_by,
                token: format!(
                    "{}-{}",
                    std::process::id(),
                    now.timestamp_nanos_opt().unwrap_or_default()
                ),
                actor: crate::history::actor(),
                machine: crate::owner::machine(),
            },
            lock_wait: args.lock_wait.unwrap_or_default(),
            style: style(args),
            command: command.name(),
            changes_hosts: command.changes_hosts(),
            hosts,
            deployfile,
            allow_unreachable: None,
        })
    }

    fn reporter(&self) -> Reporter {
        let reporter = Reporter::new(self.style, self.masker.clone(), self.verbosity);
        if self.dry_run() {
            reporter.for_dry_run()
        } else {
            reporter
        }
    }

    /// The `[[check]]` entries, run in `current_path` on the hosts their roles select.
    fn checks_plan(&self) -> Result<Vec<PlannedStep>, Error> {
        Ok(plan::in_current(
            &self.deployfile,
            &self.hosts,
            &self.deployfile.checks,
            &self.invocation.timestamp,
        )?)
    }

    /// What a second Ctrl-C reports.
    fn set_busy(&self, what: &str) {
        *self.invocation.busy.lock().expect("busy text") = what.to_string();
    }

    /// Whether this is a dry run.
    pub fn dry_run(&self) -> bool {
        self.stand_in.is_some()
    }
}

/// Progress bars on a terminal, plain lines elsewhere, JSON on request.
fn style(args: &GlobalArgs) -> Style {
    use std::io::IsTerminal;
    if args.json {
        return Style::Json;
    }
    // The bars draw on stderr: with stderr redirected they would be hidden, and the live
    // lines printed above them lost with them.
    // A dry run's scripts are lines to read (or pipe), not progress.
    if args.no_progress || args.dry_run || !std::io::stderr().is_terminal() {
        return Style::Plain;
    }
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    Style::Progress { color }
}

pub async fn main(cli: Cli) -> Result<(), Failed> {
    let unmasked = |error| Failed {
        error,
        masker: Masker::default(),
    };
    match &cli.command {
        Command::Init => return init::command(&cli.global.file).map_err(unmasked),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "deployr", &mut std::io::stdout());
            return Ok(());
        }
        _ => {}
    }
    let mut context =
        Context::load(&cli.global, &cli.command, watch_interrupts()).map_err(|error| Failed {
            error,
            masker: Masker::default(),
        })?;
    context.allow_unreachable = cli.command.allow_unreachable();
    if cli.global.dry_run {
        let reference = cli.command.reference().or(context
            .deployfile
            .source
            .as_ref()
            .map(|source| source.reference.as_str()));
        context.stand_in = Some(Arc::new(StandIn::new(
            context.invocation.now,
            reference.unwrap_or_default(),
            cli.command.named_release(),
        )));
    }
    let result = match &cli.command {
        Command::Run { task } => task::command(&context, task).await,
        Command::Check => check::command(&context).await,
        Command::Prepare {
            reference, force, ..
        } => prepare::command(&context, reference.as_deref(), *force).await,
        Command::Activate {
            release, canary, ..
        } => activate::command(&context, release.as_deref(), *canary).await,
        Command::Deploy {
            reference,
            force,
            canary,
            ..
        } => deploy(&context, reference.as_deref(), *force, *canary).await,
        Command::Rollback { to, .. } => activate::rollback_command(&context, to.as_deref()).await,
        Command::CatchUp => catch_up::command(&context).await,
        Command::Status => status::status(&context).await,
        Command::Releases => status::releases(&context).await,
        Command::Unlock { force } => status::unlock(&context, *force).await,
        Command::History { count } => status::history(&context, *count).await,
        Command::Diff { reference } => diff::command(&context, reference.as_deref()).await,
        Command::Init | Command::Completions { .. } => Ok(()),
    };
    result.map_err(|error| Failed {
        error,
        masker: context.masker.clone(),
    })
}

/// What the signal watcher shares with the command.
pub struct Interrupts {
    cancel: Cancel,
    busy: Arc<Mutex<String>>,
    stopped_by: Arc<OnceLock<Signal>>,
}

/// SIGINT (Ctrl-C), SIGTERM (a CI system cancelling the job) and SIGHUP (a closed terminal)
/// all take the same path: the first cancels running commands, and the command then makes
/// every host consistent and releases the lock; later ones say what deployr is still doing,
/// and do not kill it. Nothing here may fail on a closed terminal, so writes are not checked.
fn watch_interrupts() -> Interrupts {
    use tokio::signal::unix::{SignalKind, signal};
    let (sender, receiver) = tokio::sync::watch::channel(false);
    let busy = Arc::new(Mutex::new("stopping".to_string()));
    let stopped_by = Arc::new(OnceLock::new());
    let (shown, first) = (busy.clone(), stopped_by.clone());
    let kinds = [
        (SignalKind::interrupt(), Signal::Interrupt),
        (SignalKind::terminate(), Signal::Terminate),
        (SignalKind::hangup(), Signal::Hangup),
    ];
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    for (kind, name) in kinds {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let arrived = arrived.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if arrived.send(name).is_err() {
                    return;
                }
            }
        });
    }
    tokio::spawn(async move {
        while let Some(signal) = arrivals.recv().await {
            let mut stderr = std::io::stderr();
            if first.set(signal).is_ok() {
                let _ = sender.send(true);
                let _ = writeln!(
                    stderr,
                    "deployr: {}: stopping running commands, then making every host consistent and releasing the lock",
                    signal.name()
                );
            } else {
                let busy = shown.lock().map(|b| b.clone()).unwrap_or_default();
                let _ = writeln!(
                    stderr,
                    "deployr: {}: still {busy}; stopping now could leave hosts disagreeing",
                    signal.name()
                );
            }
        }
    });
    Interrupts {
        cancel: Cancel::new(receiver),
        busy,
        stopped_by,
    }
}

/// `deployr deploy`: prepare, then activate exactly that release, over the same connections.
async fn deploy(
    context: &Context,
    reference: Option<&str>,
    force: bool,
    canary: Option<Portion>,
) -> Result<(), Error> {
    activate::refuse_a_canary_without_second_wave(context, canary)?;
    context
        .with_session(async |context, session| {
            let mut states = session.lock("deploy").await?;
            session.service_checks().await?;
            let prepared =
                prepare::prepare(context, session, &states, reference, force, None).await?;
            for state in &mut states {
                state.note_prepared(&prepared);
            }
            activate::activate(context, session, states, Some(&prepared.release), canary).await
        })
        .await
}
