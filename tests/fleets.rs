//! Large fleets: `--canary` switches a first wave and checks it before any other host
//! switches; `--allow-unreachable` leaves dead hosts out (exit 6) and `catch-up` brings them
//! level later; connections dropped by a busy sshd are tried again.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{
    Deploy, Fleet, edit_deployfile, fast_again, finish, setup_on, slow_on, slow_step, wait_for,
};

/// Five hosts (web1 has `db`) with a health check that fails where an `unhealthy` file is.
fn five() -> Deploy {
    setup_on(
        Fleet::start(5),
        "",
        "[healthcheck]\nrun = \"test ! -e {{deploy_to}}/unhealthy\"\nattempts = 1\ninterval = \"1s\"\ntimeout = \"5s\"\n",
    )
}

fn touch(d: &Deploy, host: usize, name: &str) {
    std::fs::write(d.fleet.hosts[host].deploy_to.join(name), "").unwrap();
}

/// Runs deployr in the background and, until it ends, reads every host's `current` every
/// millisecond or so; returns the run and the hosts whose `current` was ever seen to change.
fn watched(d: &Deploy, args: &[&str], limit: Duration) -> (crate::support::Run, BTreeSet<String>) {
    let before = d.currents();
    let mut child = d.spawn(args);
    let started = Instant::now();
    let mut changed = BTreeSet::new();
    while child.try_wait().unwrap().is_none() && started.elapsed() < limit {
        for (i, current) in d.currents().into_iter().enumerate() {
            if current != before[i] {
                changed.insert(d.fleet.hosts[i].name.clone());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (finish(child, limit), changed)
}

fn reloads(d: &Deploy, host: usize) -> usize {
    d.fleet.hosts[host].read("shared/reloads").lines().count()
}

#[test]
fn a_canary_that_fails_its_health_check_is_the_only_host_ever_switched_and_goes_back() {
    let d = five();
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    touch(&d, 0, "unhealthy");
    let (run, changed) = watched(&d, &["deploy", "--canary", "1"], Duration::from_secs(120));
    run.expect_code(5);
    assert!(run.stderr.contains("healthcheck"), "{}", run.stderr);
    assert!(
        changed.iter().all(|host| host == "web1"),
        "only the canary may ever change `current`, but these did: {changed:?}"
    );
    assert_eq!(
        d.currents(),
        before,
        "every host ends on the previous release"
    );
    assert_eq!(d.last_record(0).1, "rolled-back");
    for host in 1..5 {
        assert!(
            !d.records(host).iter().any(|r| r["result"] == "rolled-back"),
            "{} was never switched, so it has nothing to roll back",
            d.fleet.hosts[host].name
        );
        assert_eq!(reloads(&d, host), 1, "no after-switch step ran on {host}");
    }
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    assert!(d.journaled().is_empty(), "{:?}", d.journaled());
}

#[test]
fn a_second_wave_host_that_fails_its_health_check_takes_every_host_back() {
    let d = five();
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    touch(&d, 3, "unhealthy");
    let child = d.spawn(&["deploy", "--canary", "2"]);
    let run = finish(child, Duration::from_secs(120));
    run.expect_code(5);
    assert!(run.stderr.contains("web4"), "{}", run.stderr);
    assert_eq!(
        d.currents(),
        before,
        "every host ends on the previous release"
    );
    for host in 0..5 {
        assert!(
            d.last_record(host).1 == "rolled-back",
            "{} switched and went back: {:?}",
            d.fleet.hosts[host].name,
            d.history(host)
        );
    }
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    assert!(d.journaled().is_empty(), "{:?}", d.journaled());
}

#[test]
fn a_healthy_canary_deploy_switches_the_canary_first_then_every_other_host() {
    let d = five();
    d.deployr(&["deploy"]).expect_code(0);
    d.repo.commit("2");
    let child = d.spawn(&["deploy", "--canary", "1", "--json"]);
    let run = finish(child, Duration::from_secs(120));
    run.expect_code(0);
    assert_eq!(d.served_versions(), vec!["2"; 5]);
    let release = d.currents()[0].clone();
    assert!(
        d.currents().iter().all(|c| *c == release),
        "{:?}",
        d.currents()
    );
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let position = |event: &str, step: &str, host: &str| {
        events
            .iter()
            .position(|e| e["event"] == event && e["step"] == step && e["host"] == host)
            .unwrap_or_else(|| panic!("no {event} of {step} on {host}:\n{}", run.stdout))
    };
    let canary_checked = position("step_finished", "healthcheck", "web1");
    assert_eq!(events[canary_checked]["wave"], "canary");
    for host in ["web2", "web3", "web4", "web5"] {
        let switched = position("step_started", "switch", host);
        assert_eq!(events[switched]["wave"], "rest", "{host}");
        assert!(
            canary_checked < switched,
            "{host} began to switch before the canary's health check passed"
        );
    }
    let activated: Vec<(String, u64)> = events
        .iter()
        .filter(|e| e["event"] == "activated")
        .map(|e| {
            (
                e["wave"].as_str().unwrap().to_string(),
                e["hosts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(activated, [("canary".into(), 1), ("rest".into(), 4)]);
    assert!(run.stderr.contains("(canary wave)"), "{}", run.stderr);
    assert!(run.stderr.contains("(second wave)"), "{}", run.stderr);
    assert_eq!(d.migrations(), 2, "migrate ran once per deploy");
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    assert!(d.journaled().is_empty(), "{:?}", d.journaled());
}

#[test]
fn a_canary_that_leaves_no_second_wave_is_refused_before_connecting() {
    let d = five();
    let started = Instant::now();
    let run = d.deployr(&["deploy", "--canary", "100%"]);
    run.expect_code(2);
    assert!(run.stderr.contains("second wave"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(d.currents(), vec![""; 5]);
    // Four canaries of five hosts leave a second wave, unless one host is left out.
    let run = d.deployr(&["deploy", "--canary", "4", "--allow-unreachable", "1"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("left if --allow-unreachable leaves out 1"),
        "{}",
        run.stderr
    );
    assert_eq!(d.currents(), vec![""; 5]);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}

#[test]
fn a_dead_host_stops_the_deploy_unless_allowed_and_catch_up_brings_it_level_later() {
    let mut d = five();
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    d.fleet.hosts[4].kill();

    let started = Instant::now();
    let run = d.deployr(&["deploy"]);
    run.expect_code(3);
    assert!(run.stderr.contains("web5"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(d.currents(), before, "nothing changed anywhere");
    for (host, release) in before.iter().enumerate().take(4) {
        assert_eq!(
            d.releases(host),
            std::slice::from_ref(release),
            "nothing prepared"
        );
    }
    assert!(d.locked().is_empty(), "{:?}", d.locked());

    let started = Instant::now();
    let run = d.deployr(&["deploy", "--allow-unreachable", "1"]);
    run.expect_code(6);
    assert!(started.elapsed() < Duration::from_secs(120));
    assert!(
        run.all()
            .contains("warning: leaving out 1 unreachable host"),
        "{}",
        run.all()
    );
    assert!(run.stderr.contains("LEFT OUT"), "{}", run.stderr);
    assert!(run.stderr.contains("web5"), "{}", run.stderr);
    let after = d.currents();
    assert_eq!(&after[..4], vec![after[0].clone(); 4].as_slice());
    assert_ne!(after[0], before[0]);
    assert_eq!(after[4], before[4], "web5 was left out");
    assert_eq!(d.served_versions()[..4], ["2", "2", "2", "2"]);
    assert!(d.locked().is_empty(), "{:?}", d.locked());

    d.fleet.hosts[4].restart();
    let status = d.deployr(&["status"]);
    status.expect_code(0);
    assert!(status.all().contains("drift"), "{}", status.all());
    assert!(status.all().contains("catch-up"), "{}", status.all());

    // A dry run reads no host: it shows the lock and survey it would take on every host, and
    // changes nothing (its stand-in hosts all serve one release, so it has nothing to catch up).
    let dry = d.deployr(&["catch-up", "--dry-run"]);
    dry.expect_code(0);
    for host in ["web1", "web5"] {
        assert!(
            dry.stdout.contains(&format!("{host} lock $ ")),
            "{}",
            dry.all()
        );
    }
    assert_eq!(d.currents()[4], before[4], "a dry run changes nothing");

    let history: Vec<Vec<String>> = (0..4).map(|h| d.history(h)).collect();
    let reloaded: Vec<usize> = (0..4).map(|h| reloads(&d, h)).collect();
    let migrations = d.migrations();
    let started = Instant::now();
    let run = d.deployr(&["catch-up"]);
    run.expect_code(0);
    assert!(started.elapsed() < Duration::from_secs(120));
    assert_eq!(d.currents(), vec![after[0].clone(); 5]);
    assert_eq!(d.served_versions(), vec!["2"; 5]);
    for host in 0..4 {
        assert_eq!(
            d.history(host),
            history[host],
            "catch-up touched web{}",
            host + 1
        );
        assert_eq!(
            reloads(&d, host),
            reloaded[host],
            "catch-up reloaded web{}",
            host + 1
        );
    }
    assert_eq!(reloads(&d, 4), 2, "web5's after-switch step ran");
    assert_eq!(d.migrations(), migrations, "catch-up does not migrate");
    assert!(d.history(4).last().unwrap().contains(&after[0]));
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    let status = d.deployr(&["status"]);
    assert!(!status.all().contains("drift"), "{}", status.all());
    let again = d.deployr(&["catch-up"]);
    again.expect_code(0);
    assert!(
        again.all().contains("nothing to catch up"),
        "{}",
        again.all()
    );
}

/// While catch-up brings a drifted host level, the hosts already on the release are locked:
/// a deploy to them waits its turn (exit 4, naming catch-up) instead of moving them to another
/// release under catch-up's feet. Catch-up then ends with every host on one release, no lock
/// left, and no record on the hosts it did not change.
#[test]
fn catch_up_holds_the_hosts_on_the_release_so_nothing_moves_them_meanwhile() {
    let mut d = setup_on(Fleet::start(3), "", &slow_step("prepare", "warm"));
    d.deployr(&["deploy"]).expect_code(0);
    d.fleet.hosts[2].kill();
    d.repo.commit("2");
    d.deployr(&["deploy", "--allow-unreachable", "1"])
        .expect_code(6);
    d.fleet.hosts[2].restart();
    let level = d.currents()[0].clone();
    let history: Vec<Vec<String>> = (0..2).map(|h| d.history(h)).collect();

    slow_on(&d, 2);
    let catching_up = d.spawn(&["catch-up"]);
    wait_for(&d.fleet.hosts[2].deploy_to.join("in-warm"));
    d.repo.commit("3");
    let started = Instant::now();
    let run = d.deployr(&["deploy", "--hosts", "web1,web2"]);
    run.expect_code(4);
    assert!(run.stderr.contains("catch-up"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(60));
    fast_again(&d);
    let run = finish(catching_up, Duration::from_secs(120));
    run.expect_code(0);

    assert_eq!(d.currents(), vec![level; 3]);
    assert_eq!(d.served_versions(), vec!["2"; 3]);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    assert!(d.journaled().is_empty(), "{:?}", d.journaled());
    for (host, before) in history.iter().enumerate() {
        assert_eq!(&d.history(host), before, "web{} got a record", host + 1);
    }
}

/// `--allow-unreachable` leaves out dead hosts, but never every host: with the whole fleet
/// down the command fails to connect (exit 3), runs nothing and panics nowhere. With some
/// hosts up, the hooks see the exit code deployr ends with (6), not 0.
#[test]
fn allow_unreachable_never_leaves_out_every_host_and_hooks_see_exit_6() {
    let mut d = setup_on(
        Fleet::start(3),
        "",
        "[[on_success]]\nname = \"chat\"\nrun = \"echo {{exit_code}} {{result}} >> hooks.log\"\n",
    );
    let log = d.fleet.dir.path().join("hooks.log");
    d.fleet.hosts[2].kill();
    let run = d.deployr(&["deploy", "--allow-unreachable", "1"]);
    run.expect_code(6);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "6 ok\n");
    let after = d.currents();
    assert!(!after[0].is_empty() && after[1] == after[0], "{after:?}");
    assert_eq!(after[2], "", "web3 was left out");

    d.repo.commit("2");
    d.fleet.hosts[0].kill();
    d.fleet.hosts[1].kill();
    for allowance in ["3", "100%"] {
        let started = Instant::now();
        let run = d.deployr(&["deploy", "--allow-unreachable", allowance]);
        run.expect_code(3);
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        for host in ["web1", "web2", "web3"] {
            assert!(run.stderr.contains(host), "{}", run.stderr);
        }
    }
    assert_eq!(d.currents(), after, "nothing changed anywhere");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "6 ok\n",
        "no hook ran for a command that reached no host"
    );
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}

#[test]
fn a_changed_host_key_is_never_left_out_as_unreachable() {
    let d = five();
    let known = std::fs::read_to_string(&d.fleet.known_hosts).unwrap();
    let web5 = &d.fleet.hosts[4].known_hosts_line;
    let other_key = d.fleet.hosts[0].known_hosts_line.split_once(' ').unwrap().1;
    let port = web5.split_once(' ').unwrap().0;
    std::fs::write(
        &d.fleet.known_hosts,
        known.replace(web5, &format!("{port} {other_key}")),
    )
    .unwrap();
    let run = d.deployr(&["deploy", "--allow-unreachable", "2"]);
    run.expect_code(3);
    assert!(run.stderr.contains("HOST KEY CHANGED"), "{}", run.stderr);
    assert_eq!(d.currents(), vec![""; 5], "nothing ran anywhere");
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}

/// A TCP proxy in front of `port` that closes every odd-numbered connection at once (the first,
/// the third, ...), as an sshd shedding load with MaxStartups does; returns its port and the
/// count of connections it accepted.
fn dropping_proxy(port: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            if count.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                drop(client);
                continue;
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buffer) {
                        if n == 0 || to.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    (proxy, accepted)
}

/// The fleet's deploy with web2 reached through a proxy that drops every second connection.
fn behind_dropping_proxy() -> (Deploy, Arc<AtomicUsize>) {
    let d = setup_on(
        Fleet::start(3),
        "",
        "[tasks.hello]\nrun = \"echo hello > {{deploy_to}}/hello\"\n",
    );
    let web2 = &d.fleet.hosts[1];
    let (proxy, accepted) = dropping_proxy(web2.port);
    edit_deployfile(
        &d,
        &format!("port = {}", web2.port),
        &format!("port = {proxy}"),
    );
    let key = web2.known_hosts_line.split_once(' ').unwrap().1;
    let mut known = std::fs::read_to_string(&d.fleet.known_hosts).unwrap();
    known.push_str(&format!("[127.0.0.1]:{proxy} {key}\n"));
    std::fs::write(&d.fleet.known_hosts, known).unwrap();
    (d, accepted)
}

#[test]
fn a_connection_dropped_before_authentication_is_tried_again_and_the_run_succeeds() {
    let (d, accepted) = behind_dropping_proxy();
    let started = Instant::now();
    let run = d.deployr(&["run", "hello"]);
    run.expect_code(0);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one drop, one retry");
    assert!(
        run.all().contains("web2: connected at attempt 2"),
        "{}",
        run.all()
    );
    for host in &d.fleet.hosts {
        assert_eq!(host.read("hello").trim(), "hello", "{}", host.name);
    }
}

#[test]
fn with_one_connect_attempt_a_dropped_connection_fails_the_run_before_anything_ran() {
    let (d, accepted) = behind_dropping_proxy();
    edit_deployfile(&d, "[ssh]\n", "[ssh]\nconnect_attempts = 1\n");
    let started = Instant::now();
    let run = d.deployr(&["run", "hello"]);
    run.expect_code(3);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(run.stderr.contains("web2"), "{}", run.stderr);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    for host in &d.fleet.hosts {
        assert!(!host.deploy_to.join("hello").exists(), "{}", host.name);
    }
}
