//! `deployr status`, `deployr releases` and `deployr unlock`: what every host serves, where hosts
//! differ, and who holds the deploy lock.

use std::collections::BTreeSet;

use super::{Context, Session, strip_token};
use crate::error::Error;
use crate::plan::{self, Plan};
use crate::release::HostState;
use crate::report::EventKind;

/// Reads every host's state (or prints that read in a dry run) and hands it to `show`.
async fn with_states(
    context: &Context,
    show: impl AsyncFnOnce(&Session<'_>, &[HostState]) -> Result<(), Error>,
) -> Result<(), Error> {
    if context.dry_run {
        return context.print_plan(&Plan {
            hosts: context.hosts.clone(),
            steps: vec![plan::state(&context.hosts)?],
        });
    }
    context
        .with_session(async |session| {
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
            let prepared = state.prepared.as_ref().map(|p| p.release.clone());
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
                    (
                        "lock".into(),
                        state.lock.as_deref().map_or("-".into(), strip_token),
                    ),
                ],
            });
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
                if state.prepared.as_ref().is_some_and(|p| &p.release == id) {
                    marks.push("prepared");
                }
                let commit: String = commit.chars().take(12).collect();
                session.notice(format!("{} {id} {commit} {}", host.name, marks.join(",")));
            }
        }
        warn_drift(session, states);
        Ok(())
    })
    .await
}

/// `deployr unlock`: removes the deploy lock wherever there is one, and says whose it was.
pub async fn unlock(context: &Context) -> Result<(), Error> {
    with_states(context, async |session, states| {
        let held: Vec<usize> = (0..states.len())
            .filter(|&i| states[i].lock.is_some())
            .collect();
        if held.is_empty() {
            session.notice("no deploy lock on any selected host".into());
            return Ok(());
        }
        session
            .run(&plan::force_unlock(&context.hosts, &held)?)
            .await?;
        for &i in &held {
            let holder = states[i].lock.as_deref().unwrap_or_default();
            session.notice(format!(
                "{}: removed the deploy lock held by {}",
                context.hosts[i].name,
                strip_token(holder)
            ));
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
        session.notice(format!(
            "warning: drift: the selected hosts serve different releases: {}",
            list.join(", ")
        ));
    }
}
