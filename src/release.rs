//! The layout on every host and the shell commands that change it: fetch and export a release,
//! link shared paths, switch `current` atomically, record history, prune, read the state back.
//!
//! ```text
//! {deploy_to}/
//!   repo/                      bare mirror of the git repo, fetched incrementally
//!   releases/20261124T154100Z/ one directory per release, with a REVISION file
//!   shared/                    shared_dirs and shared_files, linked into each release
//!   current -> releases/...    switched by rename(2), never unlinked first
//!   .deployr/prepared          the release the last prepare finished (release, commit, ref, time)
//!   .deployr/ready/<id>        one empty file per release whose prepare succeeded on this host
//!   .deployr/activating        the journal of an activation between its switch and its finish
//!   .deployr/lock              the deploy lock: a symlink whose target is the owner line
//!   .deployr/history           one JSON record per command that changed the host
//! ```

use std::collections::BTreeSet;

use crate::deployfile::App;
use crate::history::Record;
use crate::inventory::Host;
use crate::plan::{QuoteError, quote};

const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// `20261124T154100Z`: sorts by time, and is what every release directory is named.
pub fn new_id(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format(ID_FORMAT).to_string()
}

/// The id for a new release: now, or one second after the newest release on any host, so that a
/// second prepare within the same second never reuses (and overwrites) a release directory and
/// ids keep sorting in the order releases were made.
pub fn next_id<'a>(
    now: chrono::DateTime<chrono::Utc>,
    existing: impl IntoIterator<Item = &'a str>,
) -> String {
    let candidate = new_id(now);
    match existing.into_iter().max() {
        Some(newest) if newest >= candidate.as_str() => {
            chrono::NaiveDateTime::parse_from_str(newest, ID_FORMAT)
                .map(|time| {
                    (time + chrono::Duration::seconds(1))
                        .format(ID_FORMAT)
                        .to_string()
                })
                .unwrap_or(candidate)
        }
        _ => candidate,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a release id; ids look like 20261124T154100Z (see `deployr releases`)")]
pub struct InvalidId(pub String);

/// Release ids from the command line are substituted into commands, so only the exact shape is
/// accepted.
pub fn validate_id(id: &str) -> Result<(), InvalidId> {
    let bytes = id.as_bytes();
    let shape = bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8]
            .iter()
            .chain(&bytes[9..15])
            .all(u8::is_ascii_digit);
    if shape {
        Ok(())
    } else {
        Err(InvalidId(id.to_string()))
    }
}

pub fn release_path(host: &Host, id: &str) -> String {
    format!("{}/releases/{id}", host.deploy_to)
}

/// What `prepare` records on a host once everything there succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prepared {
    pub release: String,
    pub commit: String,
    pub reference: String,
    pub time: String,
}

/// `.deployr/activating`: written on a host when its switch is armed, removed by `finish` (or
/// when the host goes back). Found later, it means a deployr stopped between the switch and
/// the end of the activation; `activate` finishes that activation and `rollback` undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    pub release: String,
    /// What the host served before (none on a first activation).
    pub previous: Option<String>,
}

/// A host's release state, read in one command before anything changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    pub current: Option<String>,
    /// `current` exists but is a real directory: an error that names the fix.
    pub current_is_directory: bool,
    pub prepared: Option<Prepared>,
    /// Release ids on disk with their commits, oldest first.
    pub releases: Vec<(String, String)>,
    /// The last records of `.deployr/history`, oldest first.
    pub history: Vec<Record>,
    /// Who holds the deploy lock: its owner line.
    pub lock: Option<String>,
    /// Something is at the lock's path that no deployr wrote whole (a plain file, a directory
    /// without an owner): what it is.
    pub lock_malformed: Option<String>,
    /// This invocation took the lock in the same round trip.
    pub lock_taken: bool,
    /// Why the lock could not be taken although nobody holds it (a read-only or full disk).
    pub lock_error: Option<String>,
    /// Releases whose prepare succeeded on this host.
    pub ready: BTreeSet<String>,
    /// An activation that was switched but never finished.
    pub activating: Option<Journal>,
    /// Checksums of the uploaded artifacts kept on the host (`strategy = "upload"`).
    pub artifacts: Vec<String>,
}

impl HostState {
    pub fn commit_of(&self, release: &str) -> Option<&str> {
        self.releases
            .iter()
            .find(|(id, _)| id == release)
            .map(|(_, commit)| commit.as_str())
    }

