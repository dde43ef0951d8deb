//! Errors in the deployfile, rendered the way rustc renders them: where, what, and a hint.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::inventory::nearest;
use crate::mask::Masker;

#[derive(Debug, thiserror::Error)]
pub enum DeployfileError {
    #[error("cannot read the deployfile {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_all(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render_all(diagnostics: &[Diagnostic]) -> String {
    let rendered: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    let mut text = rendered.join("\n");
    if diagnostics.len() > 1 {
        text.push_str(&format!("\n{} errors in the deployfile", diagnostics.len()));
    }
    text
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub path: PathBuf,
    /// 1-based; `None` for problems that belong to no single place.
    pub line: Option<usize>,
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
    source_line: String,
    width: usize,
}

impl Diagnostic {
    pub fn new(
        path: &Path,
        text: &str,
        span: Range<usize>,
        message: String,
        help: Option<String>,
    ) -> Diagnostic {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let end = span.end.clamp(start, line_end);
        Diagnostic {
            path: path.to_path_buf(),
            line: Some(line),
            column,
            message,
            help,
            source_line: text[line_start..line_end].to_string(),
            width: text[start..end].chars().count().max(1),
        }
    }

    pub fn without_position(path: &Path, message: String) -> Diagnostic {
        Diagnostic {
            path: path.to_path_buf(),
            line: None,
            column: 0,
            message,
            help: None,
            source_line: String::new(),
            width: 0,
        }
    }
}

impl Diagnostic {
    /// The same diagnostic with every secret masked, the caret still under what it marks.
    fn masked(self, masker: &Masker) -> Diagnostic {
        let chars: Vec<char> = self.source_line.chars().collect();
        let start = self.column.saturating_sub(1).min(chars.len());
        let end = (start + self.width).min(chars.len());
        let piece =
            |range: std::ops::Range<usize>| masker.mask(&chars[range].iter().collect::<String>());
        let (before, marked, after) = (piece(0..start), piece(start..end), piece(end..chars.len()));
        let joined = format!("{before}{marked}{after}");
        let shown = masker.mask(&joined);
        // A secret that straddles the caret's edge is masked in the whole line; the caret then
        // stays where it was.
        let (column, width) = if shown == joined {
            (before.chars().count() + 1, marked.chars().count().max(1))
        } else {
            (self.column, self.width)
        };
        Diagnostic {
            message: masker.mask(&self.message),
            help: self.help.map(|help| masker.mask(&help)),
            source_line: shown,
            column: if self.line.is_some() {
                column
            } else {
                self.column
            },
            width: if self.line.is_some() {
                width
            } else {
                self.width
            },
            ..self
        }
    }
}

impl DeployfileError {
    /// The error with every secret of the deployfile masked, before anyone sees it.
    pub fn masked(self, masker: &Masker) -> DeployfileError {
        match self {
            DeployfileError::Invalid(diagnostics) => DeployfileError::Invalid(
                diagnostics.into_iter().map(|d| d.masked(masker)).collect(),
            ),
            read => read,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let Some(line) = self.line else {
            return write!(f, "{}: {}", self.path.display(), self.message);
        };
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            line,
            self.column,
            self.message
        )?;
        let gutter = line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{line} | {}", self.source_line)?;
        write!(
            f,
            "{:gutter$} | {:pad$}{}",
            "",
            "",
            "^".repeat(self.width),
            pad = self.column - 1
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n{:gutter$} = help: {help}", "")?;
        }
        Ok(())
    }
}

impl DeployfileError {
    /// Rewrites serde's messages in the deployfile's own words, with the nearest valid key for a
    /// misspelt one.
    pub fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> DeployfileError {
        let raw = error.message().trim();
        let (message, help) = if let Some(rest) = raw.strip_prefix("unknown field `") {
            let key = rest.split('`').next().unwrap_or_default();
            let expected: Vec<&str> = rest
                .split_once("expected")
                .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
                .unwrap_or_default();
            let help = match nearest(key, expected.iter().copied()) {
                Some(near) => format!("did you mean `{near}`?"),
                None if expected.is_empty() => "this table takes no keys".to_string(),
                None => format!("valid keys here: {}", expected.join(", ")),
            };
            (format!("unknown key `{key}`"), Some(help))
        } else if raw.starts_with("data did not match any variant") {
            (
                "expected a string, or a table such as { from_env = \"NAME\", secret = true }"
                    .to_string(),
                None,
            )
        } else {
            (raw.to_string(), None)
        };
        let diagnostic = match error.span() {
            Some(span) => Diagnostic::new(path, text, span, message, help),
            None => Diagnostic::without_position(path, message),
        };
        DeployfileError::Invalid(vec![diagnostic])
    }
}
