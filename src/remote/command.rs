//! The deployfile's commands: tasks, `[[check]]` entries, `[[prepare]]` and `[[activate]]`
//! steps, the health check. On a host, deployr's `/bin/sh` changes directory, exports `[env]`
//! and every variable as `DEPLOYR_*`, then hands the command to the user's login shell, as
//! Fabric's `run()` does: `exec "${SHELL:-/bin/sh}" -c 'eval "$deployr_command"'`, so a
//! command written for the user's shell (zsh, fish, ...) runs as it would in their terminal.
//! The command travels whole in the variable `deployr_command`, not in the login shell's
//! arguments: a process's environment is readable only by its owner, its arguments by every
//! user of the host, and a command may hold a secret. (`eval "$var"` means the same in sh,
//! bash, zsh, ksh and fish.) On this machine (local steps and the build), the command runs in
//! `sh` itself, as it always has.

use crate::deployfile::{EnvVar, Healthcheck};
use crate::inventory::Host;
use crate::shell::{QuoteError, Script, deployfile_command, fail, quote, sh, text};
use crate::template::Values;

/// Where a step's script starts.
pub enum WorkDir<'a> {
    /// Tasks: the host's live release, or `deploy_to` before the first deploy, or `/` on a host
    /// that has never been deployed to (a task like a database backup needs no code).
    Current(&'a Host),
    Path(&'a str),
}

/// `cd` and the exports that every command's script starts with.
fn prelude(dir: WorkDir, env: &[EnvVar], values: &Values) -> Result<Script, QuoteError> {
    let mut s = Script::new();
    match dir {
        WorkDir::Current(host) => s.line(
            "cd {} 2>/dev/null || cd {} 2>/dev/null || cd /",
            &[
                &quote(&host.current_path(), "current_path")?,
                &quote(&host.deploy_to, "deploy_to")?,
            ],
        ),
        WorkDir::Path(path) => s.cd(&quote(path, "the directory")?),
    };
    export_env(&mut s, env)?;
    let exports: Vec<(String, &str)> = values.exports().collect();
    s.export(exports.iter().map(|(name, value)| (name.as_str(), *value)))?;
    Ok(s)
}

/// Exports the deployfile's `[env]`.
pub(super) fn export_env(s: &mut Script, env: &[EnvVar]) -> Result<(), QuoteError> {
    s.export(
        env.iter()
            .map(|var| (var.name.as_str(), var.value.as_str())),
    )?;
    Ok(())
}

/// The variable that carries the command to the login shell. Lowercase, so that no
/// `DEPLOYR_*` export is it.
const COMMAND_VARIABLE: &str = "deployr_command";

/// Sets `deployr_begins` to what the login shell runs first: it prints
/// [`crate::remote::protocol::BEGINS`] on both streams, so that whatever the shell's start-up
/// files printed before that line is known to be no output of the step. With the shell's own
/// `echo` (no process) where it can redirect to stderr; csh and tcsh cannot (`>&2`), so there
/// `/bin/sh` says it.
const BEGINS: &str = "case ${SHELL:-/bin/sh} in \
*csh) deployr_begins='/bin/sh -c \"echo deployr-command-begins; echo deployr-command-begins >&2\"' ;; \
*) deployr_begins='echo deployr-command-begins; echo deployr-command-begins >&2' ;; \
esac";

/// The login shell running [`BEGINS`], then the command in [`COMMAND_VARIABLE`]. Its arguments
/// hold neither the command nor any value. Valid in sh, bash, zsh, ksh, fish, csh and tcsh.
const LOGIN_SHELL: &str =
    "\"${SHELL:-/bin/sh}\" -c \"$deployr_begins; eval \\\"\\$deployr_command\\\"\"";

/// Which shell runs a step's script on a host, and so what its output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpreter {
    /// deployr's own `/bin/sh`: everything the script prints is the step's.
    DeployrSh,
    /// A deployfile command in the login shell ([`LOGIN_SHELL`]): output before the line that
    /// says the command begins comes from the shell's start-up files.
    LoginShell,
}

/// [`prelude`], then `command` exported for [`LOGIN_SHELL`].
fn handed_over(
    dir: WorkDir,
    env: &[EnvVar],
    values: &Values,
    command: &str,
) -> Result<Script, QuoteError> {
    let mut s = prelude(dir, env, values)?;
    s.export([(COMMAND_VARIABLE, command)])?;
    s.line(BEGINS, &[]);
    Ok(s)
}

/// A deployfile command on a host, in `dir`, in the login shell.
pub fn on_host(
    dir: WorkDir,
    env: &[EnvVar],
    values: &Values,
    command: &str,
) -> Result<String, QuoteError> {
    let mut s = handed_over(dir, env, values, command)?;
    s.line("exec {}", &[&sh(LOGIN_SHELL, &[])]);
    Ok(s.finish())
}

/// A deployfile command on this machine, in `dir`, run by `sh` itself.
pub fn here(
    dir: WorkDir,
    env: &[EnvVar],
    values: &Values,
    command: &str,
) -> Result<Script, QuoteError> {
    let mut s = prelude(dir, env, values)?;
    s.push(deployfile_command(command));
    Ok(s)
}

/// The health check: one shell loop per host, so the attempts cost no extra round trips. Each
/// attempt runs the command in the login shell under the check's `timeout`.
pub fn healthcheck(
    dir: WorkDir,
    env: &[EnvVar],
    values: &Values,
    check: &Healthcheck,
) -> Result<String, QuoteError> {
    let command = check.command.render(values);
    let number = |n: String| quote(&n, "a number");
    let timeout = number(check.timeout.as_secs_f64().to_string())?;
    let count = number(check.attempts.to_string())?;
    let interval = number(check.interval.as_secs_f64().to_string())?;
    let mut s = handed_over(dir, env, values, &command)?;
    s.line("attempt=1", &[]);
    s.line("while :; do", &[]);
    s.line(
        "  timeout {} {} && exit 0",
        &[&timeout, &sh(LOGIN_SHELL, &[])],
    );
    s.line(
        "  [ \"$attempt\" -ge {} ] && {}",
        &[
            &count,
            &fail(&[&text("unhealthy after ")?, &count, &text(" attempts")?]),
        ],
    );
    s.line("  attempt=$((attempt + 1))", &[]);
    s.line("  sleep {}", &[&interval]);
    s.line("done", &[]);
    Ok(s.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_login_shell_says_when_the_command_begins_on_both_streams() {
        let begins = crate::remote::protocol::BEGINS;
        assert_eq!(super::BEGINS.matches(begins).count(), 4);
        assert_eq!(super::BEGINS.matches(&format!("{begins} >&2")).count(), 2);
    }
}
