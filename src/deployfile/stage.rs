//! Stages: one deployfile for several environments (`[stages.staging]`, `[stages.production]`).
//!
//! The chosen stage is merged into the top level on toml's own document tree, before serde sees
//! it. So every key is merged by the same rule, including keys the deployfile gains later; every
//! value keeps the span of the line it was written on, so an error in a stage names that line;
//! and a misspelt key in a stage is refused, with a suggestion, like one at the top level.

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{DeployfileError, Diagnostic};
use crate::inventory::nearest;

type Key<'i> = Spanned<Cow<'i, str>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// The deployfile as the chosen stage sees it: the top level with `[stages.NAME]` merged in, and
/// `[stages]` removed. A deployfile with stages needs a stage; one without refuses a stage.
pub fn select<'i>(
    document: Spanned<DeTable<'i>>,
    stage: Option<&str>,
    path: &Path,
    text: &str,
) -> Result<Spanned<DeTable<'i>>, DeployfileError> {
    let error = |span: Range<usize>, message: String, help: Option<String>| {
        DeployfileError::Invalid(vec![Diagnostic::new(path, text, span, message, help)])
    };
    let document_span = document.span();
    let mut top = document.into_inner();
    let stages = top.remove_entry("stages");
    let (stages_key, stages) = match (stages, stage) {
        (None, None) => return Ok(Spanned::new(document_span, top)),
        (None, Some(chosen)) => return Err(no_stages(path, chosen)),
        (Some(stages), _) => stages,
    };
    let stages_span = stages.span();
    let DeValue::Table(stages) = stages.into_inner() else {
        return Err(error(
            stages_span,
            "`stages` holds one table per stage, such as [stages.production]".into(),
            None,
        ));
    };
    let mut keys: Vec<&Key> = stages.keys().collect();
    keys.sort_by_key(|key| key.span().start);
    let names: Vec<&str> = keys.iter().map(|key| key.get_ref().as_ref()).collect();
    let list = names.join(", ");
    let chosen = match stage {
        Some(chosen) if names.is_empty() => return Err(no_stages(path, chosen)),
        Some(chosen) => chosen,
        None if names.is_empty() => return Ok(Spanned::new(document_span, top)),
        None => {
            return Err(error(
                stages_key.span(),
                format!(
                    "this deployfile has stages ({list}); choose one with --stage NAME or DEPLOYR_STAGE"
                ),
                Some(format!("for example: deployr --stage {} deploy", names[0])),
            ));
        }
    };
    if !names.contains(&chosen) {
        // Besides typos, a common abbreviation: `prod` for `production`.
        let help = nearest(chosen, names.iter().copied())
            .or_else(|| {
                names
                    .iter()
                    .find(|name| name.starts_with(chosen))
                    .map(|name| name.to_string())
            })
            .map(|near| format!("did you mean `{near}`?"));
        return Err(error(
            stages_key.span(),
            format!("there is no stage `{chosen}`; this deployfile has {list}"),
            help,
        ));
    }
    let (stage_key, stage) = stages
        .into_iter()
        .find(|(name, _)| name.get_ref() == chosen)
        .expect("the chosen stage is one of the names");
    let stage_span = stage.span();
    let DeValue::Table(stage) = stage.into_inner() else {
        return Err(error(
            stage_span,
            format!("stage `{chosen}` must be a table, such as [stages.{chosen}]"),
            None,
        ));
    };
    if let Some((nested, _)) = stage.get_key_value("stages") {
        return Err(error(
            nested.span(),
            format!("stage `{chosen}` defines stages of its own; stages cannot be nested"),
            None,
        ));
    }
    for (key, value) in stage {
        let (key, value) = match top.remove_entry(key.get_ref().as_ref()) {
            Some(base) => merge(base, (key, value)),
            None => (key, value),
        };
        top.insert(key, value);
    }
    if !top.contains_key("hosts") {
        return Err(error(
            stage_key.span(),
            format!("stage `{chosen}` has no hosts, and the top level has none either"),
            Some(format!(
                "add one, e.g. [stages.{chosen}.hosts.web1] with address = \"10.0.0.11\""
            )),
        ));
    }
    define_stage_variable(&mut top, &stage_key);
    Ok(Spanned::new(document_span, top))
}

