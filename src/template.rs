//! `{{name}}` substitution in commands.
//!
//! Only `{{identifier}}` is a variable; anything else between braces (such as Docker's
//! `{{.Names}}`) is left as written, so commands that use Go templates keep working.
//! Values are substituted as they are: the deployfile is trusted, and values from outside it
//! (`--ref`, release ids) are validated before they become variables.

use std::collections::BTreeMap;

/// Variables every command may use.
pub const BASE_VARIABLES: &[&str] = &[
    "app",
    "deploy_to",
    "shared_path",
    "current_path",
    "host",
    "address",
    "timestamp",
];

/// Variables that only exist while a release is being prepared or activated.
pub const RELEASE_VARIABLES: &[&str] = &[
    "release",
    "release_path",
    "previous_release",
    "commit",
    "ref",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var { name: String, offset: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// A `{{` with no closing `}}`, at this byte offset of the template text.
#[derive(Debug, PartialEq, Eq)]
pub struct Unclosed(pub usize);

impl Template {
    pub fn parse(text: &str) -> Result<Template, Unclosed> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            let Some(close) = rest[open + 2..].find("}}") else {
                return Err(Unclosed(offset + open));
            };
            let inner = &rest[open + 2..open + 2 + close];
            let name = inner.trim();
            literal.push_str(&rest[..open]);
            if is_identifier(name) {
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Var {
                    name: name.to_string(),
                    offset: offset + open,
                });
            } else {
                literal.push_str(&rest[open..open + 4 + close]);
            }
            let consumed = open + 4 + close;
            rest = &rest[consumed..];
            offset += consumed;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template {
            source: text.to_string(),
            parts,
        })
    }

    /// The text as written in the deployfile.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Each variable used, with its byte offset in the source text (for error positions).
    pub fn variables(&self) -> impl Iterator<Item = (&str, usize)> {
        self.parts.iter().filter_map(|part| match part {
            Part::Var { name, offset } => Some((name.as_str(), *offset)),
            Part::Text(_) => None,
        })
    }

    /// Substitutes every variable. Validation guarantees that every name is known, so a missing
    /// one here is a bug in the caller; it renders as empty rather than panicking mid-deploy.
    pub fn render(&self, values: &Values) -> String {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var { name, .. } => {
                    out.push_str(values.get(name).unwrap_or_default());
                }
            }
        }
        out
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The values of the variables for one host and one command.
#[derive(Debug, Clone, Default)]
pub struct Values(BTreeMap<String, String>);

impl Values {
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(name.to_string(), value.into());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every variable as `DEPLOYR_<NAME>`, so scripts that the command calls can use them too.
    pub fn exports(&self) -> impl Iterator<Item = (String, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (format!("DEPLOYR_{}", name.to_uppercase()), value.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        let mut values = Values::default();
        values.set("release", "20261124T154100Z");
        values.set("python", "/usr/bin/python3");
        values
    }

    #[test]
    fn substitutes_variables_with_or_without_spaces() {
        let template = Template::parse("{{python}} x{{ release }}y").unwrap();
        assert_eq!(
            template.render(&values()),
            "/usr/bin/python3 x20261124T154100Zy"
        );
    }

    #[test]
    fn leaves_go_templates_alone() {
        let template = Template::parse("docker ps --format '{{.Names}}' {{release}}").unwrap();
        assert_eq!(
            template.render(&values()),
            "docker ps --format '{{.Names}}' 20261124T154100Z"
        );
        assert_eq!(
            template.variables().collect::<Vec<_>>(),
            vec![("release", 32)]
        );
    }

    #[test]
    fn reports_offset_of_unclosed_braces() {
        assert_eq!(Template::parse("echo {{release"), Err(Unclosed(5)));
    }

    #[test]
    fn reports_offsets_of_variables() {
        let template = Template::parse("a {{x}} b {{ y }}").unwrap();
        assert_eq!(
            template.variables().collect::<Vec<_>>(),
            vec![("x", 2), ("y", 10)]
        );
    }

    #[test]
    fn exports_uppercase_deployr_names() {
        let values = values();
        let exported: Vec<_> = values.exports().collect();
        assert!(exported.contains(&("DEPLOYR_RELEASE".to_string(), "20261124T154100Z")));
        assert!(exported.contains(&("DEPLOYR_PYTHON".to_string(), "/usr/bin/python3")));
    }
}
