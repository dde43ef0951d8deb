//! `[source] strategy = "upload"`: built once here, uploaded over SFTP to real sshd hosts.

use std::path::Path;

use crate::dry_run;
use crate::support::{Deploy, Fleet, SourceRepo, sessions_without};

/// A deploy of `repo` whose build copies VERSION into `dist/` with the commit beside it.
fn upload_deploy(fleet: Fleet, prepare: &str) -> Deploy {
    let repo = SourceRepo::create(fleet.dir.path());
    let body = format!(
        "[source]\nrepo = \"{}\"\nref = \"main\"\nstrategy = \"upload\"\n\
         build = \"mkdir -p dist/sub && cp VERSION dist/ && echo {{{{commit}}}} > dist/sub/BUILT && ln -s sub/BUILT dist/link\"\n\
         artifact = \"dist\"\n\n{prepare}",
        repo.path.display()
    );
    let file = fleet.deployfile(&[&["web"], &["web"], &["web"]], &body);
    Deploy { fleet, repo, file }
}

/// Every file and symlink under `dir` with its content or target, for comparing trees.
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                entries.push((name, format!("-> {}", target.display())));
            } else if meta.is_dir() {
                pending.push(path);
            } else {
                entries.push((name, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    entries.sort();
    entries
}

fn bytes_sent(d: &Deploy) -> Vec<u64> {
    d.fleet
        .hosts
        .iter()
        .map(|h| h.sftp_bytes_received())
        .collect()
}

#[test]
fn upload_deploy_gives_every_host_the_same_tree_without_git_on_the_hosts() {
    let fleet = Fleet::with_config_for(&["web1", "web2", "web3"], |_, dir| {
        sessions_without(dir, &["git"])
    });
    let d = upload_deploy(
        fleet,
        "[[prepare]]\nname = \"no-git\"\nrun = \"if command -v git; then exit 1; fi\"\n",
    );
    let commit = d.repo.git(&["rev-parse", "HEAD"]);
    // The dry run builds, packs and sends nothing, and shows the steps the real run takes.
    let dry = d.deployr(&["--json", "--dry-run", "deploy"]);
    dry.expect_code(0);
    assert_eq!(bytes_sent(&d), [0, 0, 0], "a dry run sends nothing");
    assert!(dry.stdout.contains("sftp put "), "{}", dry.stdout);
    let real = d.deployr(&["--json", "deploy"]);
    real.expect_code(0);
    assert_eq!(
        dry_run::steps(&dry.stdout, "would_run"),
        dry_run::steps(&real.stdout, "step_started"),
    );
    let trees: Vec<_> = d
        .fleet
        .hosts
        .iter()
        .map(|h| tree(&h.deploy_to.join("current/")))
        .collect();
    assert_eq!(
        trees[0],
        [
            ("REVISION".to_string(), format!("{commit}\n")),
            ("VERSION".to_string(), "1\n".to_string()),
            ("link".to_string(), "-> sub/BUILT".to_string()),
            ("sub/BUILT".to_string(), format!("{commit}\n")),
        ]
    );
    assert_eq!(trees[1], trees[0]);
    assert_eq!(trees[2], trees[0]);
    for host in &d.fleet.hosts {
        assert!(
            !host.deploy_to.join("repo").exists(),
            "{} has a git mirror",
            host.name
        );
    }
}

#[test]
fn a_second_prepare_of_the_same_commit_sends_nothing() {
    let d = upload_deploy(Fleet::start(3), "");
    d.deployr(&["prepare"]).expect_code(0);
    let first = bytes_sent(&d);
    assert!(first.iter().all(|&bytes| bytes > 0), "{first:?}");

    let again = d.deployr(&["prepare"]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("is already prepared as"),
        "{}",
        again.stdout
    );
    assert_eq!(bytes_sent(&d), first);
    assert_eq!(d.releases(0).len(), 1);

    // Built anew, the same commit packs to the same bytes, which every host already holds.
    let forced = d.deployr(&["prepare", "--force"]);
    forced.expect_code(0);
    assert!(
        forced
            .stdout
            .contains("web1, web2, web3 already hold artifact"),
        "{}",
        forced.stdout
    );
    assert_eq!(bytes_sent(&d), first);
    assert_eq!(d.releases(0).len(), 2);

    // A new commit is a new artifact: sent again.
    d.repo.commit("2");
    d.deployr(&["deploy"]).expect_code(0);
    assert!(
        bytes_sent(&d)
            .iter()
            .zip(&first)
            .all(|(now, then)| now > then)
    );
    assert_eq!(d.served_versions(), ["2", "2", "2"]);
}

#[test]
fn a_damaged_upload_fails_that_host_only_and_is_sent_again_next_time() {
    // web2's storage damages files: once its SFTP session ends, and while `damage` exists,
    // every artifact there is cut short, between the upload and the unpacking.
    let fleet = Fleet::with_config_for(&["web1", "web2", "web3"], |name, dir| {
        if name != "web2" {
            return String::new();
        }
        let wrapper = dir.join("damaging-sftp-server");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n/usr/lib/openssh/sftp-server \"$@\"\nstatus=$?\n\
                 if [ -e {dir}/damage ]; then for f in {dir}/srv/.deployr/artifacts/*.tar.gz; do truncate -s 100 \"$f\"; done; fi\n\
                 exit $status\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.join("damage"), "").unwrap();
        format!("Subsystem sftp {}\n", wrapper.display())
    });
    let d = upload_deploy(fleet, "");
    d.deployr(&["deploy"]).expect_code(1);
    let run = d.deployr(&["prepare"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("step `code` failed on 1 host") && run.stderr.contains("web2:"),
        "{}",
        run.stderr
    );
    assert!(
        run.all().contains("the uploaded artifact is damaged"),
        "{}",
        run.all()
    );
    assert_eq!(d.releases(0).len(), 2, "web1 unpacked both attempts");
    assert!(d.releases(1).is_empty(), "web2 unpacked nothing");
    assert_eq!(d.currents(), ["", "", ""], "nothing was activated");
    let web2 = &d.fleet.hosts[1];
    assert!(
        std::fs::read_dir(web2.deploy_to.join(".deployr/artifacts"))
            .unwrap()
            .next()
            .is_none(),
        "the damaged artifact was removed"
    );

    std::fs::remove_file(web2.dir.join("damage")).unwrap();
    d.deployr(&["deploy"]).expect_code(0);
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
}

#[test]
fn a_large_artifact_reaches_ten_hosts_intact() {
    let names: Vec<String> = (1..=10).map(|i| format!("web{i}")).collect();
    let fleet = Fleet::with_names(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let repo = SourceRepo::create(fleet.dir.path());
    let body = format!(
        "[source]\nrepo = \"{}\"\nstrategy = \"upload\"\n\
         build = \"mkdir dist && head -c 52428800 /dev/urandom > dist/blob\"\nartifact = \"dist\"\n",
        repo.path.display()
    );
    let file = fleet.deployfile(&[], &body);
    let run = fleet.deployr(&["-f", file.to_str().unwrap(), "--no-progress", "prepare"]);
    run.expect_code(0);
    let sums: Vec<String> = fleet
        .hosts
        .iter()
        .map(|h| {
            let release = std::fs::read_dir(h.deploy_to.join("releases"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path();
            let output = std::process::Command::new("sha256sum")
                .arg(release.join("blob"))
                .output()
                .unwrap();
            let text = String::from_utf8(output.stdout).unwrap();
            assert_eq!(
                std::fs::metadata(release.join("blob")).unwrap().len(),
                52_428_800
            );
            text.split_whitespace().next().unwrap().to_string()
        })
        .collect();
    assert!(sums.iter().all(|sum| *sum == sums[0]), "{sums:?}");
    let sent = run
        .stdout
        .lines()
        .filter(|line| line.contains(" upload | sent "))
        .count();
    assert_eq!(sent, 10, "{}", run.stdout);
}

/// An external sftp-server is started by the login shell, so a `.bashrc` that prints puts its
/// banner in front of the SFTP stream: deployr skips it, and the upload arrives whole.
#[test]
fn an_upload_reaches_a_host_whose_bashrc_prints_a_banner() {
    let fleet = Fleet::with_login_shells(&[("web1", "bash"), ("web2", "bash"), ("web3", "bash")]);
    fleet.hosts[1].write_startup_file(".bashrc", "printf 'Welcome to web2, no newline'\n");
    let d = upload_deploy(fleet, "");
    let started = std::time::Instant::now();
    let run = d.deployr(&["--no-progress", "deploy"]);
    run.expect_code(0);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(!run.all().contains("Welcome"), "{}", run.all());
    for host in &d.fleet.hosts {
        assert_eq!(host.read("current/VERSION"), "1\n", "{}", host.name);
    }
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}
