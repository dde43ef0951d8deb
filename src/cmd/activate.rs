//! `deployr activate` and `deployr rollback`: every host switches to one release, or every
//! host goes back to what it served before.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Context, Session, operator};
use crate::error::Error;
use crate::plan::{self, Plan, ReleaseInfo, Switch};
use crate::release::{self, HistoryEntry, HostState};
use crate::report::EventKind;
use crate::run::{self, StepFailure};

pub async fn command(context: &Context, release: Option<&str>) -> Result<(), Error> {
    if let Some(id) = release {
        release::validate_id(id)?;
    }
    if context.dry_run {
        let info = ReleaseInfo {
            release: release.unwrap_or("<prepared release>").to_string(),
            commit: "<its commit>".into(),
            reference: "<its ref>".into(),
        };
        return print_switch_plan(context, &info, true);
    }
    context
        .with_session(async |session| {
            let states = session.lock("activate").await?;
            session.service_checks().await?;
            activate(context, session, states, release).await
        })
        .await
}

pub async fn rollback_command(context: &Context, to: Option<&str>) -> Result<(), Error> {
    if let Some(id) = to {
        release::validate_id(id)?;
    }
    if context.dry_run {
        let info = ReleaseInfo {
            release: to.unwrap_or("<previous release>").to_string(),
            commit: "<its commit>".into(),
            reference: String::new(),
        };
        return print_switch_plan(context, &info, false);
    }
    context
        .with_session(async |session| {
            let states = session.lock("rollback").await?;
            rollback(context, session, states, to).await
        })
        .await
}

/// The dry-run view of an activation (or rollback): every step as it would run on every host.
fn print_switch_plan(context: &Context, info: &ReleaseInfo, activate: bool) -> Result<(), Error> {
    let hosts = &context.hosts;
    let previous = vec![Some("<current release>".to_string()); hosts.len()];
    let deployfile = &context.deployfile;
    let timestamp = &context.timestamp;
    let mut steps = Vec::new();
    if activate {
        steps.extend(plan::activate_steps(
            deployfile, hosts, false, timestamp, info, &previous,
        )?);
    }
    let switches: Vec<Switch> = (0..hosts.len())
        .map(|host| Switch {
            host,
            release: Some(info.release.clone()),
        })
        .collect();
    steps.push(plan::switch(hosts, &switches)?);
    steps.extend(plan::activate_steps(
        deployfile, hosts, true, timestamp, info, &previous,
    )?);
    if activate {
        steps.extend(plan::healthcheck(
            deployfile, hosts, timestamp, info, &previous,
        )?);
    }
    context.print_plan(&Plan {
        hosts: hosts.clone(),
        steps,
    })
}

/// The release every selected host should end on, or why activation must not start.
fn choose_target(
    context: &Context,
    states: &[HostState],
    requested: Option<&str>,
) -> Result<String, Error> {
    let hosts = &context.hosts;
    if let Some(id) = requested {
        let missing: Vec<&str> = hosts
            .iter()
            .zip(states)
            .filter(|(_, state)| !state.has_release(id))
            .map(|(host, _)| host.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Refused(format!(
                "release {id} is not on {}; nothing was changed",
                missing.join(", ")
            )));
        }
        return Ok(id.to_string());
    }
    let mut prepared: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (host, state) in hosts.iter().zip(states) {
        if let Some(p) = &state.prepared {
            prepared.entry(&p.release).or_default().push(&host.name);
        }
    }
    let target = match prepared.len() {
        0 => {
            return Err(Error::Refused(
                "no selected host has a prepared release; run `deployr prepare` first, or pass --release ID".into(),
            ));
        }
        1 => prepared.keys().next().expect("one").to_string(),
        _ => {
            let groups: Vec<String> = prepared
                .iter()
                .map(|(release, hosts)| format!("{release} on {}", hosts.join(", ")))
                .collect();
            return Err(Error::Refused(format!(
                "the selected hosts have different prepared releases ({}); nothing was changed. Prepare again, or pass --release ID",
                groups.join("; ")
            )));
        }
    };
    let unprepared: Vec<&str> = hosts
        .iter()
        .zip(states)
        .filter(|(_, state)| state.prepared.is_none() && state.current.as_deref() != Some(&target))
        .map(|(host, _)| host.name.as_str())
        .collect();
    if !unprepared.is_empty() {
        return Err(Error::Refused(format!(
            "{target} is prepared on some hosts but not on {}; nothing was changed. Prepare again, or narrow the selection with --hosts",
            unprepared.join(", ")
        )));
    }
    Ok(target)
}

