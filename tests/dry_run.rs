//! `--dry-run` runs the same command code as a real run, over a transport that prints each
//! script instead of sending it: what it prints is what the next real run does.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Deploy, setup};

/// The steps of a `--json` run, in order, each with the hosts it ran on: from `event` events
/// (`would_run` for a dry run, `step_started` for a real one). Consecutive events of one step
/// are one step.
pub fn steps(stdout: &str, event: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut steps: Vec<(String, BTreeSet<String>)> = Vec::new();
    for line in stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        if value["event"] != event {
            continue;
        }
        let (step, host) = (
            value["step"].as_str().unwrap().to_string(),
            value["host"].as_str().unwrap().to_string(),
        );
        match steps.last_mut() {
            Some((last, hosts)) if *last == step => {
                hosts.insert(host);
            }
            _ => steps.push((step, BTreeSet::from([host]))),
        }
    }
    steps
}

/// The lock owners left on the hosts (empty: nobody holds the lock).
fn locks(d: &Deploy) -> Vec<bool> {
    d.fleet
        .hosts
        .iter()
        .map(|h| {
            let lock = h.deploy_to.join(".deployr/lock");
            lock.symlink_metadata().is_ok()
        })
        .collect()
}

/// For each command, the dry run first: it changes nothing on any host, and the steps it
/// prints (names, order, hosts) are those the real run that follows reports.
#[test]
fn dry_run_prints_the_steps_the_real_run_then_takes_for_every_command() {
    let d = setup(
        "",
        "[[check]]\nname = \"service\"\nrun = \"true\"\n\n\
         [healthcheck]\nrun = \"test -f built\"\nattempts = 1\ninterval = \"1s\"\ntimeout = \"5s\"\n\n\
         [tasks.t]\nrun = \"cat VERSION\"\nroles = [\"db\"]\n\n\
         [[on_success]]\nname = \"chat\"\nrun = \"true\"\n",
    );
    let commands: [&[&str]; 6] = [
        &["deploy"],
        &["run", "t"],
        &["prepare"],
        &["activate"],
        &["rollback"],
        &["check"],
    ];
    for (index, command) in commands.iter().enumerate() {
        if index == 2 {
            d.repo.commit("2");
        }
        let before = (d.currents(), locks(&d), d.migrations());
        let mut args = vec!["--json", "--dry-run"];
        args.extend_from_slice(command);
        let started = Instant::now();
        let dry = d.deployr(&args);
        dry.expect_code(0);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{command:?}: the dry run took {:?}",
            started.elapsed()
        );
        assert_eq!(
            (d.currents(), locks(&d), d.migrations()),
            before,
            "{command:?}: a dry run changes nothing"
        );
        let mut args = vec!["--json"];
        args.extend_from_slice(command);
        let real = d.deployr(&args);
        real.expect_code(0);
        let printed = steps(&dry.stdout, "would_run");
        assert!(!printed.is_empty(), "{command:?}: {}", dry.stdout);
        assert_eq!(
            printed,
            steps(&real.stdout, "step_started"),
            "{command:?}: the dry run's steps are the real run's"
        );
        assert_eq!(locks(&d), [false; 3], "{command:?}: no lock left");
    }
    // The real runs did what the dry runs said: version 2 was activated, then rolled back.
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
}

/// `deploy --dry-run` names the release it creates by one id, from the code step to the
/// history record, and every host's switch goes to it.
#[test]
fn deploy_dry_run_names_one_release_id_throughout() {
    let d = setup("", "");
    let dry = d.deployr(&["--dry-run", "deploy"]);
    dry.expect_code(0);
    let id = dry
        .stdout
        .lines()
        .find_map(|line| line.split("$ cd ").nth(1)?.split("/releases/").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .expect("the build step runs in the new release")
        .to_string();
    assert_eq!(id.len(), 16, "{id}: {}", dry.stdout);
    for (step, needle) in [
        ("code", format!("releases/{id}")),
        ("build", format!("DEPLOYR_RELEASE={id}")),
        ("prepared", format!("release={id}")),
        ("migrate", format!("DEPLOYR_RELEASE={id}")),
        ("switch", format!("releases/{id}")),
        ("reload", format!("DEPLOYR_RELEASE={id}")),
        ("finish", format!("\"release\":\"{id}\"")),
    ] {
        let lines: Vec<&str> = dry
            .stdout
            .lines()
            .filter(|line| line.split(' ').nth(1) == Some(step))
            .collect();
        assert!(!lines.is_empty(), "no {step} step: {}", dry.stdout);
        assert!(
            lines.iter().any(|line| line.contains(&needle)),
            "{step} does not name {id}: {}",
            lines.join("\n")
        );
        assert!(
            !lines.iter().any(|line| has_placeholder(line)),
            "{step} has a placeholder: {}",
            lines.join("\n")
        );
    }
    for host in ["web1", "web2", "web3"] {
        assert!(
            dry.stdout
                .contains(&format!("{host} switch $ [ -d releases/{id} ]")),
            "{host}: {}",
            dry.stdout
        );
    }
    assert_eq!(d.currents(), ["", "", ""], "a dry run changes nothing");
}

/// A stand-in such as `<prepared release>` or `<commit>`, as dry runs once printed.
fn has_placeholder(line: &str) -> bool {
    line.split('<').skip(1).any(|rest| {
        rest.split_once('>').is_some_and(|(inside, _)| {
            !inside.is_empty() && inside.chars().all(|c| c.is_ascii_lowercase() || c == ' ')
        })
    })
}

/// `deployr --dry-run deploy | head -1`: deployr's stdout closes early; it ends quietly.
#[test]
fn a_dry_run_piped_into_head_ends_quietly() {
    let d = setup("", "");
    let mut child = d
        .fleet
        .command(&["-f", d.file.to_str().unwrap(), "--dry-run", "deploy"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("web1 lock $ "), "{first}");
    let run = crate::support::finish(child, Duration::from_secs(60));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "", "no panic, no error message");
    assert_eq!(d.currents(), ["", "", ""]);
}

/// `deployr deploy 2>&1 | head -3`: both streams close after three lines; the deploy still
/// completes on every host, the lock is given back, and deployr exits 0 without a panic.
#[test]
fn a_deploy_piped_into_head_completes_and_ends_quietly() {
    let d = setup("", "");
    let deployr = d
        .fleet
        .command(&["-f", d.file.to_str().unwrap(), "deploy"])
        .get_program()
        .to_owned();
    let started = Instant::now();
    let output = Command::new("bash")
        .args([
            "-c",
            "\"$0\" \"$@\" 2>&1 | head -3 > /dev/null; echo \"${PIPESTATUS[0]}\"",
        ])
        .arg(deployr)
        .args(["--no-progress", "-f", d.file.to_str().unwrap(), "deploy"])
        .current_dir(d.fleet.dir.path())
        .env("HOME", &d.fleet.home)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(120));
    let status = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        status.trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let currents = d.currents();
    assert!(!currents[0].is_empty());
    assert_eq!(
        currents,
        vec![currents[0].clone(); 3],
        "every host switched"
    );
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
    assert_eq!(locks(&d), [false; 3], "the lock was given back");
}
