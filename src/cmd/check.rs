//! `deployr check`: can every host be deployed to? Connects, authenticates, verifies host keys,
//! looks at `deploy_to` and the programs prepare needs, then runs the `[[check]]` entries. Changes nothing.

use super::{Context, Session};
use crate::deployfile::Strategy;
use crate::error::Error;
use crate::events::{EventKind, Events};
use crate::inventory::Host;
use crate::plan::{self, PlannedStep};
use crate::remote;

pub async fn command(context: &Context) -> Result<(), Error> {
    let (events, reporter) = context.reporter().spawn();
    // Names the hosts in deployfile order, which the table keeps.
    events.send(EventKind::RunStarted {
        command: context.command.clone(),
        hosts: context.hosts.iter().map(|h| h.name.clone()).collect(),
    });
    let result = probe_and_check(context, &events).await;
    drop(events);
    let _ = reporter.await;
    result
}

/// Connects to every host; probes those it reached, over one session, and reports every host
/// in deployfile order; then, if every host was reached, runs the `[[check]]` entries in that
/// session.
async fn probe_and_check(context: &Context, events: &Events) -> Result<(), Error> {
    let mut connections = Vec::new();
    let mut unreachable = Vec::new();
    for result in context.connect(events).await {
        match result {
            Ok(connection) => connections.push(connection),
            Err(failure) => unreachable.push(failure),
        }
    }
    let reachable = context.without(&unreachable);
    let session = Session::new(&reachable, connections, events);
    let probed = match probe_step(&reachable) {
        Ok(step) => session.step(&step).await,
        Err(error) => {
            session.close().await;
            return Err(error);
        }
    };
    let mut unusable = Vec::new();
    for host in &context.hosts {
        let facts = match unreachable.iter().find(|f| f.host == host.name) {
            Some(failure) => vec![
                ("address".into(), endpoint(host)),
                ("connection".into(), connection_problem(&failure.error)),
                ("deploy_to".into(), "-".into()),
                ("tools".into(), "-".into()),
            ],
            None => {
                let index = reachable.hosts.iter().position(|h| h.name == host.name);
                let result = probed.iter().find(|r| Some(r.host) == index);
                let [deploy_to, tools] = match result {
                    Some(result) => remote::check::find(&result.stdout).map(|found| {
                        found.unwrap_or_else(|| format!("NOT checked ({})", result.outcome))
                    }),
                    None => ["NOT checked".into(), "NOT checked".into()],
                };
                vec![
                    ("address".into(), endpoint(host)),
                    ("connection".into(), "ok".into()),
                    ("deploy_to".into(), deploy_to),
                    ("tools".into(), tools),
                ]
            }
        };
        if facts.iter().any(|(_, value)| is_problem(value)) {
            unusable.push(host.name.clone());
        }
        events.send(EventKind::Probed {
            host: host.name.clone(),
            facts,
        });
    }
    if !unreachable.is_empty() {
        session.close().await;
        return Err(Error::Connect(unreachable));
    }
    let checked = session.service_checks().await;
    session.close().await;
    checked?;
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
fn probe_step(context: &Context) -> Result<PlannedStep, Error> {
    let uploads = context
        .deployfile
        .source
        .as_ref()
        .is_some_and(|source| matches!(source.strategy, Strategy::Upload { .. }));
    Ok(plan::probe(&context.hosts, uploads)?)
}
