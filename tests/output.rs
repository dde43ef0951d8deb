//! What operators and their tools read: plain lines for cron and CI, JSON events, the terminal
//! view, `init` and completions.

use std::collections::HashMap;

use crate::support::{Fleet, deployr_in};

fn two_step_tasks() -> &'static str {
    "[tasks.talk]\nrun = \"echo hello from {{host}}; echo warning >&2\"\n\n\
     [tasks.fail]\nrun = \"echo trying; if [ {{host}} = web2 ]; then exit 4; fi\"\n"
}

#[test]
fn plain_output_follows_the_documented_format_without_escapes() {
    let fleet = Fleet::start(2);
    let file = fleet.deployfile(&[], two_step_tasks());
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "run", "talk"]);
    run.expect_code(0);
    assert!(
        !run.all().contains('\u{1b}'),
        "ANSI escape in {}",
        run.all()
    );
    let live: Vec<&str> = run.stdout.lines().take_while(|l| !l.is_empty()).collect();
    assert!(live.len() >= 8, "{}", run.stdout);
    for line in &live {
        let fields: Vec<&str> = line.splitn(5, ' ').collect();
        assert!(
            chrono::DateTime::parse_from_rfc3339(fields[0]).is_ok() && fields[0].ends_with('Z'),
            "not a UTC time: {line}"
        );
        assert!(["web1", "web2"].contains(&fields[1]), "not a host: {line}");
        assert_eq!(fields[2], "talk", "not the step: {line}");
        assert!(["|", "-"].contains(&fields[3]), "no separator: {line}");
    }
    assert!(
        live.iter()
            .any(|l| l.ends_with("web1 talk | hello from web1"))
    );
    assert!(live.iter().any(|l| l.ends_with("web2 talk | warning")));
    assert!(
        live.iter()
            .any(|l| l.contains("web2 talk - ok in ") && l.ends_with("(exit status 0)"))
    );
}

#[test]
fn json_events_parse_and_arrive_in_order_per_host() {
    let fleet = Fleet::start(3);
    let file = fleet.deployfile(&[], two_step_tasks());
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "--json", "run", "fail"]);
    run.expect_code(1);
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let kind = |e: &serde_json::Value| e["event"].as_str().unwrap().to_string();
    assert_eq!(kind(&events[0]), "run_started");
    let last = events.last().unwrap();
    assert_eq!(kind(last), "run_finished");
    assert_eq!(last["exit_code"], 1);
    let order = ["host_connected", "step_started", "output", "step_finished"];
    let mut seen: HashMap<String, usize> = HashMap::new();
    for event in &events[1..events.len() - 1] {
        let host = event["host"].as_str().unwrap().to_string();
        let rank = order.iter().position(|k| *k == kind(event)).unwrap();
        let previous = seen.insert(host.clone(), rank).unwrap_or(0);
        assert!(
            rank >= previous,
            "{host}: {} after {}",
            order[rank],
            order[previous]
        );
        assert!(event["time"].as_str().unwrap().ends_with('Z'));
    }
    let failed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| kind(e) == "step_finished" && e["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["host"], "web2");
    assert_eq!(failed[0]["exit_status"], 4);
    assert!(
        run.stderr.contains("`fail` failed"),
        "human output on stderr: {}",
        run.stderr
    );
}

#[test]
fn a_terminal_shows_one_line_per_host_and_the_final_table() {
    let fleet = Fleet::start(3);
    let file = fleet.deployfile(&[], two_step_tasks());
    let command = format!(
        "{} -f {} run talk",
        env!("CARGO_BIN_EXE_deployr"),
        file.display()
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("HOME", &fleet.home)
        .env_remove("SSH_AUTH_SOCK")
        .env("NO_COLOR", "1")
        .output()
        .expect("script (util-linux) runs deployr under a pseudo-terminal");
    assert!(output.status.success());
    let screen = String::from_utf8_lossy(&output.stdout);
    for host in ["web1", "web2", "web3"] {
        assert!(
            screen.contains(&format!("{host} talk ok")),
            "{host}: {screen}"
        );
        assert!(
            screen
                .lines()
                .any(|l| l.starts_with(host) && l.contains("s")),
            "no table row for {host}: {screen}"
        );
    }
    assert!(screen.contains("host  talk"), "{screen}");
    assert!(
        !screen.contains("| hello from"),
        "output lines hidden on a terminal: {screen}"
    );
}

#[test]
fn init_writes_a_valid_starter_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let run = deployr_in(dir.path(), &["init"]);
    run.expect_code(0);
    let written = std::fs::read_to_string(dir.path().join("deployfile.toml")).unwrap();
    assert!(written.contains("[[activate]]"));
    deployr_in(dir.path(), &["--dry-run", "deploy"]).expect_code(0);
    let again = deployr_in(dir.path(), &["init"]);
    again.expect_code(2);
    assert!(
        again.stderr.contains("never overwrites"),
        "{}",
        again.stderr
    );
}

#[test]
fn completions_are_generated_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let run = deployr_in(dir.path(), &["completions", shell]);
        run.expect_code(0);
        assert!(run.stdout.contains("activate"), "{shell}");
    }
}

/// `deployr releases --json` gives one typed `release` event per release and host, not prose.
#[test]
fn releases_are_typed_json_events() {
    let d = crate::support::setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    d.repo.commit("2");
    d.deployr(&["deploy"]).expect_code(0);
    let run = d.deployr(&["--json", "releases"]);
    run.expect_code(0);
    let rows: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["event"] == "release")
        .collect();
    assert_eq!(rows.len(), 6, "{}", run.stdout);
    for (host, index) in [("web1", 0), ("web2", 1), ("web3", 2)] {
        let mine: Vec<&serde_json::Value> = rows.iter().filter(|r| r["host"] == host).collect();
        assert_eq!(mine.len(), 2);
        let current = mine
            .iter()
            .find(|r| r["marks"].as_array().unwrap().contains(&"current".into()))
            .expect("a current release");
        assert_eq!(current["release"], d.currents()[index]);
        assert_eq!(current["commit"].as_str().unwrap().len(), 40);
        assert!(
            mine.iter()
                .any(|r| r["marks"].as_array().unwrap().contains(&"previous".into()))
        );
    }
    assert!(!run.stdout.contains("\"notice\""), "{}", run.stdout);
}
