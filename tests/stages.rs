//! Stages: one deployfile, `[stages.staging]` and `[stages.production]`, each with its own hosts,
//! `deploy_to` and variables; `--stage` or `DEPLOYR_STAGE` picks one.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::support::{Fleet, Run, SourceRepo, SshHost, deployr_in};

/// `[stages.STAGE.hosts.NAME]` for a fleet host; `deploy_to` only when given (otherwise the
/// stage's or the top level's applies).
fn stage_host(stage: &str, host: &SshHost, deploy_to: Option<&Path>) -> String {
    let mut text = format!(
        "\n[stages.{stage}.hosts.{}]\naddress = \"127.0.0.1\"\nport = {}\n",
        host.name, host.port
    );
    if let Some(path) = deploy_to {
        text.push_str(&format!("deploy_to = \"{}\"\n", path.display()));
    }
    text
}

/// Four hosts: web1 and web2 in staging, web3 and web4 in production. The first host of each
/// stage uses the stage's `deploy_to`, the second its own (every sshd shares this machine's
/// filesystem, so two hosts cannot share one `deploy_to`). A prepare step records the stage,
/// a variable the stage overrides, `deploy_to` and the host in the release.
struct Stages {
    fleet: Fleet,
    file: PathBuf,
    /// `[stages.staging.app] deploy_to` and `[stages.production.app] deploy_to`.
    staging_dir: PathBuf,
    production_dir: PathBuf,
}

impl Stages {
    fn new() -> Stages {
        let fleet = Fleet::start(4);
        let repo = SourceRepo::create(fleet.dir.path());
        let staging_dir = fleet.dir.path().join("staging");
        let production_dir = fleet.dir.path().join("production");
        let hosts = &fleet.hosts;
        let text = format!(
            "[app]\nname = \"shop\"\ndeploy_to = \"/nonexistent\"\n\n{ssh}\n\
             [source]\nrepo = \"{repo}\"\n\n\
             [vars]\ncolor = \"grey\"\nsize = \"large\"\n\n\
             [[prepare]]\nname = \"mark\"\n\
             run = \"echo {{{{stage}}}} {{{{color}}}} {{{{size}}}} {{{{deploy_to}}}} {{{{host}}}} > marker\"\n\n\
             [stages.staging]\napp.deploy_to = \"{staging}\"\n\n\
             [stages.staging.vars]\ncolor = \"green\"\n{web1}{web2}\n\
             [stages.production]\napp.deploy_to = \"{production}\"\nvars.color = \"blue\"\n{web3}{web4}",
            ssh = fleet.ssh_section(),
            repo = repo.path.display(),
            staging = staging_dir.display(),
            production = production_dir.display(),
            web1 = stage_host("staging", &hosts[0], None),
            web2 = stage_host("staging", &hosts[1], Some(&hosts[1].deploy_to)),
            web3 = stage_host("production", &hosts[2], None),
            web4 = stage_host("production", &hosts[3], Some(&hosts[3].deploy_to)),
        );
        let file = fleet.write("deployfile.toml", &text);
        Stages {
            fleet,
            file,
            staging_dir,
            production_dir,
        }
    }

    fn deployr(&self, args: &[&str]) -> Run {
        let mut all = vec!["-f", self.file.to_str().unwrap()];
        all.extend_from_slice(args);
        self.fleet.deployr(&all)
    }

    /// Each host's `deploy_to` in its stage, web1 to web4.
    fn deploy_tos(&self) -> [PathBuf; 4] {
        let hosts = &self.fleet.hosts;
        [
            self.staging_dir.clone(),
            hosts[1].deploy_to.clone(),
            self.production_dir.clone(),
            hosts[3].deploy_to.clone(),
        ]
    }

