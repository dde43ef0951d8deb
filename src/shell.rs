//! Quoting and a tiny script builder: the only way deployr puts a value into shell.
//!
//! Scripts are built from [`Sh`], shell text that is safe by construction: a value goes in
//! only through [`quote`]; shell syntax goes in only as a `&'static str` written in deployr's
//! source ([`sh`]), whose `{}` holes take other [`Sh`] and must lie outside any quotes, so an
//! already-quoted value can never land inside `"…"` (where its quotes would be literal text).
//! No function here takes a run-time string as syntax.

use std::fmt::Write as _;

/// Shell text that is safe to run as it is: a quoted value, deployr's own syntax, or both put
/// together by this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sh(String);

impl Sh {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    #[error("cannot quote {what} for the shell: it contains a NUL byte")]
    Nul { what: String },
    #[error("cannot export `{0}`: it is not a shell variable name")]
    Name(String),
}

/// `value` as one shell word that means exactly `value` in every POSIX shell (and in bash and
/// zsh), whatever it holds. Plain words stay as they are (`releases/20261124T154100Z`); `what`
/// names the value in the one error there is: a NUL byte, which no shell word can hold.
pub fn quote(value: &str, what: &str) -> Result<Sh, QuoteError> {
    shlex::try_quote(value)
        .map(|quoted| Sh(quoted.into_owned()))
        .map_err(|_| QuoteError::Nul {
            what: what.to_string(),
        })
}

