//! The README's first command: a full deploy of `deployfile.example.toml` onto its two local
//! hosts, exactly as a newcomer runs it.

use std::path::Path;

use crate::support::deployr_in;

#[test]
fn readme_example_deploys_both_local_hosts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = deployr_in(root, &["-f", "deployfile.example.toml", "deploy"]);
    run.expect_code(0);
    assert!(run.stdout.contains("activation window"), "{}", run.stdout);
    assert!(run.stdout.contains("switch skew"), "{}", run.stdout);
    let release = run
        .stdout
        .lines()
        .find_map(|line| {
            line.split(" live on ")
                .next()
                .filter(|_| line.contains(" live on "))
        })
        .expect("a `live on` line")
        .to_string();
    for host in ["web1", "web2"] {
        let page = root
            .join("target/example")
            .join(host)
            .join("current/public/index.html");
        let page = std::fs::read_to_string(&page).unwrap();
        assert!(page.contains(&release), "{host} serves {page}");
    }
    let applied = root.join("target/example/web1/shared/db/applied");
    let applied = std::fs::read_to_string(applied).unwrap();
    assert!(applied.contains("0002_add_customer.sql"), "{applied}");
    deployr_in(root, &["-f", "deployfile.example.toml", "status"]).expect_code(0);
}

/// What `deploy --dry-run` of the example sends to its hosts, pinned: every script of every
/// step, in order, as the real run sends it. Values that change from run to run (this
/// checkout's path, the time, the process, the user) are named instead; the release ids are
/// named by what they are (the new one, and the dry run's stand-in ones, see
/// `src/remote/stand_in.rs`).
#[test]
fn the_example_deploy_dry_run_sends_these_scripts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = deployr_in(
        root,
        &["-f", "deployfile.example.toml", "--dry-run", "deploy"],
    );
    run.expect_code(0);
    let new = run
        .stdout
        .split("DEPLOYR_RELEASE=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .expect("a step names the new release")
        .to_string();
    let format = "%Y%m%dT%H%M%SZ";
    let time = chrono::NaiveDateTime::parse_from_str(&new, format).unwrap();
    let mut text = run.stdout.replace(&root.display().to_string(), "[ROOT]");
    for (ago, name) in [
        (chrono::Duration::zero(), "[NEW]"),
        (chrono::Duration::hours(1), "[PREPARED]"),
        (chrono::Duration::days(1), "[CURRENT]"),
        (chrono::Duration::days(2), "[KEPT]"),
    ] {
        text = text.replace(&(time - ago).format(format).to_string(), name);
    }
    insta::with_settings!({filters => vec![
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]"),
        (r"'[^' ]+@[^' ]+ pid=\d+ start=\d+ ", "'[USER]@[MACHINE] pid=[PID] start=[START] "),
        (r"token=[0-9-]+", "token=[TOKEN]"),
        (r#""id":"[0-9-]+""#, r#""id":"[TOKEN]""#),
        (r#""duration_ms":\d+"#, r#""duration_ms":[MS]"#),
        (r#""actor":"[^"]*","machine":"[^"]*""#, r#""actor":"[USER]","machine":"[MACHINE]""#),
    ]}, {
        insta::assert_snapshot!(text);
    });
}
