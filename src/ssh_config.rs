//! What OpenSSH's configuration says about a host, resolved by OpenSSH's own rules so that
//! deployr connects exactly where `ssh ALIAS` would: `~/.ssh/config`, then
//! `/etc/ssh/ssh_config`; the first obtained value of a keyword wins; `Host` patterns with `*`,
//! `?` and `!`; `Match` (`all`, `host`, `originalhost`, `user`, `localuser`, `exec`, `final`,
//! `canonical`, each negatable) including the final pass; `Include` with globs at any depth;
//! `%` tokens in `HostName`.
//!
//! The rules are implemented here rather than asked of `ssh -G`: a process per host costs
//! ~16 ms, 8 s for 480 hosts, far above the fan-out itself, while this takes microseconds. The
//! integration test `ssh_config_corpus_resolves_like_ssh_g` proves the result equal to
//! `ssh -G`'s on a corpus of configurations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// OpenSSH 9.2's default `HostKeyAlgorithms` and `PubkeyAcceptedAlgorithms`, which `+`, `-`
/// and `^` values change.
pub const DEFAULT_KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

const DEFAULT_IDENTITIES: &[&str] = &[
    "~/.ssh/id_rsa",
    "~/.ssh/id_ecdsa",
    "~/.ssh/id_ecdsa_sk",
    "~/.ssh/id_ed25519",
    "~/.ssh/id_ed25519_sk",
    "~/.ssh/id_xmss",
    "~/.ssh/id_dsa",
];

/// How a host is reached when not directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `ProxyJump` hops as written (`[user@]host[:port]` or `ssh://…`), first hop first.
    Jump(Vec<String>),
    /// `ProxyCommand`, its `%` tokens not yet expanded (as `ssh -G` prints it).
    Command(String),
}

/// Everything OpenSSH's configuration gives one host, defaults filled in as `ssh -G` prints
/// them. Identity and certificate files keep their `~` and `%` tokens (OpenSSH expands them
/// when it loads the keys, see [`Tokens`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    pub host_name: String,
    pub user: String,
    pub port: u16,
    pub identity_files: Vec<String>,
    pub certificate_files: Vec<String>,
    pub identities_only: bool,
    /// `IdentityAgent`: `None` means `SSH_AUTH_SOCK`; `Some("none")` no agent.
    pub identity_agent: Option<String>,
    pub forward_agent: bool,
    pub proxy: Option<Proxy>,
    pub user_known_hosts: Vec<PathBuf>,
    pub global_known_hosts: Vec<PathBuf>,
    pub host_key_alias: Option<String>,
    /// `StrictHostKeyChecking` as `ssh -G` prints it: `true`, `false`, `ask` or `accept-new`.
    pub strict_host_key_checking: String,
    pub host_key_algorithms: Vec<String>,
    /// Whether the types recorded in known_hosts go first: OpenSSH does so unless
    /// `HostKeyAlgorithms` was given as a list of its own (not `+…` or `-…`).
    pub prefer_known_host_key_types: bool,
    /// `PubkeyAcceptedAlgorithms`: the key and certificate types offered to the server.
    pub pubkey_accepted_algorithms: Vec<String>,
    pub hash_known_hosts: bool,
    /// `AddressFamily`: `any`, `inet` or `inet6`.
    pub address_family: String,
    pub connect_timeout: Option<Duration>,
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: usize,
}

/// Who runs deployr, as OpenSSH sees it (for defaults, `~`, tokens and `Match localuser`).
#[derive(Debug, Clone)]
pub struct Local {
    pub user: String,
    pub uid: u32,
    /// `~` and `%d`: `$HOME` (so tests and `sudo -E` runs use the HOME they set).
    pub home: PathBuf,
    pub host_name: String,
}

impl Local {
    /// The login name from the password database (OpenSSH's default `User`), `$HOME`, and this
    /// machine's name.
    pub fn current() -> Local {
        // SAFETY: getpwuid returns a pointer into static storage that stays valid until the
        // next getpw* call; both strings are copied out at once.
        let (user, dir) = unsafe {
            let entry = libc::getpwuid(libc::getuid());
            if entry.is_null() {
                (None, None)
            } else {
                let text = |p: *const libc::c_char| {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                };
                (Some(text((*entry).pw_name)), Some(text((*entry).pw_dir)))
            }
        };
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .or(dir.map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut name = [0u8; 256];
        // SAFETY: the buffer is writable and its length is passed.
        let host_name = unsafe {
            if libc::gethostname(name.as_mut_ptr().cast(), name.len()) == 0 {
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                String::from_utf8_lossy(&name[..end]).into_owned()
            } else {
                "localhost".to_string()
            }
        };
        Local {
            user: user
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "root".to_string()),
            // SAFETY: getuid cannot fail.
            uid: unsafe { libc::getuid() },
            home,
            host_name,
        }
    }
}

