//! `deployr catch-up`: hosts that drifted (left out of a deploy with `--allow-unreachable`, or
//! restored from an old image) are brought to the release most hosts serve: that release's
//! commit is prepared there under the same id and switched, with its after-switch steps and
//! health check. The hosts already on it are not touched, not even locked.

use std::time::Instant;

use super::activate::{self, Action, Switch};
use super::status::majority;
use super::{Context, Session};
use crate::error::Error;
use crate::release::HostState;
use crate::release_id::ReleaseId;

/// What the survey of every selected host found: the release to catch up to, its commit, and
/// the hosts that are not on it.
struct Drift {
    release: ReleaseId,
    commit: String,
    behind: Vec<String>,
}

/// Locks every selected host, so that nothing moves the hosts on the release while the others
/// catch up to it; works only on the hosts that are behind, in a part of the session; the
/// others get nothing else, not even a history record.
pub async fn command(context: &Context) -> Result<(), Error> {
    context
        .with_session(async |context, session| {
            let mut states = session.lock("catch-up").await?;
            let all = 0..context.hosts.len();
            let Some(drift) = survey(context, session, &states)? else {
                session.recorded(all);
                return Ok(());
            };
            let members: Vec<usize> = all
                .clone()
                .filter(|&i| drift.behind.contains(&context.hosts[i].name))
                .collect();
            session.recorded(all.filter(|i| !members.contains(i)));
            let mut behind = context.clone();
            behind
                .hosts
                .retain(|host| drift.behind.contains(&host.name));
            let part = session.part(&behind, &members);
            let states = members
                .iter()
                .map(|&i| std::mem::take(&mut states[i]))
                .collect();
            let result = async {
                part.service_checks().await?;
                catch_up(&behind, &part, states, &drift).await
            }
            .await;
            session.adopt(part, &members);
            result
        })
        .await
}

/// Which hosts catch-up will touch, from every selected host's state.
fn survey(
    context: &Context,
    session: &Session<'_>,
    states: &[HostState],
) -> Result<Option<Drift>, Error> {
    let journaled: Vec<&str> = context
        .hosts
        .iter()
        .zip(states)
        .filter(|(_, state)| state.activating.is_some())
        .map(|(host, _)| host.name.as_str())
        .collect();
    if !journaled.is_empty() {
        return Err(Error::Refused(format!(
            "an activation was switched but never finished on {}; finish it with `deployr activate` or undo it with `deployr rollback` first. Nothing was changed",
            journaled.join(", ")
        )));
    }
    let Some(release) = majority(states) else {
        return Err(Error::Refused(
            "no release is served by more selected hosts than any other, so there is nothing to catch up to; choose one with `deployr activate --release ID`. Nothing was changed".into(),
        ));
    };
    let commit = states
        .iter()
        .find_map(|state| state.commit_of(release))
        .unwrap_or_default()
        .to_string();
    let behind: Vec<(String, String)> = context
        .hosts
        .iter()
        .zip(states)
        .filter(|(_, state)| state.current.as_deref() != Some(release))
        .map(|(host, state)| {
            let on = state.current.as_deref().unwrap_or("no release");
            (host.name.clone(), format!("{} (on {on})", host.name))
        })
        .collect();
    if behind.is_empty() {
        session.notice(format!(
            "every selected host serves {release}; nothing to catch up"
        ));
        return Ok(None);
    }
    if commit.len() < 40 {
        return Err(Error::Refused(format!(
            "the commit of {release} is not recorded on the hosts that serve it, so it cannot be prepared elsewhere; deploy it again instead. Nothing was changed"
        )));
    }
    let listed: Vec<&str> = behind.iter().map(|(_, text)| text.as_str()).collect();
    let others = context.hosts.len() - behind.len();
    session.notice(format!(
        "bringing {} to {release} ({} of commit {}), the release {others} other host{} serve{}: {}",
        if behind.len() == 1 {
            "1 host".to_string()
        } else {
            format!("{} hosts", behind.len())
        },
        "prepare, switch, after-switch steps and health check",
        &commit[..12],
        if others == 1 { "" } else { "s" },
        if others == 1 { "s" } else { "" },
        listed.join(", ")
    ));
    Ok(Some(Drift {
        release: ReleaseId::parse(release)?,
        commit,
        behind: behind.into_iter().map(|(name, _)| name).collect(),
    }))
}

/// On the hosts that are behind (the whole selection here): prepare the release where it is
/// missing, then switch them all to it as an activation does (without the steps before the
/// switch: migrate has run), taking them back on any failure.
async fn catch_up(
    context: &Context,
    session: &Session<'_>,
    mut states: Vec<HostState>,
    drift: &Drift,
) -> Result<(), Error> {
    let release = &drift.release;
    let missing = states.iter().filter(|s| !s.has_release(release)).count();
    let incomplete: Vec<&str> = context
        .hosts
        .iter()
        .zip(&states)
        .filter(|(_, s)| s.has_release(release) && !s.is_complete(release))
        .map(|(host, _)| host.name.as_str())
        .collect();
    if !incomplete.is_empty() || (missing > 0 && missing < states.len()) {
        return Err(Error::Refused(format!(
            "{release} is on some of the hosts to catch up but not on others{}; catch them up in groups with --hosts. Nothing was changed",
            if incomplete.is_empty() {
                String::new()
            } else {
                format!(
                    " (its prepare did not succeed on {})",
                    incomplete.join(", ")
                )
            }
        )));
    }
    if missing > 0 {
        let prepared = super::prepare::prepare(
            context,
            session,
            &states,
            Some(&drift.commit),
            true,
            Some(release),
        )
        .await?;
        for state in &mut states {
            state.note_prepared(&prepared);
        }
    }
    let info = activate::release_info(&states, release);
    let previous: Vec<Option<String>> = states.iter().map(|s| s.current.clone()).collect();
    session.about(&info, &previous);
    let switch = Switch {
        info: &info,
        action: Action::Activate,
        previous,
        already: Vec::new(),
        canary: Vec::new(),
    };
    activate::switch_all(context, session, &states, switch, Instant::now()).await
}
