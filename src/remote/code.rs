//! The `code` step: a new release directory with the commit's files, from the host's mirror
//! (git) or from an uploaded artifact, with the shared paths linked in. And the upload
//! strategy's export on this machine, for the build.

use crate::deployfile::App;
use crate::inventory::Host;
use crate::release_id::ReleaseId;
use crate::remote::fetch::{self, Wanted};
use crate::remote::{prepared, shared};
use crate::shell::{QuoteError, Script, fail, quote, sh, text};

/// Where an uploaded artifact is kept on a host, named by its checksum.
pub fn artifact_path(host: &Host, sha256: &str) -> String {
    format!("{}/{}", host.deploy_to, artifact_in_deploy_to(sha256))
}

/// [`artifact_path`], from `deploy_to`.
fn artifact_in_deploy_to(sha256: &str) -> String {
    format!(".deployr/artifacts/{sha256}.tar.gz")
}

/// With git: clears the prepared marker, brings the mirror up to date with `commit` (`fetch`;
/// not on the host that resolved the ref, whose mirror has it), exports the commit (or its
/// `repo_tree` directory) into the release and links the shared paths.
pub fn from_git(
    host: &Host,
    app: &App,
    repo: &str,
    repo_tree: Option<&str>,
    release: &ReleaseId,
    commit: &str,
    fetch: bool,
) -> Result<String, QuoteError> {
    let mut s = prepared::clear(host)?;
    if fetch {
        s.append(fetch::on_host(host, repo, Wanted::Commit(commit))?);
    }
    let tree = match repo_tree {
        Some(dir) => quote(&format!("{commit}:{dir}"), "repo_tree")?,
        None => quote(commit, "the commit")?,
    };
    let dir = quote(&format!("releases/{release}"), "the release")?;
    s.cd(&quote(&host.deploy_to, "deploy_to")?);
    s.line("rm -rf {} && mkdir -p {} || exit 1", &[&dir, &dir]);
    s.line(
        "git -C repo archive --format=tar {} | tar -x -C {} || exit 1",
        &[&tree, &dir],
    );
    s.line(
        "printf '%s\\n' {} > {} || exit 1",
        &[
            &quote(commit, "the commit")?,
            &quote(&format!("releases/{release}/REVISION"), "the release")?,
        ],
    );
    s.append(shared::link(host, app, release)?);
    Ok(s.finish())
}

/// With uploads: clears the prepared marker, checks that the artifact is exactly what was
/// sent (a damaged copy is removed, the next prepare sends it again, and the host fails),
/// unpacks it into the release and links the shared paths. Older artifacts are removed; the
/// host keeps only the latest.
pub fn from_artifact(
    host: &Host,
    app: &App,
    release: &ReleaseId,
    commit: &str,
    sha256: &str,
) -> Result<String, QuoteError> {
    let artifact = quote(&artifact_in_deploy_to(sha256), "the artifact")?;
    let expected = quote(sha256, "the checksum")?;
    let dir = quote(&format!("releases/{release}"), "the release")?;
    let path = |sub: &str| quote(&format!("{}/{sub}", host.deploy_to), "deploy_to");
    let mut s = prepared::clear(host)?;
    s.line(
        "mkdir -p {} {} && cd {} || exit 1",
        &[
            &path("releases")?,
            &path("shared")?,
            &quote(&host.deploy_to, "deploy_to")?,
        ],
    );
    s.line(
        "actual=$(sha256sum < {} | cut -d' ' -f1) || exit 1",
        &[&artifact],
    );
    s.line("if [ \"$actual\" != {} ]; then", &[&expected]);
    s.line("  rm -f {}", &[&artifact]);
    let damaged = fail(&[
        &text("the uploaded artifact is damaged: its sha256 is ")?,
        &sh("\"$actual\"", &[]),
        &text(", not ")?,
        &expected,
        &text("; it was removed, and the next prepare sends it again")?,
    ]);
    s.line("  {}", &[&damaged]);
    s.line("fi", &[]);
    s.line("rm -rf {} && mkdir -p {} || exit 1", &[&dir, &dir]);
    s.line("tar -xzf {} -C {} || exit 1", &[&artifact, &dir]);
    s.line(
        "printf '%s\\n' {} > {} || exit 1",
        &[
            &quote(commit, "the commit")?,
            &quote(&format!("releases/{release}/REVISION"), "the release")?,
        ],
    );
    s.line(
        "for a in .deployr/artifacts/*; do [ -e \"$a\" ] || continue; [ \"$a\" = {} ] || rm -f \"$a\"; done",
        &[&artifact],
    );
    s.append(shared::link(host, app, release)?);
    Ok(s.finish())
}

/// The upload strategy's build directory, on this machine: a clean export of `tree` (a commit,
/// or `commit:dir`) from the mirror.
pub fn export_here(dir: &str, mirror: &str, tree: &str) -> Result<Script, QuoteError> {
    let dir = quote(dir, "the build directory")?;
    let mut s = Script::new();
    s.line("rm -rf {} && mkdir -p {} || exit 1", &[&dir, &dir]);
    s.line(
        "git -C {} archive --format=tar {} | tar -x -C {} || exit 1",
        &[
            &quote(mirror, "the mirror")?,
            &quote(tree, "the commit")?,
            &dir,
        ],
    );
    Ok(s)
}
