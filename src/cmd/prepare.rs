//! `deployr prepare`: the slow work, on every host in parallel, while the old release serves.

use super::{Context, Session};
use crate::artifact::{self, Artifact, Workspace};
use crate::deployfile::{Source, Strategy};
use crate::error::Error;
use crate::inventory::LOCAL;
use crate::plan::{self, PlannedStep, ReleaseInfo, StepKind};
use crate::refname;
use crate::release::{HostState, Prepared};
use crate::release_id::ReleaseId;
use crate::transport::{Outcome, Signal, Stream};

pub async fn command(context: &Context, reference: Option<&str>, force: bool) -> Result<(), Error> {
    context
        .with_session(async |context, session| {
            let states = session.lock("prepare").await?;
            session.service_checks().await?;
            prepare(context, session, &states, reference, force, None)
                .await
                .map(drop)
        })
        .await
}

pub(super) fn source(context: &Context) -> Result<&Source, Error> {
    context.deployfile.source.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "{} has no [source]; prepare needs to know which repo to deploy",
            context.deployfile.path.display()
        ))
    })
}

pub(super) fn reference_to_deploy(
    source: &Source,
    reference: Option<&str>,
) -> Result<String, Error> {
    let reference = reference.unwrap_or(&source.reference);
    refname::validate(reference)?;
    Ok(reference.to_string())
}

/// Prepares a new release on every host of the session and returns what was prepared (or,
/// with uploads, the release that already holds this commit on every host, unless `force`).
/// `release` names it (for `catch-up`, the release the other hosts serve); by default a new id.
pub async fn prepare(
    context: &Context,
    session: &Session<'_>,
    states: &[HostState],
    reference: Option<&str>,
    force: bool,
    release: Option<&ReleaseId>,
) -> Result<Prepared, Error> {
    let deployfile = &context.deployfile;
    let hosts = &context.hosts;
    let source = source(context)?;
    let workspace = Workspace::new(&deployfile.app.name, &source.repo);
    let reference = reference_to_deploy(source, reference)?;
    // Held from resolving the ref in the mirror until the artifact is uploaded.
    let mut workspace_lock = match source.strategy {
        // A dry run builds nothing here, so it needs no workspace.
        Strategy::Upload { .. } if !context.dry_run() => {
            Some(lock_workspace(context, session, &workspace).await?)
        }
        Strategy::Upload { .. } | Strategy::Git => None,
    };
    let existing = states
        .iter()
        .flat_map(|s| s.releases.iter().map(|(id, _)| id.as_str()));
    let mut info = ReleaseInfo {
        release: release.map_or_else(
            || ReleaseId::after(context.invocation.now, existing),
            ReleaseId::clone,
        ),
        commit: String::new(),
        reference,
    };
    let resolved = resolve(context, session, source, &workspace, &info.reference).await?;
    info.commit = resolved.commit;
    let previous: Vec<Option<String>> = states.iter().map(|state| state.current.clone()).collect();
    session.about(&info, &previous);
    let artifact = match &source.strategy {
        Strategy::Git => None,
        Strategy::Upload { build, artifact } => {
            if !force && let Some(prepared) = prepared_everywhere(states, &info.commit) {
                session.notice(format!(
                    "{} ({}) is already prepared as {} on every selected host; reusing it (--force prepares it anew)",
                    &info.commit[..12],
                    info.reference,
                    prepared.release
                ));
                return Ok(prepared);
            }
            let mtime = resolved.time.unwrap_or(0);
            let build_text = build.as_ref().map(|b| b.source()).unwrap_or_default();
            let key = artifact::settings_key(build_text, artifact, source.repo_tree.as_deref());
            let packed = match workspace.cached(&info.commit, &key) {
                Some(cached) if !force => {
                    session.notice(format!(
                        "reusing the build of {} ({}, sha256 {})",
                        &info.commit[..12],
                        megabytes(cached.size),
                        &cached.sha256[..12]
                    ));
                    cached
                }
                _ => {
                    build_and_pack(context, session, &workspace, &info, artifact, &key, mtime)
                        .await?
                }
            };
            Some(packed)
        }
    };
    let send_to: Vec<usize> = match &artifact {
        Some(packed) => {
            let (have, lack): (Vec<usize>, Vec<usize>) =
                (0..hosts.len()).partition(|&i| states[i].artifacts.contains(&packed.sha256));
            if !have.is_empty() {
                let names: Vec<&str> = have.iter().map(|&i| hosts[i].name.as_str()).collect();
                session.notice(format!(
                    "{} already hold{} artifact {}; not sent again",
                    names.join(", "),
                    if have.len() == 1 { "s" } else { "" },
                    &packed.sha256[..12]
                ));
            }
            lack
        }
        None => Vec::new(),
    };
    let steps = release_steps(
        context,
        source,
        &info,
        artifact.as_ref(),
        &send_to,
        &previous,
    )?;
    if send_to.is_empty() {
        workspace_lock = None;
    }
    for step in &steps {
        session.execute(step).await?;
        if matches!(step.kind, StepKind::Upload { .. }) {
            workspace_lock = None;
        }
    }
    drop(workspace_lock);
    session.notice(format!(
        "prepared {} ({} of {}) on {} host{}; `deployr activate` makes it live",
        info.release,
        &info.commit[..12],
        info.reference,
        hosts.len(),
        if hosts.len() == 1 { "" } else { "s" }
    ));
    Ok(Prepared {
        release: info.release,
        commit: info.commit,
        reference: info.reference,
        time: context.invocation.timestamp.clone(),
    })
}

