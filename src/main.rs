use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = hoffrec::cli::Cli::parse();
    match hoffrec::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
