//! Which step runs where, with which exact script: each step is built completely before it
//! runs, and `--dry-run` runs the very same steps over a transport that prints them.

use std::time::Duration;

use crate::artifact::{Artifact, Workspace};
use crate::deployfile::{ActivateStep, Deployfile, Source, Step, Strategy};
use crate::inventory::{Host, TRANSFER_TIMEOUT};
use crate::release;
use crate::release_id::ReleaseId;
use crate::remote::command::{self, Interpreter, WorkDir};
use crate::remote::stand_in::Read;
use crate::remote::{self, code, fetch};
use crate::template::Values;

/// Why a step could not be planned: a value that no shell word can hold.
pub use crate::shell::QuoteError;

#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub name: String,
    pub timeout: Option<Duration>,
    pub concurrency: Option<usize>,
    pub kind: StepKind,
}

/// What a step does, each kind with only what it needs. Host runs are empty when the step's
/// roles match no selected host (a `once` step outside a canary).
#[derive(Debug, Clone)]
pub enum StepKind {
    /// A script per host, run in its shell (`interpreter`). `reads` says which of deployr's
    /// own reads it is, if it is one: its stdout comes back to deployr instead of being shown,
    /// and a dry run answers it.
    Remote {
        runs: Vec<HostScript>,
        interpreter: Interpreter,
        reads: Option<Read>,
    },
    /// The switch: every host's script is started and made ready first, then all are told to
    /// go at once.
    Armed { runs: Vec<HostScript> },
    /// One script, run once on this machine.
    Local { script: String, reads: Option<Read> },
    /// The artifact, sent to each destination.
    Upload {
        artifact: Artifact,
        to: Vec<Destination>,
    },
}

/// Where an upload puts the artifact: a path on a host.
#[derive(Debug, Clone)]
pub struct Destination {
    pub host: usize,
    pub path: String,
}

impl PlannedStep {
    pub fn new(name: &str, kind: StepKind) -> PlannedStep {
        PlannedStep {
            name: name.to_string(),
            timeout: None,
            concurrency: None,
            kind,
        }
    }

    /// The hosts the step runs on, by index; none for a local step.
    pub fn hosts(&self) -> Vec<usize> {
        match &self.kind {
            StepKind::Remote { runs, .. } | StepKind::Armed { runs } => {
                runs.iter().map(|run| run.host).collect()
            }
            StepKind::Upload { to, .. } => to.iter().map(|d| d.host).collect(),
            StepKind::Local { .. } => Vec::new(),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.kind, StepKind::Local { .. })
    }

    /// Keeps the step's runs on the hosts `keep` keeps (a wave of a canary activation).
    pub fn retain_hosts(&mut self, keep: impl Fn(usize) -> bool) {
        match &mut self.kind {
            StepKind::Remote { runs, .. } | StepKind::Armed { runs } => {
                runs.retain(|run| keep(run.host))
            }
            StepKind::Upload { to, .. } => to.retain(|d| keep(d.host)),
            StepKind::Local { .. } => {}
        }
    }
}

/// One host's script of a step.
#[derive(Debug, Clone)]
pub struct HostScript {
    pub host: usize,
    pub script: String,
}

/// The hosts a step runs on: those with its roles, or only the first of them for `once`.
pub fn hosts_for(step_roles: Option<&[String]>, once: bool, hosts: &[Host]) -> Vec<usize> {
    let matching = hosts
        .iter()
        .enumerate()
        .filter(|(_, host)| step_roles.is_none_or(|roles| host.has_any_role(roles)))
        .map(|(index, _)| index);
    if once {
        matching.take(1).collect()
    } else {
        matching.collect()
    }
}

/// Steps that run in `current_path` (tasks and checks), on the hosts their roles select.
pub fn in_current(
    deployfile: &Deployfile,
    hosts: &[Host],
    steps: &[Step],
    timestamp: &str,
) -> Result<Vec<PlannedStep>, QuoteError> {
    let mut planned = Vec::new();
    for step in steps {
        if step.local {
            let values = local_values(deployfile, timestamp, None);
            planned.push(local_step(deployfile, step, &values)?);
            continue;
        }
        let mut runs = Vec::new();
        for index in hosts_for(step.roles.as_deref(), step.once, hosts) {
            let host = &hosts[index];
            let values = host.values(&deployfile.app.name, timestamp);
            let command = step.command.render(&values);
            runs.push(HostScript {
                host: index,
                script: command::on_host(
                    WorkDir::Current(host),
                    &deployfile.env,
                    &values,
                    &command,
                )?,
            });
        }
        planned.push(PlannedStep {
            timeout: step.timeout,
            concurrency: step.concurrency,
            ..PlannedStep::new(&step.name, in_login_shell(runs))
        });
    }
    Ok(planned)
}

