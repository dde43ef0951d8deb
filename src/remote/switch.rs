//! Switching `current`: the armed switch of an activation or rollback, and going back.
//!
//! The new link is made first under a temporary name, `.deployr/switch/current`, then renamed
//! over `current`. That name cannot collide with anything of the app's: `.deployr/` is
//! deployr's own directory (no release, shared path or app file lives there), the deploy lock
//! keeps a second deployr from switching at the same time, and `.deployr/switch` is removed and
//! made afresh before each switch, so nothing stale is ever at that name. (`releases/current`,
//! the name before, is an ordinary entry that anyone may create there.)

use crate::inventory::Host;
use crate::release::release_path;
use crate::release_id::ReleaseId;
use crate::remote::protocol::{self, journal};
use crate::shell::{QuoteError, Script, Sh, fail, quote, sh, text};

/// The journal's contents for an activation of `release` on a host that served `previous`.
fn journal_body(release: &ReleaseId, previous: Option<&str>) -> String {
    format!(
        "{}={release}\n{}={}\n",
        journal::RELEASE,
        journal::PREVIOUS,
        previous.unwrap_or("")
    )
}

/// Makes the new link under its temporary name, replacing whatever a stopped switch left.
fn new_link(target: &Sh) -> Sh {
    sh(
        "rm -rf .deployr/switch && mkdir -p .deployr/switch && ln -s {} .deployr/switch/current || exit 1",
        &[target],
    )
}

/// Renames the new link over `current`. Where `mv -T` is missing, `mv` moves the link, named
/// `current`, into `deploy_to`, which renames it over `current` just the same (Capistrano's
/// recipe).
const RENAME: &str =
    "mv -T .deployr/switch/current current 2>/dev/null || mv .deployr/switch/current . || exit 1";

/// The atomic switch, armed: everything that can fail or take time (checks, the journal, the
/// new link under its temporary name) happens first; then the script prints `armed` and waits
/// for `go` on its standard input, so that all hosts switch within one write of each other.
/// The switch itself is a rename(2) over `current` (never a moment without it), checked with
/// `readlink`. If `go` never comes, the temporary link and the journal are removed and nothing
/// changed.
pub fn armed(
    host: &Host,
    release: &ReleaseId,
    previous: Option<&str>,
) -> Result<String, QuoteError> {
    let target = quote(&release_path(host, release), "the release path")?;
    let id = quote(release, "the release")?;
    let word = |w: &str| quote(w, "a protocol word");
    let mut s = Script::new();
    s.cd(&quote(&host.deploy_to, "deploy_to")?);
    s.line(
        "[ -d {} ] || {}",
        &[
            &quote(&format!("releases/{release}"), "the release")?,
            &fail(&[&text("release ")?, &id, &text(" is not on this host")?]),
        ],
    );
    s.line(
        "if [ -e current ] && [ ! -L current ]; then {}; fi",
        &[&fail(&[&text(
            "current is a real directory, not a symlink; move it away (e.g. mv current current.old) and activate again",
        )?])],
    );
    s.line(
        "mkdir -p .deployr && printf '%s' {} > .deployr/activating.tmp && mv .deployr/activating.tmp .deployr/activating || exit 1",
        &[&quote(&journal_body(release, previous), "the journal")?],
    );
    s.push(new_link(&target));
    s.line(
        "command -v perl >/dev/null 2>&1 && exec perl -e {} {} {} {} {} {}",
        &[
            &quote(SWITCH_PERL, "the switch")?,
            &target,
            &word(protocol::ARMED)?,
            &word(protocol::GO)?,
            &word(protocol::SWITCHED)?,
            &text(CALLED_OFF)?,
        ],
    );
    s.line("printf '%s\\n' {}", &[&word(protocol::ARMED)?]);
    s.line(
        "read -r go && [ \"$go\" = {} ] || { rm -rf .deployr/switch .deployr/activating; {}; }",
        &[&word(protocol::GO)?, &fail(&[&text(CALLED_OFF)?])],
    );
    s.line(RENAME, &[]);
    s.line("printf '%s\\n' {}", &[&word(protocol::SWITCHED)?]);
    s.line("read -r done", &[]);
    s.line(
        "[ \"$(readlink current)\" = {} ] || {}",
        &[
            &target,
            &fail(&[
                &text("current does not point to ")?,
                &id,
                &text(" after the switch")?,
            ]),
        ],
    );
    Ok(s.finish())
}

const CALLED_OFF: &str = "not switched: the switch was called off";

/// The switch where perl is installed (Debian and most distributions have it): the same steps
/// as the shell version, but `go` is followed by rename(2) in the already running process,
/// with no `mv` to fork and exec at the moment that every host should switch together. Both
/// then say `switched` and wait for `done` before checking and exiting, so that no host's
/// clean-up competes for the CPU with the hosts still switching. Its arguments: the target,
/// then the words `armed`, `go` and `switched`, and the message for a switch called off. It
/// has no backslash (a newline is `chr 10`), so it is quoted as one readable `'…'` word.
const SWITCH_PERL: &str = r#"$| = 1;
my ($target, $armed, $go, $switched, $called_off) = @ARGV;
my $nl = chr 10;
print "$armed$nl";
my $line = <STDIN>;
if (!defined $line || $line ne "$go$nl") {
  unlink ".deployr/switch/current", ".deployr/activating";
  print STDERR "$called_off$nl";
  exit 1;
}
rename(".deployr/switch/current", "current") or die "cannot switch current: $!$nl";
print "$switched$nl";
my $done = <STDIN>;
my $now = readlink("current");
exit 0 if defined $now && $now eq $target;
die "current does not point to $target after the switch$nl";"#;

/// Puts one host back on `release` (or removes `current`, undoing a first activation) at once,
/// not armed: going back is done host by host, so that a host that cannot go back keeps no
/// other host on the failed release. The journal goes once the host is back.
pub fn back(host: &Host, release: Option<&str>) -> Result<String, QuoteError> {
    let mut s = Script::new();
    s.cd(&quote(&host.deploy_to, "deploy_to")?);
    let Some(release) = release else {
        s.line("rm -f current || exit 1", &[]);
        s.line("rm -f .deployr/activating", &[]);
        return Ok(s.finish());
    };
    let target = quote(&release_path(host, release), "the release path")?;
    let id = quote(release, "the release")?;
    s.line(
        "[ -d {} ] || {}",
        &[
            &quote(&format!("releases/{release}"), "the release")?,
            &fail(&[
                &text("release ")?,
                &id,
                &text(" is not on this host any more")?,
            ]),
        ],
    );
    s.line("if [ \"$(readlink current)\" != {} ]; then", &[&target]);
    s.line("  {}", &[&new_link(&target)]);
    s.line("  {}", &[&sh(RENAME, &[])]);
    s.line("fi", &[]);
    s.line(
        "[ \"$(readlink current)\" = {} ] || {}",
        &[
            &target,
            &fail(&[
                &text("current does not point to ")?,
                &id,
                &text(" after switching back")?,
            ]),
        ],
    );
    s.line("rm -f .deployr/activating", &[]);
    Ok(s.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_perl_switch_compiles() {
        let output = std::process::Command::new("perl")
            .arg("-c")
            .arg("-e")
            .arg(SWITCH_PERL)
            .output()
            .expect("perl, which the switch uses where it is installed");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
