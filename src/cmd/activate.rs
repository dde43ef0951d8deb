//! `deployr activate` and `deployr rollback`: every host switches to one release, or every
//! host goes back to what it served before; a host that cannot go back is named, with the
//! command that makes the hosts agree.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Context, Ending, Session};
use crate::cli::Portion;
use crate::error::Error;
use crate::events::{EventKind, Wave};
use crate::executor::{self, StepFailure, Target};
use crate::plan::{self, ReleaseInfo};
use crate::release::HostState;
use crate::release_id::ReleaseId;
use crate::transport::Outcome;

pub async fn command(
    context: &Context,
    release: Option<&str>,
    canary: Option<Portion>,
) -> Result<(), Error> {
    let release = release.map(ReleaseId::parse).transpose()?;
    refuse_a_canary_without_second_wave(context, canary)?;
    context
        .with_session(async |context, session| {
            let states = session.lock("activate").await?;
            session.service_checks().await?;
            activate(context, session, states, release.as_ref(), canary).await
        })
        .await
}

pub async fn rollback_command(context: &Context, to: Option<&str>) -> Result<(), Error> {
    let to = to.map(ReleaseId::parse).transpose()?;
    context
        .with_session(async |context, session| {
            let states = session.lock("rollback").await?;
            rollback(context, session, states, to.as_ref()).await
        })
        .await
}

/// The hosts of the first wave of `--canary`: the first N (or P%, rounded up, at least one) of
/// the selected hosts, in deployfile order; none without `--canary`. At least one host must be
/// left for the second wave.
pub fn canaries(context: &Context, canary: Option<Portion>) -> Result<Vec<usize>, Error> {
    let Some(portion) = canary else {
        return Ok(Vec::new());
    };
    let count = first_wave(portion, context.hosts.len(), 0)?;
    Ok((0..count).collect())
}

/// Before connecting: refuses a `--canary` that could leave no second wave, once
/// `--allow-unreachable` has left out as many hosts as it allows.
pub fn refuse_a_canary_without_second_wave(
    context: &Context,
    canary: Option<Portion>,
) -> Result<(), Error> {
    let Some(portion) = canary else {
        return Ok(());
    };
    let total = context.hosts.len();
    let leave_out = context.allow_unreachable.map_or(0, |p| p.of(total));
    first_wave(portion, total, leave_out).map(drop)
}

/// How many of `total` hosts, of which up to `leave_out` may be left out, the first wave of
/// `--canary portion` takes; an error if that could leave none for the second wave.
fn first_wave(portion: Portion, total: usize, leave_out: usize) -> Result<usize, Error> {
    let reached = total.saturating_sub(leave_out);
    let count = portion.of(reached).max(1);
    if count < reached {
        return Ok(count);
    }
    let name = |portion| match portion {
        Portion::Hosts(n) => n.to_string(),
        Portion::Percent(p) => format!("{p}%"),
    };
    let of = if leave_out == 0 {
        format!(
            "the {total} selected host{}",
            if total == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "the {reached} of {total} selected hosts left if --allow-unreachable leaves out {leave_out}"
        )
    };
    Err(Error::Usage(format!(
        "--canary {} would take {count} of {of}, leaving none for the second wave; use a smaller number, or no --canary",
        name(portion)
    )))
}

/// What a switch is for: an activation runs the health check and prunes; a rollback does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Activate,
    Rollback,
}

/// The release every selected host should end on, or why activation must not start.
fn choose_target(
    context: &Context,
    states: &[HostState],
    requested: Option<&ReleaseId>,
) -> Result<ReleaseId, Error> {
    let hosts = &context.hosts;
    let target = match requested {
        Some(id) => id.clone(),
        None => {
            let mut prepared: BTreeMap<&ReleaseId, Vec<&str>> = BTreeMap::new();
            for (host, state) in hosts.iter().zip(states) {
                if let Some(p) = &state.prepared {
                    prepared.entry(&p.release).or_default().push(&host.name);
                }
            }
            match prepared.len() {
                0 => {
                    return Err(Error::Refused(
                        "no selected host has a prepared release (or the last prepare failed); run `deployr prepare` first, or pass --release ID".into(),
                    ));
                }
                1 => (*prepared.keys().next().expect("one")).clone(),
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
            }
        }
    };
    require_complete(context, states, &target)?;
    Ok(target)
}

