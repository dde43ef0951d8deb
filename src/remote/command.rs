//! The deployfile's commands: tasks, `[[check]]` entries, `[[prepare]]` and `[[activate]]`
//! steps, the health check. On a host, deployr's `/bin/sh` changes directory, exports `[env]`
//! and every variable as `DEPLOYR_*`, then hands the command, as one quoted word, to the
//! user's login shell: `exec "${SHELL:-/bin/sh}" -c COMMAND`, as Fabric's `run()` does, so a
//! command written for the user's shell (zsh, fish, ...) runs as it would in their terminal.
//! On this machine (local steps and the build), the command runs in `sh` itself, as it always
//! has.

use crate::deployfile::{EnvVar, Healthcheck};
use crate::inventory::Host;
use crate::shell::{QuoteError, Script, Sh, deployfile_command, fail, quote, sh, text};
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
    s.export(
        env.iter()
            .map(|var| (var.name.as_str(), var.value.as_str())),
    )?;
    let exports: Vec<(String, &str)> = values.exports().collect();
    s.export(exports.iter().map(|(name, value)| (name.as_str(), *value)))?;
    Ok(s)
}

/// The user's login shell running `command`: one quoted word, so nothing of it is parsed by
/// deployr's `/bin/sh`.
fn login_shell(command: &str) -> Result<Sh, QuoteError> {
    Ok(sh(
        "\"${SHELL:-/bin/sh}\" -c {}",
        &[&quote(command, "the command")?],
    ))
}

/// A deployfile command on a host, in `dir`, in the login shell.
pub fn on_host(
    dir: WorkDir,
    env: &[EnvVar],
    values: &Values,
    command: &str,
) -> Result<String, QuoteError> {
    let mut s = prelude(dir, env, values)?;
    s.line("exec {}", &[&login_shell(command)?]);
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
    let mut s = prelude(dir, env, values)?;
    s.line("attempt=1", &[]);
    s.line("while :; do", &[]);
    s.line(
        "  timeout {} {} && exit 0",
        &[&timeout, &login_shell(&command)?],
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