fn no_stages(path: &Path, chosen: &str) -> DeployfileError {
    DeployfileError::Invalid(vec![Diagnostic::without_position(
        path,
        format!(
            "stage `{chosen}` was chosen (--stage or DEPLOYR_STAGE), but this deployfile defines no [stages]"
        ),
    )])
}

/// A stage's table (`[stages.NAME.app]`, `.vars`, `.hosts`, ...) merges entry by entry into the
/// top-level table of that name, and each entry (a key, a whole host, a whole task) replaces the
/// top-level one; any other value (an array of steps) replaces the top-level value.
fn merge<'i>(base: (Key<'i>, Value<'i>), stage: (Key<'i>, Value<'i>)) -> (Key<'i>, Value<'i>) {
    let (base_key, base) = base;
    let (stage_key, stage) = stage;
    let (base_span, stage_span) = (base.span(), stage.span());
    match (base.into_inner(), stage.into_inner()) {
        (DeValue::Table(mut table), DeValue::Table(entries)) => {
            for (key, value) in entries {
                // Removed first, so that the entry keeps the key as the stage spells it, with
                // the stage's span.
                table.remove(key.get_ref().as_ref());
                table.insert(key, value);
            }
            (base_key, Spanned::new(base_span, DeValue::Table(table)))
        }
        (_, stage) => (stage_key, Spanned::new(stage_span, stage)),
    }
}

