//! `deployr diff [--ref REF]`: what deploying REF would change on the selected hosts, per
//! commit they serve now. Reads only: no lock, no release, nothing switched (with git, the
//! first host's mirror is fetched, as `prepare` would).

use std::collections::BTreeMap;

use super::prepare::{reference_to_deploy, resolve, source};
use super::{Context, Session};
use crate::artifact::Workspace;
use crate::diff::{self, Diff, Relation};
use crate::error::Error;
use crate::events::EventKind;
use crate::plan;
use crate::release::HostState;

pub async fn command(context: &Context, reference: Option<&str>) -> Result<(), Error> {
    let source = source(context)?;
    let reference = reference_to_deploy(source, reference)?;
    let workspace = Workspace::new(&context.deployfile.app.name, &source.repo);
    context
        .with_session(async |context, session| {
            let states = session.states().await?;
            let target = resolve(context, session, source, &workspace, &reference)
                .await?
                .commit;
            for (live, hosts) in live_commits(context, &states) {
                let diff = compare(
                    context, session, &workspace, live, hosts, &target, &reference,
                )
                .await?;
                session.events.send(EventKind::Diff(Box::new(diff)));
            }
            Ok(())
        })
        .await
}

/// A live commit and the release it is in; `None` where nothing is live yet.
type Live = Option<(String, String)>;

/// The hosts by the commit they serve, in host order.
fn live_commits(context: &Context, states: &[HostState]) -> Vec<(Live, Vec<String>)> {
    let mut groups: BTreeMap<Live, Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    for (host, state) in context.hosts.iter().zip(states) {
        let live = state.current.as_ref().and_then(|release| {
            let commit = state.commit_of(release)?;
            Some((commit.to_string(), release.clone()))
        });
        if !groups.contains_key(&live) {
            order.push(live.clone());
        }
        groups.entry(live).or_default().push(host.name.clone());
    }
    order
        .into_iter()
        .map(|live| {
            let hosts = groups.remove(&live).unwrap_or_default();
            (live, hosts)
        })
        .collect()
}

/// Compares one live commit with the target where the repository was fetched.
async fn compare(
    context: &Context,
    session: &Session<'_>,
    workspace: &Workspace,
    live: Live,
    hosts: Vec<String>,
    target: &str,
    reference: &str,
) -> Result<Diff, Error> {
    let Some((commit, release)) = live else {
        return Ok(Diff {
            hosts,
            live: None,
            live_release: None,
            target: target.to_string(),
            reference: reference.to_string(),
            relation: Relation::Unknown,
            commits: Vec::new(),
            dropped: Vec::new(),
            stat: Vec::new(),
            files: Vec::new(),
            watched: Vec::new(),
        });
    };
    let source = source(context)?;
    let step = plan::diff(source, &context.hosts, workspace, &commit, target)?;
    let results = session.execute(&step).await?;
    let printed = results
        .first()
        .map(|r| r.stdout.clone())
        .unwrap_or_default();
    let parsed = diff::parse(&printed);
    let watched = diff::watched(&parsed.files, &context.deployfile.app.watch);
    Ok(Diff {
        hosts,
        live: Some(commit),
        live_release: Some(release),
        target: target.to_string(),
        reference: reference.to_string(),
        relation: parsed.relation,
        commits: parsed.commits,
        dropped: parsed.dropped,
        stat: parsed.stat,
        files: parsed.files,
        watched,
    })
}
