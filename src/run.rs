//! Parallel execution of a plan. Steps run in order; each step runs on all its hosts at once
//! (within the concurrency limits) and the next starts only when it has finished everywhere, so
//! `once` steps and cross-host ordering are well defined. Nothing here prints: every start, line
//! and result is an event for the reporter.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

use crate::inventory::Host;
use crate::plan::{Plan, PlannedRun, PlannedStep};
use crate::report::{EventKind, Events};
use crate::ssh::ConnectError;
use crate::transport::{Connection, Outcome};

#[derive(Debug)]
pub struct ConnectFailure {
    pub host: String,
    pub error: ConnectError,
}

#[derive(Debug, Clone)]
pub struct StepFailure {
    pub host: String,
    pub step: String,
    pub outcome: Outcome,
}

/// Opens one connection per host, all at once within `concurrency`; one result per host, in
/// the order of `hosts`.
pub async fn connect(
    hosts: &[Host],
    concurrency: usize,
    events: &Events,
) -> Vec<Result<Arc<Connection>, ConnectFailure>> {
    futures::stream::iter(hosts)
        .map(|host| async move {
            let started = Instant::now();
            match Connection::open(host).await {
                Ok(connection) => {
                    events.send(EventKind::Connected {
                        host: host.name.clone(),
                        duration: started.elapsed(),
                    });
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

/// Either every host is connected, or the caller gets every failure (and the connections that
/// did open are closed), so that it can refuse to run anything anywhere.
pub async fn connect_all(
    hosts: &[Host],
    concurrency: usize,
    events: &Events,
) -> Result<Vec<Arc<Connection>>, Vec<ConnectFailure>> {
    let (connected, failed): (Vec<_>, Vec<_>) = connect(hosts, concurrency, events)
        .await
        .into_iter()
        .partition(Result::is_ok);
    let connected: Vec<Arc<Connection>> = connected.into_iter().filter_map(Result::ok).collect();
    if failed.is_empty() {
        Ok(connected)
    } else {
        disconnect(&connected).await;
        Err(failed.into_iter().filter_map(Result::err).collect())
    }
}

/// Runs every step of the plan. A failing step finishes on every host before the run stops,
/// and every host that failed it is returned.
pub async fn execute(
    plan: &Plan,
    connections: &[Arc<Connection>],
    concurrency: usize,
    events: &Events,
) -> Result<(), Vec<StepFailure>> {
    for step in &plan.steps {
        let failures = execute_step(plan, step, connections, concurrency, events).await;
        if !failures.is_empty() {
            return Err(failures);
        }
    }
    Ok(())
}

pub async fn execute_step(
    plan: &Plan,
    step: &PlannedStep,
    connections: &[Arc<Connection>],
    concurrency: usize,
    events: &Events,
) -> Vec<StepFailure> {
    if step.runs.is_empty() {
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
    let mut outcomes: Vec<(usize, Outcome)> = futures::stream::iter(&step.runs)
        .map(|run| async move {
            let host = &plan.hosts[run.host];
            let outcome = run_one(host, step, run, &connections[run.host], events).await;
            (run.host, outcome)
        })
        .buffer_unordered(limit)
        .collect()
        .await;
    outcomes.sort_by_key(|(host, _)| *host);
    outcomes
        .into_iter()
        .filter(|(_, outcome)| !outcome.success())
        .map(|(host, outcome)| StepFailure {
            host: plan.hosts[host].name.clone(),
            step: step.name.clone(),
            outcome,
        })
        .collect()
}

async fn run_one(
    host: &Host,
    step: &PlannedStep,
    run: &PlannedRun,
    connection: &Connection,
    events: &Events,
) -> Outcome {
    events.send(EventKind::StepStarted {
        host: host.name.clone(),
        step: step.name.clone(),
    });
    let started = Instant::now();
    let mut on_line = |stream, line| {
        events.send(EventKind::Output {
            host: host.name.clone(),
            step: step.name.clone(),
            stream,
            line,
        })
    };
    let outcome = connection
        .exec(&run.script, step.timeout, &mut on_line)
        .await;
    events.send(EventKind::StepFinished {
        host: host.name.clone(),
        step: step.name.clone(),
        outcome: outcome.clone(),
        duration: started.elapsed(),
    });
    outcome
}

pub async fn disconnect(connections: &[Arc<Connection>]) {
    futures::future::join_all(connections.iter().map(|c| c.close())).await;
}
