//! Connecting to the hosts, and running one step on all its hosts at once (within the
//! concurrency limits). A command's session runs its steps one after another, the next only
//! when the last has finished everywhere, so `once` steps and cross-host ordering are well
//! defined. Nothing here prints: every start, line and result is an event for the reporter.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::artifact::Artifact;
use crate::connect_error::ConnectError;
use crate::connection::{Armed, Connection};
use crate::deployfile::Connecting;
use crate::events::{EventKind, Events, Source};
use crate::inventory::LOCAL;
use crate::inventory::{HOUSEKEEPING_TIMEOUT, Host, TRANSFER_TIMEOUT};
use crate::plan::{Destination, HostScript, PlannedStep, StepKind};
use crate::remote::command::Interpreter;
use crate::remote::stand_in::Read;
use crate::transport::{Cancel, Outcome, Sink, Stream};

#[derive(Debug)]
pub struct ConnectFailure {
    pub host: String,
    pub error: ConnectError,
}

#[derive(Debug, Clone)]
pub struct StepFailure {
    pub host: Target,
    pub step: String,
    pub outcome: Outcome,
}

/// Where a step failed: on a host, on this machine (a local step), or on every host at once
/// (a plan that could not be made, a signal between steps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Host(String),
    ThisMachine,
    EveryHost,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Target::Host(name) => write!(f, "{name}"),
            Target::ThisMachine => write!(f, "{LOCAL}"),
            Target::EveryHost => write!(f, "every host"),
        }
    }
}