fn refuse_directories(context: &Context, states: &[HostState]) -> Result<(), Error> {
    let directories: Vec<String> = context
        .hosts
        .iter()
        .zip(states)
        .filter(|(_, state)| state.current_is_directory)
        .map(|(host, _)| format!("{}:{}/current", host.name, host.deploy_to))
        .collect();
    if directories.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "`current` is a real directory, not a symlink, on {}; move it away (e.g. `mv current current.old`) and try again. Nothing was changed",
        directories.join(", ")
    )))
}

/// Activates the prepared (or `requested`) release on every selected host.
pub async fn activate(
    context: &Context,
    session: &Session<'_>,
    states: Vec<HostState>,
    requested: Option<&str>,
) -> Result<(), Error> {
    refuse_directories(context, &states)?;
    let target = choose_target(context, &states, requested)?;
    let source = states
        .iter()
        .find_map(|s| s.prepared.as_ref().filter(|p| p.release == target));
    let info = ReleaseInfo {
        commit: source.map_or_else(
            || {
                states
                    .iter()
                    .find_map(|s| s.commit_of(&target))
                    .unwrap_or_default()
                    .to_string()
            },
            |p| p.commit.clone(),
        ),
        reference: source.map(|p| p.reference.clone()).unwrap_or_default(),
        release: target,
    };
    let started = Instant::now();
    let previous: Vec<Option<String>> = states.iter().map(|s| s.current.clone()).collect();
    for step in plan::activate_steps(
        &context.deployfile,
        &context.hosts,
        false,
        &context.timestamp,
        &info,
        &previous,
    )? {
        session.run(&step).await?;
    }
    switch_all(context, session, &states, &info, "activate", started).await
}

/// Rolls every selected host back to the previous (or `to`) release.
pub async fn rollback(
    context: &Context,
    session: &Session<'_>,
    states: Vec<HostState>,
    to: Option<&str>,
) -> Result<(), Error> {
    refuse_directories(context, &states)?;
    let target = match to {
        Some(id) => choose_target(context, &states, Some(id))?,
        None => common_previous(context, &states)?,
    };
    let info = ReleaseInfo {
        commit: states
            .iter()
            .find_map(|s| s.commit_of(&target))
            .unwrap_or_default()
            .to_string(),
        reference: String::new(),
        release: target,
    };
    switch_all(context, session, &states, &info, "rollback", Instant::now()).await
}

fn common_previous(context: &Context, states: &[HostState]) -> Result<String, Error> {
    let mut targets: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut nothing = Vec::new();
    for (host, state) in context.hosts.iter().zip(states) {
        match state.previous() {
            Some(previous) if state.has_release(previous) => targets
                .entry(previous.to_string())
                .or_default()
                .push(&host.name),
            _ => nothing.push(host.name.as_str()),
        }
    }
    if !nothing.is_empty() {
        return Err(Error::Refused(format!(
            "nothing to roll back to on {}: no earlier activated release is on disk there",
            nothing.join(", ")
        )));
    }
    if targets.len() > 1 {
        let groups: Vec<String> = targets
            .iter()
            .map(|(release, hosts)| format!("{release} on {}", hosts.join(", ")))
            .collect();
        return Err(Error::Refused(format!(
            "the hosts would roll back to different releases ({}); pass --to ID to choose one",
            groups.join("; ")
        )));
    }
    Ok(targets.into_keys().next().expect("one target"))
}

