//! `deployr diff`: what a deploy would change, before it changes anything.

use serde_json::Value;

use crate::support::setup;

#[test]
fn diff_lists_the_commits_and_flags_watched_files_per_live_commit_and_changes_nothing() {
    let d = setup("watch = [\"*/migrations/*\", \"requirements.txt\"]", "");
    d.deployr(&["deploy"]).expect_code(0);
    let v1 = d.repo.git(&["rev-parse", "HEAD"]);
    // v2: a migration and two commits.
    std::fs::create_dir_all(d.repo.path.join("shop/migrations")).unwrap();
    std::fs::write(
        d.repo.path.join("shop/migrations/0042_orders.py"),
        "# orders\n",
    )
    .unwrap();
    d.repo.git(&["add", "shop"]);
    d.repo
        .git(&["commit", "-q", "-m", "Add the orders migration"]);
    let v2 = d.repo.commit("2");
    d.repo.git(&["tag", "v2"]);
    let before = d.currents();
    let locks_before = d.locked();
    let run = d.deployr(&["diff", "--ref", "v2"]);
    run.expect_code(0);
    let text = run.stdout.clone();
    assert!(text.contains("web1, web2, web3:"), "{text}");
    assert!(text.contains("2 commits to deploy"), "{text}");
    assert!(text.contains("Add the orders migration"), "{text}");
    assert!(text.contains("version 2"), "{text}");
    assert!(text.contains("WATCHED FILES CHANGED"), "{text}");
    assert!(text.contains("shop/migrations/0042_orders.py"), "{text}");
    assert!(!text.contains("requirements.txt"), "{text}");
    assert_eq!(d.currents(), before, "diff switched nothing");
    assert_eq!(d.locked(), locks_before, "diff took no lock");

    // Hosts serving two different commits: one range each; going back shows as a rollback.
    d.deployr(&["--hosts", "web3", "deploy", "--ref", "v2"])
        .expect_code(0);
    let run = d.deployr(&["diff", "--ref", "v2", "--json"]);
    run.expect_code(0);
    let diffs: Vec<Value> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "diff")
        .collect();
    assert_eq!(diffs.len(), 2, "{}", run.stdout);
    assert_eq!(diffs[0]["hosts"], serde_json::json!(["web1", "web2"]));
    assert_eq!(diffs[0]["live"], v1.as_str());
    assert_eq!(diffs[0]["target"], v2.as_str());
    assert_eq!(diffs[0]["relation"], "ahead");
    assert_eq!(diffs[0]["commits"].as_array().unwrap().len(), 2);
    assert_eq!(
        diffs[0]["watched"],
        serde_json::json!(["shop/migrations/0042_orders.py"])
    );
    assert_eq!(diffs[1]["hosts"], serde_json::json!(["web3"]));
    assert_eq!(diffs[1]["relation"], "same");

    let back = d.deployr(&["diff", "--ref", &v1]);
    back.expect_code(0);
    assert!(back.stdout.contains("BEHIND"), "{}", back.stdout);
}
