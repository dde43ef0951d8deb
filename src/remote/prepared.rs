//! The prepared marker: `.deployr/prepared` (the release the last prepare finished) and
//! `.deployr/ready/<id>` (every release whose prepare succeeded on this host).

use crate::inventory::Host;
use crate::release::Prepared;
use crate::remote::protocol::prepared as key;
use crate::shell::{QuoteError, Script, quote};

/// Marks the release as prepared on this host; written last, only when every step succeeded.
/// `.deployr/ready/<id>` keeps that outcome per release, for `activate --release` and
/// `rollback --to`, after the marker has moved on to a newer release.
pub fn mark(host: &Host, prepared: &Prepared) -> Result<String, QuoteError> {
    let body = format!(
        "{}={}\n{}={}\n{}={}\n{}={}\n",
        key::RELEASE,
        prepared.release,
        key::COMMIT,
        prepared.commit,
        key::REF,
        prepared.reference,
        key::TIME,
        prepared.time
    );
    let mut s = Script::new();
    s.line(
        "cd {} && mkdir -p .deployr/ready && : > {} && printf '%s' {} > .deployr/prepared.tmp && mv .deployr/prepared.tmp .deployr/prepared",
        &[
            &quote(&host.deploy_to, "deploy_to")?,
            &quote(
                &format!(".deployr/ready/{}", prepared.release),
                "the release",
            )?,
            &quote(&body, "the prepared marker")?,
        ],
    );
    Ok(s.finish())
}

/// Run before a prepare changes anything on the host: the old marker goes, so that a prepare
/// that fails here leaves no marker for `activate` to take an older release from.
pub(super) fn clear(host: &Host) -> Result<Script, QuoteError> {
    let mut s = Script::new();
    s.line(
        "rm -f {} || exit 1",
        &[&quote(
            &format!("{}/.deployr/prepared", host.deploy_to),
            "deploy_to",
        )?],
    );
    Ok(s)
}
