use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use deployr::cli::Cli;
use deployr::error::Error;

/// The exit codes of the design, in one place.
fn exit_code(error: &Error) -> u8 {
    match error {
        Error::StepFailed(_)
        | Error::CheckFailed { .. }
        | Error::Refused(_)
        | Error::Unrecorded { .. }
        | Error::Io(_) => 1,
        Error::Deployfile(_)
        | Error::Selection(_)
        | Error::Usage(_)
        | Error::Quote(_)
        | Error::InvalidRef(_)
        | Error::InvalidRelease(_) => 2,
        Error::Connect(_) => 3,
        Error::Locked { .. } | Error::HolderAlive(_) => 4,
        Error::RolledBack { .. } => 5,
        Error::LeftOut(_) => 6,
        Error::Diverged { .. } => 7,
        Error::Interrupted(signal) => 128 + signal.number() as u8,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    let json = cli.global.json;
    let (code, message) = match runtime.block_on(deployr::cmd::main(cli)) {
        Ok(()) => (0, None),
        Err(failed) => {
            let message = failed.message();
            eprintln!("error: {message}");
            (exit_code(&failed.error), Some(message))
        }
    };
    if json {
        let event = deployr::report::json::finished(code, message.as_deref());
        let _ = writeln!(std::io::stdout(), "{event}");
    }
    ExitCode::from(code)
}
