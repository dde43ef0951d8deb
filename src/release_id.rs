//! Release ids: `20261124T154100Z`, the UTC time of the prepare. They name directories on every
//! host and are substituted into commands, so they are made here and checked here.

const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// `20261124T154100Z`: sorts by time, and is what every release directory is named.
pub fn new_id(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format(ID_FORMAT).to_string()
}

/// The id for a new release: now, or one second after the newest release on any host, so that a
/// second prepare within the same second never reuses (and overwrites) a release directory and
/// ids keep sorting in the order releases were made.
pub fn next_id<'a>(
    now: chrono::DateTime<chrono::Utc>,
    existing: impl IntoIterator<Item = &'a str>,
) -> String {
    let candidate = new_id(now);
    match existing.into_iter().max() {
        Some(newest) if newest >= candidate.as_str() => {
            chrono::NaiveDateTime::parse_from_str(newest, ID_FORMAT)
                .map(|time| {
                    (time + chrono::Duration::seconds(1))
                        .format(ID_FORMAT)
                        .to_string()
                })
                .unwrap_or(candidate)
        }
        _ => candidate,
    }
}

/// A release id that has been checked. Ids name directories on every host and are put into
/// scripts, so the only ways to have one are to make it here ([`ReleaseId::after`]) or to
/// check text ([`ReleaseId::parse`]); the code that builds scripts takes nothing else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseId(String);

impl ReleaseId {
    pub fn parse(text: &str) -> Result<ReleaseId, InvalidId> {
        validate_id(text)?;
        Ok(ReleaseId(text.to_string()))
    }

    /// The id for a new release: see [`next_id`].
    pub fn after<'a>(
        now: chrono::DateTime<chrono::Utc>,
        existing: impl IntoIterator<Item = &'a str>,
    ) -> ReleaseId {
        ReleaseId(next_id(now, existing))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ReleaseId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a release id; ids look like 20261124T154100Z (see `deployr releases`)")]
pub struct InvalidId(pub String);

/// Release ids from the command line are substituted into commands, so only the exact shape is
/// accepted.
pub fn validate_id(id: &str) -> Result<(), InvalidId> {
    let bytes = id.as_bytes();
    let shape = bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8]
            .iter()
            .chain(&bytes[9..15])
            .all(u8::is_ascii_digit);
    if shape {
        Ok(())
    } else {
        Err(InvalidId(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_ids_are_validated_exactly() {
        assert_eq!(validate_id("20261124T154100Z"), Ok(()));
        for bad in [
            "20261124T154100",
            "2026112xT154100Z",
            "../../etc",
            "",
            "20261124T154100Z;x",
        ] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn next_id_never_reuses_an_existing_release() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T15:41:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(next_id(now, ["20261124T154000Z"]), "20261124T154100Z");
        assert_eq!(next_id(now, ["20261124T154100Z"]), "20261124T154101Z");
        assert_eq!(next_id(now, ["20261124T154159Z"]), "20261124T154200Z");
    }
}
