//! Two-step releases against real sshd hosts: prepare, activate, deploy, rollback, prune,
//! hotfixes and canaries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::{Deploy, Fleet, release_of, sessions_without, setup, setup_on};

#[test]
fn prepare_builds_the_release_everywhere_and_leaves_current_alone() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let first = d.currents();
    let commit = d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    assert_eq!(d.currents(), first, "prepare must not touch current");
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
    let prepared = release_of(&d.prepared(0));
    for (i, host) in d.fleet.hosts.iter().enumerate() {
        assert_eq!(release_of(&d.prepared(i)), prepared, "{}", host.name);
        assert!(d.prepared(i).contains(&format!("commit={commit}")));
        let release = host.deploy_to.join("releases").join(&prepared);
        assert_eq!(
            std::fs::read_to_string(release.join("VERSION")).unwrap(),
            "2\n"
        );
        assert_eq!(
            std::fs::read_to_string(release.join("built")).unwrap(),
            "2\n"
        );
        assert_eq!(
            std::fs::read_to_string(release.join("REVISION"))
                .unwrap()
                .trim(),
            commit
        );
    }
}

#[test]
fn first_prepare_creates_no_current() {
    let d = setup("", "");
    d.deployr(&["prepare"]).expect_code(0);
    assert_eq!(d.currents(), ["", "", ""]);
    assert!(!d.prepared(2).is_empty());
}

#[test]
fn activate_switches_every_host_and_migrates_once() {
    let d = setup("shared_dirs = [\"media\"]\nshared_files = [\".env\"]", "");
    for host in &d.fleet.hosts {
        std::fs::create_dir_all(host.deploy_to.join("shared")).unwrap();
        std::fs::write(host.deploy_to.join("shared/.env"), "SECRET=1\n").unwrap();
    }
    d.deployr(&["prepare"]).expect_code(0);
    let prepared = release_of(&d.prepared(0));
    let run = d.deployr(&["activate"]);
    run.expect_code(0);
    assert_eq!(d.currents(), vec![prepared.clone(); 3]);
    assert_eq!(d.migrations(), 1, "migrate is once");
    assert_eq!(d.fleet.hosts[0].read("shared/migrations").trim(), prepared);
    assert!(run.stdout.contains("activation window"), "{}", run.stdout);
    assert!(run.stdout.contains("switch skew"), "{}", run.stdout);
    for (i, host) in d.fleet.hosts.iter().enumerate() {
        assert!(
            d.prepared(i).is_empty(),
            "prepared marker cleared on {}",
            host.name
        );
        assert_eq!(
            host.read("shared/reloads").trim(),
            prepared,
            "reload on {}",
            host.name
        );
        std::fs::write(host.deploy_to.join("current/media/upload.jpg"), "photo").unwrap();
        assert_eq!(host.read("current/.env"), "SECRET=1\n");
    }
    d.repo.commit("2");
    d.deployr(&["deploy"]).expect_code(0);
    assert_eq!(d.served_versions(), ["2", "2", "2"]);
    for host in &d.fleet.hosts {
        assert_eq!(
            host.read("current/media/upload.jpg"),
            "photo",
            "shared dir survives"
        );
        assert_eq!(
            host.read("current/.env"),
            "SECRET=1\n",
            "shared file survives"
        );
    }
}

#[test]
fn switch_is_atomic_for_readers() {
    readers_never_miss_current(setup("keep_releases = 3", ""), 5);
}

/// Without perl the switch is `mv` in the shell: just as atomic, only slower to start.
#[test]
fn switch_without_perl_is_atomic_for_readers_too() {
    let fleet = Fleet::with_config_for(&["web1", "web2", "web3"], |_, dir| {
        sessions_without(dir, &["perl"])
    });
    let d = setup_on(
        fleet,
        "keep_releases = 3",
        "[[prepare]]\nname = \"no-perl\"\nrun = \"if command -v perl; then exit 1; fi\"\n",
    );
    readers_never_miss_current(d, 3);
}

