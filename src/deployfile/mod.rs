//! The deployfile: parsed once, validated completely, and turned into resolved types before
//! anything connects anywhere. Every error names the file, line and column.

mod deploy_to;
mod diagnostic;
mod endpoint;
mod raw;
mod secrets;
mod stage;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diagnostic::{DeployfileError, Diagnostic};
use raw::{RawDeployfile, RawEnvValue, RawSsh, RawStep, S};

use crate::inventory::{Address, Host, HostKeyPolicy, Jump, SshSettings, nearest};
use crate::mask::MIN_SECRET_LEN;
use crate::refname;
use crate::ssh_config::Resolver;
use crate::template::{BASE_VARIABLES, RELEASE_VARIABLES, Template};
use endpoint::Given;

/// How fast connections are started, and how often one that failed on the way is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connecting {
    /// New connections started per second, after the first [`Connecting::BURST`].
    pub rate: usize,
    /// Tries per host for a connection refused or dropped before authentication.
    pub attempts: usize,
}

impl Connecting {
    /// Well under what one NAT gateway or a fleet of default sshds (MaxStartups 10:30:100)
    /// takes without dropping connections, and 1,000 hosts still start within 5 seconds.
    pub const DEFAULT_RATE: usize = 200;
    pub const DEFAULT_ATTEMPTS: usize = 3;
    /// Connections started at once before the rate applies: a small fleet waits for no pacing.
    pub const BURST: usize = 50;
}

#[derive(Debug, Clone)]
pub struct Deployfile {
    pub path: PathBuf,
    pub app: App,
    pub source: Option<Source>,
    pub env: Vec<EnvVar>,
    pub hosts: Vec<Host>,
    pub checks: Vec<Step>,
    pub prepare: Vec<Step>,
    pub activate: Vec<ActivateStep>,
    pub healthcheck: Option<Healthcheck>,
    pub tasks: Vec<Task>,
    /// Local steps run once after a command that changes hosts succeeded, or failed.
    pub on_success: Vec<Step>,
    pub on_failure: Vec<Step>,
    /// Hosts worked on at once.
    pub concurrency: usize,
    /// How connections are started: `[ssh] connect_rate` and `connect_attempts`.
    pub connecting: Connecting,
    /// The `[vars]` that use no host's value: the only ones a local step can use.
    pub local_vars: Vec<(String, Template)>,
}

#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub keep_releases: usize,
    pub shared_dirs: Vec<String>,
    pub shared_files: Vec<String>,
    /// Files whose change `deployr diff` lists under their own heading (migrations, say).
    pub watch: Vec<glob::Pattern>,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub repo: String,
    pub reference: String,
    /// Deploy only this directory of the repository (a monorepo, or an example app).
    pub repo_tree: Option<String>,
    pub strategy: Strategy,
}

/// How a release's files reach the hosts.
#[derive(Debug, Clone)]
pub enum Strategy {
    /// Every host fetches the repository into `repo/` and exports the commit: hosts need git
    /// and access to the repository.
    Git,
    /// Built once on this machine from a clean export of the commit, packed, and uploaded to
    /// every host over SFTP: hosts need neither git, nor the repository, nor build tools.
    Upload {
        build: Option<Template>,
        /// The directory of the built export to ship, relative to its root.
        artifact: String,
    },
}

#[derive(Debug, Clone)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    /// Masked as `***` in every output. True for values taken from the local environment unless
    /// the deployfile says `secret = false`.
    pub secret: bool,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub command: Template,
    /// `None`: every host.
    pub roles: Option<Vec<String>>,
    pub once: bool,
    pub timeout: Option<Duration>,
    /// Hosts this step runs on at once, below the global limit (a shared git or package server).
    pub concurrency: Option<usize>,
    /// Runs once, on the machine running deployr, in order with the host steps: building
    /// assets, tagging the release, notifying a chat.
    pub local: bool,
}

#[derive(Debug, Clone)]
pub enum ActivateStep {
    Run(Step),
    Switch,
}

#[derive(Debug, Clone)]
pub struct Healthcheck {
    pub command: Template,
    pub roles: Option<Vec<String>>,
    pub attempts: u32,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub description: Option<String>,
    pub step: Step,
    pub lock: bool,
}

