//! Generator tests: every script deployr runs, rendered with awkward values, must be valid for
//! every shell that may read it; and a snapshot of the scripts for one deployfile, so that a
//! change to what runs on hosts shows in review.

use crate::release_id::ReleaseId;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::deployfile::{App, Deployfile, EnvVar, Healthcheck};
use crate::inventory::{Address, Host, SshSettings};
use crate::release::Prepared;
use crate::remote::command::{self, WorkDir};
use crate::remote::{check, code, diff, fetch, finish, lock, prepared, state, switch};
use crate::template::{Template, Values};

/// `deploy_to` values that break scripts which paste values by hand.
const AWKWARD: &[&str] = &[
    "/srv/it's",
    "/srv/a b",
    "/srv/$x",
    "/srv/\"q\"",
    "/srv/ünï",
    "/srv/`id`",
    "/srv/$(id)",
    "/srv/a\\b",
    "/srv/-n",
    "/srv/*",
];

/// The shells that read deployr's scripts: `/bin/sh` (dash on Debian) runs deployr's own;
/// bash and zsh must at least parse them, as login shells often are one of them.
const SHELLS: &[&str] = &["sh", "dash", "bash", "zsh"];

const RELEASE: &str = "20261124T154100Z";

fn id(text: &str) -> ReleaseId {
    ReleaseId::parse(text).unwrap()
}
const PREVIOUS: &str = "20261124T154000Z";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn host(deploy_to: &str) -> Host {
    Host {
        name: "web1".into(),
        address: Address::Local,
        roles: vec!["web".into()],
        deploy_to: deploy_to.into(),
        vars: vec![],
        ssh: SshSettings::direct("127.0.0.1", "deploy"),
        housekeeping_timeout: Duration::from_secs(60),
    }
}

fn app(awkward: &str) -> App {
    let name = awkward.trim_start_matches("/srv/");
    App {
        name: "shop".into(),
        keep_releases: 3,
        shared_dirs: vec!["public/uploads".into(), format!("log {name}")],
        shared_files: vec![".env".into(), format!("config/{name}.yml")],
        watch: vec![],
    }
}

fn env(awkward: &str) -> Vec<EnvVar> {
    vec![EnvVar {
        name: "TOKEN".into(),
        value: format!("s3cr3t {awkward}"),
        secret: true,
    }]
}

fn values(awkward: &str) -> Values {
    let mut values = Values::default();
    values.set("deploy_to", awkward);
    values.set("ref", "x; touch /tmp/pwned");
    values
}

fn healthcheck() -> Healthcheck {
    Healthcheck {
        command: Template::parse("curl -fsS http://localhost/ | grep -q '{{release}}'").unwrap(),
        roles: None,
        attempts: 3,
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
    }
}

