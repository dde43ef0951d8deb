//! Which step runs where, with which exact script: built completely before anything runs, so
//! `--dry-run` prints the very plan that a real run executes.

use std::time::Duration;

use crate::artifact::{Artifact, Workspace};
use crate::deployfile::{ActivateStep, Deployfile, EnvVar, Source, Step, Strategy};
use crate::inventory::{Host, TRANSFER_TIMEOUT};
use crate::release;
use crate::template::Values;

#[derive(Debug, Clone)]
pub struct Plan {
    /// The selected hosts, in deployfile order; runs refer to them by index.
    pub hosts: Vec<Host>,
    pub steps: Vec<PlannedStep>,
}

#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub name: String,
    pub timeout: Option<Duration>,
    pub concurrency: Option<usize>,
    /// Empty when the step's roles match no selected host (a `once` step outside a canary).
    pub runs: Vec<PlannedRun>,
    /// deployr's own reads (state, the resolved commit): stdout is returned to the caller
    /// instead of being shown.
    pub capture: bool,
    /// Every host's command is started and made ready first, then all are told to go at once
    /// (the switch).
    pub armed: bool,
    /// The script of a local step, run once on this machine instead of on `runs`.
    pub local: Option<String>,
    /// An upload step sends this artifact to each run's host, to the path in its `script`.
    pub upload: Option<Artifact>,
}

impl PlannedStep {
    /// A step that runs `runs` as they are: all at once, output shown.
    pub fn new(name: &str, runs: Vec<PlannedRun>) -> PlannedStep {
        PlannedStep {
            name: name.to_string(),
            timeout: None,
            concurrency: None,
            runs,
            capture: false,
            armed: false,
            local: None,
            upload: None,
        }
    }
}

/// How a local step appears in output, where a host's name would.
pub const LOCAL: &str = "local";

#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub host: usize,
    pub script: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot quote {what} for the shell: it contains a NUL byte")]
pub struct QuoteError {
    what: String,
}

/// Quotes for POSIX `sh`, the shell every remote command runs in.
pub fn quote(value: &str, what: &str) -> Result<String, QuoteError> {
    shlex::try_quote(value)
        .map(|quoted| quoted.into_owned())
        .map_err(|_| QuoteError {
            what: what.to_string(),
        })
}