/// Switches every host not yet on `info.release`, runs the after-switch steps and (for an
/// activation) the health check, then records and prunes. Any failure from the switch on
/// switches every switched host back.
async fn switch_all(
    context: &Context,
    session: &Session<'_>,
    states: &[HostState],
    info: &ReleaseInfo,
    action: &str,
    started: Instant,
) -> Result<(), Error> {
    let hosts = &context.hosts;
    let deployfile = &context.deployfile;
    let previous: Vec<Option<String>> = states.iter().map(|s| s.current.clone()).collect();
    let pending: Vec<usize> = (0..hosts.len())
        .filter(|&i| previous[i].as_deref() != Some(&info.release))
        .collect();
    for (host, _) in hosts
        .iter()
        .zip(&previous)
        .filter(|(_, p)| p.as_deref() == Some(&info.release))
    {
        session.notice(format!(
            "{} is already on {}; not switched again",
            host.name, info.release
        ));
    }
    if pending.is_empty() {
        session.notice(format!(
            "every selected host is already on {}",
            info.release
        ));
        return Ok(());
    }
    let switches: Vec<Switch> = pending
        .iter()
        .map(|&host| Switch {
            host,
            release: Some(info.release.clone()),
        })
        .collect();
    let switch_step = plan::switch(hosts, &switches)?;
    context.set_busy(&format!("switching every host to {}", info.release));
    let results = session.step_to_the_end(&switch_step).await;
    let switched: Vec<usize> = results
        .iter()
        .filter(|r| r.outcome.success())
        .map(|r| r.host)
        .collect();
    let skew = spread(results.iter().map(|r| r.finished));
    if let Err(failures) = run::failures(hosts, &switch_step, &results) {
        return Err(restore(context, session, states, &switched, info, failures).await);
    }
    let mut after =
        plan::activate_steps(deployfile, hosts, true, &context.timestamp, info, &previous)?;
    if action == "activate" {
        after.extend(plan::healthcheck(
            deployfile,
            hosts,
            &context.timestamp,
            info,
            &previous,
        )?);
    }
    for step in &after {
        let results = session.step(step).await;
        let mut failed = run::failures(hosts, step, &results).err();
        if failed.is_none() && context.cancel.is_cancelled() {
            failed = Some(vec![StepFailure {
                host: "every host".into(),
                step: step.name.clone(),
                outcome: crate::transport::interrupted(),
            }]);
        }
        if let Some(failures) = failed {
            return Err(restore(context, session, states, &switched, info, failures).await);
        }
    }
    let window = started.elapsed();
    let by = operator();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let entry = |host: usize| HistoryEntry {
        time: now.clone(),
        action: action.to_string(),
        release: info.release.clone(),
        previous: previous[host].clone(),
    };
    let keep = deployfile.app.keep_releases;
    let prune = |host: usize| {
        if action == "activate" {
            states[host].prunable(&info.release, previous[host].as_deref(), keep)
        } else {
            Vec::new()
        }
    };
    let token = Some(context.token.as_str());
    let finish = plan::finish(hosts, &pending, &entry, &prune, &by, token)?;
    let results = session.step_to_the_end(&finish).await;
    session.unlocked(
        results
            .iter()
            .filter(|r| r.outcome.success())
            .map(|r| r.host),
    );
    run::failures(hosts, &finish, &results).map_err(Error::StepFailed)?;
    session.events.send(EventKind::Activated {
        release: info.release.clone(),
        hosts: pending.len(),
        window,
        skew,
    });
    Ok(())
}

fn spread(times: impl Iterator<Item = Instant>) -> Duration {
    let times: Vec<Instant> = times.collect();
    match (times.iter().min(), times.iter().max()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    }
}

/// Switches the `switched` hosts back to what they served before, runs the after-switch steps
/// there again, and records the rollback. Returns the error that ends the command (exit 5).
async fn restore(
    context: &Context,
    session: &Session<'_>,
    states: &[HostState],
    switched: &[usize],
    failed: &ReleaseInfo,
    failures: Vec<StepFailure>,
) -> Error {
    let hosts = &context.hosts;
    context.set_busy("switching every switched host back to the release it served before");
    let mut restore_failures = Vec::new();
    let switches: Vec<Switch> = switched
        .iter()
        .map(|&host| Switch {
            host,
            release: states[host].current.clone(),
        })
        .collect();
    match plan::switch(hosts, &switches) {
        Ok(step) => {
            let results = session.step_to_the_end(&step).await;
            if let Err(more) = run::failures(hosts, &step, &results) {
                restore_failures.extend(more);
            }
        }
        Err(error) => session.notice(format!("cannot plan the switch back: {error}")),
    }
    // The after-switch steps again (a reload, typically), per release the hosts went back to.
    let mut by_release: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &host in switched {
        if let Some(previous) = states[host].current.as_deref() {
            by_release.entry(previous).or_default().push(host);
        }
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (release, group) in &by_release {
        let info = ReleaseInfo {
            release: release.to_string(),
            commit: states[group[0]]
                .commit_of(release)
                .unwrap_or_default()
                .to_string(),
            reference: String::new(),
        };
        let before: Vec<Option<String>> = (0..hosts.len())
            .map(|_| Some(failed.release.clone()))
            .collect();
        let steps = match plan::activate_steps(
            &context.deployfile,
            hosts,
            true,
            &context.timestamp,
            &info,
            &before,
        ) {
            Ok(steps) => steps,
            Err(error) => {
                session.notice(format!("cannot plan the after-switch steps: {error}"));
                Vec::new()
            }
        };
        for mut step in steps {
            step.runs.retain(|run| group.contains(&run.host));
            let results = session.step_to_the_end(&step).await;
            if let Err(more) = run::failures(hosts, &step, &results) {
                restore_failures.extend(more);
            }
        }
        let entry = |_: usize| HistoryEntry {
            time: now.clone(),
            action: "rollback".into(),
            release: release.to_string(),
            previous: Some(failed.release.clone()),
        };
        if let Ok(step) = plan::finish(hosts, group, &entry, &|_| Vec::new(), &operator(), None) {
            let results = session.step_to_the_end(&step).await;
            if let Err(more) = run::failures(hosts, &step, &results) {
                restore_failures.extend(more);
            }
        }
    }
    Error::RolledBack {
        release: failed.release.clone(),
        failures,
        restore_failures,
    }
}