/// What a release step knows about the release.
#[derive(Debug, Clone)]
pub struct ReleaseInfo {
    pub release: ReleaseId,
    pub commit: String,
    pub reference: String,
}

/// A host's variables while it works on a release.
pub fn release_values(
    deployfile: &Deployfile,
    host: &Host,
    timestamp: &str,
    info: &ReleaseInfo,
    previous: Option<&str>,
) -> Values {
    let mut values = host.values(&deployfile.app.name, timestamp);
    values.set("release", info.release.as_str());
    values.set("release_path", release::release_path(host, &info.release));
    values.set("previous_release", previous.unwrap_or_default());
    values.set("commit", &info.commit);
    values.set("ref", &info.reference);
    values
}

/// What a command on this machine knows: the app, the time, the release if there is one, and
/// the `[vars]` that need no host.
pub fn local_values(
    deployfile: &Deployfile,
    timestamp: &str,
    release: Option<(&ReleaseInfo, Option<&str>)>,
) -> Values {
    let mut values = Values::default();
    values.set("app", &deployfile.app.name);
    values.set("timestamp", timestamp);
    let builtins = values.clone();
    for (name, template) in &deployfile.local_vars {
        values.set(name, template.render(&builtins));
    }
    if let Some((info, previous)) = release {
        values.set("release", info.release.as_str());
        values.set("commit", &info.commit);
        values.set("ref", &info.reference);
        values.set("previous_release", previous.unwrap_or_default());
    }
    values
}

/// An `[[on_success]]` or `[[on_failure]]` step, with the values of the command that ended.
pub fn hook(
    deployfile: &Deployfile,
    step: &Step,
    values: &Values,
) -> Result<PlannedStep, QuoteError> {
    local_step(deployfile, step, values)
}

/// A local step: once, on this machine, in the deployfile's directory.
fn local_step(
    deployfile: &Deployfile,
    step: &Step,
    values: &Values,
) -> Result<PlannedStep, QuoteError> {
    let dir = deployfile.directory();
    let command = step.command.render(values);
    let script = command::here(
        WorkDir::Path(&dir.to_string_lossy()),
        &deployfile.env,
        values,
        &command,
    )?
    .finish();
    Ok(PlannedStep {
        timeout: step.timeout,
        ..PlannedStep::new(&step.name, here(script))
    })
}

/// A deployfile step run in the release directory on the hosts its roles select, or once on
/// this machine if it is local.
fn release_step(
    deployfile: &Deployfile,
    hosts: &[Host],
    step: &Step,
    timestamp: &str,
    info: &ReleaseInfo,
    previous: &[Option<String>],
) -> Result<PlannedStep, QuoteError> {
    if step.local {
        let previous = previous.first().cloned().flatten();
        let values = local_values(deployfile, timestamp, Some((info, previous.as_deref())));
        return local_step(deployfile, step, &values);
    }
    let mut runs = Vec::new();
    for index in hosts_for(step.roles.as_deref(), step.once, hosts) {
        let host = &hosts[index];
        let values = release_values(
            deployfile,
            host,
            timestamp,
            info,
            previous[index].as_deref(),
        );
        let dir = release::release_path(host, &info.release);
        let command = step.command.render(&values);
        runs.push(HostScript {
            host: index,
            script: command::on_host(WorkDir::Path(&dir), &deployfile.env, &values, &command)?,
        });
    }
    Ok(PlannedStep {
        timeout: step.timeout,
        concurrency: step.concurrency,
        ..PlannedStep::new(&step.name, in_login_shell(runs))
    })
}

