//! Hosts as operators really have them: login shells other than bash, start-up files that
//! exit, read stdin or print banners, steps that print what looks like deployr's protocol or
//! kill their shell, escape sequences, awkward `deploy_to` paths and huge outputs. Every host
//! logs in with a shell and a home of its own (`Fleet::with_login_shells`), so what its
//! start-up files do is the test's alone.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Deploy, Fleet, Run, SourceRepo, edit_deployfile, finish, measure, setup_on};

/// A bound for commands that should take seconds: long enough for a loaded machine, far
/// shorter than a hang.
const BOUND: Duration = Duration::from_secs(90);

/// Three hosts: `web1` (role db) and `web2` log in with `shell`, `web3` with bash.
fn fleet_of(shell: &str) -> Fleet {
    Fleet::with_login_shells(&[("web1", shell), ("web2", shell), ("web3", "bash")])
}

/// Three bash hosts with homes of their own.
fn bash_fleet() -> Fleet {
    fleet_of("bash")
}

/// Runs deployr with the deploy's deployfile in the background and waits at most `limit`.
fn run_within(d: &Deploy, args: &[&str], limit: Duration) -> Run {
    finish(d.spawn(args), limit)
}

/// Fails unless no host is left with a lock or an activation journal.
#[track_caller]
fn assert_no_lock(d: &Deploy) {
    assert!(d.locked().is_empty(), "locks left on {:?}", d.locked());
    assert!(
        d.journaled().is_empty(),
        "journals left on {:?}",
        d.journaled()
    );
}

fn events(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// `(ok, exit_status)` of `step` on `host` in a `--json` run (None: it never finished there).
fn step_result(events: &[Value], host: &str, step: &str) -> Option<(bool, Option<i64>)> {
    events
        .iter()
        .find(|e| e["event"] == "step_finished" && e["host"] == host && e["step"] == step)
        .map(|e| (e["ok"] == true, e["exit_status"].as_i64()))
}

/// The output lines of `step` on `host` in a `--json` run, in order.
fn output_of(events: &[Value], host: &str, step: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "output" && e["host"] == host && e["step"] == step)
        .map(|e| e["line"].as_str().unwrap().to_string())
        .collect()
}

/// A deploy of `fleet` whose user steps name no path (so any `deploy_to` suits them) and are
/// valid in bash, dash, zsh, fish and tcsh alike.
fn plain_deploy(fleet: Fleet, extra: &str) -> Deploy {
    let repo = SourceRepo::create(fleet.dir.path());
    let body = format!(
        "[source]\nrepo = \"{}\"\nref = \"main\"\n\n\
         [[prepare]]\nname = \"build\"\nrun = \"cat VERSION > built\"\n\n\
         [[activate]]\nswitch = true\n\n{extra}",
        repo.path.display()
    );
    let file = fleet.deployfile(&[&["web", "db"], &["web"], &["web"]], &body);
    Deploy { fleet, repo, file }
}

/// Every host serves `version` from one and the same release.
#[track_caller]
fn assert_all_serve(d: &Deploy, version: &str) {
    let currents = d.currents();
    assert!(
        !currents[0].is_empty() && currents.iter().all(|c| *c == currents[0]),
        "{currents:?}"
    );
    assert_eq!(d.served_versions(), vec![version; d.fleet.hosts.len()]);
}

/// Deploys twice and rolls back on hosts whose login shell is `shell`: each command exits 0
/// in bounded time, and every host ends on the first release, unlocked.
fn deploys_and_rolls_back_with(shell: &str) {
    let d = setup_on(fleet_of(shell), "", "");
    run_within(&d, &["--no-progress", "deploy"], BOUND).expect_code(0);
    assert_all_serve(&d, "1");
    let first = d.currents();
    d.repo.commit("2");
    run_within(&d, &["--no-progress", "deploy"], BOUND).expect_code(0);
    assert_all_serve(&d, "2");
    assert_ne!(d.currents(), first);
    assert_eq!(d.migrations(), 2, "migrate ran once per deploy");
    run_within(&d, &["--no-progress", "rollback"], BOUND).expect_code(0);
    assert_eq!(d.currents(), first);
    assert_all_serve(&d, "1");
    for host in &d.fleet.hosts {
        assert_eq!(host.read("current/built").trim(), "1", "{}", host.name);
        assert_eq!(
            host.read("shared/reloads").lines().count(),
            3,
            "{}: reload after each deploy and the rollback",
            host.name
        );
    }
    assert_no_lock(&d);
}

