//! Steps with `local = true`: once, on the machine running deployr, in order with the steps
//! on the (real sshd) hosts.

use crate::support::setup;

#[test]
fn a_local_step_runs_once_here_between_the_host_steps_with_the_release_values() {
    let d = setup(
        "",
        "[[prepare]]\nname = \"before\"\nrun = \"echo before {{host}} >> ../../../../../order\"\n\n\
         [[prepare]]\nname = \"tag\"\nlocal = true\nrun = \"echo tag $DEPLOYR_RELEASE {{commit}} $(pwd) >> order\"\n\n\
         [[prepare]]\nname = \"after\"\nrun = \"echo after {{host}} >> ../../../../../order\"\n",
    );
    let run = d.deployr(&["--no-progress", "prepare"]);
    run.expect_code(0);
    let release = crate::support::release_of(&d.prepared(0));
    let commit = d.repo.git(&["rev-parse", "HEAD"]);
    let order = std::fs::read_to_string(d.fleet.dir.path().join("order")).unwrap();
    let lines: Vec<&str> = order.lines().collect();
    assert_eq!(lines.len(), 7, "{order}");
    assert!(
        lines[..3].iter().all(|l| l.starts_with("before ")),
        "{order}"
    );
    assert_eq!(
        lines[3],
        format!(
            "tag {release} {commit} {}",
            d.fleet.dir.path().canonicalize().unwrap().display()
        )
    );
    assert!(
        lines[4..].iter().all(|l| l.starts_with("after ")),
        "{order}"
    );
    assert!(run.stdout.contains(" local tag - ok"), "{}", run.stdout);
}

#[test]
fn a_failing_local_step_stops_prepare_before_the_next_host_step() {
    let d = setup(
        "",
        "[[prepare]]\nname = \"assets\"\nlocal = true\nrun = \"if [ -e broken ]; then echo cannot build >&2; exit 3; fi\"\n\n\
         [[prepare]]\nname = \"after\"\nrun = \"echo ran >> {{deploy_to}}/after-runs\"\n",
    );
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    std::fs::write(d.fleet.dir.path().join("broken"), "").unwrap();
    d.repo.commit("2");
    let run = d.deployr(&["deploy"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains(
            "step `assets` failed on this machine (a local step); later steps did not run\n  local: exit status 3"
        ),
        "{}",
        run.stderr
    );
    assert!(run.all().contains("cannot build"), "{}", run.all());
    for host in &d.fleet.hosts {
        assert_eq!(host.read("after-runs"), "ran\n", "{}", host.name);
        assert!(host.read(".deployr/prepared").is_empty());
    }
    assert_eq!(d.currents(), before);
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
    assert!(d.locked().is_empty());
}

#[test]
fn a_local_step_failing_after_the_switch_rolls_every_host_back() {
    let d = setup(
        "",
        "[[activate]]\nname = \"purge-cdn\"\nlocal = true\nrun = \"test ! -e cdn-down\"\n",
    );
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    std::fs::write(d.fleet.dir.path().join("cdn-down"), "").unwrap();
    let run = d.deployr(&["deploy"]);
    run.expect_code(5);
    assert!(run.stderr.contains("purge-cdn"), "{}", run.stderr);
    assert_eq!(d.currents(), before);
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
}

#[test]
fn a_local_step_masks_secrets_and_shows_in_the_dry_run() {
    let d = setup(
        "",
        "[env]\nTOKEN = { value = \"hunter2-secret\", secret = true }\n\n\
         [[activate]]\nname = \"notify\"\nlocal = true\nrun = \"echo notifying with $TOKEN about {{release}}\"\n",
    );
    let dry = d.deployr(&["--dry-run", "deploy"]);
    dry.expect_code(0);
    assert!(
        dry.stdout
            .contains("local notify $ echo notifying with $TOKEN about "),
        "{}",
        dry.stdout
    );
    let run = d.deployr(&["--no-progress", "deploy"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("local notify | notifying with *** about "),
        "{}",
        run.stdout
    );
    assert!(!run.all().contains("hunter2"), "{}", run.all());
}
