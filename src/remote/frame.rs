//! How deployr's own shell on a host is started, says it is ready, and runs one step after
//! another: each step wrapped so that it cannot read deployr's input, followed by a marker
//! line, fresh for that step, that says it ended and with which status.

use crate::lines::visible;
use crate::shell::{Sh, quote, sh};

/// What the login shell is asked to run: deployr's own shell, `/bin/sh`, reading steps from the
/// channel. Valid in bash, dash, zsh, ksh, fish, csh and tcsh, whatever the account's shell is.
pub const START: &str = "exec /bin/sh -s";

/// Where a login shell reads its start-up files, for the message when one gets in the way.
pub const START_UP_FILES: &str = "~/.bashrc, ~/.bash_profile, ~/.profile, ~/.zshenv, ~/.cshrc, ~/.tcshrc, ~/.config/fish/config.fish";

/// The words that end a step: unpredictable, and new for every step, so no output (and nothing
/// a step could have seen in an earlier one) can be taken for the end of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker(String);

/// What a line that carries the marker says.
#[derive(Debug, PartialEq, Eq)]
pub struct Ending<'a> {
    /// Output the step printed before the marker with no newline after it.
    pub before: &'a str,
    /// The step's exit status, on standard output; `None` on standard error and for `ready`.
    pub status: Option<u32>,
}

impl Marker {
    /// A marker for the `sequence`th use of a shell, with 64 random bits no host can predict.
    pub fn fresh(sequence: u64) -> Marker {
        let mut bytes = [0u8; 8];
        // SAFETY: the buffer is valid for its length; getrandom writes at most that much.
        let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        assert_eq!(filled, 8, "the kernel's random numbers are not available");
        Marker(format!(
            "DEPLOYR-{:016x}-{sequence}",
            u64::from_ne_bytes(bytes)
        ))
    }

    /// What deployr sends right after starting the shell: the shell prints the marker on both
    /// streams once it reads commands, and everything before those lines is start-up output.
    pub fn ready_request(&self) -> String {
        let marker = self.word();
        sh(
            "printf '%s\\n' {}; printf '%s\\n' {} >&2; :\n",
            &[&marker, &marker],
        )
        .as_str()
        .to_string()
    }

    /// `script` wrapped to run as one step: in a subshell, so it cannot end or change deployr's
    /// shell; reading `/dev/null` unless it takes `input` (an armed switch waiting for `go`);
    /// then the marker with its status on standard output and alone on standard error. The
    /// trailing `:` leaves nothing of the marker in `$_`. `None`: the script has a NUL byte.
    pub fn wrap(&self, script: &str, input: bool) -> Option<String> {
        let script = quote(script, "a step's script").ok()?;
        let marker = self.word();
        let stdin = if input {
            sh("", &[])
        } else {
            sh(" </dev/null", &[])
        };
        // One brace group: the shell reads all of it before running any, so a step that reads
        // its input finds nothing of deployr's there, only what is sent to it.
        Some(
            sh(
                "{ ( eval {}\n){}\nprintf '%s %s\\n' {} $?; printf '%s\\n' {} >&2; :\n}\n",
                &[&script, &stdin, &marker, &marker],
            )
            .as_str()
            .to_string(),
        )
    }

    /// The marker as a shell word (it is one already: letters, digits and dashes).
    fn word(&self) -> Sh {
        quote(&self.0, "the step marker").expect("a marker has no NUL byte")
    }

    /// The marker's ending in `line`, if the line ends with exactly this marker (and, with
    /// `status`, a space and a number after it).
    pub fn ends<'a>(&self, line: &'a str, status: bool) -> Option<Ending<'a>> {
        // Checked from the end, without a search: this runs for every line a step prints.
        if !status {
            let before = line.strip_suffix(self.0.as_str())?;
            return Some(Ending {
                before,
                status: None,
            });
        }
        let rest = line.trim_end_matches(|c: char| c.is_ascii_digit());
        let digits = &line[rest.len()..];
        if digits.is_empty() || digits.len() > 3 {
            return None;
        }
        let before = rest.strip_suffix(' ')?.strip_suffix(self.0.as_str())?;
        Some(Ending {
            before,
            status: digits.parse().ok(),
        })
    }
}

/// Why a host's shell did not become ready, for the operator: which files to look at, and the
/// last of what they printed.
pub fn not_ready(what: &str, printed: &[String]) -> String {
    let mut message = format!(
        "deployr's shell (/bin/sh) did not start: {what}. The login shell's start-up files \
         ({START_UP_FILES}) must not exit, read input or wait when run without a terminal"
    );
    if let Some(last) = printed.last() {
        message.push_str(&format!("; they printed: {}", visible(last.as_bytes())));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_marker_is_new() {
        assert_ne!(Marker::fresh(1), Marker::fresh(1));
    }

    #[test]
    fn only_the_exact_marker_ends_a_step() {
        let marker = Marker::fresh(7);
        let m = &marker.0;
        assert_eq!(
            marker.ends(&format!("{m} 0"), true),
            Some(Ending {
                before: "",
                status: Some(0)
            })
        );
        assert_eq!(
            marker.ends(&format!("no newline{m} 3"), true),
            Some(Ending {
                before: "no newline",
                status: Some(3)
            })
        );
        assert_eq!(marker.ends(&format!("{m} 0 and more"), true), None);
        assert_eq!(marker.ends(m, true), None);
        assert_eq!(marker.ends(&format!("{m}x"), false), None);
        let other = Marker::fresh(7);
        assert_eq!(other.ends(&format!("{m} 0"), true), None);
        assert_eq!(
            marker.ends(m, false),
            Some(Ending {
                before: "",
                status: None
            })
        );
    }

    #[test]
    fn the_wrapped_step_is_valid_sh_whatever_it_holds() {
        let marker = Marker::fresh(1);
        let wrapped = marker
            .wrap("echo 'it''s' \"$HOME\" `x`\nexit 3", false)
            .unwrap();
        let checked = std::process::Command::new("sh")
            .args(["-n", "-c", &wrapped])
            .status()
            .unwrap();
        assert!(checked.success(), "{wrapped}");
        assert!(marker.wrap("a\0b", false).is_none());
    }
}