#[test]
fn user_steps_run_in_each_hosts_login_shell() {
    let fleet = Fleet::with_login_shells(&[
        ("web1", "bash"),
        ("web2", "zsh"),
        ("web3", "dash"),
        ("web4", "fish"),
        ("web5", "tcsh"),
    ]);
    // awk's parent is the shell that runs the step; the `echo` keeps the shell from exec'ing
    // awk in its place. Valid in every one of these shells.
    let file = fleet.deployfile(
        &[],
        "[tasks.which]\nrun = \"\"\"awk '{ getline c < (\"/proc/\" $4 \"/comm\"); print \"interpreter=\" c }' /proc/self/stat; echo done\"\"\"\n",
    );
    let child = fleet
        .command(&["-f", file.to_str().unwrap(), "--json", "run", "which"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = finish(child, BOUND);
    run.expect_code(0);
    let events = events(&run);
    for (host, shell) in [
        ("web1", "bash"),
        ("web2", "zsh"),
        ("web3", "dash"),
        ("web4", "fish"),
        ("web5", "tcsh"),
    ] {
        assert_eq!(
            output_of(&events, host, "which"),
            [format!("interpreter={shell}"), "done".to_string()],
            "{host}\n{}",
            run.stderr
        );
        assert_eq!(step_result(&events, host, "which"), Some((true, Some(0))));
    }
}

#[test]
fn hosts_whose_login_shell_is_zsh_deploy_and_roll_back() {
    deploys_and_rolls_back_with("zsh");
}

#[test]
fn hosts_whose_login_shell_is_dash_deploy_and_roll_back() {
    deploys_and_rolls_back_with("dash");
}

#[test]
fn hosts_whose_login_shell_is_fish_deploy_and_roll_back() {
    deploys_and_rolls_back_with("fish");
}

#[test]
fn hosts_whose_login_shell_is_tcsh_deploy_and_roll_back() {
    deploys_and_rolls_back_with("tcsh");
}

/// Three hosts whose login shell is bash, but web2's, which is `shell`.
fn web2_in(shell: &str) -> Fleet {
    Fleet::with_login_shells(&[("web1", "bash"), ("web2", shell), ("web3", "bash")])
}

/// [`web2_in`] with version 1 deployed everywhere.
fn deployed_with_web2_in(shell: &str) -> Deploy {
    let d = setup_on(web2_in(shell), "", "");
    run_within(&d, &["--no-progress", "deploy"], BOUND).expect_code(0);
    d
}

/// After a good first deploy, web2's start-up file `file` gets `text`; a deploy of version 2
/// must then fail naming web2 and its start-up files, in bounded time, changing nothing.
fn a_start_up_file_fails_the_deploy(shell: &str, file: &str, text: &str) {
    let d = deployed_with_web2_in(shell);
    let before = d.currents();
    let history = d.history(1);
    d.repo.commit("2");
    d.fleet.hosts[1].write_startup_file(file, text);
    let run = run_within(&d, &["--no-progress", "deploy"], BOUND);
    assert_ne!(run.code, 0, "{}", run.all());
    assert_names_the_host_and_its_start_up_files(&run, "web2");
    assert_eq!(d.currents(), before, "no host changed");
    assert_all_serve(&d, "1");
    assert_eq!(d.migrations(), 1, "migrate did not run again");
    assert_no_lock(&d);
    assert_eq!(
        d.history(1),
        history,
        "web2 records nothing: nothing ran there"
    );
}

#[track_caller]
fn assert_names_the_host_and_its_start_up_files(run: &Run, host: &str) {
    let named = run.stderr.lines().any(|line| {
        line.contains(host)
            && [
                ".bashrc",
                ".zshenv",
                "config.fish",
                ".cshrc",
                ".profile",
                "start-up",
            ]
            .iter()
            .any(|word| line.contains(word))
    });
    assert!(
        named,
        "no error line names {host} and its start-up files:\n{}",
        run.all()
    );
}

#[test]
fn a_bashrc_that_exits_fails_the_deploy_naming_the_host_and_changes_nothing() {
    a_start_up_file_fails_the_deploy("bash", ".bashrc", "exit 0\n");
}

#[test]
fn a_zshenv_that_exits_fails_the_deploy_naming_the_host_and_changes_nothing() {
    a_start_up_file_fails_the_deploy("zsh", ".zshenv", "exit 0\n");
}

#[test]
fn run_never_reports_ok_on_a_host_whose_bashrc_exits() {
    let fleet = bash_fleet();
    fleet.hosts[1].write_startup_file(".bashrc", "exit 0\n");
    let d = plain_deploy(fleet, "[tasks.hello]\nrun = \"touch ran-hello\"\n");
    let run = run_within(&d, &["--json", "run", "hello"], BOUND);
    assert_ne!(run.code, 0, "{}", run.all());
    let events = events(&run);
    assert_ne!(
        step_result(&events, "web2", "hello").map(|(ok, _)| ok),
        Some(true),
        "web2 reported ok: {}",
        run.all()
    );
    assert_names_the_host_and_its_start_up_files(&run, "web2");
    assert!(
        !d.fleet.hosts[1].home().join("ran-hello").exists()
            && !d.fleet.hosts[1].deploy_to.join("ran-hello").exists(),
        "nothing ran on web2"
    );
    assert_no_lock(&d);
}

/// `connect_timeout` (3s) bounds the start of a host's shell: a start-up file that reads stdin
/// never lets it become ready. 3s for the shell, up to 3 × 3s more for the neighbours'
/// connections on a loaded machine, and a few seconds to end; far less than 40s.
fn a_start_up_file_reading_stdin_fails_the_deploy(shell: &str, file: &str, text: &str) {
    let d = deployed_with_web2_in(shell);
    let before = d.currents();
    d.repo.commit("2");
    edit_deployfile(&d, "connect_timeout = \"30s\"", "connect_timeout = \"3s\"");
    d.fleet.hosts[1].write_startup_file(file, text);
    let run = run_within(&d, &["--no-progress", "deploy"], Duration::from_secs(40));
    assert_ne!(run.code, 0, "{}", run.all());
    assert_names_the_host_and_its_start_up_files(&run, "web2");
    assert_eq!(d.currents(), before, "no host changed");
    assert_all_serve(&d, "1");
    assert_no_lock(&d);
}

#[test]
fn a_bashrc_that_reads_all_of_stdin_fails_the_deploy_within_connect_timeout() {
    a_start_up_file_reading_stdin_fails_the_deploy("bash", ".bashrc", "cat >/dev/null\n");
}

#[test]
fn a_zshenv_that_reads_a_line_of_stdin_fails_the_deploy_within_connect_timeout() {
    a_start_up_file_reading_stdin_fails_the_deploy("zsh", ".zshenv", "read x\n");
}

/// web2 (login shell `shell`) prints `banner` (no trailing newline) from its start-up file
/// `file`: deploys and a task succeed, the banner shows nowhere, the task's output on web2 is
/// its own, and no lock is left.
fn a_banner_is_ignored(shell: &str, file: &str, banner: &str, visible: &[&str]) {
    let fleet = web2_in(shell);
    fleet.hosts[1].write_startup_file(file, &format!("printf '{banner}'\n"));
    let d = plain_deploy(fleet, "[tasks.hello]\nrun = \"echo task-output\"\n");
    for version in ["1", "2"] {
        if version == "2" {
            d.repo.commit("2");
        }
        let run = run_within(&d, &["--no-progress", "deploy"], BOUND);
        run.expect_code(0);
        assert_hidden(&run, visible);
        assert_all_serve(&d, version);
        assert_no_lock(&d);
    }
    let run = run_within(&d, &["--json", "run", "hello"], BOUND);
    run.expect_code(0);
    assert_hidden(&run, visible);
    let events = events(&run);
    for host in ["web1", "web2", "web3"] {
        assert_eq!(output_of(&events, host, "hello"), ["task-output"], "{host}");
        assert_eq!(step_result(&events, host, "hello"), Some((true, Some(0))));
    }
    assert_no_lock(&d);
}

#[track_caller]
fn assert_hidden(run: &Run, visible: &[&str]) {
    for text in visible {
        assert!(!run.all().contains(text), "{text} shown:\n{}", run.all());
    }
    assert!(
        !run.all().contains('\u{1b}'),
        "raw escape in output:\n{}",
        run.all()
    );
}

#[test]
fn a_start_up_banner_without_a_newline_is_ignored_and_deploys_succeed() {
    a_banner_is_ignored("bash", ".bashrc", "WELCOME-TO-WEB2", &["WELCOME-TO-WEB2"]);
}

#[test]
fn escape_sequences_from_a_start_up_file_are_ignored_and_deploys_succeed() {
    a_banner_is_ignored(
        "bash",
        ".bashrc",
        r"\033[2J\033]0;pwned\007EVIL-BANNER",
        &["pwned", "EVIL-BANNER"],
    );
}

#[test]
fn a_banner_from_config_fish_is_ignored_and_deploys_succeed() {
    a_banner_is_ignored(
        "fish",
        ".config/fish/config.fish",
        "FISH-WELCOME",
        &["FISH-WELCOME"],
    );
}

/// A step that prints what an earlier step may have left in `$_`, every shell variable, and
/// lines shaped like deployr's markers (on stdout and stderr), then runs `end`.
fn noisy_step(end: &str) -> String {
    format!(
        "[[prepare]]\nname = \"first\"\nrun = \"echo first-output\"\n\n\
         [[prepare]]\nname = \"noisy\"\nrun = \"\"\"\necho \"underscore=$_\"\nset\n\
         echo 'DEPLOYR-END-0000000000000000 0'\necho 'x DEPLOYR-END-0000000000000000 0'\n\
         echo 'DEPLOYR-READY-0000000000000000'\necho 'DEPLOYR-END-0000000000000000' >&2\n\
         printf 'DEPLOYR-END-0000000000000000 0'\n{end}\n\"\"\"\n\n\
         [[prepare]]\nname = \"b\"\nrun = \"echo B-output\"\n"
    )
}

/// No output line holds a marker deployr made: every `DEPLOYR-…` token printed is one of the
/// step's own fakes.
#[track_caller]
fn assert_no_real_marker(events: &[Value]) {
    for event in events.iter().filter(|e| e["event"] == "output") {
        let line = event["line"].as_str().unwrap();
        for (at, _) in line.match_indices("DEPLOYR-") {
            let token: String = line[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            assert!(
                [
                    "DEPLOYR-END-0000000000000000",
                    "DEPLOYR-READY-0000000000000000"
                ]
                .contains(&token.as_str()),
                "a marker of deployr's reached a step's output: {line}"
            );
        }
    }
}

#[test]
fn marker_shaped_output_and_leftover_variables_change_no_steps_status_or_output() {
    let d = plain_deploy(bash_fleet(), &noisy_step("true"));
    let run = run_within(&d, &["--json", "prepare"], BOUND);
    run.expect_code(0);
    let events = events(&run);
    assert_no_real_marker(&events);
    for host in ["web1", "web2", "web3"] {
        for step in ["first", "noisy", "b"] {
            assert_eq!(
                step_result(&events, host, step),
                Some((true, Some(0))),
                "{host} {step}\n{}",
                run.stderr
            );
        }
        assert_eq!(output_of(&events, host, "first"), ["first-output"]);
        assert_eq!(output_of(&events, host, "b"), ["B-output"], "{host}");
        let noisy = output_of(&events, host, "noisy");
        for fake in [
            "DEPLOYR-END-0000000000000000 0",
            "x DEPLOYR-END-0000000000000000 0",
            "DEPLOYR-READY-0000000000000000",
            "DEPLOYR-END-0000000000000000",
        ] {
            assert!(
                noisy.iter().any(|l| l == fake),
                "{host}: `{fake}` is output of the step: {noisy:?}"
            );
        }
    }
    for i in 0..3 {
        assert!(!d.prepared(i).is_empty(), "host {i} is prepared");
    }
    assert_no_lock(&d);
}

#[test]
fn a_step_printing_marker_shaped_lines_then_exiting_3_fails_with_status_3() {
    let d = plain_deploy(bash_fleet(), &noisy_step("exit 3"));
    let run = run_within(&d, &["--json", "prepare"], BOUND);
    run.expect_code(1);
    let events = events(&run);
    assert_no_real_marker(&events);
    for host in ["web1", "web2", "web3"] {
        assert_eq!(step_result(&events, host, "first"), Some((true, Some(0))));
        assert_eq!(
            step_result(&events, host, "noisy"),
            Some((false, Some(3))),
            "{host}\n{}",
            run.stderr
        );
        assert_eq!(step_result(&events, host, "b"), None, "{host}: b never ran");
        assert!(output_of(&events, host, "b").is_empty());
    }
    for i in 0..3 {
        assert!(d.prepared(i).is_empty(), "host {i} is not prepared");
    }
    assert_eq!(d.currents(), ["", "", ""]);
    assert_no_lock(&d);
}

/// The task takes the deploy lock, which must be released although its shell is gone.
#[test]
fn a_task_that_kills_its_shells_parent_is_a_failure_and_releases_the_lock() {
    let d = plain_deploy(
        bash_fleet(),
        "[tasks.suicide]\nlock = true\nrun = \"kill -9 $PPID\"\n",
    );
    let run = run_within(&d, &["--json", "run", "suicide"], BOUND);
    assert_ne!(run.code, 0, "{}", run.all());
    let events = events(&run);
    for host in ["web1", "web2", "web3"] {
        assert_ne!(
            step_result(&events, host, "suicide").map(|(ok, _)| ok),
            Some(true),
            "{host} reported ok:\n{}",
            run.all()
        );
    }
    assert!(
        d.locked().is_empty(),
        "locks left on {:?}:\n{}",
        d.locked(),
        run.all()
    );
}

#[test]
fn a_prepare_step_that_kills_its_shells_parent_fails_and_leaves_no_lock() {
    let d = plain_deploy(
        bash_fleet(),
        "[[prepare]]\nname = \"suicide\"\nrun = \"kill $PPID; sleep 5\"\n",
    );
    let run = run_within(&d, &["--json", "prepare"], BOUND);
    assert_ne!(run.code, 0, "{}", run.all());
    let events = events(&run);
    for host in ["web1", "web2", "web3"] {
        assert_ne!(
            step_result(&events, host, "suicide").map(|(ok, _)| ok),
            Some(true),
            "{host} reported ok:\n{}",
            run.all()
        );
    }
    for i in 0..3 {
        assert!(d.prepared(i).is_empty(), "host {i} is not prepared");
    }
    assert!(
        d.locked().is_empty(),
        "locks left on {:?}:\n{}",
        d.locked(),
        run.all()
    );
    assert_no_lock(&d);
}

/// The step prints ESC, BEL, CR, NUL and TAB on every host and then fails on web2, so that
/// web2's last lines also show in the failure summary on stderr.
#[test]
fn control_characters_in_step_output_are_shown_as_visible_text() {
    let d = plain_deploy(
        bash_fleet(),
        "[tasks.paint]\nrun = \"printf 'A\\\\033]0;pwned\\\\007B\\\\rC\\\\000D\\\\tE\\\\n'; [ {{host}} != web2 ]\"\n",
    );
    let raw_control = |text: &str| {
        text.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    };
    let visible = |line: &str| line.contains(r"A\x1b]0;pwned") && line.contains(r"B\rC\x00D");
    let plain = run_within(&d, &["--no-progress", "run", "paint"], BOUND);
    plain.expect_code(1);
    assert!(
        !raw_control(&plain.all()),
        "raw control characters:\n{:?}",
        plain.all()
    );
    for host in ["web1", "web2", "web3"] {
        let line = plain
            .stdout
            .lines()
            .find(|l| l.contains(&format!("{host} paint |")))
            .unwrap_or_else(|| panic!("no output line of {host}:\n{}", plain.stdout));
        assert!(visible(line), "{line}");
        assert!(line.ends_with("D\tE"), "tab kept: {line:?}");
    }
    // The summary (on stdout without a terminal) repeats web2's last lines as `  | LINE`.
    assert!(
        plain
            .stdout
            .lines()
            .any(|l| l.starts_with("  | ") && visible(l)),
        "web2's last lines in the summary:\n{}",
        plain.stdout
    );
    let json = run_within(&d, &["--json", "run", "paint"], BOUND);
    json.expect_code(1);
    let events = events(&json);
    for host in ["web1", "web2", "web3"] {
        let lines = output_of(&events, host, "paint");
        assert_eq!(lines.len(), 1, "{host}: {lines:?}");
        assert!(!raw_control(&lines[0]), "{:?}", lines[0]);
        assert!(visible(&lines[0]), "{:?}", lines[0]);
    }
    assert_eq!(
        step_result(&events, "web2", "paint"),
        Some((false, Some(1)))
    );
    assert_no_lock(&d);
}

#[test]
fn a_deploy_to_with_quotes_a_space_and_a_dollar_deploys_switches_and_rolls_back() {
    let mut fleet = bash_fleet();
    for host in &mut fleet.hosts {
        host.deploy_to = host.dir.join(r#"it's a "$dir""#);
        std::fs::create_dir_all(&host.deploy_to).unwrap();
    }
    let d = plain_deploy(fleet, "");
    run_within(&d, &["--no-progress", "deploy"], BOUND).expect_code(0);
    assert_all_serve(&d, "1");
    let first = d.currents();
    d.repo.commit("2");
    run_within(&d, &["--no-progress", "deploy"], BOUND).expect_code(0);
    assert_all_serve(&d, "2");
    run_within(&d, &["--no-progress", "rollback"], BOUND).expect_code(0);
    assert_eq!(d.currents(), first);
    assert_all_serve(&d, "1");
    for host in &d.fleet.hosts {
        assert_eq!(host.read("current/built").trim(), "1");
        let strays: Vec<String> = std::fs::read_dir(&host.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("it") && n != r#"it's a "$dir""#)
            .collect();
        assert!(strays.is_empty(), "{}: {strays:?}", host.name);
    }
    assert_no_lock(&d);
}

/// deployr's peak memory for a task whose output is huge.
const MEMORY: u64 = 64 << 20;

/// `deployr run big` on one host, where the task `big` runs `command`: it succeeds within
/// its bound, leaves no lock, and stays under [`MEMORY`].
fn run_big(command: &str) -> crate::support::Measured {
    let d = plain_deploy(
        Fleet::with_login_shells(&[("web1", "bash")]),
        &format!("[tasks.big]\nrun = \"{command}\"\n"),
    );
    let file = d.file.to_str().unwrap();
    let run = measure(
        d.fleet
            .command(&["-f", file, "--no-progress", "run", "big"]),
        Duration::from_secs(180),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout_tail, run.stderr_tail);
    assert!(
        run.stdout_tail.contains("web1 big - ok in"),
        "{}",
        run.stdout_tail
    );
    assert!(run.peak_rss < MEMORY, "peak RSS {} MiB", run.peak_rss >> 20);
    assert_no_lock(&d);
    run
}

#[test]
fn two_hundred_megabytes_of_output_lines_complete_in_bounded_memory() {
    let run = run_big(
        "yes 'an ordinary line of output, sixty-odd bytes long, again and again' | head -c 200000000",
    );
    assert!(
        run.stdout_bytes > 200_000_000,
        "every line is shown: {} bytes",
        run.stdout_bytes
    );
}

#[test]
fn a_fifty_megabyte_line_completes_cut_short_in_bounded_memory() {
    let run = run_big("head -c 50000000 /dev/zero | tr '\\\\0' x; echo; echo after");
    assert!(
        run.stdout_tail.contains("web1 big | after"),
        "the next line is shown whole: {}",
        run.stdout_tail
    );
    assert!(
        run.stdout_bytes < 1 << 20,
        "the long line is cut: {} bytes shown",
        run.stdout_bytes
    );
}

/// A health check whose first attempt fails: every attempt starts the login shell again, and
/// each says its begin line; none of those lines is the check's output. The deploy succeeds on
/// the second attempt, every host on the new release, no lock left.
#[test]
fn a_health_check_retried_shows_no_begin_line() {
    let d = setup_on(
        web2_in("zsh"),
        "",
        "[healthcheck]\nrun = \"echo attempt; test -f tried || { touch tried; exit 1; }\"\nattempts = 2\ninterval = \"1s\"\ntimeout = \"10s\"\n",
    );
    let run = run_within(&d, &["--no-progress", "deploy"], BOUND);
    run.expect_code(0);
    assert!(
        run.stdout.contains("healthcheck | attempt"),
        "{}",
        run.stdout
    );
    assert!(
        !run.all().contains("deployr-command-begins"),
        "{}",
        run.all()
    );
    assert_all_serve(&d, "1");
    assert_no_lock(&d);
}