    /// What the prepare step wrote into each host's current release ("" when nothing is live).
    fn markers(&self) -> Vec<String> {
        self.deploy_tos()
            .iter()
            .map(|dir| {
                std::fs::read_to_string(dir.join("current/marker"))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .collect()
    }

    /// Whether anyone logged in to the host at all.
    fn logged_in(&self, host: usize) -> bool {
        self.fleet.hosts[host].log().contains("Accepted publickey")
    }
}

#[test]
fn each_stage_deploys_to_its_own_hosts_with_its_own_deploy_to_and_vars() {
    let s = Stages::new();
    let [staging, web2, production, web4] = s.deploy_tos().map(|p| p.display().to_string());

    s.deployr(&["--stage", "staging", "deploy"]).expect_code(0);
    assert_eq!(
        s.markers(),
        [
            format!("staging green large {staging} web1"),
            format!("staging green large {web2} web2"),
            String::new(),
            String::new(),
        ]
    );
    assert!(
        !s.logged_in(2) && !s.logged_in(3),
        "production hosts were contacted"
    );
    assert!(
        !s.production_dir.exists(),
        "production's deploy_to was created"
    );
    assert!(!Path::new(&web4).join("releases").exists());

    let run = s
        .fleet
        .command(&["-f", s.file.to_str().unwrap(), "deploy"])
        .env("DEPLOYR_STAGE", "production")
        .output()
        .expect("run deployr");
    Run::from(run).expect_code(0);
    let markers = s.markers();
    assert_eq!(
        markers[2..],
        [
            format!("production blue large {production} web3"),
            format!("production blue large {web4} web4"),
        ]
    );
    assert_eq!(
        markers[0],
        format!("staging green large {staging} web1"),
        "staging is untouched"
    );
    let staging_releases = std::fs::read_dir(s.staging_dir.join("releases")).unwrap();
    assert_eq!(
        staging_releases.count(),
        1,
        "production deployed to staging"
    );
}

#[test]
fn status_with_a_stage_shows_only_that_stages_hosts() {
    let s = Stages::new();
    let run = s.deployr(&["status", "--stage", "staging", "--json"]);
    run.expect_code(0);
    let checked: Vec<String> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["event"] == "host_checked")
        .map(|event| event["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(checked, ["web1", "web2"], "{}", run.stdout);
    assert!(!run.all().contains("web3") && !run.all().contains("web4"));
    assert!(
        !s.logged_in(2) && !s.logged_in(3),
        "production hosts were contacted"
    );
}

/// A deployfile with two stages, each with one local host, and nothing else wrong.
const TWO_STAGES: &str = r#"[app]
name = "shop"
deploy_to = "/srv/shop"

[tasks.x]
run = "true"

[stages.staging.hosts.s1]
address = "local"

[stages.production.hosts.p1]
address = "local"
"#;

fn project(toml: &str) -> TempDir {
    let dir = TempDir::new().expect("temp dir");
    std::fs::write(dir.path().join("deployfile.toml"), toml).expect("write deployfile");
    dir
}

#[test]
fn a_deployfile_with_stages_needs_a_stage_and_lists_them() {
    let dir = project(TWO_STAGES);
    let run = deployr_in(dir.path(), &["run", "x"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("this deployfile has stages (staging, production)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--stage"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn an_unknown_stage_is_refused_with_a_suggestion() {
    let dir = project(TWO_STAGES);
    let run = deployr_in(dir.path(), &["--stage", "prodution", "run", "x"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("there is no stage `prodution`; this deployfile has staging, production"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("did you mean `production`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_stage_for_a_deployfile_without_stages_is_refused() {
    let dir = project(
        "[app]\nname = \"a\"\ndeploy_to = \"/srv/a\"\n\n[hosts.h]\naddress = \"local\"\n\n[tasks.x]\nrun = \"true\"\n",
    );
    let run = deployr_in(dir.path(), &["--stage", "staging", "run", "x"]);
    run.expect_code(2);
    assert!(run.stderr.contains("defines no [stages]"), "{}", run.stderr);
}

/// Errors in a stage name the stage's own line and column, and quote that line.
#[test]
fn errors_inside_a_stage_point_at_their_line_in_the_stage() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (what is replaced in TWO_STAGES, by what, the offending text, a message part)
        (
            "[stages.production.hosts.p1]\n",
            "[stages.production.ssh]\nport = 70000\n\n[stages.production.hosts.p1]\n",
            "70000",
            "port must be between 1 and 65535",
        ),
        (
            "[stages.production.hosts.p1]\naddress",
            "[stages.production.hosts.p1]\nadress",
            "adress",
            "did you mean `address`?",
        ),
        (
            "[stages.production.hosts.p1]\n",
            "[stages.production.app]\nkeep_release = 3\n\n[stages.production.hosts.p1]\n",
            "keep_release",
            "did you mean `keep_releases`?",
        ),
        (
            "[stages.production.hosts.p1]\n",
            "[stages.production]\nhostz.p2.address = \"local\"\n\n[stages.production.hosts.p1]\n",
            "hostz",
            "did you mean `hosts`?",
        ),
    ];
    for (from, to, offending, message) in cases {
        let toml = TWO_STAGES.replace(from, to);
        let offset = toml.find(offending).unwrap();
        let line = toml[..offset].matches('\n').count() + 1;
        let column = offset - toml[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
        let dir = project(&toml);
        let run = deployr_in(dir.path(), &["--stage", "production", "run", "x"]);
        run.expect_code(2);
        let location = format!("deployfile.toml:{line}:{column}: ");
        let quoted = format!("{line} | {}", toml.lines().nth(line - 1).unwrap());
        for expected in [location.as_str(), quoted.as_str(), message] {
            assert!(
                run.stderr.contains(expected),
                "[{offending}] lacks `{expected}`:\n{}",
                run.stderr
            );
        }
    }
}
