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
