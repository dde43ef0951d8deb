//! After a good activation or rollback: history, markers, pruning and the lock, in one round
//! trip.

use crate::inventory::Host;
use crate::release_id::ReleaseId;
use crate::remote::protocol::prepared as key;
use crate::remote::{history, lock};
use crate::shell::{QuoteError, Script, join, quote};

/// Records the activation or rollback (`record`, a history line), clears the prepared marker
/// if it was this release, ends the journal, removes the releases that pruning selected
/// (`prune`) and, with `unlock` (our lock token), releases the deploy lock.
pub fn script(
    host: &Host,
    release: &ReleaseId,
    record: &str,
    prune: &[String],
    unlock: Option<&str>,
) -> Result<String, QuoteError> {
    let mut s = Script::new();
    s.cd(&quote(&host.deploy_to, "deploy_to")?);
    s.append(history::append(record)?);
    // Built-ins only, but for the `rm`s that have something to remove.
    s.line(
        "p=; [ -f .deployr/prepared ] && while read -r l; do [ \"$l\" = {} ] && p=1; done < .deployr/prepared",
        &[&quote(&format!("{}={release}", key::RELEASE), "the release")?],
    );
    s.line("[ -z \"$p\" ] || rm -f .deployr/prepared", &[]);
    s.line("rm -f .deployr/activating || exit 1", &[]);
    if !prune.is_empty() {
        let mut dirs = Vec::new();
        for id in prune {
            dirs.push(quote(&format!("releases/{id}"), "a release")?);
            dirs.push(quote(&format!(".deployr/ready/{id}"), "a release")?);
        }
        s.line("rm -rf {}", &[&join(&dirs)]);
    }
    if let Some(token) = unlock {
        s.append(lock::release(token)?);
    }
    Ok(s.finish())
}