impl Deployfile {
    /// `stage` picks one of the deployfile's `[stages.NAME]`; it is required when there are
    /// stages, and refused when there are none.
    pub fn load(path: &Path, stage: Option<&str>) -> Result<Deployfile, DeployfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| DeployfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Deployfile::parse(path, &text, stage)
    }

    pub fn parse(
        path: &Path,
        text: &str,
        stage: Option<&str>,
    ) -> Result<Deployfile, DeployfileError> {
        Deployfile::parse_unmasked(path, text, stage)
            .map_err(|error| error.masked(&secrets::masker(text)))
    }

    fn parse_unmasked(
        path: &Path,
        text: &str,
        stage: Option<&str>,
    ) -> Result<Deployfile, DeployfileError> {
        let toml_error = |error| DeployfileError::from_toml(path, text, &error);
        let document = toml::de::DeTable::parse(text).map_err(toml_error)?;
        let document = stage::select(document, stage, path, text)?;
        let deserializer = toml::de::Deserializer::from(document);
        let raw: RawDeployfile =
            serde::Deserialize::deserialize(deserializer).map_err(toml_error)?;
        let mut validator = Validator {
            path,
            text,
            diagnostics: Vec::new(),
            ssh_config: None,
            local_vars: Vec::new(),
        };
        let deployfile = validator.deployfile(raw);
        // A shared value (the global deploy_to, say) can be wrong for several hosts; say it once.
        let mut seen = std::collections::HashSet::new();
        validator.diagnostics.retain(|d| seen.insert(d.to_string()));
        if validator.diagnostics.is_empty() {
            Ok(deployfile)
        } else {
            Err(DeployfileError::Invalid(validator.diagnostics))
        }
    }

    /// Where local steps and the build start: the deployfile's own directory, as with
    /// Capistrano's `run_locally` in the project.
    pub fn directory(&self) -> PathBuf {
        directory_of(&self.path)
    }

    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|task| task.step.name == name)
    }

    pub fn secrets(&self) -> Vec<String> {
        self.env
            .iter()
            .filter(|var| var.secret && !var.value.is_empty())
            .map(|var| var.value.clone())
            .collect()
    }
}

/// Which variables a command may use, by where it runs.
#[derive(Clone, Copy)]
enum Scope {
    /// Tasks and checks: no release is being worked on.
    Base,
    /// Prepare and activate steps and the health check.
    Release,
    /// A local step or the build: no host's values, and the release's only if `release`.
    Local { release: bool },
    /// `[[on_success]]` and `[[on_failure]]`: a local step that also knows how the command
    /// ended.
    Hook,
}

