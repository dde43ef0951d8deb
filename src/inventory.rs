//! Hosts, their roles and settings, and which of them a command works on.

use std::path::PathBuf;
use std::time::Duration;

use crate::template::{Template, Values};

/// How this machine appears in output, where a host's name would: a local step's "host", and
/// the name no deployfile host may take.
pub const LOCAL: &str = "local";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// This machine, reached without SSH.
    Local,
    /// An IP address, DNS name or `~/.ssh/config` alias.
    Remote(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostKeyPolicy {
    /// Only keys already in known_hosts are accepted.
    Strict,
    /// Unknown hosts are learnt on first contact; a changed key is still refused.
    AcceptNew,
}

/// One hop of a `jump` (deployfile) or `ProxyJump` (ssh_config) list: `[user@]host[:port]`,
/// or `ssh://[user@]host[:port]`, where host may be an alias of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jump {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl Jump {
    /// `[user@]host[:port]`, as in OpenSSH's ProxyJump.
    pub fn parse(spec: &str) -> Option<Jump> {
        let spec = spec.strip_prefix("ssh://").unwrap_or(spec);
        let (user, rest) = match spec.rsplit_once('@') {
            Some((user, rest)) => (Some(user.to_string()), rest),
            None => (None, spec),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok().filter(|p| *p > 0)?)),
            None => (rest, None),
        };
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
            && user.as_deref().is_none_or(|u| !u.is_empty());
        valid.then(|| Jump {
            user,
            host: host.to_string(),
            port,
        })
    }
}

/// How the connection to a host is made.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// A TCP connection to `host_name:port`.
    Direct,
    /// A direct-tcpip channel through this bastion (itself reached by its own route).
    Jump(Box<SshSettings>),
    /// SSH spoken over the stdin and stdout of this command (`ProxyCommand`, tokens expanded),
    /// run with `/bin/sh -c`.
    Command(String),
}

/// Everything needed to connect to one host (or one bastion), resolved from the deployfile
/// and OpenSSH's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshSettings {
    /// Where to connect: `HostName` from ssh_config for an alias, else the address.
    pub host_name: String,
    pub route: Route,
    pub forward_agent: bool,
    pub user: String,
    pub port: u16,
    /// Keys to offer, in order (tokens and `~` expanded); a `.pub` file stands for a key held
    /// by the agent.
    pub identity_files: Vec<PathBuf>,
    /// `CertificateFile`s, offered with the key they certify.
    pub certificate_files: Vec<PathBuf>,
    /// `IdentitiesOnly`: offer the agent only the keys of `identity_files`.
    pub identities_only: bool,
    /// The ssh-agent socket (`IdentityAgent`, else `SSH_AUTH_SOCK`); `None` for no agent.
    pub agent: Option<PathBuf>,
    pub host_keys: HostKeyPolicy,
    /// User known_hosts files, read in order; a key learnt under accept-new goes to the first.
    pub known_hosts_files: Vec<PathBuf>,
    /// `GlobalKnownHostsFile`s, read after the user files.
    pub global_known_hosts_files: Vec<PathBuf>,
    /// `HostKeyAlias`: the name looked up in known_hosts instead of `host_name`.
    pub host_key_alias: Option<String>,
    /// `HashKnownHosts`: accept-new writes hashed names.
    pub hash_known_hosts: bool,
    /// `HostKeyAlgorithms` in preference order (OpenSSH names).
    pub host_key_algorithms: Vec<String>,
    /// Whether host key types recorded for the host are offered first (see ssh_config).
    pub prefer_known_host_key_types: bool,
    /// `PubkeyAcceptedAlgorithms`: keys of other types are not offered.
    pub pubkey_algorithms: Vec<String>,
    /// `AddressFamily`: which of the host name's addresses may be used.
    pub address_family: AddressFamily,
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    Any,
    /// IPv4 only.
    Inet,
    /// IPv6 only.
    Inet6,
}

impl SshSettings {
    /// A direct connection with defaults and no keys (for unit tests of what uses hosts).
    pub fn direct(host_name: &str, user: &str) -> SshSettings {
        SshSettings {
            host_name: host_name.into(),
            route: Route::Direct,
            forward_agent: false,
            user: user.into(),
            port: 22,
            identity_files: Vec::new(),
            certificate_files: Vec::new(),
            identities_only: false,
            agent: None,
            host_keys: HostKeyPolicy::Strict,
            known_hosts_files: vec![PathBuf::from("/dev/null")],
            global_known_hosts_files: Vec::new(),
            host_key_alias: None,
            hash_known_hosts: false,
            host_key_algorithms: Vec::new(),
            pubkey_algorithms: Vec::new(),
            prefer_known_host_key_types: true,
            address_family: AddressFamily::Any,
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(5),
            keepalive_max: 3,
        }
    }

