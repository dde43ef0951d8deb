//! Every wait on a host has a deadline: a host that freezes (SIGSTOP on its sshd and sessions)
//! or stalls, at any phase, fails in bounded time, is cut off, and is named; the other hosts
//! end on one release with their locks released. Keepalives are turned off here (1 hour), so
//! only the deadlines can end these waits.

use std::path::Path;
use std::time::Duration;

use crate::support::{
    Deploy, Fleet, edit_deployfile, fast_again, finish, release_of, sessions_with_programs, setup,
    setup_on, slow_on, slow_step, wait_for,
};

/// deployr's own steps give up after 5 s, and no keepalive would notice a dead host sooner
/// than an hour. Set right before the faulty command, so a loaded machine cannot fail the
/// setup.
fn deadlines_only(d: &Deploy) {
    edit_deployfile(
        d,
        "connect_timeout = \"30s\"",
        "connect_timeout = \"30s\"\nhousekeeping_timeout = \"5s\"\nkeepalive_interval = \"1h\"",
    );
}

/// Three hosts; on web3, while `deploy_to/misbehave` exists, `perl` (which the switch runs)
/// is `script` instead.
fn with_switch_on_web3(script: &str, extra: &str) -> Deploy {
    let fleet = Fleet::with_config_for(&["web1", "web2", "web3"], |name, dir: &Path| {
        if name != "web3" {
            return String::new();
        }
        let perl = format!(
            "if [ -e {flag} ]; then\n{script}\nfi\nexec /usr/bin/perl \"$@\"",
            flag = dir.join("srv/misbehave").display()
        );
        sessions_with_programs(dir, &[("perl", &perl)])
    });
    setup_on(fleet, "", extra)
}

#[test]
fn a_host_frozen_during_a_step_with_a_timeout_is_cut_off_and_the_command_ends() {
    let d = setup(
        "",
        &slow_step("prepare", "slow")
            .replace("name = \"slow\"", "name = \"slow\"\ntimeout = \"2s\""),
    );
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    slow_on(&d, 2);
    deadlines_only(&d);
    let child = d.spawn(&["prepare"]);
    wait_for(&d.fleet.hosts[2].deploy_to.join("in-slow"));
    d.fleet.hosts[2].signal_all("STOP");
    // 2 s step timeout + 5 s for the host to answer after the stop; far less than this.
    let run = finish(child, Duration::from_secs(60));
    d.fleet.hosts[2].signal_all("CONT");
    run.expect_code(1);
    assert!(run.stderr.contains("web3"), "{}", run.stderr);
    assert!(run.stderr.contains("timed out after 2s"), "{}", run.stderr);
    assert!(
        run.all()
            .contains("could not release the deploy lock on web3"),
        "{}",
        run.all()
    );
    assert_eq!(d.currents(), before);
    assert_eq!(d.locked(), ["web3"], "only the frozen host keeps its lock");
    // Once it answers again, the lock of the deployr that has ended can be removed.
    d.deployr(&["unlock"]).expect_code(0);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}

#[test]
fn a_host_frozen_before_unlock_keeps_only_its_own_lock_and_the_command_ends() {
    let d = setup(
        "",
        &format!(
            "[tasks.work]\nlock = true\nrun = \"\"\"\n{}\"\"\"\n",
            "touch {{deploy_to}}/done-work\nif [ -e {{deploy_to}}/slow ]; then i=0; while [ -e {{deploy_to}}/slow ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done; fi\n"
        ),
    );
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    slow_on(&d, 0);
    deadlines_only(&d);
    let child = d.spawn(&["run", "work"]);
    // web3 has done the task; web1 is still at it. Freeze web3, then let web1 finish: the
    // next thing sent to web3 is the unlock.
    wait_for(&d.fleet.hosts[2].deploy_to.join("done-work"));
    wait_for(&d.fleet.hosts[0].deploy_to.join("done-work"));
    d.fleet.hosts[2].signal_all("STOP");
    fast_again(&d);
    let run = finish(child, Duration::from_secs(60));
    d.fleet.hosts[2].signal_all("CONT");
    run.expect_code(0);
    assert!(
        run.all()
            .contains("could not release the deploy lock on web3"),
        "{}",
        run.all()
    );
    assert_eq!(d.locked(), ["web3"]);
    assert_eq!(d.currents(), before);
    d.deployr(&["unlock"]).expect_code(0);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}