/// One of deployr's own commands on the given hosts, bounded by their `housekeeping_timeout`.
fn own_step(
    name: &str,
    hosts: &[Host],
    on: impl IntoIterator<Item = usize>,
    reads: Option<Read>,
    mut script: impl FnMut(usize, &Host) -> Result<String, QuoteError>,
) -> Result<PlannedStep, QuoteError> {
    let mut runs = Vec::new();
    for index in on {
        runs.push(HostScript {
            host: index,
            script: script(index, &hosts[index])?,
        });
    }
    let timeout = runs
        .iter()
        .map(|run| hosts[run.host].housekeeping_timeout)
        .max();
    Ok(PlannedStep {
        timeout,
        ..PlannedStep::new(
            name,
            StepKind::Remote {
                runs,
                interpreter: Interpreter::DeployrSh,
                reads,
            },
        )
    })
}

/// Deployfile commands: each hands its command to the host's login shell.
fn in_login_shell(runs: Vec<HostScript>) -> StepKind {
    StepKind::Remote {
        runs,
        interpreter: Interpreter::LoginShell,
        reads: None,
    }
}

/// A script run once, on this machine, shown as it runs.
fn here(script: String) -> StepKind {
    StepKind::Local {
        script,
        reads: None,
    }
}

/// A step that moves code: bounded by [`TRANSFER_TIMEOUT`], not by the housekeeping bound.
fn transfer(step: PlannedStep) -> PlannedStep {
    PlannedStep {
        timeout: Some(TRANSFER_TIMEOUT),
        ..step
    }
}

/// Reads every host's release state (one command per host).
pub fn state(hosts: &[Host]) -> Result<PlannedStep, QuoteError> {
    own_step(
        "state",
        hosts,
        0..hosts.len(),
        Some(Read::State),
        |_, host| remote::state::script(host),
    )
}

/// `deployr check`'s probe of `deploy_to` and of the programs that prepare needs (those of
/// the upload strategy with `uploads`), on every host; read-only.
pub fn probe(hosts: &[Host], uploads: bool) -> Result<PlannedStep, QuoteError> {
    own_step(
        "probe",
        hosts,
        0..hosts.len(),
        Some(Read::Probe),
        |_, host| remote::check::probe(host, uploads),
    )
}

/// Takes the deploy lock and reads the state, on every host, in one round trip.
pub fn lock(hosts: &[Host], owner: &str) -> Result<PlannedStep, QuoteError> {
    own_step(
        "lock",
        hosts,
        0..hosts.len(),
        Some(Read::Lock),
        |_, host| remote::lock::take(host, owner),
    )
}

/// Gives back this invocation's lock on `on`, appending `record(host)` to the history first
/// where there is one.
pub fn unlock(
    hosts: &[Host],
    on: &[usize],
    token: &str,
    record: &dyn Fn(usize) -> Option<String>,
) -> Result<PlannedStep, QuoteError> {
    own_step("unlock", hosts, on.iter().copied(), None, |index, host| {
        remote::lock::give_back(host, token, record(index).as_deref())
    })
}

/// `deployr unlock`: removes the lock on `on` whoever holds it, and records that.
pub fn force_unlock(
    hosts: &[Host],
    on: &[usize],
    record: &dyn Fn(usize) -> String,
) -> Result<PlannedStep, QuoteError> {
    own_step("unlock", hosts, on.iter().copied(), None, |index, host| {
        remote::lock::force(host, &record(index))
    })
}

/// The first step of `prepare`: find the commit that the ref names, once, so every host gets
/// that one commit even if the branch moves meanwhile. With git, on the first host (which
/// fetches anyway); with uploads, here, in this machine's mirror, also printing the commit's
/// time, which every packed file gets.
pub fn resolve(
    deployfile: &Deployfile,
    source: &Source,
    hosts: &[Host],
    workspace: &Workspace,
    reference: &str,
) -> Result<PlannedStep, QuoteError> {
    match source.strategy {
        Strategy::Git => own_step("resolve", hosts, [0], Some(Read::Commit), |_, host| {
            fetch::resolve(host, &deployfile.env, &source.repo, reference)
        })
        .map(transfer),
        Strategy::Upload { .. } => Ok(PlannedStep::new(
            "resolve",
            StepKind::Local {
                script: fetch::resolve_here(
                    &workspace.root().to_string_lossy(),
                    &workspace.mirror().to_string_lossy(),
                    &deployfile.env,
                    &source.repo,
                    reference,
                )?,
                reads: Some(Read::Commit),
            },
        )),
    }
}

