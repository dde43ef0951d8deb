//! What `~/.ssh/config` says about a host, so a deployfile can name hosts by their aliases and
//! inherit `HostName`, `User`, `Port`, `IdentityFile`, `ProxyJump`, `UserKnownHostsFile` and
//! `StrictHostKeyChecking`. The deployfile wins where both set a value.
//!
//! Parsing is ssh2-config's; `Match` blocks are dropped first, because that crate would attach
//! their lines to the preceding `Host` block.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2_config::{ParseRule, SshConfig};

/// The settings `~/.ssh/config` gives one host; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub proxy_jump: Option<String>,
    pub known_hosts_file: Option<PathBuf>,
    /// `StrictHostKeyChecking accept-new` (or `no`, which deployr treats as accept-new: a changed
    /// key is always refused).
    pub accept_new: Option<bool>,
    pub connect_timeout: Option<Duration>,
}

pub struct SshConfigFile(Option<SshConfig>);

impl SshConfigFile {
    /// `~/.ssh/config` of `home`; an absent or unreadable file is an empty config, and a file
    /// that cannot be parsed is an error naming it.
    pub fn load(home: &Path) -> Result<SshConfigFile, String> {
        let path = home.join(".ssh").join("config");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(SshConfigFile(None));
        };
        let text = without_match_blocks(&text);
        let config = SshConfig::default()
            .home_dir(home)
            .parse(
                &mut BufReader::new(text.as_bytes()),
                ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .map_err(|error| format!("cannot parse {}: {error}", path.display()))?;
        Ok(SshConfigFile(Some(config)))
    }

    pub fn empty() -> SshConfigFile {
        SshConfigFile(None)
    }

    pub fn host(&self, alias: &str) -> HostConfig {
        let Some(config) = &self.0 else {
            return HostConfig::default();
        };
        let params = config.query(alias);
        let unsupported = |key: &str| {
            params
                .unsupported_fields
                .get(key)
                .or_else(|| params.ignored_fields.get(key))
                .and_then(|args| args.first().cloned())
        };
        HostConfig {
            host_name: params.host_name.clone(),
            user: params.user.clone(),
            port: params.port,
            identity_file: params
                .identity_file
                .as_ref()
                .and_then(|f| f.first().cloned()),
            proxy_jump: params
                .proxy_jump
                .as_ref()
                .and_then(|jumps| jumps.first().cloned())
                .filter(|jump| !jump.eq_ignore_ascii_case("none")),
            known_hosts_file: unsupported("userknownhostsfile").map(|f| expand(&f)),
            accept_new: unsupported("stricthostkeychecking").map(|value| {
                matches!(
                    value.to_ascii_lowercase().as_str(),
                    "accept-new" | "no" | "off"
                )
            }),
            connect_timeout: params.connect_timeout,
        }
    }
}

fn expand(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Drops every `Match` block (up to the next `Host` line or the end).
fn without_match_blocks(text: &str) -> String {
    let mut kept = String::new();
    let mut in_match = false;
    for line in text.lines() {
        let keyword = line
            .split(|c: char| c.is_whitespace() || c == '=')
            .find(|word| !word.is_empty())
            .unwrap_or_default()
            .to_ascii_lowercase();
        match keyword.as_str() {
            "match" => in_match = true,
            "host" => in_match = false,
            _ => {}
        }
        if !in_match {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> SshConfigFile {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        std::fs::write(home.path().join(".ssh/config"), text).unwrap();
        SshConfigFile::load(home.path()).unwrap()
    }

    #[test]
    fn reads_an_alias() {
        let file = config(
            "Host web1\n  HostName 10.0.0.11\n  User deploy\n  Port 2222\n  IdentityFile /keys/id\n  ProxyJump ops@bastion:22\n  UserKnownHostsFile /kh\n  StrictHostKeyChecking accept-new\n",
        );
        let host = file.host("web1");
        assert_eq!(host.host_name.as_deref(), Some("10.0.0.11"));
        assert_eq!(host.user.as_deref(), Some("deploy"));
        assert_eq!(host.port, Some(2222));
        assert_eq!(host.identity_file, Some(PathBuf::from("/keys/id")));
        assert_eq!(host.proxy_jump.as_deref(), Some("ops@bastion:22"));
        assert_eq!(host.known_hosts_file, Some(PathBuf::from("/kh")));
        assert_eq!(host.accept_new, Some(true));
        assert_eq!(file.host("other"), HostConfig::default());
    }

    #[test]
    fn match_blocks_do_not_leak_into_the_previous_host() {
        let file =
            config("Host web1\n  User deploy\nMatch exec \"true\"\n  User root\n  Port 2200\n");
        let host = file.host("web1");
        assert_eq!(host.user.as_deref(), Some("deploy"));
        assert_eq!(host.port, None);
    }
}
