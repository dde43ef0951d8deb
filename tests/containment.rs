//! A deploy stays in its place: two applications never share this machine's build cache, and
//! a release's own symlinks never lead prepare to remove or link anything outside it.

use std::path::Path;
use std::time::Duration;

use crate::support::{Fleet, SourceRepo, finish, release_of, setup};

/// A deployfile for one host of `fleet` that uploads builds of `repo`, for the app `shop`.
fn upload_to(fleet: &Fleet, host: usize, repo: &SourceRepo, name: &str) -> std::path::PathBuf {
    let host = &fleet.hosts[host];
    fleet.write(
        name,
        &format!(
            "[app]\nname = \"shop\"\ndeploy_to = \"{}\"\n\n{}\n\
             [hosts.{}]\naddress = \"127.0.0.1\"\nport = {}\n\n\
             [source]\nrepo = \"{}\"\nref = \"main\"\nstrategy = \"upload\"\n\
             build = \"cp VERSION BUILT\"\nartifact = \".\"\n",
            host.deploy_to.display(),
            fleet.ssh_section(),
            host.name,
            host.port,
            repo.path.display()
        ),
    )
}

#[test]
fn two_apps_of_one_name_from_two_repos_prepared_at_once_each_get_their_own_commit() {
    let fleet = Fleet::start(3);
    let (a_dir, b_dir) = (fleet.dir.path().join("a"), fleet.dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let (a, b) = (SourceRepo::create(&a_dir), SourceRepo::create(&b_dir));
    // web1 and web3 deploy repo a, web2 repo b; all three are `shop`.
    let files = [
        upload_to(&fleet, 0, &a, "a1.toml"),
        upload_to(&fleet, 1, &b, "b.toml"),
        upload_to(&fleet, 2, &a, "a3.toml"),
    ];
    let cache = fleet.dir.path().join("cache");
    // A git that pauses before fetching and resolving, as a slow network and disk would: the
    // moments where two prepares sharing a mirror would take each other's branch.
    let slow = fleet.dir.path().join("slow-git");
    std::fs::create_dir_all(&slow).unwrap();
    let real_git = std::process::Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .unwrap();
    let real_git = String::from_utf8(real_git.stdout)
        .unwrap()
        .trim()
        .to_string();
    std::fs::write(
        slow.join("git"),
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" fetch \"*|*\" rev-parse \"*|*\" clone \"*) sleep 0.2 ;; esac\nexec {real_git} \"$@\"\n"
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(slow.join("git")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(slow.join("git"), permissions).unwrap();
    let path = format!(
        "{}:{}",
        slow.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for round in 0..4 {
        let a_version = format!("a-{round}");
        let b_version = format!("b-{round}");
        let commits = [a.commit(&a_version), b.commit(&b_version)];
        let children: Vec<_> = files
            .iter()
            .map(|file| {
                fleet
                    .command(&["-f", file.to_str().unwrap(), "--no-progress", "prepare"])
                    .env("XDG_CACHE_HOME", &cache)
                    .env("PATH", &path)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            finish(child, Duration::from_secs(120)).expect_code(0);
        }
        for (index, host) in fleet.hosts.iter().enumerate() {
            let (commit, version) = match index {
                1 => (&commits[1], &b_version),
                _ => (&commits[0], &a_version),
            };
            let prepared = host.read(".deployr/prepared");
            assert!(
                prepared.contains(&format!("commit={commit}")),
                "round {round}: {} prepared the wrong commit: {prepared}",
                host.name
            );
            let release = host.deploy_to.join("releases").join(release_of(&prepared));
            let built = std::fs::read_to_string(release.join("BUILT")).unwrap();
            assert_eq!(
                built,
                format!("{version}\n"),
                "round {round}: {}",
                host.name
            );
        }
    }
    let mut workspaces: Vec<String> = std::fs::read_dir(cache.join("deployr"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    workspaces.sort();
    assert_eq!(workspaces.len(), 2, "{workspaces:?}");
    assert!(
        workspaces.iter().all(|w| w.starts_with("shop-")),
        "{workspaces:?}"
    );
    for workspace in workspaces {
        let left: Vec<String> = std::fs::read_dir(cache.join("deployr").join(&workspace))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("build-"))
            .collect();
        assert!(left.is_empty(), "{workspace}: {left:?}");
    }
}

/// Is `dir` still a real directory holding `canary.txt` as it was written?
#[track_caller]
fn assert_untouched(outside: &Path) {
    let uploads = outside.join("uploads");
    let meta = std::fs::symlink_metadata(&uploads).unwrap();
    assert!(
        meta.is_dir() && !meta.file_type().is_symlink(),
        "{uploads:?} was replaced"
    );
    assert_eq!(
        std::fs::read_to_string(uploads.join("canary.txt")).unwrap(),
        "still here\n"
    );
}

#[test]
fn a_repo_symlink_out_of_the_release_under_a_shared_dir_is_refused_and_touches_nothing() {
    let d = setup("shared_dirs = [\"public/uploads\"]", "");
    let outside = d.fleet.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("uploads")).unwrap();
    std::fs::write(outside.join("uploads/canary.txt"), "still here\n").unwrap();
    std::os::unix::fs::symlink(&outside, d.repo.path.join("public")).unwrap();
    d.repo.git(&["add", "public"]);
    d.repo.git(&["commit", "-q", "-m", "public elsewhere"]);

    let upload = d.fleet.write(
        "upload.toml",
        &std::fs::read_to_string(&d.file).unwrap().replace(
            "ref = \"main\"",
            "ref = \"main\"\nstrategy = \"upload\"\nartifact = \".\"",
        ),
    );
    for file in [&d.file, &upload] {
        let started = std::time::Instant::now();
        let run = d
            .fleet
            .deployr(&["-f", file.to_str().unwrap(), "--no-progress", "prepare"]);
        run.expect_code(1);
        assert!(started.elapsed() < Duration::from_secs(60));
        let named = format!(
            "/public in the release is a symlink to {}",
            outside.display()
        );
        assert!(
            run.stdout.contains(&named),
            "{}: {}",
            file.display(),
            run.all()
        );
        assert!(run.stdout.contains("nothing was removed"), "{}", run.stdout);
        assert_untouched(&outside);
        for host in &d.fleet.hosts {
            assert!(host.read(".deployr/prepared").is_empty(), "{}", host.name);
        }
        assert!(d.locked().is_empty(), "{:?}", d.locked());
    }

    // The neighbour: a link that stays inside the release is followed, and the shared dir is
    // linked where it leads.
    std::fs::remove_file(d.repo.path.join("public")).unwrap();
    std::fs::create_dir_all(d.repo.path.join("web/public")).unwrap();
    std::fs::write(d.repo.path.join("web/public/index.html"), "hi\n").unwrap();
    std::os::unix::fs::symlink("web/public", d.repo.path.join("public")).unwrap();
    d.repo.git(&["add", "-A"]);
    d.repo.git(&["commit", "-q", "-m", "public inside"]);
    d.deployr(&["prepare"]).expect_code(0);
    for (index, host) in d.fleet.hosts.iter().enumerate() {
        let release = host
            .deploy_to
            .join("releases")
            .join(release_of(&d.prepared(index)));
        let link = std::fs::read_link(release.join("web/public/uploads")).unwrap();
        assert_eq!(link, host.deploy_to.join("shared/public/uploads"));
    }
    assert_untouched(&outside);

    // The same for a shared file behind a link out of the release.
    std::os::unix::fs::symlink(&outside, d.repo.path.join("conf")).unwrap();
    d.repo.git(&["add", "conf"]);
    d.repo.git(&["commit", "-q", "-m", "conf elsewhere"]);
    for host in &d.fleet.hosts {
        std::fs::create_dir_all(host.deploy_to.join("shared/conf")).unwrap();
        std::fs::write(host.deploy_to.join("shared/conf/app.env"), "A=1\n").unwrap();
    }
    let files = d.fleet.write(
        "files.toml",
        &std::fs::read_to_string(&d.file).unwrap().replace(
            "shared_dirs = [\"public/uploads\"]",
            "shared_files = [\"conf/app.env\"]",
        ),
    );
    let run = d
        .fleet
        .deployr(&["-f", files.to_str().unwrap(), "--no-progress", "prepare"]);
    run.expect_code(1);
    let named = format!("/conf in the release is a symlink to {}", outside.display());
    assert!(run.stdout.contains(&named), "{}", run.all());
    assert!(!outside.join("app.env").exists());
    assert_untouched(&outside);
}