/// Every script builder of `remote`, each named, with `awkward` in every value it takes.
fn every_script(awkward: &str) -> Vec<(String, String)> {
    let host = host(awkward);
    let app = app(awkward);
    let env = env(awkward);
    let values = values(awkward);
    let repo = format!("ssh://git@example.com{awkward}.git");
    let reference = format!("feature/{}", awkward.trim_start_matches("/srv/"));
    let owner = format!("deployr by me@{awkward} pid=1 token=abc");
    let record = format!("{{\"by\":\"{awkward}\"}}");
    let marker = Prepared {
        release: id(RELEASE),
        commit: COMMIT.into(),
        reference: reference.clone(),
        time: RELEASE.into(),
    };
    let command = format!("echo \"{awkward}\" && echo '{awkward}'; echo $HOME");
    // Run by this machine's sh as it is: a command the deployfile's author wrote.
    let local = "printf '%s\\n' \"$DEPLOYR_DEPLOY_TO\" && echo $HOME";
    let here = |dir| command::here(dir, &env, &values, local).unwrap().finish();
    let mut scripts = vec![
        ("state", state::script(&host)),
        ("lock", lock::take(&host, &owner)),
        ("unlock", lock::give_back(&host, "abc", Some(&record))),
        ("unlock without record", lock::give_back(&host, "abc", None)),
        ("force unlock", lock::force(&host, &record)),
        ("resolve", fetch::resolve(&host, &env, &repo, &reference)),
        (
            "resolve here",
            fetch::resolve_here(
                awkward,
                &format!("{awkward}/mirror"),
                &env,
                &repo,
                &reference,
            ),
        ),
        (
            "code from git, fetching",
            code::from_git(
                &host,
                &app,
                &repo,
                Some(awkward),
                &id(RELEASE),
                COMMIT,
                true,
            ),
        ),
        (
            "code from git",
            code::from_git(&host, &app, &repo, None, &id(RELEASE), COMMIT, false),
        ),
        (
            "code from an artifact",
            code::from_artifact(&host, &app, &id(RELEASE), COMMIT, SHA256),
        ),
        ("prepared", prepared::mark(&host, &marker)),
        ("switch", switch::armed(&host, &id(RELEASE), Some(PREVIOUS))),
        ("first switch", switch::armed(&host, &id(RELEASE), None)),
        ("switch back", switch::back(&host, Some(PREVIOUS))),
        ("switch back to nothing", switch::back(&host, None)),
        (
            "finish",
            finish::script(
                &host,
                &id(RELEASE),
                &record,
                &[PREVIOUS.into()],
                Some("abc"),
            ),
        ),
        (
            "finish, nothing to prune",
            finish::script(&host, &id(RELEASE), &record, &[], None),
        ),
        ("diff", diff::on_host(&host, COMMIT, &reference)),
        ("probe", check::probe(&host, false)),
        ("probe for uploads", check::probe(&host, true)),
        (
            "task",
            command::on_host(WorkDir::Current(&host), &env, &values, &command),
        ),
        (
            "release step",
            command::on_host(WorkDir::Path(awkward), &env, &values, &command),
        ),
        (
            "healthcheck",
            command::healthcheck(WorkDir::Path(awkward), &env, &values, &healthcheck()),
        ),
    ]
    .into_iter()
    .map(|(name, script)| (name.to_string(), script.unwrap()))
    .collect::<Vec<_>>();
    scripts.push(("local step".into(), here(WorkDir::Path(awkward))));
    let mut build = code::export_here(awkward, &format!("{awkward}/mirror"), COMMIT).unwrap();
    build.append(command::here(WorkDir::Path(awkward), &env, &values, local).unwrap());
    scripts.push(("build".into(), build.finish()));
    scripts
}

/// What `shell -n` says about `script` read from its standard input: `None` when it parses.
fn syntax_error(shell: &str, script: &str) -> Option<String> {
    let mut child = Command::new(shell)
        .arg("-n")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run `{shell} -n` ({error}); scripts/test.sh installs it")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (!output.status.success() || !stderr.is_empty()).then(|| format!("{}: {stderr}", output.status))
}

