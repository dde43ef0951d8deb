//! Malformed deployfiles: every one is refused with exit 2, before anything connects, by a
//! message that names `deployfile.toml:LINE:COLUMN`, says what is wrong and, for a misspelt
//! name, suggests the nearest valid one.
//!
//! Each case states the position it expects *and* the text found there in the file, so a wrong
//! expectation in this table is caught as such rather than passing against a wrong position.

use tempfile::TempDir;

use crate::support::deployr_in;

/// One malformed deployfile and what deployr must say about it.
struct Case {
    name: &'static str,
    toml: &'static str,
    /// 1-based position of the offending token, as deployr must print it.
    line: usize,
    column: usize,
    /// The text that starts at `line:column` in `toml` (checks the table itself).
    at: &'static str,
    /// Substrings the message must contain.
    expect: &'static [&'static str],
}

/// A directory holding `deployfile.toml` with this text.
fn project(toml: &str) -> TempDir {
    let dir = TempDir::new().expect("temp dir");
    std::fs::write(dir.path().join("deployfile.toml"), toml).expect("write deployfile");
    dir
}

/// The text of `toml` from 1-based `line:column` (columns count characters) to the end of line.
fn text_at(toml: &str, line: usize, column: usize) -> Option<String> {
    let source_line = toml.lines().nth(line.checked_sub(1)?)?;
    Some(source_line.chars().skip(column.checked_sub(1)?).collect())
}

/// Everything wrong with one case, as messages naming it; empty when deployr behaves.
fn problems(case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let name = case.name;
    match text_at(case.toml, case.line, case.column) {
        Some(found) if found.starts_with(case.at) => {}
        found => problems.push(format!(
            "[{name}] test table is wrong: expected `{}` at {}:{}, the file has {found:?} there",
            case.at, case.line, case.column
        )),
    }
    let dir = project(case.toml);
    let run = deployr_in(dir.path(), &["run", "x"]);
    let stderr = &run.stderr;
    if run.code != 2 {
        problems.push(format!("[{name}] exit code {} instead of 2", run.code));
    }
    let location = format!("deployfile.toml:{}:{}: ", case.line, case.column);
    if !stderr.contains(&location) {
        problems.push(format!("[{name}] message does not name `{location}`"));
    }
    let source_line = case.toml.lines().nth(case.line - 1).unwrap_or_default();
    let quoted = format!("{} | {}", case.line, source_line);
    if !stderr.contains(&quoted) {
        problems.push(format!(
            "[{name}] message does not quote line {}: `{quoted}`",
            case.line
        ));
    }
    for expected in case.expect {
        if !stderr.contains(expected) {
            problems.push(format!("[{name}] message lacks `{expected}`"));
        }
    }
    if stderr.contains("errors in the deployfile") {
        problems.push(format!(
            "[{name}] more than the one intended error was reported"
        ));
    }
    if !run.stdout.is_empty() {
        problems.push(format!("[{name}] something was printed on stdout"));
    }
    if !problems.is_empty() {
        problems.push(format!(
            "[{name}] --- stdout\n{}\n--- stderr\n{}",
            run.stdout, run.stderr
        ));
    }
    problems
}