/// Deploys, rolls back and re-activates versions 2 to `last` while a reader per host keeps
/// reading `current/VERSION`: not one read may fail.
fn readers_never_miss_current(d: Deploy, last: usize) {
    d.deployr(&["deploy"]).expect_code(0);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = d
        .fleet
        .hosts
        .iter()
        .map(|host| {
            let path = host.deploy_to.join("current/VERSION");
            let stop = stop.clone();
            let reads = reads.clone();
            std::thread::spawn(move || {
                let mut misses = 0;
                while !stop.load(Ordering::Relaxed) {
                    if std::fs::read_to_string(&path).is_err() {
                        misses += 1;
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                misses
            })
        })
        .collect();
    for version in 2..=last {
        d.repo.commit(&version.to_string());
        d.deployr(&["deploy"]).expect_code(0);
        d.deployr(&["rollback"]).expect_code(0);
        d.deployr(&[
            "activate",
            "--release",
            &d.releases(0).last().unwrap().clone(),
        ])
        .expect_code(0);
    }
    stop.store(true, Ordering::Relaxed);
    let misses: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let reads = reads.load(Ordering::Relaxed);
    assert!(reads > 1000, "only {reads} reads happened");
    assert_eq!(
        misses, 0,
        "{misses} of {reads} reads found no current/VERSION"
    );
    let last = last.to_string();
    assert_eq!(d.served_versions(), [last.as_str(); 3]);
}

#[test]
fn activate_refuses_different_prepared_releases_and_changes_nothing() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    d.repo.commit("3");
    d.deployr(&["prepare", "--hosts", "web2"]).expect_code(0);
    assert_ne!(release_of(&d.prepared(0)), release_of(&d.prepared(1)));
    let run = d.deployr(&["activate"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("different prepared releases"),
        "{}",
        run.stderr
    );
    assert_eq!(d.currents(), before);
    assert_eq!(d.migrations(), 1, "no activate step ran");
}

#[test]
fn rollback_returns_every_host_to_the_previous_release_or_the_given_one() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let first = d.currents();
    d.repo.commit("2");
    d.deployr(&["deploy"]).expect_code(0);
    let second = d.currents();
    d.repo.commit("3");
    d.deployr(&["deploy"]).expect_code(0);
    assert_eq!(d.served_versions(), ["3", "3", "3"]);
    d.deployr(&["rollback"]).expect_code(0);
    assert_eq!(d.currents(), second);
    assert_eq!(d.served_versions(), ["2", "2", "2"]);
    d.deployr(&["rollback", "--to", &first[0]]).expect_code(0);
    assert_eq!(d.currents(), first);
    let history = d.fleet.hosts[1].read(".deployr/history");
    assert_eq!(
        history
            .lines()
            .filter(|l| l.contains("\"command\":\"rollback\""))
            .count(),
        2,
        "{history}"
    );
    let reloads = d.fleet.hosts[1].read("shared/reloads");
    assert_eq!(
        reloads.lines().last(),
        Some(first[0].as_str()),
        "reload ran after rollback"
    );
}

#[test]
fn rollback_with_nothing_to_roll_back_to_fails() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let run = d.deployr(&["rollback"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("nothing to roll back to"),
        "{}",
        run.stderr
    );
}

#[test]
fn keep_releases_prunes_old_releases_but_never_current_or_previous() {
    let d = setup("keep_releases = 2", "");
    let mut activated = Vec::new();
    for version in 1..=4 {
        if version > 1 {
            d.repo.commit(&version.to_string());
        }
        d.deployr(&["deploy"]).expect_code(0);
        activated.push(d.currents()[0].clone());
    }
    for host in 0..3 {
        assert_eq!(d.releases(host), activated[2..], "host {host}");
    }
    d.deployr(&["rollback"]).expect_code(0);
    assert_eq!(d.currents(), vec![activated[2].clone(); 3]);
    d.repo.commit("5");
    d.deployr(&["deploy"]).expect_code(0);
    let kept = d.releases(0);
    assert!(kept.contains(&activated[2]), "previous kept: {kept:?}");
    assert!(kept.contains(&d.currents()[0]), "current kept: {kept:?}");
    assert_eq!(kept.len(), 2, "{kept:?}");
}

#[test]
fn hotfix_deploys_exactly_a_tag_or_a_bare_commit() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let tagged = d.repo.commit("1.2.1-hotfix");
    d.repo.git(&["tag", "v1.2.1"]);
    let sha = d.repo.commit("sha-only");
    d.repo.commit("tip of main");
    d.deployr(&["deploy", "--ref", "v1.2.1"]).expect_code(0);
    assert_eq!(d.served_versions(), vec!["1.2.1-hotfix"; 3]);
    for host in &d.fleet.hosts {
        assert_eq!(host.read("current/REVISION").trim(), tagged);
    }
    d.deployr(&["prepare", "--ref", &sha]).expect_code(0);
    d.deployr(&["activate"]).expect_code(0);
    assert_eq!(d.served_versions(), vec!["sha-only"; 3]);
}

