//! One function per command: load and validate everything, build the plan, then hand it to the
//! runner with a reporter watching.

mod activate;
mod check;
mod prepare;
mod status;
mod task;

use std::sync::Arc;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::deployfile::Deployfile;
use crate::error::Error;
use crate::inventory::{Host, Selection};
use crate::plan::{self, Plan, PlannedStep};
use crate::release::{self, HostState};
use crate::report::{self, EventKind, Events, Masker, Reporter, Verbosity};
use crate::run::{self, HostResult};
use crate::transport::Connection;

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

/// Everything a command needs once the deployfile and the command line have been validated.
pub struct Context {
    pub deployfile: Deployfile,
    /// The selected hosts, in deployfile order.
    pub hosts: Vec<Host>,
    pub masker: Masker,
    pub concurrency: usize,
    pub verbosity: Verbosity,
    pub dry_run: bool,
    /// One UTC time for the whole invocation, as `{{timestamp}}`.
    pub timestamp: String,
    /// When this invocation started; new release ids derive from it.
    pub now: chrono::DateTime<chrono::Utc>,
}

impl Context {
    pub fn load(args: &GlobalArgs) -> Result<Context, Error> {
        let deployfile = Deployfile::load(&args.file)?;
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
        Ok(Context {
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
            dry_run: args.dry_run,
            timestamp: release::new_id(now),
            now,
            hosts,
            deployfile,
        })
    }

    fn reporter(&self) -> Reporter {
        Reporter::new(
            Box::new(std::io::stdout()),
            self.masker.clone(),
            self.verbosity,
        )
    }

    /// Prints the plan instead of running it.
    fn print_plan(&self, plan: &Plan) -> Result<(), Error> {
        report::dry_run(plan, &self.masker, &mut std::io::stdout().lock())?;
        Ok(())
    }

    /// Connects to every host of the plan (refusing to run anything if one cannot be reached),
    /// runs it, and waits for the reporter to print the summary.
    async fn execute(&self, plan: &Plan) -> Result<(), Error> {
        let (events, reporter) = self.reporter().spawn();
        let result = self.connect_and_run(plan, &events).await;
        drop(events);
        let _ = reporter.await;
        result
    }

    async fn connect_and_run(&self, plan: &Plan, events: &Events) -> Result<(), Error> {
        let connections = run::connect_all(&plan.hosts, self.concurrency, events)
            .await
            .map_err(Error::Connect)?;
        let result = run::execute(plan, &connections, self.concurrency, events).await;
        run::disconnect(&connections).await;
        result.map_err(Error::StepFailed)
    }
}

/// Open connections to every selected host, reused by every step of the command.
pub struct Session<'a> {
    context: &'a Context,
    connections: Vec<Arc<Connection>>,
    events: Events,
}

impl<'a> Session<'a> {
    /// Connects to every selected host; if any cannot be reached, none is used.
    async fn open(context: &'a Context, events: &Events) -> Result<Session<'a>, Error> {
        let connections = run::connect_all(&context.hosts, context.concurrency, events)
            .await
            .map_err(Error::Connect)?;
        Ok(Session {
            context,
            connections,
            events: events.clone(),
        })
    }

    fn hosts(&self) -> &[Host] {
        &self.context.hosts
    }

    /// Runs a step everywhere it is planned and returns each host's result.
    async fn step(&self, step: &PlannedStep) -> Vec<HostResult> {
        run::execute_step(
            self.hosts(),
            step,
            &self.connections,
            self.context.concurrency,
            &self.events,
        )
        .await
    }

    /// Runs a step and fails if it failed anywhere.
    async fn run(&self, step: &PlannedStep) -> Result<Vec<HostResult>, Error> {
        let results = self.step(step).await;
        run::failures(self.hosts(), step, &results).map_err(Error::StepFailed)?;
        Ok(results)
    }

    /// Every selected host's release state, in one round trip.
    async fn states(&self) -> Result<Vec<HostState>, Error> {
        let results = self.run(&plan::state(self.hosts())?).await?;
        Ok(results
            .iter()
            .map(|result| release::parse_state(&result.stdout))
            .collect())
    }

    fn notice(&self, text: String) {
        self.events.send(EventKind::Notice { text });
    }

    async fn close(self) {
        run::disconnect(&self.connections).await;
    }
}

impl Context {
    /// Runs `work` over a session with a reporter watching, and waits for the summary.
    async fn with_session<T>(
        &self,
        work: impl AsyncFnOnce(&Session<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (events, reporter) = self.reporter().spawn();
        let result = match Session::open(self, &events).await {
            Ok(session) => {
                let result = work(&session).await;
                session.close().await;
                result
            }
            Err(error) => Err(error),
        };
        drop(events);
        let _ = reporter.await;
        result
    }
}

/// `user@machine`, for the history and the lock.
fn operator() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{machine}")
}

pub async fn main(cli: Cli) -> Result<(), Failed> {
    let context = Context::load(&cli.global).map_err(|error| Failed {
        error,
        masker: Masker::default(),
    })?;
    let result = match &cli.command {
        Command::Run { task } => task::run(&context, task).await,
        Command::Check => check::run(&context).await,
        Command::Prepare { reference } => prepare::command(&context, reference.as_deref()).await,
        Command::Activate { release } => activate::command(&context, release.as_deref()).await,
        Command::Deploy { reference } => deploy(&context, reference.as_deref()).await,
        Command::Rollback { to } => activate::rollback_command(&context, to.as_deref()).await,
        Command::Status => status::status(&context).await,
        Command::Releases => status::releases(&context).await,
    };
    result.map_err(|error| Failed {
        error,
        masker: context.masker.clone(),
    })
}

/// `deployr deploy`: prepare, then activate exactly that release, over the same connections.
async fn deploy(context: &Context, reference: Option<&str>) -> Result<(), Error> {
    if context.dry_run {
        prepare::command(context, reference).await?;
        return activate::command(context, None).await;
    }
    context
        .with_session(async |session| {
            let release = prepare::prepare(context, session, reference).await?;
            activate::activate(context, session, Some(&release)).await
        })
        .await
}
