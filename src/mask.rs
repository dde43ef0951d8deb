//! Secret values made `***` in everything deployr shows: output, errors, `--dry-run`, JSON.

/// The fewest characters a secret may have (leading and trailing whitespace not counted): a
/// shorter value cannot be masked without turning ordinary words into `***`, and the pattern of
/// stars would give it away. The deployfile refuses shorter secrets.
pub const MIN_SECRET_LEN: usize = 6;

/// Replaces every secret value with `***` before anything is shown.
///
/// Output arrives a line at a time, so a multi-line secret (a PEM key) is masked as a whole and
/// line by line. A line of a secret with at least [`MIN_SECRET_LEN`] characters is masked
/// wherever it appears; a shorter line (the `Zg==` that ends a key) only where it is all an
/// output line holds, give or take whitespace and quotes, since masking it anywhere would mangle
/// ordinary output.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Vec<String>,
    /// Short lines of multi-line secrets, masked only as whole lines.
    short_lines: Vec<String>,
}

impl Masker {
    pub fn new(secrets: Vec<String>) -> Masker {
        let mut masked = Vec::new();
        let mut short_lines = Vec::new();
        for secret in secrets.into_iter().filter(|s| !s.trim().is_empty()) {
            // A secret also appears shell-quoted in scripts (`--dry-run`); mask that form too.
            if let Ok(quoted) = shlex::try_quote(&secret) {
                masked.push(quoted.into_owned());
            }
            // `echo $X` without quotes drops the whitespace around a value.
            let trimmed = secret.trim();
            if trimmed != secret && trimmed.chars().count() >= MIN_SECRET_LEN {
                masked.push(trimmed.to_string());
            }
            if secret.contains('\n') {
                for line in secret.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    if line.chars().count() >= MIN_SECRET_LEN {
                        masked.push(line.to_string());
                    } else {
                        short_lines.push(line.to_string());
                    }
                }
            }
            masked.push(secret);
        }
        masked.sort_by_key(|s| std::cmp::Reverse(s.len()));
        masked.dedup();
        Masker {
            secrets: masked,
            short_lines,
        }
    }

    pub fn mask(&self, text: &str) -> String {
        if self.secrets.is_empty() && self.short_lines.is_empty() {
            return text.to_string();
        }
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        if self.short_lines.is_empty() {
            return text;
        }
        text.split('\n')
            .map(|line| {
                let bare = line.trim_matches(|c: char| c.is_whitespace() || c == '\'' || c == '"');
                if self.short_lines.iter().any(|short| short == bare) {
                    line.replace(bare, "***")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_secret_longest_first() {
        let masker = Masker::new(vec!["abc".into(), "abcdef".into(), String::new()]);
        assert_eq!(masker.mask("x=abcdef y=abc"), "x=*** y=***");
    }

    #[test]
    fn masks_the_shell_quoted_form_of_a_secret() {
        let masker = Masker::new(vec!["it's".into()]);
        let quoted = shlex::try_quote("it's").unwrap().into_owned();
        assert_eq!(masker.mask(&format!("export X={quoted}")), "export X=***");
    }

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n  b3BlbnNzaC1rZXktdjEAAAAA\nZg==\n-----END PRIVATE KEY-----\n";

    #[test]
    fn masks_every_line_of_a_multi_line_secret_wherever_it_is() {
        let masker = Masker::new(vec![PEM.into()]);
        assert_eq!(masker.mask(PEM), "***");
        for line in PEM
            .lines()
            .map(str::trim)
            .filter(|l| l.len() >= MIN_SECRET_LEN)
        {
            let masked = masker.mask(&format!("key: {line} (seen)"));
            assert_eq!(masked, "key: *** (seen)", "{line}");
        }
        assert_eq!(masker.mask("b3BlbnNzaC1rZXktdjEAAAAA"), "***");
    }

    #[test]
    fn masks_a_secret_without_the_whitespace_around_it() {
        let masker = Masker::new(vec!["  padded-secret ".into()]);
        assert_eq!(masker.mask("token=padded-secret;"), "token=***;");
    }

    #[test]
    fn masks_a_short_line_of_a_secret_only_as_a_whole_line() {
        let masker = Masker::new(vec![PEM.into()]);
        assert_eq!(masker.mask("Zg=="), "***");
        assert_eq!(masker.mask("  'Zg==' "), "  '***' ");
        assert_eq!(masker.mask("Zg==\nnext"), "***\nnext");
        assert_eq!(masker.mask("big Zg== here"), "big Zg== here");
    }

    #[test]
    fn masks_the_shell_quoted_form_of_a_multi_line_secret_line_by_line() {
        let masker = Masker::new(vec![PEM.into()]);
        let quoted = shlex::try_quote(PEM).unwrap().into_owned();
        let script = format!("export KEY={quoted} OTHER=1\necho done");
        assert_eq!(masker.mask(&script), "export KEY=*** OTHER=1\necho done");
        for line in script.lines() {
            let masked = masker.mask(line);
            assert!(
                !masked.contains("MIIE") && !masked.contains("BEGIN") && !masked.contains("Zg=="),
                "{masked}"
            );
        }
    }
}
