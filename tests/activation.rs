//! The activation's promise when things go wrong around the switch: going back is per host and
//! tells the truth; a deployr stopped between the switch and the end (by a signal, or killed)
//! leaves a journal that `activate` finishes and `rollback` undoes; a release that is missing
//! or was not prepared whole is refused before any step runs; exit codes say what happened.

use std::time::Duration;

use crate::support::{
    Deploy, fast_again, finish, release_of, setup, signal, slow_on, slow_step, wait_for,
};

/// A health check that fails on hosts with an `unhealthy` file, and an after-switch step that
/// deletes the previous release on hosts with a `sabotage` file, so they cannot go back.
fn with_traps() -> Deploy {
    setup(
        "",
        "[[activate]]\nname = \"sabotage\"\nrun = \"if [ -e {{deploy_to}}/sabotage ]; then rm -rf {{deploy_to}}/releases/{{previous_release}}; fi\"\n\n\
         [healthcheck]\nrun = \"test ! -e {{deploy_to}}/unhealthy\"\nattempts = 1\ninterval = \"1s\"\ntimeout = \"5s\"\n",
    )
}

fn touch(d: &Deploy, host: usize, name: &str) {
    std::fs::write(d.fleet.hosts[host].deploy_to.join(name), "").unwrap();
}

