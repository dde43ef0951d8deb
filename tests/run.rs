//! `deployr run` and `deployr check` against real sshd hosts.

use std::net::TcpListener;

use crate::support::{Fleet, deployr_in, keygen};

fn marker_task(name: &str, extra: &str) -> String {
    format!("[tasks.{name}]\nrun = \"echo ran > {{{{deploy_to}}}}/{name}.ran\"\n{extra}\n")
}

/// Each host checks in at a shared rendezvous and then waits for the other two. Run one
/// after another, the first host would wait alone and fail; so exit 0 proves all three
/// were running at the same time, whatever the machine's load.
#[test]
fn task_runs_on_every_host_concurrently() {
    let fleet = Fleet::start(3);
    let rendezvous = fleet.dir.path().join("rendezvous");
    std::fs::create_dir(&rendezvous).unwrap();
    let task = format!(
        "[tasks.meet]\nrun = \"touch {dir}/{{{{host}}}}; \
         i=0; while [ $(ls {dir} | wc -l) -lt 3 ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 1; sleep 0.05; done\"\n",
        dir = rendezvous.display()
    );
    let file = fleet.deployfile(&[], &task);
    fleet
        .deployr(&["-f", file.to_str().unwrap(), "run", "meet"])
        .expect_code(0);
    assert_eq!(std::fs::read_dir(&rendezvous).unwrap().count(), 3);
}

#[test]
fn once_runs_on_the_first_listed_host_of_its_roles() {
    let fleet = Fleet::start(3);
    let file = fleet.deployfile(
        &[&["web"], &["db"], &["db"]],
        &marker_task("backup", "roles = [\"db\"]\nonce = true"),
    );
    fleet
        .deployr(&["-f", file.to_str().unwrap(), "run", "backup"])
        .expect_code(0);
    let ran: Vec<&str> = fleet
        .hosts
        .iter()
        .filter(|h| !h.read("backup.ran").is_empty())
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(ran, ["web2"]);
}

#[test]
fn roles_and_hosts_flags_select_exactly_those_hosts() {
    let fleet = Fleet::start(3);
    let file = fleet.deployfile(
        &[&["web"][..], &["web", "db"], &["db"]],
        &marker_task("t", ""),
    );
    let file = file.to_str().unwrap();
    let ran = |fleet: &Fleet| -> Vec<String> {
        fleet
            .hosts
            .iter()
            .filter(|h| std::fs::remove_file(h.deploy_to.join("t.ran")).is_ok())
            .map(|h| h.name.clone())
            .collect()
    };
    fleet
        .deployr(&["-f", file, "--roles", "db", "run", "t"])
        .expect_code(0);
    assert_eq!(ran(&fleet), ["web2", "web3"]);
    fleet
        .deployr(&["-f", file, "run", "t", "--hosts", "web1,web3"])
        .expect_code(0);
    assert_eq!(ran(&fleet), ["web1", "web3"]);
    fleet
        .deployr(&[
            "-f",
            file,
            "run",
            "t",
            "--hosts",
            "web1,web2",
            "--roles",
            "db",
        ])
        .expect_code(0);
    assert_eq!(ran(&fleet), ["web2"]);
}

#[test]
fn failing_command_names_host_step_and_status_and_the_others_finish() {
    let fleet = Fleet::start(3);
    let file = fleet.deployfile(
        &[],
        "[tasks.migrate]\nrun = \"if [ {{host}} = web2 ]; then echo 'relation missing' >&2; exit 3; fi; sleep 0.5; touch {{deploy_to}}/done\"\n\n[tasks.never]\nrun = \"true\"\n",
    );
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "run", "migrate"]);
    run.expect_code(1);
    let all = run.all();
    assert!(all.contains("web2"), "{all}");
    assert!(all.contains("`migrate` failed"), "{all}");
    assert!(all.contains("exit status 3"), "{all}");
    assert!(all.contains("relation missing"), "stderr tail shown: {all}");
    assert!(fleet.host("web1").deploy_to.join("done").exists());
    assert!(fleet.host("web3").deploy_to.join("done").exists());
    assert!(!fleet.host("web2").deploy_to.join("done").exists());
}

#[test]
fn unknown_host_key_under_strict_exits_3_and_runs_nothing_anywhere() {
    let fleet = Fleet::start(3);
    let lines: Vec<&str> = fleet
        .hosts
        .iter()
        .filter(|h| h.name != "web3")
        .map(|h| h.known_hosts_line.as_str())
        .collect();
    std::fs::write(&fleet.known_hosts, lines.join("\n") + "\n").unwrap();
    let file = fleet.deployfile(&[], &marker_task("t", ""));
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "run", "t"]);
    run.expect_code(3);
    assert!(run.stderr.contains("web3"), "{}", run.stderr);
    assert!(run.stderr.contains("not in"), "{}", run.stderr);
    for host in &fleet.hosts {
        assert!(host.read("t.ran").is_empty(), "{} ran the task", host.name);
    }
}