/// Everything after the ref is resolved and the build packed: the code into a new release
/// directory on every host, the `[[prepare]]` steps, and the marker.
fn release_steps(
    context: &Context,
    source: &Source,
    info: &ReleaseInfo,
    artifact: Option<&Artifact>,
    send_to: &[usize],
    previous: &[Option<String>],
) -> Result<Vec<PlannedStep>, Error> {
    let (deployfile, hosts) = (&context.deployfile, &context.hosts);
    let mut steps = plan::code(deployfile, source, hosts, info, artifact, send_to)?;
    steps.extend(plan::prepare(
        deployfile,
        hosts,
        &context.invocation.timestamp,
        info,
        previous,
    )?);
    Ok(steps)
}

/// A ref resolved to one commit, and (with uploads) the commit's time.
pub(super) struct Resolved {
    pub commit: String,
    pub time: Option<u64>,
}

/// Resolves `reference` to one commit: with git, in the first host's mirror (fetching it); with
/// uploads, in this machine's.
pub(super) async fn resolve(
    context: &Context,
    session: &Session<'_>,
    source: &Source,
    workspace: &Workspace,
    reference: &str,
) -> Result<Resolved, Error> {
    let hosts = &context.hosts;
    let resolved = session
        .execute(&plan::resolve(
            &context.deployfile,
            source,
            hosts,
            workspace,
            reference,
        )?)
        .await?;
    let printed: Vec<&str> = resolved
        .first()
        .map(|result| result.stdout.iter().map(|line| line.trim()).collect())
        .unwrap_or_default();
    let position = printed
        .iter()
        .position(|line| line.len() >= 40 && line.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| {
            let on = match source.strategy {
                Strategy::Git => hosts[0].name.as_str(),
                Strategy::Upload { .. } => "this machine",
            };
            Error::Refused(format!("could not resolve {reference} to a commit on {on}"))
        })?;
    Ok(Resolved {
        commit: printed[position].to_string(),
        time: printed.get(position + 1).and_then(|time| time.parse().ok()),
    })
}

/// The release that every host has prepared from `commit` and still holds, if there is one.
fn prepared_everywhere(states: &[HostState], commit: &str) -> Option<Prepared> {
    let first = states.first()?.prepared.clone()?;
    let everywhere = states.iter().all(|state| {
        state.prepared.as_ref().is_some_and(|p| {
            p.release == first.release && p.commit == commit && state.has_release(&p.release)
        })
    });
    everywhere.then_some(first)
}