/// Fills the `{}` holes of `template`, shell syntax from deployr's source, with `args` in order.
///
/// Panics (a bug in deployr, caught by the generator tests that render every script) when the
/// number of holes and of arguments differ, or when a hole is inside quotes.
pub fn sh(template: &'static str, args: &[&Sh]) -> Sh {
    let mut out = String::with_capacity(template.len() + 16 * args.len());
    let mut args = args.iter();
    let mut quote = Quote::None;
    let mut chars = template.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        match (quote, c) {
            (Quote::None, '{') if template[index..].starts_with("{}") => {
                chars.next();
                let arg = args
                    .next()
                    .unwrap_or_else(|| panic!("more holes than arguments in {template:?}"));
                out.push_str(&arg.0);
                continue;
            }
            (Quote::Single | Quote::Double, '{') if template[index..].starts_with("{}") => {
                panic!("a hole inside quotes in {template:?}")
            }
            (Quote::None, '\'') => quote = Quote::Single,
            (Quote::Single, '\'') => quote = Quote::None,
            (Quote::None, '"') => quote = Quote::Double,
            (Quote::Double, '"') => quote = Quote::None,
            (Quote::None | Quote::Double, '\\') => {
                out.push(c);
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    assert!(
        args.next().is_none(),
        "more arguments than holes in {template:?}"
    );
    Sh(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// `{ printf '%s\n' PARTS >&2; exit 1; }`: prints one line made of `parts` to stderr and fails.
/// Every part is one word ([`text`], a quoted value, or a `"$expansion"`), so nothing in a
/// message is ever parsed as shell.
pub fn fail(parts: &[&Sh]) -> Sh {
    let mut message = String::new();
    for part in parts {
        message.push_str(&part.0);
    }
    Sh(format!("{{ printf '%s\\n' {message} >&2; exit 1; }}"))
}

/// Words on one line, separated by spaces: `rm -rf {}` with a list of quoted paths, say.
pub fn join(words: &[Sh]) -> Sh {
    let words: Vec<&str> = words.iter().map(Sh::as_str).collect();
    Sh(words.join(" "))
}

/// A command from the deployfile, as it is: the deployfile is trusted, and its commands are
/// shell by design. Only for steps that this machine's `sh` runs (local steps and the build);
/// on hosts, a command runs in the login shell as one quoted word (see `remote::command`).
pub fn deployfile_command(command: &str) -> Sh {
    Sh(command.to_string())
}

/// Fixed text of a message, as one quoted word.
pub fn text(message: &'static str) -> Result<Sh, QuoteError> {
    quote(message, "a message")
}

/// A script, one line at a time.
#[derive(Debug, Default)]
pub struct Script {
    text: String,
}

impl Script {
    pub fn new() -> Script {
        Script::default()
    }

    /// One line of deployr's own syntax, its holes filled (see [`sh`]).
    pub fn line(&mut self, template: &'static str, args: &[&Sh]) -> &mut Script {
        self.push(sh(template, args))
    }

    pub fn push(&mut self, line: Sh) -> &mut Script {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(&line.0);
        self
    }

    /// Appends another script's lines.
    pub fn append(&mut self, script: Script) -> &mut Script {
        if !script.text.is_empty() {
            self.push(Sh(script.text));
        }
        self
    }

    /// `cd DIR || exit 1`.
    pub fn cd(&mut self, dir: &Sh) -> &mut Script {
        self.line("cd {} || exit 1", &[dir])
    }

    /// `export NAME=value ...`, values quoted; nothing when `vars` is empty.
    pub fn export<'a>(
        &mut self,
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<&mut Script, QuoteError> {
        let mut line = String::from("export");
        for (name, value) in vars {
            if !is_name(name) {
                return Err(QuoteError::Name(name.to_string()));
            }
            let _ = write!(line, " {name}={}", quote(value, name)?.0);
        }
        if line != "export" {
            self.push(Sh(line));
        }
        Ok(self)
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// A shell variable name: a letter or `_`, then letters, digits and `_`.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_plain_words_readable_and_quotes_the_rest() {
        let plain = quote("releases/20261124T154100Z", "x").unwrap();
        assert_eq!(plain.as_str(), "releases/20261124T154100Z");
        assert_eq!(quote("a b", "x").unwrap().as_str(), "'a b'");
        assert!(quote("a\0b", "the thing").is_err());
    }

    #[test]
    fn holes_take_quoted_words() {
        let dir = quote("/srv/it's", "x").unwrap();
        let line = sh("mkdir -p {}/.deployr && cd {}", &[&dir, &dir]);
        assert_eq!(
            line.as_str(),
            "mkdir -p \"/srv/it's\"/.deployr && cd \"/srv/it's\""
        );
    }

    #[test]
    #[should_panic(expected = "inside quotes")]
    fn a_hole_inside_double_quotes_is_refused() {
        let dir = quote("/srv/it's", "x").unwrap();
        sh("echo \"in {}\"", &[&dir]);
    }

    #[test]
    #[should_panic(expected = "inside quotes")]
    fn a_hole_inside_single_quotes_is_refused() {
        let dir = quote("x", "x").unwrap();
        sh("echo 'in {}'", &[&dir]);
    }

    #[test]
    fn braces_of_shell_syntax_are_not_holes() {
        let line = sh("{ a; } && echo \"${x#y}\" '{ }'", &[]);
        assert_eq!(line.as_str(), "{ a; } && echo \"${x#y}\" '{ }'");
    }

    #[test]
    fn fail_prints_one_quoted_line() {
        let id = quote("/srv/$(id)", "x").unwrap();
        let line = fail(&[&text("no ").unwrap(), &id, &sh("\"$x\"", &[])]);
        assert_eq!(
            line.as_str(),
            "{ printf '%s\\n' 'no ''/srv/$(id)'\"$x\" >&2; exit 1; }"
        );
    }

    #[test]
    fn export_refuses_what_is_not_a_name() {
        let mut script = Script::new();
        script.export([("A_1", "x y")]).unwrap();
        assert_eq!(script.finish(), "export A_1='x y'");
        assert!(Script::new().export([("A-B", "x")]).is_err());
        let mut empty = Script::new();
        empty.export([]).unwrap();
        assert_eq!(empty.finish(), "");
    }
}
