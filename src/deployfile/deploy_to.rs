//! What a `deploy_to` may be. Every script on a host works in it, `rm -rf`s under it and
//! compares `readlink current` with paths built from it, so it is checked once, here: no
//! control characters, no `..`, written the one way that `readlink` gives back, and never `/`.

/// Why a `deploy_to` is refused, and what to write instead.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub help: Option<String>,
}

fn problem(message: String, help: Option<String>) -> Problem {
    Problem { message, help }
}

/// Checks `text` as written (absolute, or relative for a local host) and returns it without
/// its trailing slashes.
pub fn check(text: &str) -> Result<&str, Problem> {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(problem(
            format!(
                "deploy_to must not contain control characters; it has {}",
                c.escape_default()
            ),
            None,
        ));
    }
    let absolute = text.starts_with('/');
    let components: Vec<&str> = text.split('/').collect();
    if components.contains(&"..") {
        return Err(problem(
            format!("deploy_to must not have a `..` component: `{text}`"),
            Some("write the directory it means, e.g. /srv/shop".into()),
        ));
    }
    let kept: Vec<&str> = components
        .iter()
        .copied()
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let normal = if absolute {
        format!("/{}", kept.join("/"))
    } else {
        kept.join("/")
    };
    if absolute && normal == "/" {
        return Err(problem(
            format!("deploy_to must not be `/`{}", same_as_root(text)),
            Some("deploy into a directory of its own, e.g. /srv/shop".into()),
        ));
    }
    let trimmed = if text.len() > 1 {
        text.trim_end_matches('/')
    } else {
        text
    };
    if !normal.is_empty() && trimmed != normal {
        return Err(problem(
            format!("deploy_to must be written normalised, not `{text}`"),
            Some(format!("write `{normal}`")),
        ));
    }
    Ok(trimmed)
}

fn same_as_root(text: &str) -> String {
    if text == "/" {
        String::new()
    } else {
        format!(" (`{text}` is `/`)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass_without_their_trailing_slashes() {
        assert_eq!(check("/srv/shop"), Ok("/srv/shop"));
        assert_eq!(check("/srv/shop/"), Ok("/srv/shop"));
        assert_eq!(check("/srv/it's a $dir"), Ok("/srv/it's a $dir"));
        assert_eq!(check("target/example"), Ok("target/example"));
    }

    #[test]
    fn the_root_is_refused_however_it_is_written() {
        for root in ["/", "/.", "//", "/./", "/srv/.."] {
            assert!(check(root).is_err(), "{root}");
        }
        assert!(check("/.").unwrap_err().message.contains("is `/`"));
    }

    #[test]
    fn parent_components_and_unnormalised_paths_are_refused() {
        assert!(check("/srv/../etc").unwrap_err().message.contains("`..`"));
        assert!(check("srv/../x").is_err());
        let dot = check("/srv/./shop").unwrap_err();
        assert_eq!(dot.help.as_deref(), Some("write `/srv/shop`"));
        assert!(check("/srv//shop").is_err());
        assert!(check("./srv").is_err());
    }

    #[test]
    fn control_characters_are_refused() {
        for bad in ["/srv/a\nb", "/srv/a\tb", "/srv/\u{1b}[2J", "/srv/\0"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
