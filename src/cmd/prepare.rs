//! `deployr prepare`: the slow work, on every host in parallel, while the old release serves.

use super::{Context, Session};
use crate::deployfile::Source;
use crate::error::Error;
use crate::plan::{self, Plan, ReleaseInfo};
use crate::refname;
use crate::release::{self, HostState, Prepared};

pub async fn command(context: &Context, reference: Option<&str>) -> Result<(), Error> {
    if context.dry_run {
        let source = source(context)?;
        let info = ReleaseInfo {
            release: release::new_id(context.now),
            commit: "<commit of the ref>".into(),
            reference: reference_to_deploy(source, reference)?,
        };
        let previous = vec![Some("<current release>".to_string()); context.hosts.len()];
        let steps = plan::prepare(
            &context.deployfile,
            source,
            &context.hosts,
            &context.timestamp,
            &info,
            &previous,
        )?;
        return context.print_plan(&Plan {
            hosts: context.hosts.clone(),
            steps,
        });
    }
    context
        .with_session(async |session| {
            let states = session.lock("prepare").await?;
            session.service_checks().await?;
            prepare(context, session, &states, reference)
                .await
                .map(drop)
        })
        .await
}

fn source(context: &Context) -> Result<&Source, Error> {
    context.deployfile.source.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "{} has no [source]; prepare needs to know which repo to deploy",
            context.deployfile.path.display()
        ))
    })
}

fn reference_to_deploy(source: &Source, reference: Option<&str>) -> Result<String, Error> {
    let reference = reference.unwrap_or(&source.reference);
    refname::validate(reference)?;
    Ok(reference.to_string())
}

/// Prepares a new release on every host of the session and returns what was prepared.
pub async fn prepare(
    context: &Context,
    session: &Session<'_>,
    states: &[HostState],
    reference: Option<&str>,
) -> Result<Prepared, Error> {
    let source = source(context)?;
    let reference = reference_to_deploy(source, reference)?;
    let existing = states
        .iter()
        .flat_map(|s| s.releases.iter().map(|(id, _)| id.as_str()));
    let mut info = ReleaseInfo {
        release: release::next_id(context.now, existing),
        commit: String::new(),
        reference,
    };
    let previous: Vec<Option<String>> = states.iter().map(|state| state.current.clone()).collect();
    let build = |info: &ReleaseInfo| {
        plan::prepare(
            &context.deployfile,
            source,
            &context.hosts,
            &context.timestamp,
            info,
            &previous,
        )
    };
    // The ref is resolved once, on the first host, so that every host gets the same commit
    // even if the branch moves while the others fetch.
    let resolve = build(&info)?.remove(0);
    let resolved = session.run(&resolve).await?;
    let commit = resolved
        .first()
        .and_then(|result| result.stdout.last())
        .map(|line| line.trim().to_string())
        .filter(|commit| commit.len() >= 40 && commit.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| {
            Error::Refused(format!(
                "could not resolve {} to a commit on {}",
                info.reference, context.hosts[0].name
            ))
        })?;
    info.commit = commit;
    for step in build(&info)?.iter().skip(1) {
        session.run(step).await?;
    }
    session.notice(format!(
        "prepared {} ({} of {}) on {} host{}; `deployr activate` makes it live",
        info.release,
        &info.commit[..12],
        info.reference,
        context.hosts.len(),
        if context.hosts.len() == 1 { "" } else { "s" }
    ));
    Ok(Prepared {
        release: info.release,
        commit: info.commit,
        reference: info.reference,
        time: context.timestamp.clone(),
    })
}
