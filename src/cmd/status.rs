//! `deployr status` and `deployr releases`: what every host serves, and where they differ.

use std::collections::BTreeSet;

use super::{Context, Session};
use crate::error::Error;
use crate::plan::{self, Plan};
use crate::report::EventKind;

pub async fn status(context: &Context) -> Result<(), Error> {
    if context.dry_run {
        return print_state_plan(context);
    }
    context
        .with_session(async |session| {
            let states = session.states().await?;
            for (host, state) in context.hosts.iter().zip(&states) {
                let current = state.current.as_deref().unwrap_or("-");
                let commit = state
                    .current
                    .as_deref()
                    .and_then(|c| state.commit_of(c))
                    .map(|c| c.chars().take(12).collect::<String>())
                    .unwrap_or_else(|| "-".into());
                session.events.send(EventKind::Probed {
                    host: host.name.clone(),
                    facts: vec![
                        ("current".into(), current.into()),
                        ("commit".into(), commit),
                        (
                            "prepared".into(),
                            state
                                .prepared
                                .as_ref()
                                .map_or("-".into(), |p| p.release.clone()),
                        ),
                        ("releases".into(), state.releases.len().to_string()),
                        ("lock".into(), state.lock.clone().unwrap_or("-".into())),
                    ],
                });
            }
            warn_drift(
                session,
                &states.iter().map(|s| s.current.clone()).collect::<Vec<_>>(),
            );
            Ok(())
        })
        .await
}

pub async fn releases(context: &Context) -> Result<(), Error> {
    if context.dry_run {
        return print_state_plan(context);
    }
    context
        .with_session(async |session| {
            let states = session.states().await?;
            for (host, state) in context.hosts.iter().zip(&states) {
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
            warn_drift(
                session,
                &states.iter().map(|s| s.current.clone()).collect::<Vec<_>>(),
            );
            Ok(())
        })
        .await
}

fn warn_drift(session: &Session<'_>, currents: &[Option<String>]) {
    let distinct: BTreeSet<&str> = currents
        .iter()
        .map(|c| c.as_deref().unwrap_or("(none)"))
        .collect();
    if distinct.len() > 1 {
        let list: Vec<&str> = distinct.into_iter().collect();
        session.notice(format!(
            "warning: drift: the selected hosts serve different releases: {}",
            list.join(", ")
        ));
    }
}

fn print_state_plan(context: &Context) -> Result<(), Error> {
    context.print_plan(&Plan {
        hosts: context.hosts.clone(),
        steps: vec![plan::state(&context.hosts)?],
    })
}

/// `deployr unlock`: removes the deploy lock wherever there is one, and says whose it was.
pub async fn unlock(context: &Context) -> Result<(), Error> {
    if context.dry_run {
        return print_state_plan(context);
    }
    context
        .with_session(async |session| {
            let states = session.states().await?;
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
                    super::strip_token(holder)
                ));
            }
            Ok(())
        })
        .await
}