/// What the command line would add (`ssh -l USER -p PORT -J HOPS`): deployfile values and the
/// user and port of a jump hop. They win over the configuration and are seen by `Match user`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Overrides {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub jump: Option<String>,
}

/// The configuration files to read, in OpenSSH's order.
pub struct Resolver {
    /// Each file with whether it is a user file (relative `Include`s are then taken from
    /// `~/.ssh`, else from `/etc/ssh`).
    files: Vec<(PathBuf, bool)>,
    pub local: Local,
    /// Every file read so far, split into lines once (hundreds of hosts read the same files;
    /// `None`: unreadable, which OpenSSH treats as empty).
    parsed: Mutex<HashMap<PathBuf, Option<Arc<Vec<Line>>>>>,
    /// What each `Include` pattern matched.
    globs: Mutex<HashMap<String, Result<Vec<PathBuf>, String>>>,
}

/// One configuration line, split as readconf.c splits it.
struct Line {
    number: usize,
    keyword: String,
    /// The text after the keyword (ProxyCommand takes it whole).
    rest: String,
    args: Result<Vec<String>, String>,
}

fn parse_file(text: &str) -> Vec<Line> {
    text.lines()
        .enumerate()
        .filter_map(|(index, raw)| {
            let (keyword, rest) = split_keyword(raw)?;
            Some(Line {
                number: index + 1,
                keyword,
                rest: rest.to_string(),
                args: argv_split(rest),
            })
        })
        .collect()
}

/// A configuration that cannot be followed, naming file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Resolver {
    /// `~/.ssh/config` then `/etc/ssh/ssh_config`, as `ssh` reads them.
    pub fn standard() -> Resolver {
        let local = Local::current();
        Resolver {
            files: vec![
                (local.home.join(".ssh/config"), true),
                (PathBuf::from("/etc/ssh/ssh_config"), false),
            ],
            local,
            parsed: Mutex::default(),
            globs: Mutex::default(),
        }
    }

    /// One file only, as `ssh -F FILE` reads it (tests/ssh_config.rs compares it with `ssh -G`).
    pub fn with_file(file: &Path, local: Local) -> Resolver {
        Resolver {
            files: vec![(file.to_path_buf(), true)],
            local,
            parsed: Mutex::default(),
            globs: Mutex::default(),
        }
    }

    /// The settings `ssh [-l user] [-p port] [-J jump] ALIAS` would use.
    pub fn resolve(&self, alias: &str, overrides: &Overrides) -> Result<HostConfig, ConfigError> {
        let mut pass = Pass {
            resolver: self,
            original: alias.to_string(),
            host: alias.to_string(),
            final_pass: false,
            want_final: false,
            values: Values::default(),
        };
        if let Some(user) = &overrides.user {
            pass.values.set("user", vec![user.clone()]);
        }
        if let Some(port) = overrides.port {
            pass.values.set("port", vec![port.to_string()]);
        }
        if let Some(jump) = &overrides.jump {
            pass.values.proxy = Some(Proxy::Jump(split_hops(jump)));
        }
        pass.read_all()?;
        // As ssh.c does: the expanded, lowercased HostName becomes the host, and a `Match final`
        // or `canonical` asks for a second pass over everything with that name.
        let host_name = match pass.values.first("hostname") {
            Some(name) => percent_expand(name, &[('h', alias)])
                .map_err(|message| self.error_without_line(message))?,
            None => alias.to_string(),
        };
        pass.host = host_name.to_ascii_lowercase();
        if pass.want_final {
            pass.final_pass = true;
            pass.values.set("hostname", vec![pass.host.clone()]);
            pass.read_all()?;
        }
        pass.finish()
    }

    fn lines(&self, file: &Path) -> Option<Arc<Vec<Line>>> {
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        parsed
            .entry(file.to_path_buf())
            .or_insert_with(|| {
                let text = std::fs::read_to_string(file).ok()?;
                Some(Arc::new(parse_file(&text)))
            })
            .clone()
    }

    fn glob(&self, pattern: &str) -> Result<Vec<PathBuf>, String> {
        let mut globs = self.globs.lock().unwrap_or_else(|e| e.into_inner());
        globs
            .entry(pattern.to_string())
            .or_insert_with(|| match glob::glob(pattern) {
                Ok(paths) => Ok(paths.flatten().collect()),
                Err(error) => Err(format!("Include {pattern}: {error}")),
            })
            .clone()
    }

    fn error_without_line(&self, message: String) -> ConfigError {
        ConfigError {
            file: self
                .files
                .first()
                .map(|f| f.0.display().to_string())
                .unwrap_or_default(),
            line: None,
            message,
        }
    }
}

