//! A command's session: the open connections to every selected host (or the dry run's
//! transport), reused by every step; the deploy lock and its release; state reads; history
//! records; the hooks. Every command that works on hosts goes through one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Context;
use crate::connection::Connection;
use crate::error::Error;
use crate::events::{EventKind, Events};
use crate::executor::{self, HostResult};
use crate::history;
use crate::inventory::Host;
use crate::owner;
use crate::plan::{self, PlannedStep, ReleaseInfo};
use crate::release::HostState;
use crate::remote;
use crate::template::Values;
use crate::transport::Cancel;

impl Context {
    /// What a hook's `{{...}}` and `DEPLOYR_*` say: the local values, the release the command
    /// was about (empty where it never got that far), and how the command ended.
    fn hook_values(&self, subject: Option<&Subject>, ending: &Ending, exit_code: u8) -> Values {
        let previous = subject.and_then(|s| s.previous.iter().flatten().next().map(String::as_str));
        let mut values = plan::local_values(
            &self.deployfile,
            &self.invocation.timestamp,
            subject.map(|s| (&s.info, previous)),
        );
        if subject.is_none() {
            for name in ["release", "commit", "ref", "previous_release"] {
                values.set(name, "");
            }
        }
        values.set("command", &self.command);
        values.set("result", ending.result.as_str());
        values.set("error", self.masker.mask(&ending.describe()));
        values.set("exit_code", exit_code.to_string());
        values
    }

    /// A step stopped by a signal, or a lock wait cut short by it: the signal is the cause.
    fn blame_the_signal<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        match (self.invocation.stopped_by.get(), result) {
            (Some(signal), Err(Error::StepFailed(_) | Error::Locked { .. })) => {
                Err(Error::Interrupted(*signal))
            }
            (_, result) => result,
        }
    }

    /// The connection that local steps run on: this machine, or the dry run's transport.
    pub(super) fn here(&self) -> Connection {
        match &self.stand_in {
            Some(stand_in) => Connection::DryRun(stand_in.clone()),
            None => Connection::Local,
        }
    }

    /// A connection to every selected host, or why there is none; one result per host, in
    /// order. A dry run connects to nothing: every host gets the dry run's transport.
    pub(super) async fn connect(
        &self,
        events: &Events,
    ) -> Vec<Result<Arc<Connection>, executor::ConnectFailure>> {
        match self.dry_connections() {
            Some(connections) => connections.into_iter().map(Ok).collect(),
            None => {
                executor::connect(
                    &self.hosts,
                    self.concurrency,
                    self.deployfile.connecting,
                    events,
                )
                .await
            }
        }
    }

    /// The dry run's connections, one per selected host; none in a real run.
    pub(super) fn dry_connections(&self) -> Option<Vec<Arc<Connection>>> {
        let stand_in = self.stand_in.as_ref()?;
        Some(
            self.hosts
                .iter()
                .map(|_| Arc::new(Connection::DryRun(stand_in.clone())))
                .collect(),
        )
    }
}

/// Open connections to every selected host, reused by every step of the command.
pub struct Session<'a> {
    pub(super) context: &'a Context,
    connections: Vec<Arc<Connection>>,
    /// Where local steps run.
    here: Connection,
    pub(super) events: Events,
    /// Hosts whose deploy lock this invocation holds.
    locked: Mutex<Vec<usize>>,
    /// Hosts whose history already has this command's record (written with a finish).
    recorded: Mutex<Vec<usize>>,
    /// The release this command is about, for its history records, once it is known.
    subject: Mutex<Option<Subject>>,
}

/// What a command's history records say besides how it ended.
#[derive(Debug, Clone)]
struct Subject {
    info: ReleaseInfo,
    /// What each host served when the command began.
    previous: Vec<Option<String>>,
}

/// How a command ended, for its history records.
pub struct Ending {
    result: history::Outcome,
    /// The first failure: step, host, and what happened.
    failure: Option<(String, String, String)>,
}