/// Takes this machine's workspace for the app and repository, waiting (until Ctrl-C) while
/// another deployr builds in it.
async fn lock_workspace(
    context: &Context,
    session: &Session<'_>,
    workspace: &Workspace,
) -> Result<artifact::WorkspaceLock, Error> {
    let mut cancel = context.invocation.cancel.clone();
    let mut told = false;
    loop {
        let attempt = workspace.try_lock().map_err(|error| {
            Error::Io(std::io::Error::new(
                error.kind(),
                format!(
                    "cannot lock the build cache {}: {error}",
                    workspace.root().display()
                ),
            ))
        })?;
        if let Some(lock) = attempt {
            return Ok(lock);
        }
        if !told {
            session.notice(format!(
                "waiting for another deployr working in the build cache {}",
                workspace.root().display()
            ));
            told = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            _ = cancel.cancelled() => {
                let signal = context.invocation.stopped_by.get().copied().unwrap_or(Signal::Interrupt);
                return Err(Error::Interrupted(signal));
            }
        }
    }
}

/// Runs the build in a clean export of the commit, then packs what it made.
async fn build_and_pack(
    context: &Context,
    session: &Session<'_>,
    workspace: &Workspace,
    info: &ReleaseInfo,
    artifact_dir: &str,
    key: &str,
    mtime: u64,
) -> Result<Artifact, Error> {
    let deployfile = &context.deployfile;
    let source = source(context)?;
    if let Some(step) = plan::build(
        deployfile,
        source,
        workspace,
        &context.invocation.timestamp,
        info,
    )? {
        session.execute(&step).await?;
    }
    const PACK: &str = "pack";
    let events = &session.events;
    events.step_started(LOCAL, PACK);
    let started = std::time::Instant::now();
    let to = workspace.artifact_path(&info.commit, key);
    if context.dry_run() {
        // Nothing was built, so nothing is packed: the upload and unpack steps name a
        // stand-in artifact, known by its zero checksum.
        let what = format!("pack {artifact_dir} of the build into {}", to.display());
        events.would_run(&crate::events::Source::new(LOCAL, PACK), &what);
        events.step_finished(LOCAL, PACK, &Outcome::Exited(0), started.elapsed());
        return Ok(Artifact {
            path: to,
            sha256: "0".repeat(64),
            size: 0,
        });
    }
    let packed = match artifact::inside(&workspace.build_dir(), artifact_dir) {
        Err(refused) => Err(refused),
        Ok(dir) if dir.is_dir() => {
            let build_dir = workspace.build_dir();
            tokio::task::spawn_blocking(move || {
                let packed = artifact::pack(&dir, mtime, &to);
                let _ = std::fs::remove_dir_all(build_dir);
                packed
            })
            .await
            .map_err(|error| error.to_string())
            .and_then(|packed| packed.map_err(|error| error.to_string()))
        }
        Ok(_) => Err(format!(
            "the build made no `{artifact_dir}` directory to ship (in {})",
            workspace.build_dir().display()
        )),
    };
    let outcome = match &packed {
        Ok(packed) => {
            events.output(
                LOCAL,
                PACK,
                Stream::Stdout,
                format!(
                    "packed {artifact_dir} into {} ({}, sha256 {})",
                    packed.path.display(),
                    megabytes(packed.size),
                    packed.sha256
                ),
            );
            Outcome::Exited(0)
        }
        Err(reason) => Outcome::Lost(reason.clone()),
    };
    events.step_finished(LOCAL, PACK, &outcome, started.elapsed());
    workspace.prune(deployfile.app.keep_releases);
    packed.map_err(|_| {
        Error::StepFailed(vec![crate::executor::StepFailure {
            host: crate::executor::Target::ThisMachine,
            step: PACK.into(),
            outcome,
        }])
    })
}

pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