/// `ProxyJump a,b` as its hops.
pub fn split_hops(spec: &str) -> Vec<String> {
    spec.split(',').map(str::to_string).collect()
}

/// The first value of each keyword (OpenSSH: the first obtained value wins), and the lists
/// that accumulate instead.
#[derive(Default)]
struct Values {
    first: HashMap<String, (Vec<String>, String, usize)>,
    identity_files: Vec<String>,
    certificate_files: Vec<String>,
    /// `ProxyJump` and `ProxyCommand` exclude each other: the first of either wins.
    proxy: Option<Proxy>,
    proxy_none: bool,
}

impl Values {
    fn set(&mut self, keyword: &str, args: Vec<String>) {
        self.first
            .entry(keyword.to_string())
            .or_insert((args, "the command line".to_string(), 0));
    }

    fn first(&self, keyword: &str) -> Option<&str> {
        self.first
            .get(keyword)
            .and_then(|(args, _, _)| args.first().map(String::as_str))
    }
}

struct Pass<'a> {
    resolver: &'a Resolver,
    original: String,
    /// The name `Host` patterns are matched against.
    host: String,
    final_pass: bool,
    want_final: bool,
    values: Values,
}

const MAX_INCLUDE_DEPTH: usize = 16;

impl Pass<'_> {
    fn read_all(&mut self) -> Result<(), ConfigError> {
        for (file, user) in &self.resolver.files {
            self.read(file, *user, 0)?;
        }
        Ok(())
    }

    fn read(&mut self, file: &Path, user: bool, depth: usize) -> Result<(), ConfigError> {
        let Some(lines) = self.resolver.lines(file) else {
            return Ok(());
        };
        let mut active = true;
        for line in lines.iter() {
            let error = |message: String| ConfigError {
                file: file.display().to_string(),
                line: Some(line.number),
                message,
            };
            let args = match &line.args {
                Ok(args) => args,
                Err(message) => return Err(error(message.clone())),
            };
            let keyword = line.keyword.as_str();
            let rest = line.rest.as_str();
            match keyword {
                "host" => active = self.host_matches(args),
                "match" => active = self.match_line(args).map_err(error)?,
                "include" if active => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(error("Include nested too deeply".into()));
                    }
                    for pattern in args {
                        let pattern = expand_tilde(pattern, &self.resolver.local.home);
                        let pattern = if Path::new(&pattern).is_absolute() {
                            pattern
                        } else if user {
                            format!("{}/.ssh/{pattern}", self.resolver.local.home.display())
                        } else {
                            format!("/etc/ssh/{pattern}")
                        };
                        // An included file's Host/Match lines end at its end.
                        for path in self.resolver.glob(&pattern).map_err(error)? {
                            self.read(&path, user, depth + 1)?;
                        }
                    }
                }
                "include" => {}
                _ if !active => {}
                "identityfile" => {
                    // OpenSSH ignores a file already listed (the final pass reads it again).
                    if let Some(arg) = args.first()
                        && !self.values.identity_files.contains(arg)
                    {
                        self.values.identity_files.push(arg.clone());
                    }
                }
                "certificatefile" => {
                    if let Some(arg) = args.first()
                        && !self.values.certificate_files.contains(arg)
                    {
                        self.values.certificate_files.push(arg.clone());
                    }
                }
                "proxyjump" | "proxycommand" => {
                    if self.values.proxy.is_none() && !self.values.proxy_none {
                        let value = if keyword == "proxycommand" {
                            rest.trim_start_matches(|c: char| c.is_whitespace() || c == '=')
                                .to_string()
                        } else {
                            args.first().cloned().unwrap_or_default()
                        };
                        if value.eq_ignore_ascii_case("none") {
                            self.values.proxy_none = true;
                        } else if keyword == "proxycommand" {
                            self.values.proxy = Some(Proxy::Command(value));
                        } else {
                            self.values.proxy = Some(Proxy::Jump(split_hops(&value)));
                        }
                    }
                }
                _ => {
                    if !self.values.first.contains_key(keyword) {
                        self.values.first.insert(
                            keyword.to_string(),
                            (args.clone(), file.display().to_string(), line.number),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn host_matches(&self, patterns: &[String]) -> bool {
        let mut matched = false;
        for pattern in patterns {
            let (negated, pattern) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            if wildcard(&self.host, pattern) {
                if negated {
                    return false;
                }
                matched = true;
            }
        }
        matched
    }

    /// The name `Match host` sees: `HostName` so far (with `%h`), else the host.
    fn match_host(&self) -> String {
        if self.final_pass {
            return self.host.clone();
        }
        match self.values.first("hostname") {
            Some(name) => percent_expand(name, &[('h', &self.host)]).unwrap_or_default(),
            None => self.host.clone(),
        }
    }

    fn match_line(&mut self, args: &[String]) -> Result<bool, String> {
        let mut result = true;
        let mut words = args.iter();
        let mut count = 0;
        while let Some(word) = words.next() {
            count += 1;
            let lower = word.to_ascii_lowercase();
            let (negate, criterion) = match lower.strip_prefix('!') {
                Some(rest) => (true, rest.to_string()),
                None => (false, lower.clone()),
            };
            match criterion.as_str() {
                "all" => {
                    if negate {
                        result = false;
                    }
                    continue;
                }
                "canonical" | "final" => {
                    if criterion == "final" {
                        self.want_final = true;
                    }
                    if self.final_pass == negate {
                        result = false;
                    }
                    continue;
                }
                _ => {}
            }
            let Some(arg) = words.next() else {
                return Err(format!("Match {criterion} needs an argument"));
            };
            let matched = match criterion.as_str() {
                "host" => pattern_list(&self.match_host().to_ascii_lowercase(), arg),
                "originalhost" => pattern_list(&self.original.to_ascii_lowercase(), arg),
                "user" => {
                    let user = self
                        .values
                        .first("user")
                        .unwrap_or(&self.resolver.local.user)
                        .to_string();
                    pattern_list(&user, arg)
                }
                "localuser" => pattern_list(&self.resolver.local.user, arg),
                "exec" => {
                    if !result {
                        // OpenSSH does not run a command once the line cannot match.
                        continue;
                    }
                    let command = percent_expand(arg, &self.exec_tokens())?;
                    std::process::Command::new("/bin/sh")
                        .arg("-c")
                        .arg(&command)
                        .stdin(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|status| status.success())
                }
                other => {
                    return Err(format!(
                        "Match {other} is not supported by deployr (supported: all, host, originalhost, user, localuser, exec, final, canonical)"
                    ));
                }
            };
            if matched == negate {
                result = false;
            }
        }
        if count == 0 {
            return Err("Match needs a criterion (e.g. `Match all`)".into());
        }
        Ok(result)
    }

    fn exec_tokens(&self) -> Vec<(char, String)> {
        let local = &self.resolver.local;
        let user = self.values.first("user").unwrap_or(&local.user).to_string();
        let port = self.values.first("port").unwrap_or("22").to_string();
        vec![
            ('h', self.match_host()),
            ('n', self.original.clone()),
            ('p', port),
            ('r', user),
            ('u', local.user.clone()),
            ('l', local.host_name.clone()),
            ('L', short_host(&local.host_name)),
            ('d', local.home.display().to_string()),
            ('i', local.uid.to_string()),
        ]
    }

    fn finish(self) -> Result<HostConfig, ConfigError> {
        let values = &self.values;
        let local = &self.resolver.local;
        let error = |keyword: &str, message: String| {
            let (file, line) = values
                .first
                .get(keyword)
                .map(|(_, file, line)| (file.clone(), (*line > 0).then_some(*line)))
                .unwrap_or_default();
            ConfigError {
                file,
                line,
                message,
            }
        };
        for keyword in ["bindaddress", "bindinterface"] {
            if let Some(value) = values.first(keyword) {
                return Err(error(
                    keyword,
                    format!(
                        "deployr does not support {keyword} {value}; it chooses which network the connection leaves by"
                    ),
                ));
            }
        }
        let address_family = match values.first("addressfamily").map(str::to_ascii_lowercase) {
            None => "any".to_string(),
            Some(family) if ["any", "inet", "inet6"].contains(&family.as_str()) => family,
            Some(other) => {
                return Err(error(
                    "addressfamily",
                    format!("AddressFamily is any, inet or inet6, not {other}"),
                ));
            }
        };
        for (keyword, refused) in [
            ("canonicalizehostname", &["yes", "always"][..]),
            ("proxyusefdpass", &["yes"]),
        ] {
            if let Some(value) = values.first(keyword)
                && refused.contains(&value.to_ascii_lowercase().as_str())
            {
                return Err(error(
                    keyword,
                    format!(
                        "deployr does not support {keyword} {value}; it would change where the connection goes"
                    ),
                ));
            }
        }
        if let Some(value) = values.first("knownhostscommand")
            && !value.eq_ignore_ascii_case("none")
        {
            return Err(error(
                "knownhostscommand",
                "deployr does not support KnownHostsCommand; list the keys in a known_hosts file"
                    .into(),
            ));
        }
        let user = values.first("user").unwrap_or(&local.user).to_string();
        let port = match values.first("port") {
            Some(port) => port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| error("port", format!("Port `{port}` is not a port number")))?,
            None => 22,
        };
        let flag = |keyword: &str| {
            values
                .first(keyword)
                .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "yes" | "true"))
        };
        let seconds = |keyword: &str| -> Result<Option<Duration>, ConfigError> {
            match values.first(keyword) {
                None => Ok(None),
                Some(v) if v.eq_ignore_ascii_case("none") => Ok(None),
                Some(v) => parse_time(v)
                    .map(|d| (!d.is_zero()).then_some(d))
                    .ok_or_else(|| error(keyword, format!("{keyword} `{v}` is not a time"))),
            }
        };
        let host_key_alias = values.first("hostkeyalias").map(str::to_string);
        let known_tokens = |list: &[String]| -> Result<Vec<PathBuf>, String> {
            let tokens = Tokens {
                local,
                host_name: &self.host,
                original: &self.original,
                port,
                user: &user,
                host_key_alias: host_key_alias.as_deref(),
            };
            list.iter()
                .map(|f| tokens.expand_path(f))
                .collect::<Result<_, _>>()
        };
        let list = |keyword: &str, default: &[&str]| -> Vec<String> {
            match values.first.get(keyword) {
                Some((args, _, _)) => args.clone(),
                None => default.iter().map(|s| s.to_string()).collect(),
            }
        };
        let user_known_hosts = known_tokens(&list(
            "userknownhostsfile",
            &["~/.ssh/known_hosts", "~/.ssh/known_hosts2"],
        ))
        .map_err(|m| error("userknownhostsfile", m))?;
        let global_known_hosts = known_tokens(&list(
            "globalknownhostsfile",
            &["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"],
        ))
        .map_err(|m| error("globalknownhostsfile", m))?;
        let strict = match values
            .first("stricthostkeychecking")
            .map(str::to_ascii_lowercase)
        {
            None => "ask".to_string(),
            Some(v) if v == "yes" || v == "true" => "true".to_string(),
            Some(v) if v == "no" || v == "false" || v == "off" => "false".to_string(),
            Some(v) => v,
        };
        let algorithms = |keyword: &str| match values.first(keyword) {
            Some(spec) => algorithm_list(spec),
            None => DEFAULT_KEY_ALGORITHMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let host_key_algorithms = algorithms("hostkeyalgorithms");
        let pubkey_accepted_algorithms = algorithms("pubkeyacceptedalgorithms");
        let identity_files = if values.identity_files.is_empty() {
            DEFAULT_IDENTITIES.iter().map(|s| s.to_string()).collect()
        } else {
            values.identity_files.clone()
        };
        Ok(HostConfig {
            host_name: self.host.clone(),
            user,
            port,
            identity_files,
            certificate_files: values.certificate_files.clone(),
            identities_only: flag("identitiesonly"),
            identity_agent: values
                .first("identityagent")
                .map(|agent| expand_tilde(agent, &local.home)),
            forward_agent: flag("forwardagent"),
            proxy: values.proxy.clone(),
            user_known_hosts,
            global_known_hosts,
            host_key_alias,
            strict_host_key_checking: strict,
            host_key_algorithms,
            pubkey_accepted_algorithms,
            prefer_known_host_key_types: values
                .first("hostkeyalgorithms")
                .is_none_or(|spec| spec.starts_with(['+', '-'])),
            hash_known_hosts: flag("hashknownhosts"),
            address_family,
            connect_timeout: seconds("connecttimeout")?,
            server_alive_interval: seconds("serveraliveinterval")?,
            server_alive_count_max: match values.first("serveralivecountmax") {
                Some(n) => n.parse().map_err(|_| {
                    error(
                        "serveralivecountmax",
                        format!("ServerAliveCountMax `{n}` is not a number"),
                    )
                })?,
                None => 3,
            },
        })
    }
}

/// Every key algorithm OpenSSH 9.2 knows, in its own order (sshkey.c): a pattern in
/// `HostKeyAlgorithms` expands to these, in this order.
const ALL_KEY_ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
    "ssh-dss-cert-v01@openssh.com",
    "ssh-rsa",
    "ssh-rsa-cert-v01@openssh.com",
    "rsa-sha2-256",
    "rsa-sha2-256-cert-v01@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-512-cert-v01@openssh.com",
];

