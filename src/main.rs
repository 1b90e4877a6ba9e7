use clap::Parser;
use std::process::ExitCode;

// Decoding allocates a little per field; mimalloc keeps that off the ingest profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (libmimalloc-sys names only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // mimalloc hands freed memory back to the OS after 10 ms. Ingest frees a batch's worth
    // of memory every commit and then faults as much in again, and the kernel zeroes every
    // page: a sixth of its profile. Memory is bounded by the batch limits anyway, so keep it.
    // SAFETY: sets an integer option; mimalloc allows it at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = hoffrec::cli::Cli::parse();
    match hoffrec::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