#[test]
fn accept_new_learns_an_unknown_host_key() {
    let fleet = Fleet::start(1);
    std::fs::write(&fleet.known_hosts, "").unwrap();
    let file = fleet.deployfile(&[], &marker_task("t", ""));
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("[ssh]\n", "[ssh]\nknown_hosts = \"accept-new\"\n");
    let file = fleet.write("accept.toml", &text);
    fleet
        .deployr(&["-f", file.to_str().unwrap(), "run", "t"])
        .expect_code(0);
    // The line is hashed or not as HashKnownHosts says (Debian's /etc/ssh/ssh_config says
    // yes); either way OpenSSH must find the host in it.
    let learnt = std::fs::read_to_string(&fleet.known_hosts).unwrap();
    let port = fleet.hosts[0].port;
    let found = std::process::Command::new("ssh-keygen")
        .args(["-F", &format!("[127.0.0.1]:{port}"), "-f"])
        .arg(&fleet.known_hosts)
        .output()
        .unwrap();
    let expected_key = fleet.hosts[0].known_hosts_line.split_once(' ').unwrap().1;
    assert!(
        found.status.success() && String::from_utf8_lossy(&found.stdout).contains(expected_key),
        "ssh-keygen -F does not find the learnt key in:\n{learnt}"
    );
    assert_eq!(fleet.hosts[0].read("t.ran"), "ran\n");
}

#[test]
fn changed_host_key_is_refused_even_with_accept_new() {
    let fleet = Fleet::start(2);
    let impostor = fleet.dir.path().join("impostor");
    keygen(&impostor);
    let impostor_key = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let mut fields = impostor_key.split_whitespace();
    let impostor_key = format!("{} {}", fields.next().unwrap(), fields.next().unwrap());
    let known = format!(
        "{}\n[127.0.0.1]:{} {impostor_key}\n",
        fleet.hosts[0].known_hosts_line, fleet.hosts[1].port
    );
    std::fs::write(&fleet.known_hosts, known).unwrap();
    let file = fleet.deployfile(&[], &marker_task("t", ""));
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("[ssh]\n", "[ssh]\nknown_hosts = \"accept-new\"\n");
    let file = fleet.write("accept.toml", &text);
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "run", "t"]);
    run.expect_code(3);
    assert!(run.stderr.contains("web2"), "{}", run.stderr);
    assert!(run.stderr.contains("HOST KEY CHANGED"), "{}", run.stderr);
    assert!(fleet.hosts[0].read("t.ran").is_empty());
    assert!(fleet.hosts[1].read("t.ran").is_empty());
}

#[test]
fn wrong_client_key_exits_3_naming_the_host_and_what_was_tried() {
    let fleet = Fleet::start(2);
    let stranger = fleet.dir.path().join("stranger");
    keygen(&stranger);
    let file = fleet.deployfile(&[], &marker_task("t", ""));
    let text = std::fs::read_to_string(&file).unwrap().replace(
        &fleet.client_key.display().to_string(),
        &stranger.display().to_string(),
    );
    let file = fleet.write("stranger.toml", &text);
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "run", "t"]);
    run.expect_code(3);
    assert!(run.stderr.contains("web1"), "{}", run.stderr);
    assert!(run.stderr.contains("authentication"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("key {} (rejected", stranger.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn closed_port_fails_that_host_and_nothing_runs() {
    let fleet = Fleet::start(2);
    let closed = crate::support::free_port();
    let file = fleet.deployfile(&[], &marker_task("t", ""));
    let text = std::fs::read_to_string(&file).unwrap().replace(
        &format!("port = {}", fleet.hosts[1].port),
        &format!("port = {closed}"),
    );
    let file = fleet.write("closed.toml", &text);
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "run", "t"]);
    run.expect_code(3);
    assert!(
        run.stderr
            .contains(&format!("web2: cannot reach 127.0.0.1:{closed}")),
        "{}",
        run.stderr
    );
    assert!(fleet.hosts[0].read("t.ran").is_empty());
}

#[test]
fn silent_host_fails_within_connect_timeout() {
    let fleet = Fleet::start(1);
    // Accepts TCP connections but never speaks SSH, like a hung server.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let file = fleet.deployfile(&[], &marker_task("t", ""));
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("connect_timeout = \"30s\"", "connect_timeout = \"1s\"")
        + &format!("\n[hosts.silent]\naddress = \"127.0.0.1\"\nport = {port}\n");
    let file = fleet.write("silent.toml", &text);
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "run", "t"]);
    run.expect_code(3);
    assert!(
        run.stderr.contains(&format!(
            "silent: no SSH answer from 127.0.0.1:{port} within 1s"
        )),
        "{}",
        run.stderr
    );
    drop(silent);
}