/// `HostKeyAlgorithms` as kex_assemble_names reads it: a list, or `+list` appended to,
/// `-list` removed from, `^list` put before OpenSSH's default. Patterns (`*`, `?`) expand to
/// the algorithms they match.
fn algorithm_list(spec: &str) -> Vec<String> {
    let expand = |list: &str| -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for pattern in list.split(',') {
            for name in ALL_KEY_ALGORITHMS {
                if wildcard(name, pattern) && !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
        names
    };
    let default = DEFAULT_KEY_ALGORITHMS.iter().map(|s| s.to_string());
    if let Some(rest) = spec.strip_prefix('+') {
        let mut all: Vec<String> = default.collect();
        for name in expand(rest) {
            if !all.contains(&name) {
                all.push(name);
            }
        }
        all
    } else if let Some(rest) = spec.strip_prefix('-') {
        default
            .filter(|name| !rest.split(',').any(|p| wildcard(name, p)))
            .collect()
    } else if let Some(rest) = spec.strip_prefix('^') {
        let mut all = expand(rest);
        let rest: Vec<String> = default.filter(|name| !all.contains(name)).collect();
        all.extend(rest);
        all
    } else {
        expand(spec)
    }
}

/// The `%` tokens OpenSSH expands in `IdentityFile`, `CertificateFile`, `UserKnownHostsFile`
/// and `ProxyCommand`.
pub struct Tokens<'a> {
    pub local: &'a Local,
    pub host_name: &'a str,
    pub original: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub host_key_alias: Option<&'a str>,
}

