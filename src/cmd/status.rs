//! `deployr status`, `deployr releases` and `deployr unlock`: what every host serves, where hosts
//! differ, and who holds the deploy lock.

use std::collections::BTreeSet;

use super::{Context, Ending, Session};
use crate::error::Error;
use crate::events::EventKind;
use crate::history;
use crate::owner;
use crate::plan;
use crate::release::HostState;

/// Reads every host's state and hands it to `show`.
async fn with_states(
    context: &Context,
    show: impl AsyncFnOnce(&Session<'_>, &[HostState]) -> Result<(), Error>,
) -> Result<(), Error> {
    context
        .with_session(async |_, session| {
            let states = session.states().await?;
            show(session, &states).await
        })
        .await
}

pub async fn status(context: &Context) -> Result<(), Error> {
    with_states(context, async |session, states| {
        for (host, state) in context.hosts.iter().zip(states) {
            let short = |commit: &str| commit.chars().take(12).collect::<String>();
            let commit = state.current.as_deref().and_then(|c| state.commit_of(c));
            let prepared = state.prepared.as_ref().map(|p| p.release.to_string());
            session.events.send(EventKind::Probed {
                host: host.name.clone(),
                facts: vec![
                    (
                        "current".into(),
                        state.current.clone().unwrap_or("-".into()),
                    ),
                    ("commit".into(), commit.map_or("-".into(), short)),
                    ("prepared".into(), prepared.unwrap_or("-".into())),
                    ("releases".into(), state.releases.len().to_string()),
                    ("lock".into(), lock_text(state)),
                    (
                        "unfinished".into(),
                        state
                            .activating
                            .as_ref()
                            .map_or("-".into(), |journal| journal.release.clone()),
                    ),
                ],
            });
            if let Some(journal) = &state.activating {
                session.notice(format!(
                    "warning: {}: the activation of {} was switched but never finished (its deployr stopped); `deployr activate` finishes it, `deployr rollback` undoes it",
                    host.name, journal.release
                ));
            }
        }
        warn_drift(session, states);
        Ok(())
    })
    .await
}

pub async fn releases(context: &Context) -> Result<(), Error> {
    with_states(context, async |session, states| {
        for (host, state) in context.hosts.iter().zip(states) {
            if state.releases.is_empty() {
                session.notice(format!("{} has no releases", host.name));
            }
            for (id, commit) in &state.releases {
                let mut marks = Vec::new();
                if state.current.as_deref() == Some(id) {
                    marks.push("current");
                }
                if state.previous() == Some(id) {
                    marks.push("previous");
                }
                if state
                    .prepared
                    .as_ref()
                    .is_some_and(|p| p.release.as_str() == id)
                {
                    marks.push("prepared");
                }
                if !state.is_complete(id) {
                    marks.push("incomplete");
                }
                session.events.send(EventKind::Release {
                    host: host.name.clone(),
                    release: id.clone(),
                    commit: commit.clone(),
                    marks,
                });
            }
        }
        warn_drift(session, states);
        Ok(())
    })
    .await
}

/// `deployr history`: the last `count` commands of the selected hosts' merged history.
pub async fn history(context: &Context, count: usize) -> Result<(), Error> {
    with_states(context, async |session, states| {
        let hosts: Vec<(String, Vec<history::Record>)> = context
            .hosts
            .iter()
            .zip(states)
            .map(|(host, state)| (host.name.clone(), state.history.clone()))
            .collect();
        let timeline = history::timeline(&hosts);
        if timeline.is_empty() {
            session.notice("no history on any selected host".into());
        }
        let skip = timeline.len().saturating_sub(count);
        for entry in timeline.into_iter().skip(skip) {
            session.events.send(EventKind::History(Box::new(entry)));
        }
        Ok(())
    })
    .await
}

/// What `status` shows in its lock column.
fn lock_text(state: &HostState) -> String {
    match (&state.lock, &state.lock_malformed) {
        (Some(owner), _) => owner::without_token(owner),
        (None, Some(what)) => format!("malformed ({what})"),
        (None, None) => "-".into(),
    }
}

/// `deployr unlock`: removes the deploy lock wherever there is one (or whatever malformed thing
/// stands at its path), and says what it found. A lock whose holder is a deployr still running
/// on this machine is kept unless `force`: removing it would let a second deploy run into the
/// first.
pub async fn unlock(context: &Context, force: bool) -> Result<(), Error> {
    with_states(context, async |session, states| {
        let held: Vec<usize> = (0..states.len())
            .filter(|&i| states[i].lock.is_some() || states[i].lock_malformed.is_some())
            .collect();
        if held.is_empty() {
            session.notice("no deploy lock on any selected host".into());
            return Ok(());
        }
        let alive: Vec<String> = held
            .iter()
            .filter_map(|&i| {
                let owner = states[i].lock.as_deref()?;
                owner::holder_alive_here(owner).then(|| {
                    format!("{} by {}", context.hosts[i].name, owner::without_token(owner))
                })
            })
            .collect();
        if !alive.is_empty() && !force {
            return Err(Error::HolderAlive(format!(
                "the deploy lock is held by a deployr that is still running on this machine ({}); nothing was removed. Let it finish or stop it (Ctrl-C), or pass --force to remove the lock anyway",
                alive.join(", ")
            )));
        }
        let record = |host: usize| session.record(host, &Ending::ok());
        session
            .execute(&plan::force_unlock(&context.hosts, &held, &record)?)
            .await?;
        for &i in &held {
            let what = match (&states[i].lock, &states[i].lock_malformed) {
                (Some(owner), _) => format!("the deploy lock held by {}", owner::without_token(owner)),
                (None, Some(what)) => format!("a malformed deploy lock ({what})"),
                (None, None) => continue,
            };
            session.notice(format!("{}: removed {what}", context.hosts[i].name));
        }
        Ok(())
    })
    .await
}

fn warn_drift(session: &Session<'_>, states: &[HostState]) {
    let distinct: BTreeSet<&str> = states
        .iter()
        .map(|s| s.current.as_deref().unwrap_or("(none)"))
        .collect();
    if distinct.len() > 1 {
        let list: Vec<&str> = distinct.into_iter().collect();
        let fix = match majority(states) {
            Some(release) => format!(
                "; `{} catch-up` brings the others to {release}, which most hosts serve",
                session.context.rerun
            ),
            None => "; no release is served by most hosts: choose one with `deployr activate --release ID`".into(),
        };
        session.notice(format!(
            "warning: drift: the selected hosts serve different releases: {}{fix}",
            list.join(", ")
        ));
    }
}

/// The release that more selected hosts serve than any other (a tie has none).
pub fn majority(states: &[HostState]) -> Option<&str> {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for state in states {
        if let Some(current) = state.current.as_deref() {
            *counts.entry(current).or_default() += 1;
        }
    }
    let most = *counts.values().max()?;
    let mut leaders = counts.into_iter().filter(|(_, n)| *n == most);
    match (leaders.next(), leaders.next()) {
        (Some((release, _)), None) => Some(release),
        _ => None,
    }
}