/// Opens one connection per host, all at once within `concurrency`, starting them no faster
/// than `connecting.rate` a second (after a first burst) and trying a connection that was
/// refused or dropped before authentication again, with a growing pause, up to
/// `connecting.attempts` times; one result per host, in the order of `hosts`.
pub async fn connect(
    hosts: &[Host],
    concurrency: usize,
    connecting: Connecting,
    events: &Events,
) -> Vec<Result<Arc<Connection>, ConnectFailure>> {
    let bastions = crate::ssh::Bastions::default();
    let bastions = &bastions;
    let pacer = &Pacer::new(connecting.rate);
    futures::stream::iter(hosts)
        .map(|host| async move {
            let started = Instant::now();
            let mut attempt = 1;
            let result = loop {
                pacer.wait_turn().await;
                match Connection::open(host, bastions).await {
                    Err(error) if attempt < connecting.attempts && is_transient(&error) => {
                        tokio::time::sleep(RETRY_PAUSE * (1 << (attempt - 1).min(4))).await;
                        attempt += 1;
                    }
                    result => break result,
                }
            };
            match result {
                Ok(connection) => {
                    if attempt > 1 {
                        events.send(EventKind::Notice {
                            text: format!("{}: connected at attempt {attempt}", host.name),
                        });
                    }
                    events.send(EventKind::Connected {
                        host: host.name.clone(),
                        duration: started.elapsed(),
                    });
                    for line in connection.start_up() {
                        events.send(EventKind::StartUpOutput {
                            host: host.name.clone(),
                            line: line.clone(),
                        });
                    }
                    Ok(Arc::new(connection))
                }
                Err(error) => {
                    events.send(EventKind::ConnectFailed {
                        host: host.name.clone(),
                        error: error.to_string(),
                    });
                    Err(ConnectFailure {
                        host: host.name.clone(),
                        error,
                    })
                }
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}

/// The pause before the second attempt to connect; it doubles with each further one.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// A failure that a second try may not meet: the connection was refused, reset or dropped
/// before the server authenticated us (a restarting sshd, MaxStartups shedding load, a busy
/// NAT gateway). Host-key, known_hosts and authentication failures are answers, not accidents,
/// and a timeout has already cost its whole bound: neither is tried again.
fn is_transient(error: &ConnectError) -> bool {
    matches!(
        error,
        ConnectError::Unreachable { .. } | ConnectError::Protocol(_)
    )
}

/// Spaces out the start of connections: the first `BURST` start at once, every later one
/// `1 / rate` after the one before.
struct Pacer {
    since: Instant,
    gap: Duration,
    started: AtomicUsize,
}

impl Pacer {
    fn new(rate: usize) -> Pacer {
        Pacer {
            since: Instant::now(),
            gap: Duration::from_secs(1) / rate.max(1) as u32,
            started: AtomicUsize::new(0),
        }
    }

    async fn wait_turn(&self) {
        let turn = self.started.fetch_add(1, Ordering::Relaxed);
        let paced = turn.saturating_sub(Connecting::BURST) as u32;
        tokio::time::sleep_until((self.since + self.gap * paced).into()).await;
    }
}

/// Whether a host that could not be connected to may be left out under `--allow-unreachable`:
/// a host key that is unknown or changed, or an unusable known_hosts file, always stops the
/// command, since going on would trust a host that may not be the one meant.
pub fn may_leave_out(error: &ConnectError) -> bool {
    !matches!(
        error,
        ConnectError::UnknownHostKey { .. }
            | ConnectError::HostKeyChanged { .. }
            | ConnectError::KnownHosts { .. }
    )
}

/// The outcome of connecting to every selected host: either every host is connected, or the
/// caller gets every failure (and the connections that did open are closed), so that it can
/// refuse to run anything anywhere; or, when `leave_out` allows it, the connected hosts and
/// the failures of those left out.
pub struct Connected {
    /// One per host that was connected, in the selection's order.
    pub connections: Vec<Arc<Connection>>,
    pub left_out: Vec<ConnectFailure>,
}

/// Settles what connecting to every host gave (one result per host): up to `leave_out` hosts
/// that cannot be reached (see [`may_leave_out`]) are left out, as long as one host is left to
/// work on; any other failure closes what was opened.
pub async fn settle(
    results: Vec<Result<Arc<Connection>, ConnectFailure>>,
    leave_out: usize,
) -> Result<Connected, Vec<ConnectFailure>> {
    let mut connections = Vec::new();
    let mut failed = Vec::new();
    for result in results {
        match result {
            Ok(connection) => connections.push(connection),
            Err(failure) => failed.push(failure),
        }
    }
    let allowed = !connections.is_empty()
        && failed.len() <= leave_out
        && failed.iter().all(|f| may_leave_out(&f.error));
    if failed.is_empty() || allowed {
        Ok(Connected {
            connections,
            left_out: failed,
        })
    } else {
        disconnect(&connections).await;
        Err(failed)
    }
}

/// How one host's run of a step ended.
#[derive(Debug, Clone)]
pub struct HostResult {
    /// Index into the plan's hosts (0 for a local step, which has none).
    pub host: usize,
    pub outcome: Outcome,
    pub finished: Instant,
    /// Standard output, for steps that capture it.
    pub stdout: Vec<String>,
    /// An armed step's host was told to act: it may have acted even if it failed to say so.
    pub fired: bool,
}

/// The hosts where a step failed, as an error.
pub fn failures(
    hosts: &[Host],
    step: &PlannedStep,
    results: &[HostResult],
) -> Result<(), Vec<StepFailure>> {
    let failed: Vec<StepFailure> = results
        .iter()
        .filter(|result| !result.outcome.success())
        .map(|result| StepFailure {
            host: if step.is_local() {
                Target::ThisMachine
            } else {
                Target::Host(hosts[result.host].name.clone())
            },
            step: step.name.clone(),
            outcome: result.outcome.clone(),
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}

/// Runs one step on all its hosts at once (within the limits), or once `here` (this machine,
/// or a dry run's stand-in for it) if it is local; one result per run, in host order.
pub async fn execute_step(
    hosts: &[Host],
    step: &PlannedStep,
    connections: &[Arc<Connection>],
    here: &Connection,
    concurrency: usize,
    cancel: &Cancel,
    events: &Events,
) -> Vec<HostResult> {
    if !step.is_local() && step.hosts().is_empty() {
        events.send(EventKind::StepSkipped {
            step: step.name.clone(),
        });
        return Vec::new();
    }
    let limit = step
        .concurrency
        .unwrap_or(usize::MAX)
        .min(concurrency)
        .max(1);
    let mut results: Vec<HostResult> = match &step.kind {
        StepKind::Local { script, reads } => {
            let job = Job {
                host: 0,
                script,
                interpreter: Interpreter::DeployrSh,
                reads: *reads,
            };
            return vec![run_one(LOCAL, step, job, here, cancel.clone(), events).await];
        }
        StepKind::Armed { runs } => {
            return execute_armed(hosts, step, runs, connections, limit, cancel, events).await;
        }
        StepKind::Remote {
            runs,
            interpreter,
            reads,
        } => {
            futures::stream::iter(runs)
                .map(|run| {
                    let job = Job {
                        host: run.host,
                        script: &run.script,
                        interpreter: *interpreter,
                        reads: *reads,
                    };
                    let (host, connection) = (&hosts[run.host].name, &connections[run.host]);
                    run_one(host, step, job, connection, cancel.clone(), events)
                })
                .buffer_unordered(limit)
                .collect()
                .await
        }
        StepKind::Upload { artifact, to } => {
            futures::stream::iter(to)
                .map(|to| {
                    let (host, connection) = (&hosts[to.host].name, &connections[to.host]);
                    upload_one(host, step, to, artifact, connection, events)
                })
                .buffer_unordered(limit)
                .collect()
                .await
        }
    };
    results.sort_by_key(|result| result.host);
    results
}

/// One host's script of a step, and how to run it.
struct Job<'a> {
    /// Index into the plan's hosts (0 for a local step).
    host: usize,
    script: &'a str,
    interpreter: Interpreter,
    reads: Option<Read>,
}

/// Where a step's lines go on one host: its standard output back to deployr for its own reads
/// (`capture`), everything else to the reporter, the lines of one read from the host in one
/// event.
struct StepLines<'a> {
    source: Source,
    events: &'a Events,
    capture: bool,
    stdout: Vec<String>,
    chunk: Vec<(Stream, String)>,
}

impl Sink for StepLines<'_> {
    fn line(&mut self, stream: Stream, line: String) {
        if self.capture && stream == Stream::Stdout {
            self.stdout.push(line);
        } else {
            self.chunk.push((stream, line));
        }
    }

    fn flush(&mut self) {
        let chunk = std::mem::take(&mut self.chunk);
        self.events.output_lines(&self.source, chunk);
    }

    fn would_send(&mut self, script: &str) {
        self.events.would_run(&self.source, script);
    }
}

/// Where an armed step's lines go on one host: to the reporter as they come.
struct Shown<'a> {
    source: Source,
    events: &'a Events,
}

impl Sink for Shown<'_> {
    fn line(&mut self, stream: Stream, line: String) {
        self.events.output_of(&self.source, stream, line);
    }

    fn would_send(&mut self, script: &str) {
        self.events.would_run(&self.source, script);
    }
}