/// Runs every case and reports all the failing ones at once.
#[track_caller]
fn check(cases: &[Case]) {
    let problems: Vec<String> = cases.iter().flat_map(problems).collect();
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn toml_syntax_errors_name_line_and_column() {
    check(&[
        Case {
            name: "unquoted string",
            toml: r#"[app]
name = "shop"
deploy_to = /tmp/deployr-x

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 3,
            column: 13,
            at: "/tmp/deployr-x",
            expect: &["string values must be quoted"],
        },
        Case {
            name: "unclosed table header",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1
address = "local"

[tasks.x]
run = "true"
"#,
            line: 5,
            column: 12,
            at: "",
            expect: &["unclosed table", "expected `]`"],
        },
        Case {
            name: "host defined twice",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
roles = ["web", "db"]

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 9,
            column: 8,
            at: "web1]",
            expect: &["duplicate key"],
        },
    ]);
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    check(&[
        Case {
            name: "unknown top-level key",
            toml: r#"colour = "red"

[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 1,
            column: 1,
            at: "colour",
            expect: &["unknown key `colour`", "valid keys here: app,", "tasks"],
        },
        Case {
            name: "unknown key in [app]",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"
owner = "me"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 4,
            column: 1,
            at: "owner",
            expect: &["unknown key `owner`", "keep_releases"],
        },
        Case {
            name: "unknown key in [hosts.web1]",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
datacenter = "fra1"

[tasks.x]
run = "true"
"#,
            line: 7,
            column: 1,
            at: "datacenter",
            expect: &["unknown key `datacenter`", "address"],
        },
        Case {
            name: "unknown key in a [[prepare]] step",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
name = "build"
run = "make"
retries = 3

[tasks.x]
run = "true"
"#,
            line: 11,
            column: 1,
            at: "retries",
            expect: &["unknown key `retries`", "valid keys here:", "once"],
        },
        Case {
            name: "unknown key in [tasks.x]",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
crontab = "* * * * *"
"#,
            line: 10,
            column: 1,
            at: "crontab",
            expect: &["unknown key `crontab`", "valid keys here:", "lock"],
        },
    ]);
}

#[test]
fn misspelt_key_names_line_column_and_suggestion() {
    check(&[
        Case {
            name: "kep_releases in [app]",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"
kep_releases = 3

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 4,
            column: 1,
            at: "kep_releases",
            expect: &[
                "unknown key `kep_releases`",
                "did you mean `keep_releases`?",
            ],
        },
        Case {
            name: "rolse in a host",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
rolse = ["web"]

[tasks.x]
run = "true"
"#,
            line: 7,
            column: 1,
            at: "rolse",
            expect: &["unknown key `rolse`", "did you mean `roles`?"],
        },
        Case {
            name: "concurency in [ssh]",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[ssh]
concurency = 5

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 6,
            column: 1,
            at: "concurency",
            expect: &["unknown key `concurency`", "did you mean `concurrency`?"],
        },
        Case {
            name: "[taks.x] table name",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[taks.x]
run = "true"
"#,
            line: 8,
            column: 2,
            at: "taks",
            expect: &["unknown key `taks`", "did you mean `tasks`?"],
        },
    ]);
}

#[test]
fn wrong_types_point_at_the_value() {
    check(&[
        Case {
            name: "port as a string",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
port = "22"

[tasks.x]
run = "true"
"#,
            line: 7,
            column: 8,
            at: "\"22\"",
            expect: &["invalid type: string \"22\"", "expected"],
        },
        Case {
            name: "keep_releases as a string",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"
keep_releases = "5"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 4,
            column: 17,
            at: "\"5\"",
            expect: &["invalid type: string \"5\"", "expected"],
        },
        Case {
            name: "roles as a string",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
roles = "web"

[tasks.x]
run = "true"
"#,
            line: 7,
            column: 9,
            at: "\"web\"",
            expect: &["invalid type: string \"web\"", "expected a sequence"],
        },
        Case {
            name: "once as a string",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
run = "true"
once = "yes"

[tasks.x]
run = "true"
"#,
            line: 10,
            column: 8,
            at: "\"yes\"",
            expect: &["invalid type: string \"yes\"", "expected a boolean"],
        },
    ]);
}

#[test]
fn bad_durations_point_at_the_value_and_show_the_format() {
    check(&[
        Case {
            name: "10 parsecs",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[ssh]
connect_timeout = "10 parsecs"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 6,
            column: 19,
            at: "\"10 parsecs\"",
            expect: &["`10 parsecs` is not a duration", "\"10s\""],
        },
        Case {
            name: "zero duration",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
timeout = "0s"
"#,
            line: 10,
            column: 11,
            at: "\"0s\"",
            expect: &["duration must be longer than zero"],
        },
    ]);
}

#[test]
fn out_of_range_values_point_at_the_value() {
    check(&[
        Case {
            name: "known_hosts = sometimes",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[ssh]
known_hosts = "sometimes"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 6,
            column: 15,
            at: "\"sometimes\"",
            expect: &["\"strict\"", "\"accept-new\"", "sometimes"],
        },
        Case {
            name: "port 70000 on a host",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[hosts.web2]
address = "local"
port = 70000

[tasks.x]
run = "true"
"#,
            line: 10,
            column: 8,
            at: "70000",
            expect: &["port must be between 1 and 65535"],
        },
        Case {
            name: "relative deploy_to with a remote host",
            toml: r#"[app]
name = "shop"
deploy_to = "srv/shop"

[hosts.web1]
address = "127.0.0.1"
port = 1

[tasks.x]
run = "true"
"#,
            line: 3,
            column: 13,
            at: "\"srv/shop\"",
            expect: &["deploy_to must be an absolute path", "srv/shop"],
        },
        Case {
            name: "keep_releases = 0",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"
keep_releases = 0

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 4,
            column: 17,
            at: "0",
            expect: &["keep_releases must be a whole number of at least 1"],
        },
        Case {
            name: "connect_attempts = 0",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[ssh]
connect_attempts = 0

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 6,
            column: 20,
            at: "0",
            expect: &["connect_attempts must be a whole number of at least 1"],
        },
        Case {
            name: "env from_env of an unset variable",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[env]
TOKEN = { from_env = "DEPLOYR_TEST_SURELY_UNSET_VARIABLE" }

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 6,
            column: 9,
            at: "{ from_env",
            expect: &[
                "env.TOKEN",
                "`DEPLOYR_TEST_SURELY_UNSET_VARIABLE`, which is not set",
                "export DEPLOYR_TEST_SURELY_UNSET_VARIABLE=",
            ],
        },
    ]);
}

#[test]
fn roles_that_no_host_has_are_errors() {
    check(&[
        Case {
            name: "unknown role in a step's roles",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
roles = ["web", "db"]

[[prepare]]
name = "build"
run = "make"
roles = ["web", "worker"]

[tasks.x]
run = "true"
"#,
            line: 12,
            column: 17,
            at: "\"worker\"",
            expect: &["no host has the role `worker`"],
        },
        Case {
            name: "misspelt role in a task's roles",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
roles = ["web", "db"]

[tasks.x]
run = "true"
roles = ["wbe"]
"#,
            line: 11,
            column: 10,
            at: "\"wbe\"",
            expect: &["no host has the role `wbe`", "did you mean `web`?"],
        },
        Case {
            name: "an empty roles list",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
roles = ["web", "db"]

[[prepare]]
name = "migrate"
run = "true"
once = true
roles = []

[tasks.x]
run = "true"
"#,
            line: 13,
            column: 9,
            at: "[]",
            expect: &["`roles = []` selects no host", "leave `roles` out"],
        },
    ]);
}

#[test]
fn unknown_and_unavailable_variables_point_inside_the_string() {
    check(&[
        Case {
            name: "{{relase}} in a prepare step",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
name = "backup"
run = "pg_dump shop > /backups/{{relase}}.sql"

[tasks.x]
run = "true"
"#,
            line: 10,
            column: 32,
            at: "{{relase}}",
            expect: &[
                "unknown variable `{{relase}}`",
                "did you mean `{{release}}`?",
            ],
        },
        Case {
            name: "{{release}} in a task",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[tasks.x]
run = "echo {{release}}"
"#,
            line: 9,
            column: 13,
            at: "{{release}}",
            expect: &[
                "`{{release}}` is only known while preparing or activating a release",
                "{{current_path}}",
            ],
        },
        Case {
            name: "{{release_path}} in a check",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[check]]
run = "test -d {{release_path}}"

[tasks.x]
run = "true"
"#,
            line: 9,
            column: 16,
            at: "{{release_path}}",
            expect: &["`{{release_path}}` is only known while preparing or activating"],
        },
        Case {
            name: "unclosed {{ in a task",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[tasks.x]
run = "echo {{host"
"#,
            line: 9,
            column: 13,
            at: "{{host",
            expect: &["`{{` is not closed by `}}`"],
        },
        Case {
            name: "non-ASCII text before the variable",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
run = "echo 'déjà vu' {{relase}}"

[tasks.x]
run = "true"
"#,
            line: 9,
            column: 23,
            at: "{{relase}}",
            expect: &["unknown variable `{{relase}}`"],
        },
    ]);
}

#[test]
fn malformed_steps_are_errors() {
    check(&[
        Case {
            name: "step with neither run nor switch",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
roles = ["web"]

[[prepare]]
name = "nothing"
roles = ["web"]

[tasks.x]
run = "true"
"#,
            line: 9,
            column: 1,
            at: "[[prepare]]",
            expect: &["step `nothing` has neither `run` nor `switch = true`"],
        },
        Case {
            name: "switch = true in [[prepare]]",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
switch = true

[tasks.x]
run = "true"
"#,
            line: 9,
            column: 10,
            at: "true",
            expect: &["`switch` belongs in [[activate]], not [[prepare]]"],
        },
        Case {
            name: "two switch steps in [[activate]]",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[activate]]
switch = true

[[activate]]
name = "reload"
run = "true"

[[activate]]
switch = true

[tasks.x]
run = "true"
"#,
            line: 16,
            column: 10,
            at: "true",
            expect: &["only one [[activate]] step may be the switch"],
        },
    ]);
}