/// Where a step's script starts.
pub enum WorkDir<'a> {
    /// Tasks: the host's live release, or `deploy_to` before the first deploy, or `/` on a host
    /// that has never been deployed to (a task like a database backup needs no code).
    Current(&'a Host),
    Path(&'a str),
}

/// The script for one command: change directory, export `[env]` and every variable as
/// `DEPLOYR_*`, then the command itself.
pub fn script(
    dir: WorkDir,
    env: &[EnvVar],
    values: &Values,
    command: &str,
) -> Result<String, QuoteError> {
    let cd = match dir {
        WorkDir::Current(host) => format!(
            "cd {} 2>/dev/null || cd {} 2>/dev/null || cd /",
            quote(&host.current_path(), "current_path")?,
            quote(&host.deploy_to, "deploy_to")?
        ),
        WorkDir::Path(path) => format!("cd {} || exit 1", quote(path, "the directory")?),
    };
    let mut exports = Vec::new();
    for (name, value) in values.exports() {
        exports.push(format!("{name}={}", quote(value, &name)?));
    }
    Ok(format!(
        "{cd}\n{}export {}\n{command}",
        env_exports(env)?,
        exports.join(" ")
    ))
}

/// `export NAME=value ...` for `[env]` and a newline, or nothing when `[env]` is empty.
fn env_exports(env: &[EnvVar]) -> Result<String, QuoteError> {
    if env.is_empty() {
        return Ok(String::new());
    }
    let mut exports = Vec::new();
    for var in env {
        exports.push(format!("{}={}", var.name, quote(&var.value, &var.name)?));
    }
    Ok(format!("export {}\n", exports.join(" ")))
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
    hosts: Vec<Host>,
    steps: &[Step],
    timestamp: &str,
) -> Result<Plan, QuoteError> {
    let mut planned = Vec::new();
    for step in steps {
        if step.local {
            let values = local_values(deployfile, timestamp, None);
            planned.push(local_step(deployfile, step, &values)?);
            continue;
        }
        let mut runs = Vec::new();
        for index in hosts_for(step.roles.as_deref(), step.once, &hosts) {
            let host = &hosts[index];
            let values = host.values(&deployfile.app.name, timestamp);
            let command = step.command.render(&values);
            runs.push(PlannedRun {
                host: index,
                script: script(WorkDir::Current(host), &deployfile.env, &values, &command)?,
            });
        }
        planned.push(PlannedStep {
            timeout: step.timeout,
            concurrency: step.concurrency,
            ..PlannedStep::new(&step.name, runs)
        });
    }
    Ok(Plan {
        hosts,
        steps: planned,
    })
}

/// What a release step knows about the release; placeholders such as `<commit>` in a dry run,
/// where nothing has been resolved yet.
#[derive(Debug, Clone)]
pub struct ReleaseInfo {
    pub release: String,
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
    values.set("release", &info.release);
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
        values.set("release", &info.release);
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
    Ok(PlannedStep {
        timeout: step.timeout,
        local: Some(script(
            WorkDir::Path(&dir.to_string_lossy()),
            &deployfile.env,
            values,
            &command,
        )?),
        ..PlannedStep::new(&step.name, Vec::new())
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
        runs.push(PlannedRun {
            host: index,
            script: script(WorkDir::Path(&dir), &deployfile.env, &values, &command)?,
        });
    }
    Ok(PlannedStep {
        timeout: step.timeout,
        concurrency: step.concurrency,
        ..PlannedStep::new(&step.name, runs)
    })
}

/// One of deployr's own commands on the given hosts, bounded by their `housekeeping_timeout`.
fn own_step(
    name: &str,
    hosts: &[Host],
    on: impl IntoIterator<Item = usize>,
    capture: bool,
    mut script: impl FnMut(usize, &Host) -> Result<String, QuoteError>,
) -> Result<PlannedStep, QuoteError> {
    let mut runs = Vec::new();
    for index in on {
        runs.push(PlannedRun {
            host: index,
            script: script(index, &hosts[index])?,
        });
    }
    let timeout = runs
        .iter()
        .map(|run| hosts[run.host].housekeeping_timeout)
        .max();
    Ok(PlannedStep {
        capture,
        timeout,
        ..PlannedStep::new(name, runs)
    })
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
    own_step("state", hosts, 0..hosts.len(), true, |_, host| {
        release::state_script(host)
    })
}

/// Takes the deploy lock and reads the state, on every host, in one round trip.
pub fn lock(hosts: &[Host], owner: &str) -> Result<PlannedStep, QuoteError> {
    own_step("lock", hosts, 0..hosts.len(), true, |_, host| {
        release::lock_script(host, owner)
    })
}

/// Gives back this invocation's lock on `on`, appending `record(host)` to the history first
/// where there is one.
pub fn unlock(
    hosts: &[Host],
    on: &[usize],
    token: &str,
    record: &dyn Fn(usize) -> Option<String>,
) -> Result<PlannedStep, QuoteError> {
    own_step("unlock", hosts, on.iter().copied(), false, |index, host| {
        release::unlock_script(host, token, record(index).as_deref())
    })
}

/// `deployr unlock`: removes the lock on `on` whoever holds it, and records that.
pub fn force_unlock(
    hosts: &[Host],
    on: &[usize],
    record: &dyn Fn(usize) -> String,
) -> Result<PlannedStep, QuoteError> {
    own_step("unlock", hosts, on.iter().copied(), false, |index, host| {
        release::force_unlock_script(host, &record(index))
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
    // git runs with `[env]` too: a proxy or GIT_SSH_COMMAND may be needed to reach the repo.
    let env = env_exports(&deployfile.env)?;
    match source.strategy {
        Strategy::Git => own_step("resolve", hosts, [0], true, |_, host| {
            let fetch = release::fetch_script(host, &source.repo, release::Wanted::Ref(reference))?;
            Ok(format!("{env}{fetch}"))
        })
        .map(transfer),
        Strategy::Upload { .. } => {
            let mirror = workspace.mirror().to_string_lossy().into_owned();
            let fetch =
                release::mirror_script(&mirror, &source.repo, release::Wanted::Ref(reference))?;
            let commit_of = quote(&format!("{reference}^{{commit}}"), "the ref")?;
            Ok(PlannedStep {
                capture: true,
                local: Some(format!(
                    "mkdir -p {parent} || exit 1\n{env}{fetch}\ngit -C {mirror} show -s --format=%ct {commit_of}",
                    parent = quote(&workspace.root().to_string_lossy(), "the workspace")?,
                    mirror = quote(&mirror, "the mirror")?,
                )),
                ..PlannedStep::new("resolve", Vec::new())
            })
        }
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
        Strategy::Git => own_step("diff", hosts, [0], true, |_, host| {
            release::diff_script(&format!("{}/repo", host.deploy_to), live, target)
        }),
        Strategy::Upload { .. } => Ok(PlannedStep {
            capture: true,
            local: Some(release::diff_script(
                &workspace.mirror().to_string_lossy(),
                live,
                target,
            )?),
            ..PlannedStep::new("diff", Vec::new())
        }),
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
    let export = format!(
        "rm -rf {dir} && mkdir -p {dir} || exit 1\ngit -C {mirror} archive --format=tar {tree} | tar -x -C {dir} || exit 1",
        dir = quote(&dir, "the build directory")?,
        mirror = quote(&workspace.mirror().to_string_lossy(), "the mirror")?,
        tree = quote(&tree, "the commit")?,
    );
    let values = local_values(deployfile, timestamp, Some((info, None)));
    let command = build
        .as_ref()
        .map(|b| b.render(&values))
        .unwrap_or_default();
    let run = script(WorkDir::Path(&dir), &deployfile.env, &values, &command)?;
    Ok(Some(PlannedStep {
        local: Some(format!("{export}\n{run}")),
        ..PlannedStep::new("build", Vec::new())
    }))
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
        let code = own_step("code", hosts, 0..hosts.len(), false, |index, host| {
            let clear = release::clear_prepared_script(host)?;
            let export = release::export_script(
                host,
                &deployfile.app,
                source.repo_tree.as_deref(),
                &info.release,
                &info.commit,
            )?;
            if index == 0 {
                return Ok(format!("{clear}\n{export}"));
            }
            let fetch =
                release::fetch_script(host, &source.repo, release::Wanted::Commit(&info.commit))?;
            Ok(format!("{clear}\n{fetch}\n{export}"))
        })?;
        return Ok(vec![transfer(code)]);
    };
    let upload = own_step(
        "upload",
        hosts,
        send_to.iter().copied(),
        false,
        |_, host| Ok(release::artifact_path(host, &artifact.sha256)),
    )?;
    let unpack = own_step("code", hosts, 0..hosts.len(), false, |_, host| {
        let clear = release::clear_prepared_script(host)?;
        let unpack = release::unpack_script(
            host,
            &deployfile.app,
            &info.release,
            &info.commit,
            &artifact.sha256,
        )?;
        Ok(format!("{clear}\n{unpack}"))
    })?;
    let unpack = transfer(unpack);
    if send_to.is_empty() {
        return Ok(vec![unpack]);
    }
    Ok(vec![
        PlannedStep {
            upload: Some(artifact.clone()),
            ..transfer(upload)
        },
        unpack,
    ])
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
    let prepared = release::Prepared {
        release: info.release.clone(),
        commit: info.commit.clone(),
        reference: info.reference.clone(),
        time: timestamp.to_string(),
    };
    steps.push(own_step(
        "prepared",
        hosts,
        0..hosts.len(),
        false,
        |_, host| release::mark_prepared_script(host, &prepared),
    )?);
    Ok(steps)
}

/// The armed switch of `on` to `release`; each host's journal records what it served before.
pub fn switch(
    hosts: &[Host],
    on: &[usize],
    release: &str,
    previous: &[Option<String>],
) -> Result<PlannedStep, QuoteError> {
    let mut step = own_step("switch", hosts, on.iter().copied(), false, |index, host| {
        release::switch_script(host, release, previous[index].as_deref())
    })?;
    step.armed = true;
    Ok(step)
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
        false,
        |index, host| release::switch_back_script(host, previous[index].as_deref()),
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
        let command = quote(&check.command.render(&values), "the health check")?;
        let looped = format!(
            r#"attempt=1
while :; do
  timeout {timeout} sh -c {command} && exit 0
  [ "$attempt" -ge {attempts} ] && {{ echo "unhealthy after {attempts} attempts" >&2; exit 1; }}
  attempt=$((attempt + 1))
  sleep {interval}
done"#,
            timeout = check.timeout.as_secs_f64(),
            attempts = check.attempts,
            interval = check.interval.as_secs_f64(),
        );
        let dir = host.current_path();
        runs.push(PlannedRun {
            host: index,
            script: script(WorkDir::Path(&dir), &deployfile.env, &values, &looped)?,
        });
    }
    // Every attempt is bounded by `timeout`, so the whole loop is too; a host that does not
    // answer at all is stopped a little after its last attempt should have ended.
    let bound = (check.timeout + check.interval) * check.attempts + Duration::from_secs(10);
    Ok(Some(PlannedStep {
        timeout: Some(bound),
        ..PlannedStep::new("healthcheck", runs)
    }))
}

/// Records the activation or rollback in each host's history, prunes old releases and, with
/// `unlock` (our lock token), gives the deploy lock back in the same command.
pub fn finish(
    hosts: &[Host],
    on: &[usize],
    release: &str,
    record: &dyn Fn(usize) -> String,
    prune: &dyn Fn(usize) -> Vec<String>,
    unlock: Option<&str>,
) -> Result<PlannedStep, QuoteError> {
    own_step("finish", hosts, on.iter().copied(), false, |index, host| {
        release::finish_script(host, release, &record(index), &prune(index), unlock)
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

    #[test]
    fn scripts_quote_every_value() {
        let host = host("a", &[]);
        let mut values = Values::default();
        values.set("ref", "x; touch /tmp/pwned");
        let env = vec![EnvVar {
            name: "TOKEN".into(),
            value: "$(id)".into(),
            secret: true,
        }];
        let script = script(WorkDir::Current(&host), &env, &values, "true").unwrap();
        assert!(script.contains("cd \"/srv/it's/current\""), "{script}");
        assert!(script.contains("TOKEN='$(id)'"), "{script}");
        assert!(
            script.contains("DEPLOYR_REF='x; touch /tmp/pwned'"),
            "{script}"
        );
    }
}