impl Ending {
    pub fn ok() -> Ending {
        Ending {
            result: history::Outcome::Ok,
            failure: None,
        }
    }

    /// How the command that returned `result` ended.
    pub(super) fn of<T>(result: &Result<T, Error>) -> Ending {
        let first = |failures: &[executor::StepFailure]| {
            failures
                .first()
                .map(|f| (f.step.clone(), f.host.to_string(), f.outcome.to_string()))
        };
        match result {
            Ok(_) => Ending::ok(),
            Err(Error::Interrupted(signal)) => Ending {
                result: history::Outcome::Interrupted,
                failure: Some((String::new(), String::new(), signal.name().to_string())),
            },
            Err(
                Error::StepFailed(failures)
                | Error::RolledBack { failures, .. }
                | Error::Diverged { failures, .. },
            ) => Ending {
                result: history::Outcome::Failed,
                failure: first(failures),
            },
            Err(other) => Ending {
                result: history::Outcome::Failed,
                failure: Some((String::new(), String::new(), other.to_string())),
            },
        }
    }

    /// For `{{error}}`: which step failed on which host and how, or what stopped the command.
    /// Hooks paste it into shell commands (`curl -d "{{error}}"`), so it keeps only characters
    /// that mean nothing to a shell inside quotes; anything else becomes `_`.
    pub(super) fn describe(&self) -> String {
        let text = match &self.failure {
            None => String::new(),
            Some((step, host, what)) if !step.is_empty() => {
                format!("step {step} failed on {host}: {what}")
            }
            Some((_, _, what)) => what.lines().next().unwrap_or_default().to_string(),
        };
        text.chars()
            .map(|c| {
                if c.is_alphanumeric() || " -_.,:/()=@+%#".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// The same command's record on a host that went back to what it served before.
    pub fn rolled_back(failures: &[executor::StepFailure]) -> Ending {
        Ending {
            result: history::Outcome::RolledBack,
            ..Ending::of::<()>(&Err(Error::StepFailed(failures.to_vec())))
        }
    }
}

impl<'a> Session<'a> {
    /// A session over `connections`, one per host of `context`, in order.
    pub(super) fn new(
        context: &'a Context,
        connections: Vec<Arc<Connection>>,
        events: &Events,
    ) -> Session<'a> {
        Session {
            context,
            connections,
            here: context.here(),
            events: events.clone(),
            locked: Mutex::new(Vec::new()),
            recorded: Mutex::new(Vec::new()),
            subject: Mutex::new(None),
        }
    }

    pub(super) fn hosts(&self) -> &[Host] {
        &self.context.hosts
    }

    /// Runs a step everywhere it is planned and returns each host's result; Ctrl-C stops it.
    pub(super) async fn step(&self, step: &PlannedStep) -> Vec<HostResult> {
        self.step_with(step, &self.context.invocation.cancel).await
    }

    /// The same for a step that must finish once started (switching hosts back, unlocking).
    pub(super) async fn step_to_the_end(&self, step: &PlannedStep) -> Vec<HostResult> {
        self.step_with(step, &Cancel::never()).await
    }

    pub(super) async fn step_with(&self, step: &PlannedStep, cancel: &Cancel) -> Vec<HostResult> {
        executor::execute_step(
            self.hosts(),
            step,
            &self.connections,
            &self.here,
            self.context.concurrency,
            cancel,
            &self.events,
        )
        .await
    }

    /// Runs a step and fails if it failed anywhere.
    pub(super) async fn execute(&self, step: &PlannedStep) -> Result<Vec<HostResult>, Error> {
        let results = self.step(step).await;
        executor::failures(self.hosts(), step, &results).map_err(Error::StepFailed)?;
        Ok(results)
    }

    /// Every selected host's release state, in one round trip.
    pub(super) async fn states(&self) -> Result<Vec<HostState>, Error> {
        let results = self.execute(&plan::state(self.hosts())?).await?;
        Ok(results
            .iter()
            .map(|result| remote::state::parse(&result.stdout))
            .collect())
    }

    /// Takes the deploy lock on every host and reads their state in the same round trip. Either
    /// every host is locked, or none is (what was taken is given back) and the holders, or why
    /// the lock could not be taken, are named.
    pub(super) async fn lock(&self, command: &str) -> Result<Vec<HostState>, Error> {
        let context = self.context;
        let owner = owner::lock_owner(command, &context.invocation.token);
        let deadline = Instant::now() + context.lock_wait;
        loop {
            let step = plan::lock(self.hosts(), &owner)?;
            let results = self.step(&step).await;
            let states: Vec<HostState> = results
                .iter()
                .map(|result| remote::state::parse(&result.stdout))
                .collect();
            // Recorded before anything is decided, so that every way out gives them back.
            self.locked.lock().expect("lock list").extend(
                results
                    .iter()
                    .zip(&states)
                    .filter(|(_, state)| state.lock_taken)
                    .map(|(result, _)| result.host),
            );
            if let Err(failures) = executor::failures(self.hosts(), &step, &results) {
                self.unlock(None).await;
                return Err(Error::StepFailed(failures));
            }
            let errors: Vec<String> = states
                .iter()
                .zip(self.hosts())
                .filter_map(|(state, host)| {
                    let error = state.lock_error.as_ref()?;
                    Some(format!("{}: {error}", host.name))
                })
                .collect();
            if !errors.is_empty() {
                self.unlock(None).await;
                return Err(Error::Refused(format!(
                    "cannot take the deploy lock (nobody holds it); nothing was changed\n  {}",
                    errors.join("\n  ")
                )));
            }
            let holders: Vec<(String, String)> = states
                .iter()
                .zip(self.hosts())
                .filter(|(state, _)| !state.lock_taken)
                .map(|(state, host)| {
                    let holder = match (&state.lock, &state.lock_malformed) {
                        (Some(owner), _) => owner::without_token(owner),
                        (None, Some(what)) => format!(
                            "nobody: a malformed lock ({what}) is in the way; `deployr unlock` removes it"
                        ),
                        (None, None) => "someone who released it meanwhile".into(),
                    };
                    (host.name.clone(), holder)
                })
                .collect();
            if holders.is_empty() {
                return Ok(states);
            }
            self.unlock(None).await;
            if Instant::now() >= deadline || context.invocation.cancel.is_cancelled() {
                return Err(Error::Locked { holders });
            }
            let (host, holder) = &holders[0];
            self.events.send(EventKind::LockWaiting {
                host: host.clone(),
                holder: holder.clone(),
                remaining: deadline.saturating_duration_since(Instant::now()),
            });
            let mut cancel = context.invocation.cancel.clone();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2).min(context.lock_wait)) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }

    /// False once the host was cut off for missing a deadline: nothing more is tried there.
    pub(super) fn is_reachable(&self, host: usize) -> bool {
        self.connections[host].cut_off().is_none()
    }

    /// Notes that these hosts' locks were given back by a step that did more (the finish).
    pub(super) fn unlocked(&self, hosts: impl Iterator<Item = usize>) {
        let mut locked = self.locked.lock().expect("lock list");
        for host in hosts {
            locked.retain(|&held| held != host);
        }
    }

    /// A session over some of this session's hosts, `members` (indices into its hosts), for
    /// work that only they take part in: `context` holds just them, and the part uses the same
    /// connections and holds their locks. What it gives back, records and is about comes back
    /// with [`Session::adopt`].
    pub(super) fn part<'b>(&self, context: &'b Context, members: &[usize]) -> Session<'b> {
        let locked = self.locked.lock().expect("lock list");
        Session {
            context,
            connections: members
                .iter()
                .map(|&i| self.connections[i].clone())
                .collect(),
            here: context.here(),
            events: self.events.clone(),
            locked: Mutex::new(
                (0..members.len())
                    .filter(|&i| locked.contains(&members[i]))
                    .collect(),
            ),
            recorded: Mutex::new(Vec::new()),
            subject: Mutex::new(None),
        }
    }

    /// Takes back a [`Session::part`] over `members`: the locks it gave back, the records it
    /// wrote, and the release it was about. Its connections stay open: they are this
    /// session's.
    pub(super) fn adopt(&self, part: Session<'_>, members: &[usize]) {
        let held = part.locked.into_inner().expect("lock list");
        self.unlocked(
            (0..members.len())
                .filter(|i| !held.contains(i))
                .map(|i| members[i]),
        );
        let recorded = part.recorded.into_inner().expect("recorded");
        self.recorded(recorded.into_iter().map(|i| members[i]));
        if let Some(subject) = part.subject.into_inner().expect("subject") {
            let mut previous = vec![None; self.hosts().len()];
            for (i, served) in subject.previous.into_iter().enumerate() {
                previous[members[i]] = served;
            }
            self.about(&subject.info, &previous);
        }
    }

    /// Notes that these hosts' history has this command's record already, or must get none
    /// (hosts a command locked but did nothing on).
    pub(super) fn recorded(&self, hosts: impl Iterator<Item = usize>) {
        self.recorded.lock().expect("recorded").extend(hosts);
    }

    /// What this command is about: the release, and what each host served before.
    pub(super) fn about(&self, info: &ReleaseInfo, previous: &[Option<String>]) {
        *self.subject.lock().expect("subject") = Some(Subject {
            info: info.clone(),
            previous: previous.to_vec(),
        });
    }

    /// This command's history record for `host`, as one line.
    pub(super) fn record(&self, host: usize, ending: &Ending) -> String {
        let context = self.context;
        let subject = self.subject.lock().expect("subject");
        let subject = subject.as_ref();
        let (failed_step, failed_host, error) = match &ending.failure {
            Some((step, host, error)) => (
                Some(step.clone()).filter(|s| !s.is_empty()),
                Some(host.clone()).filter(|h| !h.is_empty()),
                Some(context.masker.mask(error)),
            ),
            None => (None, None, None),
        };
        let non_empty = |text: &str| Some(text.to_string()).filter(|t| !t.is_empty());
        history::Record {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            id: context.invocation.token.clone(),
            command: context.command.clone(),
            release: subject.map(|s| s.info.release.to_string()),
            commit: subject.and_then(|s| non_empty(&s.info.commit)),
            reference: subject.and_then(|s| non_empty(&s.info.reference)),
            previous: subject.and_then(|s| s.previous.get(host).cloned().flatten()),
            result: ending.result,
            failed_step,
            failed_host,
            error,
            duration_ms: (chrono::Utc::now() - context.invocation.now)
                .num_milliseconds()
                .max(0) as u64,
            actor: context.invocation.actor.clone(),
            machine: context.invocation.machine.clone(),
        }
        .to_line()
    }

    /// Runs `[[on_success]]` or `[[on_failure]]` once, on this machine, after the command
    /// ended; a hook that fails is reported and changes nothing else.
    pub(super) async fn hooks(&self, ending: &Ending, exit_code: u8) {
        let context = self.context;
        let deployfile = &context.deployfile;
        let steps = match ending.result {
            history::Outcome::Ok => &deployfile.on_success,
            _ => &deployfile.on_failure,
        };
        if steps.is_empty() {
            return;
        }
        let subject = self.subject.lock().expect("subject").clone();
        let values = context.hook_values(subject.as_ref(), ending, exit_code);
        for step in steps {
            let planned = match plan::hook(deployfile, step, &values) {
                Ok(planned) => planned,
                Err(error) => {
                    self.notice(format!("warning: cannot run hook `{}`: {error}", step.name));
                    continue;
                }
            };
            let results = self.step_to_the_end(&planned).await;
            if let Err(failures) = executor::failures(self.hosts(), &planned, &results) {
                for failure in failures {
                    self.notice(format!(
                        "warning: hook `{}` failed ({}); the command's exit code stays {exit_code}",
                        failure.step, failure.outcome
                    ));
                }
            }
        }
    }

    /// Gives back this invocation's locks; runs even after Ctrl-C. With `ending`, each host
    /// that has no record of this command yet gets one in the same round trip.
    pub(super) async fn unlock(&self, ending: Option<&Ending>) {
        let hosts: Vec<usize> = std::mem::take(&mut *self.locked.lock().expect("lock list"));
        if hosts.is_empty() {
            return;
        }
        let recorded = self.recorded.lock().expect("recorded").clone();
        let record = |host: usize| {
            let ending = ending.filter(|_| !recorded.contains(&host))?;
            Some(self.record(host, ending))
        };
        if let Ok(step) = plan::unlock(
            self.hosts(),
            &hosts,
            &self.context.invocation.token,
            &record,
        ) {
            let results = self.step_to_the_end(&step).await;
            if let Err(failures) = executor::failures(self.hosts(), &step, &results) {
                let names: Vec<String> = failures.iter().map(|f| f.host.to_string()).collect();
                self.notice(format!(
                    "warning: could not release the deploy lock on {}; `deployr unlock` clears it",
                    names.join(", ")
                ));
            }
        }
    }

    /// Runs the `[[check]]` entries; a failure stops the command before anything changes.
    pub(super) async fn service_checks(&self) -> Result<(), Error> {
        for step in &self.context.checks_plan()? {
            self.execute(step).await?;
        }
        Ok(())
    }

    pub(super) fn notice(&self, text: String) {
        self.events.send(EventKind::Notice { text });
    }

    pub(super) async fn close(self) {
        executor::disconnect(&self.connections).await;
    }
}