#[test]
fn missing_sections_are_errors() {
    check(&[
        Case {
            name: "no hosts at all",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[tasks.x]
run = "true"
"#,
            line: 1,
            column: 1,
            at: "[app]",
            expect: &["the deployfile defines no hosts", "[hosts.web1]"],
        },
        Case {
            name: "missing [app]",
            toml: r#"[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 1,
            column: 1,
            at: "[hosts.web1]",
            expect: &["`app`"],
        },
    ]);
}

#[test]
fn every_error_is_reported_at_once_with_its_own_position() {
    let dir = project(
        r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[tasks.x]
run = "echo {{relase}}"
timeout = "0s"
"#,
    );
    let run = deployr_in(dir.path(), &["run", "x"]);
    run.expect_code(2);
    for expected in [
        "deployfile.toml:9:13: unknown variable `{{relase}}`",
        "deployfile.toml:10:11: a duration must be longer than zero",
        "2 errors in the deployfile",
    ] {
        assert!(
            run.stderr.contains(expected),
            "stderr lacks `{expected}`:\n{}",
            run.stderr
        );
    }
}

#[test]
fn go_templates_such_as_docker_names_are_not_variables() {
    let dir = project(
        r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[tasks.x]
run = "docker ps --format '{{.Names}}' && echo {{ host }}"
"#,
    );
    let run = deployr_in(dir.path(), &["--dry-run", "run", "x"]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("docker ps --format '{{.Names}}' && echo web1"),
        "the dry run should show {{{{.Names}}}} untouched and {{{{ host }}}} substituted:\n{}",
        run.all()
    );
}

