use clap::Parser;

// glibc malloc was 11 % of the gateway's CPU under registration load (docs/benchmarks.md);
// mimalloc's thread-local free lists take most of that away.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = dcr_gateway::cli::Cli::parse();
    std::process::exit(dcr_gateway::cli::dispatch(cli));
}
