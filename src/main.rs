use clap::Parser;
use std::process::ExitCode;

// Decoding allocates a little per field; mimalloc keeps that off the ingest profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
