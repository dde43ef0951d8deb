//! Appending to `.deployr/history`, in scripts that are already in `deploy_to`.

use crate::shell::{QuoteError, Script, quote};

/// Appends one record; the script fails if it cannot.
pub(super) fn append(record: &str) -> Result<Script, QuoteError> {
    let mut s = Script::new();
    s.line("[ -d .deployr ] || mkdir .deployr || exit 1", &[]);
    s.line(
        "printf '%s\\n' {} >> .deployr/history || exit 1",
        &[&quote(record, "the history record")?],
    );
    Ok(s)
}

/// Appends one record, or says on stderr that it could not and goes on: a history that cannot
/// be written (a full disk) must not keep the lock from going.
pub(super) fn append_or_warn(record: &str) -> Result<Script, QuoteError> {
    let mut s = Script::new();
    s.line(
        "printf '%s\\n' {} >> .deployr/history || printf '%s\\n' 'could not record this command in .deployr/history' >&2",
        &[&quote(record, "the history record")?],
    );
    Ok(s)
}
