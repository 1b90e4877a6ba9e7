use clap::Parser;
use std::process::ExitCode;

// Decoding allocates a little per field; mimalloc keeps that off the ingest profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e`; the sys crate names no constant.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = hoffrec::cli::Cli::parse();
    match hoffrec::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An ingest batch's buffers are freed when it commits, one to three seconds after they
/// were filled; mimalloc hands memory idle for 1 s back to the kernel, so the next batches
/// faulted in and zeroed fresh pages (a tenth of the process's samples). Ten seconds covers
/// a batch's round trip; `MIMALLOC_PURGE_DELAY` still overrides it.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one option in the allocator's table; no memory is touched.
    unsafe {
        // The default identifies the option: anything else means the index moved.
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == 1000 {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000);
        }
    }
}
