//! Git refs that come from outside the deployfile (`--ref`, `[source] ref`) are substituted into
//! shell commands, so they are held to a strict alphabet first: a ref such as
//! `main; rm -rf /` is refused here and never reaches a shell.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{reference}` is not a git ref deployr accepts: {reason}")]
pub struct InvalidRef {
    pub reference: String,
    pub reason: String,
}

pub fn validate(reference: &str) -> Result<(), InvalidRef> {
    let refuse = |reason: String| {
        Err(InvalidRef {
            reference: reference.to_string(),
            reason,
        })
    };
    if reference.is_empty() {
        return refuse("it is empty".into());
    }
    if reference.len() > 200 {
        return refuse("it is longer than 200 characters".into());
    }
    if let Some(bad) = reference
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+')))
    {
        return refuse(format!(
            "{bad:?} is not allowed (use letters, digits and . _ - / +)"
        ));
    }
    if reference.starts_with('-') {
        return refuse("it starts with `-`, which git would read as an option".into());
    }
    if reference.contains("..") || reference.starts_with('/') || reference.ends_with('/') {
        return refuse("git refs cannot contain `..` or start or end with `/`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_branches_tags_and_shas() {
        for ok in [
            "main",
            "hotfix/1.2.1",
            "v1.2.3",
            "release-2026_11",
            "3f2a9c1d0e",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_shell_syntax_and_option_lookalikes() {
        for bad in [
            "main; touch /tmp/pwned",
            "$(id)",
            "`id`",
            "a b",
            "--upload-pack=x",
            "a..b",
            "",
            "x'y",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