/// What a local step knows: nothing that belongs to one host.
pub const LOCAL_VARIABLES: &[&str] = &["app", "timestamp"];
/// What a local step knows about the release it works on.
pub const LOCAL_RELEASE_VARIABLES: &[&str] = &["release", "commit", "ref", "previous_release"];
/// What a hook knows about the command that ended.
pub const HOOK_VARIABLES: &[&str] = &["command", "result", "error", "exit_code"];

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
    ssh_config: Option<Resolver>,
    /// Names of the `[vars]` that local steps may use.
    local_vars: Vec<String>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>, help: Option<String>) {
        self.diagnostics.push(Diagnostic::new(
            self.path,
            self.text,
            span,
            message.into(),
            help,
        ));
    }

    fn deployfile(&mut self, raw: RawDeployfile) -> Deployfile {
        let app_span = raw.app.span();
        let raw_app = raw.app.into_inner();
        let app = App {
            name: self.nonempty(&raw_app.name, "app.name"),
            keep_releases: raw_app
                .keep_releases
                .map(|n| self.positive(&n, "keep_releases"))
                .unwrap_or(5),
            shared_dirs: self.relative_paths(&raw_app.shared_dirs, "shared_dirs"),
            shared_files: self.relative_paths(&raw_app.shared_files, "shared_files"),
            watch: raw_app
                .watch
                .iter()
                .filter_map(|pattern| match glob::Pattern::new(pattern.get_ref()) {
                    Ok(pattern) => Some(pattern),
                    Err(error) => {
                        self.error(
                            pattern.span(),
                            format!("`{}` is not a file pattern: {error}", pattern.get_ref()),
                            Some(
                                "write patterns like \"*/migrations/*\" or \"requirements.txt\""
                                    .into(),
                            ),
                        );
                        None
                    }
                })
                .collect(),
        };
        let concurrency = raw
            .ssh
            .concurrency
            .as_ref()
            .map(|n| self.positive(n, "concurrency"))
            .unwrap_or(50);
        let connecting = Connecting {
            rate: raw
                .ssh
                .connect_rate
                .as_ref()
                .map_or(Connecting::DEFAULT_RATE, |n| {
                    self.positive(n, "connect_rate")
                }),
            attempts: raw
                .ssh
                .connect_attempts
                .as_ref()
                .map_or(Connecting::DEFAULT_ATTEMPTS, |n| {
                    self.positive(n, "connect_attempts")
                }),
        };
        let env = self.env(&raw.env.0);
        let vars = self.vars(&raw.vars.0);
        let local_vars: Vec<(String, Template)> = vars
            .iter()
            .filter(|(_, template)| {
                template
                    .variables()
                    .all(|(name, _)| LOCAL_VARIABLES.contains(&name))
            })
            .cloned()
            .collect();
        self.local_vars = local_vars.iter().map(|(name, _)| name.clone()).collect();
        let source = raw.source.map(|source| {
            let source = source.into_inner();
            let reference = match &source.reference {
                Some(reference) => {
                    if let Err(problem) = refname::validate(reference.get_ref()) {
                        self.error(reference.span(), problem.to_string(), None);
                    }
                    reference.get_ref().clone()
                }
                None => "main".to_string(),
            };
            let repo_tree = source.repo_tree.as_ref().map(|tree| {
                self.relative_paths(std::slice::from_ref(tree), "repo_tree")
                    .remove(0)
            });
            Source {
                repo: self.repo(&source.repo),
                reference,
                repo_tree,
                strategy: self.strategy(&source),
            }
        });
        let hosts = self.hosts(raw.hosts.0, &raw.ssh, &raw_app.deploy_to, &vars, app_span);

        let checks = self.steps(raw.check, "check", &hosts, Scope::Base);
        let prepare = self.steps(raw.prepare, "prepare", &hosts, Scope::Release);
        let activate = self.activate(raw.activate, &hosts);
        let healthcheck = raw.healthcheck.map(|hc| {
            let hc = hc.into_inner();
            Healthcheck {
                command: self.template(&hc.run, Scope::Release, &hosts),
                roles: self.roles(hc.roles.as_ref(), &hosts),
                attempts: hc
                    .attempts
                    .map(|n| self.positive(&n, "attempts") as u32)
                    .unwrap_or(30),
                interval: self
                    .duration(hc.interval.as_ref())
                    .unwrap_or(Duration::from_secs(1)),
                timeout: self
                    .duration(hc.timeout.as_ref())
                    .unwrap_or(Duration::from_secs(20)),
            }
        });
        let tasks = raw
            .tasks
            .0
            .into_iter()
            .map(|(name, task)| {
                let span = task.span();
                let task = task.into_inner();
                let step = RawStep {
                    name: Some(name),
                    run: Some(task.run),
                    switch: None,
                    roles: task.roles,
                    once: task.once,
                    timeout: task.timeout,
                    concurrency: task.concurrency,
                    local: task.local,
                };
                Task {
                    description: task.description,
                    step: self.step(S::new(span, step), 0, "tasks", &hosts, Scope::Base),
                    lock: task.lock,
                }
            })
            .collect();
        let on_success = self.hooks(raw.on_success, "on_success", &hosts);
        let on_failure = self.hooks(raw.on_failure, "on_failure", &hosts);
        Deployfile {
            on_success,
            on_failure,
            path: self.path.to_path_buf(),
            app,
            source,
            env,
            hosts,
            checks,
            prepare,
            activate,
            healthcheck,
            tasks,
            concurrency,
            connecting,
            local_vars,
        }
    }

    fn strategy(&mut self, source: &raw::RawSource) -> Strategy {
        let upload = match &source.strategy {
            None => false,
            Some(strategy) => match strategy.get_ref().as_str() {
                "git" => false,
                "upload" => true,
                other => {
                    self.error(
                        strategy.span(),
                        format!("strategy is \"git\" or \"upload\", not \"{other}\""),
                        nearest(other, ["git", "upload"]).map(|n| format!("did you mean \"{n}\"?")),
                    );
                    false
                }
            },
        };
        if !upload {
            for key in [&source.build, &source.artifact].into_iter().flatten() {
                self.error(
                    key.span(),
                    "`build` and `artifact` belong to strategy = \"upload\"",
                    Some(
                        "add strategy = \"upload\" to [source] to build here and upload the result"
                            .into(),
                    ),
                );
            }
            return Strategy::Git;
        }
        let build = source
            .build
            .as_ref()
            .map(|build| self.template(build, Scope::Local { release: true }, &[]));
        let artifact = match &source.artifact {
            Some(artifact) => self
                .relative_paths(std::slice::from_ref(artifact), "artifact")
                .remove(0),
            None => ".".to_string(),
        };
        Strategy::Upload { build, artifact }
    }

    fn nonempty(&mut self, value: &S<String>, what: &str) -> String {
        if value.get_ref().trim().is_empty() {
            self.error(value.span(), format!("{what} must not be empty"), None);
        }
        value.get_ref().clone()
    }

    /// A URL, `host:path`, or a path; a relative path is taken from the deployfile's directory.
    fn repo(&mut self, value: &S<String>) -> String {
        let repo = self.nonempty(value, "source.repo");
        if repo.contains(':') || repo.starts_with('/') || repo.is_empty() {
            return repo;
        }
        let base = self.base_dir();
        base.join(&repo).to_string_lossy().into_owned()
    }

    fn base_dir(&self) -> PathBuf {
        directory_of(self.path)
    }

    fn positive(&mut self, value: &S<i64>, what: &str) -> usize {
        match usize::try_from(*value.get_ref()) {
            Ok(n) if n > 0 => n,
            _ => {
                self.error(
                    value.span(),
                    format!("{what} must be a whole number of at least 1"),
                    None,
                );
                1
            }
        }
    }

    fn duration(&mut self, value: Option<&S<String>>) -> Option<Duration> {
        let value = value?;
        match humantime::parse_duration(value.get_ref()) {
            Ok(duration) if !duration.is_zero() => Some(duration),
            Ok(_) => {
                self.error(value.span(), "a duration must be longer than zero", None);
                None
            }
            Err(error) => {
                self.error(
                    value.span(),
                    format!("`{}` is not a duration: {error}", value.get_ref()),
                    Some("write durations like \"500ms\", \"10s\", \"5m\" or \"1h 30m\"".into()),
                );
                None
            }
        }
    }

    /// An absolute path, checked once for every script on the host (see [`deploy_to`]); for
    /// a local host, a relative path is taken from the deployfile's directory, so an example
    /// can deploy into the checkout it comes with.
    fn deploy_to(&mut self, value: &S<String>, local: bool) -> String {
        let text = value.get_ref();
        let path = match deploy_to::check(text) {
            Ok(path) => path,
            Err(problem) => {
                self.error(value.span(), problem.message, problem.help);
                return text.clone();
            }
        };
        if path.starts_with('/') {
            return path.to_string();
        }
        if local && !path.is_empty() {
            // `-f ../app/deployfile.toml` gives no `..` to the host's path: its directory is
            // taken as the file system names it.
            let mut base = self.base_dir();
            if base
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                base = std::fs::canonicalize(&base).unwrap_or(base);
            }
            return base.join(path).to_string_lossy().into_owned();
        }
        self.error(
            value.span(),
            format!("deploy_to must be an absolute path, not `{text}`"),
            Some(
                "only hosts with address = \"local\" may use a path relative to the deployfile"
                    .into(),
            ),
        );
        path.to_string()
    }

    fn relative_paths(&mut self, values: &[S<String>], what: &str) -> Vec<String> {
        values
            .iter()
            .map(|value| {
                let path = value.get_ref();
                if path.is_empty()
                    || path.starts_with('/')
                    || path.split('/').any(|part| part == "..")
                {
                    self.error(
                        value.span(),
                        format!("{what} entries are paths inside the release, such as \"media\"; `{path}` is not"),
                        None,
                    );
                }
                path.trim_end_matches('/').to_string()
            })
            .collect()
    }

    fn identifier(&mut self, name: &S<String>, what: &str) {
        let text = name.get_ref();
        let mut chars = text.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            self.error(
                name.span(),
                format!("{what} `{text}` must be letters, digits and `_`, starting with a letter"),
                None,
            );
        }
    }

    fn env(&mut self, entries: &[(S<String>, S<RawEnvValue>)]) -> Vec<EnvVar> {
        entries
            .iter()
            .map(|(name, value)| {
                self.identifier(name, "environment variable");
                let (value, secret) = match value.get_ref() {
                    RawEnvValue::Plain(text) => (text.clone(), false),
                    RawEnvValue::Table(table) => match (&table.value, &table.from_env) {
                        (Some(text), None) => {
                            let secret = table.secret.unwrap_or(false);
                            self.secret_length(name, value, text, secret, "drop `secret = true`");
                            (text.clone(), secret)
                        }
                        (None, Some(variable)) => match std::env::var(variable) {
                            Ok(text) => {
                                let secret = table.secret.unwrap_or(true);
                                self.secret_length(name, value, &text, secret, "add `secret = false`");
                                (text, secret)
                            }
                            Err(_) => {
                                self.error(
                                    value.span(),
                                    format!(
                                        "env.{} takes its value from the local environment variable `{variable}`, which is not set",
                                        name.get_ref()
                                    ),
                                    Some(format!("export {variable}=... before running deployr")),
                                );
                                (String::new(), table.secret.unwrap_or(true))
                            }
                        },
                        _ => {
                            self.error(
                                value.span(),
                                format!("env.{} needs exactly one of `value` and `from_env`", name.get_ref()),
                                None,
                            );
                            (String::new(), table.secret.unwrap_or(false))
                        }
                    },
                };
                EnvVar {
                    name: name.get_ref().clone(),
                    value,
                    secret,
                }
            })
            .collect()
    }

    /// Refuses a secret too short to mask (see [`MIN_SECRET_LEN`]). The line quoted with the
    /// error shows the value masked as a string (`secrets::masker`).
    fn secret_length(
        &mut self,
        name: &S<String>,
        value: &S<RawEnvValue>,
        text: &str,
        secret: bool,
        not_secret: &str,
    ) {
        if secret && text.trim().chars().count() < MIN_SECRET_LEN {
            self.error(
                value.span(),
                format!(
                    "env.{} is a secret shorter than {MIN_SECRET_LEN} characters, too short to be masked in output",
                    name.get_ref()
                ),
                Some(format!(
                    "use a longer secret, or {not_secret} if the value is not secret"
                )),
            );
        }
    }

    fn vars(&mut self, entries: &[(S<String>, S<String>)]) -> Vec<(String, Template)> {
        entries
            .iter()
            .map(|(name, value)| {
                self.identifier(name, "variable");
                let builtin = BASE_VARIABLES
                    .iter()
                    .chain(RELEASE_VARIABLES)
                    .any(|b| b == name.get_ref());
                if builtin {
                    self.error(
                        name.span(),
                        format!(
                            "`{}` is a built-in variable and cannot be set in [vars]",
                            name.get_ref()
                        ),
                        None,
                    );
                }
                let template = self.parse_template(value);
                for (variable, offset) in template.variables() {
                    if !BASE_VARIABLES.contains(&variable) {
                        let help = nearest(variable, BASE_VARIABLES.iter().copied())
                            .map(|n| format!("did you mean `{{{{{n}}}}}`?"))
                            .or_else(|| {
                                Some(format!(
                                    "values in [vars] may use only {}",
                                    BASE_VARIABLES.join(", ")
                                ))
                            });
                        self.error(
                            self.inner_span(value, offset, variable.len() + 4),
                            format!("unknown variable `{{{{{variable}}}}}` in [vars]"),
                            help,
                        );
                    }
                }
                (name.get_ref().clone(), template)
            })
            .collect()
    }

    fn hosts(
        &mut self,
        entries: Vec<(S<String>, S<raw::RawHost>)>,
        global: &RawSsh,
        deploy_to: &S<String>,
        vars: &[(String, Template)],
        app_span: Range<usize>,
    ) -> Vec<Host> {
        let housekeeping_timeout = self
            .duration(global.housekeeping_timeout.as_ref())
            .unwrap_or(crate::inventory::HOUSEKEEPING_TIMEOUT);
        if entries.is_empty() {
            self.error(
                app_span,
                "the deployfile defines no hosts",
                Some("add one, e.g. [hosts.web1] with address = \"10.0.0.11\" or \"local\"".into()),
            );
        }
        entries
            .into_iter()
            .map(|(name, host)| {
                let host = host.into_inner();
                let mut host_vars = vars.to_vec();
                for (var_name, template) in self.vars(&host.vars.0) {
                    match host_vars.iter_mut().find(|(n, _)| *n == var_name) {
                        Some(slot) => slot.1 = template,
                        None => host_vars.push((var_name, template)),
                    }
                }
                if name.get_ref() == crate::inventory::LOCAL {
                    self.error(
                        name.span(),
                        "a host may not be named `local`: output uses that name for steps that run on this machine",
                        Some("keep address = \"local\" and call the host something else, such as `web1`".into()),
                    );
                }
                let address = host.address.get_ref().trim();
                if address.is_empty() {
                    self.error(host.address.span(), "address must not be empty", None);
                }
                for role in &host.roles {
                    self.identifier(role, "role");
                }
                Host {
                    name: name.get_ref().clone(),
                    address: if address == "local" {
                        Address::Local
                    } else {
                        Address::Remote(address.to_string())
                    },
                    roles: host.roles.iter().map(|r| r.get_ref().clone()).collect(),
                    deploy_to: self.deploy_to(
                        host.deploy_to.as_ref().unwrap_or(deploy_to),
                        address == "local",
                    ),
                    vars: host_vars,
                    ssh: self.ssh(global, &host.ssh(), address),
                    housekeeping_timeout,
                }
            })
            .collect()
    }

    /// A host's SSH settings: its own keys, then `[ssh]`, then OpenSSH's configuration for the
    /// address, then defaults.
    fn ssh(&mut self, global: &RawSsh, own: &RawSsh, address: &str) -> SshSettings {
        let pick = |own: &Option<S<String>>, global: &Option<S<String>>| {
            own.clone().or_else(|| global.clone())
        };
        let port = own.port.as_ref().or(global.port.as_ref()).map(|port| {
            match u16::try_from(*port.get_ref()) {
                Ok(p) if p > 0 => p,
                _ => {
                    self.error(port.span(), "port must be between 1 and 65535", None);
                    22
                }
            }
        });
        let known_hosts = match pick(&own.known_hosts, &global.known_hosts) {
            None => None,
            Some(value) => match value.get_ref().as_str() {
                "strict" => Some(HostKeyPolicy::Strict),
                "accept-new" => Some(HostKeyPolicy::AcceptNew),
                other => {
                    self.error(
                        value.span(),
                        format!("known_hosts is \"strict\" or \"accept-new\", not \"{other}\""),
                        None,
                    );
                    None
                }
            },
        };
        let jump = pick(&own.jump, &global.jump).and_then(|spec| {
            for hop in spec.get_ref().split(',') {
                if Jump::parse(hop).is_none() {
                    self.error(
                        spec.span(),
                        format!("`{hop}` is not a jump host; write it as [user@]host[:port] (hops separated by commas)"),
                        None,
                    );
                    return None;
                }
            }
            Some(spec.into_inner())
        });
        let given = Given {
            user: pick(&own.user, &global.user).map(|u| u.into_inner()),
            port,
            identity_file: pick(&own.identity_file, &global.identity_file)
                .map(|path| expand_home(path.get_ref())),
            known_hosts,
            known_hosts_file: pick(&own.known_hosts_file, &global.known_hosts_file)
                .map(|path| expand_home(path.get_ref())),
            jump,
            forward_agent: own
                .forward_agent
                .as_ref()
                .or(global.forward_agent.as_ref())
                .map(|f| *f.get_ref()),
            connect_timeout: self
                .duration(pick(&own.connect_timeout, &global.connect_timeout).as_ref()),
            keepalive_interval: self
                .duration(pick(&own.keepalive_interval, &global.keepalive_interval).as_ref()),
            keepalive_max: own
                .keepalive_max
                .as_ref()
                .or(global.keepalive_max.as_ref())
                .map(|n| self.positive(n, "keepalive_max")),
        };
        if address == "local" {
            return SshSettings::direct("local", "");
        }
        // OpenSSH's configuration is read when the first remote host needs it.
        let resolver = self.ssh_config.get_or_insert_with(Resolver::standard);
        match endpoint::settings(resolver, address, &given) {
            Ok(settings) => settings,
            Err(problem) => {
                self.diagnostics
                    .push(Diagnostic::without_position(self.path, problem));
                SshSettings::direct(address, "")
            }
        }
    }

    fn roles(&mut self, roles: Option<&S<Vec<S<String>>>>, hosts: &[Host]) -> Option<Vec<String>> {
        let spanned = roles?;
        if spanned.get_ref().is_empty() {
            self.error(
                spanned.span(),
                "`roles = []` selects no host",
                Some("leave `roles` out to run on every host".into()),
            );
        }
        let roles = spanned.get_ref();
        for role in roles {
            if !hosts.iter().any(|h| h.roles.contains(role.get_ref())) {
                let known = hosts
                    .iter()
                    .flat_map(|h| h.roles.iter().map(String::as_str));
                self.error(
                    role.span(),
                    format!("no host has the role `{}`", role.get_ref()),
                    nearest(role.get_ref(), known).map(|n| format!("did you mean `{n}`?")),
                );
            }
        }
        Some(roles.iter().map(|r| r.get_ref().clone()).collect())
    }

    fn steps(
        &mut self,
        raw: Vec<S<RawStep>>,
        section: &str,
        hosts: &[Host],
        scope: Scope,
    ) -> Vec<Step> {
        self.unique_names(&raw, section);
        raw.into_iter()
            .enumerate()
            .filter_map(|(index, step)| {
                if let Some(switch) = &step.get_ref().switch {
                    self.error(
                        switch.span(),
                        format!("`switch` belongs in [[activate]], not [[{section}]]"),
                        None,
                    );
                    return None;
                }
                Some(self.step(step, index, section, hosts, scope))
            })
            .collect()
    }

    /// `[[on_success]]` / `[[on_failure]]`: local steps, whether or not they say `local = true`.
    fn hooks(&mut self, raw: Vec<S<RawStep>>, section: &str, hosts: &[Host]) -> Vec<Step> {
        self.unique_names(&raw, section);
        raw.into_iter()
            .enumerate()
            .map(|(index, step)| {
                let span = step.span();
                let inner = step.get_ref();
                if inner.switch.is_some() {
                    self.error(span.clone(), format!("`switch` belongs in [[activate]], not [[{section}]]"), None);
                }
                if let Some(local) = &inner.local
                    && !*local.get_ref()
                {
                    self.error(
                        local.span(),
                        format!("[[{section}]] steps run once, on this machine: `local = false` is not possible here"),
                        Some("leave `local` out".into()),
                    );
                }
                let mut step = step.into_inner();
                step.local = None;
                self.step(S::new(span, step), index, section, hosts, Scope::Hook)
            })
            .collect()
    }

    /// Step names label every output line and the summary, so two steps may not share one.
    fn unique_names(&mut self, steps: &[S<RawStep>], section: &str) {
        let names: Vec<&S<String>> = steps
            .iter()
            .filter_map(|s| s.get_ref().name.as_ref())
            .collect();
        for (i, name) in names.iter().enumerate() {
            if names[..i]
                .iter()
                .any(|earlier| earlier.get_ref() == name.get_ref())
            {
                self.error(
                    name.span(),
                    format!(
                        "two [[{section}]] steps are named `{}`; names label the output, so they must differ",
                        name.get_ref()
                    ),
                    None,
                );
            }
        }
    }

    fn step(
        &mut self,
        raw: S<RawStep>,
        index: usize,
        section: &str,
        hosts: &[Host],
        scope: Scope,
    ) -> Step {
        let span = raw.span();
        let raw = raw.into_inner();
        let name = match &raw.name {
            Some(name) => self.nonempty(name, "name"),
            None => format!("{section}-{}", index + 1),
        };
        let hook = matches!(scope, Scope::Hook);
        let local = hook || raw.local.as_ref().is_some_and(|local| *local.get_ref());
        if local && (raw.roles.is_some() || raw.once || raw.concurrency.is_some()) {
            self.error(
                span.clone(),
                format!("step `{name}` is local: it runs once, on this machine, so it takes no `roles`, `once` or `concurrency`"),
                None,
            );
        }
        let scope = match scope {
            Scope::Hook => Scope::Hook,
            _ if local => Scope::Local {
                release: matches!(scope, Scope::Release),
            },
            scope => scope,
        };
        let command = match &raw.run {
            Some(run) => self.template(run, scope, hosts),
            None => {
                self.error(
                    span.clone(),
                    format!("step `{name}` has neither `run` nor `switch = true`"),
                    Some("give it a command: run = \"...\"".into()),
                );
                Template::parse("").expect("empty template")
            }
        };
        let roles = self.roles(raw.roles.as_ref(), hosts);
        Step {
            name,
            command,
            roles,
            once: raw.once,
            timeout: self.duration(raw.timeout.as_ref()),
            concurrency: raw
                .concurrency
                .as_ref()
                .map(|n| self.positive(n, "concurrency")),
            local,
        }
    }

    fn activate(&mut self, raw: Vec<S<RawStep>>, hosts: &[Host]) -> Vec<ActivateStep> {
        self.unique_names(&raw, "activate");
        let mut steps = Vec::new();
        let mut switch_seen = false;
        for (index, step) in raw.into_iter().enumerate() {
            let Some(switch) = step.get_ref().switch.clone() else {
                steps.push(ActivateStep::Run(self.step(
                    step,
                    index,
                    "activate",
                    hosts,
                    Scope::Release,
                )));
                continue;
            };
            let inner = step.get_ref();
            if !switch.get_ref() {
                self.error(
                    switch.span(),
                    "`switch = false` means nothing; remove the step or set it to true",
                    None,
                );
            } else if inner.run.is_some()
                || inner.roles.is_some()
                || inner.once
                || inner.local.is_some()
            {
                self.error(
                    step.span(),
                    "the switch step takes no `run`, `roles`, `once` or `local`: it switches every selected host",
                    None,
                );
            } else if switch_seen {
                self.error(
                    switch.span(),
                    "only one [[activate]] step may be the switch",
                    None,
                );
            }
            switch_seen = true;
            steps.push(ActivateStep::Switch);
        }
        if !switch_seen {
            steps.push(ActivateStep::Switch);
        }
        steps
    }

    fn parse_template(&mut self, value: &S<String>) -> Template {
        match Template::parse(value.get_ref()) {
            Ok(template) => template,
            Err(unclosed) => {
                self.error(
                    self.inner_span(value, unclosed.0, 2),
                    "`{{` is not closed by `}}`",
                    None,
                );
                Template::parse("").expect("empty template")
            }
        }
    }

    fn template(&mut self, value: &S<String>, scope: Scope, hosts: &[Host]) -> Template {
        match scope {
            Scope::Local { release: false } => return self.local_template(value, &[]),
            Scope::Local { release: true } => {
                return self.local_template(value, LOCAL_RELEASE_VARIABLES);
            }
            Scope::Hook => {
                let known: Vec<&str> = LOCAL_RELEASE_VARIABLES
                    .iter()
                    .chain(HOOK_VARIABLES)
                    .copied()
                    .collect();
                return self.local_template(value, &known);
            }
            Scope::Base | Scope::Release => {}
        }
        let template = self.parse_template(value);
        let mut known: Vec<&str> = BASE_VARIABLES.to_vec();
        if matches!(scope, Scope::Release) {
            known.extend(RELEASE_VARIABLES);
        }
        let mut user_vars: Vec<&str> = hosts
            .iter()
            .flat_map(|h| h.vars.iter().map(|(n, _)| n.as_str()))
            .collect();
        user_vars.dedup();
        for (variable, offset) in template.variables() {
            let defined_everywhere = !hosts.is_empty()
                && hosts
                    .iter()
                    .all(|h| h.vars.iter().any(|(n, _)| n == variable));
            if known.contains(&variable) || defined_everywhere {
                continue;
            }
            let span = self.inner_span(value, offset, variable.len() + 4);
            if RELEASE_VARIABLES.contains(&variable) {
                self.error(
                    span,
                    format!(
                        "`{{{{{variable}}}}}` is only known while preparing or activating a release"
                    ),
                    Some("tasks and checks run in {{current_path}}; use that instead".into()),
                );
            } else if user_vars.contains(&variable) {
                self.error(
                    span,
                    format!("`{{{{{variable}}}}}` is set for some hosts but not all"),
                    Some("set it in [vars] as a default".to_string()),
                );
            } else {
                let candidates = BASE_VARIABLES
                    .iter()
                    .chain(RELEASE_VARIABLES)
                    .copied()
                    .chain(user_vars.iter().copied());
                let help = nearest(variable, candidates).map(|n| {
                    if known.contains(&n.as_str()) || user_vars.contains(&n.as_str()) {
                        format!("did you mean `{{{{{n}}}}}`?")
                    } else {
                        format!("did you mean `{{{{{n}}}}}`? It is only known while preparing or activating a release")
                    }
                });
                self.error(span, format!("unknown variable `{{{{{variable}}}}}`"), help);
            }
        }
        template
    }

    /// A command run on this machine: it may use `extra` (the release's values, how a command
    /// ended) and the `[vars]` that need no host, never a host's own values.
    fn local_template(&mut self, value: &S<String>, extra: &[&str]) -> Template {
        let template = self.parse_template(value);
        let mut known: Vec<&str> = LOCAL_VARIABLES.to_vec();
        known.extend(extra);
        let local_vars = self.local_vars.clone();
        for (variable, offset) in template.variables() {
            if known.contains(&variable) || local_vars.iter().any(|v| v == variable) {
                continue;
            }
            let span = self.inner_span(value, offset, variable.len() + 4);
            let host_value =
                BASE_VARIABLES.contains(&variable) || RELEASE_VARIABLES.contains(&variable);
            if host_value {
                self.error(
                    span,
                    format!("`{{{{{variable}}}}}` is a host's value, but this command runs once, on this machine"),
                    Some(format!("it can use {}", known.iter().map(|k| format!("{{{{{k}}}}}")).collect::<Vec<_>>().join(", "))),
                );
            } else {
                let help = nearest(
                    variable,
                    known
                        .iter()
                        .copied()
                        .chain(local_vars.iter().map(String::as_str)),
                )
                .map(|n| format!("did you mean `{{{{{n}}}}}`?"))
                .or_else(|| Some("only [vars] that use no host's value are known here".into()));
                self.error(
                    span,
                    format!("unknown variable `{{{{{variable}}}}}` in a local command"),
                    help,
                );
            }
        }
        template
    }

    /// Where the `{{` at byte `offset` of a string's value stands in the file: the same
    /// occurrence of `{{` in the raw text, so escapes and multi-line strings cannot shift it.
    fn inner_span(&self, value: &S<String>, offset: usize, len: usize) -> Range<usize> {
        let span = value.span();
        let raw = &self.text[span.clone()];
        let nth = value.get_ref()[..offset.min(value.get_ref().len())]
            .matches("{{")
            .count();
        match raw.match_indices("{{").nth(nth) {
            Some((at, _)) => {
                let start = span.start + at;
                let end = raw[at..]
                    .find("}}")
                    .map_or(start + len, |close| start + close + 2);
                start..end.min(span.end)
            }
            None => span,
        }
    }
}

/// The absolute directory of the deployfile, which relative paths in it are taken from.
fn directory_of(path: &Path) -> PathBuf {
    let base = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf())
}

fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(rest),
            None => PathBuf::from(path),
        },
        None => PathBuf::from(path),
    }
}