#[test]
fn a_ref_refused_for_shell_syntax_never_runs() {
    let d = setup("", "");
    let pwned = d.fleet.dir.path().join("pwned");
    let run = d.deployr(&[
        "prepare",
        "--ref",
        &format!("main; touch {}", pwned.display()),
    ]);
    run.expect_code(2);
    assert!(run.stderr.contains("is not a git ref"), "{}", run.stderr);
    assert!(!pwned.exists());
    assert!(d.fleet.hosts[0].read(".deployr/prepared").is_empty());
}

#[test]
fn a_push_during_prepare_does_not_reach_some_hosts() {
    let d = setup("", "");
    // file:// makes git serve the fetch through upload-pack, even on this machine.
    let text = std::fs::read_to_string(&d.file).unwrap().replace(
        &format!("repo = \"{}\"", d.repo.path.display()),
        &format!("repo = \"file://{}\"", d.repo.path.display()),
    );
    std::fs::write(&d.file, text).unwrap();
    let resolved = d.repo.git(&["rev-parse", "main"]);
    // When the first host's fetch is served, push a new commit to main: the other hosts then
    // fetch a branch that has moved (git runs this hook for every fetch from the repo).
    let hook = d.fleet.dir.path().join("push-during-fetch");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n\"$@\"\nstatus=$?\nif mkdir {flag} 2>/dev/null; then\n  unset GIT_DIR\n  cd {repo} && echo pushed > VERSION && git -c user.name=t -c user.email=t@t commit -qam pushed >&2\nfi\nexit $status\n",
            flag = d.fleet.dir.path().join("pushed").display(),
            repo = d.repo.path.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let gitconfig = d.fleet.write(
        "gitconfig",
        &format!("[uploadpack]\n\tpackObjectsHook = {}\n", hook.display()),
    );
    let text = std::fs::read_to_string(&d.file).unwrap()
        + &format!("\n[env]\nGIT_CONFIG_GLOBAL = \"{}\"\n", gitconfig.display());
    std::fs::write(&d.file, text).unwrap();
    let run = d.deployr(&["deploy"]);
    run.expect_code(0);
    let moved = d.repo.git(&["rev-parse", "main"]);
    assert_ne!(
        moved,
        resolved,
        "the hook pushed during the prepare: {}",
        run.all()
    );
    for host in &d.fleet.hosts {
        assert_eq!(
            host.read("current/REVISION").trim(),
            resolved,
            "{}",
            host.name
        );
    }
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
}

#[test]
fn canary_then_the_rest_ends_on_one_release_with_migrate_once_per_invocation() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let old = d.currents();
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    let new = release_of(&d.prepared(0));
    d.deployr(&["activate", "--hosts", "web1"]).expect_code(0);
    assert_eq!(d.currents(), [new.clone(), old[1].clone(), old[2].clone()]);
    assert_eq!(d.migrations(), 2);
    let status = d.deployr(&["status"]);
    status.expect_code(0);
    assert!(status.stdout.contains("drift"), "{}", status.stdout);
    let run = d.deployr(&["activate"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("web1 is already on {new}; not switched again")),
        "{}",
        run.stdout
    );
    assert_eq!(d.currents(), vec![new; 3]);
    assert_eq!(
        d.migrations(),
        3,
        "migrate ran once in each of the three activations"
    );
}