const TWO_HOSTS: &str = r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
roles = ["web"]

[hosts.db1]
address = "local"
roles = ["db"]

[tasks.backup]
run = "true"
"#;

#[test]
fn unknown_hosts_and_roles_on_the_command_line_are_usage_errors_with_suggestions() {
    let dir = project(TWO_HOSTS);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--hosts", "nosuch", "run", "backup"],
            &["--hosts", "`nosuch`"],
        ),
        (
            &["--hosts", "wbe1", "run", "backup"],
            &["--hosts", "`wbe1`", "did you mean `web1`?"],
        ),
        (
            &["--roles", "nosuch", "run", "backup"],
            &["--roles", "`nosuch`"],
        ),
        (
            &["--roles", "bd", "run", "backup"],
            &["--roles", "`bd`", "did you mean `db`?"],
        ),
    ];
    for (args, expected) in cases {
        let run = deployr_in(dir.path(), args);
        assert_eq!(
            run.code,
            2,
            "deployr {args:?} should exit 2:\n{}",
            run.all()
        );
        for text in *expected {
            assert!(
                run.stderr.contains(text),
                "deployr {args:?}: stderr lacks `{text}`:\n{}",
                run.stderr
            );
        }
        assert!(
            run.stdout.is_empty(),
            "deployr {args:?} ran something:\n{}",
            run.all()
        );
    }
}