async fn run_one(
    host: &str,
    step: &PlannedStep,
    job: Job<'_>,
    connection: &Connection,
    cancel: Cancel,
    events: &Events,
) -> HostResult {
    events.step_started(host, &step.name);
    let started = Instant::now();
    let mut lines = StepLines {
        source: Source::new(host, &step.name),
        events,
        capture: job.reads.is_some(),
        stdout: Vec::new(),
        chunk: Vec::new(),
    };
    let outcome = connection
        .exec(
            job.script,
            job.reads,
            job.interpreter,
            step.timeout,
            cancel,
            &mut lines,
        )
        .await;
    lines.flush();
    let stdout = lines.stdout;
    let finished = Instant::now();
    events.step_finished(host, &step.name, &outcome, finished - started);
    HostResult {
        host: job.host,
        outcome,
        finished,
        stdout,
        fired: false,
    }
}

/// Sends the artifact to one destination, reporting the bytes sent as
/// they go and the throughput at the end.
async fn upload_one(
    host: &str,
    step: &PlannedStep,
    to: &Destination,
    artifact: &Artifact,
    connection: &Connection,
    events: &Events,
) -> HostResult {
    events.step_started(host, &step.name);
    let started = Instant::now();
    let total = artifact.size;
    let mut reported = 0;
    let mut progress = |sent: u64| {
        // A line per MiB at most: enough for a live bar, not a flood of events.
        if sent == total || sent - reported >= 1 << 20 {
            reported = sent;
            events.send(EventKind::Transferred {
                host: host.to_string(),
                step: step.name.clone(),
                sent,
                total,
            });
        }
    };
    let bound = step.timeout.unwrap_or(TRANSFER_TIMEOUT);
    let mut shown = Shown {
        source: Source::new(host, &step.name),
        events,
    };
    let result = connection
        .upload(&artifact.path, &to.path, bound, &mut progress, &mut shown)
        .await;
    let finished = Instant::now();
    let duration = finished - started;
    let outcome = match result {
        Ok(()) => {
            events.output(
                host,
                &step.name,
                Stream::Stdout,
                format!(
                    "sent {:.1} MiB in {:.2}s ({:.1} MiB/s)",
                    total as f64 / MIB,
                    duration.as_secs_f64(),
                    total as f64 / MIB / duration.as_secs_f64().max(1e-6)
                ),
            );
            Outcome::Exited(0)
        }
        Err(reason) => Outcome::Lost(reason),
    };
    events.step_finished(host, &step.name, &outcome, duration);
    HostResult {
        host: to.host,
        outcome,
        finished,
        stdout: Vec::new(),
        fired: false,
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// An armed step: start and ready every host's command (in parallel), then, only if every
/// host is ready, tell them all to go in one quick pass, so they act within microseconds of each
/// other; if any host could not get ready, every host's command is called off and nothing acts.
async fn execute_armed(
    hosts: &[Host],
    step: &PlannedStep,
    runs: &[HostScript],
    connections: &[Arc<Connection>],
    limit: usize,
    cancel: &Cancel,
    events: &Events,
) -> Vec<HostResult> {
    let printer = |host: usize| Shown {
        source: Source::new(&hosts[host].name, &step.name),
        events,
    };
    let mut armed: Vec<(usize, Instant, Result<Armed, Outcome>)> = futures::stream::iter(runs)
        .map(|run| async move {
            events.step_started(&hosts[run.host].name, &step.name);
            let started = Instant::now();
            let connection = &connections[run.host];
            let bound = step.timeout.unwrap_or(HOUSEKEEPING_TIMEOUT);
            let result = connection
                .arm(&run.script, bound, cancel.clone(), &mut printer(run.host))
                .await;
            (run.host, started, result)
        })
        .buffer_unordered(limit)
        .collect()
        .await;
    armed.sort_by_key(|(host, _, _)| *host);
    let ready = armed.iter().all(|(_, _, result)| result.is_ok()) && !cancel.is_cancelled();
    // `go` to every host at once: each send only waits for its own connection.
    let fired =
        futures::future::join_all(armed.into_iter().map(|(host, started, result)| async move {
            match result {
                Ok(mut command) if ready => {
                    let went = command.fire().await;
                    (host, started, Ok((command, went)))
                }
                Ok(command) => (host, started, Ok((command, false))),
                Err(outcome) => (host, started, Err(outcome)),
            }
        }))
        .await;
    // Every fired host says when it has acted, then waits: only once all have acted are
    // they told to finish, so no host's clean-up runs while others are still switching.
    let acted: Vec<(usize, Instant, Acted)> =
        futures::future::join_all(fired.into_iter().map(|(host, started, result)| async move {
            let acted = match result {
                Ok((mut command, true)) => match command.acted(&mut printer(host)).await {
                    None => Acted::Waiting(command, Instant::now()),
                    Some(outcome) => Acted::Ended(outcome),
                },
                Ok((command, false)) => Acted::Ended(command.disarm(&mut printer(host)).await),
                Err(outcome) => Acted::Ended(outcome),
            };
            (host, started, acted)
        }))
        .await;
    let mut waiting = Vec::with_capacity(acted.len());
    for (host, started, acted) in acted {
        if let Acted::Waiting(mut command, at) = acted {
            command.done().await;
            waiting.push((host, started, Acted::Waiting(command, at)));
        } else {
            waiting.push((host, started, acted));
        }
    }
    futures::future::join_all(
        waiting
            .into_iter()
            .map(|(host, started, acted)| async move {
                let (outcome, finished) = match acted {
                    // The time it acted is what the switch skew is made of.
                    Acted::Waiting(command, at) => (command.finish(&mut printer(host)).await, at),
                    Acted::Ended(outcome) => (outcome, Instant::now()),
                };
                events.step_finished(
                    &hosts[host].name,
                    &step.name,
                    &outcome,
                    Instant::now() - started,
                );
                HostResult {
                    host,
                    outcome,
                    finished,
                    stdout: Vec::new(),
                    // Every host was sent `go` once all were ready. One whose `go` could not be
                    // sent in time counts too: it may still be on its way, and the host act.
                    fired: ready,
                }
            }),
    )
    .await
}

/// Where a fired command is: acted and waiting for `done`, or already ended.
enum Acted {
    Waiting(Armed, Instant),
    Ended(Outcome),
}

pub async fn disconnect(connections: &[Arc<Connection>]) {
    futures::future::join_all(connections.iter().map(|c| c.close())).await;
}