#[test]
fn shell_syntax_in_outside_values_is_never_executed() {
    let fleet = Fleet::start(1);
    let pwned = fleet.dir.path().join("pwned");
    let injection = format!("main; touch {}", pwned.display());
    let file = fleet.deployfile(
        &[],
        "[env]\nBRANCH = { from_env = \"DEPLOYR_TEST_BRANCH\" }\n\n[tasks.show]\nrun = \"echo branch=$BRANCH\"\n",
    );
    let mut command = fleet.command(&["-f", file.to_str().unwrap(), "run", "show"]);
    command.env("DEPLOYR_TEST_BRANCH", &injection);
    let run = crate::support::Run::from(command.output().unwrap());
    run.expect_code(0);
    assert!(!pwned.exists(), "the injected command ran");
    assert!(run.stdout.contains("branch=***"), "{}", run.stdout);

    let bad_ref = fleet.deployfile(
        &[],
        &format!("[source]\nrepo = \"/x\"\nref = \"{injection}\"\n\n[tasks.t]\nrun = \"true\"\n"),
    );
    let run = fleet.deployr(&["-f", bad_ref.to_str().unwrap(), "run", "t"]);
    run.expect_code(2);
    assert!(run.stderr.contains("is not a git ref"), "{}", run.stderr);
    assert!(!pwned.exists());
}

/// Strips the time and host columns so runs on different transports compare line by line;
/// sorted, since lines from stdout and stderr travel separately and may interleave either way.
fn normalized(stdout: &str, host: &str) -> Vec<String> {
    let mut lines: Vec<String> = stdout
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(_, rest)| rest))
        .filter_map(|rest| rest.strip_prefix(&format!("{host} ")))
        .filter(|rest| !rest.contains(" - ok in ") && !rest.contains(" - FAILED"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn local_transport_behaves_like_ssh() {
    let fleet = Fleet::start(1);
    let local_dir = fleet.dir.path().join("local-srv");
    std::fs::create_dir_all(&local_dir).unwrap();
    let body = format!(
        "[hosts.here]\naddress = \"local\"\ndeploy_to = \"{}\"\n\n\
         [tasks.talk]\nrun = \"echo out; echo err >&2; printf 'no newline'\"\n\n\
         [tasks.fail]\nrun = \"echo before; exit 7\"\n",
        local_dir.display()
    );
    let file = fleet.deployfile(&[], &body);
    let file = file.to_str().unwrap();
    for task in ["talk", "fail"] {
        let remote = fleet.deployr(&["-f", file, "--hosts", "web1", "run", task]);
        let local = fleet.deployr(&["-f", file, "--hosts", "here", "run", task]);
        assert_eq!(remote.code, local.code, "{task}: exit codes differ");
        assert_eq!(
            normalized(&remote.stdout, "web1"),
            normalized(&local.stdout, "here"),
            "{task}: output differs"
        );
        if task == "fail" {
            assert!(remote.stderr.contains("exit status 7"));
            assert!(local.stderr.contains("exit status 7"));
        }
    }
}

#[test]
fn one_connection_per_host_serves_every_command() {
    let fleet = Fleet::start(2);
    let file = fleet.deployfile(
        &[],
        "[[check]]\nname = \"one\"\nrun = \"true\"\n\n[[check]]\nname = \"two\"\nrun = \"true\"\n",
    );
    fleet
        .deployr(&["-f", file.to_str().unwrap(), "check"])
        .expect_code(0);
    for host in &fleet.hosts {
        let log = host.log();
        let logins = log.matches("Accepted publickey").count();
        assert_eq!(
            logins, 1,
            "{}: {logins} logins for probe + two checks\n{log}",
            host.name
        );
    }
}

#[test]
fn check_reports_every_host_and_changes_nothing() {
    let fleet = Fleet::start(2);
    let file = fleet.deployfile(&[], "");
    let before: Vec<_> = fleet
        .hosts
        .iter()
        .map(|h| std::fs::read_dir(&h.deploy_to).unwrap().count())
        .collect();
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "check"]);
    run.expect_code(0);
    for host in &fleet.hosts {
        let row = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{} ", host.name)))
            .unwrap_or_else(|| panic!("no row for {}: {}", host.name, run.stdout));
        assert!(row.contains(&format!("127.0.0.1:{}", host.port)), "{row}");
        assert!(row.contains("ok"), "{row}");
        assert!(row.contains("writable"), "{row}");
        assert!(row.contains("git version"), "{row}");
    }
    let after: Vec<_> = fleet
        .hosts
        .iter()
        .map(|h| std::fs::read_dir(&h.deploy_to).unwrap().count())
        .collect();
    assert_eq!(before, after);
}

