//! What an OpenSSH user expects: `~/.ssh/config` aliases, ssh-agent, bastions.

use std::process::Command;

use crate::support::{Fleet, Run};

fn marker_task() -> &'static str {
    "[tasks.t]\nrun = \"echo ran on $(hostname) > {{deploy_to}}/t.ran\"\n"
}

#[test]
fn ssh_config_alias_supplies_hostname_port_user_key_and_known_hosts() {
    let fleet = Fleet::start(1);
    let host = &fleet.hosts[0];
    std::fs::write(
        fleet.home.join(".ssh/config"),
        format!(
            "Host other\n  Port 1\n\nHost app-*\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  UserKnownHostsFile {}\n\nMatch all\n  Port 2\n",
            host.port,
            fleet.user,
            fleet.client_key.display(),
            fleet.known_hosts.display()
        ),
    )
    .unwrap();
    let file = fleet.write(
        "alias.toml",
        &format!(
            "[app]\nname = \"shop\"\ndeploy_to = \"{}\"\n\n[hosts.web1]\naddress = \"app-web1\"\n\n{}",
            host.deploy_to.display(),
            marker_task()
        ),
    );
    fleet
        .deployr(&["-f", file.to_str().unwrap(), "run", "t"])
        .expect_code(0);
    assert!(host.read("t.ran").starts_with("ran on"));
}

/// An ssh-agent holding the fleet's key, on a private socket; killed on drop.
struct Agent {
    socket: std::path::PathBuf,
    pid: String,
}

impl Agent {
    fn start(fleet: &Fleet) -> Agent {
        let socket = fleet.dir.path().join("agent.sock");
        let output = Command::new("ssh-agent")
            .arg("-a")
            .arg(&socket)
            .arg("-s")
            .output()
            .expect("start ssh-agent");
        let text = String::from_utf8_lossy(&output.stdout);
        let pid = text
            .split(';')
            .find_map(|part| part.trim().strip_prefix("SSH_AGENT_PID="))
            .expect("agent pid")
            .to_string();
        let added = Command::new("ssh-add")
            .arg(&fleet.client_key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        assert!(
            added.status.success(),
            "{}",
            String::from_utf8_lossy(&added.stderr)
        );
        Agent { socket, pid }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

#[test]
fn authenticates_with_the_ssh_agent_when_no_key_is_named() {
    let fleet = Fleet::start(2);
    let agent = Agent::start(&fleet);
    let file = fleet.deployfile(&[], marker_task());
    let text = std::fs::read_to_string(&file).unwrap().replace(
        &format!("identity_file = \"{}\"\n", fleet.client_key.display()),
        "",
    );
    let file = fleet.write("agent.toml", &text);
    let args = ["-f", file.to_str().unwrap(), "run", "t"];
    let without = fleet.deployr(&args);
    without.expect_code(3);
    assert!(
        without.stderr.contains("authentication"),
        "{}",
        without.stderr
    );
    let mut command = fleet.command(&args);
    command.env("SSH_AUTH_SOCK", &agent.socket);
    Run::from(command.output().unwrap()).expect_code(0);
    for host in &fleet.hosts {
        assert!(host.read("t.ran").starts_with("ran on"), "{}", host.name);
    }
}

#[test]
fn reaches_hosts_through_one_shared_bastion_connection() {
    // sshd logs forwarded connections at DEBUG1 only; its debug lines would also reach the
    // clients' stderr, which is harmless here.
    let fleet = Fleet::with_config(&["bastion", "web1", "web2"], "LogLevel DEBUG1");
    let bastion = fleet.host("bastion");
    let mut text = format!(
        "[app]\nname = \"shop\"\ndeploy_to = \"/unused\"\n\n{}jump = \"{}@127.0.0.1:{}\"\n\n{}",
        fleet.ssh_section(),
        fleet.user,
        bastion.port,
        marker_task()
    );
    for name in ["web1", "web2"] {
        let target = fleet.host(name);
        text.push_str(&format!(
            "\n[hosts.{name}]\naddress = \"127.0.0.1\"\nport = {}\ndeploy_to = \"{}\"\n",
            target.port,
            target.deploy_to.display()
        ));
    }
    let file = fleet.write("bastion.toml", &text);
    fleet
        .deployr(&["-f", file.to_str().unwrap(), "run", "t"])
        .expect_code(0);
    let log = bastion.log();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
    for name in ["web1", "web2"] {
        let target = fleet.host(name);
        assert!(target.read("t.ran").starts_with("ran on"), "{name}");
        assert!(
            log.contains(&format!("target 127.0.0.1 port {}", target.port)),
            "the bastion's log shows no connection forwarded to {name}:\n{log}"
        );
    }
}