/// `{{stage}}` (and so `DEPLOYR_STAGE` in every command) is the chosen stage's name, unless the
/// deployfile sets a variable of that name itself.
fn define_stage_variable(top: &mut DeTable<'_>, stage: &Key<'_>) {
    let span = stage.span();
    if !top.contains_key("vars") {
        top.insert(
            Spanned::new(span.clone(), Cow::Borrowed("vars")),
            Spanned::new(span.clone(), DeValue::Table(DeTable::new())),
        );
    }
    if let Some(DeValue::Table(vars)) = top.get_mut("vars").map(Spanned::get_mut)
        && !vars.contains_key("stage")
    {
        vars.insert(
            Spanned::new(span.clone(), Cow::Borrowed("stage")),
            Spanned::new(
                span,
                DeValue::String(Cow::Owned(stage.get_ref().to_string())),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::deployfile::{ActivateStep, Deployfile, DeployfileError};

    const FILE: &str = r#"[app]
name = "shop"
deploy_to = "/srv/shop"
keep_releases = 3

[vars]
python = "python3"
color = "blue"

[hosts.shared]
address = "local"
roles = ["db"]

[[prepare]]
name = "top"
run = "true"

[stages.staging]
app.deploy_to = "/srv/staging"

[stages.staging.vars]
color = "green"

[stages.staging.hosts.s2]
address = "local"

[stages.staging.hosts.s1]
address = "local"

[[stages.staging.prepare]]
name = "only-staging"
run = "echo {{stage}} {{color}}"

[stages.production.hosts.shared]
address = "local"
roles = ["web"]
deploy_to = "/srv/own"

[stages.production.tasks.backup]
run = "true"
"#;

    fn parse(text: &str, stage: Option<&str>) -> Result<Deployfile, DeployfileError> {
        Deployfile::parse(Path::new("deployfile.toml"), text, stage)
    }

    /// `deployfile.toml:LINE:COLUMN: ` of the first `needle` in `text`.
    fn at(text: &str, needle: &str) -> String {
        let offset = text.find(needle).expect(needle);
        let line = text[..offset].matches('\n').count() + 1;
        let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("deployfile.toml:{line}:{column}: ")
    }

    fn var<'a>(deployfile: &'a Deployfile, host: usize, name: &str) -> &'a str {
        let vars = &deployfile.hosts[host].vars;
        vars.iter().find(|(n, _)| n == name).expect(name).1.source()
    }

    #[test]
    fn a_stage_merges_tables_key_by_key_and_replaces_arrays() {
        let staging = parse(FILE, Some("staging")).unwrap();
        let names: Vec<&str> = staging.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            ["shared", "s2", "s1"],
            "top-level hosts, then the stage's, in file order"
        );
        assert!(staging.hosts.iter().all(|h| h.deploy_to == "/srv/staging"));
        assert_eq!(staging.app.keep_releases, 3, "untouched [app] keys stay");
        assert_eq!(var(&staging, 0, "color"), "green");
        assert_eq!(var(&staging, 0, "python"), "python3");
        assert_eq!(var(&staging, 0, "stage"), "staging");
        let prepare: Vec<&str> = staging.prepare.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(prepare, ["only-staging"]);
        assert!(staging.tasks.is_empty());
    }

    #[test]
    fn a_stage_host_replaces_the_top_level_host_of_that_name_wholesale() {
        let production = parse(FILE, Some("production")).unwrap();
        assert_eq!(production.hosts.len(), 1);
        let host = &production.hosts[0];
        assert_eq!(host.roles, ["web"], "roles are not merged");
        assert_eq!(host.deploy_to, "/srv/own");
        assert_eq!(var(&production, 0, "color"), "blue");
        assert_eq!(production.prepare.len(), 1);
        assert_eq!(production.prepare[0].name, "top");
        assert!(production.task("backup").is_some());
        assert!(matches!(production.activate[..], [ActivateStep::Switch]));
    }

    #[test]
    fn stages_need_a_stage_and_a_stage_needs_stages() {
        let error = parse(FILE, None).unwrap_err().to_string();
        assert!(error.starts_with(&at(FILE, "stages.")), "{error}");
        assert!(error.contains("(staging, production)"), "{error}");
        assert!(error.contains("--stage"), "{error}");
        let plain = "[app]\nname = \"a\"\ndeploy_to = \"/srv/a\"\n[hosts.h]\naddress = \"local\"\n";
        assert!(parse(plain, None).is_ok());
        let error = parse(plain, Some("staging")).unwrap_err().to_string();
        assert!(error.contains("defines no [stages]"), "{error}");
    }

    #[test]
    fn an_unknown_stage_gets_a_suggestion() {
        let error = parse(FILE, Some("stagin")).unwrap_err().to_string();
        assert!(error.contains("there is no stage `stagin`"), "{error}");
        assert!(error.contains("did you mean `staging`?"), "{error}");
        let error = parse(FILE, Some("prod")).unwrap_err().to_string();
        assert!(error.contains("did you mean `production`?"), "{error}");
    }

    #[test]
    fn errors_in_a_stage_point_into_the_stage() {
        let text = FILE.replace("color = \"green\"", "color = \"{{nope}}\"");
        let error = parse(&text, Some("staging")).unwrap_err().to_string();
        assert!(error.starts_with(&at(&text, "{{nope}}")), "{error}");
        let text = FILE.replace("app.deploy_to", "app.deploy_too");
        let error = parse(&text, Some("staging")).unwrap_err().to_string();
        assert!(error.starts_with(&at(&text, "deploy_too")), "{error}");
        assert!(error.contains("did you mean `deploy_to`?"), "{error}");
        let text = FILE.replace(
            "[stages.production.tasks.backup]",
            "[stages.production.stages.x]",
        );
        let error = parse(&text, Some("production")).unwrap_err().to_string();
        assert!(error.starts_with(&at(&text, "stages.x")), "{error}");
        assert!(error.contains("stages cannot be nested"), "{error}");
    }

    #[test]
    fn a_stage_without_hosts_says_so() {
        let text =
            "[app]\nname = \"a\"\ndeploy_to = \"/srv/a\"\n[stages.staging.vars]\nx = \"1\"\n";
        let error = parse(text, Some("staging")).unwrap_err().to_string();
        assert!(error.starts_with(&at(text, "staging")), "{error}");
        assert!(error.contains("stage `staging` has no hosts"), "{error}");
    }

    #[test]
    fn a_deployfile_variable_named_stage_wins() {
        let text = FILE.replace("color = \"green\"", "stage = \"stg\"");
        let staging = parse(&text, Some("staging")).unwrap();
        assert_eq!(var(&staging, 0, "stage"), "stg");
    }
}