    pub fn has_release(&self, release: &str) -> bool {
        self.releases.iter().any(|(id, _)| id == release)
    }

    /// The release is on disk and complete: its prepare succeeded here, or it has been live
    /// (releases from before the `ready` markers existed count by their history).
    pub fn is_complete(&self, release: &str) -> bool {
        self.has_release(release)
            && (self.ready.contains(release)
                || self.prepared.as_ref().is_some_and(|p| p.release == release)
                || self.current.as_deref() == Some(release)
                || self
                    .history
                    .iter()
                    .any(|record| record.made_live() == Some(release)))
    }

    /// The release that was live before the current one was last activated: where a rollback
    /// goes.
    pub fn previous(&self) -> Option<&str> {
        let current = self.current.as_deref()?;
        self.history
            .iter()
            .rev()
            .find(|record| record.activated(current))
            .and_then(|record| record.previous.as_deref())
    }

    /// Release directories that pruning removes once `current` is live (with `previous` before
    /// it): releases that were live, beyond the `keep` most recently live, and releases older than current that
    /// were never activated (a failed prepare). Never current, previous, or a prepared release.
    pub fn prunable(&self, current: &str, previous: Option<&str>, keep: usize) -> Vec<String> {
        // Most recently live first: a rollback makes its release live again.
        let mut activated: Vec<&str> = vec![current];
        for live in self.history.iter().rev().filter_map(Record::made_live) {
            if !activated.contains(&live) {
                activated.push(live);
            }
        }
        let mut kept: BTreeSet<&str> = activated.iter().take(keep).copied().collect();
        kept.insert(current);
        kept.extend(previous);
        if let Some(prepared) = &self.prepared {
            kept.insert(&prepared.release);
        }
        self.releases
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| !kept.contains(id))
            .filter(|id| activated.contains(id) || *id < current)
            .map(str::to_string)
            .collect()
    }
}

/// Reads the whole state in one round trip, as `key=value` lines for [`parse_state`].
/// Uses shell built-ins where it can (`read`, `printf`): on a busy host, every program started is
/// a fork and an exec that the lock waits for.
pub fn state_script(host: &Host) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    Ok(format!(
        r#"cd {deploy_to} 2>/dev/null || exit 0
if [ -L current ]; then echo "current=$(readlink current)"; elif [ -e current ]; then echo "current_directory=yes"; fi
if [ -f .deployr/prepared ]; then while read -r l; do printf 'prepared_%s\n' "$l"; done < .deployr/prepared; fi
for r in releases/*; do [ -d "$r" ] && [ ! -L "$r" ] && {{ c=; read -r c 2>/dev/null < "$r/REVISION"; printf 'release=%s %s\n' "${{r#releases/}}" "$c"; }}; done
if [ -f .deployr/history ]; then tail -n 500 .deployr/history | sed 's/^/history=/'; fi
if [ -L .deployr/lock ]; then printf 'lock=%s\n' "$(readlink .deployr/lock)"
elif [ -f .deployr/lock/owner ]; then while read -r l; do printf 'lock=%s\n' "$l"; done < .deployr/lock/owner
elif [ -d .deployr/lock ]; then echo "lock_malformed=a directory with no owner file"
elif [ -e .deployr/lock ]; then echo "lock_malformed=a plain file"; fi
for a in .deployr/artifacts/*.tar.gz; do [ -f "$a" ] && a="${{a##*/}}" && echo "artifact=${{a%.tar.gz}}"; done
for r in .deployr/ready/*; do [ -f "$r" ] && echo "ready=${{r##*/}}"; done
if [ -f .deployr/activating ]; then while read -r l; do printf 'activating_%s\n' "$l"; done < .deployr/activating; fi
true"#
    ))
}