/// Refuses, before anything runs, to switch a host to a release that is not complete there:
/// missing (deleted), or whose prepare did not succeed on that host.
fn require_complete(context: &Context, states: &[HostState], target: &str) -> Result<(), Error> {
    let mut missing = Vec::new();
    let mut incomplete = Vec::new();
    for (host, state) in context.hosts.iter().zip(states) {
        if state.current.as_deref() == Some(target) {
            continue;
        }
        if !state.has_release(target) {
            missing.push(host.name.as_str());
        } else if !state.is_complete(target) {
            incomplete.push(host.name.as_str());
        }
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("release {target} is not on {}", missing.join(", ")));
    }
    if !incomplete.is_empty() {
        problems.push(format!(
            "the prepare of {target} did not succeed on {}",
            incomplete.join(", ")
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "{}; nothing was changed. Prepare again, or narrow the selection with --hosts",
        problems.join("; ")
    )))
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

/// An activation that was switched on some hosts but never finished (its deployr was killed):
/// the release, and the hosts whose journal names it.
struct Unfinished {
    release: String,
    hosts: Vec<usize>,
}

fn unfinished(context: &Context, states: &[HostState]) -> Result<Option<Unfinished>, Error> {
    let mut by_release: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, state) in states.iter().enumerate() {
        if let Some(journal) = &state.activating {
            by_release.entry(&journal.release).or_default().push(index);
        }
    }
    match by_release.len() {
        0 => Ok(None),
        1 => {
            let (release, hosts) = by_release.into_iter().next().expect("one");
            Ok(Some(Unfinished {
                release: release.to_string(),
                hosts,
            }))
        }
        _ => Err(Error::Refused(format!(
            "the selected hosts have unfinished activations of different releases ({}); finish one with `deployr activate --hosts ...` on its hosts, or undo it with `deployr rollback --hosts ...`",
            by_release
                .iter()
                .map(|(release, hosts)| format!("{release} on {}", names(context, hosts)))
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

/// The host names, comma-separated.
fn names(context: &Context, hosts: &[usize]) -> String {
    hosts
        .iter()
        .map(|&i| context.hosts[i].name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Activates the prepared (or `requested`) release on every selected host. An unfinished
/// activation found on the hosts is finished first: switched where it was not, then its
/// after-switch steps, health check and history, as if its deployr had not stopped.
pub async fn activate(
    context: &Context,
    session: &Session<'_>,
    states: Vec<HostState>,
    requested: Option<&ReleaseId>,
    canary: Option<Portion>,
) -> Result<(), Error> {
    refuse_directories(context, &states)?;
    let canary = canaries(context, canary)?;
    let mut previous: Vec<Option<String>> = states.iter().map(|s| s.current.clone()).collect();
    if let Some(unfinished) = unfinished(context, &states)? {
        if requested.is_some_and(|id| id.as_str() != unfinished.release) {
            return Err(Error::Refused(format!(
                "an activation of {} was switched on {} but never finished (its deployr stopped); finish it with `deployr activate` or undo it with `deployr rollback` first. Nothing was changed",
                unfinished.release,
                names(context, &unfinished.hosts)
            )));
        }
        require_complete(context, &states, &unfinished.release)?;
        session.notice(format!(
            "finishing the activation of {} that was switched on {} but never finished{}",
            unfinished.release,
            names(context, &unfinished.hosts),
            if canary.is_empty() {
                ""
            } else {
                " (in one wave: --canary does not apply)"
            }
        ));
        for &host in &unfinished.hosts {
            previous[host] = states[host]
                .activating
                .as_ref()
                .and_then(|journal| journal.previous.clone());
        }
        let info = release_info(&states, &ReleaseId::parse(&unfinished.release)?);
        session.about(&info, &previous);
        let switch = Switch {
            info: &info,
            action: Action::Activate,
            previous,
            already: unfinished.hosts,
            canary: Vec::new(),
        };
        return switch_all(context, session, &states, switch, Instant::now()).await;
    }
    let target = choose_target(context, &states, requested)?;
    let info = release_info(&states, &target);
    session.about(&info, &previous);
    let started = Instant::now();
    for step in plan::activate_steps(
        &context.deployfile,
        &context.hosts,
        false,
        &context.invocation.timestamp,
        &info,
        &previous,
    )? {
        session.execute(&step).await?;
    }
    let switch = Switch {
        info: &info,
        action: Action::Activate,
        previous,
        already: Vec::new(),
        canary,
    };
    switch_all(context, session, &states, switch, started).await
}

/// The commit and ref of `release`, from a host's prepared marker or its release list.
pub(super) fn release_info(states: &[HostState], release: &ReleaseId) -> ReleaseInfo {
    let prepared = states
        .iter()
        .find_map(|s| s.prepared.as_ref().filter(|p| p.release == *release));
    ReleaseInfo {
        commit: prepared.map_or_else(
            || {
                states
                    .iter()
                    .find_map(|s| s.commit_of(release))
                    .unwrap_or_default()
                    .to_string()
            },
            |p| p.commit.clone(),
        ),
        reference: prepared.map(|p| p.reference.clone()).unwrap_or_default(),
        release: release.clone(),
    }
}

/// Rolls every selected host back to the previous (or `to`) release. An unfinished activation
/// is undone: its hosts go back to what they served before it.
pub async fn rollback(
    context: &Context,
    session: &Session<'_>,
    states: Vec<HostState>,
    to: Option<&ReleaseId>,
) -> Result<(), Error> {
    refuse_directories(context, &states)?;
    let unfinished = unfinished(context, &states)?;
    let target = match (to, &unfinished) {
        (Some(id), _) => {
            require_complete(context, &states, id)?;
            id.to_string()
        }
        (None, Some(unfinished)) => journal_previous(context, &states, unfinished)?,
        (None, None) => common_previous(context, &states)?,
    };
    let info = ReleaseInfo {
        reference: String::new(),
        ..release_info(&states, &ReleaseId::parse(&target)?)
    };
    let previous: Vec<Option<String>> = states.iter().map(|s| s.current.clone()).collect();
    session.about(&info, &previous);
    let switch = Switch {
        info: &info,
        action: Action::Rollback,
        previous,
        already: unfinished.map(|u| u.hosts).unwrap_or_default(),
        canary: Vec::new(),
    };
    switch_all(context, session, &states, switch, Instant::now()).await
}

/// Where undoing an unfinished activation goes: what its hosts served before it.
fn journal_previous(
    context: &Context,
    states: &[HostState],
    unfinished: &Unfinished,
) -> Result<String, Error> {
    let mut targets: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for &host in &unfinished.hosts {
        let previous = states[host]
            .activating
            .as_ref()
            .and_then(|j| j.previous.as_deref());
        targets.entry(previous).or_default().push(host);
    }
    match targets.into_iter().collect::<Vec<_>>().as_slice() {
        [(Some(previous), _)] => {
            require_complete(context, states, previous)?;
            Ok(previous.to_string())
        }
        [(None, hosts)] => Err(Error::Refused(format!(
            "the unfinished activation of {} on {} was the first one there, so there is nothing to roll back to; finish it with `deployr activate`",
            unfinished.release,
            names(context, hosts)
        ))),
        several => Err(Error::Refused(format!(
            "the hosts of the unfinished activation of {} served different releases before it ({}); pass --to ID to choose one",
            unfinished.release,
            several
                .iter()
                .map(|(release, hosts)| format!(
                    "{} on {}",
                    release.unwrap_or("none"),
                    names(context, hosts)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
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

/// One switch of the selected hosts to `info.release`.
pub(super) struct Switch<'a> {
    pub info: &'a ReleaseInfo,
    pub action: Action,
    /// What each host served before this activation: where it goes back to on failure.
    pub previous: Vec<Option<String>>,
    /// Hosts that are part of this switch although not switched now: those an unfinished
    /// activation switched (or left journaled). They are finished, or taken back, with the rest.
    pub already: Vec<usize>,
    /// The first wave (`--canary`): switched, after-switch steps and health check, before any
    /// other host is switched. Empty: every host in one wave.
    pub canary: Vec<usize>,
}

/// Switches every host not yet on the release, runs the after-switch steps and (for an
/// activation) the health check, then records and prunes. Any failure from the switch on
/// takes every host that may have switched back.
pub(super) async fn switch_all(
    context: &Context,
    session: &Session<'_>,
    states: &[HostState],
    switch: Switch<'_>,
    started: Instant,
) -> Result<(), Error> {
    let hosts = &context.hosts;
    let deployfile = &context.deployfile;
    let Switch {
        info,
        action,
        previous,
        already,
        canary,
    } = switch;
    let pending: Vec<usize> = (0..hosts.len())
        .filter(|&i| states[i].current.as_deref() != Some(&info.release))
        .collect();
    for (index, host) in hosts.iter().enumerate() {
        if !pending.contains(&index) && !already.contains(&index) {
            session.notice(format!(
                "{} is already on {}; not switched again",
                host.name, info.release
            ));
        }
    }
    if pending.is_empty() && already.is_empty() {
        session.notice(format!(
            "every selected host is already on {}",
            info.release
        ));
        return Ok(());
    }
    // Hosts that may be on the new release from here on: taken back on any failure.
    let mut switched = already.clone();
    let waves: Vec<(Option<Wave>, Vec<usize>)> = if canary.is_empty() {
        vec![(None, (0..hosts.len()).collect())]
    } else {
        let rest = (0..hosts.len()).filter(|i| !canary.contains(i)).collect();
        vec![(Some(Wave::Canary), canary), (Some(Wave::Rest), rest)]
    };
    let mut done = Vec::new();
    let mut wave_started = started;
    for (index, (wave, members)) in waves.iter().enumerate() {
        let wave = *wave;
        let last = index + 1 == waves.len();
        session.events.set_wave(wave);
        let result = switch_wave(
            context,
            session,
            info,
            action,
            &previous,
            &pending,
            members,
            last,
            &mut switched,
        )
        .await;
        session.events.set_wave(None);
        match result {
            Ok(skew) => {
                let live = members
                    .iter()
                    .filter(|&&i| pending.contains(&i) || already.contains(&i))
                    .count();
                done.push((wave, live, wave_started.elapsed(), skew));
                wave_started = Instant::now();
            }
            Err(failures) if switched.is_empty() => {
                // Called off everywhere before any host was told to go.
                return Err(Error::StepFailed(failures));
            }
            Err(failures) => {
                return Err(restore(
                    context, session, states, &switched, &previous, info, failures,
                )
                .await);
            }
        }
    }
    let record = |host: usize| session.record(host, &Ending::ok());
    let keep = deployfile.app.keep_releases;
    let prune = |host: usize| match action {
        Action::Activate => states[host].prunable(&info.release, previous[host].as_deref(), keep),
        Action::Rollback => Vec::new(),
    };
    let mut finished: Vec<usize> = pending.iter().chain(&already).copied().collect();
    finished.sort_unstable();
    finished.dedup();
    let token = Some(context.invocation.token.as_str());
    let finish = plan::finish(hosts, &finished, &info.release, &record, &prune, token)?;
    let results = session.step_to_the_end(&finish).await;
    let succeeded = || {
        results
            .iter()
            .filter(|r| r.outcome.success())
            .map(|r| r.host)
    };
    session.unlocked(succeeded());
    session.recorded(succeeded());
    for (wave, live, window, skew) in done {
        session.events.send_in(
            wave,
            EventKind::Activated {
                release: info.release.to_string(),
                hosts: live,
                window,
                skew,
            },
        );
    }
    executor::failures(hosts, &finish, &results).map_err(|failures| Error::Unrecorded {
        release: info.release.to_string(),
        failures,
    })
}

/// One wave of a switch: the armed switch of `members` that are `pending`, then the
/// after-switch steps and (for an activation) the health check on `members`; local steps (on this
/// machine) run once, in the `last` wave. Every host told to switch is added to `switched`;
/// returns the switch skew, or what failed.
#[allow(clippy::too_many_arguments)]
async fn switch_wave(
    context: &Context,
    session: &Session<'_>,
    info: &ReleaseInfo,
    action: Action,
    previous: &[Option<String>],
    pending: &[usize],
    members: &[usize],
    last: bool,
    switched: &mut Vec<usize>,
) -> Result<Duration, Vec<StepFailure>> {
    let hosts = &context.hosts;
    let deployfile = &context.deployfile;
    let planning = |error: crate::plan::QuoteError| {
        vec![StepFailure {
            host: Target::EveryHost,
            step: "planning".into(),
            outcome: Outcome::Lost(error.to_string()),
        }]
    };
    if context.invocation.cancel.is_cancelled() {
        // A signal between the waves: the second wave is not switched, the first goes back.
        return Err(vec![StepFailure {
            host: Target::EveryHost,
            step: "switch".into(),
            outcome: crate::transport::interrupted(),
        }]);
    }
    let now: Vec<usize> = pending
        .iter()
        .copied()
        .filter(|i| members.contains(i))
        .collect();
    let mut skew = Duration::ZERO;
    if !now.is_empty() {
        let switch_step = plan::switch(hosts, &now, &info.release, previous).map_err(planning)?;
        context.set_busy(&format!("switching every host to {}", info.release));
        let results = session.step_to_the_end(&switch_step).await;
        switched.extend(results.iter().filter(|r| r.fired).map(|r| r.host));
        skew = spread(results.iter().map(|r| r.finished));
        executor::failures(hosts, &switch_step, &results)?;
    }
    let mut after = plan::activate_steps(
        deployfile,
        hosts,
        true,
        &context.invocation.timestamp,
        info,
        previous,
    )
    .map_err(planning)?;
    if action == Action::Activate {
        after.extend(
            plan::healthcheck(
                deployfile,
                hosts,
                &context.invocation.timestamp,
                info,
                previous,
            )
            .map_err(planning)?,
        );
    }
    for mut step in after {
        let planned = !step.hosts().is_empty();
        step.retain_hosts(|host| members.contains(&host));
        if (planned && step.hosts().is_empty()) || (step.is_local() && !last) {
            // A `once` step that ran in the other wave, roles that no host here has, or a
            // local step, which runs once, after the last wave.
            continue;
        }
        let results = session.step(&step).await;
        executor::failures(hosts, &step, &results)?;
        if context.invocation.cancel.is_cancelled() {
            return Err(vec![StepFailure {
                host: Target::EveryHost,
                step: step.name.clone(),
                outcome: crate::transport::interrupted(),
            }]);
        }
    }
    Ok(skew)
}

fn spread(times: impl Iterator<Item = Instant>) -> Duration {
    let times: Vec<Instant> = times.collect();
    match (times.iter().min(), times.iter().max()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    }
}

/// How often a host that could not be switched back is tried again, and the pause between.
const RESTORE_ATTEMPTS: usize = 3;
const RESTORE_PAUSE: Duration = Duration::from_secs(1);

/// Takes every host in `switched` back to what it served before, each on its own (a host that
/// cannot go back holds no other back), retrying the ones that fail; then runs the after-switch
/// steps again where hosts went back and records the rollback there. Returns the error that
/// ends the command: exit 5 when every host went back, exit 7 naming those that did not.
async fn restore(
    context: &Context,
    session: &Session<'_>,
    states: &[HostState],
    switched: &[usize],
    previous: &[Option<String>],
    failed: &ReleaseInfo,
    failures: Vec<StepFailure>,
) -> Error {
    let hosts = &context.hosts;
    context.set_busy("switching every switched host back to the release it served before");
    let mut left: Vec<usize> = switched.to_vec();
    left.sort_unstable();
    left.dedup();
    let mut back = Vec::new();
    let mut why: BTreeMap<usize, Outcome> = BTreeMap::new();
    for attempt in 0..RESTORE_ATTEMPTS {
        if left.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(RESTORE_PAUSE).await;
        }
        let step = match plan::switch_back(hosts, &left, previous) {
            Ok(step) => step,
            Err(error) => {
                session.notice(format!("cannot plan the switch back: {error}"));
                break;
            }
        };
        let results = session.step_to_the_end(&step).await;
        left.clear();
        for result in results {
            if result.outcome.success() {
                back.push(result.host);
                why.remove(&result.host);
            } else {
                // A host that was cut off cannot be tried again: it no longer answers.
                if session.is_reachable(result.host) {
                    left.push(result.host);
                }
                why.insert(result.host, result.outcome);
            }
        }
    }
    back.sort_unstable();
    let restore_failures =
        rerun_after_switch(context, session, states, &back, previous, failed, &failures).await;
    if why.is_empty() {
        return Error::RolledBack {
            release: failed.release.to_string(),
            failures,
            restore_failures,
        };
    }
    let left: Vec<(String, String)> = why
        .iter()
        .map(|(&host, outcome)| {
            let state = match outcome {
                Outcome::Exited(_) => format!("still on {} ({outcome})", failed.release),
                _ => format!(
                    "unknown: it may be on {} or on {} ({outcome})",
                    failed.release,
                    previous[host].as_deref().unwrap_or("no release")
                ),
            };
            (hosts[host].name.clone(), state)
        })
        .collect();
    let stuck = why
        .keys()
        .map(|&i| hosts[i].name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    // The lock stays on a host that no longer answered; once this deployr has ended, `unlock`
    // may remove it, and the journal tells `rollback` where each host goes back to.
    let rerun = &context.rerun;
    Error::Diverged {
        release: failed.release.to_string(),
        failures,
        left,
        back: back.iter().map(|&i| hosts[i].name.clone()).collect(),
        fix: format!("{rerun} unlock --hosts {stuck} && {rerun} rollback --hosts {stuck}"),
    }
}

/// On the hosts that went back: the after-switch steps again (a reload, typically), per
/// release they went back to, and a `rollback` record in their history. Returns what failed.
async fn rerun_after_switch(
    context: &Context,
    session: &Session<'_>,
    states: &[HostState],
    back: &[usize],
    previous: &[Option<String>],
    failed: &ReleaseInfo,
    failures: &[StepFailure],
) -> Vec<StepFailure> {
    let hosts = &context.hosts;
    let mut restore_failures = Vec::new();
    // A host that served no release, or something that is no release id, has no steps to
    // run again.
    let mut by_release: BTreeMap<ReleaseId, Vec<usize>> = BTreeMap::new();
    for &host in back {
        if let Some(Ok(release)) = previous[host].as_deref().map(ReleaseId::parse) {
            by_release.entry(release).or_default().push(host);
        }
    }
    let rolled_back = Ending::rolled_back(failures);
    let record = |host: usize| session.record(host, &rolled_back);
    for (release, group) in &by_release {
        let info = release_info(states, release);
        let before: Vec<Option<String>> = (0..hosts.len())
            .map(|_| Some(failed.release.to_string()))
            .collect();
        let steps = match plan::activate_steps(
            &context.deployfile,
            hosts,
            true,
            &context.invocation.timestamp,
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
            step.retain_hosts(|host| group.contains(&host));
            let results = session.step_to_the_end(&step).await;
            if let Err(more) = executor::failures(hosts, &step, &results) {
                restore_failures.extend(more);
            }
        }
        if let Ok(step) = plan::finish(hosts, group, release, &record, &|_| Vec::new(), None) {
            let results = session.step_to_the_end(&step).await;
            session.recorded(
                results
                    .iter()
                    .filter(|r| r.outcome.success())
                    .map(|r| r.host),
            );
            if let Err(more) = executor::failures(hosts, &step, &results) {
                restore_failures.extend(more);
            }
        }
    }
    restore_failures
}