/// `deployr diff`: compares `live` with `target` where `resolve` fetched the repository: the
/// first host's mirror (git), or this machine's (uploads).
pub fn diff(
    source: &Source,
    hosts: &[Host],
    workspace: &Workspace,
    live: &str,
    target: &str,
) -> Result<PlannedStep, QuoteError> {
    match source.strategy {
        Strategy::Git => own_step("diff", hosts, [0], Some(Read::Diff), |_, host| {
            remote::diff::on_host(host, live, target)
        }),
        Strategy::Upload { .. } => Ok(PlannedStep::new(
            "diff",
            StepKind::Local {
                script: remote::diff::script(&workspace.mirror().to_string_lossy(), live, target)?,
                reads: Some(Read::Diff),
            },
        )),
    }
}

/// The upload strategy's build: a clean export of the commit on this machine, and the `build`
/// command run in it.
pub fn build(
    deployfile: &Deployfile,
    source: &Source,
    workspace: &Workspace,
    timestamp: &str,
    info: &ReleaseInfo,
) -> Result<Option<PlannedStep>, QuoteError> {
    let Strategy::Upload { build, .. } = &source.strategy else {
        return Ok(None);
    };
    let dir = workspace.build_dir().to_string_lossy().into_owned();
    let tree = match &source.repo_tree {
        Some(tree) => format!("{}:{tree}", info.commit),
        None => info.commit.clone(),
    };
    let mut script = code::export_here(&dir, &workspace.mirror().to_string_lossy(), &tree)?;
    let values = local_values(deployfile, timestamp, Some((info, None)));
    let command = build
        .as_ref()
        .map(|b| b.render(&values))
        .unwrap_or_default();
    script.append(command::here(
        WorkDir::Path(&dir),
        &deployfile.env,
        &values,
        &command,
    )?);
    Ok(Some(PlannedStep::new("build", here(script.finish()))))
}

/// Puts the commit's files into a new release directory on every host: with git, each host
/// fetches and exports it; with uploads, the artifact goes to the hosts in `send_to` (the others
/// hold it already) and every host checks and unpacks it.
pub fn code(
    deployfile: &Deployfile,
    source: &Source,
    hosts: &[Host],
    info: &ReleaseInfo,
    artifact: Option<&Artifact>,
    send_to: &[usize],
) -> Result<Vec<PlannedStep>, QuoteError> {
    let Some(artifact) = artifact else {
        let code = own_step("code", hosts, 0..hosts.len(), None, |index, host| {
            // The first host fetched the commit when it resolved the ref.
            code::from_git(
                host,
                &deployfile.app,
                &source.repo,
                source.repo_tree.as_deref(),
                &info.release,
                &info.commit,
                index != 0,
            )
        })?;
        return Ok(vec![transfer(code)]);
    };
    let unpack = own_step("code", hosts, 0..hosts.len(), None, |_, host| {
        code::from_artifact(
            host,
            &deployfile.app,
            &info.release,
            &info.commit,
            &artifact.sha256,
        )
    })?;
    let unpack = transfer(unpack);
    if send_to.is_empty() {
        return Ok(vec![unpack]);
    }
    let to = send_to
        .iter()
        .map(|&host| Destination {
            host,
            path: code::artifact_path(&hosts[host], &artifact.sha256),
        })
        .collect();
    let upload = PlannedStep::new(
        "upload",
        StepKind::Upload {
            artifact: artifact.clone(),
            to,
        },
    );
    Ok(vec![transfer(upload), unpack])
}

/// The rest of `prepare`: the `[[prepare]]` steps in the new release, then the marker that
/// says it is ready.
pub fn prepare(
    deployfile: &Deployfile,
    hosts: &[Host],
    timestamp: &str,
    info: &ReleaseInfo,
    previous: &[Option<String>],
) -> Result<Vec<PlannedStep>, QuoteError> {
    let mut steps = Vec::new();
    for step in &deployfile.prepare {
        steps.push(release_step(
            deployfile, hosts, step, timestamp, info, previous,
        )?);
    }
    let marker = release::Prepared {
        release: info.release.clone(),
        commit: info.commit.clone(),
        reference: info.reference.clone(),
        time: timestamp.to_string(),
    };
    steps.push(own_step(
        "prepared",
        hosts,
        0..hosts.len(),
        None,
        |_, host| remote::prepared::mark(host, &marker),
    )?);
    Ok(steps)
}