pub fn parse_state(lines: &[String]) -> HostState {
    let mut state = HostState::default();
    let mut prepared = Prepared::default();
    let mut journal = Journal {
        release: String::new(),
        previous: None,
    };
    for line in lines {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "current" => {
                state.current = value.rsplit('/').next().map(str::to_string);
            }
            "current_directory" => state.current_is_directory = true,
            "lock_taken" => state.lock_taken = true,
            "prepared_release" => prepared.release = value.to_string(),
            "prepared_commit" => prepared.commit = value.to_string(),
            "prepared_ref" => prepared.reference = value.to_string(),
            "prepared_time" => prepared.time = value.to_string(),
            "release" => {
                let (id, commit) = value.split_once(' ').unwrap_or((value, ""));
                if validate_id(id).is_ok() {
                    state
                        .releases
                        .push((id.to_string(), commit.trim().to_string()));
                }
            }
            "history" => state.history.extend(Record::parse(value)),
            "artifact" => state.artifacts.push(value.to_string()),
            "ready" if validate_id(value).is_ok() => {
                state.ready.insert(value.to_string());
            }
            "activating_release" => journal.release = value.to_string(),
            "activating_previous" if validate_id(value).is_ok() => {
                journal.previous = Some(value.to_string());
            }
            "lock_malformed" => state.lock_malformed = Some(value.to_string()),
            "lock_error" => state.lock_error = Some(value.to_string()),
            "lock" => {
                let holder = state.lock.get_or_insert_with(String::new);
                if !holder.is_empty() {
                    holder.push_str(", ");
                }
                holder.push_str(value);
            }
            _ => {}
        }
    }
    if validate_id(&prepared.release).is_ok() {
        state.prepared = Some(prepared);
    }
    if validate_id(&journal.release).is_ok() {
        state.activating = Some(journal);
    }
    state.releases.sort();
    state
}

/// Takes the deploy lock and reads the state in one round trip. The lock is a symlink whose
/// target is the owner line: `ln -s` creates it, owner and all, in one atomic step that fails
/// if anything is already there, so no other deployr ever sees a lock without its owner. Why it
/// could not be taken, when nobody holds it (a read-only or full disk), is reported as such.
pub fn lock_script(host: &Host, owner: &str) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    Ok(format!(
        r#"if e=$(mkdir -p {deploy_to}/.deployr 2>&1); then
  if [ -e {deploy_to}/.deployr/lock ] || [ -L {deploy_to}/.deployr/lock ]; then :
  elif e=$(ln -s {owner} {deploy_to}/.deployr/lock 2>&1); then echo lock_taken=yes
  else printf 'lock_error=%s\n' "$e"; fi
else printf 'lock_error=%s\n' "$e"; fi
{state}"#,
        owner = quote(owner, "the lock owner")?,
        state = state_script(host)?
    ))
}

/// Records how the command ended (`record`, a history line, where the command changed the
/// host) and releases the lock, only if it is still ours (`token` is in the owner line).
pub fn unlock_script(host: &Host, token: &str, record: Option<&str>) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    // A history that cannot be written (a full disk) must not keep the lock from going.
    let record = match record {
        Some(record) => format!(
            "printf '%s\\n' {} >> .deployr/history || echo 'could not record this command in .deployr/history' >&2\n",
            quote(record, "the history record")?
        ),
        None => String::new(),
    };
    Ok(format!(
        "cd {deploy_to} 2>/dev/null || exit 0\n{record}{}",
        release_lock(token)?
    ))
}

/// In `deploy_to`: removes the lock if `token` is in its owner line.
fn release_lock(token: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "case \"$(readlink .deployr/lock 2>/dev/null)\" in *{}*) rm -f .deployr/lock || exit 1 ;; esac\n",
        quote(&format!("token={token}"), "the lock token")?
    ))
}

/// `deployr unlock`: removes whatever is at the lock's path (a lock, or a malformed one), and
/// records that in the history.
pub fn force_unlock_script(host: &Host, record: &str) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    Ok(format!(
        "cd {deploy_to} || exit 1\nrm -rf .deployr/lock || exit 1\n{}",
        append_history(record)?
    ))
}

/// What a fetch into a mirror is for.
#[derive(Debug, Clone, Copy)]
pub enum Wanted<'a> {
    /// Fetch, then print the commit that the ref names (or fail saying it is not there).
    Ref(&'a str),
    /// This commit, already resolved elsewhere: fetch only if the mirror lacks it.
    Commit(&'a str),
}

/// Brings the host's `repo/` mirror up to date (cloning it the first time) for `wanted`. The
/// ref is resolved on one host first, so that every host then gets that one commit.
pub fn fetch_script(host: &Host, repo: &str, wanted: Wanted) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    Ok(format!(
        "mkdir -p {deploy_to}/releases {deploy_to}/shared {deploy_to}/.deployr && cd {deploy_to} || exit 1\n{}",
        mirror_script("repo", repo, wanted)?
    ))
}

