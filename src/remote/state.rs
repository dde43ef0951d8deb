//! Reading a host's release state in one round trip, and parsing what that prints.

use crate::history::Record;
use crate::inventory::Host;
use crate::release::{HostState, Journal, Prepared};
use crate::release_id::{ReleaseId, validate_id};
use crate::remote::protocol::{journal, prepared, state as key};
use crate::shell::{QuoteError, Script, Sh, quote};

/// Reads the whole state in one round trip, as `key=value` lines for [`parse`].
pub fn script(host: &Host) -> Result<String, QuoteError> {
    Ok(read(host)?.finish())
}

/// A state key as a word for `printf`.
fn word(key: &str) -> Result<Sh, QuoteError> {
    quote(key, "a state key")
}

/// The state script. Uses shell built-ins where it can (`read`, `printf`): on a busy host,
/// every program started is a fork and an exec that the lock waits for. A host with no
/// `deploy_to` yet has no state: it prints nothing.
pub(super) fn read(host: &Host) -> Result<Script, QuoteError> {
    let mut s = Script::new();
    s.line(
        "cd {} 2>/dev/null || exit 0",
        &[&quote(&host.deploy_to, "deploy_to")?],
    );
    s.line(
        "if [ -L current ]; then printf '%s=%s\\n' {} \"$(readlink current)\"; elif [ -e current ]; then printf '%s=yes\\n' {}; fi",
        &[&word(key::CURRENT)?, &word(key::CURRENT_DIRECTORY)?],
    );
    s.line(
        "if [ -f .deployr/prepared ]; then while read -r l; do printf '%s%s\\n' {} \"$l\"; done < .deployr/prepared; fi",
        &[&word(key::PREPARED_PREFIX)?],
    );
    s.line(
        "for r in releases/*; do [ -d \"$r\" ] && [ ! -L \"$r\" ] || continue; c=; read -r c 2>/dev/null < \"$r/REVISION\"; printf '%s=%s %s\\n' {} \"${r#releases/}\" \"$c\"; done",
        &[&word(key::RELEASE)?],
    );
    s.line(
        "if [ -f .deployr/history ]; then tail -n 500 .deployr/history | sed {}; fi",
        &[&quote(&format!("s/^/{}=/", key::HISTORY), "a state key")?],
    );
    let lock = word(key::LOCK)?;
    let malformed = word(key::LOCK_MALFORMED)?;
    s.line(
        "if [ -L .deployr/lock ]; then printf '%s=%s\\n' {} \"$(readlink .deployr/lock)\"",
        &[&lock],
    );
    s.line(
        "elif [ -f .deployr/lock/owner ]; then while read -r l; do printf '%s=%s\\n' {} \"$l\"; done < .deployr/lock/owner",
        &[&lock],
    );
    s.line(
        "elif [ -d .deployr/lock ]; then printf '%s=%s\\n' {} 'a directory with no owner file'",
        &[&malformed],
    );
    s.line(
        "elif [ -e .deployr/lock ]; then printf '%s=%s\\n' {} 'a plain file'; fi",
        &[&malformed],
    );
    s.line(
        "for a in .deployr/artifacts/*.tar.gz; do [ -f \"$a\" ] || continue; a=\"${a##*/}\"; printf '%s=%s\\n' {} \"${a%.tar.gz}\"; done",
        &[&word(key::ARTIFACT)?],
    );
    s.line(
        "for r in .deployr/ready/*; do [ -f \"$r\" ] || continue; printf '%s=%s\\n' {} \"${r##*/}\"; done",
        &[&word(key::READY)?],
    );
    s.line(
        "if [ -f .deployr/activating ]; then while read -r l; do printf '%s%s\\n' {} \"$l\"; done < .deployr/activating; fi",
        &[&word(key::ACTIVATING_PREFIX)?],
    );
    s.line("true", &[]);
    Ok(s)
}

