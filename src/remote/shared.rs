//! Linking `shared_dirs` and `shared_files` from `shared/` into a new release directory.

use crate::deployfile::App;
use crate::inventory::Host;
use crate::release_id::ReleaseId;
use crate::shell::{QuoteError, Script, fail, quote, sh, text};

/// In `deploy_to`: links the shared paths into `releases/<release>`.
///
/// The release's own files may hold symlinks (`public -> /var/www`); removing and linking
/// `public/uploads` through one would act outside the release. So first, before anything is
/// removed, every directory on the way to a shared path that is a symlink must resolve inside
/// the release, or the host fails naming the link. A shared path that is itself a symlink is
/// fine: `rm -rf` removes the link, not what it points to.
pub(super) fn link(host: &Host, app: &App, release: &ReleaseId) -> Result<Script, QuoteError> {
    let mut s = Script::new();
    s.line(
        "r=$(cd {} && pwd -P) || exit 1",
        &[&quote(&format!("releases/{release}"), "the release")?],
    );
    let in_release = |parts: &[&str]| {
        let mut path = format!("releases/{release}");
        for part in parts {
            path.push('/');
            path.push_str(part);
        }
        quote(&path, "a shared path")
    };
    for path in app.shared_dirs.iter().chain(&app.shared_files) {
        let parts = parts(path);
        for end in 1..parts.len() {
            let link = in_release(&parts[..end])?;
            let refuse = fail(&[
                &text("refusing to link the shared path ")?,
                &quote(path, "a shared path")?,
                &text(": ")?,
                &link,
                &text(" in the release is a symlink to ")?,
                &sh("\"$l\"", &[]),
                &text(", outside the release; nothing was removed")?,
            ]);
            s.line(
                "if [ -L {} ]; then t=$(cd {} 2>/dev/null && pwd -P); l=$(readlink {}); case \"$t/\" in \"$r\"/*) ;; *) {} ;; esac; fi",
                &[&link, &link, &link, &refuse],
            );
        }
    }
    for (path, is_dir) in app
        .shared_dirs
        .iter()
        .map(|p| (p, true))
        .chain(app.shared_files.iter().map(|p| (p, false)))
    {
        let parts = parts(path);
        let shared = quote(&format!("shared/{}", parts.join("/")), "a shared path")?;
        let linked = in_release(&parts)?;
        let parent = in_release(&parts[..parts.len() - 1])?;
        let target = quote(
            &format!("{}/shared/{}", host.deploy_to, parts.join("/")),
            "a shared path",
        )?;
        if is_dir {
            s.line("mkdir -p {} || exit 1", &[&shared]);
        } else {
            let missing = fail(&[
                &text("shared file ")?,
                &shared,
                &text(" does not exist on this host; create it once in ")?,
                &quote(&format!("{}/shared", host.deploy_to), "deploy_to")?,
            ]);
            s.line("[ -e {} ] || {}", &[&shared, &missing]);
        }
        s.line(
            "rm -rf {} && mkdir -p {} && ln -s {} {} || exit 1",
            &[&linked, &parent, &target, &linked],
        );
    }
    Ok(s)
}

/// A shared path's components (validated relative, without `..`, when the deployfile was read).
fn parts(path: &str) -> Vec<&str> {
    path.split('/').filter(|p| !p.is_empty()).collect()
}
