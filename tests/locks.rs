//! The deploy lock: taken whole or not at all, given back on every path, its problems named
//! for what they are, and never removed from under a deployr that is still running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{fast_again, finish, setup, slow_on, slow_step, wait_for};

/// A small tmpfs with room for only a few files, mounted over a directory for one test.
struct FullDisk(PathBuf);

impl FullDisk {
    fn mount_over(dir: &Path) -> FullDisk {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,nr_inodes=8", "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        let disk = FullDisk(dir.to_path_buf());
        // Use up every inode: nothing new can be created there.
        for i in 0.. {
            if std::fs::write(dir.join(format!("fill{i}")), "").is_err() {
                break;
            }
        }
        disk
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_lock_that_cannot_be_taken_on_one_host_is_named_with_its_cause_and_released_elsewhere() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let before = d.currents();
    let full = FullDisk::mount_over(&d.fleet.hosts[1].deploy_to.join(".deployr"));
    d.repo.commit("2");
    let run = d.deployr(&["prepare"]);
    drop(full);
    run.expect_code(1);
    assert!(
        run.stderr.contains("cannot take the deploy lock"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("web2"), "{}", run.stderr);
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("held by"), "{}", run.stderr);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    assert_eq!(d.currents(), before);
}

#[test]
fn a_deployr_directory_that_is_a_file_is_reported_as_such_not_as_a_held_lock() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let dot = d.fleet.hosts[2].deploy_to.join(".deployr");
    let saved = d.fleet.dir.path().join("saved-deployr");
    std::fs::rename(&dot, &saved).unwrap();
    std::fs::write(&dot, "not a directory").unwrap();
    let run = d.deployr(&["prepare"]);
    run.expect_code(1);
    assert!(run.stderr.contains("web3"), "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot take the deploy lock"),
        "{}",
        run.stderr
    );
    assert!(d.locked().is_empty(), "{:?}", d.locked());
    std::fs::remove_file(&dot).unwrap();
    std::fs::rename(&saved, &dot).unwrap();
}

#[test]
fn a_plain_file_at_the_lock_path_is_named_and_unlock_removes_it() {
    let d = setup("", "");
    d.deployr(&["deploy"]).expect_code(0);
    let lock = d.fleet.hosts[1].deploy_to.join(".deployr/lock");
    std::fs::write(&lock, "").unwrap();
    let run = d.deployr(&["activate"]);
    run.expect_code(4);
    assert!(
        run.stderr.contains("malformed lock (a plain file)"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("unknown"), "{}", run.stderr);
    assert_eq!(d.locked(), ["web2"], "nothing else was locked or left");
    let status = d.deployr(&["status"]);
    assert!(
        status.all().contains("malformed (a plain file)"),
        "{}",
        status.all()
    );
    let unlock = d.deployr(&["unlock"]);
    unlock.expect_code(0);
    assert!(
        unlock
            .all()
            .contains("web2: removed a malformed deploy lock (a plain file)"),
        "{}",
        unlock.all()
    );
    assert!(d.locked().is_empty());
    d.repo.commit("2");
    d.deployr(&["deploy"]).expect_code(0);
    assert!(d.locked().is_empty());
}

#[test]
fn unlock_refuses_to_remove_the_lock_of_a_deployr_still_running_here_unless_forced() {
    let d = setup("", &slow_step("check", "gate"));
    d.deployr(&["deploy"]).expect_code(0);
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    slow_on(&d, 0);
    let first = d.spawn(&["activate"]);
    wait_for(&d.fleet.hosts[0].deploy_to.join("in-gate"));
    let refused = d.deployr(&["unlock"]);
    refused.expect_code(4);
    assert!(
        refused.stderr.contains("still running on this machine"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("command=activate"),
        "{}",
        refused.stderr
    );
    assert_eq!(d.locked().len(), 3, "nothing was removed");
    let forced = d.deployr(&["unlock", "--force"]);
    forced.expect_code(0);
    assert!(d.locked().is_empty());
    fast_again(&d);
    let first = finish(first, Duration::from_secs(60));
    first.expect_code(0);
    assert!(d.locked().is_empty(), "{:?}", d.locked());
}

#[test]
fn the_lock_owner_names_the_login_name_even_when_user_is_unset() {
    let d = setup("", &slow_step("check", "gate"));
    d.deployr(&["deploy"]).expect_code(0);
    d.repo.commit("2");
    d.deployr(&["prepare"]).expect_code(0);
    slow_on(&d, 0);
    let first = d
        .fleet
        .command(&["-f", d.file.to_str().unwrap(), "activate"])
        .env_remove("USER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&d.fleet.hosts[0].deploy_to.join("in-gate"));
    let owner = std::fs::read_link(d.fleet.hosts[0].deploy_to.join(".deployr/lock")).unwrap();
    let login = Command::new("id").arg("-un").output().unwrap();
    let login = String::from_utf8_lossy(&login.stdout).trim().to_string();
    assert!(
        owner.to_string_lossy().starts_with(&format!("{login}@")),
        "{}",
        owner.display()
    );
    fast_again(&d);
    finish(first, Duration::from_secs(60)).expect_code(0);
}