#[test]
fn a_host_that_cannot_go_back_is_named_the_others_go_back_and_the_exit_is_7() {
    let d = with_traps();
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    touch(&d, 0, "unhealthy");
    touch(&d, 1, "sabotage");
    let child = d.spawn(&["deploy"]);
    let run = finish(child, Duration::from_secs(60));
    run.expect_code(7);
    let release = d.currents()[1].clone();
    assert_ne!(release, before[1]);
    assert!(run.stderr.contains("DIFFERENT RELEASES"), "{}", run.stderr);
    assert!(
        run.stderr.contains("switched back: web1, web3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("web2: still on {release}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("rollback --hosts web2"),
        "{}",
        run.stderr
    );
    let currents = d.currents();
    assert_eq!(currents[0], before[0]);
    assert_eq!(currents[2], before[2]);
    assert_eq!(
        currents[1], release,
        "web2 really is still on the new release"
    );
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    for host in [0, 2] {
        assert_eq!(d.last_record(host), ("deploy".into(), "rolled-back".into()));
    }
    assert!(
        !d.records(1).iter().any(|r| r["result"] == "rolled-back"),
        "no rollback is recorded where none happened: {:?}",
        d.history(1)
    );
    assert_eq!(d.journaled(), ["web2"], "web2's activation is still open");
    let status = d.deployr(&["status"]);
    status.expect_code(0);
    assert!(status.all().contains("drift"), "{}", status.all());
    assert!(status.all().contains("never finished"), "{}", status.all());
}

#[test]
fn sigterm_and_sighup_before_the_switch_stop_release_the_lock_and_change_nothing() {
    let d = setup("", &slow_step("prepare", "slow"));
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    for (name, code) in [("TERM", 143), ("HUP", 129), ("INT", 130)] {
        d.repo.commit(name);
        slow_on(&d, 1);
        let _ = std::fs::remove_file(d.fleet.hosts[1].deploy_to.join("in-slow"));
        let child = d.spawn(&["prepare"]);
        wait_for(&d.fleet.hosts[1].deploy_to.join("in-slow"));
        signal(&child, name);
        let run = finish(child, Duration::from_secs(60));
        fast_again(&d);
        run.expect_code(code);
        assert!(run.stderr.contains(&format!("SIG{name}")), "{}", run.stderr);
        assert_eq!(d.currents(), before, "SIG{name}");
        assert!(d.locked().is_empty(), "SIG{name}: {:?}", d.locked());
        assert!(d.prepared(1).is_empty(), "SIG{name}");
    }
}

#[test]
fn sigterm_and_sighup_after_the_switch_take_every_host_back() {
    let d = setup("", &slow_step("activate", "warm"));
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    for name in ["TERM", "HUP"] {
        d.repo.commit(name);
        d.deployr(&["prepare"]).expect_code(0);
        slow_on(&d, 2);
        let _ = std::fs::remove_file(d.fleet.hosts[2].deploy_to.join("in-warm"));
        let child = d.spawn(&["activate"]);
        wait_for(&d.fleet.hosts[2].deploy_to.join("in-warm"));
        signal(&child, name);
        fast_again(&d);
        let run = finish(child, Duration::from_secs(60));
        run.expect_code(5);
        assert_eq!(d.currents(), before, "SIG{name}");
        assert!(d.locked().is_empty(), "SIG{name}: {:?}", d.locked());
        assert!(d.journaled().is_empty(), "SIG{name}: {:?}", d.journaled());
    }
}

/// Deploys 1, then kills deployr -9 while the after-switch step of the deploy of 2 runs, and
/// removes the dead deployr's lock. Returns the release ids (before, after).
fn killed_between_switch_and_finish(d: &Deploy) -> (String, String) {
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents()[0].clone();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    let release = release_of(&d.prepared(0));
    slow_on(d, 0);
    let child = d.spawn(&["activate"]);
    wait_for(&d.fleet.hosts[0].deploy_to.join("in-warm"));
    signal(&child, "KILL");
    let _ = finish(child, Duration::from_secs(10));
    fast_again(d);
    assert_eq!(
        d.currents(),
        vec![release.clone(); 3],
        "every host switched"
    );
    assert_eq!(d.journaled().len(), 3);
    d.deployr(&["unlock"]).expect_code(0);
    (before, release)
}

#[test]
fn activate_finishes_an_activation_whose_deployr_was_killed_after_the_switch() {
    let d = setup("", &slow_step("activate", "warm"));
    let (before, release) = killed_between_switch_and_finish(&d);
    let status = d.deployr(&["status"]);
    assert!(status.all().contains("never finished"), "{}", status.all());
    let reloads_before = d.fleet.hosts[1].read("shared/reloads").lines().count();
    let run = d.deployr(&["activate"]);
    run.expect_code(0);
    assert!(
        run.all()
            .contains(&format!("finishing the activation of {release}")),
        "{}",
        run.all()
    );
    assert_eq!(d.currents(), vec![release.clone(); 3]);
    assert_eq!(
        d.fleet.hosts[1].read("shared/reloads").lines().count(),
        reloads_before + 1,
        "the after-switch steps ran"
    );
    assert_eq!(d.migrations(), 2, "migrate is not run again");
    for host in 0..3 {
        let last = d.records(host).pop().unwrap();
        assert_eq!(
            (
                &last["command"],
                &last["release"],
                &last["previous"],
                &last["result"]
            ),
            (
                &"activate".into(),
                &release.as_str().into(),
                &before.as_str().into(),
                &"ok".into()
            ),
            "{last}"
        );
    }
    assert!(d.journaled().is_empty());
    assert!(d.locked().is_empty());
}

#[test]
fn rollback_undoes_an_activation_whose_deployr_was_killed_after_the_switch() {
    let d = setup("", &slow_step("activate", "warm"));
    let (before, release) = killed_between_switch_and_finish(&d);
    let run = d.deployr(&["rollback"]);
    run.expect_code(0);
    assert_eq!(d.currents(), vec![before.clone(); 3]);
    for host in 0..3 {
        let last = d.records(host).pop().unwrap();
        assert_eq!(
            (
                &last["command"],
                &last["release"],
                &last["previous"],
                &last["result"]
            ),
            (
                &"rollback".into(),
                &before.as_str().into(),
                &release.as_str().into(),
                &"ok".into()
            ),
            "{last}"
        );
    }
    assert!(d.journaled().is_empty());
    assert!(d.locked().is_empty());
}

#[test]
fn a_prepared_release_deleted_on_one_host_is_refused_before_migrate() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    let release = release_of(&d.prepared(2));
    std::fs::remove_dir_all(d.fleet.hosts[2].deploy_to.join("releases").join(&release)).unwrap();
    let migrations = d.migrations();
    let run = d.deployr(&["activate"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains(&format!("release {release} is not on web3")),
        "{}",
        run.stderr
    );
    assert_eq!(d.migrations(), migrations, "migrate did not run");
    assert_eq!(d.currents(), before);
    assert!(d.locked().is_empty());
}

#[test]
fn a_release_whose_prepare_failed_somewhere_is_never_made_live() {
    let d = setup(
        "",
        "[[prepare]]\nname = \"flaky\"\nrun = \"test ! -e {{deploy_to}}/fail\"\n",
    );
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    let good = release_of(&d.prepared(0));
    d.repo.commit("3");
    touch(&d, 1, "fail");
    d.deployr(&["prepare"]).expect_code(1);
    let _ = std::fs::remove_file(d.fleet.hosts[1].deploy_to.join("fail"));
    let failed = d.releases(1).last().cloned().unwrap();
    assert_ne!(failed, good);
    assert!(
        d.prepared(1).is_empty(),
        "the failed prepare cleared web2's old marker"
    );
    // Plain activate: the newest prepare failed, so the older prepared release does not
    // slip in.
    let run = d.deployr(&["activate"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("no selected host has a prepared release"),
        "{}",
        run.stderr
    );
    for args in [["activate", "--release"], ["rollback", "--to"]] {
        let run = d.deployr(&[args[0], args[1], &failed]);
        run.expect_code(1);
        assert!(
            run.stderr
                .contains(&format!("the prepare of {failed} did not succeed on")),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("web2"), "{}", run.stderr);
    }
    assert_eq!(d.currents(), before);
    let releases = d.deployr(&["releases"]);
    assert!(
        releases
            .all()
            .lines()
            .any(|l| l.contains(&format!("web2 {failed}")) && l.contains("incomplete")),
        "{}",
        releases.all()
    );
    // The release prepared whole everywhere can still be chosen.
    d.deployr(&["activate", "--release", &good]).expect_code(0);
    assert_eq!(d.currents(), vec![good; 3]);
}

#[test]
fn a_history_that_cannot_be_written_after_a_good_switch_says_the_release_is_live() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    let release = release_of(&d.prepared(0));
    let history = d.fleet.hosts[1].deploy_to.join(".deployr/history");
    std::fs::remove_file(&history).unwrap();
    std::fs::create_dir(&history).unwrap();
    let run = d.deployr(&["activate"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains(&format!("{release} is live on every selected host")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("nothing was switched"),
        "{}",
        run.stderr
    );
    assert_eq!(d.currents(), vec![release; 3]);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}
