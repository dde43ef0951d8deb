//! Faults against real sshd hosts: whatever fails, every host ends on one release and no lock
//! is left behind by a deployr that could still release it.

use std::path::Path;
use std::time::Duration;

use crate::support::{
    Deploy, Fleet, Run, fast_again, finish, interrupt, release_of, sessions_with_programs, setup,
    setup_on, slow_on, slow_step, wait_for,
};

fn with_extra(extra: &str) -> Deploy {
    setup("", extra)
}

#[test]
fn concurrent_activates_one_wins_the_other_exits_4_naming_the_holder() {
    let d = with_extra(&slow_step("check", "gate"));
    d.deployr(&["deploy"]).expect_code(0);
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    let release = release_of(&d.prepared(0));
    std::fs::write(d.fleet.hosts[0].deploy_to.join("slow"), "").unwrap();
    let first = d.spawn(&["activate"]);
    wait_for(&d.fleet.hosts[0].deploy_to.join("in-gate"));
    let second = d.deployr(&["activate"]);
    second.expect_code(4);
    assert!(
        second.stderr.contains("deploy lock is held"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("command=activate"),
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains("pid="), "{}", second.stderr);
    assert!(!second.stderr.contains("token="), "{}", second.stderr);
    fast_again(&d);
    let first = finish(first, Duration::from_secs(60));
    first.expect_code(0);
    assert_eq!(d.currents(), vec![release; 3]);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}

#[test]
fn unlock_clears_the_stale_lock_of_a_killed_deployr() {
    let d = with_extra(&slow_step("prepare", "slow"));
    slow_on(&d, 0);
    let mut child = d.spawn(&["prepare"]);
    wait_for(&d.fleet.hosts[0].deploy_to.join("in-slow"));
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(d.locked(), ["web1", "web2", "web3"]);
    fast_again(&d);
    let blocked = d.deployr(&["deploy"]);
    blocked.expect_code(4);
    assert!(
        blocked.stderr.contains("command=prepare"),
        "{}",
        blocked.stderr
    );
    let unlock = d.deployr(&["unlock"]);
    unlock.expect_code(0);
    assert!(
        unlock
            .stdout
            .contains("web2: removed the deploy lock held by"),
        "{}",
        unlock.stdout
    );
    assert!(
        unlock.stdout.contains("command=prepare"),
        "{}",
        unlock.stdout
    );
    assert!(d.locked().is_empty());
    d.deployr(&["deploy"]).expect_code(0);
}

#[test]
fn lock_wait_waits_for_the_holder_then_runs() {
    let d = with_extra(
        &(slow_step("prepare", "slow")
            + "\n[tasks.backup]\nrun = \"touch {{deploy_to}}/backed-up\"\nlock = true\nroles = [\"db\"]\nonce = true\n"),
    );
    slow_on(&d, 0);
    let holder = d.spawn(&["prepare"]);
    wait_for(&d.fleet.hosts[0].deploy_to.join("in-slow"));
    let refused = d.deployr(&["run", "backup"]);
    refused.expect_code(4);
    assert!(!d.fleet.hosts[0].deploy_to.join("backed-up").exists());
    let waiter = d.spawn(&["run", "backup", "--lock-wait", "2m"]);
    std::thread::sleep(Duration::from_millis(2500));
    fast_again(&d);
    finish(holder, Duration::from_secs(60)).expect_code(0);
    let waited = finish(waiter, Duration::from_secs(60));
    waited.expect_code(0);
    assert!(
        waited.stdout.contains("waiting for the deploy lock"),
        "{}",
        waited.stdout
    );
    assert!(d.fleet.hosts[0].deploy_to.join("backed-up").exists());
    assert!(d.locked().is_empty());
}

#[test]
fn failing_service_check_stops_prepare_before_anything_changes() {
    let d = with_extra(
        "[[check]]\nname = \"database\"\nrun = \"test ! -e {{deploy_to}}/db-down\"\nroles = [\"db\"]\n",
    );
    d.deployr(&["deploy"]).expect_code(0);
    let releases = d.releases(1);
    std::fs::write(d.fleet.hosts[0].deploy_to.join("db-down"), "").unwrap();
    d.repo.commit("2");
    let run = d.deployr(&["prepare"]);
    run.expect_code(1);
    assert!(run.stderr.contains("`database` failed"), "{}", run.stderr);
    assert!(run.stderr.contains("web1"), "{}", run.stderr);
    assert_eq!(d.releases(1), releases, "no release was made");
    assert!(d.locked().is_empty());
}

#[test]
fn failing_health_check_on_one_host_rolls_every_host_back() {
    let d = with_extra(
        "[healthcheck]\nrun = \"test ! -e {{shared_path}}/unhealthy\"\nattempts = 2\ninterval = \"100ms\"\ntimeout = \"5s\"\n",
    );
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    std::fs::create_dir_all(d.fleet.hosts[1].deploy_to.join("shared")).unwrap();
    std::fs::write(d.fleet.hosts[1].deploy_to.join("shared/unhealthy"), "").unwrap();
    d.repo.commit("2");
    let run = d.deployr(&["deploy"]);
    run.expect_code(5);
    assert!(run.stderr.contains("web2"), "{}", run.stderr);
    assert!(run.stderr.contains("healthcheck"), "{}", run.stderr);
    assert!(
        run.stdout.contains("unhealthy after 2 attempts"),
        "{}",
        run.stdout
    );
    assert_eq!(d.currents(), before);
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
    for host in &d.fleet.hosts {
        let reloads: Vec<String> = host
            .read("shared/reloads")
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(
            reloads.last(),
            Some(&before[0]),
            "reload ran again on {}",
            host.name
        );
        assert!(
            host.read(".deployr/history")
                .contains("\"result\":\"rolled-back\""),
            "{}",
            host.name
        );
    }
    assert!(d.locked().is_empty());
}

#[test]
fn switch_failing_on_one_host_switches_every_host_back() {
    // web3's rename fails after `go`: its switch says so and exits, as a failed rename(2) does.
    let fleet = Fleet::with_config_for(&["web1", "web2", "web3"], |name, dir: &Path| {
        if name != "web3" {
            return String::new();
        }
        let perl = format!(
            "if [ -e {flag} ]; then\necho armed\nread go\necho 'cannot switch current: Permission denied' >&2\nexit 1\nfi\nexec /usr/bin/perl \"$@\"",
            flag = dir.join("srv/misbehave").display()
        );
        sessions_with_programs(dir, &[("perl", &perl)])
    });
    let d = setup_on(fleet, "", "");
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    std::fs::write(d.fleet.hosts[2].deploy_to.join("misbehave"), "").unwrap();
    let run = d.deployr(&["activate"]);
    run.expect_code(5);
    assert!(run.stderr.contains("web3"), "{}", run.stderr);
    assert!(run.stderr.contains("`switch`"), "{}", run.stderr);
    assert!(run.all().contains("cannot switch current"), "{}", run.all());
    assert_eq!(d.currents(), before);
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
    assert!(d.locked().is_empty());
}

#[test]
fn host_killed_during_prepare_fails_alone_and_current_stays() {
    let mut d = with_extra(&slow_step("prepare", "slow"));
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    slow_on(&d, 1);
    let child = d.spawn(&["prepare"]);
    wait_for(&d.fleet.hosts[1].deploy_to.join("in-slow"));
    d.fleet.hosts[1].kill();
    let run = finish(child, Duration::from_secs(60));
    run.expect_code(1);
    assert!(run.stderr.contains("web2"), "{}", run.stderr);
    assert!(run.stderr.contains("`slow`"), "{}", run.stderr);
    assert_eq!(d.currents(), before);
    for host in [0, 2] {
        let prepared = d.prepared(host);
        assert!(
            prepared.is_empty(),
            "host {host} finished the step but the run stopped"
        );
    }
    assert_eq!(
        d.locked(),
        ["web2"],
        "locks released on the hosts that can be reached"
    );
    d.fleet.hosts.remove(1);
}

#[test]
fn host_frozen_during_a_step_fails_in_bounded_time() {
    let d = with_extra(&slow_step("prepare", "slow"));
    let text = std::fs::read_to_string(&d.file).unwrap().replace(
        "connect_timeout = \"30s\"",
        "connect_timeout = \"30s\"\nkeepalive_interval = \"2s\"\nkeepalive_max = 3",
    );
    std::fs::write(&d.file, text).unwrap();
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    slow_on(&d, 2);
    let child = d.spawn(&["prepare"]);
    wait_for(&d.fleet.hosts[2].deploy_to.join("in-slow"));
    d.fleet.hosts[2].signal_all("STOP");
    let run = finish(child, Duration::from_secs(90));
    d.fleet.hosts[2].signal_all("CONT");
    run.expect_code(1);
    assert!(run.stderr.contains("web3"), "{}", run.stderr);
    assert_eq!(d.currents(), before);
}

#[test]
fn unreachable_host_at_activate_preflight_runs_nothing_anywhere() {
    let mut d = setup("", "");
    d.deployr(&["prepare"]).expect_code(0);
    d.fleet.hosts[2].kill();
    let run = d.deployr(&["activate"]);
    run.expect_code(3);
    assert!(run.stderr.contains("web3"), "{}", run.stderr);
    assert_eq!(d.migrations(), 0, "migrate did not run");
    assert_eq!(d.currents()[..2], ["", ""]);
    assert!(
        d.fleet.hosts[0]
            .deploy_to
            .join(".deployr/prepared")
            .exists()
    );
    d.fleet.hosts.remove(2);
}

#[test]
fn ctrl_c_during_prepare_stops_unlocks_and_leaves_current() {
    let d = with_extra(&slow_step("prepare", "slow"));
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    slow_on(&d, 0);
    let child = d.spawn(&["prepare"]);
    wait_for(&d.fleet.hosts[0].deploy_to.join("in-slow"));
    interrupt(&child);
    let run = finish(child, Duration::from_secs(60));
    run.expect_code(130);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert_eq!(d.currents(), before);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    assert!(d.prepared(0).is_empty());
}

#[test]
fn ctrl_c_during_activate_leaves_every_host_on_one_release() {
    let d = with_extra(&slow_step("activate", "warm"));
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    slow_on(&d, 1);
    let child = d.spawn(&["activate"]);
    wait_for(&d.fleet.hosts[1].deploy_to.join("in-warm"));
    interrupt(&child);
    fast_again(&d);
    let run = finish(child, Duration::from_secs(60));
    run.expect_code(5);
    let currents = d.currents();
    assert!(currents.iter().all(|c| *c == currents[0]), "{currents:?}");
    assert_eq!(
        currents, before,
        "switched back to the release that served before"
    );
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}

#[test]
fn secrets_never_appear_in_output_dry_run_or_errors() {
    let secret = "hunter2-s3cr3t";
    let d = with_extra(
        "[env]\nAPI_TOKEN = { from_env = \"DEPLOYR_TEST_SECRET\", secret = true }\n\n\
         [tasks.leak]\nrun = \"echo token is $API_TOKEN; echo $API_TOKEN >&2; exit 3\"\n",
    );
    let run_with_secret = |args: &[&str]| {
        let mut all = vec!["-f", d.file.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut command = d.fleet.command(&all);
        command.env("DEPLOYR_TEST_SECRET", secret);
        Run::from(command.output().unwrap())
    };
    let run = run_with_secret(&["run", "leak"]);
    run.expect_code(1);
    assert!(run.stdout.contains("token is ***"), "{}", run.stdout);
    assert!(!run.all().contains(secret), "{}", run.all());
    let dry = run_with_secret(&["--dry-run", "deploy"]);
    dry.expect_code(0);
    assert!(dry.stdout.contains("API_TOKEN=***"), "{}", dry.stdout);
    assert!(!dry.all().contains(secret));
    let missing = d.deployr(&["run", "leak"]);
    missing.expect_code(2);
    assert!(
        missing.stderr.contains("DEPLOYR_TEST_SECRET"),
        "{}",
        missing.stderr
    );
    assert!(missing.stderr.contains("not set"), "{}", missing.stderr);
}

#[test]
fn switch_not_ready_on_one_host_switches_no_host_at_all() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    // The journal cannot be written on web3, so its switch never gets ready.
    std::fs::create_dir_all(d.fleet.hosts[2].deploy_to.join(".deployr/activating.tmp")).unwrap();
    let run = d.deployr(&["activate"]);
    run.expect_code(1);
    assert!(run.stderr.contains("`switch`"), "{}", run.stderr);
    assert!(run.stderr.contains("web3"), "{}", run.stderr);
    assert!(
        run.all()
            .contains("not switched: the switch was called off"),
        "{}",
        run.all()
    );
    assert_eq!(d.currents(), before);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    for host in &d.fleet.hosts {
        let history = host.read(".deployr/history");
        assert!(
            !history.contains("rolled-back"),
            "{} was switched: {history}",
            host.name
        );
        assert!(
            !host.deploy_to.join(".deployr/activating").exists(),
            "{} keeps a journal of a switch that was called off",
            host.name
        );
    }
}