impl Context {
    /// Runs `work` over a session with a reporter watching, and waits for the summary. `work`
    /// gets the context of the hosts it works on: with `--allow-unreachable`, the selection
    /// without the hosts that were left out.
    pub(super) async fn with_session<T>(
        &self,
        work: impl AsyncFnOnce(&Context, &Session<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (events, reporter) = self.reporter().spawn();
        events.send(EventKind::RunStarted {
            command: self.command.clone(),
            hosts: self.hosts.iter().map(|h| h.name.clone()).collect(),
        });
        let leave_out = self
            .allow_unreachable
            .map_or(0, |portion| portion.of(self.hosts.len()));
        let connected = executor::settle(self.connect(&events).await, leave_out).await;
        let result = match connected {
            Err(failures) => Err(Error::Connect(failures)),
            Ok(connected) => {
                let left_out = connected.left_out;
                let narrowed;
                let context = if left_out.is_empty() {
                    self
                } else {
                    narrowed = self.without(&left_out);
                    events.send(EventKind::Notice {
                        text: format!(
                            "warning: leaving out {} unreachable host{} (--allow-unreachable): {}",
                            left_out.len(),
                            if left_out.len() == 1 { "" } else { "s" },
                            left_out
                                .iter()
                                .map(|f| format!("{} ({})", f.host, f.error))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                    &narrowed
                };
                let session = Session::new(context, connected.connections, &events);
                let result = self.blame_the_signal(work(context, &session).await);
                self.set_busy("releasing the deploy lock");
                // The hosts record how the work went; the hooks see the exit code, which says
                // that hosts were left out.
                let ending = self.changes_hosts.then(|| Ending::of(&result));
                let result = match result {
                    Ok(_) if !left_out.is_empty() => Err(Error::LeftOut(left_out)),
                    result => result,
                };
                session.unlock(ending.as_ref()).await;
                if let Some(ending) = &ending {
                    self.set_busy("running the hooks");
                    let exit_code = result.as_ref().err().map_or(0, Error::exit_code);
                    session.hooks(ending, exit_code).await;
                }
                session.close().await;
                result
            }
        };
        drop(events);
        let _ = reporter.await;
        result
    }

    /// This context without the hosts that were left out.
    pub(super) fn without(&self, left_out: &[executor::ConnectFailure]) -> Context {
        let mut narrowed = self.clone();
        narrowed
            .hosts
            .retain(|host| !left_out.iter().any(|f| f.host == host.name));
        narrowed
    }
}
