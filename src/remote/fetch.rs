//! Keeping a bare mirror of the repository up to date: on a host (`repo/` in `deploy_to`), or,
//! with uploads, on this machine; and resolving the ref to one commit.

use crate::deployfile::EnvVar;
use crate::inventory::Host;
use crate::remote::command::export_env;
use crate::shell::{QuoteError, Script, Sh, fail, quote, sh, text};

/// What a fetch into a mirror is for.
#[derive(Debug, Clone, Copy)]
pub enum Wanted<'a> {
    /// Fetch, then print the commit that the ref names (or fail saying it is not there).
    Ref(&'a str),
    /// This commit, already resolved elsewhere: fetch only if the mirror lacks it.
    Commit(&'a str),
}

/// Brings the host's `repo/` mirror up to date (cloning it the first time) for `wanted`,
/// creating the layout first.
pub(super) fn on_host(host: &Host, repo: &str, wanted: Wanted) -> Result<Script, QuoteError> {
    let path = |sub: &str| quote(&format!("{}/{sub}", host.deploy_to), "deploy_to");
    let mut s = Script::new();
    s.line(
        "mkdir -p {} {} {} && cd {} || exit 1",
        &[
            &path("releases")?,
            &path("shared")?,
            &path(".deployr")?,
            &quote(&host.deploy_to, "deploy_to")?,
        ],
    );
    s.append(mirror("repo", repo, wanted)?);
    Ok(s)
}

/// The first step of a git prepare, on the first host: fetch, and print the commit the ref
/// names, once, so every host then gets that one commit even if the branch moves meanwhile.
/// git runs with `[env]` too: a proxy or GIT_SSH_COMMAND may be needed to reach the repo.
pub fn resolve(
    host: &Host,
    env: &[EnvVar],
    repo: &str,
    reference: &str,
) -> Result<String, QuoteError> {
    let mut s = Script::new();
    export_env(&mut s, env)?;
    s.append(on_host(host, repo, Wanted::Ref(reference))?);
    Ok(s.finish())
}

/// The same with uploads, in this machine's mirror under `workspace`, also printing the
/// commit's time, which every packed file gets.
pub fn resolve_here(
    workspace: &str,
    mirror_path: &str,
    env: &[EnvVar],
    repo: &str,
    reference: &str,
) -> Result<String, QuoteError> {
    let mut s = Script::new();
    s.line(
        "mkdir -p {} || exit 1",
        &[&quote(workspace, "the workspace")?],
    );
    export_env(&mut s, env)?;
    s.append(mirror(mirror_path, repo, Wanted::Ref(reference))?);
    s.line(
        "git -C {} show -s --format=%ct {}",
        &[
            &quote(mirror_path, "the mirror")?,
            &quote(&format!("{reference}^{{commit}}"), "the ref")?,
        ],
    );
    Ok(s.finish())
}

/// Brings the bare mirror at `mirror` up to date with `repo` (cloning it the first time) for
/// `wanted`.
fn mirror(mirror: &str, repo: &str, wanted: Wanted) -> Result<Script, QuoteError> {
    let mirror = quote(mirror, "the mirror")?;
    let repo = quote(repo, "the repo")?;
    let fetch = sh(
        "git -C {} remote set-url origin {} && git -C {} fetch --quiet --prune --force origin '+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*' || exit 1",
        &[&mirror, &repo, &mirror],
    );
    let (fetch, resolve): (Sh, Option<Sh>) = match wanted {
        Wanted::Ref(reference) => {
            let commit_of = quote(&format!("{reference}^{{commit}}"), "the ref")?;
            let missing = fail(&[
                &text("ref ")?,
                &quote(reference, "the ref")?,
                &text(" is not in ")?,
                &repo,
            ]);
            (
                fetch,
                Some(sh(
                    "git -C {} rev-parse --verify --quiet {} || {}",
                    &[&mirror, &commit_of, &missing],
                )),
            )
        }
        Wanted::Commit(commit) => {
            let object = quote(&format!("{commit}^{{commit}}"), "the commit")?;
            let commit = quote(commit, "the commit")?;
            // A commit that no branch or tag holds any more (a force-push meanwhile) is asked
            // for by name.
            (
                sh(
                    "git -C {} cat-file -e {} 2>/dev/null || { {}; git -C {} cat-file -e {} 2>/dev/null || git -C {} fetch --quiet origin {} || exit 1; }",
                    &[&mirror, &object, &fetch, &mirror, &object, &mirror, &commit],
                ),
                None,
            )
        }
    };
    let mut s = Script::new();
    s.line("if [ -d {} ]; then", &[&mirror]);
    s.line("  {}", &[&fetch]);
    s.line("else", &[]);
    s.line(
        "  git clone --quiet --mirror {} {} || exit 1",
        &[&repo, &mirror],
    );
    s.line("fi", &[]);
    if let Some(resolve) = resolve {
        s.push(resolve);
    }
    Ok(s)
}
