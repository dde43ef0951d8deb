//! `deployr init`: a commented starter deployfile that passes validation as written.

use std::io::Write;
use std::path::Path;

use crate::error::Error;

pub const STARTER: &str = include_str!("starter.toml");

pub fn command(path: &Path) -> Result<(), Error> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|error| {
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Usage(format!(
                    "{} already exists; deployr init never overwrites a deployfile",
                    path.display()
                ))
            } else {
                Error::Io(error)
            }
        })?;
    file.write_all(STARTER.as_bytes())?;
    writeln!(
        std::io::stdout(),
        "wrote {}; edit the hosts and steps, then run `deployr check`",
        path.display()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_starter_deployfile_is_valid() {
        let parsed = crate::deployfile::Deployfile::parse(
            std::path::Path::new("deployfile.toml"),
            super::STARTER,
            None,
        );
        assert!(parsed.is_ok(), "{}", parsed.err().unwrap());
    }
}
