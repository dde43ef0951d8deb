//! `deployr check`'s probe: is `deploy_to` there and writable, and are the programs that
//! prepare runs there installed? Read-only.

use crate::inventory::Host;
use crate::remote::protocol::probe as key;
use crate::shell::{QuoteError, Script, quote};

/// One script per host that reports on `deploy_to` and the programs that prepare runs there
/// (git, or for `uploads` tar, gzip and sha256sum) as `key=value` lines for [`find`].
pub fn probe(host: &Host, uploads: bool) -> Result<String, QuoteError> {
    let deploy_to = quote(key::DEPLOY_TO, "a probe key")?;
    let tools = quote(key::TOOLS, "a probe key")?;
    let mut s = Script::new();
    s.line("d={}", &[&quote(&host.deploy_to, "deploy_to")?]);
    s.line("if [ -d \"$d\" ]; then", &[]);
    s.line(
        "  if [ -w \"$d\" ]; then printf '%s=%s\\n' {} writable; else printf '%s=%s\\n' {} 'NOT writable'; fi",
        &[&deploy_to, &deploy_to],
    );
    s.line("else", &[]);
    s.line(
        "  p=\"$d\"; while [ ! -d \"$p\" ]; do p=$(dirname \"$p\"); done",
        &[],
    );
    s.line(
        "  if [ -w \"$p\" ]; then printf '%s=%s\\n' {} 'absent, can be created'; else printf '%s=%s\\n' {} \"NOT creatable ($p is not writable)\"; fi",
        &[&deploy_to, &deploy_to],
    );
    s.line("fi", &[]);
    if uploads {
        s.line(
            "missing=; for t in tar gzip sha256sum; do command -v \"$t\" >/dev/null 2>&1 || missing=\"$missing $t\"; done",
            &[],
        );
        s.line(
            "if [ -z \"$missing\" ]; then printf '%s=%s\\n' {} 'tar, gzip, sha256sum'; else printf '%s=MISSING%s\\n' {} \"$missing\"; fi",
            &[&tools, &tools],
        );
    } else {
        s.line(
            "if command -v git >/dev/null 2>&1; then printf '%s=%s\\n' {} \"$(git --version)\"; else printf '%s=%s\\n' {} 'MISSING git'; fi",
            &[&tools, &tools],
        );
    }
    Ok(s.finish())
}

/// What the probe said about `deploy_to` and about the tools, in that order (`None` where it
/// said nothing).
pub fn find(lines: &[String]) -> [Option<String>; 2] {
    [key::DEPLOY_TO, key::TOOLS].map(|key| {
        lines.iter().find_map(|line| {
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_string)
        })
    })
}
