//! `deployr diff`: how the target commit relates to the live one, read in a bare mirror.

use crate::inventory::Host;
use crate::shell::{QuoteError, Script, quote};

/// [`script`] in the host's own mirror, `repo/` in `deploy_to`, where `resolve` fetched.
pub fn on_host(host: &Host, live: &str, target: &str) -> Result<String, QuoteError> {
    script(&format!("{}/repo", host.deploy_to), live, target)
}

/// How `target` relates to `live` in the bare mirror at `mirror`, as `key=value` lines for
/// [`crate::diff::parse`]: `relation=` (same, ahead, behind, diverged, or unknown when the
/// mirror lacks the live commit), then `commit=` (what the target adds), `dropped=` (what going
/// to it takes away), `stat=` and `file=` lines.
pub fn script(mirror: &str, live: &str, target: &str) -> Result<String, QuoteError> {
    let live_object = quote(&format!("{live}^{{commit}}"), "the live commit")?;
    let adds = quote(&format!("{live}..{target}"), "the target commit")?;
    let drops = quote(&format!("{target}..{live}"), "the target commit")?;
    let live = quote(live, "the live commit")?;
    let target = quote(target, "the target commit")?;
    let mut s = Script::new();
    s.cd(&quote(mirror, "the mirror")?);
    s.line(
        "git cat-file -e {} 2>/dev/null || { echo relation=unknown; exit 0; }",
        &[&live_object],
    );
    s.line(
        "if [ {} = {} ]; then echo relation=same; exit 0; fi",
        &[&live, &target],
    );
    s.line(
        "if git merge-base --is-ancestor {} {}; then echo relation=ahead",
        &[&live, &target],
    );
    s.line(
        "elif git merge-base --is-ancestor {} {}; then echo relation=behind",
        &[&target, &live],
    );
    s.line("else echo relation=diverged; fi", &[]);
    s.line("git log --oneline {} | sed 's/^/commit=/'", &[&adds]);
    s.line("git log --oneline {} | sed 's/^/dropped=/'", &[&drops]);
    s.line(
        "git diff --stat {} {} | sed 's/^/stat=/'",
        &[&live, &target],
    );
    s.line(
        "git diff --name-only {} {} | sed 's/^/file=/'",
        &[&live, &target],
    );
    Ok(s.finish())
}
