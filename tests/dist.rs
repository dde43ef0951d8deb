//! The release build: one statically linked binary that names its commit and deploys as the
//! ordinary build does. `scripts/test.sh` builds it first with `scripts/dist.sh`.

use std::path::Path;
use std::process::Command;

use crate::support::{Run, setup};

#[test]
fn the_static_release_binary_names_its_commit_and_runs_a_task_on_the_test_hosts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = root.join("target/dist/deployr");
    assert!(
        binary.exists(),
        "{} is missing: `bash scripts/dist.sh --profile dev` builds it (scripts/test.sh does)",
        binary.display()
    );
    let ldd = Command::new("ldd").arg(&binary).output().expect("ldd");
    let linkage =
        String::from_utf8_lossy(&ldd.stdout).into_owned() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        linkage.contains("statically linked") || linkage.contains("not a dynamic executable"),
        "{linkage}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let version = Command::new(&binary).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.contains(&format!("({head}")),
        "{version} is not from {head}"
    );

    let d = setup(
        "",
        "[tasks.hello]\nrun = \"echo hello from $(hostname) on {{host}}\"\n",
    );
    let mut command = Command::new(&binary);
    command
        .args(["-f", d.file.to_str().unwrap(), "run", "hello"])
        .current_dir(d.fleet.dir.path())
        .env("HOME", &d.fleet.home)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::null());
    let run = Run::from(command.output().unwrap());
    run.expect_code(0);
    for host in ["web1", "web2", "web3"] {
        assert!(run.stdout.contains(&format!("on {host}")), "{}", run.stdout);
    }
}
