//! The deploy lock on a host: taking it (with the state, in one round trip), giving it back,
//! and `deployr unlock`.

use crate::inventory::Host;
use crate::remote::protocol::state as key;
use crate::remote::{history, state};
use crate::shell::{QuoteError, Script, quote};

/// Takes the deploy lock and reads the state in one round trip. The lock is a symlink whose
/// target is the owner line: `ln -s` creates it, owner and all, in one atomic step that fails
/// if anything is already there, so no other deployr ever sees a lock without its owner; one
/// that loses that race to another finds the lock held, as if it had come a moment later. Why
/// it could not be taken, when nobody holds it (a read-only or full disk), is reported as such.
pub fn take(host: &Host, owner: &str) -> Result<String, QuoteError> {
    let dir = quote(&format!("{}/.deployr", host.deploy_to), "deploy_to")?;
    let lock = quote(&format!("{}/.deployr/lock", host.deploy_to), "deploy_to")?;
    let taken = quote(&format!("{}=yes", key::LOCK_TAKEN), "a state key")?;
    let error = quote(key::LOCK_ERROR, "a state key")?;
    let mut s = Script::new();
    s.line("if e=$(mkdir -p {} 2>&1); then", &[&dir]);
    s.line("  if [ -e {} ] || [ -L {} ]; then :", &[&lock, &lock]);
    s.line(
        "  elif e=$(ln -s {} {} 2>&1); then printf '%s\\n' {}",
        &[&quote(owner, "the lock owner")?, &lock, &taken],
    );
    // Another deployr made it between the test and `ln`: it is held, and the state says by whom.
    s.line("  elif [ -L {} ]; then :", &[&lock]);
    s.line("  else printf '%s=%s\\n' {} \"$e\"; fi", &[&error]);
    s.line("else printf '%s=%s\\n' {} \"$e\"; fi", &[&error]);
    s.append(state::read(host)?);
    Ok(s.finish())
}

/// Records how the command ended (`record`, a history line, where the command changed the
/// host) and releases the lock, only if it is still ours (`token` is in the owner line).
pub fn give_back(host: &Host, token: &str, record: Option<&str>) -> Result<String, QuoteError> {
    let mut s = Script::new();
    s.line(
        "cd {} 2>/dev/null || exit 0",
        &[&quote(&host.deploy_to, "deploy_to")?],
    );
    if let Some(record) = record {
        s.append(history::append_or_warn(record)?);
    }
    s.append(release(token)?);
    Ok(s.finish())
}

/// In `deploy_to`: removes the lock if `token` is in its owner line.
pub(super) fn release(token: &str) -> Result<Script, QuoteError> {
    let mut s = Script::new();
    s.line(
        "case \"$(readlink .deployr/lock 2>/dev/null)\" in *{}*) rm -f .deployr/lock || exit 1 ;; esac",
        &[&quote(&format!("token={token}"), "the lock token")?],
    );
    Ok(s)
}

/// `deployr unlock`: removes whatever is at the lock's path (a lock, or a malformed one), and
/// records that in the history.
pub fn force(host: &Host, record: &str) -> Result<String, QuoteError> {
    let mut s = Script::new();
    s.cd(&quote(&host.deploy_to, "deploy_to")?);
    s.line("rm -rf .deployr/lock || exit 1", &[]);
    s.append(history::append(record)?);
    Ok(s.finish())
}
