//! deployr resolves OpenSSH's configuration as OpenSSH does: a corpus of configurations, each
//! resolved by deployr and by `ssh -G` (OpenSSH's own answer), field by field.

use std::path::{Path, PathBuf};
use std::process::Command;

use deployr::ssh_config::{HostConfig, Local, Overrides, Proxy, Resolver};

/// One configuration and the hosts to look up in it (`alias`, `-l`, `-p`, `-J`); `%DIR%` is
/// replaced by a scratch directory that holds `conf.d/`.
struct Case {
    name: &'static str,
    config: &'static str,
    /// Extra files under the scratch directory: (relative path, text).
    files: &'static [(&'static str, &'static str)],
    lookups: &'static [Lookup],
    /// What the case is about, checked on top of the comparison with `ssh -G`: (alias, field,
    /// value as `ssh -G` prints it).
    expect: &'static [(&'static str, &'static str, &'static str)],
}

type Lookup = (
    &'static str,
    Option<&'static str>,
    Option<u16>,
    Option<&'static str>,
);

fn corpus() -> Vec<Case> {
    vec![
        Case {
            name: "alias with HostName, User, Port, IdentityFile",
            config: "Host web1\n  HostName 10.0.0.11\n  User deploy\n  Port 2222\n  IdentityFile ~/.ssh/deploy_ed25519\n",
            files: &[],
            lookups: &[("web1", None, None, None), ("other", None, None, None)],
            expect: &[("web1", "hostname", "10.0.0.11"), ("web1", "port", "2222")],
        },
        Case {
            name: "a key repeated inside one Host block: the first value wins",
            config: "Host web1\n  HostName first.example\n  HostName second.example\n  Port 2201\n  Port 2202\n",
            files: &[],
            lookups: &[("web1", None, None, None)],
            expect: &[
                ("web1", "hostname", "first.example"),
                ("web1", "port", "2201"),
            ],
        },
        Case {
            name: "a Host * block before the specific one wins",
            config: "Host *\n  User everyone\nHost web1\n  User deploy\n  HostName 10.0.0.1\n",
            files: &[],
            lookups: &[("web1", None, None, None)],
            expect: &[("web1", "user", "everyone")],
        },
        Case {
            name: "negated Host patterns",
            config: "Host *.example !db.example\n  User app\nHost db.example\n  User dba\n",
            files: &[],
            lookups: &[
                ("web.example", None, None, None),
                ("db.example", None, None, None),
            ],
            expect: &[
                ("web.example", "user", "app"),
                ("db.example", "user", "dba"),
            ],
        },
        Case {
            name: "? and * wildcards, several patterns on one line",
            config: "Host web? api-*\n  Port 2022\nHost *\n  Port 2023\n",
            files: &[],
            lookups: &[
                ("web1", None, None, None),
                ("web10", None, None, None),
                ("api-eu", None, None, None),
                ("db", None, None, None),
            ],
            expect: &[("web10", "port", "2023"), ("api-eu", "port", "2022")],
        },
        Case {
            name: "Match all",
            config: "Host web1\n  HostName 10.0.0.1\nMatch all\n  User matched\n  Port 2200\n",
            files: &[],
            lookups: &[("web1", None, None, None), ("web2", None, None, None)],
            expect: &[("web2", "user", "matched")],
        },
        Case {
            name: "Match host sees the HostName given so far",
            config: "Host web1\n  HostName real.example\nMatch host real.example\n  User real\nMatch host web1\n  Port 2299\n",
            files: &[],
            lookups: &[("web1", None, None, None)],
            expect: &[("web1", "user", "real"), ("web1", "port", "22")],
        },
        Case {
            name: "Match originalhost",
            config: "Host web1\n  HostName real.example\nMatch originalhost web*\n  User original\n",
            files: &[],
            lookups: &[("web1", None, None, None), ("db1", None, None, None)],
            expect: &[("web1", "user", "original")],
        },
        Case {
            name: "Match user, with the User from an earlier block and from -l",
            config: "Host web1\n  User deploy\nMatch user deploy\n  Port 2201\nMatch user ops\n  Port 2202\n",
            files: &[],
            lookups: &[
                ("web1", None, None, None),
                ("web2", Some("ops"), None, None),
            ],
            expect: &[("web1", "port", "2201"), ("web2", "port", "2202")],
        },
        Case {
            name: "Match localuser, negated and not",
            config: "Match !localuser nobody-at-all\n  Port 2210\nMatch localuser nobody-at-all\n  Port 2211\n",
            files: &[],
            lookups: &[("web1", None, None, None)],
            expect: &[("web1", "port", "2210")],
        },
        Case {
            name: "Match exec, with tokens, true and false",
            config: "Match exec \"test %h = web1\"\n  User exec-true\nMatch exec false\n  Port 2212\n",
            files: &[],
            lookups: &[("web1", None, None, None), ("web2", None, None, None)],
            expect: &[("web1", "user", "exec-true"), ("web1", "port", "22")],
        },
        Case {
            name: "Match final: a second pass with the HostName as the host",
            config: "Host web1\n  HostName real.example\nMatch final host real.example\n  User final\nHost real.example\n  Port 2213\n",
            files: &[],
            lookups: &[("web1", None, None, None)],
            expect: &[("web1", "user", "final"), ("web1", "port", "2213")],
        },
        Case {
            name: "Match canonical without canonicalisation matches in no pass",
            config: "Match canonical\n  User canonical\nHost *\n  User fallback\n",
            files: &[],
            lookups: &[("web1", None, None, None)],
            expect: &[("web1", "user", "fallback")],
        },
        Case {
            name: "Include with a glob at any depth",
            config: "Include %DIR%/conf.d/*.conf\nHost *\n  User late\n",
            files: &[
                (
                    "conf.d/10-web.conf",
                    "Host web1\n  HostName 10.0.0.1\n  Include %DIR%/nested/*.conf\n",
                ),
                (
                    "conf.d/20-db.conf",
                    "Host db1\n  HostName 10.0.0.2\n  User dba\n",
                ),
                ("nested/port.conf", "Port 2214\n"),
            ],
            lookups: &[("web1", None, None, None), ("db1", None, None, None)],
            expect: &[("web1", "port", "2214"), ("db1", "user", "dba")],
        },
        Case {
            name: "a Match block inside an Included file does not attach to the previous Host",
            config: "Host web1\n  User deploy\nInclude %DIR%/conf.d/*.conf\n",
            files: &[(
                "conf.d/match.conf",
                "Match exec false\n  User wrong\n  Port 2215\n",
            )],
            lookups: &[("web1", None, None, None)],
            expect: &[("web1", "user", "deploy"), ("web1", "port", "22")],
        },
        Case {
            name: "an Include inside a Host block applies only to that host",
            config: "Host web1\n  Include %DIR%/conf.d/web.conf\nHost *\n  Port 2216\n",
            files: &[("conf.d/web.conf", "User only-web1\n")],
            lookups: &[("web1", None, None, None), ("web2", None, None, None)],
            expect: &[("web1", "user", "only-web1")],
        },
        Case {
            name: "%h in HostName",
            config: "Host *.internal\n  HostName %h.corp.example\n",
            files: &[],
            lookups: &[("web1.internal", None, None, None)],
            expect: &[("web1.internal", "hostname", "web1.internal.corp.example")],
        },
        Case {
            name: "several IdentityFile entries with tokens, in order",
            config: "Host web1\n  IdentityFile ~/.ssh/%h_%r\n  IdentityFile %d/.ssh/second\n  User deploy\nHost *\n  IdentityFile ~/.ssh/third\n",
            files: &[],
            lookups: &[("web1", None, None, None), ("web2", None, None, None)],
            expect: &[],
        },
        Case {
            name: "CertificateFile and IdentitiesOnly",
            config: "Host web1\n  CertificateFile ~/.ssh/id_ed25519-cert.pub\n  IdentitiesOnly yes\n  IdentityFile ~/.ssh/id_ed25519\n",
            files: &[],
            lookups: &[("web1", None, None, None)],
            expect: &[("web1", "identitiesonly", "yes")],
        },
        Case {
            name: "UserKnownHostsFile list with tokens, GlobalKnownHostsFile",
            config: "Host web1\n  UserKnownHostsFile ~/.ssh/kh_%h_%p %d/kh2 /etc/kh_%r_%u\n  GlobalKnownHostsFile /etc/ssh/fleet_known_hosts\n  Port 2217\n",
            files: &[],
            lookups: &[("web1", None, None, None), ("web2", None, None, None)],
            expect: &[],
        },
        Case {
            name: "HostKeyAlias and StrictHostKeyChecking values",
            config: "Host web1\n  HostKeyAlias fleet-web\n  StrictHostKeyChecking accept-new\nHost web2\n  StrictHostKeyChecking no\nHost web3\n  StrictHostKeyChecking yes\n",
            files: &[],
            lookups: &[
                ("web1", None, None, None),
                ("web2", None, None, None),
                ("web3", None, None, None),
                ("web4", None, None, None),
            ],
            expect: &[("web1", "stricthostkeychecking", "accept-new")],
        },
        Case {
            name: "ProxyJump naming an alias",
            config: "Host web1\n  HostName 10.0.0.1\n  ProxyJump bastion\nHost bastion\n  HostName bastion.example\n  User ops\n  Port 2218\n",
            files: &[],
            lookups: &[("web1", None, None, None), ("bastion", None, None, None)],
            expect: &[("web1", "proxyjump", "bastion")],
        },
        Case {
            name: "ProxyJump chains, and each hop looked up as ssh -J does",
            config: "Host web1\n  ProxyJump ops@outer:2200,inner\nHost inner\n  User in\n  ProxyJump elsewhere\n",
            files: &[],
            lookups: &[
                ("web1", None, None, None),
                ("inner", None, None, Some("ops@outer:2200")),
                ("outer", Some("ops"), Some(2200), None),
            ],
            expect: &[("inner", "proxyjump", "ops@outer:2200")],
        },
        Case {
            name: "ProxyCommand, and the first of ProxyJump/ProxyCommand wins",
            config: "Host web1\n  ProxyCommand ssh -W %h:%p bastion\nHost web2\n  ProxyJump b1\n  ProxyCommand nc %h %p\nHost web3\n  ProxyCommand none\n  ProxyJump b2\nHost *\n  ProxyJump last\n",
            files: &[],
            lookups: &[
                ("web1", None, None, None),
                ("web2", None, None, None),
                ("web3", None, None, None),
                ("web4", None, None, None),
            ],
            expect: &[("web1", "proxycommand", "ssh -W %h:%p bastion")],
        },
        Case {
            name: "ForwardAgent, IdentityAgent",
            config: "Host web1\n  ForwardAgent yes\n  IdentityAgent ~/agent.sock\nHost web2\n  IdentityAgent none\n",
            files: &[],
            lookups: &[("web1", None, None, None), ("web2", None, None, None)],
            expect: &[("web1", "forwardagent", "yes")],
        },
        Case {
            name: "HostKeyAlgorithms: a list, +, - and ^",
            config: "Host a\n  HostKeyAlgorithms ecdsa-sha2-nistp256,ssh-ed25519\nHost b\n  HostKeyAlgorithms -*-cert-*\nHost c\n  HostKeyAlgorithms ^rsa-sha2-512\nHost d\n  HostKeyAlgorithms +ssh-rsa\nHost e\n  HostKeyAlgorithms ssh-ed25519*\n",
            files: &[],
            lookups: &[
                ("a", None, None, None),
                ("b", None, None, None),
                ("c", None, None, None),
                ("d", None, None, None),
                ("e", None, None, None),
            ],
            expect: &[("a", "hostkeyalgorithms", "ecdsa-sha2-nistp256,ssh-ed25519")],
        },
        Case {
            name: "PubkeyAcceptedAlgorithms, and UserKnownHostsFile none",
            config: "Host a\n  PubkeyAcceptedAlgorithms ssh-ed25519,rsa-sha2-*\n  UserKnownHostsFile none\nHost b\n  PubkeyAcceptedAlgorithms -ssh-ed25519*\n",
            files: &[],
            lookups: &[("a", None, None, None), ("b", None, None, None)],
            expect: &[(
                "a",
                "pubkeyacceptedalgorithms",
                "ssh-ed25519,rsa-sha2-256,rsa-sha2-256-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-512-cert-v01@openssh.com",
            )],
        },
        Case {
            name: "ConnectTimeout, ServerAliveInterval, ServerAliveCountMax, HashKnownHosts, AddressFamily",
            config: "Host web1\n  AddressFamily inet\n  ConnectTimeout 1m30s\n  ServerAliveInterval 7\n  ServerAliveCountMax 5\n  HashKnownHosts yes\n",
            files: &[],
            lookups: &[("web1", None, None, None), ("web2", None, None, None)],
            expect: &[("web1", "connecttimeout", "90")],
        },
        Case {
            name: "keyword=value, quotes, comments, case of keywords",
            config: "# fleet\nHost=web1\n  HOSTNAME=10.0.0.9 # trailing\n  user \"deploy\"\n  IdentityFile \"~/.ssh/with space\"\n\tPort = 2219\n",
            files: &[],
            lookups: &[("web1", None, None, None)],
            expect: &[("web1", "port", "2219"), ("web1", "user", "deploy")],
        },
        Case {
            name: "-l and -p win over the configuration and feed %r and %p",
            config: "Host web1\n  User config-user\n  Port 2220\n  UserKnownHostsFile /tmp/kh_%r_%p\n",
            files: &[],
            lookups: &[("web1", Some("cli-user"), Some(2221), None)],
            expect: &[("web1", "user", "cli-user"), ("web1", "port", "2221")],
        },
    ]
}