/// Reads what [`script`] (or the lock script, which ends with it) printed.
pub fn parse(lines: &[String]) -> HostState {
    let mut state = HostState::default();
    // release, commit, ref, time
    let mut marker: [String; 4] = Default::default();
    let mut activation = Journal {
        release: String::new(),
        previous: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if let Some(name) = name.strip_prefix(key::PREPARED_PREFIX) {
            let field = match name {
                prepared::RELEASE => &mut marker[0],
                prepared::COMMIT => &mut marker[1],
                prepared::REF => &mut marker[2],
                prepared::TIME => &mut marker[3],
                _ => continue,
            };
            *field = value.to_string();
            continue;
        }
        if let Some(name) = name.strip_prefix(key::ACTIVATING_PREFIX) {
            match name {
                journal::RELEASE => activation.release = value.to_string(),
                journal::PREVIOUS if validate_id(value).is_ok() => {
                    activation.previous = Some(value.to_string());
                }
                _ => {}
            }
            continue;
        }
        match name {
            key::CURRENT => {
                state.current = value.rsplit('/').next().map(str::to_string);
            }
            key::CURRENT_DIRECTORY => state.current_is_directory = true,
            key::LOCK_TAKEN => state.lock_taken = true,
            key::RELEASE => {
                let (id, commit) = value.split_once(' ').unwrap_or((value, ""));
                if validate_id(id).is_ok() {
                    state
                        .releases
                        .push((id.to_string(), commit.trim().to_string()));
                }
            }
            key::HISTORY => state.history.extend(Record::parse(value)),
            key::ARTIFACT => state.artifacts.push(value.to_string()),
            key::READY if validate_id(value).is_ok() => {
                state.ready.insert(value.to_string());
            }
            key::LOCK_MALFORMED => state.lock_malformed = Some(value.to_string()),
            key::LOCK_ERROR => state.lock_error = Some(value.to_string()),
            key::LOCK => {
                let holder = state.lock.get_or_insert_with(String::new);
                if !holder.is_empty() {
                    holder.push_str(", ");
                }
                holder.push_str(value);
            }
            _ => {}
        }
    }
    let [release, commit, reference, time] = marker;
    if let Ok(release) = ReleaseId::parse(&release) {
        state.prepared = Some(Prepared {
            release,
            commit,
            reference,
            time,
        });
    }
    if validate_id(&activation.release).is_ok() {
        state.activating = Some(activation);
    }
    state.releases.sort();
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn parses_state_lines() {
        let state = parse(&lines(
            "current=/srv/a/releases/20260101T000002Z\n\
             prepared_release=20260101T000003Z\nprepared_commit=abc\nprepared_ref=main\nprepared_time=t\n\
             release=20260101T000002Z def\nrelease=20260101T000001Z 123\nrelease=junk x\n\
             history=t1 activate 20260101T000001Z previous=- by=me\n\
             history=t2 activate 20260101T000002Z previous=20260101T000001Z by=me\n\
             activating_release=20260101T000003Z\nactivating_previous=20260101T000002Z\n\
             ready=20260101T000003Z\nready=../x\nartifact=ab12\nlock=a\nlock=b\n",
        ));
        assert_eq!(state.current.as_deref(), Some("20260101T000002Z"));
        assert_eq!(state.prepared.as_ref().unwrap().commit, "abc");
        assert_eq!(state.prepared.as_ref().unwrap().reference, "main");
        assert_eq!(
            state.releases,
            [
                ("20260101T000001Z".to_string(), "123".to_string()),
                ("20260101T000002Z".to_string(), "def".to_string())
            ]
        );
        assert_eq!(state.previous(), Some("20260101T000001Z"));
        let journal = state.activating.as_ref().unwrap();
        assert_eq!(journal.release, "20260101T000003Z");
        assert_eq!(journal.previous.as_deref(), Some("20260101T000002Z"));
        assert_eq!(state.ready.iter().collect::<Vec<_>>(), ["20260101T000003Z"]);
        assert_eq!(state.artifacts, ["ab12"]);
        assert_eq!(state.lock.as_deref(), Some("a, b"));
    }
}