/// One host whose sshd is down: `check` still probes the others (in one session, in
/// deployfile order), names the dead one in the table, runs no `[[check]]` anywhere, exits 3.
#[test]
fn check_probes_the_reachable_hosts_and_names_an_unreachable_one() {
    let mut fleet = Fleet::start(3);
    let marker = fleet.dir.path().join("service-checked");
    let file = fleet.deployfile(
        &[],
        &format!(
            "[[check]]\nname = \"service\"\nrun = \"touch {}\"\n",
            marker.display()
        ),
    );
    fleet.hosts[1].kill();
    let started = std::time::Instant::now();
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "check"]);
    run.expect_code(3);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let rows: Vec<&str> = ["web1", "web2", "web3"]
        .iter()
        .map(|name| {
            run.stdout
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no row for {name}: {}", run.stdout))
        })
        .collect();
    assert!(rows[0].contains("writable"), "{}", rows[0]);
    assert!(rows[1].contains("FAILED: unreachable"), "{}", rows[1]);
    assert!(rows[2].contains("writable"), "{}", rows[2]);
    let order: Vec<usize> = rows
        .iter()
        .map(|row| run.stdout.find(row).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", run.stdout);
    assert!(
        !marker.exists(),
        "no [[check]] runs while a host is unreachable"
    );
}

#[test]
fn check_fails_when_a_service_check_fails() {
    let fleet = Fleet::start(2);
    let file = fleet.deployfile(
        &[&["web"], &["db"]],
        "[[check]]\nname = \"database\"\nrun = \"echo 'no response' >&2; exit 2\"\nroles = [\"db\"]\n",
    );
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "check"]);
    run.expect_code(1);
    assert!(run.stderr.contains("`database` failed"), "{}", run.stderr);
    assert!(run.stderr.contains("web2: exit status 2"), "{}", run.stderr);
}

#[test]
fn dry_run_prints_each_command_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let closed = crate::support::free_port();
    std::fs::write(
        dir.path().join("deployfile.toml"),
        format!(
            "[app]\nname = \"shop\"\ndeploy_to = \"/srv/shop\"\n\n[hosts.web1]\naddress = \"127.0.0.1\"\nport = {closed}\n\n\
             [hosts.web2]\naddress = \"127.0.0.1\"\nport = {closed}\n\n[tasks.backup]\nrun = \"pg_dump shop > {{{{shared_path}}}}/x.sql\"\n"
        ),
    )
    .unwrap();
    let run = deployr_in(dir.path(), &["--dry-run", "run", "backup"]);
    run.expect_code(0);
    for host in ["web1", "web2"] {
        assert!(
            run.stdout.contains(&format!(
                "{host} backup $ export deployr_command='pg_dump shop > /srv/shop/shared/x.sql'"
            )),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains(&format!("{host} backup $ cd /srv/shop/current")),
            "{}",
            run.stdout
        );
    }
}

/// Every step of a command runs in one shell per host; a step that reads its input must find
/// nothing there (not the steps after it), and the next step must still run.
#[test]
fn a_step_that_reads_its_input_finds_it_empty_and_the_next_step_runs() {
    let d = crate::support::setup(
        "",
        "[[prepare]]\nname = \"reader\"\nrun = \"cat > {{deploy_to}}/read-by-step; echo read-done\"\n\n\
         [[prepare]]\nname = \"next\"\nrun = \"touch {{deploy_to}}/next-ran\"\n",
    );
    let run = d.deployr(&["--no-progress", "prepare"]);
    run.expect_code(0);
    for host in &d.fleet.hosts {
        assert_eq!(host.read("read-by-step"), "", "{}", host.name);
        assert!(host.deploy_to.join("next-ran").exists(), "{}", host.name);
    }
}

/// A step with a shell syntax error fails alone: the host's shell goes on to release the lock.
#[test]
fn a_step_with_a_syntax_error_fails_alone_and_the_lock_is_released() {
    let d = crate::support::setup(
        "",
        "[[prepare]]\nname = \"broken\"\nrun = \"echo 'unclosed\"\n",
    );
    let run = d.deployr(&["--no-progress", "prepare"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("step `broken` failed on 3 hosts"),
        "{}",
        run.stderr
    );
    assert!(run.all().contains("unexpected EOF"), "{}", run.all());
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    for host in &d.fleet.hosts {
        assert!(host.read(".deployr/prepared").is_empty());
    }
}