#[test]
fn a_host_frozen_while_the_switch_gets_ready_switches_no_host() {
    let d = with_switch_on_web3(
        "touch armed-here\nwhile [ ! -e frozen ]; do sleep 0.05; done\necho armed\nread go\nexit 1",
        "",
    );
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    let web3 = &d.fleet.hosts[2];
    std::fs::write(web3.deploy_to.join("misbehave"), "").unwrap();
    deadlines_only(&d);
    let child = d.spawn(&["activate"]);
    wait_for(&web3.deploy_to.join("armed-here"));
    web3.signal_all("STOP");
    std::fs::write(web3.deploy_to.join("frozen"), "").unwrap();
    let run = finish(child, Duration::from_secs(60));
    web3.signal_all("CONT");
    run.expect_code(1);
    assert!(run.stderr.contains("`switch`"), "{}", run.stderr);
    assert!(run.stderr.contains("web3"), "{}", run.stderr);
    assert_eq!(d.currents(), before, "no host switched");
    assert_eq!(d.locked(), ["web3"], "only the frozen host keeps its lock");
    assert_eq!(
        d.journaled(),
        ["web3"],
        "the switch that was called off took its journal back on every host that answers"
    );
}

#[test]
fn a_switch_that_stalls_on_one_host_is_bounded_and_every_host_goes_back() {
    // web3 reads `go` and then never renames: a hung disk.
    let d = with_switch_on_web3("echo armed\nread go\nexec sleep 30", "");
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    std::fs::write(d.fleet.hosts[2].deploy_to.join("misbehave"), "").unwrap();
    deadlines_only(&d);
    let child = d.spawn(&["activate"]);
    let run = finish(child, Duration::from_secs(60));
    run.expect_code(5);
    assert!(run.stderr.contains("web3"), "{}", run.stderr);
    assert!(run.stderr.contains("timed out after 5s"), "{}", run.stderr);
    assert_eq!(d.currents(), before);
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    assert!(d.journaled().is_empty(), "{:?}", d.journaled());
}

#[test]
fn a_host_frozen_right_after_go_is_named_with_the_command_that_makes_hosts_agree() {
    // web3 takes `go`, then freezes before it renames; when it thaws, it switches.
    let d = with_switch_on_web3(
        "echo armed\nread go\ntouch got-go\nwhile [ ! -e frozen ]; do sleep 0.05; done\nmv -T .deployr/switch/current current\necho switched\nread done\nexit 0",
        "",
    );
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    let release = release_of(&d.prepared(0));
    let web3 = &d.fleet.hosts[2];
    std::fs::write(web3.deploy_to.join("misbehave"), "").unwrap();
    deadlines_only(&d);
    let child = d.spawn(&["activate"]);
    wait_for(&web3.deploy_to.join("got-go"));
    web3.signal_all("STOP");
    std::fs::write(web3.deploy_to.join("frozen"), "").unwrap();
    let run = finish(child, Duration::from_secs(60));
    run.expect_code(7);
    assert!(run.stderr.contains("DIFFERENT RELEASES"), "{}", run.stderr);
    assert!(
        run.stderr.contains("switched back: web1, web2"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("web3: unknown: it may be on {release}")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr
            .contains("every host that had switched was switched back"),
        "{}",
        run.stderr
    );
    let fix = run
        .stderr
        .lines()
        .skip_while(|l| !l.starts_with("Make them agree with:"))
        .nth(1)
        .expect("the command that makes the hosts agree")
        .trim()
        .to_string();
    assert!(fix.contains("--hosts web3"), "{fix}");
    assert_eq!(&d.currents()[..2], &before[..2]);
    assert_eq!(d.locked(), ["web3"]);
    for host in [0, 1] {
        assert!(
            d.last_record(host) == ("activate".into(), "rolled-back".into()),
            "{:?}",
            d.history(host)
        );
    }
    assert!(
        !d.records(2).iter().any(|r| r["result"] == "rolled-back"),
        "web3 records no rollback that did not happen: {:?}",
        d.history(2)
    );
    // Thawed, web3 goes on and switches; the printed command brings it back.
    web3.signal_all("CONT");
    std::thread::sleep(Duration::from_millis(500));
    let deployr = Path::new(env!("CARGO_BIN_EXE_deployr")).parent().unwrap();
    let status = std::process::Command::new("sh")
        .args(["-c", &fix])
        .env(
            "PATH",
            format!("{}:{}", deployr.display(), std::env::var("PATH").unwrap()),
        )
        .env("HOME", &d.fleet.home)
        .env_remove("SSH_AUTH_SOCK")
        .current_dir(d.fleet.dir.path())
        .output()
        .expect("run the fix");
    assert!(
        status.status.success(),
        "`{fix}` failed:\n{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(d.currents(), before);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    assert!(d.journaled().is_empty(), "{:?}", d.journaled());
}