/// Brings the bare mirror at `mirror` up to date with `repo` (cloning it the first time) for
/// `wanted`.
pub fn mirror_script(mirror: &str, repo: &str, wanted: Wanted) -> Result<String, QuoteError> {
    let mirror = quote(mirror, "the mirror")?;
    let repo = quote(repo, "the repo")?;
    let fetch = format!(
        "git -C {mirror} remote set-url origin {repo} && git -C {mirror} fetch --quiet --prune --force origin '+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*' || exit 1"
    );
    let (fetch, resolve) = match wanted {
        Wanted::Ref(reference) => {
            let commit_of = quote(&format!("{reference}^{{commit}}"), "the ref")?;
            let reference = quote(reference, "the ref")?;
            (
                fetch,
                format!(
                    "\ngit -C {mirror} rev-parse --verify --quiet {commit_of} || {{ echo \"ref \"{reference}\" is not in \"{repo} >&2; exit 1; }}"
                ),
            )
        }
        Wanted::Commit(commit) => {
            let object = quote(&format!("{commit}^{{commit}}"), "the commit")?;
            let commit = quote(commit, "the commit")?;
            // A commit that no branch or tag holds any more (a force-push meanwhile) is asked
            // for by name.
            (
                format!(
                    "git -C {mirror} cat-file -e {object} 2>/dev/null || {{ {fetch}; git -C {mirror} cat-file -e {object} 2>/dev/null || git -C {mirror} fetch --quiet origin {commit} || exit 1; }}"
                ),
                String::new(),
            )
        }
    };
    Ok(format!(
        r#"if [ -d {mirror} ]; then
  {fetch}
else
  git clone --quiet --mirror {repo} {mirror} || exit 1
fi{resolve}"#
    ))
}

/// `deployr diff`: how `target` relates to `live` in the bare mirror at `mirror`, as
/// `key=value` lines for [`crate::diff::parse`]: `relation=` (same, ahead, behind, diverged,
/// or unknown when the mirror lacks the live commit), then `commit=` (what the target adds),
/// `dropped=` (what going to it takes away), `stat=` and `file=` lines.
pub fn diff_script(mirror: &str, live: &str, target: &str) -> Result<String, QuoteError> {
    let mirror = quote(mirror, "the mirror")?;
    let live = quote(live, "the live commit")?;
    let target = quote(target, "the target commit")?;
    Ok(format!(
        r#"cd {mirror} || exit 1
git cat-file -e {live}^{{commit}} 2>/dev/null || {{ echo relation=unknown; exit 0; }}
if [ {live} = {target} ]; then echo relation=same; exit 0; fi
if git merge-base --is-ancestor {live} {target}; then echo relation=ahead
elif git merge-base --is-ancestor {target} {live}; then echo relation=behind
else echo relation=diverged; fi
git log --oneline {live}..{target} | sed 's/^/commit=/'
git log --oneline {target}..{live} | sed 's/^/dropped=/'
git diff --stat {live} {target} | sed 's/^/stat=/'
git diff --name-only {live} {target} | sed 's/^/file=/'"#
    ))
}

/// Where an uploaded artifact is kept on a host, named by its checksum.
pub fn artifact_path(host: &Host, sha256: &str) -> String {
    format!("{}/.deployr/artifacts/{sha256}.tar.gz", host.deploy_to)
}

