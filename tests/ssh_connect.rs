//! deployr connects where `ssh ALIAS` connects, with what `ssh` would use: ProxyJump chains and
//! ProxyCommand, identity files, IdentitiesOnly, the agent, user and host certificates, and
//! known_hosts markers. Every test asserts which sshd was reached: the task records
//! `$SSH_CONNECTION`, whose fourth field is the port of the server that ran it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Fleet, Run};

fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("spawn helper");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn keygen(path: &Path, kind: &str) {
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", "deployr-test", "-f"])
            .arg(path),
    );
}

/// `type base64` of a public key file.
fn key_of(public: &Path) -> String {
    let text = std::fs::read_to_string(public).unwrap();
    let mut fields = text.split_whitespace();
    format!("{} {}", fields.next().unwrap(), fields.next().unwrap())
}

/// A deployfile whose hosts are `(name, address)` pairs resolved through `~/.ssh/config`,
/// with a task that records where it ran; nothing about keys or known_hosts in it.
fn deployfile(fleet: &Fleet, hosts: &[(&str, &str)]) -> PathBuf {
    let out = fleet.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut text = format!(
        "[app]\nname = \"shop\"\ndeploy_to = \"{}\"\n\n[ssh]\nconnect_timeout = \"30s\"\n\n\
         [tasks.t]\nrun = \"echo $SSH_CONNECTION > {{{{deploy_to}}}}/{{{{host}}}}.reached\"\n",
        out.display()
    );
    for (name, address) in hosts {
        text.push_str(&format!("\n[hosts.{name}]\naddress = \"{address}\"\n"));
    }
    fleet.write("deployfile.toml", &text)
}

fn ssh_config(fleet: &Fleet, text: &str) {
    std::fs::write(fleet.home.join(".ssh/config"), text).unwrap();
}

/// `Host *` defaults after the test's own blocks (the first value wins): the fleet's user,
/// key and known_hosts.
fn fleet_defaults(fleet: &Fleet) -> String {
    format!(
        "Host *\n  User {}\n  IdentityFile {}\n  UserKnownHostsFile {}\n",
        fleet.user,
        fleet.client_key.display(),
        fleet.known_hosts.display()
    )
}

/// The port of the sshd that ran the task on `host` (0 when it did not run).
fn reached(fleet: &Fleet, host: &str) -> u16 {
    let text = std::fs::read_to_string(fleet.dir.path().join(format!("out/{host}.reached")))
        .unwrap_or_default();
    text.split_whitespace()
        .nth(3)
        .and_then(|port| port.parse().ok())
        .unwrap_or(0)
}

fn run_task(fleet: &Fleet, file: &Path) -> Run {
    let started = Instant::now();
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "run", "t"]);
    assert!(started.elapsed() < Duration::from_secs(60), "{}", run.all());
    run
}

#[test]
fn proxyjump_chain_of_aliases_reaches_the_targets_through_each_hop_as_its_own_host() {
    // sshd logs forwarded connections at DEBUG1 only.
    let fleet = Fleet::with_config(&["outer", "inner", "web1", "web2"], "LogLevel DEBUG1");
    let (outer, inner, web1) = (fleet.host("outer"), fleet.host("inner"), fleet.host("web1"));
    let web2 = fleet.host("web2");
    ssh_config(
        &fleet,
        &format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  ProxyJump jump-outer,jump-inner\n\n\
             Host app2\n  HostName 127.0.0.1\n  Port {}\n  ProxyJump jump-outer,jump-inner\n\n\
             Host jump-outer\n  HostName 127.0.0.1\n  Port {}\n\n\
             Host jump-inner\n  HostName localhost\n  Port {}\n  HostKeyAlias inner-bastion\n\n{}",
            web1.port,
            web2.port,
            outer.port,
            inner.port,
            fleet_defaults(&fleet)
        ),
    );
    // The inner hop is known under its HostKeyAlias only.
    let inner_key = inner
        .known_hosts_line
        .split_once(' ')
        .unwrap()
        .1
        .to_string();
    let known = std::fs::read_to_string(&fleet.known_hosts).unwrap();
    std::fs::write(
        &fleet.known_hosts,
        format!("{known}inner-bastion {inner_key}\n"),
    )
    .unwrap();
    let file = deployfile(&fleet, &[("web1", "app"), ("web2", "app2")]);
    run_task(&fleet, &file).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);
    assert_eq!(reached(&fleet, "web2"), web2.port);
    // One connection per hop, shared by both targets.
    for hop in [outer, inner] {
        let log = hop.log();
        assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
    }
    assert!(
        outer
            .log()
            .contains(&format!("target localhost port {}", inner.port)),
        "the first hop did not forward to the second:\n{}",
        outer.log()
    );
    assert!(
        inner
            .log()
            .contains(&format!("target 127.0.0.1 port {}", web1.port)),
        "the second hop did not forward to the target:\n{}",
        inner.log()
    );
}