impl Tokens<'_> {
    fn table(&self) -> Vec<(char, String)> {
        vec![
            ('h', self.host_name.to_string()),
            ('n', self.original.to_string()),
            ('p', self.port.to_string()),
            ('r', self.user.to_string()),
            ('u', self.local.user.clone()),
            ('l', self.local.host_name.clone()),
            ('L', short_host(&self.local.host_name)),
            ('d', self.local.home.display().to_string()),
            ('i', self.local.uid.to_string()),
            (
                'k',
                self.host_key_alias.unwrap_or(self.original).to_string(),
            ),
        ]
    }

    pub fn expand(&self, text: &str) -> Result<String, String> {
        percent_expand(text, &self.table())
    }

    /// A file name: `~` then tokens.
    pub fn expand_path(&self, text: &str) -> Result<PathBuf, String> {
        let text = expand_tilde(text, &self.local.home);
        Ok(PathBuf::from(self.expand(&text)?))
    }
}

fn short_host(name: &str) -> String {
    name.split('.').next().unwrap_or(name).to_string()
}

fn expand_tilde(path: &str, home: &Path) -> String {
    if path == "~" {
        home.display().to_string()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest).display().to_string()
    } else {
        path.to_string()
    }
}

/// `%x` replaced by its value from `table`; `%%` is `%`; any other token is an error naming it.
pub fn percent_expand<S: AsRef<str>>(text: &str, table: &[(char, S)]) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(token) => match table.iter().find(|(t, _)| *t == token) {
                Some((_, value)) => out.push_str(value.as_ref()),
                None => return Err(format!("unknown token %{token} in `{text}`")),
            },
            None => return Err(format!("`{text}` ends with a lone %")),
        }
    }
    Ok(out)
}