/// The fields deployr takes from a configuration, as `ssh -G` prints them.
const FIELDS: &[&str] = &[
    "hostname",
    "user",
    "port",
    "identityfile",
    "certificatefile",
    "identitiesonly",
    "identityagent",
    "forwardagent",
    "proxyjump",
    "proxycommand",
    "userknownhostsfile",
    "globalknownhostsfile",
    "hostkeyalias",
    "stricthostkeychecking",
    "hostkeyalgorithms",
    "pubkeyacceptedalgorithms",
    "hashknownhosts",
    "addressfamily",
    "connecttimeout",
    "serveraliveinterval",
    "serveralivecountmax",
];

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

fn paths(list: &[PathBuf]) -> String {
    list.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// deployr's resolution, printed as `ssh -G` prints it (one line per value).
fn printed(config: &HostConfig) -> Vec<(String, String)> {
    let mut lines = vec![
        ("hostname", config.host_name.clone()),
        ("user", config.user.clone()),
        ("port", config.port.to_string()),
        ("identitiesonly", yes_no(config.identities_only)),
        ("forwardagent", yes_no(config.forward_agent)),
        ("userknownhostsfile", paths(&config.user_known_hosts)),
        ("globalknownhostsfile", paths(&config.global_known_hosts)),
        (
            "stricthostkeychecking",
            config.strict_host_key_checking.clone(),
        ),
        ("hostkeyalgorithms", config.host_key_algorithms.join(",")),
        (
            "pubkeyacceptedalgorithms",
            config.pubkey_accepted_algorithms.join(","),
        ),
        ("hashknownhosts", yes_no(config.hash_known_hosts)),
        ("addressfamily", config.address_family.clone()),
        (
            "connecttimeout",
            config
                .connect_timeout
                .map_or("none".into(), |t| t.as_secs().to_string()),
        ),
        (
            "serveraliveinterval",
            config
                .server_alive_interval
                .map_or("0".into(), |t| t.as_secs().to_string()),
        ),
        (
            "serveralivecountmax",
            config.server_alive_count_max.to_string(),
        ),
    ];
    for file in &config.identity_files {
        lines.push(("identityfile", file.clone()));
    }
    for file in &config.certificate_files {
        lines.push(("certificatefile", file.clone()));
    }
    if let Some(agent) = &config.identity_agent {
        lines.push(("identityagent", agent.clone()));
    }
    if let Some(alias) = &config.host_key_alias {
        lines.push(("hostkeyalias", alias.clone()));
    }
    match &config.proxy {
        Some(Proxy::Jump(hops)) => lines.push(("proxyjump", hops.join(","))),
        Some(Proxy::Command(command)) => lines.push(("proxycommand", command.clone())),
        None => {}
    }
    let mut lines: Vec<(String, String)> =
        lines.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    lines.sort();
    lines
}

fn ssh_g(file: &Path, lookup: &Lookup) -> Vec<(String, String)> {
    let (alias, user, port, jump) = lookup;
    let mut command = Command::new("ssh");
    command.arg("-G").arg("-F").arg(file);
    if let Some(user) = user {
        command.args(["-l", user]);
    }
    if let Some(port) = port {
        command.args(["-p", &port.to_string()]);
    }
    if let Some(jump) = jump {
        command.args(["-J", jump]);
    }
    let output = command.arg(alias).output().expect(
        "run `ssh -G` (OpenSSH's client, Debian package openssh-client; scripts/test.sh installs it)",
    );
    assert!(
        output.status.success(),
        "ssh -G {alias}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<(String, String)> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(key, _)| FIELDS.contains(key))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    lines.sort();
    lines
}

/// OpenSSH expands `~` with the password database's home directory, whatever `$HOME` says;
/// deployr is told the same directory here.
fn login_home() -> PathBuf {
    let output = Command::new("sh")
        .args(["-c", "getent passwd \"$(id -un)\" | cut -d: -f6"])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

#[test]
fn ssh_config_corpus_resolves_like_ssh_g() {
    let corpus = corpus();
    assert!(
        corpus.len() >= 25,
        "the corpus has {} configurations",
        corpus.len()
    );
    let mut local = Local::current();
    local.home = login_home();
    let mut compared = 0;
    for case in &corpus {
        let dir = tempfile::tempdir().unwrap();
        let with_dir = |text: &str| text.replace("%DIR%", &dir.path().display().to_string());
        for (path, text) in case.files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, with_dir(text)).unwrap();
        }
        let file = dir.path().join("config");
        std::fs::write(&file, with_dir(case.config)).unwrap();
        let resolver = Resolver::with_file(&file, local.clone());
        for lookup in case.lookups {
            let (alias, user, port, jump) = lookup;
            let overrides = Overrides {
                user: user.map(str::to_string),
                port: *port,
                jump: jump.map(str::to_string),
            };
            let ours = printed(
                &resolver
                    .resolve(alias, &overrides)
                    .unwrap_or_else(|e| panic!("{}: {alias}: {e}", case.name)),
            );
            let openssh = ssh_g(&file, lookup);
            assert_eq!(
                ours, openssh,
                "case `{}`, host {alias}: deployr (left) and ssh -G (right) differ",
                case.name
            );
            for (expected_alias, field, value) in case.expect {
                if expected_alias == alias {
                    assert!(
                        ours.iter().any(|(k, v)| k == field && v == value),
                        "case `{}`, host {alias}: expected {field} {value}, got {ours:?}",
                        case.name
                    );
                }
            }
            compared += 1;
        }
    }
    eprintln!(
        "{} configurations, {compared} lookups equal to ssh -G",
        corpus.len()
    );
    assert!(compared >= 50, "{compared} lookups compared");
}

#[test]
fn unsupported_options_that_change_the_destination_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    std::fs::write(
        &file,
        "Host web1\n  CanonicalizeHostname yes\nHost web2\n  ProxyUseFdpass yes\n  ProxyCommand nc %h %p\nHost web4\n  BindAddress 10.0.0.1\n",
    )
    .unwrap();
    let resolver = Resolver::with_file(&file, Local::current());
    let web1 = resolver.resolve("web1", &Overrides::default()).unwrap_err();
    assert!(web1.to_string().contains("canonicalizehostname"), "{web1}");
    assert_eq!(web1.line, Some(2), "{web1}");
    let web2 = resolver.resolve("web2", &Overrides::default()).unwrap_err();
    assert!(web2.to_string().contains("proxyusefdpass"), "{web2}");
    assert!(resolver.resolve("web3", &Overrides::default()).is_ok());
    let web4 = resolver.resolve("web4", &Overrides::default()).unwrap_err();
    assert!(web4.to_string().contains("bindaddress"), "{web4}");
    let file = dir.path().join("config-match");
    std::fs::write(
        &file,
        "Host web1\n  User deploy\nMatch localnetwork 10.0.0.0/8\n  User x\n",
    )
    .unwrap();
    let resolver = Resolver::with_file(&file, Local::current());
    let error = resolver.resolve("web1", &Overrides::default()).unwrap_err();
    assert!(error.to_string().contains("Match localnetwork"), "{error}");
    assert_eq!(error.line, Some(3), "{error}");
}