/// Unpacks an uploaded artifact into a new release directory, after checking that it is
/// exactly what was sent: a damaged copy is removed (the next prepare sends it again) and the
/// host fails. Older artifacts are removed; the host keeps only the latest.
pub fn unpack_script(
    host: &Host,
    app: &App,
    release: &str,
    commit: &str,
    sha256: &str,
) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    let artifact = quote(
        &format!(".deployr/artifacts/{sha256}.tar.gz"),
        "the artifact",
    )?;
    let expected = quote(sha256, "the checksum")?;
    let id = release;
    let release = quote(release, "the release")?;
    let commit = quote(commit, "the commit")?;
    let mut script = format!(
        r#"mkdir -p {deploy_to}/releases {deploy_to}/shared && cd {deploy_to} || exit 1
actual=$(sha256sum < {artifact} | cut -d' ' -f1) || exit 1
if [ "$actual" != {expected} ]; then
  rm -f {artifact}
  echo "the uploaded artifact is damaged: its sha256 is $actual, not "{expected}"; it was removed, and the next prepare sends it again" >&2
  exit 1
fi
rm -rf releases/{release} && mkdir -p releases/{release} || exit 1
tar -xzf {artifact} -C releases/{release} || exit 1
echo {commit} > releases/{release}/REVISION || exit 1
for a in .deployr/artifacts/*; do [ "$a" = {artifact} ] || rm -f "$a"; done
"#
    );
    script.push_str(&link_shared_script(host, app, id)?);
    Ok(script)
}

/// Exports one commit into a new release directory and links the shared paths into it.
pub fn export_script(
    host: &Host,
    app: &App,
    repo_tree: Option<&str>,
    release: &str,
    commit: &str,
) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    let tree = match repo_tree {
        Some(dir) => quote(&format!("{commit}:{dir}"), "repo_tree")?,
        None => quote(commit, "the commit")?,
    };
    let mut script = format!(
        r#"cd {deploy_to} || exit 1
rm -rf releases/{release} && mkdir -p releases/{release} || exit 1
git -C repo archive --format=tar {tree} | tar -x -C releases/{release} || exit 1
echo {commit} > releases/{release}/REVISION || exit 1
"#
    );
    script.push_str(&link_shared_script(host, app, release)?);
    Ok(script)
}

/// Links `shared_dirs` and `shared_files` from `shared/` into a new release directory.
///
/// The release's own files may hold symlinks (`public -> /var/www`); removing and linking
/// `public/uploads` through one would act outside the release. So first, before anything is
/// removed, every directory on the way to a shared path that is a symlink must resolve inside
/// the release, or the host fails naming the link. A shared path that is itself a symlink is
/// fine: `rm -rf` removes the link, not what it points to.
fn link_shared_script(host: &Host, app: &App, release: &str) -> Result<String, QuoteError> {
    let mut script = format!(
        "r=$(cd releases/{} && pwd -P) || exit 1\n",
        quote(release, "the release")?
    );
    for path in app.shared_dirs.iter().chain(&app.shared_files) {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for end in 1..parts.len() {
            let link = quote(
                &format!("releases/{release}/{}", parts[..end].join("/")),
                "a shared path",
            )?;
            script.push_str(&format!(
                "if [ -L {link} ]; then t=$(cd {link} 2>/dev/null && pwd -P); case \"$t/\" in \"$r\"/*) ;; *) \
echo \"refusing to link the shared path \"{shared}\": \"{link}\" in the release is a symlink to $(readlink {link}), outside the release; nothing was removed\" >&2; exit 1 ;; esac; fi\n",
                shared = quote(path, "a shared path")?,
            ));
        }
    }
    for dir in &app.shared_dirs {
        let shared = quote(&format!("shared/{dir}"), "a shared dir")?;
        let linked = quote(&format!("releases/{release}/{dir}"), "a shared dir")?;
        let target = quote(&format!("{}/shared/{dir}", host.deploy_to), "a shared dir")?;
        script.push_str(&format!(
            "mkdir -p {shared} && rm -rf {linked} && mkdir -p \"$(dirname {linked})\" && ln -s {target} {linked} || exit 1\n"
        ));
    }
    for file in &app.shared_files {
        let shared = quote(&format!("shared/{file}"), "a shared file")?;
        let linked = quote(&format!("releases/{release}/{file}"), "a shared file")?;
        let target = quote(
            &format!("{}/shared/{file}", host.deploy_to),
            "a shared file",
        )?;
        script.push_str(&format!(
            "[ -e {shared} ] || {{ echo \"shared file \"{shared}\" does not exist on this host; create it once in {}/shared\" >&2; exit 1; }}\n\
             rm -rf {linked} && mkdir -p \"$(dirname {linked})\" && ln -s {target} {linked} || exit 1\n",
            host.deploy_to
        ));
    }
    Ok(script)
}

/// Marks the release as prepared on this host; written last, only when every step succeeded.
/// `.deployr/ready/<id>` keeps that outcome per release, for `activate --release` and
/// `rollback --to`, after the marker has moved on to a newer release.
pub fn mark_prepared_script(host: &Host, prepared: &Prepared) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    let body = format!(
        "release={}\ncommit={}\nref={}\ntime={}\n",
        prepared.release, prepared.commit, prepared.reference, prepared.time
    );
    Ok(format!(
        "cd {deploy_to} && mkdir -p .deployr/ready && : > .deployr/ready/{id} && printf '%s' {} > .deployr/prepared.tmp && mv .deployr/prepared.tmp .deployr/prepared",
        quote(&body, "the prepared marker")?,
        id = prepared.release,
    ))
}

/// Run before a prepare changes anything on the host: the old marker goes, so that a prepare
/// that fails here leaves no marker for `activate` to take an older release from.
pub fn clear_prepared_script(host: &Host) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    Ok(format!("rm -f {deploy_to}/.deployr/prepared || exit 1"))
}

/// The journal's contents for an activation of `release` on a host that served `previous`.
fn journal_body(release: &str, previous: Option<&str>) -> String {
    format!("release={release}\nprevious={}\n", previous.unwrap_or(""))
}

/// The atomic switch, armed: everything that can fail or take time (checks, the journal, the
/// symlink under a temporary name) happens first; then the script prints `armed` and waits for
/// `go` on its standard input, so that all hosts switch within one write of each other. The
/// switch itself is a rename(2) over `current` (never a moment without it), checked with
/// `readlink`. Where `mv -T` is missing, the temporary link is named `current` inside
/// `releases/` and moved into the parent, which renames it over `current` just the same
/// (Capistrano's recipe). If `go` never comes, the temporary link and the journal are removed
/// and nothing changed.
pub fn switch_script(
    host: &Host,
    release: &str,
    previous: Option<&str>,
) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    let target = quote(&release_path(host, release), "the release path")?;
    let journal = quote(&journal_body(release, previous), "the journal")?;
    let wait = r#"echo armed
read -r go && [ "$go" = go ] || { rm -f releases/current .deployr/activating; echo "not switched: the switch was called off" >&2; exit 1; }"#;
    Ok(format!(
        r#"cd {deploy_to} || exit 1
[ -d releases/{release} ] || {{ echo "release {release} is not on this host" >&2; exit 1; }}
if [ -e current ] && [ ! -L current ]; then echo "current is a real directory, not a symlink; move it away (e.g. mv current current.old) and activate again" >&2; exit 1; fi
mkdir -p .deployr && printf '%s' {journal} > .deployr/activating.tmp && mv .deployr/activating.tmp .deployr/activating || exit 1
ln -sfn {target} releases/current || exit 1
command -v perl >/dev/null 2>&1 && exec perl -e {perl} {target}
{wait}
mv -T releases/current current 2>/dev/null || mv releases/current . || exit 1
echo switched
read -r done
[ "$(readlink current)" = {target} ] || {{ echo "current does not point to {release} after the switch" >&2; exit 1; }}"#,
        perl = quote(SWITCH_PERL, "the switch")?,
    ))
}

/// The switch where perl is installed (Debian and most distributions have it): the same steps
/// as the shell version, but `go` is followed by rename(2) in the already running process,
/// with no `mv` to fork and exec at the moment that every host should switch together. Both
/// then say `switched` and wait for `done` before checking and exiting, so that no host's
/// clean-up competes for the CPU with the hosts still switching.
const SWITCH_PERL: &str = r#"$| = 1;
print "armed\n";
my $go = <STDIN>;
if (!defined $go || $go ne "go\n") {
  unlink "releases/current", ".deployr/activating";
  print STDERR "not switched: the switch was called off\n";
  exit 1;
}
rename("releases/current", "current") or die "cannot switch current: $!\n";
print "switched\n";
my $done = <STDIN>;
my $now = readlink("current");
exit 0 if defined $now && $now eq $ARGV[0];
die "current does not point to $ARGV[0] after the switch\n";"#;

/// Puts one host back on `release` (or removes `current`, undoing a first activation) at once,
/// not armed: going back is done host by host, so that a host that cannot go back keeps no
/// other host on the failed release. The journal goes once the host is back.
pub fn switch_back_script(host: &Host, release: Option<&str>) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    let Some(release) = release else {
        return Ok(format!(
            "cd {deploy_to} || exit 1\nrm -f current || exit 1\nrm -f .deployr/activating"
        ));
    };
    let target = quote(&release_path(host, release), "the release path")?;
    Ok(format!(
        r#"cd {deploy_to} || exit 1
[ -d releases/{release} ] || {{ echo "release {release} is not on this host any more" >&2; exit 1; }}
if [ "$(readlink current)" != {target} ]; then
  ln -sfn {target} releases/current || exit 1
  mv -T releases/current current 2>/dev/null || mv releases/current . || exit 1
fi
[ "$(readlink current)" = {target} ] || {{ echo "current does not point to {release} after switching back" >&2; exit 1; }}
rm -f .deployr/activating"#
    ))
}

/// After a good activation or rollback: record it (`record`, a history line), clear the
/// prepared marker if it was this release, end the journal, remove the releases that pruning
/// selected and, with `unlock` (our lock token), release the deploy lock in the same round trip.
pub fn finish_script(
    host: &Host,
    release: &str,
    record: &str,
    prune: &[String],
    unlock: Option<&str>,
) -> Result<String, QuoteError> {
    let deploy_to = quote(&host.deploy_to, "deploy_to")?;
    // Built-ins only, but for the `rm`s that have something to remove.
    let mut script = format!(
        "cd {deploy_to} || exit 1\n{}\
         p=; [ -f .deployr/prepared ] && while read -r l; do [ \"$l\" = 'release={release}' ] && p=1; done < .deployr/prepared\n\
         [ -z \"$p\" ] || rm -f .deployr/prepared\n\
         rm -f .deployr/activating || exit 1\n",
        append_history(record)?,
    );
    if !prune.is_empty() {
        let dirs: Vec<String> = prune
            .iter()
            .flat_map(|id| [format!("releases/{id}"), format!(".deployr/ready/{id}")])
            .collect();
        script.push_str(&format!("rm -rf {}\n", dirs.join(" ")));
    }
    if let Some(token) = unlock {
        script.push_str(&release_lock(token)?);
    }
    Ok(script)
}

/// In `deploy_to`: appends one line to the history.
fn append_history(record: &str) -> Result<String, QuoteError> {
    Ok(format!(
        "[ -d .deployr ] || mkdir .deployr || exit 1\nprintf '%s\\n' {} >> .deployr/history || exit 1\n",
        quote(record, "the history record")?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn release_ids_are_validated_exactly() {
        assert_eq!(validate_id("20261124T154100Z"), Ok(()));
        for bad in [
            "20261124T154100",
            "2026112xT154100Z",
            "../../etc",
            "",
            "20261124T154100Z;x",
        ] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_id_never_reuses_an_existing_release() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T15:41:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(next_id(now, ["20261124T154000Z"]), "20261124T154100Z");
        assert_eq!(next_id(now, ["20261124T154100Z"]), "20261124T154101Z");
        assert_eq!(next_id(now, ["20261124T154159Z"]), "20261124T154200Z");
    }

    #[test]
    fn parses_state_lines() {
        let state = parse_state(&lines(
            "current=/srv/a/releases/20260101T000002Z\n\
             prepared_release=20260101T000003Z\nprepared_commit=abc\nprepared_ref=main\nprepared_time=t\n\
             release=20260101T000002Z def\nrelease=20260101T000001Z 123\nrelease=junk x\n\
             history=t1 activate 20260101T000001Z previous=- by=me\n\
             history=t2 activate 20260101T000002Z previous=20260101T000001Z by=me\n",
        ));
        assert_eq!(state.current.as_deref(), Some("20260101T000002Z"));
        assert_eq!(state.prepared.as_ref().unwrap().commit, "abc");
        assert_eq!(
            state.releases,
            [
                ("20260101T000001Z".to_string(), "123".to_string()),
                ("20260101T000002Z".to_string(), "def".to_string())
            ]
        );
        assert_eq!(state.previous(), Some("20260101T000001Z"));
    }

    #[test]
    fn prune_keeps_current_previous_prepared_and_the_newest_activated() {
        let ids = [
            "20260101T000001Z",
            "20260101T000002Z",
            "20260101T000003Z",
            "20260101T000004Z",
            "20260101T000005Z",
        ];
        let mut state = HostState {
            releases: ids.iter().map(|i| (i.to_string(), String::new())).collect(),
            ..HostState::default()
        };
        // 1, 3, 4 were activated in that order; 2 was a failed prepare; 5 is prepared.
        let mut previous = None;
        for id in [ids[0], ids[2], ids[3]] {
            let line = format!(
                "t activate {id} previous={}",
                previous.as_deref().unwrap_or("-")
            );
            state.history.extend(Record::parse(&line));
            previous = Some(id.to_string());
        }
        state.prepared = Some(Prepared {
            release: ids[4].into(),
            ..Prepared::default()
        });
        // Activating 4 again after a rollback to 3: keep 4 (current) and 3 (previous).
        assert_eq!(state.prunable(ids[3], Some(ids[2]), 1), [ids[0], ids[1]]);
        assert_eq!(state.prunable(ids[3], Some(ids[2]), 3), [ids[1]]);
    }
}