#[test]
fn status_and_releases_show_current_prepared_and_releases() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    let current = d.currents()[0].clone();
    let prepared = release_of(&d.prepared(0));
    let status = d.deployr(&["status"]);
    status.expect_code(0);
    let row = status
        .stdout
        .lines()
        .find(|l| l.starts_with("web2 "))
        .unwrap();
    assert!(row.contains(&current) && row.contains(&prepared), "{row}");
    assert!(!status.stdout.contains("drift"), "{}", status.stdout);
    let releases = d.deployr(&["releases", "--hosts", "web3"]);
    releases.expect_code(0);
    assert!(
        releases.stdout.contains(&format!("web3 {current} ")),
        "{}",
        releases.stdout
    );
    assert!(releases.stdout.contains("current"), "{}", releases.stdout);
    assert!(releases.stdout.contains("prepared"), "{}", releases.stdout);
}

#[test]
fn deploy_to_with_a_quote_a_space_and_a_dollar_deploys_switches_and_rolls_back() {
    let mut d = setup("shared_dirs = [\"media\"]\nshared_files = [\".env\"]", "");
    // Every host deploys into `…/it's a "$HOME dir` (one `"`: a value pasted raw inside
    // "…" leaves it unbalanced); the commands use the path through their variables, quoted,
    // as a command must.
    let mut text = std::fs::read_to_string(&d.file).unwrap();
    text = text.replace("{{shared_path}}/", "\\\"$DEPLOYR_SHARED_PATH\\\"/");
    for host in &mut d.fleet.hosts {
        let awkward = host.deploy_to.with_file_name("it's a \"$HOME dir");
        text = text.replace(
            &format!("deploy_to = \"{}\"", host.deploy_to.display()),
            &format!(
                "deploy_to = \"{}\"",
                awkward.display().to_string().replace('"', "\\\"")
            ),
        );
        host.deploy_to = awkward;
    }
    std::fs::write(&d.file, text).unwrap();
    for host in &d.fleet.hosts {
        std::fs::create_dir_all(host.deploy_to.join("shared")).unwrap();
        std::fs::write(host.deploy_to.join("shared/.env"), "A=1\n").unwrap();
    }
    d.deployr(&["deploy"]).expect_code(0);
    let first = d.currents();
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
    assert_eq!(d.migrations(), 1);
    for host in &d.fleet.hosts {
        assert_eq!(
            host.read("shared/reloads").trim(),
            first[0],
            "{}",
            host.name
        );
        let media = std::fs::read_link(host.deploy_to.join("current/media")).unwrap();
        assert_eq!(media, host.deploy_to.join("shared/media"), "{}", host.name);
        assert_eq!(host.read("current/.env"), "A=1\n", "{}", host.name);
    }
    d.repo.commit("2");
    d.deployr(&["deploy"]).expect_code(0);
    assert_eq!(d.served_versions(), ["2", "2", "2"]);
    d.deployr(&["rollback"]).expect_code(0);
    assert_eq!(d.currents(), first);
    assert_eq!(d.served_versions(), ["1", "1", "1"]);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    assert!(d.journaled().is_empty(), "{:?}", d.journaled());
    let status = d.deployr(&["status"]);
    status.expect_code(0);
    assert!(status.stdout.contains(&first[0]), "{}", status.stdout);
}

#[test]
fn an_entry_named_current_in_releases_does_not_disturb_the_switch() {
    // The switch's temporary link lives in `.deployr/switch/`, not among the releases.
    let d = setup("", "");
    let stray = d.fleet.hosts[2].deploy_to.join("releases/current");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("keep"), "mine").unwrap();
    d.deployr(&["deploy"]).expect_code(0);
    d.repo.commit("2");
    d.deployr(&["deploy"]).expect_code(0);
    assert_eq!(d.served_versions(), ["2", "2", "2"]);
    assert_eq!(std::fs::read_to_string(stray.join("keep")).unwrap(), "mine");
    assert_eq!(std::fs::read_dir(&stray).unwrap().count(), 1);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}