    /// `host` or `[host]:port`, the name known_hosts records this host under.
    pub fn known_as(&self) -> String {
        let name = self.host_key_alias.as_deref().unwrap_or(&self.host_name);
        if self.port == 22 || self.host_key_alias.is_some() {
            name.to_string()
        } else {
            format!("[{name}]:{}", self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub address: Address,
    pub roles: Vec<String>,
    pub deploy_to: String,
    /// `[vars]` merged with the host's own `vars`, in the deployfile's order.
    pub vars: Vec<(String, Template)>,
    pub ssh: SshSettings,
    /// The bound on each of deployr's own short steps on this host (state, lock, unlock, the
    /// switch, finish): `[ssh] housekeeping_timeout`.
    pub housekeeping_timeout: Duration,
}

/// `housekeeping_timeout` when the deployfile does not set it: reading a few files or renaming
/// a link takes milliseconds, so a minute means the host is not answering.
pub const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(60);

/// The bound on the steps that move code (fetching the repository, uploading and unpacking an
/// artifact): long enough for a large repository over a slow link.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl Host {
    pub fn has_any_role(&self, roles: &[String]) -> bool {
        self.roles.iter().any(|role| roles.contains(role))
    }

    pub fn shared_path(&self) -> String {
        format!("{}/shared", self.deploy_to)
    }

    pub fn current_path(&self) -> String {
        format!("{}/current", self.deploy_to)
    }

    pub fn address_text(&self) -> &str {
        match &self.address {
            Address::Local => "local",
            Address::Remote(address) => address,
        }
    }

    /// The variables every command on this host can use: the built-ins, then `[vars]` (which may
    /// themselves use built-ins).
    pub fn values(&self, app: &str, timestamp: &str) -> Values {
        let mut values = Values::default();
        values.set("app", app);
        values.set("deploy_to", &self.deploy_to);
        values.set("shared_path", self.shared_path());
        values.set("current_path", self.current_path());
        values.set("host", &self.name);
        values.set("address", self.address_text());
        values.set("timestamp", timestamp);
        let builtins = values.clone();
        for (name, template) in &self.vars {
            values.set(name, template.render(&builtins));
        }
        values
    }
}

/// `--hosts` and `--roles` as given on the command line; both narrow, neither widens.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub hosts: Vec<String>,
    pub roles: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectionError {
    #[error("--hosts names `{name}`, which the deployfile does not define{}", hint(.suggestion))]
    UnknownHost {
        name: String,
        suggestion: Option<String>,
    },
    #[error("--roles names `{name}`, which no host has{}", hint(.suggestion))]
    UnknownRole {
        name: String,
        suggestion: Option<String>,
    },
    #[error("no host matches --hosts {hosts:?} and --roles {roles:?} together")]
    Empty {
        hosts: Vec<String>,
        roles: Vec<String>,
    },
}

fn hint(nearest: &Option<String>) -> String {
    match nearest {
        Some(name) => format!("; did you mean `{name}`?"),
        None => String::new(),
    }
}

/// The closest of `candidates` to a misspelt `name`, if any is close enough to be a typo.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.to_string())
}

impl Selection {
    /// The selected hosts, in deployfile order.
    pub fn apply<'a>(&self, hosts: &'a [Host]) -> Result<Vec<&'a Host>, SelectionError> {
        for name in &self.hosts {
            if !hosts.iter().any(|host| &host.name == name) {
                return Err(SelectionError::UnknownHost {
                    name: name.clone(),
                    suggestion: nearest(name, hosts.iter().map(|h| h.name.as_str())),
                });
            }
        }
        for role in &self.roles {
            if !hosts.iter().any(|host| host.roles.contains(role)) {
                let roles = hosts
                    .iter()
                    .flat_map(|h| h.roles.iter().map(String::as_str));
                return Err(SelectionError::UnknownRole {
                    name: role.clone(),
                    suggestion: nearest(role, roles),
                });
            }
        }
        let selected: Vec<&Host> = hosts
            .iter()
            .filter(|host| self.hosts.is_empty() || self.hosts.contains(&host.name))
            .filter(|host| self.roles.is_empty() || host.has_any_role(&self.roles))
            .collect();
        if selected.is_empty() {
            return Err(SelectionError::Empty {
                hosts: self.hosts.clone(),
                roles: self.roles.clone(),
            });
        }
        Ok(selected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, roles: &[&str]) -> Host {
        Host {
            name: name.to_string(),
            address: Address::Local,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            deploy_to: "/srv/app".to_string(),
            vars: Vec::new(),
            ssh: SshSettings::direct("127.0.0.1", "deploy"),
            housekeeping_timeout: HOUSEKEEPING_TIMEOUT,
        }
    }

    fn names(hosts: Vec<&Host>) -> Vec<&str> {
        hosts.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn roles_and_hosts_both_narrow() {
        let hosts = vec![
            host("web1", &["web", "db"]),
            host("web2", &["web"]),
            host("worker", &["jobs"]),
        ];
        let by_role = Selection {
            hosts: vec![],
            roles: vec!["web".into()],
        };
        assert_eq!(names(by_role.apply(&hosts).unwrap()), ["web1", "web2"]);
        let both = Selection {
            hosts: vec!["web2".into(), "worker".into()],
            roles: vec!["web".into()],
        };
        assert_eq!(names(both.apply(&hosts).unwrap()), ["web2"]);
    }

    #[test]
    fn unknown_host_suggests_the_nearest() {
        let hosts = vec![host("web1", &["web"])];
        let selection = Selection {
            hosts: vec!["wbe1".into()],
            roles: vec![],
        };
        assert_eq!(
            selection.apply(&hosts).unwrap_err(),
            SelectionError::UnknownHost {
                name: "wbe1".into(),
                suggestion: Some("web1".into())
            }
        );
    }

    #[test]
    fn disjoint_selection_is_an_error() {
        let hosts = vec![host("web1", &["web"]), host("db1", &["db"])];
        let selection = Selection {
            hosts: vec!["web1".into()],
            roles: vec!["db".into()],
        };
        assert!(matches!(
            selection.apply(&hosts),
            Err(SelectionError::Empty { .. })
        ));
    }
}