/// OpenSSH's `match_pattern`: `*` any run, `?` any one character.
pub fn wildcard(text: &str, pattern: &str) -> bool {
    fn go(t: &[u8], p: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| go(&t[i..], rest)),
            Some((b'?', rest)) => !t.is_empty() && go(&t[1..], rest),
            Some((c, rest)) => t.first() == Some(c) && go(&t[1..], rest),
        }
    }
    go(text.as_bytes(), pattern.as_bytes())
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns, true when one matches and no
/// negated (`!`) one does.
pub fn pattern_list(text: &str, list: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',') {
        match pattern.strip_prefix('!') {
            Some(negated) if wildcard(text, negated) => return false,
            Some(_) => {}
            None if wildcard(text, pattern) => matched = true,
            None => {}
        }
    }
    matched
}

/// A line's keyword (lowercase) and the rest, as readconf.c splits it: the keyword ends at
/// whitespace or `=`; blank lines and comments are `None`.
fn split_keyword(line: &str) -> Option<(String, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = line[..end].to_ascii_lowercase();
    let rest = line[end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    Some((keyword, rest))
}

/// OpenSSH's `argv_split`: words split on blanks, `"` and `'` quote, `\` escapes quotes,
/// backslashes and spaces, and an unquoted `#` at the start of a word ends the line.
fn argv_split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => break,
            _ => {}
        }
        let mut word = String::new();
        let mut quote = None;
        while let Some(&c) = chars.peek() {
            if c == '\\' {
                chars.next();
                match chars.peek() {
                    Some(&n)
                        if n == '\'' || n == '"' || n == '\\' || (quote.is_none() && n == ' ') =>
                    {
                        word.push(n);
                        chars.next();
                    }
                    _ => word.push('\\'),
                }
                continue;
            }
            chars.next();
            match quote {
                None if c == ' ' || c == '\t' => break,
                None if c == '"' || c == '\'' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ => word.push(c),
            }
        }
        if quote.is_some() {
            return Err("unterminated quote".into());
        }
        words.push(word);
    }
    Ok(words)
}

