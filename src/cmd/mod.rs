//! One function per command: load and validate everything, build the plan, then hand it to the
//! runner with a reporter watching.

mod check;
mod task;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::deployfile::Deployfile;
use crate::error::Error;
use crate::inventory::{Host, Selection};
use crate::plan::Plan;
use crate::report::{self, Events, Masker, Reporter, Verbosity};
use crate::run;

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
            timestamp: chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string(),
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

pub async fn main(cli: Cli) -> Result<(), Failed> {
    let context = Context::load(&cli.global).map_err(|error| Failed {
        error,
        masker: Masker::default(),
    })?;
    let result = match &cli.command {
        Command::Run { task } => task::run(&context, task).await,
        Command::Check => check::run(&context).await,
    };
    result.map_err(|error| Failed {
        error,
        masker: context.masker.clone(),
    })
}
