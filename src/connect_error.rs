//! Why a host could not be connected to, for the operator: each reason names what to check
//! or the command that fixes it. The SSH client, the known_hosts check and authentication all
//! report through it.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("no SSH answer from {address} within {}", humantime::format_duration(*.timeout))]
    Timeout { address: String, timeout: Duration },
    #[error(
        "host key {fingerprint} of {known_as} is not in {} (strict host-key checking); check it, then add it with `ssh-keyscan {} >> {}` or set known_hosts = \"accept-new\"",
        .known_hosts.display(), keyscan_args(.known_as), .known_hosts.display()
    )]
    UnknownHostKey {
        known_as: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error(
        "HOST KEY CHANGED for {known_as}: it now offers {fingerprint}, but line {line} of {} records another key. Someone may be intercepting the connection; if the host was reinstalled, remove the old entry with `ssh-keygen -R '{known_as}'`",
        .known_hosts.display()
    )]
    HostKeyChanged {
        known_as: String,
        fingerprint: String,
        line: usize,
        known_hosts: PathBuf,
    },
    #[error(
        "REVOKED host key {fingerprint} offered by {known_as}: line {line} of {} marks it @revoked; the host must get a new key",
        .known_hosts.display()
    )]
    RevokedHostKey {
        known_as: String,
        fingerprint: String,
        line: usize,
        known_hosts: PathBuf,
    },
    #[error(
        "the host certificate of {known_as} is signed by a trusted @cert-authority ({ca}) but is not valid: {reason}; have it re-signed with `ssh-keygen -s CA_KEY -h -n {known_as} HOST_KEY.pub`"
    )]
    HostCertificate {
        known_as: String,
        ca: String,
        reason: String,
    },
    #[error("cannot use {}: {reason}", .known_hosts.display())]
    KnownHosts {
        known_hosts: PathBuf,
        reason: String,
    },
    #[error("authentication as `{user}` failed; tried: {}", .tried.join("; "))]
    Auth { user: String, tried: Vec<String> },
    #[error(
        "the server closed the connection during authentication as `{user}` after {attempts} attempts (its MaxAuthTries?); tried: {}. Name the right key with IdentityFile and IdentitiesOnly yes",
        .tried.join("; ")
    )]
    AuthDisconnected {
        user: String,
        attempts: usize,
        tried: Vec<String>,
    },
    #[error("SSH protocol error: {0}")]
    Protocol(String),
    #[error("cannot use the bastion {bastion}: {reason}")]
    Bastion { bastion: String, reason: String },
    #[error("ProxyCommand `{command}` failed: {reason}")]
    ProxyCommand { command: String, reason: String },
    /// Connected and authenticated, but the login shell did not start deployr's shell.
    #[error("{0}")]
    Shell(String),
}

fn keyscan_args(known_as: &str) -> String {
    match known_as
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("]:"))
    {
        Some((host, port)) => format!("-p {port} {host}"),
        None => known_as.to_string(),
    }
}
