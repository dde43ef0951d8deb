//! A host's connection settings: what the deployfile gives (as `ssh`'s command-line options
//! would), then what OpenSSH's configuration gives for the alias, then defaults. Every
//! `ProxyJump` hop is resolved as a host of its own, as `ssh -J` does.

use std::path::PathBuf;
use std::time::Duration;

use crate::inventory::{AddressFamily, HostKeyPolicy, Jump, Route, SshSettings};
use crate::ssh_config::{HostConfig, Overrides, Proxy, Resolver, Tokens};

/// The deployfile's `[ssh]` values for one host (its own, else the global ones).
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<HostKeyPolicy>,
    pub known_hosts_file: Option<PathBuf>,
    pub jump: Option<String>,
    pub forward_agent: Option<bool>,
    pub connect_timeout: Option<Duration>,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_max: Option<usize>,
}

/// OpenSSH gives up on longer chains too (each hop is a process there); a loop ends here.
const MAX_HOPS: usize = 8;

pub fn settings(resolver: &Resolver, alias: &str, given: &Given) -> Result<SshSettings, String> {
    resolve(resolver, alias, given, 0)
}

fn resolve(
    resolver: &Resolver,
    alias: &str,
    given: &Given,
    depth: usize,
) -> Result<SshSettings, String> {
    if depth > MAX_HOPS {
        return Err(format!(
            "ProxyJump for {alias} goes through more than {MAX_HOPS} hops; is there a loop?"
        ));
    }
    let overrides = Overrides {
        user: given.user.clone(),
        port: given.port,
        jump: given.jump.clone(),
    };
    let config = resolver
        .resolve(alias, &overrides)
        .map_err(|error| format!("ssh_config for {alias}: {error}"))?;
    let tokens = Tokens {
        local: &resolver.local,
        host_name: &config.host_name,
        original: alias,
        port: config.port,
        user: &config.user,
        host_key_alias: config.host_key_alias.as_deref(),
    };
    let path = |file: &String| {
        tokens
            .expand_path(file)
            .map_err(|error| format!("ssh_config for {alias}: {error}"))
    };
    let mut identity_files: Vec<PathBuf> = given.identity_file.iter().cloned().collect();
    for file in &config.identity_files {
        identity_files.push(path(file)?);
    }
    let certificate_files = config
        .certificate_files
        .iter()
        .map(path)
        .collect::<Result<_, _>>()?;
    let route = match &config.proxy {
        None => Route::Direct,
        Some(Proxy::Command(command)) => Route::Command(
            tokens
                .expand(command)
                .map_err(|error| format!("ProxyCommand for {alias}: {error}"))?,
        ),
        Some(Proxy::Jump(hops)) => {
            let (last, before) = hops
                .split_last()
                .expect("split_hops gives one hop at least");
            let hop = Jump::parse(last).ok_or_else(|| {
                format!("ProxyJump `{last}` for {alias} is not [user@]host[:port]")
            })?;
            let hop_given = Given {
                user: hop.user.clone(),
                port: hop.port,
                jump: (!before.is_empty()).then(|| before.join(",")),
                forward_agent: None,
                ..given.clone()
            };
            Route::Jump(Box::new(resolve(
                resolver,
                &hop.host,
                &hop_given,
                depth + 1,
            )?))
        }
    };
    let agent = match config.identity_agent.as_deref() {
        Some(none) if none.eq_ignore_ascii_case("none") => None,
        Some("SSH_AUTH_SOCK") | None => std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
        Some(socket) => match socket.strip_prefix('$') {
            Some(variable) => std::env::var_os(variable).map(PathBuf::from),
            None => Some(path(&socket.to_string())?),
        },
    };
    let host_keys = given
        .known_hosts
        .unwrap_or(match config.strict_host_key_checking.as_str() {
            "accept-new" | "false" => HostKeyPolicy::AcceptNew,
            _ => HostKeyPolicy::Strict,
        });
    Ok(SshSettings {
        known_hosts_files: match &given.known_hosts_file {
            Some(file) => vec![file.clone()],
            None => without_none(&config.user_known_hosts),
        },
        global_known_hosts_files: without_none(&config.global_known_hosts),
        host_key_alias: config.host_key_alias.clone(),
        hash_known_hosts: config.hash_known_hosts,
        host_key_algorithms: config.host_key_algorithms.clone(),
        pubkey_algorithms: config.pubkey_accepted_algorithms.clone(),
        prefer_known_host_key_types: config.prefer_known_host_key_types,
        address_family: match config.address_family.as_str() {
            "inet" => AddressFamily::Inet,
            "inet6" => AddressFamily::Inet6,
            _ => AddressFamily::Any,
        },
        forward_agent: given.forward_agent.unwrap_or(config.forward_agent),
        connect_timeout: given
            .connect_timeout
            .or(config.connect_timeout)
            .unwrap_or(Duration::from_secs(10)),
        keepalive_interval: given
            .keepalive_interval
            .or(config.server_alive_interval)
            .unwrap_or(Duration::from_secs(5)),
        keepalive_max: given.keepalive_max.unwrap_or(keepalive_max(&config)),
        host_keys,
        identity_files,
        certificate_files,
        identities_only: config.identities_only,
        agent,
        route,
        host_name: config.host_name,
        user: config.user,
        port: config.port,
    })
}

/// `ServerAliveCountMax` counts only when `ServerAliveInterval` is set; deployr's default is 3.
fn keepalive_max(config: &HostConfig) -> usize {
    if config.server_alive_interval.is_some() && config.server_alive_count_max > 0 {
        config.server_alive_count_max
    } else {
        3
    }
}

/// `UserKnownHostsFile none` and `GlobalKnownHostsFile none` name no file.
fn without_none(files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|file| file.as_os_str() != "none")
        .cloned()
        .collect()
}
