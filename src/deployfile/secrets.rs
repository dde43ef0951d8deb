//! The secrets of a deployfile, found before it is validated, so that even an error about the
//! line that holds one (a misspelt key beside `value = "…", secret = true`) shows it masked.

use toml::de::{DeTable, DeValue};

use crate::mask::{MIN_SECRET_LEN, Masker};

/// Masks every value that `[env]` (at the top level or in any stage) marks secret or takes from
/// the local environment, read from whatever part of `text` parses, however invalid the rest.
pub fn masker(text: &str) -> Masker {
    let (document, _) = DeTable::parse_recoverable(text);
    let document = document.into_inner();
    let mut secrets = Vec::new();
    collect(&document, &mut secrets);
    if let Some(DeValue::Table(stages)) = document.get("stages").map(|s| s.get_ref()) {
        for stage in stages.values() {
            if let DeValue::Table(stage) = stage.get_ref() {
                collect(stage, &mut secrets);
            }
        }
    }
    Masker::new(secrets)
}

/// The secret values of the `[env]` table of `table`.
fn collect(table: &DeTable, secrets: &mut Vec<String>) {
    let Some(DeValue::Table(env)) = table.get("env").map(|env| env.get_ref()) else {
        return;
    };
    for entry in env.values() {
        let DeValue::Table(entry) = entry.get_ref() else {
            continue;
        };
        let text = |key: &str| match entry.get(key).map(|v| v.get_ref()) {
            Some(DeValue::String(text)) => Some(text.to_string()),
            _ => None,
        };
        let secret = match entry.get("secret").map(|v| v.get_ref()) {
            Some(DeValue::Boolean(secret)) => Some(*secret),
            _ => None,
        };
        // As validation decides: a value written here is secret when it says so; one taken
        // from the environment unless it says `secret = false`.
        if let Some(value) = text("value")
            && secret == Some(true)
        {
            push(value, secrets);
        }
        if let Some(variable) = text("from_env")
            && secret != Some(false)
            && let Ok(value) = std::env::var(variable)
        {
            push(value, secrets);
        }
    }
}

/// A secret too short to be masked anywhere (validation refuses it) is still masked where a
/// diagnostic quotes it: as a TOML string.
fn push(value: String, secrets: &mut Vec<String>) {
    if value.trim().chars().count() >= MIN_SECRET_LEN {
        secrets.push(value);
    } else if !value.is_empty() {
        secrets.push(format!("\"{value}\""));
        secrets.push(format!("'{value}'"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_inline_secrets_even_in_a_file_that_does_not_parse() {
        let text = "[env]\nTOKEN = { value = \"s3cret-value\", secret = true }\nPLAIN = \"visible\"\n[app\n";
        let masker = masker(text);
        assert_eq!(masker.mask("s3cret-value visible"), "*** visible");
    }

    #[test]
    fn finds_the_secrets_of_every_stage() {
        let text = "[stages.a.env]\nK = { value = \"first-secret\", secret = true }\n\
                    [stages.b.env]\nK = { value = \"second-secret\", secret = true }\n";
        let masker = masker(text);
        assert_eq!(masker.mask("first-secret second-secret"), "*** ***");
    }

    #[test]
    fn masks_a_short_secret_only_as_a_toml_string() {
        let masker = masker("[env]\nK = { value = \"a\", secret = true }\n");
        assert_eq!(
            masker.mask("K = { value = \"a\", secret = true }"),
            "K = { value = ***, secret = true }"
        );
    }
}
