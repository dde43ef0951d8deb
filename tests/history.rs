//! The operator's record: every command that changes hosts leaves one JSON record per host in
//! `.deployr/history` (who, what, when, how it ended), and `deployr history` merges them.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Deploy, finish, interrupt, setup, slow_on, slow_step, wait_for};

/// Each host's history, parsed.
fn records(d: &Deploy, host: usize) -> Vec<Value> {
    d.history(host)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

fn with_actor(d: &Deploy, name: &str, value: &str, args: &[&str]) -> crate::support::Run {
    let mut all = vec!["-f", d.file.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = d
        .fleet
        .command(&all)
        .env(name, value)
        .env_remove(if name == "DEPLOYR_ACTOR" {
            "GITHUB_ACTOR"
        } else {
            "DEPLOYR_ACTOR"
        })
        .output()
        .unwrap();
    crate::support::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn every_command_that_changes_hosts_leaves_its_record_on_every_host() {
    let d = setup(
        "",
        &format!(
            "{}\n[healthcheck]\nrun = \"test ! -e {{{{deploy_to}}}}/unhealthy\"\nattempts = 1\ninterval = \"1s\"\ntimeout = \"5s\"\n",
            slow_step("prepare", "slow")
        ),
    );
    // 1. A deploy, as the CI user.
    with_actor(&d, "GITHUB_ACTOR", "octocat", &["deploy"]).expect_code(0);
    let first = d.currents()[0].clone();
    let commit1 = d.repo.git(&["rev-parse", "HEAD"]);
    // 2. A deploy that fails its health check on web2 and goes back.
    let commit2 = d.repo.commit("2");
    std::fs::write(d.fleet.hosts[1].deploy_to.join("unhealthy"), "").unwrap();
    with_actor(&d, "DEPLOYR_ACTOR", "alice", &["deploy"]).expect_code(5);
    std::fs::remove_file(d.fleet.hosts[1].deploy_to.join("unhealthy")).unwrap();
    // 3. A good deploy of 2, then a rollback.
    d.deployr(&["deploy"]).expect_code(0);
    let second = d.currents()[0].clone();
    with_actor(&d, "DEPLOYR_ACTOR", "bob", &["rollback"]).expect_code(0);
    // 4. An interrupted prepare.
    d.repo.commit("3");
    slow_on(&d, 0);
    let child = d.spawn(&["prepare"]);
    wait_for(&d.fleet.hosts[0].deploy_to.join("in-slow"));
    interrupt(&child);
    finish(child, Duration::from_secs(60)).expect_code(130);

    for host in 0..3 {
        let records = records(&d, host);
        let summary: Vec<(String, String)> = records
            .iter()
            .map(|r| {
                (
                    r["command"].as_str().unwrap().to_string(),
                    r["result"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = [
            ("deploy", "ok"),
            ("deploy", "rolled-back"),
            ("deploy", "ok"),
            ("rollback", "ok"),
            ("prepare", "interrupted"),
        ]
        .iter()
        .map(|(c, r)| (c.to_string(), r.to_string()))
        .collect();
        assert_eq!(summary, expected, "host {host}: {records:#?}");
        assert_eq!(records[0]["actor"], "octocat");
        assert_eq!(records[0]["commit"], commit1.as_str());
        assert_eq!(records[0]["release"], first.as_str());
        assert_eq!(records[1]["actor"], "alice");
        assert_eq!(records[1]["commit"], commit2.as_str());
        assert_eq!(records[1]["failed_step"], "healthcheck");
        assert_eq!(records[1]["failed_host"], "web2");
        assert_eq!(records[1]["previous"], first.as_str());
        assert_eq!(records[3]["actor"], "bob");
        assert_eq!(records[3]["release"], first.as_str());
        assert_eq!(records[3]["previous"], second.as_str());
        for record in &records {
            assert!(record["duration_ms"].as_u64().is_some(), "{record}");
            assert!(!record["machine"].as_str().unwrap().is_empty(), "{record}");
            assert!(record["id"].as_str().is_some_and(|id| !id.is_empty()));
        }
    }
    // A rollback still goes where the history says, old-format lines or new.
    assert_eq!(d.currents(), vec![first.clone(); 3]);

    let run = d.deployr(&["history", "--json"]);
    run.expect_code(0);
    let entries: Vec<Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "history")
        .collect();
    let commands: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["command"].as_str().unwrap(),
                e["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        commands,
        [
            ("deploy", "ok"),
            ("deploy", "rolled-back"),
            ("deploy", "ok"),
            ("rollback", "ok"),
            ("prepare", "interrupted")
        ]
    );
    for entry in &entries {
        assert_eq!(entry["hosts"].as_array().unwrap().len(), 3, "{entry}");
        assert!(
            entry["disagreeing"].as_array().unwrap().is_empty(),
            "{entry}"
        );
    }
    let plain = d.deployr(&["history", "-n", "2"]);
    plain.expect_code(0);
    assert!(plain.stdout.contains("rollback"), "{}", plain.stdout);
    assert!(plain.stdout.contains("by bob@"), "{}", plain.stdout);
    assert!(
        !plain.stdout.contains("by octocat@"),
        "-n 2: {}",
        plain.stdout
    );
}

#[test]
fn history_flags_hosts_whose_records_disagree() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let line = d.history(2).pop().unwrap();
    let changed = line.replace("\"result\":\"ok\"", "\"result\":\"failed\"");
    std::fs::write(
        d.fleet.hosts[2].deploy_to.join(".deployr/history"),
        changed + "\n",
    )
    .unwrap();
    let run = d.deployr(&["history"]);
    run.expect_code(0);
    assert!(run.stdout.contains("! web3 disagrees"), "{}", run.stdout);
}

#[test]
fn hooks_run_once_after_the_command_and_never_change_its_exit_code() {
    let d = setup(
        "",
        "[healthcheck]\nrun = \"test ! -e {{deploy_to}}/unhealthy\"\nattempts = 1\ninterval = \"1s\"\ntimeout = \"5s\"\n\n\
         [[on_success]]\nname = \"chat\"\nrun = \"echo \\\"ok {{command}} {{release}} {{commit}} $DEPLOYR_RESULT {{exit_code}}\\\" >> hooks.log\"\n\n\
         [[on_failure]]\nname = \"page\"\nrun = \"echo \\\"failed {{command}} {{result}} {{exit_code}} {{error}}\\\" >> hooks.log\"\n\n\
         [[on_failure]]\nname = \"broken\"\nrun = \"exit 3\"\n",
    );
    let log = d.fleet.dir.path().join("hooks.log");
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    d.deployr(&["deploy"]).expect_code(0);
    let release = d.currents()[0].clone();
    let commit = d.repo.git(&["rev-parse", "HEAD"]);
    assert_eq!(
        lines(),
        [format!("ok deploy {release} {commit} ok 0")],
        "on_success ran once, on_failure not at all"
    );
    d.repo.commit("2");
    std::fs::write(d.fleet.hosts[2].deploy_to.join("unhealthy"), "").unwrap();
    let run = d.deployr(&["deploy"]);
    run.expect_code(5);
    assert!(run.all().contains("hook `broken` failed"), "{}", run.all());
    let all = lines();
    assert_eq!(all.len(), 2, "on_failure ran once, not per host: {all:?}");
    assert_eq!(
        all[1],
        "failed deploy failed 5 step healthcheck failed on web3: exit status 1"
    );
    // A dry run succeeds, so it shows the hooks a successful run runs, and runs none.
    let dry = d.deployr(&["--dry-run", "deploy"]);
    dry.expect_code(0);
    assert!(dry.stdout.contains("local chat $ "), "{}", dry.stdout);
    assert!(!dry.stdout.contains("local page $ "), "{}", dry.stdout);
    assert_eq!(lines().len(), 2, "a dry run runs no hook");
}