#[test]
fn every_script_parses_in_every_shell_with_awkward_values() {
    let mut problems = Vec::new();
    for awkward in AWKWARD {
        for (name, script) in every_script(awkward) {
            for shell in SHELLS {
                if let Some(error) = syntax_error(shell, &script) {
                    problems.push(format!(
                        "`{shell} -n` refuses {name} with deploy_to {awkward:?}: {error}\n{script}"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn the_syntax_check_catches_a_broken_script() {
    for shell in SHELLS {
        assert!(
            syntax_error(shell, "if true; then echo \"x\n").is_some(),
            "{shell}"
        );
    }
}

#[test]
fn no_awkward_value_escapes_its_quotes() {
    // Run by dash, the quoted value comes back exactly as it went in.
    for awkward in AWKWARD {
        let host = host(awkward);
        let script = check::probe(&host, false).unwrap();
        let first = script.lines().next().unwrap();
        let output = Command::new("dash")
            .arg("-c")
            .arg(format!("{first}\nprintf '%s' \"$d\""))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout), *awkward);
    }
}

#[test]
fn user_commands_run_in_the_login_shell_whole_and_not_in_its_arguments() {
    let host = host("/srv/it's");
    let values = values("/srv/it's");
    let command = "echo \"$0\" 'it''s' \"$TOKEN\"; ps -o args= -p $$";
    let script = command::on_host(WorkDir::Current(&host), &env("x"), &values, command).unwrap();
    assert!(script.contains("cd \"/srv/it's/current\""), "{script}");
    assert!(script.contains("TOKEN='s3cr3t x'"), "{script}");
    assert!(
        script.contains("DEPLOYR_REF='x; touch /tmp/pwned'"),
        "{script}"
    );
    // Run by dash with SHELL=bash: bash runs the command, and its arguments do not hold it.
    let output = Command::new("dash")
        .arg("-c")
        .arg(&script)
        .env("SHELL", "bash")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    // First the login shell says the command begins (on stderr too), then the command runs.
    assert_eq!(
        lines.next(),
        Some(crate::remote::protocol::BEGINS),
        "{stdout}"
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        crate::remote::protocol::BEGINS
    );
    assert_eq!(lines.next(), Some("bash its s3cr3t x"), "{stdout}");
    let args = lines.next().unwrap_or_default();
    assert!(args.starts_with("bash -c"), "{stdout}");
    assert!(!args.contains("TOKEN") && !args.contains("its"), "{stdout}");
}

/// The scripts of a prepare and an activation of one representative deployfile, with fixed
/// release ids, commit and lock token.
fn representative_plan() -> String {
    let text = r#"
[app]
name = "shop"
deploy_to = "/srv/shop"
keep_releases = 3
shared_dirs = ["public/uploads", "log"]
shared_files = [".env"]

[env]
RAILS_ENV = "production"

[source]
repo = "git@example.com:shop.git"
ref = "main"

[vars]
served_by = "{{shared_path}}/log/served"

[hosts.web1]
address = "local"
roles = ["web", "db"]

[hosts.web2]
address = "local"
roles = ["web"]

[[check]]
name = "git"
run = "git --version"

[[prepare]]
name = "bundle"
run = "bundle install --deployment"

[[activate]]
name = "migrate"
run = "bin/rails db:migrate"
roles = ["db"]
once = true

[[activate]]
switch = true

[[activate]]
name = "reload"
run = "echo {{release}} > {{served_by}} && sudo systemctl reload shop"
roles = ["web"]

[healthcheck]
run = "curl -fsS http://localhost/health"
roles = ["web"]
attempts = 3
interval = "1s"
timeout = "5s"
"#;
    let deployfile = Deployfile::parse(Path::new("/project/deployfile.toml"), text, None).unwrap();
    let hosts = deployfile.hosts.clone();
    let source = deployfile.source.clone().unwrap();
    let info = crate::plan::ReleaseInfo {
        release: id(RELEASE),
        commit: COMMIT.into(),
        reference: "main".into(),
    };
    let previous = vec![Some(PREVIOUS.to_string()); hosts.len()];
    let timestamp = RELEASE;
    let token = "0123456789abcdef";
    let all: Vec<usize> = (0..hosts.len()).collect();
    let mut steps =
        crate::plan::in_current(&deployfile, &hosts, &deployfile.checks, timestamp).unwrap();
    steps.push(crate::plan::state(&hosts).unwrap());
    steps.push(crate::plan::lock(&hosts, &format!("deploy@laptop pid=1 token={token}")).unwrap());
    steps.push(
        crate::plan::resolve(
            &deployfile,
            &source,
            &hosts,
            &crate::artifact::Workspace::new("shop", "git@example.com:shop.git"),
            "main",
        )
        .unwrap(),
    );
    steps.extend(crate::plan::code(&deployfile, &source, &hosts, &info, None, &[]).unwrap());
    steps.extend(crate::plan::prepare(&deployfile, &hosts, timestamp, &info, &previous).unwrap());
    steps.extend(
        crate::plan::activate_steps(&deployfile, &hosts, false, timestamp, &info, &previous)
            .unwrap(),
    );
    steps.push(crate::plan::switch(&hosts, &all, &id(RELEASE), &previous).unwrap());
    steps.extend(
        crate::plan::activate_steps(&deployfile, &hosts, true, timestamp, &info, &previous)
            .unwrap(),
    );
    steps.extend(
        crate::plan::healthcheck(&deployfile, &hosts, timestamp, &info, &previous).unwrap(),
    );
    steps.push(crate::plan::switch_back(&hosts, &all, &previous).unwrap());
    steps.push(
        crate::plan::finish(
            &hosts,
            &all,
            &id(RELEASE),
            &|_| "{\"command\":\"activate\"}".into(),
            &|_| vec!["20261124T153900Z".into()],
            Some(token),
        )
        .unwrap(),
    );
    steps.push(crate::plan::unlock(&hosts, &all, token, &|_| None).unwrap());
    steps.push(
        crate::plan::force_unlock(&hosts, &[0], &|_| "{\"command\":\"unlock\"}".into()).unwrap(),
    );
    let mut out = String::new();
    for step in steps {
        let runs = match &step.kind {
            crate::plan::StepKind::Remote { runs, .. } | crate::plan::StepKind::Armed { runs } => {
                runs.as_slice()
            }
            _ => &[],
        };
        for run in runs {
            out.push_str(&format!(
                "### {} on {}\n{}\n\n",
                step.name, hosts[run.host].name, run.script
            ));
        }
        if let crate::plan::StepKind::Local { script, .. } = &step.kind {
            out.push_str(&format!("### {} here\n{script}\n\n", step.name));
        }
    }
    out
}

#[test]
fn scripts_of_a_prepare_and_an_activation() {
    let scripts = representative_plan();
    for shell in SHELLS {
        assert_eq!(syntax_error(shell, &scripts), None, "{shell}");
    }
    insta::assert_snapshot!(scripts);
}

/// Runs `script` with dash, `input` on its standard input, `path` as PATH.
fn dash(script: &str, input: &str, path: &str) -> (bool, String, String) {
    // Found on this process's PATH: the child's PATH may lack it.
    let dash = ["/usr/bin/dash", "/bin/dash"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("dash, which scripts/test.sh installs");
    let mut child = Command::new(dash)
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dash");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

#[test]
fn lock_switch_finish_and_back_work_in_dash_in_an_awkward_deploy_to() {
    let dir = tempfile::tempdir().unwrap();
    // A PATH with what the scripts use but perl, so the shell's own switch runs too.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["mkdir", "rm", "ln", "mv", "readlink", "tail", "sed"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool}"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    let without_perl = bin.to_string_lossy().into_owned();
    let with_perl = std::env::var("PATH").unwrap();
    let root = dir.path().join("it's a \"$HOME\" `dir`");
    let host = host(&root.to_string_lossy());
    let release = root.join("releases").join(RELEASE);
    std::fs::create_dir_all(&release).unwrap();
    std::fs::create_dir_all(root.join("releases").join(PREVIOUS)).unwrap();
    // An entry named like the old temporary link is left alone.
    std::fs::create_dir_all(root.join("releases/current")).unwrap();

    let (ok, out, err) = dash(
        &lock::take(&host, "me token=abc").unwrap(),
        "",
        &without_perl,
    );
    assert!(ok, "{err}");
    let state = state::parse(&lines(&out));
    assert!(state.lock_taken, "{out}");
    assert_eq!(state.lock.as_deref(), Some("me token=abc"));
    assert_eq!(state.releases.len(), 2, "{out}");

    for (path, to, previous) in [
        (&without_perl, PREVIOUS, None),
        (&with_perl, RELEASE, Some(PREVIOUS)),
    ] {
        let script = switch::armed(&host, &id(to), previous).unwrap();
        let (ok, out, err) = dash(&script, "go\ndone\n", path);
        assert!(ok, "{err}");
        assert_eq!(out, "armed\nswitched\n");
        let current = std::fs::read_link(root.join("current")).unwrap();
        assert_eq!(current, root.join("releases").join(to));
    }
    let (ok, out, _) = dash(&state::script(&host).unwrap(), "", &without_perl);
    assert!(ok);
    let state = state::parse(&lines(&out));
    assert_eq!(state.current.as_deref(), Some(RELEASE));
    let journal = state.activating.unwrap();
    assert_eq!(journal.previous.as_deref(), Some(PREVIOUS));

    // Called off: nothing changes, the journal goes.
    let script = switch::armed(&host, &id(PREVIOUS), Some(RELEASE)).unwrap();
    let (ok, out, err) = dash(&script, "stop\n", &without_perl);
    assert!(!ok);
    assert_eq!(out, "armed\n");
    assert!(err.contains("called off"), "{err}");
    assert_eq!(std::fs::read_link(root.join("current")).unwrap(), release);

    let record = "{\"command\":\"activate\"}";
    let finish = finish::script(&host, &id(RELEASE), record, &[], Some("abc")).unwrap();
    let (ok, _, err) = dash(&finish, "", &without_perl);
    assert!(ok, "{err}");
    assert!(root.join(".deployr/lock").symlink_metadata().is_err());
    let history = std::fs::read_to_string(root.join(".deployr/history")).unwrap();
    assert_eq!(history, format!("{record}\n"));

    let (ok, _, err) = dash(&switch::back(&host, None).unwrap(), "", &without_perl);
    assert!(ok, "{err}");
    assert!(root.join("current").symlink_metadata().is_err());
    assert!(root.join("releases/current").is_dir());
}

#[test]
fn an_artifact_is_checked_unpacked_and_linked_in_dash_in_an_awkward_deploy_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var("PATH").unwrap();
    let root = dir.path().join("it's a \"$HOME\" `dir`");
    let host = host(&root.to_string_lossy());
    let app = app("/srv/it's");
    // The artifact: one file, packed with tar as deployr's own packer would.
    let files = dir.path().join("files");
    std::fs::create_dir_all(files.join("public")).unwrap();
    std::fs::write(files.join("VERSION"), "1\n").unwrap();
    let artifacts = root.join(".deployr/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::create_dir_all(root.join("shared/config")).unwrap();
    std::fs::write(root.join("shared/.env"), "A=1\n").unwrap();
    std::fs::write(root.join("shared/config/it's.yml"), "x: 1\n").unwrap();
    let packed = dir.path().join("a.tar.gz");
    let tar = Command::new("tar")
        .arg("-czf")
        .arg(&packed)
        .arg("-C")
        .arg(&files)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let bytes = std::fs::read(&packed).unwrap();
    let sha = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    std::fs::write(artifacts.join(format!("{sha}.tar.gz")), &bytes).unwrap();
    std::fs::write(artifacts.join("old.tar.gz"), "old").unwrap();

    let script = code::from_artifact(&host, &app, &id(RELEASE), COMMIT, &sha).unwrap();
    let (ok, _, err) = dash(&script, "", &path);
    assert!(ok, "{err}");
    let release = root.join("releases").join(RELEASE);
    assert_eq!(
        std::fs::read_to_string(release.join("VERSION")).unwrap(),
        "1\n"
    );
    assert_eq!(
        std::fs::read_to_string(release.join("REVISION")).unwrap(),
        format!("{COMMIT}\n")
    );
    for linked in ["public/uploads", "log it's", ".env", "config/it's.yml"] {
        assert_eq!(
            std::fs::read_link(release.join(linked)).unwrap(),
            root.join("shared").join(linked),
            "{linked}"
        );
    }
    assert!(!artifacts.join("old.tar.gz").exists());

    let marker = Prepared {
        release: id(RELEASE),
        commit: COMMIT.into(),
        reference: "main".into(),
        time: RELEASE.into(),
    };
    let (ok, _, err) = dash(&prepared::mark(&host, &marker).unwrap(), "", &path);
    assert!(ok, "{err}");
    let (ok, out, _) = dash(&state::script(&host).unwrap(), "", &path);
    assert!(ok);
    let state = state::parse(&lines(&out));
    assert_eq!(state.prepared, Some(marker));
    assert!(state.ready.contains(RELEASE));
    assert_eq!(state.artifacts, std::slice::from_ref(&sha));
    assert_eq!(state.commit_of(RELEASE), Some(COMMIT));

    // A damaged artifact is refused and removed.
    std::fs::write(artifacts.join(format!("{sha}.tar.gz")), "damaged").unwrap();
    let script = code::from_artifact(&host, &app, &id(RELEASE), COMMIT, &sha).unwrap();
    let (ok, _, err) = dash(&script, "", &path);
    assert!(!ok);
    assert!(err.contains("the uploaded artifact is damaged"), "{err}");
    assert!(err.contains(&format!("not {sha};")), "{err}");
    assert!(!artifacts.join(format!("{sha}.tar.gz")).exists());
}

/// Two deployrs race for the lock: the other one's `ln -s` lands between this script's test
/// and its own `ln -s`. The loser finds the lock held, by the winner, like any later comer (so
/// `--lock-wait` waits and exit 4 names the holder), not a failure to take a free lock.
#[test]
fn losing_the_race_for_the_lock_finds_it_held_by_the_winner() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in ["mkdir", "readlink", "tail", "sed"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool}"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    // `ln` as the winner makes it: its own lock first, then this script's attempt fails.
    let real_ln = ["/usr/bin/ln", "/bin/ln"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    std::fs::write(
        bin.join("ln"),
        format!("#!/bin/sh\n{real_ln} -s 'winner token=w' \"$3\"\nexec {real_ln} \"$@\"\n"),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(bin.join("ln")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(bin.join("ln"), permissions).unwrap();
    let host = host(&dir.path().join("srv").to_string_lossy());
    let (ok, out, err) = dash(
        &lock::take(&host, "loser token=l").unwrap(),
        "",
        &bin.to_string_lossy(),
    );
    assert!(ok, "{err}");
    let state = state::parse(&lines(&out));
    assert!(!state.lock_taken, "{out}");
    assert_eq!(state.lock_error, None, "{out}");
    assert_eq!(state.lock.as_deref(), Some("winner token=w"), "{out}");
}
