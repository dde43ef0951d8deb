use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use deployr::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    let json = cli.global.json;
    let (code, message) = match runtime.block_on(deployr::cmd::main(cli)) {
        Ok(()) => (0, None),
        // Whoever read the output has stopped (`deployr … | head`): nothing to say to anyone.
        Err(failed) if failed.error.is_closed_output() => (0, None),
        Err(failed) => {
            let message = failed.message();
            // Never `eprintln!`: it panics when stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "error: {message}");
            (failed.error.exit_code(), Some(message))
        }
    };
    if json {
        let event = deployr::report::json::finished(code, message.as_deref());
        let _ = writeln!(std::io::stdout(), "{event}");
    }
    ExitCode::from(code)
}