#[test]
fn unknown_task_is_a_usage_error_naming_the_tasks() {
    let dir = project(TWO_HOSTS);
    let run = deployr_in(dir.path(), &["run", "nosuchtask"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("no task `nosuchtask`") && run.stderr.contains("backup"),
        "should name the missing task and the defined ones:\n{}",
        run.stderr
    );
    let run = deployr_in(dir.path(), &["run", "bakup"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("did you mean `backup`?"),
        "should suggest the nearest task:\n{}",
        run.stderr
    );
}

/// The only host is a closed port on this machine: connecting to it fails at once with exit 3,
/// so an exit 2 proves that validation finished before any connection was tried.
#[test]
fn nothing_connects_before_the_deployfile_is_valid() {
    let unreachable = |task_roles: &str| {
        format!(
            r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "127.0.0.1"
port = 1
roles = ["web"]

[tasks.x]
run = "true"
roles = {task_roles}
"#
        )
    };

    let invalid = project(&unreachable(r#"["wbe"]"#));
    let run = deployr_in(invalid.path(), &["run", "x"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("deployfile.toml:12:10: no host has the role `wbe`"),
        "{}",
        run.all()
    );
    assert!(
        !run.all().contains("127.0.0.1:1"),
        "deployr tried to connect before validating:\n{}",
        run.all()
    );

    // The same file without the error does try to connect, and fails as a connection error.
    let valid = project(&unreachable(r#"["web"]"#));
    let run = deployr_in(valid.path(), &["run", "x"]);
    run.expect_code(3);
    // ... while a dry run of it connects to nothing.
    let run = deployr_in(valid.path(), &["--dry-run", "run", "x"]);
    run.expect_code(0);
}

/// Positions inside strings that the TOML parser rewrote (escapes, a multi-line string's first
/// newline, line continuations) must still point at the variable as written in the file.
#[test]

fn variable_positions_survive_escapes_and_multiline_strings() {
    check(&[
        Case {
            name: "escaped quotes before the variable",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
run = "echo \"hi\" {{relase}}"

[tasks.x]
run = "true"
"#,
            line: 9,
            column: 20,
            at: "{{relase}}",
            expect: &["unknown variable `{{relase}}`"],
        },
        Case {
            name: "unicode escape before the variable",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
run = "echo \u00e9 {{relase}}"

[tasks.x]
run = "true"
"#,
            line: 9,
            column: 20,
            at: "{{relase}}",
            expect: &["unknown variable `{{relase}}`"],
        },
        Case {
            name: "multi-line basic string",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
run = """
echo hi
echo {{relase}}
"""

[tasks.x]
run = "true"
"#,
            line: 11,
            column: 6,
            at: "{{relase}}",
            expect: &["unknown variable `{{relase}}`"],
        },
        Case {
            name: "multi-line literal string",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
run = '''
echo {{relase}}
'''

[tasks.x]
run = "true"
"#,
            line: 10,
            column: 6,
            at: "{{relase}}",
            expect: &["unknown variable `{{relase}}`"],
        },
        Case {
            name: "line continuation",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
run = """echo \
   {{relase}}"""

[tasks.x]
run = "true"
"#,
            line: 10,
            column: 4,
            at: "{{relase}}",
            expect: &["unknown variable `{{relase}}`"],
        },
    ]);
}

#[test]

fn duplicate_step_names_name_line_and_column() {
    check(&[Case {
        name: "two prepare steps named a",
        toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"

[[prepare]]
name = "a"
run = "true"

[[prepare]]
name = "a"
run = "true"

[tasks.x]
run = "true"
"#,
        line: 13,
        column: 8,
        at: "\"a\"",
        expect: &["two [[prepare]] steps are named `a`"],
    }]);
}

#[test]
fn local_steps_and_uploads_are_validated_like_every_step() {
    check(&[
        Case {
            name: "local step with roles",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
roles = ["web"]

[[prepare]]
name = "assets"
local = true
roles = ["web"]
run = "make assets"

[tasks.x]
run = "true"
"#,
            line: 9,
            column: 1,
            at: "[[prepare]]",
            expect: &[
                "step `assets` is local: it runs once, on this machine, so it takes no `roles`, `once` or `concurrency`",
            ],
        },
        Case {
            name: "local step using a host's value",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[vars]
venv = "{{shared_path}}/venv"
channel = "deploys-{{app}}"

[hosts.web1]
address = "local"

[[activate]]
name = "notify"
local = true
run = "notify {{channel}} {{release}} {{release_path}}"

[tasks.x]
run = "true"
"#,
            line: 15,
            column: 39,
            at: "{{release_path}}",
            expect: &[
                "`{{release_path}}` is a host's value, but this command runs once, on this machine",
                "{{release}}",
            ],
        },
        Case {
            name: "local step using a [vars] entry that needs a host",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[vars]
venv = "{{shared_path}}/venv"

[hosts.web1]
address = "local"

[tasks.x]
run = "ls {{venv}}"
local = true
"#,
            line: 12,
            column: 11,
            at: "{{venv}}",
            expect: &["unknown variable `{{venv}}` in a local command"],
        },
        Case {
            name: "misspelt strategy",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[source]
repo = "git@example.com:shop.git"
strategy = "uplaod"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 7,
            column: 12,
            at: "\"uplaod\"",
            expect: &[
                "strategy is \"git\" or \"upload\"",
                "did you mean \"upload\"?",
            ],
        },
        Case {
            name: "build without the upload strategy",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[source]
repo = "git@example.com:shop.git"
build = "make"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 7,
            column: 9,
            at: "\"make\"",
            expect: &["`build` and `artifact` belong to strategy = \"upload\""],
        },
        Case {
            name: "artifact outside the export",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[source]
repo = "git@example.com:shop.git"
strategy = "upload"
artifact = "../dist"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 8,
            column: 12,
            at: "\"../dist\"",
            expect: &["artifact entries are paths inside the release"],
        },
        Case {
            name: "build using a host's value",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[source]
repo = "git@example.com:shop.git"
strategy = "upload"
build = "make DEST={{deploy_to}}"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 8,
            column: 20,
            at: "{{deploy_to}}",
            expect: &[
                "`{{deploy_to}}` is a host's value, but this command runs once, on this machine",
            ],
        },
        Case {
            name: "a host named local",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.local]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 5,
            column: 8,
            at: "local]",
            expect: &["a host may not be named `local`"],
        },
    ]);
}

#[test]
fn deploy_to_that_scripts_cannot_work_in_is_refused_naming_its_line() {
    check(&[
        Case {
            name: "deploy_to = /.",
            toml: r#"[app]
name = "shop"
deploy_to = "/."

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 3,
            column: 13,
            at: "\"/.\"",
            expect: &["deploy_to must not be `/`", "`/.` is `/`"],
        },
        Case {
            name: "deploy_to = /srv/..",
            toml: r#"[app]
name = "shop"
deploy_to = "/tmp/deployr-x"

[hosts.web1]
address = "local"
deploy_to = "/srv/.."

[tasks.x]
run = "true"
"#,
            line: 7,
            column: 13,
            at: "\"/srv/..\"",
            expect: &["deploy_to must not have a `..` component"],
        },
        Case {
            name: "deploy_to not normalised",
            toml: r#"[app]
name = "shop"
deploy_to = "/srv//shop/./x"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 3,
            column: 13,
            at: "\"/srv//shop/./x\"",
            expect: &["must be written normalised", "write `/srv/shop/x`"],
        },
        Case {
            name: "deploy_to with a newline",
            toml: r#"[app]
name = "shop"
deploy_to = "/srv/shop\nrm -rf /"

[hosts.web1]
address = "local"

[tasks.x]
run = "true"
"#,
            line: 3,
            column: 13,
            at: "\"/srv/shop\\n",
            expect: &["deploy_to must not contain control characters", "\\n"],
        },
    ]);
}