#[test]
fn proxycommand_ssh_w_carries_the_connection() {
    let fleet = Fleet::with_config(&["bastion", "web1"], "LogLevel DEBUG1");
    let (bastion, web1) = (fleet.host("bastion"), fleet.host("web1"));
    ssh_config(
        &fleet,
        &format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  ProxyCommand ssh -F /dev/null -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes -p {} -l {} -W %h:%p 127.0.0.1\n\n{}",
            web1.port,
            fleet.client_key.display(),
            fleet.known_hosts.display(),
            bastion.port,
            fleet.user,
            fleet_defaults(&fleet)
        ),
    );
    let file = deployfile(&fleet, &[("web1", "app")]);
    run_task(&fleet, &file).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);
    assert!(
        bastion
            .log()
            .contains(&format!("target 127.0.0.1 port {}", web1.port)),
        "{}",
        bastion.log()
    );
}

#[test]
fn first_value_wins_and_an_included_match_block_stays_apart() {
    let fleet = Fleet::start(2);
    let (right, wrong) = (&fleet.hosts[0], &fleet.hosts[1]);
    let included = fleet.dir.path().join("conf.d");
    std::fs::create_dir_all(&included).unwrap();
    std::fs::write(
        included.join("50-match.conf"),
        format!("Match exec false\n  Port {}\n", wrong.port),
    )
    .unwrap();
    ssh_config(
        &fleet,
        &format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  Port {}\n  Include {}/*.conf\n\n\
             Match host 127.0.0.1 user {}\n  IdentityFile {}\n\n\
             Host *\n  User {}\n  UserKnownHostsFile {}\n",
            right.port,
            wrong.port,
            included.display(),
            fleet.user,
            fleet.client_key.display(),
            fleet.user,
            fleet.known_hosts.display()
        ),
    );
    let file = deployfile(&fleet, &[("web1", "app")]);
    run_task(&fleet, &file).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), right.port);
}

/// An ssh-agent on a private socket holding `keys`; killed on drop.
struct Agent {
    socket: PathBuf,
    pid: String,
}

impl Agent {
    fn start(dir: &Path, keys: &[&Path]) -> Agent {
        let socket = dir.join("agent.sock");
        let text = run_ok(Command::new("ssh-agent").arg("-a").arg(&socket).arg("-s"));
        let pid = text
            .split(';')
            .find_map(|part| part.trim().strip_prefix("SSH_AGENT_PID="))
            .expect("agent pid")
            .to_string();
        for key in keys {
            run_ok(
                Command::new("ssh-add")
                    .arg(key)
                    .env("SSH_AUTH_SOCK", &socket),
            );
        }
        Agent { socket, pid }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

#[test]
fn identities_only_offers_the_named_key_before_an_agent_full_of_others() {
    let fleet = Fleet::with_config(&["web1"], "MaxAuthTries 3");
    let web1 = &fleet.hosts[0];
    let others: Vec<PathBuf> = (0..5)
        .map(|i| {
            let path = fleet.dir.path().join(format!("other{i}"));
            keygen(&path, "ed25519");
            path
        })
        .collect();
    let agent = Agent::start(
        fleet.dir.path(),
        &others.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    );
    let config = |identities_only: &str| {
        format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  {identities_only}\n\n{}",
            web1.port,
            fleet_defaults(&fleet)
        )
    };
    let file = deployfile(&fleet, &[("web1", "app")]);
    let args = ["-f", file.to_str().unwrap(), "run", "t"];

    ssh_config(&fleet, &config(""));
    let mut command = fleet.command(&args);
    command.env("SSH_AUTH_SOCK", &agent.socket);
    let without = Run::from(command.output().unwrap());
    without.expect_code(3);
    assert!(
        without
            .stderr
            .contains("closed the connection during authentication as"),
        "{}",
        without.stderr
    );
    assert!(
        without
            .stderr
            .contains("after 3 attempts (its MaxAuthTries?)"),
        "{}",
        without.stderr
    );
    assert_eq!(reached(&fleet, "web1"), 0);

    ssh_config(&fleet, &config("IdentitiesOnly yes"));
    let mut command = fleet.command(&args);
    command.env("SSH_AUTH_SOCK", &agent.socket);
    Run::from(command.output().unwrap()).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);
}

#[test]
fn several_identity_files_are_tried_in_order_and_a_pub_file_names_an_agent_key() {
    let fleet = Fleet::start(1);
    let web1 = &fleet.hosts[0];
    let stranger = fleet.dir.path().join("stranger");
    keygen(&stranger, "ed25519");
    ssh_config(
        &fleet,
        &format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  IdentityFile {}\n  IdentityFile {}\n\n{}",
            web1.port,
            stranger.display(),
            fleet.client_key.display(),
            fleet_defaults(&fleet)
        ),
    );
    let file = deployfile(&fleet, &[("web1", "app")]);
    run_task(&fleet, &file).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);
    let log = web1.log();
    let first = log
        .find("Failed publickey")
        .expect("the first key was offered");
    let second = log
        .find("Accepted publickey")
        .expect("the second key was accepted");
    assert!(first < second, "{log}");

    // Only the public half on disk (as with 1Password or a YubiKey): the agent signs.
    std::fs::remove_file(fleet.dir.path().join("out/web1.reached")).unwrap();
    let public_only = fleet.home.join(".ssh/deploy.pub");
    std::fs::copy(fleet.client_key.with_extension("pub"), &public_only).unwrap();
    let agent = Agent::start(fleet.dir.path(), &[&fleet.client_key]);
    ssh_config(
        &fleet,
        &format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  User {}\n  UserKnownHostsFile {}\n",
            web1.port,
            public_only.display(),
            fleet.user,
            fleet.known_hosts.display()
        ),
    );
    let mut command = fleet.command(&["-f", file.to_str().unwrap(), "run", "t"]);
    command.env("SSH_AUTH_SOCK", &agent.socket);
    Run::from(command.output().unwrap()).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);
}

#[test]
fn a_host_known_only_by_its_ecdsa_key_is_accepted() {
    let fleet = Fleet::with_config_for(&["web1"], |_, dir| {
        let key = dir.join("host_ecdsa");
        keygen(&key, "ecdsa");
        format!("HostKey {}\n", key.display())
    });
    let web1 = &fleet.hosts[0];
    let ecdsa = key_of(&web1.dir.join("host_ecdsa.pub"));
    // Known through GlobalKnownHostsFile, with a wildcard pattern; the user file is empty.
    let global = fleet.dir.path().join("global_known_hosts");
    std::fs::write(&global, format!("[127.0.0.?]:{} {ecdsa}\n", web1.port)).unwrap();
    std::fs::write(&fleet.known_hosts, "").unwrap();
    ssh_config(
        &fleet,
        &format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  GlobalKnownHostsFile {}\n\n{}",
            web1.port,
            global.display(),
            fleet_defaults(&fleet)
        ),
    );
    let file = deployfile(&fleet, &[("web1", "app")]);
    run_task(&fleet, &file).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);
}

/// A CA key and a host whose ECDSA host key it signed for `principal`, valid for `validity`
/// (`ssh-keygen -V`).
fn certified_fleet(principal: &'static str, validity: &'static str) -> (Fleet, PathBuf) {
    let ca_dir = tempfile::tempdir().unwrap().keep();
    let ca = ca_dir.join("host_ca");
    keygen(&ca, "ed25519");
    let ca_for_hosts = ca.clone();
    let fleet = Fleet::with_config_for(&["web1"], move |_, dir| {
        let key = dir.join("host_ecdsa");
        keygen(&key, "ecdsa");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-s"])
                .arg(&ca_for_hosts)
                .args(["-I", "web1", "-h", "-n", principal, "-V", validity])
                .arg(key.with_extension("pub")),
        );
        format!(
            "HostKey {}\nHostCertificate {}\n",
            key.display(),
            dir.join("host_ecdsa-cert.pub").display()
        )
    });
    (fleet, ca)
}

#[test]
fn a_host_certificate_from_a_known_cert_authority_is_accepted_and_a_wrong_one_refused() {
    for (principal, validity, refusal) in [
        ("127.0.0.1", "-5m:+1h", None),
        ("someone-else", "-5m:+1h", Some("someone-else")),
        (
            "127.0.0.1",
            "20200101:20200102",
            Some("it expired at 2020-01-02"),
        ),
    ] {
        let (fleet, ca) = certified_fleet(principal, validity);
        let web1 = &fleet.hosts[0];
        std::fs::write(
            &fleet.known_hosts,
            format!(
                "@cert-authority [127.0.0.1]:* {}\n",
                key_of(&ca.with_extension("pub"))
            ),
        )
        .unwrap();
        ssh_config(
            &fleet,
            &format!(
                "Host app\n  HostName 127.0.0.1\n  Port {}\n\n{}",
                web1.port,
                fleet_defaults(&fleet)
            ),
        );
        let file = deployfile(&fleet, &[("web1", "app")]);
        let run = run_task(&fleet, &file);
        match refusal {
            None => {
                run.expect_code(0);
                assert_eq!(reached(&fleet, "web1"), web1.port);
            }
            Some(why) => {
                run.expect_code(3);
                assert!(
                    run.stderr.contains("host certificate") && run.stderr.contains(why),
                    "{}",
                    run.stderr
                );
                assert_eq!(reached(&fleet, "web1"), 0);
            }
        }
    }
}

#[test]
fn a_revoked_host_key_is_refused_with_exit_3() {
    let fleet = Fleet::start(2);
    let (revoked, fine) = (&fleet.hosts[0], &fleet.hosts[1]);
    let known = std::fs::read_to_string(&fleet.known_hosts).unwrap();
    let revoked_key = revoked.known_hosts_line.split_once(' ').unwrap().1;
    std::fs::write(
        &fleet.known_hosts,
        format!("{known}@revoked * {revoked_key}\n"),
    )
    .unwrap();
    ssh_config(
        &fleet,
        &format!(
            "Host one\n  HostName 127.0.0.1\n  Port {}\nHost two\n  HostName 127.0.0.1\n  Port {}\n\n{}",
            revoked.port,
            fine.port,
            fleet_defaults(&fleet)
        ),
    );
    let file = deployfile(&fleet, &[("web1", "one"), ("web2", "two")]);
    let run = run_task(&fleet, &file);
    run.expect_code(3);
    assert!(
        run.stderr.contains("web1: REVOKED host key") && !run.stderr.contains("web2:"),
        "{}",
        run.stderr
    );
    // A host that cannot be reached stops the command before anything runs anywhere.
    assert_eq!(reached(&fleet, "web1"), 0);
    assert_eq!(reached(&fleet, "web2"), 0);
    // Without the @revoked line the same fleet is reached.
    std::fs::write(&fleet.known_hosts, known).unwrap();
    run_task(&fleet, &file).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), revoked.port);
    assert_eq!(reached(&fleet, "web2"), fine.port);
}

#[test]
fn user_certificates_authenticate_from_a_file_beside_the_key_certificatefile_and_the_agent() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("user_ca");
    keygen(&ca, "ed25519");
    let trusted = format!("TrustedUserCAKeys {}\n", ca.with_extension("pub").display());
    let fleet = Fleet::with_config(&["web1"], &trusted);
    let web1 = &fleet.hosts[0];
    // A key the server does not list in authorized_keys, certified by the CA.
    let key = fleet.home.join(".ssh/certified");
    keygen(&key, "ed25519");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca)
            .args(["-I", "deployr-test", "-n", &fleet.user, "-V", "-5m:+1h"])
            .arg(key.with_extension("pub")),
    );
    let certificate = fleet.home.join(".ssh/certified-cert.pub");
    let config = |extra: &str| {
        format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  IdentitiesOnly yes\n{extra}\n  User {}\n  UserKnownHostsFile {}\n",
            web1.port,
            fleet.user,
            fleet.known_hosts.display()
        )
    };
    let file = deployfile(&fleet, &[("web1", "app")]);
    let reset = || {
        let _ = std::fs::remove_file(fleet.dir.path().join("out/web1.reached"));
    };

    // Beside the key.
    ssh_config(
        &fleet,
        &config(&format!("  IdentityFile {}", key.display())),
    );
    run_task(&fleet, &file).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);

    // Named by CertificateFile, kept elsewhere.
    reset();
    let elsewhere = fleet.dir.path().join("my-cert.pub");
    std::fs::rename(&certificate, &elsewhere).unwrap();
    ssh_config(
        &fleet,
        &config(&format!(
            "  IdentityFile {}\n  CertificateFile {}",
            key.display(),
            elsewhere.display()
        )),
    );
    run_task(&fleet, &file).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);

    // Held by the agent only (ssh-add loads the certificate beside the key).
    reset();
    std::fs::rename(&elsewhere, &certificate).unwrap();
    let agent = Agent::start(fleet.dir.path(), &[&key]);
    std::fs::rename(&certificate, &elsewhere).unwrap();
    std::fs::remove_file(&key).unwrap();
    ssh_config(
        &fleet,
        &config(&format!("  IdentityFile {}.pub", key.display())),
    );
    let mut command = fleet.command(&["-f", file.to_str().unwrap(), "run", "t"]);
    command.env("SSH_AUTH_SOCK", &agent.socket);
    Run::from(command.output().unwrap()).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);
    let log = web1.log();
    let by_certificate = log
        .lines()
        .filter(|line| line.contains("Accepted publickey") && line.contains("ED25519-CERT"))
        .count();
    assert_eq!(by_certificate, 3, "{log}");
}

#[test]
fn tokens_match_all_and_forward_agent_from_ssh_config_are_honoured() {
    let fleet = Fleet::start(1);
    let web1 = &fleet.hosts[0];
    // The key and known_hosts are found only through %r, %h and %p.
    let key = fleet.home.join(format!(".ssh/{}_key", fleet.user));
    std::fs::copy(&fleet.client_key, &key).unwrap();
    std::fs::copy(
        fleet.client_key.with_extension("pub"),
        key.with_extension("pub"),
    )
    .unwrap();
    let known = fleet
        .home
        .join(format!(".ssh/known_127.0.0.1_{}", web1.port));
    std::fs::copy(&fleet.known_hosts, &known).unwrap();
    let agent = Agent::start(fleet.dir.path(), &[&fleet.client_key]);
    ssh_config(
        &fleet,
        &format!(
            "Host app\n  HostName 127.0.0.1\n\nMatch all\n  Port {}\n  User {}\n  IdentityFile ~/.ssh/%r_key\n  IdentitiesOnly yes\n  UserKnownHostsFile %d/.ssh/known_%h_%p\n  ForwardAgent yes\n",
            web1.port, fleet.user
        ),
    );
    let out = fleet.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let file = fleet.write(
        "deployfile.toml",
        &format!(
            "[app]\nname = \"shop\"\ndeploy_to = \"{}\"\n\n[hosts.web1]\naddress = \"app\"\n\n\
             [tasks.t]\nrun = \"echo $SSH_CONNECTION > {{{{deploy_to}}}}/web1.reached; ssh-add -l > {{{{deploy_to}}}}/web1.agent\"\n",
            out.display()
        ),
    );
    let mut command = fleet.command(&["-f", file.to_str().unwrap(), "run", "t"]);
    command.env("SSH_AUTH_SOCK", &agent.socket);
    Run::from(command.output().unwrap()).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);
    let fingerprint = run_ok(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(fleet.client_key.with_extension("pub")),
    );
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();
    let listed = std::fs::read_to_string(out.join("web1.agent")).unwrap_or_default();
    assert!(
        listed.contains(&fingerprint),
        "the forwarded agent does not list {fingerprint}: {listed:?}"
    );
}

#[test]
fn an_encrypted_key_is_unlocked_on_a_terminal_and_refused_without_one() {
    let fleet = Fleet::start(1);
    let web1 = &fleet.hosts[0];
    let key = fleet.home.join(".ssh/locked");
    run_ok(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "open sesame",
                "-C",
                "locked",
                "-f",
            ])
            .arg(&key),
    );
    let authorized = fleet.dir.path().join("authorized_keys");
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&std::fs::read_to_string(key.with_extension("pub")).unwrap());
    std::fs::write(&authorized, keys).unwrap();
    ssh_config(
        &fleet,
        &format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  UserKnownHostsFile {}\n",
            web1.port,
            fleet.user,
            key.display(),
            fleet.known_hosts.display()
        ),
    );
    let file = deployfile(&fleet, &[("web1", "app")]);

    // No terminal (cron): the clear error, nothing asked.
    let run = run_task(&fleet, &file);
    run.expect_code(3);
    assert!(
        run.stderr.contains("passphrase-protected"),
        "{}",
        run.stderr
    );
    assert_eq!(reached(&fleet, "web1"), 0);

    // On a terminal (script(1) gives deployr a pseudo-terminal): asked once, then used.
    let line = format!(
        "{} -f {} run t",
        env!("CARGO_BIN_EXE_deployr"),
        file.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(fleet.dir.path())
        .env("HOME", &fleet.home)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("script(1), from util-linux");
    let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = {
        let screen = screen.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buffer) {
                screen
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        })
    };
    // Typed only once asked, as a person would (typed-ahead input is echoed by the terminal
    // before anyone can turn echo off).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !screen.lock().unwrap().contains("Enter passphrase for key") {
        assert!(
            Instant::now() < deadline,
            "never asked: {}",
            screen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"open sesame\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{}", screen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    reader.join().unwrap();
    let screen = screen.lock().unwrap().clone();
    assert!(status.success(), "{screen}");
    assert!(
        !screen.contains("open sesame"),
        "the passphrase was echoed: {screen}"
    );
    assert_eq!(reached(&fleet, "web1"), web1.port);
}

#[test]
fn an_ssh_config_option_deployr_cannot_follow_stops_before_connecting_and_names_it() {
    let fleet = Fleet::start(1);
    let web1 = &fleet.hosts[0];
    ssh_config(
        &fleet,
        &format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  CanonicalizeHostname always\n\n{}",
            web1.port,
            fleet_defaults(&fleet)
        ),
    );
    let file = deployfile(&fleet, &[("web1", "app")]);
    let run = run_task(&fleet, &file);
    run.expect_code(2);
    let config = fleet.home.join(".ssh/config");
    assert!(
        run.stderr.contains(&format!("{} line 4", config.display()))
            && run.stderr.contains("canonicalizehostname always"),
        "{}",
        run.stderr
    );
    assert_eq!(reached(&fleet, "web1"), 0);
}

#[test]
fn a_key_type_outside_pubkey_accepted_algorithms_is_not_offered() {
    let fleet = Fleet::start(1);
    let web1 = &fleet.hosts[0];
    let config = |algorithms: &str| {
        format!(
            "Host app\n  HostName 127.0.0.1\n  Port {}\n  PubkeyAcceptedAlgorithms {algorithms}\n\n{}",
            web1.port,
            fleet_defaults(&fleet)
        )
    };
    let file = deployfile(&fleet, &[("web1", "app")]);
    ssh_config(&fleet, &config("ecdsa-sha2-nistp256,rsa-sha2-512"));
    let run = run_task(&fleet, &file);
    run.expect_code(3);
    assert!(
        run.stderr
            .contains("ssh-ed25519 is not in PubkeyAcceptedAlgorithms"),
        "{}",
        run.stderr
    );
    assert!(!web1.log().contains("publickey for"), "{}", web1.log());
    ssh_config(&fleet, &config("+ssh-ed25519"));
    run_task(&fleet, &file).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);
}

#[test]
fn address_family_limits_the_addresses_used() {
    let fleet = Fleet::start(1);
    let web1 = &fleet.hosts[0];
    let config = |family: &str| {
        format!(
            "Host app\n  HostName localhost\n  Port {}\n  AddressFamily {family}\n  HostKeyAlias web1\n\n{}",
            web1.port,
            fleet_defaults(&fleet)
        )
    };
    let key = web1.known_hosts_line.split_once(' ').unwrap().1;
    std::fs::write(&fleet.known_hosts, format!("web1 {key}\n")).unwrap();
    let file = deployfile(&fleet, &[("web1", "app")]);
    // This sshd listens on 127.0.0.1 only.
    ssh_config(&fleet, &config("inet6"));
    let run = run_task(&fleet, &file);
    run.expect_code(3);
    assert!(run.stderr.contains("AddressFamily"), "{}", run.stderr);
    assert_eq!(reached(&fleet, "web1"), 0);
    ssh_config(&fleet, &config("inet"));
    run_task(&fleet, &file).expect_code(0);
    assert_eq!(reached(&fleet, "web1"), web1.port);
}
