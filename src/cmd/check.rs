//! `deployr check`: can every host be deployed to? Connects, authenticates, verifies host keys,
//! looks at `deploy_to` and the programs prepare needs, then runs the `[[check]]` entries. Changes nothing.

use std::sync::Arc;

use super::Context;
use crate::connection::Connection;
use crate::deployfile::Strategy;
use crate::error::Error;
use crate::events::{EventKind, Events, Source};
use crate::executor;
use crate::inventory::Host;
use crate::plan::{self, Plan};
use crate::remote;
use crate::remote::command::Interpreter;
use crate::remote::stand_in::Read;
use crate::transport::{Cancel, Sink, Stream};

pub async fn command(context: &Context) -> Result<(), Error> {
    let probes = probe_plan(context)?;
    let checks = context.checks_plan()?;
    let (events, reporter) = context.reporter().spawn();
    let result = probe_and_check(context, &probes, &checks, &events).await;
    drop(events);
    let _ = reporter.await;
    result
}

async fn probe_and_check(
    context: &Context,
    probes: &Plan,
    checks: &Plan,
    events: &Events,
) -> Result<(), Error> {
    let results = context.connect(events).await;
    let mut connections = Vec::new();
    let mut unreachable = Vec::new();
    let mut unusable = Vec::new();
    for ((host, result), run) in context
        .hosts
        .iter()
        .zip(results)
        .zip(probes.steps[0].runs())
    {
        match result {
            Ok(connection) => {
                let facts = probe(
                    host,
                    &connection,
                    &probes.steps[0].name,
                    &run.script,
                    context.invocation.cancel.clone(),
                    events,
                )
                .await;
                if facts.iter().any(|(_, value)| is_problem(value)) {
                    unusable.push(host.name.clone());
                }
                events.send(EventKind::Probed {
                    host: host.name.clone(),
                    facts,
                });
                connections.push(connection);
            }
            Err(failure) => {
                events.send(EventKind::Probed {
                    host: host.name.clone(),
                    facts: vec![
                        ("address".into(), endpoint(host)),
                        ("connection".into(), connection_problem(&failure.error)),
                        ("deploy_to".into(), "-".into()),
                        ("tools".into(), "-".into()),
                    ],
                });
                unreachable.push(failure);
            }
        }
    }
    if !unreachable.is_empty() {
        executor::disconnect(&connections).await;
        return Err(Error::Connect(unreachable));
    }
    let result = executor::execute(
        checks,
        &connections,
        &context.here(),
        context.concurrency,
        &context.invocation.cancel,
        events,
    )
    .await;
    executor::disconnect(&connections).await;
    result.map_err(Error::StepFailed)?;
    if unusable.is_empty() {
        Ok(())
    } else {
        Err(Error::CheckFailed {
            what: "deploy_to or the tools that prepare needs".into(),
            hosts: unusable,
        })
    }
}

fn is_problem(value: &str) -> bool {
    value.starts_with("NOT") || value.starts_with("MISSING")
}

fn endpoint(host: &Host) -> String {
    match &host.address {
        crate::inventory::Address::Local => "local".into(),
        crate::inventory::Address::Remote(address) => format!("{address}:{}", host.ssh.port),
    }
}

fn connection_problem(error: &crate::connect_error::ConnectError) -> String {
    use crate::connect_error::ConnectError::*;
    match error {
        Unreachable { .. } => "FAILED: unreachable",
        Timeout { .. } => "FAILED: timed out",
        UnknownHostKey { .. } => "FAILED: unknown host key",
        HostKeyChanged { .. } => "FAILED: HOST KEY CHANGED",
        RevokedHostKey { .. } => "FAILED: host key REVOKED",
        HostCertificate { .. } => "FAILED: bad host certificate",
        KnownHosts { .. } => "FAILED: known_hosts unreadable",
        Auth { .. } | AuthDisconnected { .. } => "FAILED: authentication",
        Protocol(_) => "FAILED: protocol error",
        Bastion { .. } => "FAILED: bastion",
        ProxyCommand { .. } => "FAILED: ProxyCommand",
        Shell(_) => "FAILED: shell start-up files",
    }
    .to_string()
}

/// The probe of every host (`remote::check`): what prepare will need there, for the strategy
/// the deployfile uses.
fn probe_plan(context: &Context) -> Result<Plan, Error> {
    let uploads = context
        .deployfile
        .source
        .as_ref()
        .is_some_and(|source| matches!(source.strategy, Strategy::Upload { .. }));
    Ok(Plan {
        hosts: context.hosts.clone(),
        steps: vec![plan::probe(&context.hosts, uploads)?],
    })
}

/// Where the probe's lines go: its standard output back here, to be read; in a dry run, the
/// probe itself to the reporter.
struct ProbeLines<'a> {
    source: Source,
    events: &'a Events,
    stdout: Vec<String>,
}

impl Sink for ProbeLines<'_> {
    fn line(&mut self, stream: Stream, line: String) {
        if stream == Stream::Stdout {
            self.stdout.push(line)
        }
    }

    fn would_send(&mut self, script: &str) {
        self.events.would_run(&self.source, script);
    }
}

async fn probe(
    host: &Host,
    connection: &Arc<Connection>,
    step: &str,
    script: &str,
    cancel: Cancel,
    events: &Events,
) -> Vec<(String, String)> {
    events.step_started(&host.name, step);
    let started = std::time::Instant::now();
    let mut lines = ProbeLines {
        source: Source::new(&host.name, step),
        events,
        stdout: Vec::new(),
    };
    let outcome = connection
        .exec(
            script,
            Some(Read::Probe),
            Interpreter::DeployrSh,
            None,
            cancel,
            &mut lines,
        )
        .await;
    events.step_finished(&host.name, step, &outcome, started.elapsed());
    let [deploy_to, tools] = remote::check::find(&lines.stdout)
        .map(|found| found.unwrap_or_else(|| format!("NOT checked ({outcome})")));
    vec![
        ("address".into(), endpoint(host)),
        ("connection".into(), "ok".into()),
        ("deploy_to".into(), deploy_to),
        ("tools".into(), tools),
    ]
}
