//! Secrets stay secret: never in any output mode, in errors, in files deployr writes on hosts,
//! or in any process's argv; and a secret too short to mask is refused.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Fleet, Run, deployr_in, finish, setup, wait_for};

/// A private key's shape: BEGIN/END lines, base64 lines, an indented one and a short last one.
const PEM: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDx7Qe0jXh4r8nVbq0v4qG2bVtP3sVqO8YpW1aZk2yTnwAAAJi8h2bQvIdm
  0AAAAAtzc2gtZWQyNTUxOQAAACDx7Qe0jXh4r8nVbq0v4qG2bVtP3sVqO8YpW1aZk2yT
Zg==
-----END OPENSSH PRIVATE KEY-----";

/// The pieces of the secret that must never be seen: the whole value and each of its lines.
fn pieces() -> Vec<&'static str> {
    std::iter::once(PEM)
        .chain(PEM.lines().map(str::trim))
        .collect()
}

#[track_caller]
fn assert_hidden(what: &str, text: &str) {
    for piece in pieces() {
        assert!(!text.contains(piece), "{what} shows `{piece}`:\n{text}");
    }
}

/// Every file under `dir`, as (path, bytes), symlinks not followed.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                found.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    found
}

#[test]
fn a_pem_secret_never_appears_in_any_output_mode_or_file_on_the_hosts() {
    // The step prints the key at line starts and ends, on stdout and stderr, quoted, and its
    // length (proving that the step had it); it also keeps a copy of the lock owner it ran under.
    let leak = r#"echo "len=${#DEPLOY_KEY}"; echo "$DEPLOY_KEY"; echo "$DEPLOY_KEY" >&2; echo "start:$DEPLOY_KEY:end"; echo "'$DEPLOY_KEY'" >&2; readlink ../../.deployr/lock > lock-owner"#;
    let d = setup(
        "",
        &format!(
            "[env]\nDEPLOY_KEY = {{ from_env = \"DEPLOYR_TEST_PEM\", secret = true }}\n\n\
             [[prepare]]\nname = \"leak\"\nrun = '''{leak}'''\n\n\
             [tasks.fail]\nrun = '''echo \"$DEPLOY_KEY\"; echo \"$DEPLOY_KEY\" >&2; exit 3'''\n"
        ),
    );
    let with_key = |args: &[&str]| {
        let mut all = vec!["-f", d.file.to_str().unwrap()];
        all.extend_from_slice(args);
        let mut command = d.fleet.command(&all);
        command.env("DEPLOYR_TEST_PEM", PEM);
        Run::from(command.output().unwrap())
    };
    let length = format!("len={}", PEM.len());

    let plain = with_key(&["--no-progress", "deploy"]);
    plain.expect_code(0);
    assert!(plain.stdout.contains(&length), "{}", plain.stdout);
    assert!(
        plain.stdout.contains("web1 leak | ***\n"),
        "{}",
        plain.stdout
    );
    for line in ["start:***", "***:end", "'***", "***'"] {
        let line = format!("web1 leak | {line}\n");
        assert!(plain.stdout.contains(&line), "{line}: {}", plain.stdout);
    }
    assert_hidden("plain deploy", &plain.all());

    let verbose = with_key(&["--no-progress", "-v", "prepare"]);
    verbose.expect_code(0);
    assert!(verbose.stdout.contains(&length), "{}", verbose.stdout);
    assert_hidden("-v prepare", &verbose.all());

    let json = with_key(&["--json", "deploy"]);
    json.expect_code(0);
    assert!(json.stdout.contains(r#""line":"***""#), "{}", json.stdout);
    assert_hidden("--json deploy", &json.all());

    let failed = with_key(&["--no-progress", "run", "fail"]);
    failed.expect_code(1);
    assert!(
        failed.stdout.contains("last 12 lines of output"),
        "{}",
        failed.stdout
    );
    assert_hidden("a failure's summary and error", &failed.all());

    let failed_json = with_key(&["--json", "run", "fail"]);
    failed_json.expect_code(1);
    assert_hidden("a failure in --json", &failed_json.all());

    let quiet = with_key(&["-q", "run", "fail"]);
    quiet.expect_code(1);
    assert_hidden("-q", &quiet.all());

    let dry = with_key(&["--dry-run", "deploy"]);
    dry.expect_code(0);
    assert!(dry.stdout.contains("DEPLOY_KEY=***"), "{}", dry.stdout);
    assert_hidden("--dry-run", &dry.all());

    // Progress bars on a terminal, with -v so that output lines are printed above them.
    let command = format!(
        "{} -f {} -v run fail",
        env!("CARGO_BIN_EXE_deployr"),
        d.file.display()
    );
    let terminal = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("HOME", &d.fleet.home)
        .env("DEPLOYR_TEST_PEM", PEM)
        .env("NO_COLOR", "1")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs deployr under a pseudo-terminal");
    let screen = String::from_utf8_lossy(&terminal.stdout).replace('\r', "");
    assert!(screen.contains("| ***"), "{screen}");
    assert_hidden("the terminal", &screen);

    for host in &d.fleet.hosts {
        let written = files(&host.deploy_to);
        assert!(
            written
                .iter()
                .any(|(path, _)| path.ends_with(".deployr/history")),
            "{}: no history",
            host.name
        );
        assert!(
            written
                .iter()
                .any(|(path, _)| path.ends_with("/lock-owner")),
            "{}: the lock owner was not copied",
            host.name
        );
        for (path, bytes) in written {
            let text = String::from_utf8_lossy(&bytes);
            for piece in pieces() {
                assert!(!text.contains(piece), "{path} holds `{piece}`");
            }
        }
    }
}

/// Every process whose argv holds `secret`, as "PID: argv".
fn argv_holding(secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(argv) = std::fs::read(entry.path().join("cmdline")) {
            let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
            if argv.contains(secret) {
                found.push(format!("{name}: {argv}"));
            }
        }
    }
    found
}

#[test]
fn a_secret_is_in_no_process_argv_while_a_local_or_remote_step_holding_it_runs() {
    let secret = "argv-secret-8d1f2c";
    // The scan sees a process that does hold the secret in its argv.
    let mut holder = Command::new("sh")
        .args(["-c", "sleep 30", secret])
        .spawn()
        .unwrap();
    let pid = holder.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = argv_holding(secret);
    while !seen.iter().any(|p| p.starts_with(&format!("{pid}:"))) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        seen = argv_holding(secret);
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        seen.iter().any(|p| p.starts_with(&format!("{pid}:"))),
        "{seen:?}"
    );

    let fleet = Fleet::start(1);
    let dir = fleet.dir.path();
    let (started, go) = (dir.join("started"), dir.join("go"));
    // A local step, and the same script on an `address = "local"` host and on an SSH host.
    let hold = format!(
        "[ \\\"$TOKEN\\\" = {secret} ] || exit 9; touch {started}; i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; rm -f {started}",
        started = started.display(),
        go = go.display()
    );
    let local_step = fleet.deployfile(
        &[],
        &format!(
            "[env]\nTOKEN = {{ value = \"{secret}\", secret = true }}\n\n\
             [tasks.hold]\nlocal = true\nrun = \"{hold}\"\n"
        ),
    );
    let local_host = fleet.write(
        "local-host.toml",
        &format!(
            "[app]\nname = \"shop\"\ndeploy_to = \"{}\"\n\n[hosts.here]\naddress = \"local\"\n\n\
             [env]\nTOKEN = {{ value = \"{secret}\", secret = true }}\n\n\
             [tasks.hold]\nrun = \"{hold}\"\n",
            dir.join("here").display()
        ),
    );
    // And on an SSH host (here, so its processes are in this /proc too).
    let remote = fleet.write(
        "remote.toml",
        &std::fs::read_to_string(&local_step)
            .unwrap()
            .replace("local = true\n", ""),
    );
    for file in [local_step, local_host, remote] {
        let _ = std::fs::remove_file(&go);
        let started_at = Instant::now();
        let child = fleet
            .command(&["-f", file.to_str().unwrap(), "--no-progress", "run", "hold"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(&started);
        let seen = argv_holding(secret);
        std::fs::write(&go, "").unwrap();
        let run = finish(child, Duration::from_secs(30));
        run.expect_code(0);
        assert!(
            seen.is_empty(),
            "{}: argv holding the secret: {seen:?}",
            file.display()
        );
        assert!(started_at.elapsed() < Duration::from_secs(30));
    }
}

#[test]
fn a_one_character_secret_is_refused_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let write = |env: &str| {
        std::fs::write(
            dir.path().join("deployfile.toml"),
            format!(
                "[app]\nname = \"shop\"\ndeploy_to = \"{}\"\n\n[env]\n{env}\n\n\
                 [hosts.web1]\naddress = \"local\"\n\n[tasks.x]\nrun = \"echo x=$K\"\n",
                dir.path().join("srv").display()
            ),
        )
        .unwrap();
    };
    write("API_KEY = { value = \"a\", secret = true }");
    let run = deployr_in(dir.path(), &["run", "x"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("deployfile.toml:6:11: env.API_KEY is a secret shorter than 6 characters"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("6 | API_KEY = { value = ***, secret = true }"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("\"a\""), "{}", run.stderr);

    // From the environment: refused too, unless the deployfile says it is not secret.
    write("K = { from_env = \"DEPLOYR_TEST_SHORT\" }");
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployr"));
    command
        .args(["--no-progress", "run", "x"])
        .current_dir(dir.path())
        .env("DEPLOYR_TEST_SHORT", "prod");
    let run = Run::from(command.output().unwrap());
    run.expect_code(2);
    assert!(
        run.stderr.contains("env.K is a secret shorter than 6"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("add `secret = false`"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("prod"), "{}", run.stderr);

    write("K = { from_env = \"DEPLOYR_TEST_SHORT\", secret = false }");
    let run = Run::from(command.output().unwrap());
    run.expect_code(0);
    assert!(run.stdout.contains("x=prod"), "{}", run.stdout);
}

#[test]
fn a_diagnostic_on_the_line_of_a_secret_masks_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cret-value-42";
    std::fs::write(
        dir.path().join("deployfile.toml"),
        format!(
            "[app]\nname = \"shop\"\ndeploy_to = \"/tmp/deployr-x\"\n\n[env]\n\
             TOKEN = {{ value = \"{secret}\", secert = true, secret = true }}\n\n\
             [hosts.web1]\naddress = \"local\"\n\n[tasks.x]\nrun = \"true\"\n"
        ),
    )
    .unwrap();
    let run = deployr_in(dir.path(), &["run", "x"]);
    run.expect_code(2);
    assert!(!run.all().contains(secret), "{}", run.all());
    assert!(
        run.stderr
            .contains("deployfile.toml:6:9: expected a string, or a table"),
        "{}",
        run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    let quoted = lines
        .iter()
        .position(|l| *l == "6 | TOKEN = { value = \"***\", secert = true, secret = true }")
        .unwrap_or_else(|| panic!("{}", run.stderr));
    // The carets still mark the whole table, from `{` to `}` of the masked line.
    let caret = lines[quoted + 1];
    let (open, close) = (
        lines[quoted].find('{').unwrap(),
        lines[quoted].rfind('}').unwrap(),
    );
    assert_eq!(caret.find('^'), Some(open), "{}", run.stderr);
    assert_eq!(caret.rfind('^'), Some(close), "{}", run.stderr);
}
