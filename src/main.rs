use clap::Parser;

// glibc malloc was 11 % of the gateway's CPU under registration load (docs/benchmarks.md);
// mimalloc's thread-local free lists take most of that away.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the bundled mimalloc v2 (`mimalloc.h`: the 16th `mi_option_t`;
/// the Rust bindings name only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Purge freed memory at once. mimalloc's default (10 ms) purges only when the freeing
    // thread allocates again, so an idle gateway kept the memory of closed connections:
    // 2,000 half-open connections closed, RSS 175 MiB → 176 MiB with the default, 104 MiB →
    // 33 MiB (base 30 MiB) with 0 (bench/idle_connections.sh).
    // SAFETY: sets an integer option; mimalloc reads options atomically.
    // An operator's MIMALLOC_PURGE_DELAY wins (mimalloc reads it at start).
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    let cli = dcr_gateway::cli::Cli::parse();
    std::process::exit(dcr_gateway::cli::dispatch(cli));
}