/// The armed switch of `on` to `release`; each host's journal records what it served before.
pub fn switch(
    hosts: &[Host],
    on: &[usize],
    release: &ReleaseId,
    previous: &[Option<String>],
) -> Result<PlannedStep, QuoteError> {
    let step = own_step("switch", hosts, on.iter().copied(), None, |index, host| {
        remote::switch::armed(host, release, previous[index].as_deref())
    })?;
    let StepKind::Remote { runs, .. } = step.kind else {
        unreachable!("own_step plans remote steps")
    };
    Ok(PlannedStep {
        kind: StepKind::Armed { runs },
        ..step
    })
}

/// Puts `on` back on what it served before (`previous`, or no `current` at all), at once.
pub fn switch_back(
    hosts: &[Host],
    on: &[usize],
    previous: &[Option<String>],
) -> Result<PlannedStep, QuoteError> {
    own_step(
        "switch back",
        hosts,
        on.iter().copied(),
        None,
        |index, host| remote::switch::back(host, previous[index].as_deref()),
    )
}

/// The `[[activate]]` steps before (`after_switch = false`) or after the switch.
pub fn activate_steps(
    deployfile: &Deployfile,
    hosts: &[Host],
    after_switch: bool,
    timestamp: &str,
    info: &ReleaseInfo,
    previous: &[Option<String>],
) -> Result<Vec<PlannedStep>, QuoteError> {
    let switch_at = deployfile
        .activate
        .iter()
        .position(|step| matches!(step, ActivateStep::Switch))
        .unwrap_or(deployfile.activate.len());
    let range = if after_switch {
        switch_at..deployfile.activate.len()
    } else {
        0..switch_at
    };
    let mut steps = Vec::new();
    for step in &deployfile.activate[range] {
        if let ActivateStep::Run(step) = step {
            steps.push(release_step(
                deployfile, hosts, step, timestamp, info, previous,
            )?);
        }
    }
    Ok(steps)
}

/// The health check: one shell loop per host, so the attempts cost no extra round trips.
pub fn healthcheck(
    deployfile: &Deployfile,
    hosts: &[Host],
    timestamp: &str,
    info: &ReleaseInfo,
    previous: &[Option<String>],
) -> Result<Option<PlannedStep>, QuoteError> {
    let Some(check) = &deployfile.healthcheck else {
        return Ok(None);
    };
    let mut runs = Vec::new();
    for index in hosts_for(check.roles.as_deref(), false, hosts) {
        let host = &hosts[index];
        let values = release_values(
            deployfile,
            host,
            timestamp,
            info,
            previous[index].as_deref(),
        );
        runs.push(HostScript {
            host: index,
            script: command::healthcheck(
                WorkDir::Path(&host.current_path()),
                &deployfile.env,
                &values,
                check,
            )?,
        });
    }
    // Every attempt is bounded by `timeout`, so the whole loop is too; a host that does not
    // answer at all is stopped a little after its last attempt should have ended.
    let bound = (check.timeout + check.interval) * check.attempts + Duration::from_secs(10);
    Ok(Some(PlannedStep {
        timeout: Some(bound),
        ..PlannedStep::new("healthcheck", in_login_shell(runs))
    }))
}

/// Records the activation or rollback in each host's history, prunes old releases and, with
/// `unlock` (our lock token), gives the deploy lock back in the same command.
pub fn finish(
    hosts: &[Host],
    on: &[usize],
    release: &ReleaseId,
    record: &dyn Fn(usize) -> String,
    prune: &dyn Fn(usize) -> Vec<String>,
    unlock: Option<&str>,
) -> Result<PlannedStep, QuoteError> {
    own_step("finish", hosts, on.iter().copied(), None, |index, host| {
        remote::finish::script(host, release, &record(index), &prune(index), unlock)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Address, SshSettings};

    fn host(name: &str, roles: &[&str]) -> Host {
        Host {
            name: name.into(),
            address: Address::Local,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            deploy_to: "/srv/it's".into(),
            vars: vec![],
            ssh: SshSettings::direct("127.0.0.1", "u"),
            housekeeping_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn once_takes_the_first_listed_host_of_the_roles() {
        let hosts = vec![host("a", &["web"]), host("b", &["db"]), host("c", &["db"])];
        let db = vec!["db".to_string()];
        assert_eq!(hosts_for(Some(&db), true, &hosts), [1]);
        assert_eq!(hosts_for(Some(&db), false, &hosts), [1, 2]);
        assert_eq!(hosts_for(None, false, &hosts), [0, 1, 2]);
    }
}