/// OpenSSH's time format: seconds, or a sum of numbers with `s`, `m`, `h`, `d`, `w`.
fn parse_time(text: &str) -> Option<Duration> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return None,
        };
        total += number.parse::<u64>().ok()? * unit;
        number.clear();
    }
    if !number.is_empty() {
        total += number.parse::<u64>().ok()?;
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local {
            user: "me".into(),
            uid: 1000,
            home: PathBuf::from("/home/me"),
            host_name: "box.example".into(),
        }
    }

    fn resolve(text: &str, alias: &str) -> HostConfig {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config");
        std::fs::write(&file, text).unwrap();
        Resolver::with_file(&file, local())
            .resolve(alias, &Overrides::default())
            .unwrap()
    }

    #[test]
    fn first_value_wins_inside_one_block() {
        let host = resolve(
            "Host web1\n  HostName first\n  HostName second\n  Port 2\n",
            "web1",
        );
        assert_eq!(host.host_name, "first");
        assert_eq!(host.port, 2);
    }

    #[test]
    fn match_blocks_apply_by_their_criteria_not_to_the_previous_host() {
        let text = "Host web1\n  User deploy\nMatch exec \"false\"\n  Port 2200\nMatch user deploy host web1\n  Port 2201\n";
        let host = resolve(text, "web1");
        assert_eq!(host.user, "deploy");
        assert_eq!(host.port, 2201);
    }

    #[test]
    fn negated_host_pattern_excludes() {
        let text = "Host *.example !db.example\n  User app\n";
        assert_eq!(resolve(text, "web.example").user, "app");
        assert_eq!(resolve(text, "db.example").user, "me");
    }

    #[test]
    fn tokens_and_quotes() {
        assert_eq!(
            argv_split(r#"a "b c" 'd e' f\ g"#).unwrap(),
            ["a", "b c", "d e", "f g"]
        );
        assert_eq!(percent_expand("%h-%%", &[('h', "x")]).unwrap(), "x-%");
        assert!(percent_expand("%Z", &[('h', "x")]).is_err());
        assert_eq!(parse_time("1m30s"), Some(Duration::from_secs(90)));
    }
}
