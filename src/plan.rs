//! Which step runs where, with which exact script: built completely before anything runs, so
//! `--dry-run` prints the very plan that a real run executes.

use std::time::Duration;

use crate::deployfile::{Deployfile, EnvVar, Step};
use crate::inventory::Host;
use crate::template::Values;

#[derive(Debug, Clone)]
pub struct Plan {
    /// The selected hosts, in deployfile order; runs refer to them by index.
    pub hosts: Vec<Host>,
    pub steps: Vec<PlannedStep>,
}

#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub name: String,
    pub timeout: Option<Duration>,
    pub concurrency: Option<usize>,
    /// Empty when the step's roles match no selected host (a `once` step outside a canary).
    pub runs: Vec<PlannedRun>,
}

#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub host: usize,
    pub script: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot quote {what} for the shell: it contains a NUL byte")]
pub struct QuoteError {
    what: String,
}

/// Quotes for POSIX `sh`, the shell every remote command runs in.
pub fn quote(value: &str, what: &str) -> Result<String, QuoteError> {
    shlex::try_quote(value)
        .map(|quoted| quoted.into_owned())
        .map_err(|_| QuoteError {
            what: what.to_string(),
        })
}

/// Where a step's script starts.
pub enum WorkDir<'a> {
    /// Tasks: the live release, or `deploy_to` before the first deploy, or `/` on a host that
    /// has never been deployed to (a task like a database backup needs no code).
    Current,
    Path(&'a str),
}

/// The script for one command on one host: change directory, export `[env]` and every variable
/// as `DEPLOYR_*`, then the command itself.
pub fn script(
    dir: WorkDir,
    host: &Host,
    env: &[EnvVar],
    values: &Values,
    command: &str,
) -> Result<String, QuoteError> {
    let cd = match dir {
        WorkDir::Current => format!(
            "cd {} 2>/dev/null || cd {} 2>/dev/null || cd /",
            quote(&host.current_path(), "current_path")?,
            quote(&host.deploy_to, "deploy_to")?
        ),
        WorkDir::Path(path) => format!("cd {} || exit 1", quote(path, "the directory")?),
    };
    let mut exports = Vec::new();
    for var in env {
        exports.push(format!("{}={}", var.name, quote(&var.value, &var.name)?));
    }
    for (name, value) in values.exports() {
        exports.push(format!("{name}={}", quote(value, &name)?));
    }
    Ok(format!("{cd}\nexport {}\n{command}", exports.join(" ")))
}

/// The hosts a step runs on: those with its roles, or only the first of them for `once`.
pub fn hosts_for(step_roles: Option<&[String]>, once: bool, hosts: &[Host]) -> Vec<usize> {
    let matching = hosts
        .iter()
        .enumerate()
        .filter(|(_, host)| step_roles.is_none_or(|roles| host.has_any_role(roles)))
        .map(|(index, _)| index);
    if once {
        matching.take(1).collect()
    } else {
        matching.collect()
    }
}

/// Steps that run in `current_path` (tasks and checks), on the hosts their roles select.
pub fn in_current(
    deployfile: &Deployfile,
    hosts: Vec<Host>,
    steps: &[Step],
    timestamp: &str,
) -> Result<Plan, QuoteError> {
    let mut planned = Vec::new();
    for step in steps {
        let mut runs = Vec::new();
        for index in hosts_for(step.roles.as_deref(), step.once, &hosts) {
            let host = &hosts[index];
            let values = host.values(&deployfile.app.name, timestamp);
            let command = step.command.render(&values);
            runs.push(PlannedRun {
                host: index,
                script: script(WorkDir::Current, host, &deployfile.env, &values, &command)?,
            });
        }
        planned.push(PlannedStep {
            name: step.name.clone(),
            timeout: step.timeout,
            concurrency: step.concurrency,
            runs,
        });
    }
    Ok(Plan {
        hosts,
        steps: planned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Address, HostKeyPolicy, SshSettings};

    fn host(name: &str, roles: &[&str]) -> Host {
        Host {
            name: name.into(),
            address: Address::Local,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            deploy_to: "/srv/it's".into(),
            vars: vec![],
            ssh: SshSettings {
                user: "u".into(),
                port: 22,
                identity_file: None,
                host_keys: HostKeyPolicy::Strict,
                known_hosts_file: "/dev/null".into(),
                connect_timeout: Duration::from_secs(1),
                keepalive_interval: Duration::from_secs(1),
                keepalive_max: 1,
            },
        }
    }

    #[test]
    fn once_takes_the_first_listed_host_of_the_roles() {
        let hosts = vec![host("a", &["web"]), host("b", &["db"]), host("c", &["db"])];
        let db = vec!["db".to_string()];
        assert_eq!(hosts_for(Some(&db), true, &hosts), [1]);
        assert_eq!(hosts_for(Some(&db), false, &hosts), [1, 2]);
        assert_eq!(hosts_for(None, false, &hosts), [0, 1, 2]);
    }

    #[test]
    fn scripts_quote_every_value() {
        let host = host("a", &[]);
        let mut values = Values::default();
        values.set("ref", "x; touch /tmp/pwned");
        let env = vec![EnvVar {
            name: "TOKEN".into(),
            value: "$(id)".into(),
            secret: true,
        }];
        let script = script(WorkDir::Current, &host, &env, &values, "true").unwrap();
        assert!(script.contains("cd '/srv/it'\"'\"'s/current'"), "{script}");
        assert!(script.contains("TOKEN='$(id)'"), "{script}");
        assert!(
            script.contains("DEPLOYR_REF='x; touch /tmp/pwned'"),
            "{script}"
        );
    }
}
